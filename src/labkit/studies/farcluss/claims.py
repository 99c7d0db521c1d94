"""FARCLUSS claims: the paper's claims in the paper's order, each with the preconditions that make it testable and its
effect of interest, judged by :func:`labkit.core.claims.judge` on ``runs.tables``; and the headline metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from labkit.core.claims import Check, Claim, Compare, Precondition
from labkit.methods import semisup as ss
from labkit.studies.base import Runs

from .arms import ADD_STEPS, FLOOR_ARM, MAIN_METHODS
from .data import ALL_LABELS, StudyData, ablation_split, split_names

# Effects of interest (labkit.core.claims)
PAPER_GAIN = 0.03
#: The effect of interest as a share of the room labels leave in this regime (supervised-only at the fewest labels
#: vs all labels): a stated practical size. The paper's +3.0 mIoU over UniMatch at 1/16 (VOC, ResNet-50) is its
#: smallest reported gain; a quarter of the label gap is our reading of its order relative to the room there (the
#: VOC supervised-only gap is not restated here: check it against the paper's tables before relying on the share).
PAPER_GAIN_SHARE = 0.25
#: The smallest effect of interest when the regime's gap is tiny (then label-limited fails anyway).
MIN_GAIN = 0.005
PAPER_GAIN_SOURCE = (
    "a stated practical size: a quarter of this regime's label gap, read as the order of the paper's smallest "
    "reported gain (+3.0 mIoU over UniMatch at 1/16 labels on VOC with ResNet-50) relative to the room labels leave"
)
PRACTICAL_MIOU = 0.02
FLOOR_MARGIN = 0.01  # an arm a claim compares must beat the majority-class floor by this much mIoU
ABLATION_EFFECT = 0.01
ABLATION_SOURCE = "a stated practical size: 1 mIoU point (about the smallest step of the paper's ablation table)"
THRESHOLD_SOURCE = "a threshold claim: refuted when the interval lies wholly past the threshold"
#: Parameters of the paper's network, smp's DeepLabv3+ ResNet-101 for 21 classes (counted with random weights).
PAPER_STEP_PARAMS = 45_674_853
FULL = {"arm": "supervised", "split": ALL_LABELS}


def claims(cfg, runs: Runs) -> list[Claim]:
    """The claims of a run: :func:`declare_claims` with what the run knows (the data: is there a tail group; the
    regime runs: the label gap the paper's gain is scaled to)."""
    return declare_claims(cfg, **runs.context, gap=label_gap(cfg, runs.tables.get("regime")))


def label_gap(cfg, regime) -> float | None:
    """Mean mIoU of supervised-only with all labels minus at the smallest split, paired over the regime seeds (the
    room labels leave in this regime); None without both."""
    if regime is None or regime.empty or "miou" not in regime:
        return None
    sup = regime[regime.arm == "supervised"]
    full = sup[sup.split == ALL_LABELS].set_index("seed").miou
    few = sup[sup.split == split_names(cfg)[0]].set_index("seed").miou
    diff = (full - few).dropna()
    return float(diff.mean()) if len(diff) else None


def paper_effect(gap: float | None) -> tuple[float, str]:
    """The beats-baselines effect of interest: :data:`PAPER_GAIN_SHARE` of the regime's label gap (at least
    :data:`MIN_GAIN`), or the paper's +3.0 mIoU as it stands when the gap is unknown."""
    if gap is None or not np.isfinite(gap):
        return (
            PAPER_GAIN,
            "the paper's smallest reported gain (+3.0 mIoU over UniMatch at 1/16 labels on VOC with ResNet-50) as it stands (no regime gap measured)",
        )
    effect = max(PAPER_GAIN_SHARE * gap, MIN_GAIN)
    return effect, PAPER_GAIN_SOURCE + f" ({100 * gap:.2g} points here: {100 * effect:.2g} points)"


def declare_claims(
    cfg, unavailable: dict[str, str] | None = None, data: StudyData | None = None, gap: float | None = None
) -> list[Claim]:
    """The paper's four claims (the cost one in two parts), judged on the run's tables (``experiment.gather``).

    ``unavailable``: claim id -> a reason it cannot be run; ``data``: the loaded data (a claim about tail
    classes is unavailable when no class falls under the tail threshold); ``gap``: the regime's label gap
    (:func:`label_gap`), which scales the paper's gain into this regime (:func:`paper_effect`).
    """
    unavailable = dict(unavailable or {})
    return [
        _beats_baselines(cfg, unavailable, gap),
        _largest_gains_tail_and_boundaries(cfg, unavailable, data),
        _each_part_contributes(cfg, unavailable),
        _prototype_contrast_cheap(cfg, unavailable),
        _prototype_contrast_small_overhead(cfg, unavailable),
    ]


# ----------------------------------------------------------------------------- the preconditions they share


def _label_limited(cfg, split: str) -> Precondition:
    return Precondition.label_limited(
        "miou",
        full=dict(FULL),
        few={"arm": "supervised", "split": split},
        margin=float(cfg.label_limited_margin),
        table="regime" if split == split_names(cfg)[0] else "runs",  # the regime runs cover the smallest split
    )


def _same_budget(a: dict, b: dict, label: str) -> Precondition:
    pre = Precondition.same_budget(a=a, b=b, label=label)
    return replace(pre, name=f"same budget ({label})")


def _above_floor(arm: str, split: str) -> Precondition:
    return Precondition.above_floor(
        "miou",
        arm={"arm": arm, "split": split},
        floor={"arm": FLOOR_ARM, "split": split},
        margin=FLOOR_MARGIN,
        label=f"{arm} at {split}",
    )


def _plateau(cfg, arm: str, split: str) -> Precondition:
    pre = Precondition.plateau("late_gain", {"arm": arm, "split": split}, float(cfg.plateau_gain), table="plateau")
    return replace(
        pre,
        name=f"plateau ({arm} at {split})",
        why=f"{arm} at {split} trained to its plateau: the last fifth of its steps (warm-up included) raised the "
        f"teacher's held-out mIoU by less than {cfg.plateau_gain:g} in every seed (else a gain could be a "
        "difference in speed; raise iterations)",
    )


def _main_preconditions(cfg) -> list[Precondition]:
    """The arms the main claims compare have the same budget at every split (their budget does not depend on the
    split), are above the floor at the fewest labels (where an arm is nearest to it) and at their plateau there,
    and supervised-only is label-limited there."""
    few = split_names(cfg)[0]
    budgets = [_same_budget({"arm": "farcluss"}, {"arm": base}, f"farcluss vs {base}") for base in MAIN_METHODS[:2]]
    return [
        *budgets,
        *[_above_floor(arm, few) for arm in MAIN_METHODS],
        *[_plateau(cfg, arm, few) for arm in MAIN_METHODS],
        _label_limited(cfg, few),
    ]


# ----------------------------------------------------------------------------- the claims


def _beats_baselines(cfg, unavailable: dict[str, str], gap: float | None = None) -> Claim:
    splits = split_names(cfg)
    few, margin = splits[0], float(cfg.label_limited_margin)
    effect, source = paper_effect(gap)
    return Claim(
        id="beats_baselines_every_fraction",
        statement="FARCLUSS beats supervised-only and the hard-threshold (0.95) teacher-student in mIoU at every "
        "labelled fraction",
        compare=[
            Compare(
                "miou",
                a={"arm": "farcluss", "split": s},
                b={"arm": base, "split": s},
                label=f"mIoU at {s}: FARCLUSS > {base}",
                effect=effect,
                effect_source=source,
            )
            for s in splits
            for base in ("supervised", "fixmatch")
        ],
        preconditions=_main_preconditions(cfg),
        unavailable=unavailable.get("beats_baselines_every_fraction"),
        note=f"splits {', '.join(splits)}; the label-limited precondition: supervised with all labels beats "
        f"itself at {few} by more than {100 * margin:g} mIoU points",
    )


def _largest_gains_tail_and_boundaries(cfg, unavailable: dict[str, str], data: StudyData | None) -> Claim:
    tail_reason = unavailable.get("largest_gains_tail_and_boundaries")
    if tail_reason is None and data is not None and not data.tail_classes:
        tail_reason = (
            f"no class has under {100 * cfg.tail_max_fraction:g}% of the training pixels, so there is no "
            "tail group; raise tail_max_fraction to name one"
        )
    tail_parts = []
    for base in ("supervised", "fixmatch"):
        for hi, lo in (("tail", "head"), ("tail", "body"), ("boundary", "all")):
            tail_parts.append(
                Compare(
                    "gain",
                    a={"baseline": base, "part": hi},
                    b={"baseline": base, "part": lo},
                    table="gains",
                    label=f"gain over {base}: {hi} > {lo}",
                    effect=PRACTICAL_MIOU,
                    effect_source="a stated practical size: 2 mIoU points (the paper reports no effect size)",
                )
            )
    tail = f" ({', '.join(data.tail_classes)})" if data is not None and data.tail_classes else ""
    return Claim(
        id="largest_gains_tail_and_boundaries",
        statement=f"FARCLUSS's gains are largest on tail (minority) classes{tail} and on boundary pixels",
        compare=tail_parts,
        preconditions=[
            *_main_preconditions(cfg),
            Precondition(
                "tail resolvable",
                Compare(
                    "miou_tail",
                    a=dict(FULL),
                    b=float(cfg.tail_floor),
                    table="regime",
                    label=f"all-labels supervised tail mIoU > {cfg.tail_floor:g}",
                ),
                why=_tail_why(cfg, data),
            ),
        ],
        unavailable=tail_reason,
        note="gain = FARCLUSS minus the baseline, per seed averaged over the main splits; parts: head, body, "
        "tail class groups, boundary pixels (within 1 px of a class edge), all pixels",
    )


def _tail_why(cfg, data: StudyData | None) -> str:
    """What the tail-resolvable precondition asks, in the data's own terms: its tail classes by name and what would
    make them resolvable (the parameters to change)."""
    floor = f"tail mIoU above {cfg.tail_floor:g}"
    if data is None or not data.tail_classes:
        return f"with every label the model segments the tail classes ({floor}); otherwise no method could gain there"
    names = ", ".join(data.tail_classes)
    share = ", ".join(f"{100 * data.frequencies[data.class_names.index(c)]:.2g}%" for c in data.tail_classes)
    why = (
        f"with every label the model segments the tail classes {names} ({share} of the training pixels; {floor}); "
        "otherwise no method could gain there"
    )
    if data.source == "simulated":
        r = float(cfg.scene_resolution)  # the smallest simulated object is 1.6 x 3 ground units (labkit.data.scenes)
        return why + (
            f". On these simulated scenes ({r:g} px per ground unit) the smallest objects are about {1.6 * r:.2g} x "
            f"{3 * r:.2g} px, a few cells of a ResNet encoder's first (stride-2) stage, and with every label the tail "
            "is still missed in some seeds: raise scene_resolution (with scene_size and image_size), iterations or "
            "regime_seeds, or run the paper preset on real data"
        )
    return why + (
        f". At image_size {cfg.image_size} and encoder_depth {cfg.encoder_depth} they may be too small or too few to "
        "learn: raise image_size (larger crops of your images), iterations, or n_train_images"
    )


def _each_part_contributes(cfg, unavailable: dict[str, str]) -> Claim:
    split = ablation_split(cfg)
    parts = [
        Compare(
            "miou",
            a={"arm": "farcluss", "split": split},
            b={"arm": f"without {p}", "split": split},
            label=f"removing {p} lowers mIoU",
            effect=ABLATION_EFFECT,
            effect_source=ABLATION_SOURCE,
        )
        for p in ss.PARTS
    ]
    if cfg.ablation == "all":
        parts += [
            Compare(
                "miou",
                a={"arm": with_it, "split": split},
                b={"arm": before, "split": split},
                label=f"adding {p} raises mIoU ({with_it} > {before})",
                effect=ABLATION_EFFECT,
                effect_source=ABLATION_SOURCE,
            )
            for p, with_it, before in ADD_STEPS
        ]
    abl_reason = unavailable.get("each_part_contributes")
    if abl_reason is None and cfg.ablation == "none":
        abl_reason = "ablation switched off (ablation: none); run with ablation: all or remove_only"
    return Claim(
        id="each_part_contributes",
        statement=(
            "Each part contributes: removing any one of the four parts lowers mIoU, and adding them one by "
            "one to the hard-threshold baseline raises it at every step"
            if cfg.ablation == "all"
            else "Each part contributes: removing any one of the four parts lowers mIoU"
        ),
        compare=parts,
        preconditions=[
            _same_budget({"split": split}, {"arm": "farcluss", "split": split}, f"every arm at {split} vs farcluss"),
            *[_above_floor(arm, split) for arm in dict.fromkeys(x["arm"] for c in parts for x in (c.a, c.b))],
            _label_limited(cfg, split),
        ],
        unavailable=abl_reason,
        note=f"split {split}; each distinct configuration runs once: adding the prototype last is removing it, "
        "one comparison" + ("" if cfg.ablation == "all" else "; additions not run (ablation: remove_only)"),
    )


def _prototype_contrast_cheap(cfg, unavailable: dict[str, str]) -> Claim:
    cost_unavailable = unavailable.get("prototype_contrast_cheap")
    return Claim(
        id="prototype_contrast_cheap",
        statement="Prototype contrast costs less time than pairwise pixel contrast on the same pixels; it is linear "
        "in the number of pixels, pairwise quadratic",
        compare=[
            Compare(
                "extra_ms",
                a={"contrast": "prototype"},
                b={"contrast": "pairwise"},
                greater=False,
                table="cost_rounds",
                pair_on=("round",),
                label="prototype's extra ms < pairwise's",
                effect=1.0,
                effect_source="a stated practical size: 1 ms per training step",
            ),
            Compare(
                "memory_exponent",
                a={"contrast": "prototype"},
                b=1.25,
                greater=False,
                table="scaling",
                pair_on=("repeat",),
                label="prototype memory grows at most linearly (log-log slope < 1.25)",
                effect=0.0,
                effect_source=THRESHOLD_SOURCE,
            ),
            Compare(
                "memory_exponent",
                a={"contrast": "pairwise"},
                b=1.75,
                table="scaling",
                pair_on=("repeat",),
                label="pairwise memory grows quadratically (log-log slope > 1.75)",
                effect=0.0,
                effect_source=THRESHOLD_SOURCE,
            ),
            Compare(
                "time_exponent",
                a={"contrast": "pairwise"},
                b={"contrast": "prototype"},
                margin=0.5,
                table="scaling",
                pair_on=("repeat",),
                label="pairwise time grows faster (log-log slope more than 0.5 above prototype's)",
                effect=1.0,
                effect_source="the methods' complexity: pairwise quadratic, prototype linear in pixels (slopes 2 vs 1)",
            ),
        ],
        unavailable=cost_unavailable,
        note="paired over interleaved measuring rounds (step costs) and repeats (scaling)",
    )


def _prototype_contrast_small_overhead(cfg, unavailable: dict[str, str]) -> Claim:
    tol = float(cfg.cost_tolerance)
    cost_unavailable = unavailable.get("prototype_contrast_cheap")
    # The contrast's cost is set by the pixels it sees, the step's by the backbone: its share of a small model's step
    # says nothing about the paper's, so the overhead is judged only on a step of about the paper's model size.
    return Claim(
        id="prototype_contrast_small_overhead",
        statement="Prototype contrast adds little to a training step",
        compare=[
            Compare(
                "extra_pct",
                a={"contrast": "prototype"},
                b=tol,
                greater=False,
                table="cost_rounds",
                pair_on=("round",),
                label=f"prototype's extra time < {tol:g}% of the step without contrast",
                effect=0.0,
                effect_source=THRESHOLD_SOURCE,
            )
        ],
        preconditions=[
            Precondition(
                "paper-sized step",
                Check("step_model_params", {}, ">=", PAPER_STEP_PARAMS / 2, table="cost_regime"),
                why=f"the measured step's network has at least half the parameters of the paper's DeepLabv3+ "
                f"ResNet-101 ({PAPER_STEP_PARAMS / 1e6:.1f} M); on a smaller network the same contrast is a "
                "larger share of a cheaper step: run the paper preset (arch deeplabv3plus, encoder resnet101)",
            )
        ],
        unavailable=cost_unavailable,
        note="paired over interleaved measuring rounds; the tolerance is the cost_tolerance parameter",
    )


# ----------------------------------------------------------------------------- headline


def headline(runs: Runs) -> dict:
    """The report's metrics: each arm's mean mIoU per split, FARCLUSS's gain over supervised-only at the fewest
    labels (the headline), the label-limited gap, the contrasts' median extra time and the training's seconds."""
    trained, regime = runs.tables["trained"], runs.tables["regime"]
    out = {"seconds_training": round(runs.examples.get("training_seconds", runs.seconds), 1)}
    if trained.empty:  # no arm trained (the encoder's weights missing): the reason, no mIoU
        out["arms_not_evaluated"] = next(iter(runs.unavailable.values()), "no arm was trained")
        out["farcluss_gain_over_supervised_lowest_fraction"] = None
        return {**out, **_cost_headline(runs)}
    for (arm, split), grp in trained.groupby(["arm", "split"]):
        out[f"miou_{arm}_{split}".replace(" ", "_").replace("+", "plus")] = round(float(grp.miou.mean()), 4)
    first = next(s for s in dict.fromkeys(regime.split) if s != ALL_LABELS)  # the regime runs' smallest split
    far = trained[(trained.arm == "farcluss") & (trained.split == first)].set_index("seed").miou
    sup = trained[(trained.arm == "supervised") & (trained.split == first)].set_index("seed").miou
    out["farcluss_gain_over_supervised_lowest_fraction"] = round(float((far - sup).mean()), 4)
    full = trained[(trained.arm == "supervised") & (trained.split == ALL_LABELS)].set_index("seed").miou
    out["label_limited_gap"] = round(float((full - sup).mean()), 4)
    return {**out, **_cost_headline(runs)}


def _cost_headline(runs: Runs) -> dict:
    out = {}
    if len(runs.tables["cost_rounds"]):
        r = runs.tables["cost_rounds"].groupby("contrast")["extra_pct"].median()
        out["prototype_extra_pct_median"] = round(float(r.get("prototype", np.nan)), 2)
        out["pairwise_extra_pct_median"] = round(float(r.get("pairwise", np.nan)), 2)
    return out
