"""SAR sea-ice study, its claims: the paper's three claims (Karimzadeh and Pires de Lima, IGARSS 2023) for each
pretrained arm, judged at the fewest training tiles, paired over seeds, with the preconditions that make them
testable; and the headline numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from labkit.core.claims import Claim, Compare, Precondition
from labkit.studies.base import Runs

from .arms import ARM_LABELS
from .data import PRETRAINED_ARMS

CLAIMS = {
    "faster_convergence": "An encoder pretrained on optical images and fine-tuned converges in fewer epochs "
    "than the same network from random weights.",
    "better_on_melt": "The pretrained encoder segments the melt-season scenes better (mIoU) than random "
    "initialisation.",
    "freeze_smaller_mixed": "On the freeze-season scenes the difference is smaller than the melt-season gain and "
    "mixed across classes.",
}


def claim_id(base: str, arm: str) -> str:
    """The paper's arm (ImageNet) keeps the paper's claim ids; another pretrained arm is suffixed."""
    return base if arm == "imagenet" else f"{base}_{arm}"


def _rename(pre: Precondition, name: str, why: str | None = None) -> Precondition:
    return dataclasses.replace(pre, name=name, why=why or pre.why)


# Effects of interest (labkit.core.claims): the paper reports no effect size for these comparisons.
PRACTICAL_MIOU = 0.02
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper reports no effect size)"
PRACTICAL_EPOCHS = 2.0
FLOOR_MARGIN = 0.02  # an arm the claims compare must beat the majority-class floor by this much test mIoU
EPOCHS_SOURCE = "a stated practical size: 2 epochs sooner to the common threshold (the paper reports no number)"


def declare_claims(cfg, unavailable: Mapping[str, str] | None = None, **context) -> list[Claim]:
    """The paper's three claims for each pretrained arm (ImageNet: the paper's ids; cross-sensor: suffixed),
    judged at the fewest training tiles, paired over seeds.

    Preconditions: both arms had the same budget (optimiser steps, batch size, schedule at the fewest tiles)
    and both score above the majority-class floor by :data:`FLOOR_MARGIN` test mIoU (over all test scenes
    for convergence, on the claim's season otherwise), for every claim; both arms plateau (the last fifth
    of training improves validation mIoU by less than ``plateau_gain``) for convergence; the baseline is
    data-limited (random init with the most tiles beats itself with the fewest by more than
    ``data_limited_margin`` test mIoU) for the season claims.

    Features learned, for every claim of a pretrained arm: that arm's frozen linear probe (:func:`_probe_task`)
    beats the random-init network's frozen probe in test mIoU, paired over seeds (table ``probes``); an encoder
    whose features a linear readout cannot use better than random ones gives its claims no footing.
    ``unavailable``: ``{arm: reason}`` for arms that cannot run (e.g. missing weights).
    """
    unavailable = dict(unavailable or {})
    tiles = sorted(set(cfg["tiles"]))
    few, many = tiles[0], tiles[-1]
    plateau, margin = cfg["plateau_gain"], cfg["data_limited_margin"]
    fraction = cfg["convergence_fraction"]
    data_limited = _rename(
        Precondition.label_limited(
            "miou",
            full={"arm": "random", "season": "all", "n_tiles": many},
            few={"arm": "random", "season": "all", "n_tiles": few},
            margin=margin,
        ),
        "data-limited",
        why=f"random init with {many} training tiles beats itself with {few} by more than "
        f"{margin:g} test mIoU (mean over the test scenes)",
    )
    claims = []
    for arm in PRETRAINED_ARMS:
        reason = unavailable.get(arm)
        if reason is None and arm not in cfg["inits"]:
            reason = f"arm '{arm}' was not run (add it to inits)"
        if reason is not None and arm == "imagenet" and "weights unavailable" in reason:
            reason += (
                "; put ImageNet ResNet-18 weights (resnet18.a1_in1k.safetensors) in LABKIT_WEIGHTS_DIR or "
                "pass -p imagenet_weights /path/to/file"
            )
        label = f"[{arm}] "
        plateaus = [
            _rename(Precondition.plateau("late_gain", {"arm": a, "n_tiles": few}, plateau), f"plateau ({a})")
            for a in ("random", arm)
        ]
        fast = Compare(
            "epochs_to_common",
            a={"pair": arm, "arm": "random"},
            b={"pair": arm, "arm": arm},
            table="convergence",
            label=f"{label}epochs to {fraction:.0%} of the lower arm's best val mIoU: random minus pretrained > 0",
            effect=PRACTICAL_EPOCHS,
            effect_source=EPOCHS_SOURCE,
        )
        melt = Compare(
            "miou",
            a={"arm": arm, "season": "melt", "n_tiles": few},
            b={"arm": "random", "season": "melt", "n_tiles": few},
            label=f"{label}melt-scene mIoU: pretrained minus random > 0",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        smaller = Compare(
            "melt_gain_minus_abs_freeze_gain",
            a={"arm": arm},
            b=0.0,
            table="gains",
            label=f"{label}melt gain minus |freeze gain| > 0",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        pos = Compare(
            "max_class_gain",
            a={"arm": arm},
            b=0.0,
            table="gains",
            label=f"{label}some freeze class gains (largest class-wise IoU gain > 0)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        neg = Compare(
            "min_class_gain",
            a={"arm": arm},
            b=0.0,
            greater=False,
            table="gains",
            label=f"{label}some freeze class loses (smallest class-wise IoU gain < 0)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        same_budget = Precondition.same_budget(
            a={"arm": arm, "n_tiles": few},
            b={"arm": "random", "n_tiles": few},
            label=f"{arm} vs random at {few} tiles",
        )

        def floors(season: str, arm: str = arm) -> list[Precondition]:
            return [
                Precondition.above_floor(
                    "miou",
                    arm={"arm": a, "season": season, "n_tiles": few},
                    floor={"arm": "majority", "season": season, "n_tiles": few},
                    margin=FLOOR_MARGIN,
                    label=f"{a}, {season} scenes",
                )
                for a in (arm, "random")
            ]

        learned = Precondition.features_learned(
            "miou",
            pretrained={"arm": arm},
            random={"arm": "random"},
            table="probes",
            name=f"features learned ({arm})",
        )
        note = ARM_LABELS[arm]
        claims += [
            Claim(
                claim_id("faster_convergence", arm),
                CLAIMS["faster_convergence"],
                [fast],
                [learned, same_budget, *floors("all"), *plateaus],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
            Claim(
                claim_id("better_on_melt", arm),
                CLAIMS["better_on_melt"],
                [melt],
                [learned, same_budget, *floors("melt"), data_limited],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
            Claim(
                claim_id("freeze_smaller_mixed", arm),
                CLAIMS["freeze_smaller_mixed"],
                [smaller, pos, neg],
                [learned, same_budget, *floors("freeze"), data_limited],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
        ]
    return claims


def claims(cfg, runs: Runs) -> list[Claim]:
    """:func:`declare_claims` with what the run found (the arms that could not run)."""
    return declare_claims(cfg, **runs.context)


def headline(runs: Runs) -> dict[str, Any]:
    """Numbers for metrics.json; ``melt_miou_pretrained`` (the headline) is the judged pretrained arm's melt
    mIoU at the fewest tiles (NaN when no pretrained arm ran)."""
    seasons, weights = runs.tables["runs"], runs.tables["weights"]
    few, many = int(seasons["n_tiles"].min()), int(seasons["n_tiles"].max())
    evaluated = set(weights.arm[weights.status == "ok"])
    pre = next((a for a in PRETRAINED_ARMS if a in evaluated), None)
    out: dict[str, Any] = {"pretrained_arm": pre or "none", "few_tiles": few, "many_tiles": many}
    for (arm, n_tiles, season), g in seasons.groupby(["arm", "n_tiles", "season"]):
        out[f"{season}_miou_{arm}_{n_tiles}tiles"] = float(g["miou"].mean())
    conv = runs.tables["convergence"]
    for (pair, arm), g in conv.groupby(["pair", "arm"]):
        out[f"epochs_to_common_{arm}_vs_{pair}" if arm == "random" else f"epochs_to_common_{arm}"] = float(
            g["epochs_to_common"].mean()
        )
    at_few = seasons[seasons.n_tiles == few]
    for season in ("melt", "freeze"):
        sel = at_few[(at_few.arm == pre) & (at_few.season == season)] if pre else at_few.iloc[:0]
        out[f"{season}_miou_pretrained"] = float(sel["miou"].mean()) if len(sel) else float("nan")
    out["grid_seconds"] = float(sum(g["seconds"] for g in runs.grids))
    out["grid_tasks_computed"] = runs.computed
    out["grid_tasks_cached"] = sum(int(g["cached"]) for g in runs.grids)
    for arm in PRETRAINED_ARMS:
        if arm in evaluated:
            out[f"{arm}_weights_sha256"] = weights.set_index("arm").loc[arm, "sha256"]
    return out
