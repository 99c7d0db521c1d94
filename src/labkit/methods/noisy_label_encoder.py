"""The noisy-label pretrained land-cover encoder another study consumes: labkit checkpoint ``noisy-pretrained-unet-r18``.

A U-Net (ResNet-18 encoder of 4 stages, the stem to layer3, as the noisy-label study's arms use it) pretrained on
simulated multispectral land-cover tiles whose labels a composite of label-noise models corrupted; the encoder's
state dict is saved under the name with its bands, classes, noise settings, input normalisation and depth. The
noisy-label study publishes it with its own "features learned" record in the sidecar
(:mod:`labkit.models.features_record`) through :func:`save_pretrained_encoder`; :func:`produce_pretrained_encoder`
is the checkpoint's declared producer (a small budget, for a study that needs it and finds none), whose sidecar
holds no such record, so a consumer that gates on it leaves its transfer arm *not evaluated*.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from labkit.core.errors import ParameterError
from labkit.data import label_noise, landcover
from labkit.methods.unet_training import build_model, encoder_state, train

CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
#: The composite label noise of the pretraining: geometric noise models of :mod:`labkit.data.label_noise`.
DEFAULT_NOISE = ("boundary", "misregistration", "flips", "omission", "coarse")
#: The land-cover task the encoder is pretrained on (eo-learn's Slovenian legend).
TASK = "lulc"
#: What the checkpoint's meta names as its producer.
PRODUCER = "labkit.studies.noisy_label_pretraining"


def band_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over a tile stack (N, C, H, W), ignoring NaN."""
    mean = np.nanmean(images, axis=(0, 2, 3))
    std = np.nanstd(images, axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    return ((images - np.asarray(mean)[None, :, None, None]) / np.asarray(std)[None, :, None, None]).astype(np.float32)


def noisy_labels(
    tiles: landcover.LandcoverTiles | None,
    clean: np.ndarray,
    noise_models: Sequence[str],
    severity: float,
    seed: int,
    num_classes: int,
) -> np.ndarray:
    """``clean`` corrupted by the composite of ``noise_models`` at ``severity`` (0 returns a copy)."""
    if severity == 0:
        return clean.copy()
    model = label_noise.make_noise(list(noise_models), severity, num_classes)
    context = {}
    if "sensor_rule" in noise_models:
        if tiles is None:
            raise ParameterError("noise_models: 'sensor_rule' needs a surface height, which real tiles lack")
        context = {"height": tiles.height, "ndvi": tiles.ndvi()}
    return label_noise.apply_noise(model, clean, seed=seed, **context)


def simulate_noisy_pool(
    n_tiles: int,
    tile: int,
    seed: int,
    noise_models: Sequence[str],
    severity: float,
    bands=landcover.NIRRGB,
    task: str = TASK,
    progress: bool = False,
):
    """Simulated tiles, their clean and noisy ``task`` labels, and the measured pixel noise rate."""
    tiles = landcover.LandscapeSimulator(tile, bands=bands).sample(n_tiles, seed=seed, progress=progress)
    clean = tiles.labels(task)
    num_classes = len(landcover.task_legend(task)[0])
    noisy = noisy_labels(tiles, clean, noise_models, severity, seed, num_classes)
    return tiles, clean, noisy, label_noise.noise_rate(clean, noisy)


def checkpoint_meta(bands, classes, noise_models, severity, norm_mean, norm_std, encoder, extra=None) -> dict:
    return {
        "in_channels": len(bands),
        "bands": list(bands),
        "classes": list(classes),
        "encoder": encoder,
        "arch": "unet",
        "noise_models": list(noise_models),
        "noise_severity": float(severity),
        "norm_mean": [float(v) for v in norm_mean],
        "norm_std": [float(v) for v in norm_std],
        "producer": PRODUCER,
        **(extra or {}),
    }


def save_pretrained_encoder(model_or_state, meta: dict) -> Path:
    """Save a ResNet-18 encoder (a U-Net, or its state dict with ``encoder.*`` keys; any number of stages) as the
    named checkpoint ``noisy-pretrained-unet-r18`` (keys of ``model.encoder.state_dict()``)."""
    from labkit.models.registry import save_named_checkpoint

    if meta.get("encoder") != "resnet18":
        raise ValueError(
            f"'{CHECKPOINT_NAME}' holds a ResNet-18 encoder; this model's encoder is {meta.get('encoder')!r}"
        )
    if isinstance(model_or_state, torch.nn.Module):
        state = encoder_state(model_or_state)
    else:
        state = {
            k[len("encoder.") :]: torch.as_tensor(np.array(v))
            for k, v in model_or_state.items()
            if k.startswith("encoder.")
        }
    return save_named_checkpoint(CHECKPOINT_NAME, state, meta)


def produce_pretrained_encoder(
    n_tiles: int = 64,
    epochs: int = 2,
    tile: int = 64,
    seed: int = 0,
    encoder: str = "resnet18",
    progress: bool = True,
    severity: float = 0.6,
    noise_models: Sequence[str] = DEFAULT_NOISE,
    batch_size: int = 8,
    decoder_width: int = 32,
    lr: float = 1e-3,
    encoder_depth: int = 4,
) -> Path:
    """Simulate ``n_tiles`` noisy land-cover tiles, pretrain a U-Net on them, save its encoder, return the path.

    The checkpoint is ``noisy-pretrained-unet-r18`` (the keys of ``model.encoder.state_dict()`` at
    ``encoder_depth`` stages, 4 as the study saves it; meta: bands, in_channels, classes, noise settings, input
    normalisation, depth). Only ResNet-18 encoders are saved under it. Its sidecar carries no "features learned"
    record: the small budget proves nothing about the features.
    """
    if encoder != "resnet18":
        raise ValueError(f"'{CHECKPOINT_NAME}' is a ResNet-18 encoder; got encoder={encoder!r}")
    started = time.time()
    classes = landcover.task_legend(TASK)[0]
    tiles, clean, noisy, rate = simulate_noisy_pool(n_tiles, tile, seed, noise_models, severity)
    mean, std = band_statistics(tiles.images)
    model = build_model(len(classes), encoder, len(tiles.bands), decoder_width, seed=seed, encoder_depth=encoder_depth)
    steps = max(1, int(np.ceil(n_tiles / batch_size)))
    train(
        model,
        normalise(tiles.images, mean, std),
        noisy,
        len(classes),
        epochs,
        steps,
        batch_size,
        lr,
        seed,
        progress,
        desc="noisy-label pretraining",
    )
    meta = checkpoint_meta(
        tiles.bands,
        classes,
        noise_models,
        severity,
        mean,
        std,
        encoder,
        {
            "n_tiles": n_tiles,
            "epochs": epochs,
            "tile": tile,
            "seed": seed,
            "pixel_noise_rate": rate,
            "decoder_width": decoder_width,
            "encoder_depth": encoder_depth,
            "seconds": round(time.time() - started, 2),
            "produced_by": "produce_pretrained_encoder",
        },
    )
    return save_pretrained_encoder(model, meta)
