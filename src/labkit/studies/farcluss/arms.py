"""FARCLUSS arms: each distinct training configuration is one arm and runs once per split and seed.

"FARCLUSS without the prototype" is the same training as "hard threshold + fuzzy + uncertainty + rebalance", so it
is one arm (``without prototype``), and removing or adding a part are one comparison where they coincide.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.arms import Arm, arm_labels
from labkit.core.errors import ParameterError
from labkit.methods import semisup as ss

from .data import ALL_LABELS, StudyData, ablation_split, split_names

MAIN_METHODS = ("supervised", "fixmatch", "farcluss")
ABLATION_REMOVE = tuple(f"without {p}" for p in ss.PARTS)
ABLATION_ADD = ("+ fuzzy", "+ fuzzy + uncertainty")
# (part, arm with it, arm before it) when the parts are added one by one to the hard-threshold baseline.
# Adding the prototype last is removing it from FARCLUSS: that comparison is made once, as a removal.
ADD_STEPS = (
    ("fuzzy", "+ fuzzy", "fixmatch"),
    ("uncertainty", "+ fuzzy + uncertainty", "+ fuzzy"),
    ("rebalance", "without prototype", "+ fuzzy + uncertainty"),
)
FLOOR_ARM = "majority floor"  # the floor rows' arm in the claims' ``runs`` table

ARMS = (
    Arm("supervised", "supervised only", "C0"),
    Arm("fixmatch", "hard threshold 0.95 (FixMatch-style)", "C1"),
    Arm("farcluss", "FARCLUSS (all parts)", "C2"),
    Arm("without fuzzy", "without fuzzy", "C3"),
    Arm("without uncertainty", "without uncertainty", "C4"),
    Arm("without rebalance", "without rebalance", "C5"),
    Arm("without prototype", "without prototype (= + fuzzy + uncertainty + rebalance)", "C6"),
    Arm("+ fuzzy", "hard threshold + fuzzy", "C7"),
    Arm("+ fuzzy + uncertainty", "hard threshold + fuzzy + uncertainty", "C8"),
    Arm(FLOOR_ARM, "floor: majority class everywhere", "0.5", reference=True),
)
ARM_LABELS = arm_labels(ARMS)


def _base_config(cfg) -> ss.SemiSupConfig:
    return ss.method_config(
        "farcluss",
        top_k=cfg.top_k,
        threshold=cfg.threshold,
        certainty=cfg.certainty,
        ema_momentum=cfg.ema_momentum,
        unsup_weight=cfg.unsup_weight,
        contrast_weight=cfg.contrast_weight,
        temperature=cfg.temperature,
        rebalance_power=cfg.rebalance_power,
        contrast_pixels=cfg.contrast_pixels,
        crop_min_scale=cfg.crop_min_scale,
        strong=cfg.strong_augmentation,
    )


def arm_config(cfg, arm: str) -> ss.SemiSupConfig:
    """The training configuration of an arm (one distinct configuration per arm)."""
    full = _base_config(cfg)
    off = {p: False for p in ss.PARTS}
    if arm == "farcluss":
        return full
    if arm in ("supervised", "fixmatch"):
        return replace(full, method=arm, **off)
    if arm.startswith("without "):
        part = arm.split(" ", 1)[1]
        if part not in ss.PARTS:
            raise ParameterError(f"unknown arm {arm!r}")
        return replace(full, **{part: False})
    if arm.startswith("+ "):
        parts = arm[2:].split(" + ")
        if not set(parts) <= set(ss.PARTS):
            raise ParameterError(f"unknown arm {arm!r}")
        return replace(full, **{p: p in parts for p in ss.PARTS})
    raise ParameterError(f"unknown arm {arm!r}")


def ablation_arms(cfg) -> list[str]:
    if cfg.ablation == "none":
        return []
    arms = ["farcluss", "fixmatch", *ABLATION_REMOVE]
    return arms + (list(ABLATION_ADD) if cfg.ablation == "all" else [])


def run_plan(cfg) -> list[tuple[str, str]]:
    """(arm, split) of every distinct training; each runs once per seed."""
    plan = [(arm, split) for split in split_names(cfg) for arm in MAIN_METHODS]
    plan += [(arm, ablation_split(cfg)) for arm in ablation_arms(cfg)]
    plan.append(("supervised", ALL_LABELS))
    return list(dict.fromkeys(plan))


def main_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The main arms at the main splits (those where every main arm ran)."""
    main_splits = [
        s for s in dict.fromkeys(runs.split) if s != ALL_LABELS and set(MAIN_METHODS) <= set(runs[runs.split == s].arm)
    ]
    return runs[runs.arm.isin(MAIN_METHODS) & runs.split.isin(main_splits)]


def model_params(cfg, data: StudyData) -> dict:
    """The network every arm trains (a task's ``model`` parameter): the architecture, the input normalisation from
    the training images, and the encoder's weights."""
    mean, std = image_stats(data.train.images, data.train_sizes)
    return {
        "num_classes": data.num_classes,
        "encoder": cfg.encoder,
        "arch": cfg.arch,
        "embed_dim": cfg.embed_dim,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "weights": str(cfg.encoder_weights),
        "kwargs": decoder_kwargs(cfg),
    }


def image_stats(images: np.ndarray, sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the images in [0, 1], over each image's true extent (``sizes``)
    when they are padded canvases (the padding left out)."""
    if sizes is None:
        x = ss.as_float(images)
        return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-6
    total, squares, n = np.zeros(images.shape[1]), np.zeros(images.shape[1]), 0
    for image, (h, w) in zip(images, sizes):
        v = ss.as_float(image[:, :h, :w]).astype(np.float64)
        total += v.sum(axis=(1, 2))
        squares += np.square(v).sum(axis=(1, 2))
        n += int(h) * int(w)
    mean = total / max(n, 1)
    return mean, np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 0)) + 1e-6


def decoder_kwargs(cfg) -> dict[str, Any]:
    """The segmenter's encoder depth and decoder width: DeepLabV3+'s ``decoder_channels``, or a U-Net's halved per
    stage from it."""
    kwargs: dict[str, Any] = {"encoder_depth": cfg.encoder_depth}
    if cfg.arch == "deeplabv3plus":
        kwargs["decoder_channels"] = cfg.decoder_channels
    else:  # U-Net: halve the width per stage from decoder_channels
        kwargs["decoder_channels"] = [max(8, cfg.decoder_channels // 2**i) for i in range(cfg.encoder_depth)]
    return kwargs
