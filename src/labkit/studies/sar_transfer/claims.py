"""SAR sea-ice study, its claims: the paper's three claims (Karimzadeh and Pires de Lima, IGARSS 2023) for each
pretrained arm, judged at the fewest training tiles, paired over seeds, with the preconditions that make them
testable; and the headline numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from labkit.core.claims import Check, Claim, Compare, Precondition
from labkit.studies.base import Runs

from . import source_features
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

    Features learned, for every claim of a pretrained arm, judged on the encoder's **source task**
    (:mod:`.source_features`): the record its producer wrote in the weights' sidecar (the producing study's frozen
    probe against the same network at random init, paired over seeds) passed; table ``source_features``. An
    encoder that learned nothing on its own task gives its claims no footing; whether its features serve SAR is
    what the claims test, so the frozen SAR probe (table ``probes``) is a finding, not a gate. Weights without the
    record leave the arm's claims not evaluated (``unjudged_features``: ``{arm: reason}`` naming what to provide).
    ``unavailable``: ``{arm: reason}`` for arms that cannot run (e.g. missing weights).
    """
    unavailable = dict(unavailable or {})
    unjudged = dict(context.get("unjudged_features") or {})
    records = _records(context.get("weights_records"))
    tiles = sorted(set(cfg["tiles"]))
    few, many = tiles[0], tiles[-1]
    data_limited = _data_limited(few, many, cfg["data_limited_margin"])
    area = _distinct_area(few, many)
    claims = []
    for arm in PRETRAINED_ARMS:
        reason = _unavailable_reason(arm, cfg, unavailable) or unjudged.get(arm)
        compare = _comparisons(arm, few, cfg["convergence_fraction"])
        plateaus = [
            _rename(
                Precondition.plateau("late_gain", {"arm": a, "n_tiles": few}, cfg["plateau_gain"]), f"plateau ({a})"
            )
            for a in ("random", arm)
        ]
        rich_plateau = _rename(
            Precondition.plateau("late_gain", {"arm": "random", "n_tiles": many}, cfg["plateau_gain"]),
            "plateau (random, data-rich)",
            why=f"the data-rich control (random init on {many} tiles) trained to its plateau: the last fifth of its "
            f"epochs improved validation mIoU by less than {cfg['plateau_gain']:g} (else 'data-limited' is step-limited)",
        )
        shared = _shared_preconditions(arm, few, records.get(arm))
        preconditions = {
            "faster_convergence": [*shared, *_floors(arm, "all", few), *plateaus],
            "better_on_melt": [*shared, *_floors(arm, "melt", few), area, rich_plateau, data_limited],
            "freeze_smaller_mixed": [*shared, *_floors(arm, "freeze", few), area, rich_plateau, data_limited],
        }
        note = (context.get("descriptions") or {}).get(arm, ARM_LABELS[arm]) + f"; judged at {few} training tiles"
        claims += [
            Claim(claim_id(base, arm), text, compare[base], preconditions[base], unavailable=reason, note=note)
            for base, text in CLAIMS.items()
        ]
    return claims


MIN_AREA_GAIN = 2.0  # the data-rich tiles must come from at least twice the distinct area of the fewest


def _distinct_area(few: int, many: int) -> Precondition:
    """The data-rich tiles come from clearly more distinct area than the fewest (tiles are crops with replacement:
    from a small training area, 16 times the tiles can be the same pixels again)."""
    return Precondition(
        "distinct area",
        Check(
            "area_gain",
            {"n_tiles": many},
            ">=",
            MIN_AREA_GAIN,
            table="coverage",
            label=f"distinct pixels of the {many} data-rich tiles / those of the {few} fewest >= {MIN_AREA_GAIN:g}",
        ),
        why=f"the {many} data-rich tiles come from at least {MIN_AREA_GAIN:g} times the distinct training area of "
        f"the {few} fewest (table tile_area); else the training area is too small for the data-rich control",
    )


def _data_limited(few: int, many: int, margin: float) -> Precondition:
    """Random init with the most tiles beats itself with the fewest (the season claims' regime)."""
    return _rename(
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


def _unavailable_reason(arm: str, cfg, unavailable: Mapping[str, str]) -> str | None:
    """Why ``arm``'s claims cannot be judged (None when they can), with what to do."""
    reason = unavailable.get(arm)
    if reason is None and arm not in cfg["inits"]:
        reason = f"arm '{arm}' was not run (add it to inits)"
    return reason


def _comparisons(arm: str, few: int, fraction: float) -> dict[str, list[Compare]]:
    """Each claim's comparisons of ``arm`` against random init (or zero), at the fewest tiles."""
    label = f"[{arm}] "

    def gain(column: str, text: str, greater: bool = True) -> Compare:
        return Compare(
            column,
            a={"arm": arm},
            b=0.0,
            greater=greater,
            table="gains",
            label=label + text,
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )

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
    return {
        "faster_convergence": [fast],
        "better_on_melt": [melt],
        "freeze_smaller_mixed": [
            gain("melt_gain_minus_abs_freeze_gain", "melt gain minus |freeze gain| > 0"),
            gain("max_class_gain", "some freeze class gains (largest class-wise IoU gain > 0)"),
            gain("min_class_gain", "some freeze class loses (smallest class-wise IoU gain < 0)", greater=False),
        ],
    }


def _records(weights_records) -> dict[str, Mapping]:
    return {arm: r for arm, r in dict(weights_records or {}).items() if isinstance(r, Mapping)}


def features_learned(arm: str, record: Mapping | None = None) -> Precondition:
    """Features learned, on the source task: the producer's record (table ``source_features``, ``passed`` 1 or 0)
    passed. Its reason quotes the record's statement and interval and names the producer."""
    why = (
        f"the {arm} encoder learned features {source_features.describe(record)}"
        if record
        else f"the {arm} encoder learned features on its source task, as its producer recorded in the weights' "
        "sidecar ('features_learned': its frozen probe beats the same network at random init there)"
    )
    if record and not record.get("passed"):
        why += "; the encoder learned nothing its claims could rest on: use weights whose producer's record passed"
    return Precondition(
        f"features learned ({arm})",
        Check(
            "passed",
            {"arm": arm},
            ">=",
            1.0,
            table="source_features",
            label=f"[{arm}] the producer's source-task 'features learned' record passed (1) or failed (0)",
        ),
        why=why,
    )


def _shared_preconditions(arm: str, few: int, record: Mapping | None = None) -> list[Precondition]:
    """Features learned (on ``arm``'s source task, :func:`features_learned`) and the same budget, for every
    claim."""
    learned = features_learned(arm, record)
    same_budget = Precondition.same_budget(
        a={"arm": arm, "n_tiles": few},
        b={"arm": "random", "n_tiles": few},
        label=f"{arm} vs random at {few} tiles",
    )
    return [learned, same_budget]


def _floors(arm: str, season: str, few: int) -> list[Precondition]:
    """``arm`` and random init each above the majority-class floor on ``season``'s scenes (``all``: every scene)."""
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


def claims(cfg, runs: Runs) -> list[Claim]:
    """:func:`declare_claims` with what the run found (the arms that could not run)."""
    return declare_claims(cfg, **runs.context)


def headline(runs: Runs) -> dict[str, Any]:
    """Numbers for metrics.json; ``melt_miou_pretrained`` (the headline) is the judged pretrained arm's melt
    mIoU at the fewest tiles (NaN when no pretrained arm ran): the ImageNet arm when it ran, else the cross-sensor
    arm; ``headline_arm`` and ``headline_note`` name which."""
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
    descriptions = dict(runs.context.get("descriptions") or {})
    out["headline_arm"] = pre or "none"
    if pre == "imagenet":
        who = "the ImageNet-pretrained encoder (the paper's arm)"
    elif pre == "cross_sensor":
        why = "ImageNet weights absent" if "imagenet" in runs.unavailable else "the ImageNet arm was not run"
        who = f"the cross-sensor encoder ({why}): {descriptions.get(pre, pre)}"
    else:
        who = "no pretrained arm (none could run): NaN"
    out["headline_note"] = (
        f"mIoU (0-1) on the melt-season test scenes at the fewest training tiles of {who}; higher is better"
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
