"""The study's tables: functions of the gathered runs (or the data) -> DataFrame, each one table of the report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.core.claims import BUDGET_KEYS
from labkit.core.metrics import aggregate_over_seeds
from labkit.core.stats import paired_by_index
from labkit.studies.base import Runs
from labkit.studies.noisy_label_pretraining.data import INIT_LABELS, INITS, NO_NODATA, StudyData, label_key
from labkit.studies.noisy_label_pretraining.setup import LAYER_NULL, LAYER_RAW, init_label
from labkit.studies.noisy_label_pretraining.tasks import TASK_A, TASK_B


def _settings(runs: Runs) -> dict:
    """The run's settings (:func:`setup.settings`)."""
    return runs.examples["settings"]


def _main_runs(runs: Runs, task: str) -> pd.DataFrame:
    """The rows of ``task`` at the label-efficiency k whose noisy pretraining, if any, is the main one."""
    df, s = runs.tables["finetune"], _settings(runs)
    return df[
        (df.task == task)
        & ((df.pretraining == s["main_noisy_labels"]) | ~df.init.str.startswith("noisy"))
        & df.k.isin(s["k_values"])
    ]


def label_efficiency_table(runs: Runs, task: str = TASK_A) -> pd.DataFrame:
    """mIoU per initialisation and k (main noisy labels; QDA reference; unavailable rows say why)."""
    df = _main_runs(runs, task)
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    out["label"] = [init_label(_settings(runs), i) for i in out.init]
    for init, reason in runs.unavailable.items():
        if init in INITS:
            out = pd.concat(
                [
                    out,
                    pd.DataFrame(
                        [
                            {
                                "init": init,
                                "k": np.nan,
                                "miou_mean": np.nan,
                                "n_seeds": 0,
                                "label": init_label(_settings(runs), init),
                                "note": f"not evaluated: {reason}",
                            }
                        ]
                    ),
                ],
                ignore_index=True,
            )
    return out.sort_values(["init", "k"], kind="stable").reset_index(drop=True)


def gains_table(runs: Runs, init: str = "noisy_full", reference: str = "random", task: str = TASK_A) -> pd.DataFrame:
    """Paired (per seed) mIoU difference ``init - reference`` per k (main noisy labels), with its 95 % interval."""
    df = _main_runs(runs, task)
    rows = []
    for k in sorted(df.k.unique()):
        a = df[(df.init == init) & (df.k == k)].set_index("seed").miou
        b = df[(df.init == reference) & (df.k == k)].set_index("seed").miou
        if not len(set(a.index) & set(b.index)):
            continue
        rows.append({"init": init, "reference": reference, "k": int(k), **paired_by_index(a, b)})
    return pd.DataFrame(rows)


def regime_runs(runs: Runs) -> pd.DataFrame:
    """Random initialisation on task A at the fewest and the most tiles over every seed (``seeds`` and the extra
    ``regime_seeds``): the rows the label-limited precondition is judged on."""
    ks = (_settings(runs)["k_values"][0], _settings(runs)["k_values"][-1])
    extra = runs.tables["extra_regime_runs"]
    frames = [runs.tables["finetune"]] + ([extra] if extra is not None and len(extra) else [])
    ft = pd.concat(frames, ignore_index=True)
    return ft[(ft.task == TASK_A) & (ft.init == "random") & ft.k.isin(ks)].reset_index(drop=True)


def regime_table(runs: Runs) -> pd.DataFrame:
    """The regime the claims are judged in, per k: the floor (most frequent class), the classical reference (QDA),
    random initialisation (over the regime seeds too), the noisy- and the clean-pretrained (upper bound) U-Nets;
    with their plateau (largest late gain) and time per run."""
    ft = runs.tables["finetune"]
    ft = ft[ft.task == TASK_A]
    regime = regime_runs(runs)
    main = _settings(runs)["main_noisy_labels"]
    rows = []
    for init in ("majority", "qda", "random", "noisy_full", "clean_full"):
        for k in _settings(runs)["k_values"]:
            table = regime if init == "random" else ft
            sub = table[(table.init == init) & (table.k == k) & ((table.pretraining == main) | (init != "noisy_full"))]
            if sub.empty:
                continue
            rows.append(
                {
                    "row": INIT_LABELS[init],
                    "k": int(k),
                    "miou_mean": sub.miou.mean(),
                    "late_gain_max": sub.late_gain.max(),
                    "seconds_mean": sub.seconds.mean(),
                    "n_seeds": sub.seed.nunique(),
                }
            )
    return pd.DataFrame(rows)


def noise_sweep_table(runs: Runs) -> pd.DataFrame:
    """Per noisy severity: pixel noise rate, pretrained mIoU (no fine-tuning), fine-tuned mIoU at sweep_k and the
    paired gain over random initialisation; the clean-pretrained row is the reference (``reference=True``)."""
    s = _settings(runs)
    ft, pre = runs.tables["finetune"], runs.tables["pretraining"]
    ft = ft[(ft.task == TASK_A) & (ft.k == s["sweep_k"])]
    random_ = ft[ft.init == "random"].set_index("seed").miou
    pre = pre[(pre.order == 0) & (pre.purpose == "arms")] if "purpose" in pre else pre[pre.order == 0]
    rows = []
    for level in [0.0] + list(s["noise_levels"]):
        key = label_key(level)
        sub = (
            ft[(ft.init == "clean_full") if level == 0 else ((ft.init == "noisy_full") & (ft.pretraining == key))]
            .set_index("seed")
            .miou
        )
        gain = paired_by_index(sub, random_) if len(set(sub.index) & set(random_.index)) else {}
        p = pre[pre.labels == key]
        rows.append(
            {
                "severity": level,
                "reference": level == 0,
                "pixel_noise_rate": p.pixel_noise_rate.mean(),
                "pretrained_miou_no_finetune": p.test_miou.mean(),
                "finetuned_miou": sub.mean(),
                "gain_over_random": gain.get("mean_diff", np.nan),
                "gain_ci95_low": gain.get("ci95_low", np.nan),
                "gain_ci95_high": gain.get("ci95_high", np.nan),
                "n_seeds": gain.get("n", 0),
            }
        )
    return pd.DataFrame(rows)


def task_b_table(runs: Runs) -> pd.DataFrame:
    """mIoU per initialisation on task B (the other class definition, a fresh decoder); or why it did not run."""
    df = runs.tables["finetune"]
    df = df[df.task == TASK_B]
    if df.empty:
        return pd.DataFrame([{"init": "-", "note": f"not evaluated: {runs.unavailable.get(TASK_B, 'no rows')}"}])
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    out["k"] = out["k"].astype(int)
    return out


def layer_excess_table(runs: Runs) -> pd.DataFrame:
    """Per seed and layer: the raw value (clean order 1 vs noisy order 0), the matched null (clean order 1 vs clean
    order 0: the same difference in data order, no difference in labels) and their difference, the excess."""
    lay = runs.tables["layer_divergence"]
    if lay.empty:
        return pd.DataFrame(columns=["seed", "name", "part", "depth", "n_params", "raw", "null", "excess"])
    main = lay[lay.comparison == LAYER_RAW].set_index(["seed", "name"])
    null = lay[lay.comparison == LAYER_NULL].set_index(["seed", "name"]).value
    out = main[["part", "depth", "n_params"]].copy()
    out["raw"], out["null"] = main.value, null.reindex(main.index)
    out["excess"] = out.raw - out.null
    return out.reset_index()


def layer_parts_table(runs: Runs) -> pd.DataFrame:
    """Per seed and part: mean raw value, mean null and mean null-corrected excess over the part's layers."""
    per_layer = layer_excess_table(runs)
    return (
        per_layer.groupby(["seed", "part"])[["raw", "null", "excess"]]
        .mean()
        .reset_index()
        .assign(layers=per_layer.groupby(["seed", "part"]).size().to_numpy())
    )


def layer_null_table(runs: Runs) -> pd.DataFrame:
    """Per seed: layers with a null value, and |Spearman rho| against layer size of the raw value, the null and the
    null-corrected excess (the claim reads the excess: the raw value and the null both follow layer size through
    training itself, as a layer's initial sd shrinks with its fan-in and an Adam step does not)."""
    from scipy.stats import spearmanr

    rows = []
    for seed, sub in layer_excess_table(runs).groupby("seed"):
        ok = sub.null.notna()
        row = {"seed": seed, "null_layers": int(ok.sum())}
        for name, column in (("raw", "raw"), ("null", "null"), ("excess", "excess")):
            rho = spearmanr(np.log(sub.n_params[ok]), sub[column][ok]).statistic if ok.sum() > 2 else np.nan
            row[f"{name}_size_corr_abs"] = float(abs(rho))
        rows.append(row)
    columns = ["seed", "null_layers", "raw_size_corr_abs", "null_size_corr_abs", "excess_size_corr_abs"]
    return pd.DataFrame(rows, columns=columns)


def probe_table(runs: Runs) -> pd.DataFrame:
    """Frozen linear probes per encoder (mean over seeds, 95 % interval) and the paired difference noisy-pretrained
    minus random init: the evidence of the "features learned" precondition."""
    probes = runs.tables["probes"].reset_index(drop=True)
    if probes.empty:
        return pd.DataFrame(columns=["network", "init", "pretraining", "k", "miou_mean", "n_seeds"])
    if "network" not in probes:
        probes = probes.assign(network="arms")
    out = aggregate_over_seeds(probes, "miou", ["network", "init", "pretraining", "k"]).rename(columns={"n": "n_seeds"})
    diffs = {}
    for network, sub in probes.groupby("network", sort=False):
        a = sub[sub.init == "noisy_encoder"].set_index("seed").miou
        b = sub[sub.init == "random"].set_index("seed").miou
        if len(set(a.index) & set(b.index)):
            diffs[network] = paired_by_index(a, b).get("mean_diff")
    out["paired_diff_vs_random"] = [
        diffs.get(n, np.nan) if i == "noisy_encoder" else np.nan for n, i in zip(out.network, out.init)
    ]
    out["steps"] = probes.steps.iloc[0]
    return out


def budgets_table(runs: Runs) -> pd.DataFrame:
    """Each trained arm's budget, one row per arm and condition (seeds folded into ``n_runs``; a budget column
    that differs between seeds lists its values)."""
    budgets = runs.tables["budgets"].reset_index(drop=True)
    keys = ["stage", "purpose", "task", "init", "k", "pretraining", "labels", "order"]
    keys = [k for k in keys if k in budgets.columns]
    if budgets.empty:
        return pd.DataFrame(columns=[*keys, "n_runs", *BUDGET_KEYS])
    join = lambda v: v.iloc[0] if v.nunique(dropna=False) == 1 else " / ".join(sorted({str(x) for x in v}))  # noqa: E731
    out = (
        budgets.groupby(keys, dropna=False, sort=False)
        .agg(n_runs=("seed", "size"), **{c: (c, join) for c in BUDGET_KEYS})
        .reset_index()
    )
    return out.dropna(axis=1, how="all")


def settings_table(runs: Runs) -> pd.DataFrame:
    """Every setting of the run, one row each."""
    return pd.DataFrame([{"setting": k, "value": str(v)} for k, v in _settings(runs).items()])


def data_table(data: StudyData) -> pd.DataFrame:
    """Per seed: chips per split, pixel noise rate of each pretraining label set, no-data pixels of the chips used
    (masked out of every loss and score): of the image (NaN in any band), of the clean labels and of the pretraining
    chips' noisy labels, each counted as the files give it; tiles sharing their bounds with another (grouped as one
    place, never in two splits)."""
    rows = []
    for seed, info in data.summary.items():
        rows.append(
            {
                "seed": seed,
                **{f"tiles_{k}": v for k, v in info["tiles"].items()},
                **{f"noise_rate_{k}": round(v, 3) for k, v in info["pixel_noise_rate"].items()},
                **{k: info.get(k, 0) for k in NO_NODATA},
                # tiles on the same bounds as another (dates of one place): kept in one split, never two
                "tiles_sharing_bounds": sum(len(group) for group in info.get("same_place_tiles", [])),
            }
        )
    return pd.DataFrame(rows)


def encoder_cka_table(runs: Runs) -> pd.DataFrame:
    """CKA between the clean- and the noisy-pretrained (or the null's) encoder features, per stage (mean over
    seeds)."""
    return runs.tables["cka"].groupby(["comparison", "stage", "channels"]).cka.mean().reset_index()
