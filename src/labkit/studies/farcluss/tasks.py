"""FARCLUSS grid tasks: a split's shared supervised warm-up, and one arm from it on one split and seed.

Protocol (every arm, labelled split and seed): a segmenter is first trained on the labelled split alone for
``warmup_iterations`` (one warm-up per split and seed, shared by every arm: a grid task of its own), then
each arm continues from that same state for ``iterations`` steps with the learning rate decayed to zero
(``lr_schedule: poly``): supervised-only keeps training on labels, the hard-threshold baseline and FARCLUSS
(and its ablations) add the unlabeled images through an EMA teacher. The EMA teacher of each run is scored
on held-out images.

The tasks read the study's arrays from the file ``experiment`` prepared (:mod:`labkit.data.prepared_arrays`) and
import nothing above them: this module's code is the grids' cache key.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from labkit.core.grid import grid_task
from labkit.data.prepared_arrays import load_prepared_arrays
from labkit.methods import semisup as ss


def build_model(params: dict) -> ss.SegmenterWithEmbedding:
    """The segmenter of a task's ``model`` parameters (:func:`arms.model_params`)."""
    return ss.build_model(
        params["num_classes"],
        encoder=params["encoder"],
        arch=params["arch"],
        embed_dim=params["embed_dim"],
        mean=tuple(params["mean"]),
        std=tuple(params["std"]),
        weights=params["weights"],
        **params["kwargs"],
    )


def torch_device(name: str):
    """The torch device a resolved device name means."""
    from labkit.core.device import resolve_device

    return resolve_device(name, announce=False)


@grid_task("farcluss/warmup")
def warmup_task(
    data_file: str,
    split: str,
    labeled: list[int],
    seed: int,
    model: dict,
    iterations: int,
    batch_size: int,
    lr: float,
    crop_min_scale: float,
    device: str = "cpu",
    optimizer: str = "adamw",
    head_lr_scale: float = 1.0,
    crop: int | None = None,
) -> dict:
    """One split's shared supervised warm-up: the student's weights after ``iterations`` steps on the labels
    (``crop``: a new random window of each drawn image at every step, from the whole image)."""
    from labkit.core.claims import budget_record  # imported here: importing the tasks loads no claims module

    arrays = load_prepared_arrays(data_file)
    torch.manual_seed(seed)
    net = build_model(model).to(torch_device(device))
    config = replace(ss.method_config("supervised"), crop_min_scale=crop_min_scale)
    sizes = arrays.get("train_sizes")
    ss.train_semisupervised(
        net,
        arrays["train_images"][labeled],
        arrays["train_masks"][labeled],
        None,
        config,
        num_classes=model["num_classes"],
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=False,
        **_optimiser(optimizer, head_lr_scale),
        crop=crop,
        labeled_sizes=sizes[labeled] if sizes is not None else None,
    )
    budget = budget_record(
        iterations,
        batch_size,
        lr,
        f"constant lr ({optimizer_words(optimizer, head_lr_scale)}) over {iterations} supervised steps",
        _trained_params(net),
    )
    return {"state": {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}, "budget": budget}


def _trained_params(net: torch.nn.Module) -> int:
    """Parameters that received a gradient in the last step (all that require one, before any step)."""
    touched = [p for p in net.parameters() if p.grad is not None]
    return int(sum(p.numel() for p in (touched or [p for p in net.parameters() if p.requires_grad])))


def _optimiser(optimizer: str, head_lr_scale: float) -> dict:
    """``train_semisupervised``'s optimiser arguments; AdamW at one learning rate keeps its earlier call (and so
    the cached tasks' draws)."""
    if optimizer == "adamw" and head_lr_scale == 1.0:
        return {}
    return {"optimizer": optimizer, "head_lr_scale": head_lr_scale}


def optimizer_words(optimizer: str = "adamw", head_lr_scale: float = 1.0) -> str:
    """The optimiser in words, for the budget's schedule."""
    name = "SGD, momentum 0.9, weight decay 1e-4" if optimizer == "sgd" else "AdamW"
    return name + (f"; decoder and heads at {head_lr_scale:g}x the encoder's lr" if head_lr_scale != 1 else "")


def arm_schedule(
    warmup_iterations: int, iterations: int, lr_schedule: str, optimizer: str = "adamw", head_lr_scale: float = 1.0
) -> str:
    """An arm's schedule in words: the shared warm-up, then the arm's own steps."""
    after = "poly decay (1 - t/T)^0.9 to 0" if lr_schedule == "poly" else "constant lr"
    return (
        f"{warmup_iterations} supervised warm-up steps at constant lr (shared), then {iterations} steps, {after} "
        f"({optimizer_words(optimizer, head_lr_scale)}; {warmup_iterations + iterations} in all)"
    )


def _config_from(params: dict) -> ss.SemiSupConfig:
    names = {f.name for f in fields(ss.SemiSupConfig)}
    return ss.SemiSupConfig(**{k: v for k, v in params.items() if k in names})


@grid_task("farcluss/arm")
def arm_task(
    data_file: str,
    split: str,
    labeled: list[int],
    seed: int,
    arm: str,
    config: dict,
    model: dict,
    iterations: int,
    batch_size: int,
    lr: float,
    lr_schedule: str,
    warm_path: str,
    warm_digest: str,
    device: str = "cpu",
    tile: int | None = None,
    class_names: list[str] | None = None,
    keep_state: bool = False,
    warmup_iterations: int = 0,
    optimizer: str = "adamw",
    head_lr_scale: float = 1.0,
    crop: int | None = None,
) -> dict:
    """One arm on one split and seed, from the split's warm-up: the EMA teacher's scores on the held-out set,
    and the arm's budget from initialisation (``warmup_iterations``: the shared warm-up's steps)."""
    from safetensors.torch import load_file

    from labkit.core.claims import budget_record

    arrays = load_prepared_arrays(data_file)
    dev = torch_device(device)
    net = build_model(model)
    net.load_state_dict(load_file(warm_path))
    net = net.to(dev)
    train_x, train_y = arrays["train_images"], arrays["train_masks"]
    unlabeled = np.setdiff1d(np.arange(len(train_x)), np.asarray(labeled, dtype=np.int64))
    semisup = _config_from(config)
    sizes = arrays.get("train_sizes")
    names = class_names or [str(c) for c in range(model["num_classes"])]
    # the plateau: the teacher scored again where the last fifth of all its steps (warm-up included) begins
    late_start = iterations - round((warmup_iterations + iterations) / 5)
    early: dict[str, float] = {}

    def score_early(_steps, teacher):
        early["miou"] = ss.score_predictions(
            ss.predict(teacher, arrays["val_images"], tile=tile), arrays["val_masks"], names
        )["miou"]

    t0 = time.perf_counter()
    teacher, history = ss.train_semisupervised(
        net,
        train_x[labeled],
        train_y[labeled],
        train_x[unlabeled] if semisup.uses_unlabeled else None,
        semisup,
        num_classes=model["num_classes"],
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        seed=seed + 1,
        progress=False,
        lr_schedule=lr_schedule,
        **_optimiser(optimizer, head_lr_scale),
        crop=crop,
        labeled_sizes=sizes[labeled] if sizes is not None else None,
        unlabeled_sizes=sizes[unlabeled] if sizes is not None else None,
        checkpoints=(late_start,) if 0 < late_start < iterations else (),
        on_checkpoint=score_early,
    )
    seconds = time.perf_counter() - t0
    pred = ss.predict(teacher, arrays["val_images"], tile=tile)
    budget = budget_record(
        warmup_iterations + iterations,
        batch_size,
        lr,
        arm_schedule(warmup_iterations, iterations, lr_schedule, optimizer, head_lr_scale),
        _trained_params(net),
    )
    # not compared by "same budget": the teacher-student arms also draw as many unlabeled images per step
    budget["unlabeled_batch"] = batch_size if semisup.uses_unlabeled else 0
    record: dict[str, Any] = {
        **ss.score_predictions(pred, arrays["val_masks"], names, band=arrays["val_band"]),
        "train_seconds": seconds,
        "n_labeled": len(labeled),
        # mIoU gained over the last fifth of the run's steps (NaN: the arm's own steps are under a fifth of all, or none)
        "late_gain": float("nan"),
        "warm": warm_digest,
        "budget": budget,
    }
    if "miou" in early:
        record["late_gain"] = float(record["miou"] - early["miou"])
    late = history.iloc[int(0.8 * len(history)) :]
    for col in ("pseudo_kept", "pseudo_weight"):
        if col in late:
            record[col] = float(late[col].mean())
    if keep_state:
        record["state"] = {k: v.detach().cpu().numpy() for k, v in teacher.state_dict().items()}
    return record
