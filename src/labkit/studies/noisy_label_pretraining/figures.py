"""The study's figures: functions of the gathered runs (or the data) -> matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labkit.core.curves import PLATEAU_FRACTION
from labkit.data import label_noise, landcover
from labkit.methods import weight_analysis
from labkit.studies.base import Runs, arm_colours
from labkit.studies.noisy_label_pretraining.data import ARMS, INIT_LABELS, INITS, StudyData, steps_for_k
from labkit.studies.noisy_label_pretraining.setup import LAYER_NULL, LAYER_RAW, init_label
from labkit.studies.noisy_label_pretraining.tables import label_efficiency_table, layer_excess_table, noise_sweep_table
from labkit.studies.noisy_label_pretraining.tasks import IGNORE_INDEX, TASK_A, TASK_B

COLOURS = arm_colours(ARMS)
#: Line styles of the reference rows (the classical reference dashed, the floor dotted).
REFERENCE_STYLES = {"qda": "--", "majority": ":"}

_CLASS_COLOURS = {
    "cultivated": "#e6c84f",
    "grassland": "#9ad16b",
    "shrubland": "#5f9e4f",
    "forest": "#1f5a2c",
    "water": "#2b6fd6",
    "artificial": "#c0392b",
    "low vegetation": "#9ad16b",
    "road": "#555555",
    "building": "#c0392b",
}


def _cmap(task):
    import matplotlib
    from matplotlib.colors import ListedColormap

    names = landcover.task_legend(task)[0] if task in landcover.TASKS else list(task)
    tab = matplotlib.colormaps["tab10"]
    return ListedColormap([_CLASS_COLOURS.get(n, tab(i % 10)) for i, n in enumerate(names)]), names


def _show_labels(ax, labels, task, title=""):
    cmap, names = _cmap(task)
    shown = np.ma.masked_equal(labels, IGNORE_INDEX)
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _false_colour(image: np.ndarray, bands=landcover.NIRRGB) -> np.ndarray:
    """NIR-R-G false colour (vegetation red), stretched to the 2-98 % range per band."""
    bands = tuple(bands)
    pick = [bands.index(b) for b in ("B08", "B04", "B03") if b in bands][:3]
    rgb = np.nan_to_num(image[pick].transpose(1, 2, 0).astype(np.float64))
    lo, hi = np.percentile(rgb, 2, axis=(0, 1)), np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def plot_tiles(data: StudyData, n: int = 4):
    """False-colour image, lulc labels, structure labels and height for ``n`` simulated tiles (None on real data)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tiles = data.examples
    if tiles is None:
        return None
    n = min(n, len(tiles))
    fig, axes = plt.subplots(4, n, figsize=(2.2 * n, 8.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_false_colour(tiles.images[i], tiles.bands))
        axes[0, i].set_title(f"tile {i}: NIR-R-G", fontsize=8)
        axes[0, i].axis("off")
        _show_labels(axes[1, i], tiles.labels(TASK_A)[i], TASK_A, "task A: lulc")
        _show_labels(axes[2, i], tiles.labels(TASK_B)[i], TASK_B, "task B: structure")
        im = axes[3, i].imshow(tiles.height[i], cmap="viridis")
        axes[3, i].set_title("height (nDSM, m)", fontsize=8)
        axes[3, i].axis("off")
    fig.colorbar(im, ax=axes[3, :].tolist(), fraction=0.02)
    for task, row in ((TASK_A, 1), (TASK_B, 2)):
        cmap, names = _cmap(task)
        axes[row, -1].legend(
            handles=[Patch(color=cmap(j), label=nm) for j, nm in enumerate(names)],
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
        )
    return fig


def plot_noise_models(cfg, data: StudyData, index: int = 0, seed: int = 0, models: Sequence[str] | None = None):
    """Clean labels of one simulated tile next to each noise model's output and the composite (``noise_models`` at
    ``noise_severity``), with pixel noise rates (None on real data)."""
    import matplotlib.pyplot as plt

    tiles = data.examples
    if tiles is None:
        return None
    severity, composite = cfg.get("noise_severity"), list(cfg.get("noise_models"))
    models = list(models or label_noise.NOISE_MODELS)
    clean = tiles.labels(TASK_A)[index]
    context = {"height": tiles.height[index], "ndvi": tiles.ndvi()[index]}
    ka = len(landcover.task_legend(TASK_A)[0])
    panels = [("clean", clean)]
    for name in models:
        noisy = label_noise.make_noise(name, severity, ka)(clean, np.random.default_rng(seed), **context)
        panels.append((name, noisy))
    noisy = label_noise.make_noise(list(composite), severity, ka)(clean, np.random.default_rng(seed), **context)
    panels.append(("composite: " + "+".join(composite), noisy))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.6))
    axes[0].imshow(_false_colour(tiles.images[index], tiles.bands))
    axes[0].set_title("image (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    for ax, (name, labels) in zip(axes[1:], panels):
        rate = label_noise.noise_rate(clean, labels)
        title = name if name == "clean" else f"{name}\n{rate:.0%} px changed"
        _show_labels(ax, labels, TASK_A, title if len(title) < 40 else f"composite\n{rate:.0%} px changed")
    fig.suptitle(f"label-noise models at severity {severity:g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_real_patch(data: StudyData):
    """The eo-learn Sentinel-2 patch with its LULC label and a noisy copy (:func:`data.real_patch`); None when the
    workplace's samples are not at hand (its summary says why)."""
    import matplotlib.pyplot as plt

    patch = (data.real_patch or {}).get("patch")
    if patch is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
    axes[0].imshow(_false_colour(patch["image"], patch["bands"]))
    axes[0].set_title("Sentinel-2 scene 2 (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    _show_labels(axes[1], patch["mask"], TASK_A, "LULC reference (white = no data)")
    rate = label_noise.noise_rate(patch["mask"], patch["noisy"])
    _show_labels(axes[2], patch["noisy"], TASK_A, f"composite noise {patch['severity']:g}: {rate:.0%}")
    fig.tight_layout()
    return fig


def plot_label_efficiency(runs: Runs, task: str = TASK_A):
    """mIoU vs number of clean tiles, one line per initialisation (95 % t-interval band over seeds), QDA dashed,
    the floor (most frequent class) dotted; each initialisation has the colour it has in the curves figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    s = runs.examples["settings"]
    table = label_efficiency_table(runs, task).dropna(subset=["k"])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for init, sub in table.groupby("init", sort=False):
        sub = sub.sort_values("k")
        style = {"color": COLOURS.get(init, "grey")}
        if init in REFERENCE_STYLES:
            style["ls"] = REFERENCE_STYLES[init]
        ax.plot(sub.k, sub.miou_mean, marker="o", label=init_label(runs.examples["settings"], init), **style)
        if sub.miou_ci95_low.notna().any():
            ax.fill_between(sub.k, sub.miou_ci95_low, sub.miou_ci95_high, color=style["color"], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(s["k_values"], [str(k) for k in s["k_values"]])
    ax.set_xlabel("clean labelled tiles for fine-tuning (k)")
    ax.set_ylabel("test mIoU")
    title = (
        f"label efficiency ({len(s['seeds'])} seed(s), band = 95 % CI, "
        f"steps {s['finetune_steps']} at k={s['k_values']})"
    )
    for init, _reason in runs.unavailable.items():
        if init in INITS:
            title += (
                f"\n{init_label(runs.examples['settings'], init)}: not evaluated (weights unavailable; see the table)"
            )
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(runs: Runs):
    """Validation mIoU along fine-tuning (mean over seeds) per initialisation and k; the last fifth shaded."""
    import matplotlib.pyplot as plt

    curves = runs.tables["val_curves"]
    ks = sorted(curves[curves.task == TASK_A].k.unique())
    panels = [(TASK_A, k) for k in ks] + [(TASK_B, k) for k in sorted(curves[curves.task == TASK_B].k.unique())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3), squeeze=False, sharey=True)
    s = runs.examples["settings"]
    main = s["main_noisy_labels"]
    for ax, (task, k) in zip(axes[0], panels):
        sub = curves[
            (curves.task == task)
            & (curves.k == k)
            & ((curves.pretraining == main) | ~curves.init.str.startswith("noisy"))
        ]
        for init, g in sub.groupby("init", sort=False):
            m = g.groupby("step").val_miou.mean()
            colour = COLOURS.get(init, "grey")  # one colour per init in every panel
            ax.plot(m.index, m.values, marker=".", color=colour, label=INIT_LABELS.get(init, init))
        steps = steps_for_k(s["finetune_steps"], s["k_values"], k)
        ax.axvspan(steps * (1 - PLATEAU_FRACTION), steps, color="grey", alpha=0.12, lw=0)
        ax.set_title(f"task {'A' if task == TASK_A else 'B'} ({task}), k={k}", fontsize=8)
        ax.set_xlabel("fine-tuning step")
    axes[0, 0].set_ylabel("validation mIoU")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(
        f"shaded: the last fifth; plateau = it improves the best score by < {s['plateau_max_gain']:g}",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def plot_noise_sweep(runs: Runs):
    """Fine-tuned mIoU and the paired gain over random init vs pretraining noise severity (noisy levels), with
    clean pretraining as a horizontal reference line."""
    import matplotlib.pyplot as plt

    s = runs.examples["settings"]
    sweep = noise_sweep_table(runs)
    noisy, ref = sweep[~sweep.reference], sweep[sweep.reference].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(
        noisy.severity,
        noisy.finetuned_miou,
        marker="s",
        label=f"noisy-pretrained, fine-tuned on {s['sweep_k']} clean tiles",
    )
    axes[0].plot(noisy.severity, noisy.pretrained_miou_no_finetune, marker="o", label="pretrained, no fine-tuning")
    axes[0].axhline(ref.finetuned_miou, color="C2", ls="--", lw=1, label="clean-pretrained, fine-tuned (reference)")
    axes[0].set_xlabel("pretraining noise severity")
    axes[0].set_ylabel("test mIoU (clean labels)")
    axes[0].legend(fontsize=7)
    ax2 = axes[0].twiny()
    ax2.set_xlim(axes[0].get_xlim())
    ax2.set_xticks(noisy.severity)
    ax2.set_xticklabels([f"{r:.0%}" for r in noisy.pixel_noise_rate], fontsize=7)
    ax2.set_xlabel("pixels with a wrong label", fontsize=8)
    axes[1].errorbar(
        noisy.severity,
        noisy.gain_over_random,
        yerr=[
            noisy.gain_over_random - noisy.gain_ci95_low.fillna(noisy.gain_over_random),
            noisy.gain_ci95_high.fillna(noisy.gain_over_random) - noisy.gain_over_random,
        ],
        marker="o",
        capsize=3,
        label="noisy-pretrained",
    )
    axes[1].axhline(ref.gain_over_random, color="C2", ls="--", lw=1, label="clean-pretrained (reference)")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_xlabel("pretraining noise severity")
    axes[1].set_ylabel("mIoU gain over random init")
    axes[1].set_title("benefit vs noise (95 % CI over seeds)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_layerwise(runs: Runs):
    """Per-layer divergence along depth: raw (clean order 1 vs noisy order 0) with the matched null (clean order 1
    vs clean order 0), and the null-corrected excess; mean over seeds with the min-max band."""
    import matplotlib.pyplot as plt

    per_layer = layer_excess_table(runs)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True)
    for ax, cols, title in (
        (axes[0], ("raw", "null"), "raw and its matched null (both pairs differ in data order; raw also in labels)"),
        (axes[1], ("excess",), "null-corrected: raw - null"),
    ):
        for i, col in enumerate(cols):
            stats = per_layer.groupby(["depth", "part"])[col].agg(["mean", "min", "max"]).reset_index()
            ax.plot(
                stats.depth,
                stats["mean"],
                color=f"C{i}",
                lw=1,
                label={
                    "raw": LAYER_RAW,
                    "null": LAYER_NULL,
                    "excess": "excess over the null",
                }[col],
            )
            ax.fill_between(stats.depth, stats["min"], stats["max"], color=f"C{i}", alpha=0.2, lw=0)
            for part, marker in (("encoder", "o"), ("decoder", "s")):
                p = stats[stats.part == part]
                ax.scatter(p.depth, p["mean"], color=f"C{i}", marker=marker, s=12)
        boundary = per_layer.loc[per_layer.part != "encoder", "depth"].min()
        if np.isfinite(boundary):
            ax.axvline(boundary - 0.5, color="grey", ls="--", lw=0.8)
        if col == "excess":
            ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("KL (nats)")
        ax.legend(fontsize=7)
    axes[1].set_xlabel("layer (forward order; circles encoder, squares decoder and head)")
    fig.suptitle(weight_analysis.DIVERGENCE_ESTIMATOR_SHORT, fontsize=7)
    fig.tight_layout()
    return fig
