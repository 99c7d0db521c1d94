"""The report's tables: functions of the runs (or of the config and the first seed's slices) -> DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.core.claims import BUDGET_KEYS
from labkit.core.metrics import aggregate_over_seeds
from labkit.data import microct
from labkit.methods.microct_standin import LEARNER_FREE_PREDICTOR
from labkit.studies.base import Runs
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS, SPLITS, splits
from labkit.studies.dinov2_microct.experiment import TRAINED_RATIO
from labkit.studies.dinov2_microct.probes import HISTOGRAM

FEATURE_LABELS = {"cls": "class token", "mean": "mean patch token", "cls+mean": "class + mean patch token"}


def backbones(runs: Runs) -> pd.DataFrame:
    """Each ViT row: its status (or why it is not evaluated) and how slices meet its patch grid."""
    return runs.tables["backbones"][["backbone", "status", "input"]].reset_index(drop=True)


def classification(runs: Runs) -> pd.DataFrame:
    """Accuracy of each probe (kNN at each k, linear) on each feature view of each backbone and baseline, mean over
    seeds with a 95% interval; a backbone that could not run, with why."""
    df = runs.tables["classification_rows"]
    ok = df[df["status"] == "evaluated"].copy()
    ok["probe"] = np.where(ok["probe"] == "knn", "kNN k=" + ok["k"].fillna(0).astype(int).astype(str), "linear")
    if "feature" not in ok:
        ok["feature"] = "cls"
    ok["feature"] = ok["feature"].map(lambda f: FEATURE_LABELS.get(f, f))
    agg = aggregate_over_seeds(ok, ["accuracy"], ["backbone", "feature", "probe"]) if len(ok) else pd.DataFrame()
    missing = df[df["status"] != "evaluated"].copy()
    if len(missing):  # a backbone that could not run (every probe), or a k larger than the training slices
        k = missing["k"] if "k" in missing else pd.Series(np.nan, index=missing.index)
        missing["probe"] = np.where(k.notna(), "kNN k=" + k.fillna(0).astype(int).astype(str), "all")
        missing = missing.drop_duplicates(["backbone", "probe"])[["backbone", "probe", "status"]]
        agg = pd.concat([agg, missing.assign(feature="every feature view")], ignore_index=True)
    if len(agg):  # the floor of claim 1: grey levels alone, no features
        agg.insert(0, "role", np.where(agg["backbone"] == HISTOGRAM, "floor (claim 1)", ""))
        agg["status"] = agg["status"].fillna("evaluated") if "status" in agg else "evaluated"
    return agg.round(3)


def segmentation(runs: Runs) -> pd.DataFrame:
    """Mean over seeds (and 95% CI of the mean IoU) per method and split, wide over splits, with the IoU of each
    phase of the data on the held-out rock."""
    df = runs.tables["segmentation_rows"]
    phases = [c.split("/", 1)[1] for c in df.columns if c.startswith("iou/")]
    ok = df[df["status"] == "evaluated"]
    rows = []
    keys = ["method", "backbone", "kind"]
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        og = ok.merge(pd.DataFrame([row]), on=keys)
        if len(og) == 0:
            row["status"] = g["status"].iloc[0]
            rows.append(row)
            continue
        row["status"] = "evaluated"
        row["trainable_params"] = og["trainable_params"].iloc[0]
        row["train_seconds"] = og.groupby("seed")["train_seconds"].first().mean()
        for split in SPLITS:
            sg = og[og["split"] == split]
            if not len(sg):  # a split the data cannot supply (one scanner per rock): no score, no interval
                row[f"{split}/miou"], row[f"{split}/miou_ci95"] = np.nan, ""
                continue
            a = aggregate_over_seeds(sg.assign(_=0), ["miou"], ["_"]).iloc[0]
            row[f"{split}/miou"] = a["miou_mean"]
            row[f"{split}/miou_ci95"] = f"[{a['miou_ci95_low']:.3f}, {a['miou_ci95_high']:.3f}]" if a["n"] > 1 else ""
            if split == "ood_rock":
                for p in phases:
                    row[f"ood_rock/iou/{p}"] = sg[f"iou/{p}"].mean()
        row["n_seeds"] = og["seed"].nunique()
        rows.append(row)
    table = pd.DataFrame(rows)
    # the per-token oracle of the same backbone's token grid beside every head row (its ceiling)
    if len(table) and "ood_rock/miou" in table:
        oracle = table[table["kind"] == "oracle"].set_index("backbone")["ood_rock/miou"]
        heads = table["kind"].isin(["frozen", "LoRA"])
        table.loc[heads, "ood_rock/token_ceiling"] = table.loc[heads, "backbone"].map(oracle)
    return table.round(3)


def budgets(runs: Runs) -> pd.DataFrame:
    """Every trained arm's training budget (optimiser steps, batch size, peak learning rate, schedule, trainable
    parameters), one row per arm (with the seeds it ran; the budget is the same for every seed). Rows without
    gradient training (the classical pipelines, the random forest, kNN segmentation) have none."""
    b = runs.tables.get("budget_rows")
    if b is None or not len(b):
        return pd.DataFrame(columns=["method", "backbone", *BUDGET_KEYS, "n_seeds"])
    keys = ["method", "backbone", *BUDGET_KEYS]
    return b.groupby(keys, sort=False, dropna=False)["seed"].nunique().rename("n_seeds").reset_index()


def token_grid_ceiling(runs: Runs) -> pd.DataFrame:
    """Per-token oracle mean IoU per token grid (mean over seeds), one column per split."""
    c = runs.tables["ceilings"]
    if c is None or not len(c):
        return pd.DataFrame(columns=["grid", *SPLITS])
    t = c.groupby(["grid", "split"])["miou"].mean().unstack("split").reset_index()
    t.insert(1, "tokens", [f"{g}x{g}" for g in t["grid"]])
    return t[["grid", "tokens", *[s for s in SPLITS if s in t]]].round(3)


def pretraining(runs: Runs) -> pd.DataFrame:
    """The stand-in's "trained" record: steps, held-out loss, the image-mean predictor's loss and their ratio,
    the learner-free predictor's loss (each hidden patch filled with the mean of its image's visible pixels,
    on the same held-out crops and masks) and the ratio "trained" is judged on."""
    rows = []
    for kind, rec in (runs.examples.get("pretraining") or {}).items():
        ratio = rec.get("learner_free_ratio")
        rows.append(
            {
                "backbone": BACKBONE_LABELS.get(kind, kind),
                "steps": rec.get("steps"),
                "heldout_loss": rec.get("final_loss"),
                "trivial_loss": rec.get("trivial_loss"),
                "loss_ratio": rec.get("loss_ratio"),
                "learner_free_loss": rec.get("learner_free_loss"),
                "learner_free_ratio": ratio,
                "trained_threshold": TRAINED_RATIO,
                "trained": bool(ratio is not None and np.isfinite(ratio) and ratio < TRAINED_RATIO),
                "mask_ratio": rec.get("mask_ratio"),
                "trivial_predictor": rec.get("trivial_predictor"),
                "learner_free_predictor": LEARNER_FREE_PREDICTOR,
            }
        )
    return pd.DataFrame(rows)


def data_splits(cfg, data: microct.MicroCTSlices) -> pd.DataFrame:
    """Each split of the first seed's slices: its size, rocks, scanners and phase fractions."""
    ds = data
    sp = splits(cfg, ds)
    rows = []
    for name, idx in sp.items():
        sub = ds.subset(idx)
        frac = np.bincount(sub.masks.ravel(), minlength=len(ds.phases)) / max(sub.masks.size, 1)
        rows.append(
            {
                "split": name,
                "slices": len(idx),
                "rocks": ", ".join(sorted({ds.rock_types[r] for r in sub.rock})),
                "scanners": ", ".join(sorted({ds.scanners[s] for s in sub.scanner})),
                **{f"fraction/{p}": round(float(f), 3) for p, f in zip(ds.phases, frac)},
            }
        )
    return pd.DataFrame(rows)
