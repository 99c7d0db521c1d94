"""Study 3's figures: of its data (``data``) and of its runs (``runs``: ``labkit.studies.base.Runs``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from labkit.core.metrics import aggregate_over_seeds
from labkit.data.surfaces import DEFECT_TYPES
from labkit.studies.base import Runs

from .data import COLOURS, INIT_LABELS, PRETRAINED


def samples_figure(data: dict, per_type: int = 3):
    """Test images with their masks outlined, one row per defect type (and good)."""
    split = data["test"]
    types = split["defect_types"]
    kinds = ["good"] + [d for d in list(DEFECT_TYPES) + sorted(set(types)) if (types == d).any() and d != "good"]
    kinds = list(dict.fromkeys(kinds))
    fig, axes = plt.subplots(len(kinds), per_type, figsize=(2 * per_type, 2 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        idx = np.flatnonzero(types == kind)[:per_type]
        for c in range(per_type):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            img = split["images"][idx[c]]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            if split["masks"][idx[c]].any():
                ax.contour(split["masks"][idx[c]], levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(kind, fontsize=8)
    fig.suptitle("Test images: defect masks outlined in red")
    fig.tight_layout()
    return fig


def pretraining_figure(runs: Runs):
    """Each pretraining's loss per epoch (at the optimiser step it ends on) over the best learner-free predictor's
    (star: on the fixed batches after the last step)."""
    pretrained = runs.examples["pretrained"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, p in pretrained.items():
        r = p["record"]
        ax = axes[0] if PRETRAINED[name][0] == "mae" else axes[1]
        loss = np.asarray(r["loss"]) / r["learner_free_loss"]
        per_epoch = r.get("steps", len(loss)) / max(1, len(loss))
        step = np.arange(1, len(loss) + 1) * per_epoch
        ax.plot(step, loss, marker="o", ms=3, label=INIT_LABELS[name], color=COLOURS[name])
        ax.plot(step[-1:], [r["loss_ratio"]], marker="*", ms=10, color=COLOURS[name], ls="none")
    axes[0].set(title="MAE: hidden-patch loss / learner-free predictor's", xlabel="optimiser step", ylabel="loss ratio")
    axes[1].set(title="SimCLR: NT-Xent / untrained network's", xlabel="optimiser step", ylabel="loss ratio")
    for ax in axes:
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _label_count_ticks(ax, counts) -> None:
    """Plain integer ticks at exactly the label counts on a log x axis, and no minor tick labels (a log axis
    otherwise labels its minor ticks too, "6x10^1" on top of "64")."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    ticks = sorted(int(c) for c in counts)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([str(t) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def label_efficiency_figure(runs: Runs):
    """Defect AP and defect F1 vs labelled images per init (full fine-tuning), 95 % bands over seeds."""
    frame = runs.tables["runs"]
    df = frame[frame["protocol"].isin(["full", "-"])]
    summary = aggregate_over_seeds(df, ["defect_ap", "defect_f1"], ["init", "n_labels"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("defect_ap", "defect_f1")):
        for name, g in summary.groupby("init", sort=False):
            g = g.sort_values("n_labels")
            style = dict(marker="o", label=INIT_LABELS.get(name, name), color=COLOURS.get(name))
            if name == "all_good":
                style.update(ls="--", marker=None)
            ax.plot(g["n_labels"], g[f"{metric}_mean"], **style)
            low, high = g[f"{metric}_ci95_low"], g[f"{metric}_ci95_high"]
            if low.notna().all():
                ax.fill_between(g["n_labels"], low, high, alpha=0.15, color=COLOURS.get(name))
        ax.set(xscale="log", xlabel="labelled images", ylabel=metric, title=metric.replace("_", " "))
        _label_count_ticks(ax, df["n_labels"].unique())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Label efficiency after full fine-tuning (bands: 95% CI over seeds; dashed: 'all good' floor)")
    fig.tight_layout()
    return fig
