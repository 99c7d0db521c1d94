"""Named labkit checkpoints: what one study produces and another asks for by name.

Every name must be declared under ``produces:`` in the producing study's preset YAML, so asking for
a missing checkpoint can say which study makes it and how.
"""

from __future__ import annotations

from pathlib import Path

from labkit.core.checkpoints import load_checkpoint, load_state_into, save_checkpoint
from labkit.core.errors import WeightsUnavailableError
from labkit.core.params import list_specs
from labkit.core.paths import checkpoints_dir, run_checkpoints_dir


def declared_checkpoints() -> dict[str, dict]:
    """``{name: {"study": ..., "arch": ..., "help": ...}}`` over every study spec."""
    out = {}
    for spec in list_specs():
        for item in spec.produces:
            out[item["name"]] = {"study": spec.name, **item}
    return out


def _declared(name: str) -> dict:
    known = declared_checkpoints()
    if name not in known:
        raise WeightsUnavailableError(
            f"no study declares a labkit checkpoint named '{name}' (declared: {', '.join(sorted(known)) or 'none'})"
        )
    return known[name]


def named_checkpoint_path(name: str, for_writing: bool = False) -> Path:
    """The file of checkpoint ``name``: this run's own (``run_checkpoints_dir``) when the run wrote one or is about
    to (``for_writing``), else the shared one in ``checkpoints_dir`` (written only by publishing runs)."""
    _declared(name)
    run = run_checkpoints_dir()
    if run is not None and (for_writing or (run / f"{name}.safetensors").is_file()):
        if for_writing:
            run.mkdir(parents=True, exist_ok=True)
        return run / f"{name}.safetensors"
    return checkpoints_dir() / f"{name}.safetensors"


def save_named_checkpoint(name: str, model_or_state_dict, meta: dict | None = None) -> Path:
    """Write checkpoint ``name`` (atomically): into this run's folder when the run does not publish."""
    info = _declared(name)
    state = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    path = named_checkpoint_path(name, for_writing=True)
    return save_checkpoint(path, state, {"name": name, "study": info["study"], **(meta or {})})


def load_named_checkpoint(name: str) -> tuple[dict, dict]:
    info = _declared(name)
    path = named_checkpoint_path(name)
    if not path.exists():
        raise WeightsUnavailableError(
            f"labkit checkpoint '{name}' does not exist yet at {path}. The study '{info['study']}' produces it: "
            f"run `labkit reproduce {info['study']}` (or its notebook) first, or set LABKIT_CHECKPOINTS to a "
            f"folder that holds {path.name}."
        )
    return load_checkpoint(path)


def produce_named_checkpoint(name: str, **kwargs) -> Path:
    """Make checkpoint ``name`` with the producer its study declares (``producer: "module:function"``).

    A consuming study asks for a checkpoint by name and never imports the producing study: the YAML says who
    makes it, the way a grid names its task.
    """
    import importlib

    info = _declared(name)
    target = info.get("producer")
    if not target:
        raise WeightsUnavailableError(
            f"labkit checkpoint '{name}' has no declared producer: run `labkit reproduce {info['study']}` first"
        )
    module, _, function = str(target).partition(":")
    try:
        producer = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise WeightsUnavailableError(
            f"the producer of labkit checkpoint '{name}' ({target}) cannot be loaded: {exc}"
        ) from exc
    return Path(producer(**kwargs))


def load_named_into(model, name: str, strict: bool = True) -> dict:
    state, meta = load_named_checkpoint(name)
    load_state_into(model, state, source=f"labkit checkpoint '{name}'", strict=strict)
    return meta
