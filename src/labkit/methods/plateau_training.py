"""Segmentation training on a validation-driven schedule: Adam, the learning rate cut on a plateau of the validation
score and training stopped early when it stops improving, the best validation epoch kept.

This is the schedule of Karimzadeh and Pires de Lima's public code (geohai/sea-ice-segment, ``models.py`` and
``configs/SA-all.ini``: Adam at 1e-5, ``ReduceLROnPlateau`` with patience 5, early stopping with patience 20, at
least 10 and at most 300 epochs), written out because :func:`labkit.methods.training.fit` fixes its plateau
patience. The score is validation mIoU (the authors cut the rate on validation loss). With ``lr_patience`` and
``stop_patience`` both ``None`` it is a constant rate for ``max_epochs`` epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from labkit.core.seeding import seed_everything
from labkit.methods.training import evaluate, model_device

LR_FACTOR = 0.1  # torch's ReduceLROnPlateau default, as the authors use it
MIN_LR = 1e-8  # the authors' min_lr
MIN_EPOCHS = 10  # the authors' min_epochs: early stopping never stops a run before this (nor past max_epochs)


@dataclasses.dataclass
class PlateauFit:
    """A finished run: per-epoch validation mIoU, training loss and learning rate, the best epoch (its weights are
    the model's), whether it stopped early, and its wall time."""

    model: nn.Module
    val_miou: np.ndarray
    train_loss: np.ndarray
    lr: np.ndarray
    best_epoch: int
    stopped_early: bool
    seconds: float

    @property
    def epochs(self) -> int:
        return len(self.val_miou)


def describe_schedule(
    max_epochs: int, lr: float, lr_patience: int | None, stop_patience: int | None, steps_per_epoch: int
) -> str:
    """The schedule in words, for a budget record (the same for every arm given the same settings)."""
    parts = [f"Adam at {lr:g}, up to {max_epochs} epochs x {steps_per_epoch} steps"]
    if lr_patience is not None:
        parts.append(f"lr x{LR_FACTOR:g} after {lr_patience} epochs without a validation-mIoU gain (min {MIN_LR:g})")
    else:
        parts.append("constant lr")
    if stop_patience is not None:
        parts.append(f"early stopping after {stop_patience} epochs without a gain (not before epoch {MIN_EPOCHS})")
    parts.append("best validation epoch kept")
    return "; ".join(parts)


def fit_on_plateau(
    model: nn.Module,
    train_loader,
    val_loader,
    *,
    num_classes: int,
    max_epochs: int,
    lr: float,
    lr_patience: int | None = 5,
    stop_patience: int | None = 20,
    ignore_index: int = 255,
    seed: int = 0,
) -> PlateauFit:
    """Train ``model`` with Adam (no weight decay) and cross-entropy, validating after every epoch on
    ``val_loader`` (mIoU). Each epoch's batch order depends on (seed, epoch) alone, so arms given the same loader
    and seed see the same batches in the same order."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    seed_everything(seed)
    started = time.time()
    device = model_device(model)
    loss_fn = nn.CrossEntropyLoss(ignore_index=ignore_index)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    sched = None
    if lr_patience is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=LR_FACTOR, patience=lr_patience, min_lr=MIN_LR
        )
    curve, losses, rates = [], [], []
    best, best_epoch, best_state, waited, stopped = -np.inf, 0, None, 0, False
    for epoch in range(1, max_epochs + 1):
        model.train()
        torch.manual_seed(seed * 7919 + epoch)
        generator = getattr(train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(seed * 7919 + epoch)
        running, batches = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            if logits.shape[-2:] != y.shape[-2:]:
                logits = nn.functional.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running = running + loss.detach()
            batches += 1
        rates.append(opt.param_groups[0]["lr"])
        losses.append(float(running) / max(batches, 1))
        score = float(evaluate(model, val_loader, "segmentation", num_classes, ignore_index)["miou"])
        curve.append(score)
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        if sched is not None:
            sched.step(score)
        if stop_patience is not None and waited >= stop_patience and epoch >= MIN_EPOCHS:
            stopped = epoch < max_epochs
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return PlateauFit(
        model,
        np.asarray(curve, float),
        np.asarray(losses, float),
        np.asarray(rates, float),
        best_epoch,
        stopped,
        time.time() - started,
    )
