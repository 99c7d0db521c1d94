"""The weights the fine-tuning grid loads by file: each pretrained state dict written once, named by its content
(its digest enters every fine-tuning task's fingerprint), and the reference-encoder row's ``encoder_weights``
(ImageNet by default, its first convolution fitted to the bands by name), resolved once; never replaced by random weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from labkit.core.errors import WeightsUnavailableError
from labkit.models.band_mapping import map_rgb_filters
from labkit.models.weights import resolve_weights
from labkit.studies.noisy_label_pretraining.data import STUDY
from labkit.studies.noisy_label_pretraining.tasks import build_model


def imagenet_encoder_state(
    num_classes: int,
    encoder: str,
    bands: Sequence[str],
    decoder_width: int,
    encoder_depth: int = 5,
    rgb: Sequence[str] | None = None,
) -> dict:
    """Encoder state dict (``encoder.*`` keys) with ImageNet weights, its first convolution fitted to ``bands`` by
    name (:func:`labkit.models.band_mapping.map_rgb_filters`): the red, green and blue bands (found by name, or
    ``rgb``: the parameter ``rgb_bands``) get the filter of their own colour, any other band (NIR, red edge, SWIR)
    the mean of the three, all scaled by 3 / bands (timm's rule). Raises WeightsUnavailableError when the weights
    cannot be had: they are never replaced by random ones.
    """
    bands = list(bands)
    net = build_model(num_classes, encoder, 3, decoder_width, weights="pretrained", seed=0, encoder_depth=encoder_depth)
    state = {f"encoder.{k}": v.detach().clone() for k, v in net.encoder.state_dict().items()}
    stem = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
    state[stem] = map_rgb_filters(state[stem], bands, rgb)
    return state


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
    """The ``imagenet`` row's encoder (``encoder_weights``, resolved by :func:`labkit.models.weights.resolve_weights`)
    as a weights file, or ``(None, reason)``: the reason names the parameter to set."""
    weights = settings["encoder_weights"]
    if weights == "random":
        return (
            None,
            "parameter 'encoder_weights' is random: the reference-encoder row would repeat random initialisation",
        )
    resolved = resolve_weights("encoder_weights", weights, settings["encoder"])
    if not resolved.ok:
        return None, resolved.reason
    shape = dict(num_classes=num_classes, encoder=settings["encoder"], decoder_width=settings["decoder_width"])
    try:
        if weights == "pretrained":
            state = imagenet_encoder_state(
                bands=settings["bands"], encoder_depth=settings["encoder_depth"], rgb=settings.get("rgb_bands"), **shape
            )
        else:
            model = build_model(
                **shape,
                in_channels=len(settings["bands"]),
                weights=weights,
                seed=0,
                encoder_depth=settings["encoder_depth"],
            )
            state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    except WeightsUnavailableError as exc:
        return None, f"weights unavailable: parameter 'encoder_weights' ({weights}): {str(exc).strip().splitlines()[0]}"
    return weights_file({k: v.numpy() for k, v in state.items()}, {"source": weights}), None
