"""Study 3's claims in the paper's order, each with its preconditions and effect of interest, and the rule of
precondition "trained" (also what decides which pretrained encoders count)."""

from __future__ import annotations

import numpy as np

from labkit.core.claims import Claim, Compare, Precondition
from labkit.studies.base import Runs

from .data import INIT_LABELS, VIT_INITS
from .experiment import FLOOR_MARGIN, REGIME_AT_FEWEST, trained_precondition

# Effects of interest (labkit.core.claims): the paper reports no effect size for these comparisons.
PRACTICAL_AP = 0.03
PRACTICAL_SOURCE = "a stated practical size: 3 points of defect average precision (the paper reports no effect size)"


def declare_claims(cfg, unavailable: dict | None = None, **context) -> list[Claim]:
    """The paper's claims in its order, each with its preconditions; ``unavailable``: ``{init: reason}`` for
    arms that cannot be evaluated (weights missing, did not train): claims resting on them are not evaluated
    with that reason. With no context every arm is assumed available.

    Preconditions: "label-limited" (claims 1, 4); "trained" against the best learner-free predictor and
    "features learned" (the pretrained encoder's frozen probe beats the random-init ViT's, paired over seeds)
    for every pretrained encoder a claim rests on (claims 1-3); "above the floor" for every arm the claim says
    scores well (:data:`FLOOR_MARGIN`; a baseline expected to be weak may sit at the floor); and "same budget"
    for every pair of compared trained arms (claim 3 also its two pretrainings)."""
    unavailable = dict(unavailable or {})
    for init in VIT_INITS:
        if init not in cfg.inits:
            unavailable.setdefault(init, f"'{init}' is not in inits at this run (-p inits ...)")
    arms = _Arms(cfg, unavailable)
    return [
        _label_efficiency(arms, "mae"),
        _label_efficiency(arms, "simclr"),
        _probe_vs_finetune(arms),
        _in_domain(arms),
        _foundation_model(arms),
    ]


def claims(cfg, runs: Runs) -> list[Claim]:
    """The claims of this run: :func:`declare_claims` with the arms it could not evaluate."""
    return declare_claims(cfg, **runs.context)


class _Arms:
    """What every claim reads: the arms by init, protocol and label count, the claims' label counts (``lo``, ``hi``),
    the reasons arms are unavailable, and each precondition built for a given arm."""

    def __init__(self, cfg, unavailable: dict):
        self.cfg, self.unavailable = cfg, unavailable
        self.lo, self.hi = min(cfg.label_counts), max(cfg.label_counts)

    @staticmethod
    def arm(init, n, protocol="full"):
        return {"init": init, "protocol": protocol, "n_labels": n}

    def blocked(self, *inits):
        reasons = [f"{i}: {self.unavailable[i]}" for i in inits if i in self.unavailable]
        return "; ".join(reasons) or None

    def label_limited(self):
        return Precondition.label_limited(
            "defect_ap",
            full=self.arm("scratch", self.hi),
            few=self.arm("scratch", self.lo),
            margin=self.cfg.label_limited_margin,
            table="regime",
        )

    def trained(self, init):
        return trained_precondition(self.cfg, init)

    def learned(self, init):
        return Precondition.features_learned(
            "defect_ap",
            pretrained=self.arm(init, self.hi, "frozen"),
            random=self.arm("scratch", self.hi, "frozen"),
            name=f"features learned ({init})",
        )

    def above(self, init, n, protocol="full"):
        """Above the floor, paired over seeds: at the fewest labels over the regime seeds for the inits the
        regime holds there with the floor (:data:`experiment.REGIME_AT_FEWEST`: which 4 images a seed draws decides
        a 4-label run), else over the claim seeds."""
        regime = n == self.lo and init in REGIME_AT_FEWEST and protocol == "full"
        return Precondition.above_floor(
            "defect_ap",
            arm=self.arm(init, n, protocol),
            floor={"init": "all_good", "protocol": "-", "n_labels": n},
            margin=FLOOR_MARGIN,
            table="regime" if regime else "runs",
            label=f"{init} {protocol} at {n} labels" + (", regime seeds" if regime else ""),
        )

    @staticmethod
    def same_budget(a, b, stage="finetune"):
        a_where, b_where = {"stage": stage, **a}, {"stage": stage, **b}
        what = (
            f"{a['init']} vs {b['init']} pretraining"
            if stage == "pretrain"
            else f"{a['init']} vs {b['init']}, {a['protocol']} at {a['n_labels']} labels"
        )
        return Precondition.same_budget(a=a_where, b=b_where, label=what)


def _label_efficiency(arms: _Arms, ssl: str) -> Claim:
    """Claim 1 for one pretext task: pretrained beats scratch at the fewest labels, the gap narrows."""
    return Claim(
        id=f"C1_label_efficiency_{ssl}",
        statement=(
            "At small label counts, self-supervised pretraining then fine-tuning beats training from "
            f"scratch on the same labels; the gap narrows as labels grow ({INIT_LABELS[ssl]})."
        ),
        compare=[
            # over the regime seeds, whose runs of both arms exist: at the fewest labels a run is decided by which
            # images its seed draws, so the claim seeds alone say little there (as for "above the floor")
            Compare(
                "defect_ap",
                a=arms.arm(ssl, arms.lo),
                b=arms.arm("scratch", arms.lo),
                table="regime",
                label=f"defect AP at {arms.lo} labels, regime seeds: {ssl} > scratch",
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            ),
            Compare(
                "gap_ap",
                a={"init": ssl, "n_labels": arms.lo},
                b={"init": ssl, "n_labels": arms.hi},
                table="gaps",
                label=f"defect-AP gap over scratch: at {arms.lo} labels > at {arms.hi} labels",
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            ),
        ],
        preconditions=[
            arms.label_limited(),
            arms.trained(ssl),
            arms.learned(ssl),
            arms.above(ssl, arms.lo),
            arms.above(ssl, arms.hi),
            arms.above("scratch", arms.hi),
            arms.same_budget(arms.arm(ssl, arms.lo), arms.arm("scratch", arms.lo)),
            arms.same_budget(arms.arm(ssl, arms.hi), arms.arm("scratch", arms.hi)),
        ],
        unavailable=arms.blocked(ssl, "scratch"),
        note=(
            f"full fine-tuning (every parameter) for {arms.cfg.finetune_steps} steps; paired over seeds (at the "
            f"fewest labels over the regime seeds)"
        ),
    )


def _probe_vs_finetune(arms: _Arms) -> Claim:
    """Claim 2: SimCLR's frozen probe beats MAE's; MAE gains more from fine-tuning."""
    return Claim(
        id="C2_probe_vs_finetune",
        statement=(
            "Masked-image-modelling features are weak under frozen probes but strong after fine-tuning, "
            "while contrastive features do well under probes too."
        ),
        compare=[
            Compare(
                "defect_ap",
                a=arms.arm("simclr", arms.hi, "frozen"),
                b=arms.arm("mae", arms.hi, "frozen"),
                label=f"frozen probe ({arms.cfg.seg_head} decoder), defect AP at {arms.hi} labels: SimCLR > MAE",
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            ),
            Compare(
                "gain_ap",
                a={"init": "mae"},
                b={"init": "simclr"},
                table="gains",
                label=(
                    f"gain of full fine-tuning over the frozen probe (one {arms.cfg.seg_head} decoder) at "
                    f"{arms.hi} labels: MAE > SimCLR"
                ),
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            ),
        ],
        preconditions=[
            arms.trained("mae"),
            arms.trained("simclr"),
            arms.learned("mae"),
            arms.learned("simclr"),
            arms.above("simclr", arms.hi, "frozen"),
            arms.above("mae", arms.hi),
            arms.above("simclr", arms.hi),
            arms.same_budget(arms.arm("simclr", arms.hi, "frozen"), arms.arm("mae", arms.hi, "frozen")),
            arms.same_budget(arms.arm("mae", arms.hi), arms.arm("simclr", arms.hi)),
        ],
        unavailable=arms.blocked("mae", "simclr", "scratch"),
        note=(
            f"segmentation (defect AP) rather than image classification: one fine-tune gives both; the frozen and "
            f"the fine-tuned arm train the same {arms.cfg.seg_head} decoder (seg_head) on the same augmented "
            "batches, so the gain isolates fine-tuning the encoder"
        ),
    )


def _in_domain(arms: _Arms) -> Claim:
    """Claim 3: in-domain pretraining beats pretraining on unrelated photos."""
    return Claim(
        id="C3_in_domain",
        statement="Pretraining on in-domain unlabeled images beats pretraining on unrelated images of the same count.",
        compare=[
            Compare(
                "defect_ap",
                a=arms.arm("mae", arms.lo),
                b=arms.arm("mae_unrelated", arms.lo),
                label=f"defect AP at {arms.lo} labels: MAE in-domain > MAE on unrelated photos",
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            )
        ],
        preconditions=[
            arms.trained("mae"),
            arms.trained("mae_unrelated"),
            arms.learned("mae"),
            arms.learned("mae_unrelated"),
            arms.above("mae", arms.lo),
            arms.same_budget({"init": "mae"}, {"init": "mae_unrelated"}, stage="pretrain"),
            arms.same_budget(arms.arm("mae", arms.lo), arms.arm("mae_unrelated", arms.lo)),
        ],
        unavailable=arms.blocked("mae", "mae_unrelated", "scratch"),
        note="both encoders fine-tuned on inspection images standardised with the inspection set's statistics",
    )


def _foundation_model(arms: _Arms) -> Claim:
    """Claim 4: DINOv2 beats scratch at the fewest labels."""
    return Claim(
        id="C4_foundation_model",
        statement="A general-purpose foundation model (DINOv2) fine-tuned on few labels beats training from scratch.",
        compare=[
            Compare(
                "defect_ap",
                a=arms.arm("dinov2", arms.lo),
                b=arms.arm("scratch", arms.lo),
                label=f"defect AP at {arms.lo} labels: DINOv2 > scratch",
                effect=PRACTICAL_AP,
                effect_source=PRACTICAL_SOURCE,
            )
        ],
        preconditions=[
            arms.label_limited(),
            arms.above("dinov2", arms.lo),
            arms.same_budget(arms.arm("dinov2", arms.lo), arms.arm("scratch", arms.lo)),
        ],
        unavailable=arms.blocked("dinov2", "scratch"),
    )


def headline(runs: Runs) -> dict:
    """The headline metrics: each init x protocol x label count's mean defect AP, F1, image AUROC and mIoU, MAE's and
    scratch's defect AP with the fewest labels (the fewest that ran: the floor runs at every label count), and
    PatchCore's AUROCs and AUPRO per init."""
    runs_table, anomaly = runs.tables["runs"], runs.tables.get("anomaly_detection")
    lo = runs_table["n_labels"].min()
    out = {}
    for (init, protocol, n), g in runs_table.groupby(["init", "protocol", "n_labels"]):
        for metric in ("defect_ap", "defect_f1", "image_auroc", "miou"):
            out[f"{metric}/{init}/{protocol}/{n}"] = float(g[metric].mean())
    full = runs_table[(runs_table["n_labels"] == lo) & (runs_table["protocol"] == "full")]
    small = full.groupby("init")["defect_ap"].mean()
    out["defect_ap_few_labels_mae"] = float(small.get("mae", np.nan))
    out["defect_ap_few_labels_scratch"] = float(small.get("scratch", np.nan))
    if anomaly is not None:
        for _, r in anomaly.iterrows():
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                out[f"patchcore_{metric}/{r['init']}"] = float(r[metric])
    return out
