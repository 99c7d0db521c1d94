"""FARCLUSS figures: the scenes and their class frequencies, the teacher's hard and fuzzy pseudo-labels, and
FARCLUSS's gains per frequency group. Functions of ``runs`` or ``data`` only: an edit here re-renders the report
from the cached grid records (no task's cache key covers this module)."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import torch

from labkit.methods import semisup as ss
from labkit.studies.base import Runs

from .arms import ARM_LABELS, arm_config
from .data import StudyData


def _show_image(ax, image: np.ndarray) -> None:
    """A (C, H, W) image scaled by its 99th percentile."""
    img = image.transpose(1, 2, 0)
    ax.imshow(np.clip(img / max(np.percentile(img, 99), 1e-6), 0, 1))


def _show_labels(ax, mask: np.ndarray, cmap, k: int) -> None:
    """A class map, one colour per class, ignored pixels (255) blank."""
    ax.imshow(np.where(mask == 255, np.nan, mask), cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")


def scenes(data: StudyData, n: int = 6):
    """Example scenes (top) and their labels (bottom), with the class-frequency histogram."""
    k = data.num_classes
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20", k)
    n = min(n, len(data.train))
    fig = plt.figure(figsize=(2.0 * n + 4, 4.4))
    grid = fig.add_gridspec(2, n + 2)
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        _show_image(ax, data.train.images[i])
        ax.set_axis_off()
        ax = fig.add_subplot(grid[1, i])
        _show_labels(ax, data.train.masks[i], cmap, k)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[:, n:])
    ax.bar(
        range(k),
        np.maximum(data.frequencies, 1e-6) * 100,
        color=[cmap(i) for i in range(k)],
        edgecolor="k",
        linewidth=0.5,
    )
    for share, label in (
        (data.head_min, f"head ≥ {100 * data.head_min:g}%"),
        (data.tail_max, f"tail < {100 * data.tail_max:g}%"),
    ):
        ax.axhline(100 * share, color="0.3", ls="--", lw=1)
        ax.text(k - 0.5, 100 * share, label, ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_yscale("log")
    ax.set_xticks(range(k), [f"{c} ({data.groups[c]})" for c in data.class_names], rotation=60, ha="right")
    ax.set_ylabel("% of training pixels (log)")
    ax.set_title("class frequency and group (head / body / tail)")
    fig.tight_layout()
    return fig


def _message(text: str):
    """A figure that says why it has nothing to show (no arm trained)."""
    fig, ax = plt.subplots(figsize=(8, 1.2))
    ax.set_axis_off()
    ax.text(0.0, 0.5, "not evaluated: " + text, wrap=True, va="center", fontsize=9)
    return fig


def _why_not_trained(runs: Runs) -> str:
    reasons = [r for arm, r in runs.unavailable.items() if arm in ("supervised", "fixmatch", "farcluss")]
    return reasons[0] if reasons else "no arm was trained"


def pseudo_labels(cfg, data: StudyData, runs: Runs, n: int = 3):
    """Teacher views on held-out scenes: hard label with the 0.95 threshold (grey where dropped), the
    fuzzy top-K target's second-class share, and the certainty weight (before class rebalancing). The teacher is
    FARCLUSS's of the first split and seed (a figure saying why when it was not trained)."""
    teacher = runs.examples.get("teacher")
    if teacher is None:
        return _message(_why_not_trained(runs))
    k = data.num_classes
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20", k)
    # real data: one window of the side the model was run at (a multiple of what it requires); simulated scenes
    # are whole (their side was rounded to the multiple by data())
    side = data.tile or max(data.val.images.shape[-2:])
    val_images, val_masks = data.val.images[:n, :, :side, :side], data.val.masks[:n, :side, :side]
    images = torch.from_numpy(ss.as_float(np.ascontiguousarray(val_images))).to(next(teacher.parameters()).device)
    teacher.eval()
    with torch.no_grad():
        probs = teacher(images).softmax(dim=1).cpu()
    hard_cfg = arm_config(cfg, "fixmatch")
    fuzzy_cfg = replace(arm_config(cfg, "farcluss"), rebalance=False)
    _, hard_w = ss.pseudo_labels(probs, hard_cfg)
    fuzzy_t, fuzzy_w = ss.pseudo_labels(probs, fuzzy_cfg)
    hard = probs.argmax(dim=1).numpy()
    titles = [
        "image",
        "truth",
        f"hard label (grey: p<{cfg.threshold:.2f}, dropped)",
        f"fuzzy top-{cfg.top_k}: 2nd-class mass",
        "certainty weight",
    ]
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.4 * n), squeeze=False, layout="constrained")
    second = fuzzy_t.sort(dim=1, descending=True).values[:, 1].numpy()
    for i in range(n):
        _show_image(axes[i, 0], val_images[i])
        _show_labels(axes[i, 1], val_masks[i], cmap, k)
        kept = np.where(hard_w[i].numpy() > 0, hard[i], np.nan)
        axes[i, 2].set_facecolor("0.85")  # grey: dropped by the threshold
        axes[i, 2].imshow(kept, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        im3 = axes[i, 3].imshow(second[i], cmap="magma", vmin=0, vmax=0.5)
        im4 = axes[i, 4].imshow(fuzzy_w[i].numpy(), cmap="viridis", vmin=0, vmax=1)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.colorbar(im3, ax=axes[:, 3])
    fig.colorbar(im4, ax=axes[:, 4])
    kept_share = float((hard_w > 0).float().mean())
    fig.suptitle(
        f"hard threshold keeps {100 * kept_share:.0f}% of pixels; fuzzy targets keep all, weighted", fontsize=10
    )
    return fig


def gains_by_group(runs: Runs):
    """FARCLUSS minus each baseline, per frequency group and on boundary pixels (mean ± std over seeds)."""
    gains = runs.tables["gains"]
    if gains.empty:
        return _message(_why_not_trained(runs))
    labels = ["head", "body", "tail", "boundary", "all"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for j, base in enumerate(("supervised", "fixmatch")):
        sel = gains[gains.baseline == base]
        stats = sel.groupby("part")["gain"].agg(["mean", "std"]).reindex(labels) * 100
        ax.bar(
            np.arange(len(labels)) + (j - 0.5) * width,
            stats["mean"],
            width,
            yerr=stats["std"].fillna(0),
            label=f"FARCLUSS − {ARM_LABELS[base]}",
            capsize=3,
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("mIoU gain (pp), mean over splits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
