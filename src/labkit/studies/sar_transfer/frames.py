"""SAR sea-ice study, the grid's records as tidy tables: per test scene, per season, learning curves,
convergence to a common threshold, season gains, training budgets, frozen probes, confusion counts and the
weights each arm used. ``experiment.gather`` builds them once into ``Runs.tables``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from labkit.core.claims import BUDGET_KEYS
from labkit.data.sar import CLASS_NAMES

from . import source_features
from .data import INITS, PRETRAINED_ARMS, SEASONS


@dataclasses.dataclass
class GridRecords:
    """The grid's records (one per task; the frozen probes' records apart in ``probes``), the weights each arm
    used, and the settings."""

    records: list[dict]
    weights: dict
    settings: dict
    probes: list[dict] = dataclasses.field(default_factory=list)  # the frozen-probe records (tasks._probe_task)

    @property
    def evaluated(self) -> list[str]:
        return [a for a in INITS if a in self.weights and self.weights[a]["status"] == "ok"]

    @property
    def few(self) -> int:
        return min(self.settings["tiles"])

    @property
    def class_names(self) -> tuple[str, ...]:
        """The data's class names (every task records them; the sea-ice classes when there is no record)."""
        return tuple(next((r["class_names"] for r in self.records if r.get("class_names")), CLASS_NAMES))

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(next((r["band_names"] for r in self.records if r.get("band_names")), ("HH", "HV")))

    def record(self, arm: str, seed: int, n_tiles: int) -> dict | None:
        return next(
            (r for r in self.records if r["arm"] == arm and r["seed"] == seed and r["n_tiles"] == n_tiles), None
        )


def scene_frame(results: GridRecords) -> pd.DataFrame:
    """One row per arm x seed x tile count x test scene: season, weather, mIoU, per-class IoU/F1."""
    rows = [
        {"arm": r["arm"], "seed": r["seed"], "n_tiles": r["n_tiles"], **s} for r in results.records for s in r["scenes"]
    ]
    return pd.DataFrame(rows)


def history_frame(results: GridRecords) -> pd.DataFrame:
    """Validation mIoU per epoch (and optimiser step) of every trained run."""
    rows = []
    for r in results.records:
        if "val_miou" not in r:
            continue
        for e, (v, loss) in enumerate(zip(r["val_miou"], r["train_loss"]), 1):
            rows.append(
                {
                    "arm": r["arm"],
                    "seed": r["seed"],
                    "n_tiles": r["n_tiles"],
                    "epoch": e,
                    "step": e * r["steps_per_epoch"],
                    "val_miou": float(v),
                    "train_loss": float(loss),
                }
            )
    return pd.DataFrame(rows, columns=["arm", "seed", "n_tiles", "epoch", "step", "val_miou", "train_loss"])


def season_frame(results: GridRecords) -> pd.DataFrame:
    """Per arm x seed x tile count: mean mIoU over the test scenes of each season, and over all (``all``)."""
    scenes = scene_frame(results)
    if scenes.empty:
        return pd.DataFrame(columns=["arm", "seed", "n_tiles", "season", "miou", "n_scenes"])
    by_season = scenes.groupby(["arm", "seed", "n_tiles", "season"], as_index=False).agg(
        miou=("miou", "mean"), n_scenes=("miou", "size")
    )
    overall = scenes.groupby(["arm", "seed", "n_tiles"], as_index=False).agg(
        miou=("miou", "mean"), n_scenes=("miou", "size")
    )
    return pd.concat([by_season, overall.assign(season="all")], ignore_index=True)


def curves_frame(results: GridRecords) -> pd.DataFrame:
    rows = [
        {
            "arm": r["arm"],
            "seed": r["seed"],
            "n_tiles": r["n_tiles"],
            "best_val_miou": r["best_val_miou"],
            "late_gain": r["late_gain"],
            "epochs": r["epochs"],
            "steps_per_epoch": r["steps_per_epoch"],
            "seconds": r["seconds"],
        }
        for r in results.records
        if "val_miou" in r
    ]
    return pd.DataFrame(
        rows, columns=["arm", "seed", "n_tiles", "best_val_miou", "late_gain", "epochs", "steps_per_epoch", "seconds"]
    )


def convergence_frame(results: GridRecords, fraction: float | None = None) -> pd.DataFrame:
    """Per pretrained arm (``pair``), seed and arm (the pretrained one and random), at the fewest tiles:
    epochs and optimiser steps to a **common** threshold, ``fraction`` of the lower of the two runs' best
    validation mIoU, so neither arm's bar depends on how high it ends."""
    fraction = results.settings["convergence_fraction"] if fraction is None else fraction
    rows = []
    for pre in [a for a in PRETRAINED_ARMS if a in results.evaluated]:
        for seed in results.settings["seeds"]:
            pair = {a: results.record(a, seed, results.few) for a in ("random", pre)}
            if any(v is None for v in pair.values()):
                continue
            bar = fraction * min(float(np.nanmax(v["val_miou"])) for v in pair.values())
            for arm, rec in pair.items():
                hits = np.flatnonzero(np.asarray(rec["val_miou"], float) >= bar)
                epoch = float(hits[0] + 1) if len(hits) else float("nan")
                rows.append(
                    {
                        "pair": pre,
                        "arm": arm,
                        "seed": seed,
                        "threshold": bar,
                        "epochs_to_common": epoch,
                        "steps_to_common": epoch * rec["steps_per_epoch"],
                        "best_val_miou": float(np.nanmax(rec["val_miou"])),
                    }
                )
    return pd.DataFrame(
        rows, columns=["pair", "arm", "seed", "threshold", "epochs_to_common", "steps_to_common", "best_val_miou"]
    )


def gains_frame(results: GridRecords) -> pd.DataFrame:
    """Per pretrained arm and seed, at the fewest tiles: melt and freeze gains over random (mean over each
    season's test scenes), melt gain minus |freeze gain|, and the largest and smallest class-wise freeze IoU
    gain (each class averaged over the freeze test scenes whose chart holds it)."""
    scenes = scene_frame(results)
    rows = []
    if scenes.empty:
        return pd.DataFrame(columns=["arm", "seed"])
    few = scenes[scenes.n_tiles == results.few]
    for pre in [a for a in PRETRAINED_ARMS if a in results.evaluated]:
        for seed in results.settings["seeds"]:
            s = few[few.seed == seed]
            a, r = s[s.arm == pre].set_index("scene"), s[s.arm == "random"].set_index("scene")
            if a.empty or r.empty:
                continue
            gain = {
                season: float(a.miou[a.season == season].mean() - r.miou[r.season == season].mean())
                for season in SEASONS
            }
            freeze = a.index[a.season == "freeze"]
            class_gain = {}
            for name in results.class_names:
                present = a.loc[freeze, f"present/{name}"].astype(bool)
                scenes_with = freeze[present.to_numpy()]
                if len(scenes_with):
                    class_gain[name] = float(
                        (a.loc[scenes_with, f"iou/{name}"] - r.loc[scenes_with, f"iou/{name}"]).mean()
                    )
            rows.append(
                {
                    "arm": pre,
                    "seed": seed,
                    "melt_gain": gain["melt"],
                    "freeze_gain": gain["freeze"],
                    "melt_gain_minus_abs_freeze_gain": gain["melt"] - abs(gain["freeze"]),
                    "max_class_gain": max(class_gain.values()) if class_gain else float("nan"),
                    "min_class_gain": min(class_gain.values()) if class_gain else float("nan"),
                    **{f"freeze_gain/{k}": v for k, v in class_gain.items()},
                }
            )
    return pd.DataFrame(rows)


COVERAGE_COLUMNS = [
    "seed",
    "n_tiles",
    "drawn_pixels",
    "distinct_pixels",
    "distinct_per_tile",
    "oversampling",
    "area_pixels",
    "area_covered",
    "area_gain",
]


def coverage_frame(results: GridRecords) -> pd.DataFrame:
    """Per seed and training-tile count: how much distinct area the tiles come from (tiles are drawn with
    replacement from the training scenes' training rows): labelled pixels drawn, distinct labelled pixels, distinct
    pixels per tile drawn, the oversampling factor (drawn / distinct), the training area and the share of it
    covered, and ``area_gain``: distinct pixels over those of the fewest tiles on the seed (the data-rich arm's
    real gain in data, which the "distinct area" precondition reads)."""
    rows = {}
    for r in results.records:
        if r.get("coverage") and r["arm"] == "random":
            rows[(r["seed"], r["n_tiles"])] = {"seed": r["seed"], "n_tiles": r["n_tiles"], **r["coverage"]}
    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    few = frame[frame.n_tiles == frame.n_tiles.min()].set_index("seed")["distinct_pixels"]
    frame["area_gain"] = frame["distinct_pixels"] / frame["seed"].map(few)
    return frame[COVERAGE_COLUMNS].sort_values(["n_tiles", "seed"]).reset_index(drop=True)


BUDGET_TABLE_COLUMNS = ["arm", "n_tiles", *BUDGET_KEYS, "seeds"]


def budget_frame(results: GridRecords) -> pd.DataFrame:
    """The training budget of every trained arm (the networks; ``gbm`` and ``majority`` train none): one row
    per arm, tile count and distinct budget, with the seeds that had it. The "same budget" precondition
    reads it; an arm whose seeds trained differently has several rows."""
    rows = [
        {"arm": r["arm"], "n_tiles": r["n_tiles"], "seed": r["seed"], **r["budget"]}
        for r in results.records
        if "budget" in r
    ]
    if not rows:
        return pd.DataFrame(columns=BUDGET_TABLE_COLUMNS)
    frame = pd.DataFrame(rows)
    keys = ["arm", "n_tiles", *BUDGET_KEYS]
    table = frame.groupby(keys, as_index=False, sort=False).agg(seeds=("seed", lambda s: len(set(s))))
    order = {a: i for i, a in enumerate(INITS)}
    table = table.sort_values(["n_tiles", "arm"], key=lambda c: c.map(order) if c.name == "arm" else c)
    return table[BUDGET_TABLE_COLUMNS].reset_index(drop=True)


PROBE_COLUMNS = ["arm", "seed", "n_tiles", "miou", "freeze_miou", "melt_miou", *BUDGET_KEYS]


def probe_frame(results: GridRecords) -> pd.DataFrame:
    """One row per arm and seed: its frozen linear probe's test mIoU (mean over the test scenes, as the study
    scores; and per season), with the probe's budget: how well each encoder's frozen features serve SAR against random
    init's (a finding the report shows; "features learned" is judged on the source task, ``source_features``)."""
    rows = []
    for r in results.probes:
        scenes = pd.DataFrame(r["scenes"])
        season = scenes.groupby("season")["miou"].mean()
        rows.append(
            {
                "arm": r["arm"],
                "seed": r["seed"],
                "n_tiles": r["n_tiles"],
                "miou": float(scenes["miou"].mean()),
                "freeze_miou": float(season.get("freeze", np.nan)),
                "melt_miou": float(season.get("melt", np.nan)),
                **r["budget"],
            }
        )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def claim_tables(results: GridRecords) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on: ``runs`` (season mIoU per arm, seed, tile count; the
    ``majority`` floor included), ``curves`` (plateau per run), ``convergence`` (common-threshold epochs),
    ``gains``, ``budgets`` (each trained arm's steps, batch size, lr, schedule, trainable parameters),
    ``probes`` (each arm's frozen linear probe: test mIoU per seed; a finding, not a precondition),
    ``source_features`` (each pretrained arm's source-task "features learned" record, from its weights' sidecar:
    the precondition reads it) and ``coverage`` (the distinct area each tile count's tiles come from)."""
    return {
        "source_features": source_features.frame(results.weights),
        "probes": probe_frame(results),
        "runs": season_frame(results),
        "curves": curves_frame(results),
        "convergence": convergence_frame(results),
        "gains": gains_frame(results),
        "budgets": budget_frame(results),
        "coverage": coverage_frame(results),
    }


def confusion_frame(results: GridRecords) -> pd.DataFrame:
    """Pixel counts per arm x seed x tile count x test scene, chart class and predicted class (the long form of
    each record's confusion matrices)."""
    rows = []
    k = len(results.class_names)
    for r in results.records:
        for s in r["scenes"]:
            matrix = r.get("confusion", {}).get(s["scene"])
            if matrix is None:
                continue
            key = {
                "arm": r["arm"],
                "seed": r["seed"],
                "n_tiles": r["n_tiles"],
                "scene": s["scene"],
                "season": s["season"],
            }
            rows += [
                {**key, "chart": i, "predicted": j, "pixels": int(matrix[i][j])} for i in range(k) for j in range(k)
            ]
    return pd.DataFrame(rows, columns=["arm", "seed", "n_tiles", "scene", "season", "chart", "predicted", "pixels"])


WEIGHTS_COLUMNS = ["arm", "description", "status", "weights", "reason"]


def weights_frame(weights: Mapping[str, dict]) -> pd.DataFrame:
    """Per arm: status, the weights it used (checkpoint, file, sha256, provenance from the sidecar), reason; and the
    source file's full sha256 and the adapted encoder's digest."""
    rows = []
    for arm, w in weights.items():
        prov = dict(w.get("provenance") or {})
        meta = prov.pop("checkpoint_meta", {})
        keep = (
            "weights",
            "checkpoint",
            "file",
            "sha256",
            "produced_here",
            "dropped_stages",
            "first_conv_bands",
            "source",
        )
        details = "; ".join(
            f"{k}: {str(prov[k])[:80] if k != 'sha256' else str(prov[k])[:16]}" for k in keep if k in prov
        )
        if meta:
            details += "; sidecar: " + ", ".join(
                f"{k}={meta[k]}"
                for k in ("study", "produced_by", "n_tiles", "epochs", "tile", "seed", "severity", "commit", "seconds")
                if k in meta
            )
        rows.append(
            {
                "arm": arm,
                "description": w["label"],
                "status": w["status"],
                "weights": details or "-",
                "reason": w["reason"][:300],
                "sha256": prov.get("sha256", ""),
                "digest": w.get("digest") or "",
            }
        )
    return pd.DataFrame(rows, columns=[*WEIGHTS_COLUMNS, "sha256", "digest"])


def all_tables(results: GridRecords) -> dict[str, pd.DataFrame]:
    """The claims' tables (:func:`claim_tables`) and those the study's tables and figures read: ``scenes``
    (per test scene), ``history`` (validation curves), ``confusion`` (pixel counts) and ``weights``."""
    return {
        **claim_tables(results),
        "scenes": scene_frame(results),
        "history": history_frame(results),
        "confusion": confusion_frame(results),
        "weights": weights_frame(results.weights),
    }


def tile_counts(tables: Mapping[str, pd.DataFrame]) -> tuple[int, int]:
    """(fewest, most) training tiles of a run, read from its ``runs`` table (random init runs at every count)."""
    n_tiles = tables["runs"]["n_tiles"]
    return int(n_tiles.min()), int(n_tiles.max())
