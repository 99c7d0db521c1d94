"""The training loop the studies share: segmentation or classification, early stopping, resume, history.

Kept thin on purpose (one ``loss.item()`` per step, metrics only at validation) so it costs no more
than a bare PyTorch loop; ``benchmarks/bench_foundation.py`` measures that.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.core.checkpoints import load_training_state, save_training_state
from labkit.core.device import autocast, grad_scaler
from labkit.core.metrics import ConfusionMatrix
from labkit.core.progress import bar_enabled
from labkit.core.seeding import seed_everything

TASKS = ("segmentation", "classification")


@dataclasses.dataclass
class FitResult:
    history: pd.DataFrame
    best_epoch: int | None
    best_score: float | None
    model: nn.Module
    seconds: float
    stopped_early: bool = False


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer '{name}' (adamw, adam or sgd)")


def make_scheduler(name: str | None, optimizer, epochs: int, mode: str):
    if name is None:
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=3)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1)
    raise ValueError(f"unknown scheduler '{name}' (cosine, plateau, step or None)")


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live; batches are moved there (a no-op on the CPU)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    task: str = "segmentation",
    num_classes: int = 2,
    ignore_index: int = 255,
    loss_fn: Callable | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Loss and scores of ``model`` over ``loader`` (``miou``, ``pixel_accuracy``... or ``accuracy``).

    Batches go to the model's device; scores accumulate there (one copy to the host at the end).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    was_training = model.training
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss(ignore_index=ignore_index)
    cm = ConfusionMatrix(num_classes, ignore_index if task == "segmentation" else None)
    total, count = 0.0, 0
    device = model_device(model)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = _outputs(model, x)
        logits = logits.float()
        if task == "segmentation" and logits.shape[-2:] != y.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        total = total + loss_fn(logits, y).detach() * len(x)  # stays on the device until the end
        count += len(x)
        cm.update(logits.argmax(1), y)
    model.train(was_training)
    scores = cm.scores()
    out = {"loss": float(total) / max(count, 1), **scores}
    if task == "classification":
        out["accuracy"] = scores["pixel_accuracy"]
    return out


def epochs_to_fraction(history: pd.DataFrame, column: str, fraction: float = 0.95, mode: str = "max") -> int | None:
    """The first epoch at which ``column`` reaches ``fraction`` of its best value (None if never finite)."""
    values = history[column].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return None
    if mode == "max":
        target = fraction * np.nanmax(values)
        hits = np.flatnonzero(values >= target)
    else:
        target = np.nanmin(values) / fraction
        hits = np.flatnonzero(values <= target)
    return int(history["epoch"].iloc[hits[0]])


def fit(
    model: nn.Module,
    train_loader,
    val_loader=None,
    *,
    task: str = "segmentation",
    num_classes: int = 2,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    scheduler: str | None = None,
    loss_fn: Callable | None = None,
    ignore_index: int = 255,
    monitor: str | None = None,
    patience: int | None = None,
    train_step: Callable[[nn.Module, object], torch.Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    seed: int | None = None,
    progress: bool = True,
    desc: str = "",
    params: Iterable[nn.Parameter] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    precision: str = "fp32",
) -> FitResult:
    """Train ``model``; validate each epoch; keep the best weights; stop early; resume when interrupted.

    ``train_step(model, batch) -> loss`` replaces the default supervised loss (teacher-student, SSL).
    ``monitor``: a validation key (``miou``, ``accuracy``, ``loss``...); default ``miou`` for
    segmentation and ``accuracy`` for classification. With ``checkpoint_dir``, the state after each
    epoch is saved (weights-only) and a later call with the same folder resumes from it.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if seed is not None:
        seed_everything(seed)
    monitor = monitor or ("miou" if task == "segmentation" else "accuracy")
    mode = "min" if monitor == "loss" else "max"
    loss_fn = loss_fn or nn.CrossEntropyLoss(ignore_index=ignore_index)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    sched = make_scheduler(scheduler, opt, epochs, mode)
    scaler = grad_scaler(model_device(model), precision)

    rows: list[dict] = []
    best_score, best_epoch, best_state, bad_epochs, start_epoch = None, None, None, 0, 1
    state_file = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if state_file is not None and state_file.exists():
        state = load_training_state(state_file)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rows = state["history"]
        best_score, best_epoch, bad_epochs = state["best_score"], state["best_epoch"], state["bad_epochs"]
        best_state = state.get("best_model")
        start_epoch = state["epoch"] + 1

    started = time.time()
    stopped_early = False
    bar = tqdm(
        range(start_epoch, epochs + 1),
        desc=desc or f"fit {type(model).__name__}",
        disable=not bar_enabled(progress),
        initial=start_epoch - 1,
        total=epochs,
        leave=False,
    )
    for epoch in bar:
        if stopped_early:
            break
        model.train()
        t0 = time.time()
        if seed is not None:
            # Each epoch's randomness depends on (seed, epoch) alone, so a resumed run repeats an uninterrupted one.
            torch.manual_seed(seed * 7919 + epoch)
            generator = getattr(train_loader, "generator", None)
            if generator is not None:
                generator.manual_seed(seed * 7919 + epoch)
        running, batches = 0.0, 0
        device = model_device(model)
        for batch in train_loader:
            with autocast(device, precision):
                if train_step is None:
                    x, y = (t.to(device, non_blocking=True) for t in batch)
                    logits = _outputs(model, x)
                    if task == "segmentation" and logits.shape[-2:] != y.shape[-2:]:
                        logits = nn.functional.interpolate(
                            logits, size=y.shape[-2:], mode="bilinear", align_corners=False
                        )
                    loss = loss_fn(logits.float(), y)
                else:
                    loss = train_step(model, batch)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            running = running + loss.detach()  # one host sync per epoch, not per step
            batches += 1
        row = {"epoch": epoch, "train_loss": float(running) / max(batches, 1), "lr": opt.param_groups[0]["lr"]}
        if val_loader is not None:
            scores = evaluate(model, val_loader, task, num_classes, ignore_index, loss_fn, precision)
            row.update({f"val_{k}": v for k, v in scores.items() if "/" not in k})
            score = scores[monitor]
            improved = best_score is None or (score > best_score if mode == "max" else score < best_score)
            if improved:
                best_score, best_epoch, bad_epochs = float(score), epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            if sched is not None:
                sched.step(score) if scheduler == "plateau" else sched.step()
            stopped_early = patience is not None and bad_epochs > patience
            bar.set_postfix({monitor: f"{score:.3f}", "loss": f"{row['train_loss']:.3f}"})
        elif sched is not None and scheduler != "plateau":
            sched.step()
        row["seconds"] = time.time() - t0
        rows.append(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            save_training_state(
                state_file,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "torch_rng": torch.get_rng_state(),
                    "history": rows,
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_model": best_state,
                },
            )
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    return FitResult(history, best_epoch, best_score, model, time.time() - started, stopped_early)


@torch.inference_mode()
def predict_segmentation(model: nn.Module, images, batch_size: int = 16, precision: str = "fp32") -> np.ndarray:
    """Class maps (N,H,W) for images (N,C,H,W), batched, on the model's device."""
    model.eval()
    images = torch.as_tensor(np.asarray(images, dtype=np.float32)) if not torch.is_tensor(images) else images
    device = model_device(model)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        with autocast(device, precision):
            logits = _outputs(model, x).float()
        if logits.shape[-2:] != x.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + tuple(images.shape[-2:]), dtype=np.int64)
