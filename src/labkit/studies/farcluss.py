"""FARCLUSS semi-supervised segmentation study (notebook 05): data, runs, tables, figures, claims.

Protocol (every method, fraction and seed): a DeepLabV3+ is first trained on the labelled split
alone for ``warmup_iterations`` (shared by all methods of that split and seed), then each method
continues for ``iterations`` steps from that same state: supervised-only keeps training on labels,
the hard-threshold baseline and FARCLUSS add the unlabeled images through an EMA teacher. The EMA
teacher of each run is evaluated on held-out scenes. The warm start is a CPU concession (a teacher
that starts from random weights needs thousands of steps); at ``paper`` it is a short phase.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from labkit.core.errors import DataError, ParameterError
from labkit.data import scenes as sc
from labkit.methods import semisup as ss

MAIN_METHODS = ("supervised", "fixmatch", "farcluss")
METHOD_LABELS = {"supervised": "supervised only", "fixmatch": "hard threshold 0.95 (FixMatch-style)",
                 "farcluss": "FARCLUSS"}
GROUPS = ("head", "body", "tail")


# ----------------------------------------------------------------------------- data


@dataclass
class StudyData:
    train: sc.SceneSet
    val: sc.SceneSet
    class_names: tuple[str, ...]
    frequencies: np.ndarray
    groups: dict[str, str]
    val_band: np.ndarray
    source: str
    tile: int | None = None
    head_min: float = 0.15
    tail_max: float = 0.02

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_data(cfg) -> StudyData:
    """Simulated scenes (default), or a user's VOC / Cityscapes copy (``data_source``, ``data_root``)."""
    if cfg.data_source == "simulator":
        scene_cfg = sc.SceneConfig(size=cfg.image_size)
        train = sc.simulate_scenes(cfg.n_train_images, seed=10_000, config=scene_cfg, prefix="train")
        val = sc.simulate_scenes(cfg.n_val_images, seed=20_000, config=scene_cfg, prefix="val")
        names, tile = sc.SCENE_CLASSES, None
    else:
        from labkit.data import segmentation_folders as sf

        if not cfg.data_root:
            raise ParameterError(f"data_source={cfg.data_source!r} needs data_root (the dataset's local folder)")
        loader = sf.VOCSegmentationFolder if cfg.data_source == "voc" else sf.CityscapesFolder
        train_ds = loader(cfg.data_root, split="train", crop=cfg.image_size)
        val_ds = loader(cfg.data_root, split="val", crop=2 * cfg.image_size)  # evaluated by sliding window
        x, y, ids = train_ds.to_arrays(limit=cfg.n_train_images)
        train = sc.SceneSet(x, y, ids, tuple(train_ds.class_names))
        xv, yv, idv = val_ds.to_arrays(limit=cfg.n_val_images)
        val = sc.SceneSet(xv, yv, idv, tuple(val_ds.class_names))
        names, tile = tuple(train_ds.class_names), cfg.image_size
    freqs = sc.class_frequencies(train.masks, len(names))
    groups = sc.frequency_groups(freqs, names, head_min=cfg.head_min_fraction, tail_max=cfg.tail_max_fraction)
    band = sc.boundary_band(val.masks, width=1)
    return StudyData(train, val, tuple(names), freqs, groups, band, cfg.data_source, tile,
                     cfg.head_min_fraction, cfg.tail_max_fraction)


def class_frequency_table(data: StudyData) -> pd.DataFrame:
    return pd.DataFrame({"class": data.class_names, "pixel_fraction": data.frequencies,
                         "group": [data.groups[n] for n in data.class_names]})


def scenes_figure(data: StudyData, n: int = 6):
    """Example scenes (top) and their labels (bottom), with the class-frequency histogram."""
    k = data.num_classes
    cmap = plt.get_cmap("tab10", k)
    n = min(n, len(data.train))
    fig = plt.figure(figsize=(2.0 * n + 4, 4.4))
    grid = fig.add_gridspec(2, n + 2)
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        img = data.train.images[i].transpose(1, 2, 0)
        ax.imshow(np.clip(img / max(np.percentile(img, 99), 1e-6), 0, 1))
        ax.set_axis_off()
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(np.where(data.train.masks[i] == 255, np.nan, data.train.masks[i]), cmap=cmap, vmin=-0.5,
                  vmax=k - 0.5, interpolation="nearest")
        ax.set_axis_off()
    ax = fig.add_subplot(grid[:, n:])
    ax.bar(range(k), data.frequencies * 100, color=[cmap(i) for i in range(k)], edgecolor="k", linewidth=0.5)
    for share, label in ((data.head_min, f"head ≥ {100 * data.head_min:g}%"),
                         (data.tail_max, f"tail < {100 * data.tail_max:g}%")):
        ax.axhline(100 * share, color="0.3", ls="--", lw=1)
        ax.text(k - 0.5, 100 * share, label, ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_yscale("log")
    ax.set_xticks(range(k), [f"{c} ({data.groups[c]})" for c in data.class_names], rotation=60, ha="right")
    ax.set_ylabel("% of training pixels (log)")
    ax.set_title("class frequency and group (head / body / tail)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- runs


def _semisup_config(cfg, method: str) -> ss.SemiSupConfig:
    return ss.method_config(method, top_k=cfg.top_k, threshold=cfg.threshold, certainty=cfg.certainty,
                            ema_momentum=cfg.ema_momentum, unsup_weight=cfg.unsup_weight,
                            contrast_weight=cfg.contrast_weight, temperature=cfg.temperature,
                            rebalance_power=cfg.rebalance_power, contrast_pixels=cfg.contrast_pixels,
                            crop_min_scale=cfg.crop_min_scale)


def _behaviour_key(config: ss.SemiSupConfig) -> tuple:
    """Configs that train identically share a key (the baseline is FARCLUSS with every part off)."""
    if config.method == "supervised":
        return ("supervised",)
    parts = tuple(getattr(config, p) for p in ss.PARTS) + (config.pairwise,)
    return ("teacher-student",) + parts


def run_plan(cfg) -> list[tuple[str, str, float, ss.SemiSupConfig]]:
    """(table, name, fraction, config) of every row the study reports."""
    plan = []
    for fraction in cfg.fractions:
        for method in MAIN_METHODS:
            plan.append(("main", method, fraction, _semisup_config(cfg, method)))
    if cfg.ablation != "none":
        for name, config in ss.ablation_configs(_semisup_config(cfg, "farcluss")).items():
            if cfg.ablation == "remove_only" and name.startswith("+ "):
                continue
            plan.append(("ablation", name, cfg.ablation_fraction, config))
    return plan


def _build_model(cfg, data: StudyData) -> ss.SegmenterWithEmbedding:
    mean = data.train.images.mean(axis=(0, 2, 3))
    std = data.train.images.std(axis=(0, 2, 3)) + 1e-6
    kwargs = {"encoder_depth": cfg.encoder_depth}
    if cfg.arch == "deeplabv3plus":
        kwargs["decoder_channels"] = cfg.decoder_channels
    return ss.build_model(data.num_classes, encoder=cfg.encoder, arch=cfg.arch, embed_dim=cfg.embed_dim,
                          mean=tuple(mean), std=tuple(std), **kwargs)


@dataclass
class ExperimentResults:
    runs: pd.DataFrame  # one row per (table, name, fraction, seed)
    splits: pd.DataFrame  # one row per (fraction, seed)
    example_model: Any = None  # warm-started FARCLUSS teacher of the first split, for the figures
    seconds: float = 0.0


def run_experiments(cfg, data: StudyData, split_dir: str | Path | None = None,
                    progress: bool = True) -> ExperimentResults:
    """Train and evaluate every planned row over every seed; identical configs run once."""
    from tqdm.auto import tqdm

    from labkit.core.paths import cache_dir
    from labkit.core.seeding import seed_everything

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    split_dir = Path(split_dir) if split_dir else cache_dir("farcluss") / "splits"
    plan = run_plan(cfg)
    fractions = sorted({p[2] for p in plan})
    ids = data.train.ids
    id_index = {i: n for n, i in enumerate(ids)}
    rows, split_rows, example = [], [], None
    start = time.perf_counter()
    jobs = [(f, s) for f in fractions for s in cfg.seeds]
    bar = tqdm(jobs, desc="splits x seeds", disable=not progress)
    for fraction, seed in bar:
        labeled, unlabeled = sc.sample_labeled_split(ids, fraction, seed)
        path = sc.write_split_lists(split_dir / sc.fraction_name(fraction) / f"seed{seed}", labeled, unlabeled)
        li = np.array([id_index[i] for i in labeled])
        ui = np.array([id_index[i] for i in unlabeled])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", sc.SplitCoverageWarning)
            missing = sc.missing_classes(data.train.masks[li], data.num_classes, data.class_names,
                                         context=f"split {sc.fraction_name(fraction)} seed {seed}")
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        split_rows.append({"fraction": fraction, "split": sc.fraction_name(fraction), "seed": seed,
                           "labeled": len(labeled), "unlabeled": len(unlabeled),
                           "classes_without_labels": ", ".join(missing),
                           "lists": f"{path.parent.name}/{path.name}/labeled.txt"})
        xl, yl = data.train.images[li], data.train.masks[li]
        xu = data.train.images[ui]
        seed_everything(seed, deterministic=False)
        warm = _build_model(cfg, data).to(device)
        ss.train_semisupervised(warm, xl, yl, None, _semisup_config(cfg, "supervised"),
                                num_classes=data.num_classes, iterations=cfg.warmup_iterations,
                                batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, progress=False)
        done: dict[tuple, dict] = {}
        for table, name, frac, config in plan:
            if frac != fraction:
                continue
            key = _behaviour_key(config)
            if key not in done:
                bar.set_postfix_str(f"{sc.fraction_name(fraction)} seed {seed}: {name}")
                model = copy.deepcopy(warm)
                t0 = time.perf_counter()
                teacher, history = ss.train_semisupervised(
                    model, xl, yl, xu, config, num_classes=data.num_classes, iterations=cfg.iterations,
                    batch_size=cfg.batch_size, lr=cfg.lr, seed=seed + 1, progress=False)
                seconds = time.perf_counter() - t0
                pred = ss.predict(teacher, data.val.images, tile=data.tile)
                scores = ss.score_predictions(pred, data.val.masks, data.class_names, band=data.val_band)
                done[key] = {**scores, "seconds": seconds}
                if example is None and config.method == "farcluss" and all(getattr(config, p) for p in ss.PARTS):
                    example = teacher
            rows.append({"table": table, "name": name, "fraction": fraction, "split": sc.fraction_name(fraction),
                         "seed": seed, **done[key]})
    runs = pd.DataFrame(rows)
    runs = add_group_scores(runs, data)
    return ExperimentResults(runs, pd.DataFrame(split_rows), example, time.perf_counter() - start)


def add_group_scores(runs: pd.DataFrame, data: StudyData) -> pd.DataFrame:
    """Columns ``miou_head``, ``miou_body``, ``miou_tail``: mean IoU over the classes of each frequency group."""
    runs = runs.copy()
    for group in GROUPS:
        cols = [f"iou/{c}" for c in data.class_names if data.groups[c] == group]
        runs[f"miou_{group}"] = runs[cols].mean(axis=1, skipna=True) if cols else np.nan
    return runs


# ----------------------------------------------------------------------------- tables


def _mean_std(frame: pd.DataFrame, value: str, index: str, columns: str) -> pd.DataFrame:
    stats = frame.groupby([index, columns])[value].agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [f"{100 * m:.1f} ± {100 * (s if s == s else 0):.1f}" for m, s in zip(stats["mean"], stats["std"])]
    return stats.pivot(index=index, columns=columns, values="cell")


def main_table(results: ExperimentResults, value: str = "miou") -> pd.DataFrame:
    """Methods x labelled fractions: mean ± std over seeds (in %)."""
    main = results.runs[results.runs.table == "main"]
    table = _mean_std(main, value, "name", "split")
    order = [m for m in MAIN_METHODS if m in table.index]
    splits = [sc.fraction_name(f) for f in sorted(main.fraction.unique())]
    table = table.loc[order, splits]
    table.index = [METHOD_LABELS[m] for m in table.index]
    table.columns.name = None
    return table.rename_axis(f"method, {value} (%) by split").reset_index()


def group_table(results: ExperimentResults, data: StudyData) -> pd.DataFrame:
    """Per method: mIoU of head/body/tail classes and of boundary pixels, averaged over fractions and seeds."""
    main = results.runs[results.runs.table == "main"]
    cols = [f"miou_{g}" for g in GROUPS] + ["boundary_miou", "miou"]
    table = main.groupby("name")[cols].mean().loc[[m for m in MAIN_METHODS if m in set(main.name)]] * 100
    table.index = [METHOD_LABELS[m] for m in table.index]
    members = {g: ", ".join(c for c in data.class_names if data.groups[c] == g) for g in GROUPS}
    table.columns = [f"{g} ({members[g]})" if g in GROUPS else c for g, c in
                     zip([*GROUPS, "boundary", "all"], ["", "", "", "boundary pixels", "all pixels"])]
    return table.round(1).rename_axis("method, mIoU (%)").reset_index()


def per_class_table(results: ExperimentResults, data: StudyData) -> pd.DataFrame:
    main = results.runs[results.runs.table == "main"]
    cols = [f"iou/{c}" for c in data.class_names]
    table = main.groupby("name")[cols].mean().loc[[m for m in MAIN_METHODS if m in set(main.name)]].T * 100
    table.columns = [METHOD_LABELS[m] for m in table.columns]
    table.insert(0, "group", [data.groups[c] for c in data.class_names])
    table.index = list(data.class_names)
    return table.round(1).rename_axis("class, IoU (%)").reset_index()


def ablation_table(results: ExperimentResults) -> pd.DataFrame:
    abl = results.runs[results.runs.table == "ablation"]
    if abl.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(abl.name))
    stats = abl.groupby("name")[["miou", "miou_tail", "boundary_miou"]].agg(["mean", "std"]).loc[order] * 100
    full = abl[abl.name == "FARCLUSS (all parts)"].set_index("seed")["miou"]
    deltas = {n: (100 * (abl[abl.name == n].set_index("seed")["miou"] - full)).mean() for n in order}
    table = pd.DataFrame({
        "mIoU (%)": [f"{stats.loc[n, ('miou', 'mean')]:.1f} ± {np.nan_to_num(stats.loc[n, ('miou', 'std')]):.1f}"
                     for n in order],
        "vs all parts (pp)": [round(deltas[n], 2) for n in order],
        "tail mIoU (%)": [round(stats.loc[n, ("miou_tail", "mean")], 1) for n in order],
        "boundary mIoU (%)": [round(stats.loc[n, ("boundary_miou", "mean")], 1) for n in order],
    }, index=order)
    table.index.name = f"ablation (split {abl.split.iloc[0]}, {abl.seed.nunique()} seeds)"
    return table.reset_index()


# ----------------------------------------------------------------------------- pseudo-label views


def pseudo_label_figure(cfg, data: StudyData, teacher, n: int = 3):
    """Teacher views on held-out scenes: hard label with the 0.95 threshold (grey where dropped), the
    fuzzy top-K target's second-class share, and the certainty weight (before class rebalancing)."""
    k = data.num_classes
    cmap = plt.get_cmap("tab10", k)
    images = torch.from_numpy(data.val.images[:n]).to(next(teacher.parameters()).device)
    teacher.eval()
    with torch.no_grad():
        probs = teacher(images).softmax(dim=1).cpu()
    hard_cfg = _semisup_config(cfg, "fixmatch")
    fuzzy_cfg = replace(_semisup_config(cfg, "farcluss"), rebalance=False)
    _, hard_w = ss.pseudo_labels(probs, hard_cfg)
    fuzzy_t, fuzzy_w = ss.pseudo_labels(probs, fuzzy_cfg)
    hard = probs.argmax(dim=1).numpy()
    titles = ["image", "truth", "hard label (grey: p<%.2f, dropped)" % cfg.threshold,
              f"fuzzy top-{cfg.top_k}: 2nd-class mass", "certainty weight"]
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.4 * n), squeeze=False, layout="constrained")
    second = fuzzy_t.sort(dim=1, descending=True).values[:, 1].numpy()
    for i in range(n):
        img = data.val.images[i].transpose(1, 2, 0)
        axes[i, 0].imshow(np.clip(img / max(np.percentile(img, 99), 1e-6), 0, 1))
        axes[i, 1].imshow(data.val.masks[i], cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
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
    fig.suptitle(f"hard threshold keeps {100 * kept_share:.0f}% of pixels; fuzzy targets keep all, weighted",
                 fontsize=10)
    return fig


def gains_figure(results: ExperimentResults):
    """FARCLUSS minus each baseline, per frequency group and on boundary pixels (mean ± std over seeds)."""
    main = results.runs[results.runs.table == "main"].set_index(["split", "seed", "name"])
    cols = [f"miou_{g}" for g in GROUPS] + ["boundary_miou", "miou"]
    labels = ["head", "body", "tail", "boundary", "all"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for j, base in enumerate(("supervised", "fixmatch")):
        diff = (main.xs("farcluss", level="name")[cols] - main.xs(base, level="name")[cols]) * 100
        ax.bar(np.arange(len(cols)) + (j - 0.5) * width, diff.mean(), width, yerr=diff.std().fillna(0),
               label=f"FARCLUSS − {METHOD_LABELS[base]}", capsize=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(cols)), labels)
    ax.set_ylabel("mIoU gain (pp)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- cost per iteration


COST_REFERENCE = "supervised"
COST_WITHOUT_CONTRAST = "FARCLUSS without contrast"
COST_PROTOTYPE = "FARCLUSS (prototype contrast)"
COST_PAIRWISE = "FARCLUSS with pairwise contrast"


def cost_table(cfg, data: StudyData, repeats: int | None = None, batch_size: int | None = None,
               contrast_pixels: int | None = None, device: str | None = None) -> pd.DataFrame:
    """Time and memory per training iteration of each method on the same batch.

    The notebook and ``benchmarks/bench_farcluss.py`` both call this, so they measure the same steps the
    same way: ``cfg.threads`` torch threads, ``cfg.cost_repeats`` rounds (one step of every method per
    round), the contrast's extra time taken within each round against the same step without the contrast.
    """
    torch.manual_seed(0)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dev = torch.device(device or "cpu")
    b = batch_size or cfg.batch_size
    xl = torch.from_numpy(data.train.images[:b]).to(dev)
    yl = torch.from_numpy(data.train.masks[:b]).long().to(dev)
    xu = torch.from_numpy(data.train.images[b:2 * b]).to(dev)
    if len(xu) < b:
        raise DataError(f"cost table needs {2 * b} training images, got {len(data.train)}")
    # Default: every pixel of the batch at the embedding stride, so the two contrasts see the same, full set.
    h, w = data.train.images.shape[-2:]
    all_pixels = 2 * b * -(-h // 4) * -(-w // 4)
    n_pix = min(contrast_pixels or all_pixels, all_pixels)
    base = replace(_semisup_config(cfg, "farcluss"), contrast_pixels=n_pix)
    configs = {
        COST_REFERENCE: _semisup_config(cfg, "supervised"),
        "hard threshold (FixMatch-style)": _semisup_config(cfg, "fixmatch"),
        COST_WITHOUT_CONTRAST: replace(base, prototype=False),
        COST_PROTOTYPE: base,
        COST_PAIRWISE: replace(base, prototype=False, pairwise=True),
    }
    rounds = repeats or cfg.cost_repeats
    table = ss.measure_step_costs(lambda: _build_model(cfg, data).to(dev), configs, xl, yl, xu, data.num_classes,
                                  repeats=rounds, warmup=3, reference=COST_REFERENCE,
                                  baselines={COST_PROTOTYPE: COST_WITHOUT_CONTRAST,
                                             COST_PAIRWISE: COST_WITHOUT_CONTRAST})
    table = table.rename(columns={"vs_reference": "vs supervised", "extra_ms": "contrast extra ms",
                                  "extra_pct_of_reference": "contrast extra (% of supervised)"})
    table["contrast_pixels"] = [n_pix if m in (COST_PROTOTYPE, COST_PAIRWISE) else 0 for m in table.method]
    table["rounds"] = rounds
    return table.round(3)


def contrast_overhead(costs: pd.DataFrame) -> dict[str, float]:
    """What the prototype and the pairwise contrast add to a step (from :func:`cost_table`).

    Times are medians over the measuring rounds of the in-round difference to the step without the
    contrast (and of that difference over the round's supervised step, in %); memory is the difference
    in activations saved for backward.
    """
    c = costs.set_index("method")
    out = {"supervised_ms": float(c.loc[COST_REFERENCE, "ms_median"]),
           "rounds": int(c["rounds"].max()) if "rounds" in c else 0}
    for key, name in (("prototype", COST_PROTOTYPE), ("pairwise", COST_PAIRWISE)):
        out[f"{key}_extra_ms"] = float(c.loc[name, "contrast extra ms"])
        out[f"{key}_extra_pct_of_supervised"] = float(c.loc[name, "contrast extra (% of supervised)"])
        out[f"{key}_extra_mb"] = float(c.loc[name, "saved_activation_mb"] - c.loc[COST_WITHOUT_CONTRAST,
                                                                                    "saved_activation_mb"])
    out["contrast_pixels"] = int(c["contrast_pixels"].max())
    return out


CONTRAST_SCALING_PIXELS = (256, 1024, 4096)


def contrast_scaling_table(cfg, pixels=CONTRAST_SCALING_PIXELS) -> pd.DataFrame:
    """Prototype vs pairwise contrast alone (forward + backward) as the pixel count grows; at most 5 repeats
    (pairwise on 4096 pixels takes about a second a repeat)."""
    table = ss.measure_contrast_costs(pixels, num_classes=8, embed_dim=cfg.embed_dim, temperature=cfg.temperature,
                                      repeats=max(1, min(cfg.cost_repeats, 5)))
    wide = table.pivot(index="pixels", columns="contrast", values=["ms", "saved_activation_mb"])
    wide.columns = [f"{c} {v}" for v, c in wide.columns]
    return wide.round(3).reset_index()


# ----------------------------------------------------------------------------- claims


def _paired(runs: pd.DataFrame, a: str, b: str, value: str, fraction=None) -> dict:
    from labkit.core.stats import paired_by_index

    sel = runs if fraction is None else runs[runs.fraction == fraction]
    pa = sel[sel.name == a].set_index(["fraction", "seed"])[value]
    pb = sel[sel.name == b].set_index(["fraction", "seed"])[value]
    if len(pa.index.intersection(pb.index)) == 0:
        return {"mean_diff": float("nan"), "n": 0}
    return paired_by_index(pa, pb)


def evaluate_claims(cfg, results: ExperimentResults, costs: pd.DataFrame | None) -> list[dict]:
    """The issue's four claims with statuses computed from the runs (never hard-coded)."""
    runs = results.runs
    main = runs[runs.table == "main"]
    n_seeds = len(cfg.seeds)
    claims = []
    fractions_tried = [sc.fraction_name(f) for f in sorted(main.fraction.unique())]
    untried = [sc.fraction_name(f) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2) if sc.fraction_name(f) not in fractions_tried]

    # 1. FARCLUSS beats both baselines at every fraction.
    evidence, ok = {}, True
    for f in sorted(main.fraction.unique()):
        for base in ("supervised", "fixmatch"):
            d = _paired(main, "farcluss", base, "miou", f)
            evidence[f"{sc.fraction_name(f)} vs {base}"] = {k: round(float(v), 4) for k, v in d.items()}
            ok &= bool(d["n"] >= 2 and d.get("ci95_low", -1) > 0)
    reason = (f"{n_seeds} seeds; held means the 95% CI of the paired mIoU difference is above 0 for every "
              f"fraction tried ({', '.join(fractions_tried)}) and both baselines")
    if untried:
        reason += f"; fractions {', '.join(untried)} not run at preset {cfg.preset} (time budget)"
    claims.append({"id": "beats_baselines_every_fraction",
                   "statement": "FARCLUSS beats supervised-only and the hard-threshold (0.95) teacher-student in "
                                "mIoU at every labelled fraction tried",
                   "status": "held" if ok and n_seeds >= 2 else ("did not hold" if n_seeds >= 2 else "not evaluated"),
                   "evidence": evidence, "reason": reason if n_seeds >= 2 else "needs >= 2 seeds"})

    # 2. Largest gains on minority classes and boundaries.
    statement = "FARCLUSS's gains are largest on tail (minority) classes and on boundary pixels"
    tail_iou = main["miou_tail"] if "miou_tail" in main else pd.Series(dtype=float)
    if n_seeds < 2:
        claims.append({"id": "largest_gains_tail_and_boundaries", "statement": statement,
                       "status": "not evaluated", "evidence": {}, "reason": "needs >= 2 seeds"})
    elif tail_iou.isna().all():
        claims.append({"id": "largest_gains_tail_and_boundaries", "statement": statement,
                       "status": "not evaluated", "evidence": {},
                       "reason": "no class is in the tail group (under the tail_max_fraction pixel share)"})
    else:
        evidence, ok = {}, True
        for base in ("supervised", "fixmatch"):
            gains = {c: _paired(main, "farcluss", base, c)["mean_diff"]
                     for c in ("miou_head", "miou_body", "miou_tail", "boundary_miou", "miou")}
            evidence[f"gain vs {base} (pp)"] = {k: round(100 * v, 2) for k, v in gains.items()}
            ok &= bool(gains["miou_tail"] > max(gains["miou_head"], gains["miou_body"], 0)
                       and gains["boundary_miou"] > max(gains["miou"], 0))
        reason = ("held means, against both baselines, the mean tail-class gain exceeds the head and body gains "
                  "and 0, and the boundary-pixel gain exceeds the all-pixel gain and 0 (paired, averaged over "
                  f"fractions and {n_seeds} seeds)")
        if float(tail_iou.max()) == 0.0:
            reason += ("; no method segmented any tail-class pixel in any run (tail IoU 0 throughout), so the "
                       "tail part could not show a gain at this budget")
        claims.append({"id": "largest_gains_tail_and_boundaries", "statement": statement,
                       "status": "held" if ok else "did not hold", "evidence": evidence, "reason": reason})

    # 3. Each part contributes: removing it lowers mIoU beyond seed noise, and adding it (one by one) raises it.
    abl = runs[runs.table == "ablation"]
    statement = ("Each part contributes: removing any one of the four parts lowers mIoU (paired 95% CI above 0), "
                 "and adding the parts one by one to the hard-threshold baseline raises mIoU at every step")
    if abl.empty:
        claims.append({"id": "each_part_contributes", "statement": statement,
                       "status": "not evaluated", "evidence": {}, "reason": "ablation switched off (ablation: none)"})
    elif n_seeds < 2:
        claims.append({"id": "each_part_contributes", "statement": statement,
                       "status": "not evaluated", "evidence": {}, "reason": "needs >= 2 seeds"})
    else:
        evidence, failing = {}, []
        for part in ss.PARTS:
            d = _paired(abl, "FARCLUSS (all parts)", f"without {part}", "miou")
            evidence[f"removing {part} (pp lost)"] = {k: round(100 * float(d[k]), 2)
                                                      for k in ("mean_diff", "ci95_low", "ci95_high")}
            if not (d["n"] >= 2 and d["ci95_low"] > 0):
                failing.append(f"removing {part}")
        chain = ["hard threshold (no part)"] + ["+ " + " + ".join(ss.PARTS[:i]) for i in range(1, len(ss.PARTS))]
        chain.append("FARCLUSS (all parts)")
        names = set(abl.name)
        if all(n in names for n in chain):
            added = {}
            for part, before, after in zip(ss.PARTS, chain[:-1], chain[1:]):
                d = _paired(abl, after, before, "miou")
                added[f"+ {part} (pp gained)"] = round(100 * float(d["mean_diff"]), 2)
                if not d["mean_diff"] > 0:
                    failing.append(f"adding {part}")
            evidence["adding one by one"] = added
            evidence["adding one by one (mIoU %)"] = {n: round(100 * abl[abl.name == n].miou.mean(), 2)
                                                     for n in chain}
        reason = (f"split {sc.fraction_name(cfg.ablation_fraction)}, {n_seeds} seeds; held means every part's "
                  "removal lowers mIoU with the paired 95% CI above 0 and every part's addition raises the mean "
                  f"mIoU; failing: {failing or 'none'}")
        if not all(n in names for n in chain):
            reason += "; the add-one-by-one rows were not run at this preset (ablation: remove_only), so only removals"
        claims.append({"id": "each_part_contributes", "statement": statement,
                       "status": "held" if not failing else "did not hold", "evidence": evidence,
                       "reason": reason})

    # 4. Prototype contrast is cheap; pairwise is not.
    if costs is None or costs.empty:
        claims.append({"id": "prototype_contrast_cheap", "statement": "Prototype contrast is cheap",
                       "status": "not evaluated", "evidence": {}, "reason": "cost table not measured"})
    else:
        o = contrast_overhead(costs)
        ok = (o["prototype_extra_pct_of_supervised"] <= 10.0 and o["prototype_extra_ms"] < o["pairwise_extra_ms"]
              and o["prototype_extra_mb"] < o["pairwise_extra_mb"])
        claims.append({"id": "prototype_contrast_cheap",
                       "statement": "Prototype contrast adds at most 10% of a supervised step and costs less time "
                                    "and memory than pairwise pixel contrast on the same sampled pixels",
                       "status": "held" if ok else "did not hold",
                       "evidence": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in o.items()},
                       "reason": f"{o['rounds']} measuring rounds, each one step of every method on the same batch; "
                                 "extra = median over rounds of (step with the contrast - the same step without it), "
                                 "as % of the same round's supervised step; both contrasts on every pixel of the "
                                 "batch at the embedding stride; memory = activations saved for backward (CPU)"})
    return claims


def headline_metrics(cfg, results: ExperimentResults) -> dict:
    main = results.runs[results.runs.table == "main"]
    out = {"seconds_training": round(results.seconds, 1)}
    for (name, split), grp in main.groupby(["name", "split"]):
        out[f"miou_{name}_{split}"] = round(float(grp.miou.mean()), 4)
    first = sc.fraction_name(min(cfg.fractions))
    far = main[(main.name == "farcluss") & (main.split == first)].set_index("seed").miou
    sup = main[(main.name == "supervised") & (main.split == first)].set_index("seed").miou
    out["farcluss_gain_over_supervised_lowest_fraction"] = round(float((far - sup).mean()), 4)
    return out
