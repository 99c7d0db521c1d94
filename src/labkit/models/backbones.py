"""One factory over timm names: pretrained weights from a local file, the HF cache or the hub; never silently random.

Weight sources for ``weights="pretrained"``, in order:
1. ``weights_path=`` given explicitly;
2. ``$LABKIT_WEIGHTS_DIR`` holding ``<timm-name>.safetensors`` / ``.pth`` (or a folder ``<timm-name>/``
   with ``model.safetensors`` or ``pytorch_model.bin``), tried with and without the ``.tag`` suffix;
3. the Hugging Face cache (``~/.cache/huggingface/hub``), offline;
4. the Hugging Face hub, only when it answers within a second and ``HF_HUB_OFFLINE`` is not set.
Otherwise :class:`WeightsUnavailableError` names these ways. ``weights="random"`` is the only way to get
an untrained network; ``weights="labkit:<name>"`` loads a checkpoint another study produced.

A weights file that was named but does not exist, or is not a checkpoint, is a :class:`WeightsFileError`
(a mistake to fix, never a row to mark *not evaluated*). A file that is read goes through
:func:`labkit.core.checkpoints.load_checkpoint` first (so a corrupt, empty or pickled file is an error naming
it), and after timm has loaded it every backbone parameter must have come from the file: timm loads
non-strictly for ``num_classes=0`` and ``features_only=True``, and a file for another architecture would
otherwise leave a random network. Only the classifier head (which the caller replaces) may be missing; the
error names the missing and the unexpected keys.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from labkit.core.errors import CheckpointMismatchError, WeightsFileError, WeightsUnavailableError

# Short names used by the studies' presets -> timm names (with their pretrained tag).
BACKBONES: dict[str, str] = {
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "vit_tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "vit_small": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "resnet18": "resnet18.a1_in1k",
    "resnet50": "resnet50.a1_in1k",
    "resnet101": "resnet101.a1h_in1k",
    "resnet152": "resnet152.a1h_in1k",
    "resnet10t": "resnet10t.c3_in1k",
    "test_vit": "test_vit.r160_in1k",
}

_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def timm_name(name: str) -> str:
    return BACKBONES.get(name, name)


def how_to_provide(name: str) -> str:
    full = timm_name(name)
    hub_id = _hub_id(full) or f"timm/{full}"
    return (
        f"Pretrained weights for '{name}' ({full}) are not available. Provide them in one of three ways:\n"
        f"  1. a local file: set the study's weights parameter for this backbone to /path/to/{full}.safetensors "
        f"(or .pth; e.g. `-p encoder_weights /path/to/{full}.safetensors`), or put that file in the folder named "
        f"by LABKIT_WEIGHTS_DIR;\n"
        f"  2. the Hugging Face cache: on a machine with internet run "
        f"`python -c \"import timm; timm.create_model('{full}', pretrained=True)\"` "
        f"(or `huggingface-cli download {hub_id}`) and copy ~/.cache/huggingface to this machine;\n"
        f"  3. go online (unset HF_HUB_OFFLINE) and labkit downloads them from the hub.\n"
        f"To run without pretraining, set that weights parameter to random explicitly."
    )


def _hub_id(full: str) -> str | None:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(full)
    except Exception:  # unknown tag: timm raises several kinds of error here
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _local_file(full: str, weights_path: str | os.PathLike | None) -> Path | None:
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_dir():
            for fname in _FOLDER_FILES:
                if (path / fname).is_file():
                    return path / fname
            raise WeightsFileError(f"weights folder {path} holds none of {', '.join(_FOLDER_FILES)}")
        if not path.exists():
            raise WeightsFileError(f"weights file {path} does not exist (from {os.getcwd()})")
        if path.suffix not in _CHECKPOINT_SUFFIXES:
            raise WeightsFileError(
                f"weights file {path} is not a checkpoint (expected {', '.join(_CHECKPOINT_SUFFIXES)})"
            )
        return path
    from labkit.core.paths import weights_dir

    folder = weights_dir()
    if folder is None:
        return None
    for stem in dict.fromkeys([full, full.split(".")[0]]):
        for suffix in _CHECKPOINT_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        for fname in _FOLDER_FILES:
            if (folder / stem / fname).is_file():
                return folder / stem / fname
    return None


def _hf_cached_file(hub_id: str | None) -> Path | None:
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the hub answers quickly; offline machines must fail in a second, not after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_pretrained_file(name: str, weights_path=None) -> Path | None:
    """The local file that pretrained weights come from, or None when only the hub can give them."""
    full = timm_name(name)
    return _local_file(full, weights_path) or _hf_cached_file(_hub_id(full))


def create_backbone(name: str, weights: str = "pretrained", weights_path=None, **timm_kwargs):
    """A timm model by short or timm name, with weights from a named, explicit source.

    ``weights``: ``"pretrained"``, ``"random"``, ``"labkit:<checkpoint-name>"`` or a checkpoint path.
    Extra keyword arguments go to ``timm.create_model`` (``num_classes=0``, ``features_only=True``,
    ``img_size=...``, ``in_chans=...``).
    """
    import timm

    full = timm_name(name)
    if weights == "random":
        return timm.create_model(full, pretrained=False, **timm_kwargs)
    if isinstance(weights, str) and weights.startswith("labkit:"):
        from labkit.models.registry import load_named_into

        model = timm.create_model(full, pretrained=False, **timm_kwargs)
        load_named_into(model, weights.split(":", 1)[1])
        return model
    if weights != "pretrained":
        weights_path = weights  # a path given as the weights argument
    file = resolve_pretrained_file(name, weights_path)
    if file is None:
        if not hub_reachable():
            raise WeightsUnavailableError(how_to_provide(name))
        try:
            return timm.create_model(full, pretrained=True, **timm_kwargs)
        except OSError as exc:
            raise WeightsUnavailableError(how_to_provide(name) + f"\n(hub said: {exc})") from exc
    return _create_from_file(full, file, timm_kwargs)


_RECORD_LOCK = threading.Lock()


@contextmanager
def _recorded_timm_loads():
    """Record what timm's ``load_pretrained`` loads: the keys of the state dict and the keys it left missing.

    timm may load non-strictly (``num_classes=0``, ``features_only=True``) and then only logs what was
    missing; this keeps the list. Yields a list of records, one per load (empty when timm used another path).
    """
    try:
        from timm.models import _builder

        original = _builder.load_pretrained
    except (ImportError, AttributeError):  # another timm layout: the key check below covers it
        yield []
        return
    records: list[dict] = []

    def recording(model, *args, **kwargs):
        own = model.load_state_dict

        def load_state_dict(state_dict, strict=True, **more):
            result = own(state_dict, strict=strict, **more)
            records.append(
                {
                    "keys": list(state_dict),
                    "missing": list(result.missing_keys),
                    "unexpected": list(result.unexpected_keys),
                }
            )
            return result

        model.load_state_dict = load_state_dict
        try:
            return original(model, *args, **kwargs)
        finally:
            del model.load_state_dict

    with _RECORD_LOCK:
        _builder.load_pretrained = recording
        try:
            yield records
        finally:
            _builder.load_pretrained = original


def _head_prefixes(full: str) -> tuple[str, ...]:
    """Key prefixes of the classifier head (the part a caller may replace), from timm's pretrained config."""
    import timm

    heads = ("head.", "fc.", "classifier.", "head_dist.")
    try:
        cfg = timm.models.get_pretrained_cfg(full)
        classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    except Exception:  # an unknown tag
        classifier = None
    if isinstance(classifier, str):
        classifier = (classifier,)
    return tuple(dict.fromkeys([f"{c}." for c in classifier or ()] + list(heads)))


def _not_filled_error(file: Path, full: str, missing: list[str], unexpected: list[str]) -> CheckpointMismatchError:
    from labkit.core.checkpoints import _preview

    parts = [f"{len(missing)} missing key(s): {_preview(missing)}"]
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    return CheckpointMismatchError(
        f"weights file {file} does not fit {full} (is it for another architecture?): the file does not fill the "
        f"backbone, which would run with random weights; " + "; ".join(parts)
    )


def _reference_keys(full: str, timm_kwargs: dict) -> list[str]:
    """The state-dict keys of the model timm loads a file into (before any features wrapper)."""
    import timm

    kwargs = {k: v for k, v in timm_kwargs.items() if k not in ("features_only", "out_indices", "feature_cls")}
    return list(timm.create_model(full, pretrained=False, **kwargs).state_dict())


def _create_from_file(full: str, file: Path, timm_kwargs: dict):
    """Build ``full`` with timm's loader over ``file`` and check that the file filled every backbone key."""
    import timm

    from labkit.core.checkpoints import load_checkpoint

    state, _ = load_checkpoint(file)  # a corrupt, empty, pickled or non-tensor file: an error naming it
    heads = _head_prefixes(full)
    is_head = lambda key: key.startswith(heads) or key.endswith("num_batches_tracked")  # noqa: E731
    with _recorded_timm_loads() as records:
        try:
            # timm's own loader applies the model's checkpoint filter (e.g. resampling position embeddings).
            model = timm.create_model(full, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **timm_kwargs)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            reference = set(_reference_keys(full, timm_kwargs))
            missing = [k for k in reference if k not in state and not is_head(k)]
            unexpected = [k for k in state if k not in reference and not is_head(k)]
            if missing:
                raise _not_filled_error(file, full, missing, unexpected) from exc
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointMismatchError(
                f"weights file {file} does not load into {full}: {type(exc).__name__}: {first[:500]}"
            ) from exc
    if records:
        missing = [k for r in records for k in r["missing"] if not is_head(k)]
        unexpected = [k for r in records for k in r["unexpected"] if not is_head(k)]
    else:  # timm loaded some other way: compare the file's keys with the model's
        reference = set(_reference_keys(full, timm_kwargs))
        missing = [k for k in reference if k not in state and not is_head(k)]
        unexpected = [k for k in state if k not in reference and not is_head(k)]
    if missing:
        raise _not_filled_error(file, full, missing, unexpected)
    return model
