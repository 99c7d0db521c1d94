"""One factory over timm names: pretrained weights from a local file, the HF cache or the hub; never silently random.

Weight sources for ``weights="pretrained"``, in order:
1. ``weights_path=`` given explicitly;
2. ``$LABKIT_WEIGHTS_DIR`` holding ``<timm-name>.safetensors`` / ``.pth`` (or a folder ``<timm-name>/``
   with ``model.safetensors`` or ``pytorch_model.bin``), tried with and without the ``.tag`` suffix;
3. the Hugging Face cache (``~/.cache/huggingface/hub``), offline;
4. the Hugging Face hub, only when it answers within a second and ``HF_HUB_OFFLINE`` is not set.
Otherwise :class:`WeightsUnavailableError` names these ways. ``weights="random"`` is the only way to get
an untrained network; ``weights="labkit:<name>"`` loads a checkpoint another study produced.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from labkit.core.errors import WeightsUnavailableError

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
        f"  1. a local file: pass weights_path=/path/to/{full}.safetensors (or .pth), or put that file in "
        f"the folder named by LABKIT_WEIGHTS_DIR;\n"
        f"  2. the Hugging Face cache: on a machine with internet run "
        f"`python -c \"import timm; timm.create_model('{full}', pretrained=True)\"` "
        f"(or `huggingface-cli download {hub_id}`) and copy ~/.cache/huggingface to this machine;\n"
        f"  3. go online (unset HF_HUB_OFFLINE) and labkit downloads them from the hub.\n"
        f"To run without pretraining, ask for weights='random' explicitly."
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
            raise WeightsUnavailableError(
                f"weights folder {path} holds none of {', '.join(_FOLDER_FILES)}")
        if not path.exists():
            raise WeightsUnavailableError(f"weights file {path} does not exist")
        if path.suffix not in _CHECKPOINT_SUFFIXES:
            raise WeightsUnavailableError(
                f"weights file {path} is not a checkpoint (expected {', '.join(_CHECKPOINT_SUFFIXES)})")
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


def _create_from_file(full: str, file: Path, timm_kwargs: dict):
    import timm

    from labkit.core.checkpoints import load_checkpoint, load_state_into

    try:
        # timm's own loader applies the model's checkpoint filter (e.g. resampling position embeddings).
        return timm.create_model(full, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **timm_kwargs)
    except (RuntimeError, KeyError, ValueError) as exc:
        # Name the offending keys rather than passing on timm's long traceback.
        state, _ = load_checkpoint(file)
        reference = timm.create_model(full, pretrained=False, **{k: v for k, v in timm_kwargs.items()
                                                                 if k not in ("features_only", "out_indices")})
        load_state_into(reference, state, source=f"weights file {file}", ignore=("head.", "fc.", "classifier."))
        raise  # the keys fit, so the failure was something else: keep timm's message
