"""Study 3's tables: of its data (``data``) and of its runs (``runs``: ``labkit.studies.base.Runs``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.core.metrics import aggregate_over_seeds
from labkit.studies.base import Runs, regime_seeds

from .data import INIT_LABELS, PRETRAINED, VIT_INITS
from .experiment import REGIME_AT_FEWEST, is_trained
from .tasks import shared_between_seeds


def data_summary(data: dict) -> pd.DataFrame:
    """Per set: its images, how many are defective, the defect pixels' share and each defect type's count. For a
    real folder (``data["geometry"]``) the inputs are img_size tiles and crops: ``source_images`` says how many
    images they were cut from, and two rows count the defect masks that vanished in the resize and the labelled
    crops that left defect pixels out (none is dropped silently)."""
    geometry = data.get("geometry") or {}
    rows = []
    for name in ("unlabeled", "pool", "test", "good"):
        s = data[name]
        types = s["defect_types"]
        row = {"set": name}
        if geometry:
            row["source_images"] = geometry[name]["source_images"]
        row.update(
            {
                "images": len(types),
                "defective": int((types != "good").sum()),
                "defect_pixel_%": round(100 * float(s["masks"].mean()), 2),
            }
        )
        row.update({d: int((types == d).sum()) for d in sorted(set(types) - {"good"})})
        rows.append(row)
    rows.append({"set": "unrelated (photos)", "images": len(data["unrelated"]["images"])})
    if geometry:
        rows.append({"set": "defect masks vanished in the resize", "images": geometry["masks_vanished_in_resize"]})
        rows.append(
            {"set": "labelled crops leaving defect pixels out", "images": geometry["pool_crops_cutting_defects"]}
        )
    return pd.DataFrame(rows).fillna(0)


def subset_overlap(cfg, data) -> pd.DataFrame:
    """How many labelled images each pair of seeds shares at each label count (0 where the pool allows); the
    extra regime seeds count at the fewest and the most labels, where they run."""
    labels = (data["pool"]["defect_types"] != "good").astype(int)
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    rows = []
    for n in cfg.label_counts:
        seeds = regime_seeds(cfg) if n in (lo, hi) else list(cfg.seeds)
        rows.append(
            {
                "n_labels": n,
                "pool": len(labels),
                "pool_defective": int(labels.sum()),
                "seeds": len(seeds),
                "max_shared_between_seeds": shared_between_seeds(labels, n, seeds, hi, cfg.data_seed),
                "max_shared_between_claim_seeds": shared_between_seeds(labels, n, cfg.seeds, hi, cfg.data_seed),
            }
        )
    return pd.DataFrame(rows)


def pretraining_table(cfg, runs: Runs) -> pd.DataFrame:
    """Per pretraining: its steps, its training losses, and on the same fixed batches the untrained network's
    loss (``initial_loss``), the trained one's (``eval_loss``) and the best learner-free predictor's, with the
    ratio precondition "trained" reads."""
    pretrained = runs.examples["pretrained"]
    rows = []
    for name, p in pretrained.items():
        r = p["record"]
        trained, _ = is_trained(cfg, name, pretrained)
        rows.append(
            {
                "init": name,
                "method": PRETRAINED[name][0],
                "data": PRETRAINED[name][1],
                "images": r["n_images"],
                "epochs": r["epochs_run"],
                "steps": r.get("steps"),
                "first_loss": r["first_loss"],
                "final_loss": r["final_loss"],
                "initial_loss": r.get("initial_loss"),
                "eval_loss": r.get("eval_loss"),
                "learner_free_loss": r.get("learner_free_loss"),
                "learner_free_rule": r.get("learner_free_rule"),
                "trivial_loss": r["trivial_loss"],
                "loss_ratio": r["loss_ratio"],
                "trained": "yes" if trained else f"no: ratio not below {cfg.trained_max_loss_ratio:g}",
                "seconds": r["seconds"],
                "images_per_s": r["images_per_s"],
            }
        )
    return pd.DataFrame(rows)


def initialisations_table(runs: Runs) -> pd.DataFrame:
    """Per init asked for: evaluated, did not train (fine-tuned and shown, no claim rests on it) or not evaluated,
    with the reason."""
    return runs.tables["initialisations"]


def runs_table(runs: Runs) -> pd.DataFrame:
    """Every fine-tuning run over ``seeds``: init x protocol x label count x seed, its metrics and budget."""
    return runs.tables["runs"]


def what_trains_table(runs: Runs) -> pd.DataFrame:
    """Per init x protocol: the decoder, the parameters that receive gradients (``trainable_params``: what trains)
    and those that merely require them (``requires_grad_params``), and the decoder's own parameters."""
    frame = runs.tables["runs"]
    cols = [c for c in ("decoder", "decoder_params", "trainable_params", "requires_grad_params") if c in frame]
    trained = frame[frame["init"] != "all_good"]
    out = trained.groupby(["init", "protocol"], sort=False)[cols].first().reset_index()
    out.insert(0, "row", [INIT_LABELS.get(i, i) for i in out["init"]])
    return out


def results_table(runs: Runs) -> pd.DataFrame:
    """One row per init x protocol x label count: mean and 95 % interval over seeds of defect AP, defect F1,
    image AUROC (the claims' metrics) and mIoU (secondary), with the 'all good' floor as the first row; an
    init that could not be evaluated gets a row saying why."""
    frame, unavailable = runs.tables["runs"], runs.unavailable
    metrics = ["defect_ap", "defect_f1", "image_auroc", "miou"]
    summary = aggregate_over_seeds(frame, metrics, ["init", "protocol", "n_labels"])
    order = {k: i for i, k in enumerate(["all_good", "unet", *VIT_INITS])}
    summary = summary.sort_values(
        ["init", "protocol", "n_labels"], key=lambda c: c.map(order) if c.name == "init" else c
    ).reset_index(drop=True)
    floor = frame[frame["init"] == "all_good"].groupby("n_labels")["defect_ap"].mean()
    summary.insert(
        3,
        "defect_ap_above_floor",
        [m - floor.get(n, np.nan) for m, n in zip(summary["defect_ap_mean"], summary["n_labels"])],
    )
    summary.insert(0, "row", [INIT_LABELS.get(i, i) for i in summary["init"]])
    shown = set(frame["init"])
    extra = [
        {
            "row": INIT_LABELS.get(k, k),
            "init": k,
            "protocol": f"no claim rests on its rows: {v}" if k in shown else f"not evaluated: {v}",
        }
        for k, v in unavailable.items()
    ]
    return pd.concat([summary, pd.DataFrame(extra)], ignore_index=True) if extra else summary


def regime_table(cfg, runs: Runs) -> pd.DataFrame:
    """The regime the claims are judged in: the floor, the scratch ViT (over the regime seeds: the rows the
    label-limited precondition reads) and the U-Net at the fewest and the most labels: defect AP means, the
    seeds they average over, and the gain with its paired 95 % interval against the stated margin; then, over the
    regime seeds, each init whose "above the floor" at the fewest labels is judged there (:func:`floor_rows`)."""
    from labkit.core.stats import paired_difference

    frame, regime = runs.tables["runs"], runs.tables.get("regime")
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    rows = []
    for init in ("all_good", "scratch", "unet"):
        table = regime if init == "scratch" and regime is not None and len(regime) else frame
        g = table[(table["init"] == init) & table["protocol"].isin(["full", "-"])]
        if not len(g):
            continue
        wide = g.pivot_table(index="seed", columns="n_labels", values="defect_ap")
        row = {"row": INIT_LABELS[init], "seeds": int(len(wide))}
        row[f"defect_ap_at_{lo}"] = wide[lo].mean() if lo in wide else np.nan
        row[f"defect_ap_at_{hi}"] = wide[hi].mean() if hi in wide else np.nan
        both = wide[[lo, hi]].dropna() if lo in wide and hi in wide else pd.DataFrame()
        diff = paired_difference(both[hi].to_numpy(float), both[lo].to_numpy(float)) if len(both) > 1 else {}
        row.update(
            gain=diff.get("mean_diff", np.nan),
            gain_ci95_low=diff.get("ci95_low", np.nan),
            gain_ci95_high=diff.get("ci95_high", np.nan),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    out["label_limited_margin"] = cfg.label_limited_margin
    if regime is not None and len(regime):
        out = pd.concat([out, floor_rows(cfg, regime)], ignore_index=True)
    return out


def floor_rows(cfg, regime: pd.DataFrame) -> pd.DataFrame:
    """At the fewest labels, over the regime seeds: each init of ``REGIME_AT_FEWEST`` against the 'all good'
    floor (precondition "above the floor", margin ``FLOOR_MARGIN``), with the subsets it learns from."""
    from labkit.core.stats import paired_difference

    from .claims import FLOOR_MARGIN

    lo = min(cfg.label_counts)
    at_lo = regime[regime["n_labels"] == lo]
    floor = at_lo[at_lo["init"] == "all_good"].set_index("seed")["defect_ap"]
    rows = []
    for init in [i for i in REGIME_AT_FEWEST if i in set(at_lo["init"])]:
        arm = at_lo[at_lo["init"] == init].set_index("seed")["defect_ap"]
        both = pd.concat([arm, floor], axis=1, keys=["arm", "floor"]).dropna()
        diff = paired_difference(both["arm"].to_numpy(float), both["floor"].to_numpy(float)) if len(both) > 1 else {}
        rows.append(
            {
                "row": f"{INIT_LABELS.get(init, init)} over the floor at {lo} labels",
                "seeds": int(len(both)),
                f"defect_ap_at_{lo}": float(arm.mean()),
                "median_defect_ap": float(arm.median()),
                "seeds_above_floor_margin": int((both["arm"] - both["floor"] > FLOOR_MARGIN).sum()),
                "gain": diff.get("mean_diff", np.nan),
                "gain_ci95_low": diff.get("ci95_low", np.nan),
                "gain_ci95_high": diff.get("ci95_high", np.nan),
                "floor_margin": FLOOR_MARGIN,
            }
        )
    return pd.DataFrame(rows)


def regime_runs_table(cfg, runs: Runs) -> pd.DataFrame:
    """Per regime seed: the scratch ViT's defect AP (and final training loss) at the fewest and the most labels,
    the gain the label-limited precondition pairs, and at the fewest labels the defect AP of each init whose
    "above the floor" is judged on the regime seeds, and the floor's."""
    regime = runs.tables["regime"]
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    values = [c for c in ("defect_ap", "final_train_loss") if c in regime.columns]
    scratch = regime[regime["init"] == "scratch"]
    wide = scratch.pivot_table(index="seed", columns="n_labels", values=values)
    out = pd.DataFrame(index=sorted(set(regime["seed"])))
    out.index.name = "seed"
    for n in (lo, hi):
        for v in values:
            if (v, n) in wide:
                out[f"{v}_at_{n}"] = wide[(v, n)]
    if ("defect_ap", lo) in wide and ("defect_ap", hi) in wide:
        out["gain"] = wide[("defect_ap", hi)] - wide[("defect_ap", lo)]
    # the inits whose "above the floor" at the fewest labels is judged here, and the floor itself
    for init in [i for i in (*REGIME_AT_FEWEST, "all_good") if i in set(regime["init"])]:
        g = regime[(regime["init"] == init) & (regime["n_labels"] == lo)].set_index("seed")["defect_ap"]
        out[f"{init}_defect_ap_at_{lo}"] = g
    out.insert(0, "in_seeds", ["yes" if s in cfg.seeds else "regime only" for s in out.index])
    return out.reset_index()


def anomaly_table(runs: Runs) -> pd.DataFrame:
    """PatchCore per init: image AUROC, pixel AUROC, AUPRO and the memory bank's size."""
    return runs.tables["anomaly_detection"]


def budgets_table(runs: Runs) -> pd.DataFrame:
    """Every trained run's budget, pretraining included: what precondition "same budget" compares."""
    return runs.tables["budgets"]
