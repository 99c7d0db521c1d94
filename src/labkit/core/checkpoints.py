"""Checkpoints as safetensors with a JSON sidecar; resumable training state via weights-only torch.load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit.core.atomic import atomic_write_bytes, atomic_write_text
from labkit.core.errors import CheckpointMismatchError, WeightsUnavailableError


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json", ".pth", ".pt", ".bin") else path


def _with(stem: Path, suffix: str) -> Path:
    # Not Path.with_suffix: names such as "resnet18.a1_in1k" carry a dot that is not a suffix.
    return stem.parent / (stem.name + suffix)


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.safetensors`` (tensors) and ``<path>.json`` (what, how trained, data, metrics)."""
    from safetensors.torch import save

    stem = _stem(path)
    # safetensors refuses shared storage and non-contiguous views: store plain copies.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    target = _with(stem, ".safetensors")
    atomic_write_bytes(target, save(tensors, metadata={"format": "pt"}))
    atomic_write_text(_with(stem, ".json"), json.dumps(meta or {}, indent=2, default=str, sort_keys=True))
    return target


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """Read a checkpoint: ``.safetensors`` (with its sidecar), or a ``.pth``/``.pt``/``.bin`` as weights only."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        candidate = _with(path, ".safetensors")
        path = candidate if candidate.exists() else path
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file {path} does not exist")
    if not path.is_file():
        raise WeightsUnavailableError(f"checkpoint path {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointMismatchError(f"checkpoint file {path} is empty (0 bytes): a copy or a save was interrupted")
    meta_path = _with(_stem(path), ".json")
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointMismatchError(f"checkpoint sidecar {meta_path} is not readable JSON: {exc}") from exc
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), meta
        except Exception as exc:  # SafetensorError, OSError, ValueError... on random or truncated bytes
            raise CheckpointMismatchError(
                f"{path} is not a readable safetensors checkpoint (random bytes, truncated, or another format): "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... on bad files
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise CheckpointMismatchError(
            f"{path} is not a weights-only PyTorch checkpoint (truncated, corrupt, or holding pickled objects; "
            f"{type(exc).__name__}: {first[:300]}); labkit never unpickles arbitrary objects"
        ) from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        what = (
            type(state).__name__
            if not isinstance(state, dict)
            else (
                "an empty dict"
                if not state
                else "a dict with non-tensor values such as "
                + ", ".join(
                    f"{k!r} ({type(v).__name__})"
                    for k, v in list((k, v) for k, v in state.items() if not hasattr(v, "shape"))[:3]
                )
            )
        )
        raise CheckpointMismatchError(f"{path} does not hold a state dict of tensors (it holds {what})")
    return state, meta


def _preview(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    extra = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + extra


def load_state_into(
    model, state_dict: dict, source: str = "checkpoint", strict: bool = True, ignore: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Load ``state_dict`` into ``model``; on any mismatch raise an error that names the keys.

    ``ignore``: key prefixes allowed to be missing or unexpected (e.g. a classifier head).
    """
    own = model.state_dict()
    keep = lambda k: not any(k.startswith(p) for p in ignore)  # noqa: E731
    missing = [k for k in own if k not in state_dict and keep(k)]
    unexpected = [k for k in state_dict if k not in own and keep(k)]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if strict and (missing or unexpected or shapes):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:4])}")
        raise CheckpointMismatchError(
            f"{source} does not fit {type(model).__name__} (is it for another architecture?): " + "; ".join(parts)
        )
    loadable = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(loadable, strict=False)
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": shapes}


def save_training_state(path: str | Path, state: dict) -> Path:
    """Save a resumable training state (model, optimizer, scheduler, epoch, history) atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: str | Path) -> dict:
    """Read a state saved by :func:`save_training_state` (weights only: a pickled object is refused).

    Raises WeightsUnavailableError when the file is missing, CheckpointMismatchError naming the file when it
    is empty, corrupt, holds objects only unpickling can restore, or is not a dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"training state {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointMismatchError(f"training state {path} is empty (0 bytes): a save was interrupted")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a pickle payload, RuntimeError/EOFError for corrupt files
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointMismatchError(
            f"training state {path} cannot be read as weights only ({type(exc).__name__}: {first[:300]}); "
            "labkit never unpickles arbitrary objects: save it with save_training_state"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"training state {path} holds a {type(state).__name__}, not a dict")
    return state
