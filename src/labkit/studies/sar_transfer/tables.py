"""SAR sea-ice study, its tables: each a function of the run (``runs``) or of the first seed's scenes (``data``)."""

from __future__ import annotations

import pandas as pd

from labkit.core.metrics import aggregate_over_seeds
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES
from labkit.studies.base import Runs

from .data import SarData
from .frames import WEIGHTS_COLUMNS, tile_counts


def calibration_table(data: SarData) -> pd.DataFrame:
    """The simulator's dB statistics next to the real Sentinel-1 chip's and the AI4Arctic publisher's means."""
    return sar.calibration_table(data.scenes)


def inputs_table(data: SarData) -> pd.DataFrame:
    """Per scene of the first seed: split, season, the two polarisations, the classes, and where the network's third
    input (the incidence angle) comes from: the scene's own band, or the documented substitute (a constant 34
    degrees, which carries no information) when it has none; and how the inputs are standardised."""
    rows = []
    for split, scenes in (("train", data.train_scenes), ("val", data.val_scenes), ("test", data.test_scenes)):
        for s in scenes:
            rows.append(
                {
                    "scene": s.name,
                    "split": split,
                    "season": s.season,
                    "polarisations": "/".join(s.band_names),
                    "classes": ", ".join(s.class_names),
                    "incidence angle": "substitute (constant 34 degrees)"
                    if s.meta.get("incidence") == "substitute"
                    else "from the scene",
                    "standardised with": data.normalizer.source,
                }
            )
    return pd.DataFrame(rows)


def weights_table(runs: Runs) -> pd.DataFrame:
    """Per arm: status, the weights it used (checkpoint, file, sha256, provenance from the sidecar), reason."""
    return runs.tables["weights"][WEIGHTS_COLUMNS]


def budget_table(runs: Runs) -> pd.DataFrame:
    """The training budget of every trained arm (the claims' table ``budgets``)."""
    return runs.tables["budgets"]


def coverage_table(runs: Runs) -> pd.DataFrame:
    """Per training-tile count: how much distinct area the tiles come from, mean over seeds (tiles are random crops
    with replacement from the training rows): pixels drawn, distinct pixels, distinct pixels per tile drawn, the
    oversampling factor, the share of the training area covered and the gain in distinct area over the fewest
    tiles."""
    cov = runs.tables["coverage"]
    if cov.empty:
        return pd.DataFrame(columns=["n_tiles"])
    out = cov.drop(columns="seed").groupby("n_tiles", as_index=False).mean()
    out.insert(1, "seeds", cov.groupby("n_tiles")["seed"].nunique().to_numpy())
    for c in ("drawn_pixels", "distinct_pixels", "area_pixels", "distinct_per_tile"):
        out[c] = out[c].round(0).astype(int)
    return out.round({"oversampling": 2, "area_covered": 3, "area_gain": 2})


def probe_table(runs: Runs) -> pd.DataFrame:
    """Frozen features on SAR: per arm, its frozen linear probe's test mIoU (all scenes, freeze, melt), mean over
    seeds with 95 % CI; then per pretrained arm a row "frozen features on SAR vs random init": the paired difference
    over seeds of its probe's mIoU minus random init's (a finding of the run, not a precondition: "features
    learned" is judged on the encoder's source task, table ``source_features``)."""
    from labkit.core.stats import paired_by_index

    probes = runs.tables["probes"]
    if probes.empty:
        return pd.DataFrame(columns=["arm", "n"])
    table = aggregate_over_seeds(probes, ["miou", "freeze_miou", "melt_miou"], ["arm", "n_tiles"])
    table.insert(0, "row", "frozen features on SAR")
    rows = []
    base = probes[probes.arm == "random"].set_index("seed")
    for arm in sorted(set(probes.arm) - {"random"}):
        mine = probes[probes.arm == arm].set_index("seed")
        row = {"row": "frozen features on SAR vs random init (paired)", "arm": f"{arm} - random"}
        row["n_tiles"] = int(mine["n_tiles"].iloc[0])
        for col in ("miou", "freeze_miou", "melt_miou"):
            d = paired_by_index(mine[col], base[col])
            row.update(
                {f"{col}_mean": d["mean_diff"], f"{col}_ci95_low": d["ci95_low"], f"{col}_ci95_high": d["ci95_high"]}
            )
            row["n"] = d["n"]
        rows.append(row)
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows and not base.empty else table


def source_features_table(runs: Runs) -> pd.DataFrame:
    """Features learned, per pretrained arm, on its encoder's source task: the record its producer wrote into the
    weights' sidecar (statement, estimate, interval, seeds, margin, passed), or why there is none."""
    table = runs.tables.get("source_features")
    rows = [] if table is None else table.to_dict("records")
    for arm, reason in (runs.context.get("unjudged_features") or {}).items():
        rows.append({"arm": arm, "statement": "-", "producer": "-", "missing": reason})
    return pd.DataFrame(rows)


def convergence_table(runs: Runs) -> pd.DataFrame:
    """Per pretrained arm: epochs and optimiser steps of both arms to the common threshold, mean and 95 % CI."""
    conv = runs.tables["convergence"]
    if conv.empty:
        return pd.DataFrame()
    return aggregate_over_seeds(
        conv, ["epochs_to_common", "steps_to_common", "threshold", "best_val_miou"], ["pair", "arm"]
    )


def regime_table(runs: Runs) -> pd.DataFrame:
    """The regime: test mIoU (all scenes) of random init and the references at each tile count, and the
    plateau measure (late gain) and the epochs each trained arm actually trained (early stopping may end a run
    before ``epochs``); floor (majority) and data-rich rows included."""
    seasons = runs.tables["runs"]
    many = tile_counts(runs.tables)[1]
    table = aggregate_over_seeds(seasons[seasons.season == "all"], "miou", ["arm", "n_tiles"])
    curves = runs.tables["curves"]
    if not curves.empty:
        late = aggregate_over_seeds(curves, ["late_gain", "best_val_miou", "epochs", "seconds"], ["arm", "n_tiles"])
        table = table.merge(late.drop(columns="n"), on=["arm", "n_tiles"], how="left")
    role = {"majority": "floor", "gbm": "classical reference"}
    table.insert(
        2,
        "role",
        [
            role.get(a, "data-rich (ceiling)" if n == many else "claims' regime")
            for a, n in zip(table.arm, table.n_tiles)
        ],
    )
    return table.sort_values(["n_tiles", "arm"]).reset_index(drop=True)


def season_table(runs: Runs) -> pd.DataFrame:
    """Per season, arm and tile count: mean over seeds of the season's mean scene mIoU, with its 95 % CI."""
    seasons = runs.tables["runs"]
    return aggregate_over_seeds(seasons[seasons.season != "all"], "miou", ["season", "arm", "n_tiles"])


def scene_table(runs: Runs) -> pd.DataFrame:
    """Per test scene (each its own weather), at the fewest tiles: mIoU per arm (mean over seeds), wind, air
    temperature (simulated scenes vary by seed: their weather is the mean over seeds)."""
    scenes = runs.tables["scenes"]
    few = scenes[scenes.n_tiles == tile_counts(runs.tables)[0]]
    wide = few.pivot_table(index=["season", "scene"], columns="arm", values="miou", aggfunc="mean")
    weather = few.groupby(["season", "scene"])[["wind_speed", "air_temperature"]].mean()
    return weather.join(wide).reset_index()


def per_class_table(runs: Runs) -> pd.DataFrame:
    """Per season, class and arm (fewest tiles): IoU over the scenes whose chart holds the class."""
    scenes = runs.tables["scenes"]
    few = scenes[scenes.n_tiles == tile_counts(runs.tables)[0]]
    rows = []
    for (season, arm), g in few.groupby(["season", "arm"], sort=False):
        for name in runs.context.get("class_names", CLASS_NAMES):
            h = g[g[f"present/{name}"].astype(bool)]
            rows.append(
                {
                    "season": season,
                    "arm": arm,
                    "class": name,
                    "iou_mean": h[f"iou/{name}"].mean(),
                    "iou_std": h[f"iou/{name}"].std(ddof=1),
                    "f1_mean": h[f"f1/{name}"].mean(),
                    "n_scene_runs": len(h),
                }
            )
    return pd.DataFrame(rows)
