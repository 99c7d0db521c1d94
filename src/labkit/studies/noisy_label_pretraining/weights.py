"""The weights the fine-tuning grid loads by file: each pretrained state dict written once, named by its content
(its digest enters every fine-tuning task's fingerprint), and the reference-encoder row's ``encoder_weights``
(ImageNet by default, its first convolution fitted to the bands), resolved once; never replaced by random weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from labkit.core.errors import WeightsUnavailableError
from labkit.studies.noisy_label_pretraining.data import STUDY
from labkit.studies.noisy_label_pretraining.tasks import build_model

#: Sentinel-2 bands that ImageNet's red, green and blue input filters belong to.
IMAGENET_RGB_BANDS = ("B04", "B03", "B02")


def imagenet_encoder_state(
    num_classes: int, encoder: str, bands: Sequence[str], decoder_width: int, encoder_depth: int = 5
) -> dict:
    """Encoder state dict (``encoder.*`` keys) with ImageNet weights, its first convolution fitted to ``bands``.

    Each of B04, B03, B02 gets the filter of its own colour, any other band (NIR, red edge, SWIR) the mean of the
    three, all scaled by 3 / bands (timm's rule). Raises WeightsUnavailableError when the weights cannot be had:
    they are never replaced by random ones.
    """
    bands = list(bands)
    rgb = build_model(num_classes, encoder, 3, decoder_width, weights="pretrained", seed=0, encoder_depth=encoder_depth)
    state = {f"encoder.{k}": v.detach().clone() for k, v in rgb.encoder.state_dict().items()}
    stem = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
    w = state[stem]
    mean = w.mean(dim=1, keepdim=True)
    columns = [w[:, IMAGENET_RGB_BANDS.index(b)][:, None] if b in IMAGENET_RGB_BANDS else mean for b in bands]
    state[stem] = torch.cat(columns, dim=1) * (3.0 / len(bands))
    return state


def _unavailable_reason(exc: Exception, encoder: str) -> str:
    """One line for tables and titles that says what to do."""
    from labkit.models.backbones import timm_name

    text = str(exc).strip()
    if "are not available" in text:
        return (
            f"weights unavailable: no {timm_name(encoder)} ImageNet weights on this machine (no local file, no "
            "Hugging Face cache, hub offline); put the timm weights file in LABKIT_WEIGHTS_DIR or pass "
            "encoder_weights=<file>; never replaced by random weights"
        )
    return f"weights unavailable: {text.splitlines()[0] if text else type(exc).__name__}"


def weights_file(state: Mapping[str, np.ndarray], meta: dict) -> dict:
    """Write a pretrained state dict (safetensors) named by its content; returns ``{"path", "digest"}``."""
    from labkit.core.checkpoints import save_checkpoint
    from labkit.core.grid import file_digest
    from labkit.core.paths import cache_dir

    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name]).tobytes())
    path = cache_dir(f"{STUDY}/weights") / f"{digest.hexdigest()[:24]}.safetensors"
    if not path.exists():
        save_checkpoint(path, {k: torch.as_tensor(np.array(v)) for k, v in state.items()}, meta)
    return {"path": str(path), "digest": file_digest(path)}


def external_encoder(settings: dict, num_classes: int) -> tuple[dict | None, str | None]:
    """The ``imagenet`` row's encoder (``encoder_weights``) as a weights file, or ``(None, reason)``."""
    weights = settings["encoder_weights"]
    try:
        if weights == "pretrained":
            state = imagenet_encoder_state(
                num_classes,
                settings["encoder"],
                settings["bands"],
                settings["decoder_width"],
                settings["encoder_depth"],
            )
        elif weights == "random":
            return None, "encoder_weights=random: the reference-encoder row would repeat random initialisation"
        else:
            model = build_model(
                num_classes,
                settings["encoder"],
                len(settings["bands"]),
                settings["decoder_width"],
                weights=weights,
                seed=0,
                encoder_depth=settings["encoder_depth"],
            )
            state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    except WeightsUnavailableError as exc:
        return None, _unavailable_reason(exc, settings["encoder"])
    return weights_file({k: v.numpy() for k, v in state.items()}, {"source": weights}), None
