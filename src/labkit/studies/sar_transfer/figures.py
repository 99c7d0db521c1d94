"""SAR sea-ice study, its figures: each a function of the run (``runs``) or of the first seed's scenes (``data``)."""

from __future__ import annotations

import numpy as np

from labkit.core.metrics import aggregate_over_seeds
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES
from labkit.reports.false_colour import class_map_rgb, false_colour
from labkit.studies.base import Runs

from .arms import ARM_COLOURS
from .data import INITS, REFERENCE_ARMS, SEASONS, SarData
from .frames import tile_counts

LAND_COLOUR = "#a6894f"  # tan: land (masked, never a label)
NO_DATA_COLOUR = "#6a3d9a"  # purple: outside the swath (NaN backscatter)


def _class_map(labels: np.ndarray, land: np.ndarray, nodata: np.ndarray, class_names=CLASS_NAMES) -> np.ndarray:
    """(H, W, 3) colours of a chart or a prediction: a colour per class (``sar.class_colours``), land tan, no data
    purple; any other ignored pixel (e.g. a chart's unlabelled area) mid grey."""
    return class_map_rgb(labels, sar.class_colours(class_names), [(land, LAND_COLOUR), (nodata, NO_DATA_COLOUR)])


def _scene_masks(scene: sar.SarScene) -> tuple[np.ndarray, np.ndarray]:
    nodata = ~np.isfinite(scene.sar).all(axis=0)
    return scene.land & ~nodata, nodata


def _legend_handles(class_names=CLASS_NAMES):
    from matplotlib.patches import Patch

    colours = sar.class_colours(class_names)
    return [Patch(facecolor=c, edgecolor="#555555", label=n) for c, n in zip(colours, class_names)] + [
        Patch(facecolor=LAND_COLOUR, label="land (masked)"),
        Patch(facecolor=NO_DATA_COLOUR, label="no data (outside swath)"),
    ]


def scenes_figure(data: SarData):
    """Both polarisations (named as the data names them, e.g. HH/HV or VV/VH), false colour and chart of each test
    scene (rows) of the first seed, with its season and weather; no data purple in every panel, land tan in the
    chart (land is imaged in both polarisations)."""
    import matplotlib.pyplot as plt

    grey = plt.get_cmap("gray").with_extremes(bad=NO_DATA_COLOUR)
    scenes = list(data.test_scenes)
    co, cross = data.band_names
    fig, axes = plt.subplots(len(scenes), 4, figsize=(11, 2.8 * len(scenes)), squeeze=False)
    for row, scene in zip(axes, scenes):
        land, nodata = _scene_masks(scene)
        row[0].imshow(np.ma.masked_invalid(scene.sar[0]), cmap=grey, vmin=-30, vmax=-5)
        row[1].imshow(np.ma.masked_invalid(scene.sar[1]), cmap=grey, vmin=-32, vmax=-15)
        row[2].imshow(false_colour(scene.sar, NO_DATA_COLOUR))  # R=co-pol G=cross-pol B=co-pol - cross-pol
        row[3].imshow(_class_map(scene.labels, land, nodata, data.class_names), interpolation="nearest")
        weather = ""
        if "wind_speed" in scene.meta:
            weather = f", wind {scene.meta['wind_speed']:.1f} m/s, {scene.meta['air_temperature']:+.1f} C"
        titles = [
            f"{scene.name} ({scene.season}{weather}): {co}",
            f"{cross} (dB, -32..-15)",
            f"R={co} G={cross} B={co}-{cross}",
            "labels" if data.class_names != CLASS_NAMES else "ice chart",
        ]
        for ax, t in zip(row, titles):
            ax.set_title(t, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(
        handles=_legend_handles(data.class_names),
        loc="lower center",
        ncol=data.num_classes + 2,
        frameon=False,
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def backscatter_histograms_figure(data: SarData):
    """Class histograms of both polarisations in dB (named as the data names them) over all scenes of the first
    seed, freeze vs melt season; every class of the data's legend."""
    import matplotlib.pyplot as plt

    table = sar.class_backscatter(data.scenes)
    seasons = [s for s in ("freeze", "melt") if s in set(table.season)]
    fig, axes = plt.subplots(len(seasons), 2, figsize=(11, 3.2 * len(seasons)), squeeze=False)
    bins = np.linspace(-35, 0, 71)
    for row, season in zip(axes, seasons):
        for ax, band in zip(row, data.band_names):
            sel = table[(table.season == season) & (table.band == band)]
            for colour, name in zip(sar.class_colours(data.class_names), data.class_names):
                v = sel.loc[sel["class"] == name, "db"].to_numpy()
                if v.size:
                    ax.hist(
                        v,
                        bins=bins,
                        density=True,
                        histtype="step",
                        lw=1.6,
                        color="#777777" if colour == "#f2f2f2" else colour,
                        label=name,
                    )
            ax.set_title(f"{season} season, {band}", fontsize=10)
            ax.set_xlabel("sigma0 (dB)")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves_figure(runs: Runs):
    """Validation mIoU against optimiser steps at the fewest tiles: mean over seeds with a 95 % t-band per
    arm, and the common threshold (mean over seeds) of each pretrained arm's comparison as a dashed line."""
    import matplotlib.pyplot as plt

    hist, n_few = runs.tables["history"], tile_counts(runs.tables)[0]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    few = hist[hist.n_tiles == n_few]
    for arm, g in few.groupby("arm", sort=False):
        agg = aggregate_over_seeds(g, "val_miou", "step").sort_values("step")
        colour = ARM_COLOURS.get(arm)
        ax.plot(agg["step"], agg["val_miou_mean"], color=colour, label=f"{arm} (n={int(agg['n'].max())})")
        ax.fill_between(agg["step"], agg["val_miou_ci95_low"], agg["val_miou_ci95_high"], color=colour, alpha=0.2)
    conv = runs.tables["convergence"]
    for pair, g in conv.groupby("pair"):
        ax.axhline(
            g["threshold"].mean(),
            color=ARM_COLOURS.get(pair),
            ls="--",
            lw=1,
            label=f"common threshold vs {pair} (mean)",
        )
    ax.set_xlabel(f"optimiser steps ({n_few} training tiles, validated every epoch)")
    ax.set_ylabel("validation mIoU")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def scene_scores_figure(runs: Runs):
    """Test-scene mIoU at the fewest tiles, one panel per season: each test scene's mean over seeds per arm
    (points) and the season mean (bar), so a season effect is not one scene's luck."""
    import matplotlib.pyplot as plt

    scenes = runs.tables["scenes"]
    few = scenes[scenes.n_tiles == tile_counts(runs.tables)[0]]
    arms = [a for a in INITS + REFERENCE_ARMS if a in set(few.arm)]
    fig, axes = plt.subplots(1, len(SEASONS), figsize=(10, 3.8), sharey=True, squeeze=False)
    for ax, season in zip(axes[0], SEASONS):
        s = few[few.season == season]
        per_scene = s.groupby(["arm", "scene"], as_index=False)["miou"].mean()
        for i, arm in enumerate(arms):
            v = per_scene[per_scene.arm == arm]["miou"].to_numpy()
            ax.bar(i, v.mean() if len(v) else np.nan, color=ARM_COLOURS.get(arm), alpha=0.5)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, max(len(v), 1))[: len(v)], v, color="k", s=12)
        ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
        ax.set_title(f"{season} test scenes (n={s.scene.nunique()})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("scene mIoU (mean over seeds)")
    fig.tight_layout()
    return fig


def predictions_figure(runs: Runs, data: SarData):
    """Chart and predicted maps (first seed, fewest tiles) of one freeze and one melt test scene per arm."""
    import matplotlib.pyplot as plt

    maps, scenes = runs.examples["maps"], runs.tables["scenes"]
    scenes = scenes[(scenes.seed == runs.examples["seed"]) & (scenes.n_tiles == tile_counts(runs.tables)[0])]
    arms = [a for a in INITS + ("gbm",) if a in maps]
    chosen = [next(s for s in data.test_scenes if s.season == season) for season in SEASONS]
    fig, axes = plt.subplots(
        len(chosen), 1 + len(arms), figsize=(3.0 * (1 + len(arms)), 3.3 * len(chosen) + 0.6), squeeze=False
    )
    for row, scene in zip(axes, chosen):
        land, nodata = _scene_masks(scene)
        panels = [("chart", scene.labels, None)]
        for arm in arms:
            score = scenes.loc[(scenes.arm == arm) & (scenes.scene == scene.name), "miou"].iloc[0]
            panels.append((f"{arm} (mIoU {score:.2f})", maps[arm][scene.name].astype(np.int64), score))
        for ax, (title, img, _) in zip(row, panels):
            ax.imshow(_class_map(img, land, nodata, data.class_names), interpolation="nearest")
            ax.set_title(f"{scene.name}: {title}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=_legend_handles(data.class_names), loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def confusion_figure(runs: Runs):
    """Row-normalised confusion matrices at the fewest tiles, summed over seeds and each season's scenes."""
    import matplotlib.pyplot as plt

    counts = runs.tables["confusion"]
    names = tuple(runs.context.get("class_names", CLASS_NAMES))
    k = len(names)
    arms = [a for a in INITS + ("gbm",) if a in set(counts.arm)]
    few = counts[counts.n_tiles == tile_counts(runs.tables)[0]]
    fig, axes = plt.subplots(len(SEASONS), len(arms), figsize=(3.4 * len(arms), 3.3 * len(SEASONS)), squeeze=False)
    short = ["water", "young", "FYI", "MYI"] if names == CLASS_NAMES else [n[:8] for n in names]
    for row, season in zip(axes, SEASONS):
        for ax, arm in zip(row, arms):
            m = np.zeros((k, k))
            sel = few[(few.arm == arm) & (few.season == season)]
            np.add.at(m, (sel.chart.to_numpy(), sel.predicted.to_numpy()), sel.pixels.to_numpy(float))
            with np.errstate(invalid="ignore"):
                norm = m / m.sum(axis=1, keepdims=True)
            ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
            for i in range(k):
                if not np.isfinite(norm[i]).any():
                    ax.text(k / 2 - 0.5, i, "not in chart", ha="center", va="center", fontsize=7, color="#777777")
                for j in range(k):
                    if np.isfinite(norm[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{norm[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black",
                        )
            ax.set_xticks(range(k), short, fontsize=7)
            ax.set_yticks(range(k), short, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("chart", fontsize=8)
            ax.set_title(f"{season}: {arm}", fontsize=9)
    fig.tight_layout()
    return fig
