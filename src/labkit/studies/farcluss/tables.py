"""FARCLUSS tables: each a function of the runs (with the config or the data where it needs them), named as the
report names it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.methods import semisup as ss
from labkit.reports.mean_sd import mean_sd_cell
from labkit.studies.base import Runs

from .arms import ARM_LABELS, MAIN_METHODS, ablation_arms, arm_config, main_runs
from .costs import exponent_table, scaling_table
from .data import ALL_LABELS, GROUPS, StudyData, ablation_split, split_names


def _not_trained(runs: Runs) -> pd.DataFrame | None:
    """A one-row table saying why no arm trained (the encoder's weights missing), or None when the arms ran."""
    if len(runs.tables["trained"]):
        return None
    reasons = list(dict.fromkeys(runs.unavailable.get(a) for a in MAIN_METHODS if runs.unavailable.get(a)))
    return pd.DataFrame({"not evaluated": reasons or ["no arm was trained"]})


def class_frequency(data: StudyData) -> pd.DataFrame:
    """Each class's share of the training pixels and its frequency group."""
    return pd.DataFrame(
        {
            "class": data.class_names,
            "pixel_fraction": data.frequencies,
            "group": [data.groups[n] for n in data.class_names],
        }
    )


def main_miou(runs: Runs, data: StudyData | None = None, value: str = "miou") -> pd.DataFrame:
    """Methods x labelled splits, mean ± std over seeds (in %), between a floor (the majority-class
    predictor) and a ceiling (supervised with all labels, same seeds)."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    runs = runs.tables["trained"]
    splits = [s for s in dict.fromkeys(runs.split) if s != ALL_LABELS]
    main_splits = [s for s in splits if set(MAIN_METHODS) <= set(runs[runs.split == s].arm)]
    rows = []
    if data is not None and value == "miou":
        rows.append(
            {"method": "floor: majority class everywhere", **{s: f"{100 * data.floor_miou:.1f}" for s in main_splits}}
        )
    for arm in MAIN_METHODS:
        sel = runs[runs.arm == arm]
        rows.append(
            {
                "method": ARM_LABELS[arm] if arm != "farcluss" else "FARCLUSS",
                **{s: mean_sd_cell(sel[sel.split == s][value]) for s in main_splits},
            }
        )
    ceiling = runs[(runs.arm == "supervised") & (runs.split == ALL_LABELS)][value]
    if len(ceiling):
        rows.append(
            {
                "method": f"ceiling: supervised, all {len(data.train) if data else ''} labels".replace("  ", " "),
                **{s: mean_sd_cell(ceiling) for s in main_splits},
            }
        )
    return pd.DataFrame(rows).rename(columns={"method": f"method, {value} (%) by split"})


def runs(runs: Runs) -> pd.DataFrame:
    """Every run, one row per arm x split x seed (the tidy table the claims are judged on)."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    cols = [
        "arm",
        "split",
        "seed",
        "n_labeled",
        "miou",
        "miou_head",
        "miou_body",
        "miou_tail",
        "boundary_miou",
        "pseudo_kept",
        "train_seconds",
    ]
    trained = runs.tables["trained"]
    runs = trained[[c for c in cols if c in trained]].copy()
    for c in ("miou", "miou_head", "miou_body", "miou_tail", "boundary_miou", "pseudo_kept"):
        if c in runs:
            runs[c] = (100 * runs[c]).round(2)
    return runs.sort_values(["split", "arm", "seed"]).reset_index(drop=True)


def regime(cfg, runs: Runs) -> pd.DataFrame:
    """Per seed: supervised with all labels vs with the fewest (the label-limited gap), and the all-labels
    model's tail IoU (the tail-resolvable check), against the stated margin and floor."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    regime = runs.tables["regime"]
    few = split_names(cfg)[0]
    sup = regime[regime.arm == "supervised"].pivot_table(index="seed", columns="split", values=["miou", "miou_tail"])
    table = pd.DataFrame(
        {
            f"supervised {few} mIoU (%)": 100 * sup[("miou", few)],
            "supervised all labels mIoU (%)": 100 * sup[("miou", ALL_LABELS)],
            "label-limited gap (pp)": 100 * (sup[("miou", ALL_LABELS)] - sup[("miou", few)]),
            "all labels tail mIoU (%)": 100 * sup[("miou_tail", ALL_LABELS)],
        }
    ).round(2)
    table.loc["stated bar"] = [np.nan, np.nan, 100 * cfg.label_limited_margin, 100 * cfg.tail_floor]
    return table.reset_index().rename(columns={"index": "seed"})


def miou_by_frequency_group(runs: Runs, data: StudyData) -> pd.DataFrame:
    """Per method: mIoU of head/body/tail classes and of boundary pixels, averaged over splits and seeds."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    main = main_runs(runs.tables["trained"])
    cols = [f"miou_{g}" for g in GROUPS] + ["boundary_miou", "miou"]
    table = main.groupby("arm")[cols].mean().loc[[m for m in MAIN_METHODS if m in set(main.arm)]] * 100
    table.index = [ARM_LABELS[m] for m in table.index]
    members = {g: ", ".join(c for c in data.class_names if data.groups[c] == g) or "none" for g in GROUPS}
    table.columns = [f"{g} ({members[g]})" for g in GROUPS] + ["boundary pixels", "all pixels"]
    return table.round(1).rename_axis("method, mIoU (%)").reset_index()


def per_class_iou(runs: Runs, data: StudyData) -> pd.DataFrame:
    """Per class: IoU of each main method over the main splits and seeds, and of supervised with all labels."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    trained = runs.tables["trained"]
    main = main_runs(trained)
    cols = [f"iou/{c}" for c in data.class_names]
    table = main.groupby("arm")[cols].mean().loc[[m for m in MAIN_METHODS if m in set(main.arm)]].T * 100
    table.columns = [ARM_LABELS[m] for m in table.columns]
    ceiling = trained[(trained.arm == "supervised") & (trained.split == ALL_LABELS)]
    if len(ceiling):
        table["supervised, all labels"] = ceiling[cols].mean().to_numpy() * 100
    table.insert(0, "group", [data.groups[c] for c in data.class_names])
    table.index = list(data.class_names)
    return table.round(1).rename_axis("class, IoU (%)").reset_index()


def ablation(cfg, runs: Runs) -> pd.DataFrame:
    """The ablation arms at the ablation split: mIoU, and the paired difference to FARCLUSS with all parts."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    arms = ablation_arms(cfg)
    split = ablation_split(cfg)
    trained = runs.tables["trained"]
    abl = trained[(trained.split == split) & trained.arm.isin(arms)]
    if abl.empty:
        return pd.DataFrame()
    full = abl[abl.arm == "farcluss"].set_index("seed")["miou"]
    rows = []
    for arm in arms:
        sel = abl[abl.arm == arm].set_index("seed")
        rows.append(
            {
                "arm": ARM_LABELS[arm],
                **{p: "on" if getattr(arm_config(cfg, arm), p) else "-" for p in ss.PARTS},
                "mIoU (%)": mean_sd_cell(sel["miou"]),
                "vs all parts (pp)": round(float((100 * (sel["miou"] - full)).mean()), 2),
                "tail mIoU (%)": round(100 * float(sel["miou_tail"].mean()), 1),
                "boundary mIoU (%)": round(100 * float(sel["boundary_miou"].mean()), 1),
            }
        )
    return pd.DataFrame(rows).rename(columns={"arm": f"ablation (split {split}, {abl.seed.nunique()} seeds)"})


def splits(runs: Runs) -> pd.DataFrame:
    """One row per labelled split and seed: its sizes, the classes without a labelled pixel and its split lists."""
    return runs.tables["splits"]


def budgets(runs: Runs) -> pd.DataFrame:
    """The training budget of every trained arm (the "same budget" precondition's table)."""
    if (empty := _not_trained(runs)) is not None:
        return empty
    return runs.tables["budgets"]


def cost_per_iteration(runs: Runs) -> pd.DataFrame:
    """Time and memory per training iteration of each method on the same batch."""
    return runs.tables["step_costs"]


def contrast_cost_scaling(runs: Runs) -> pd.DataFrame:
    """The two contrast losses alone as the pixel count grows (median over repeats)."""
    return scaling_table(runs.tables["contrast_scaling"])


def contrast_cost_exponents(runs: Runs) -> pd.DataFrame:
    """Log-log slopes of each contrast's time and memory in the pixel count (1 = linear, 2 = quadratic)."""
    return exponent_table(runs.tables["scaling"])
