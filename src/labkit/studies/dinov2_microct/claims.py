"""The paper's claims for DINOv2, in the paper's order, then the same tests on labkit's stand-in ViT (an analogue),
each with its preconditions and effect of interest, declared as data (:mod:`labkit.core.claims`) and judged by the
kit's one judge on the runs' tables; and the headline metrics."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.claims import Check, Claim, Compare, Precondition
from labkit.methods.microct_standin import LEARNER_FREE_PREDICTOR
from labkit.studies.base import Runs
from labkit.studies.dinov2_microct.backbones import STANDIN_ARCH
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS
from labkit.studies.dinov2_microct.experiment import (
    BEST_BASELINE,
    BEST_CLASSICAL,
    TRAINED_RATIO,
)
from labkit.studies.dinov2_microct.probes import HISTOGRAM
from labkit.studies.dinov2_microct.tasks import ORACLE

CLASSICAL = ("multi-Otsu", "K-means", "fuzzy C-means", "random forest (filter bank)")
# Claim thresholds (stated in each claim's evidence)
NEAR_PERFECT_ACCURACY = 0.95
CLUSTER_SILHOUETTE = 0.25
LORA_LIFT = 0.05
# Effects of interest (labkit.core.claims): the smallest difference that matters, from the paper where it says
PRACTICAL_MIOU = 0.02  # 2 mIoU points: where the paper gives no number for a comparison
PAPER_LORA_LIFT = {"linear": 0.81 - 0.67, "cnn": 0.82 - 0.75}  # the paper's frozen -> LoRA lifts
PAPER_LORA_OVER_UNET = 0.81 - 0.77  # the paper's LoRA linear head vs its UNet
THRESHOLD_SOURCE = "a threshold claim: refuted when the interval lies wholly below the threshold"
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper gives no number for this comparison)"


STATEMENTS = {
    "c1_knn_rock_classification": "Frozen features classify rock types almost perfectly with a kNN probe "
    "(k in the grid) and t-SNE of the class tokens shows one cluster per rock.",
    "c2_linear_head_beats_classical": "For phase segmentation, a linear head on frozen patch tokens beats "
    "multi-Otsu, K-means, fuzzy C-means and a random forest on filter-bank "
    "features (held-out rock {test_rock}, mean IoU).",
    "c3_lora_lifts_heads": f"LoRA fine-tuning lifts the frozen heads a lot (by at least {LORA_LIFT} mean IoU; "
    "paper: linear 0.67 -> 0.81, CNN 0.75 -> 0.82).",
    "c4_lora_beats_unet": "With LoRA the ViT beats a UNet trained from scratch, with fewer trainable parameters.",
    "c4b_lora_beats_resnet_lora": "With LoRA the ViT beats a pretrained ResNet with LoRA.",
    "c5_holds_out_of_distribution": "These hold out of distribution: trained on {train_rocks} imaged by "
    "{train_scanners}, the ViT's best method (chosen in distribution) still beats the UNet and every "
    "classical pipeline on another rock ({test_rock}) and on another scanner ({test_scanner}).",
}


def data_split(cfg, split: dict | None = None) -> dict:
    """The rocks and scanners the segmenters train and are judged on: the manifest's split for real volumes
    (``split``, from the run), else the parameters; with ``source`` saying where a user changes them."""
    if split:
        return {
            **split,
            "source": "the data's split (train_rocks, train_scanners: the manifest's splits, or splits.yaml in a "
            "Digital Rocks Portal data_root)",
        }
    return {
        "train_rocks": list(cfg.seg_train_rocks),
        "test_rock": cfg.seg_test_rock,
        "train_scanners": list(cfg.seg_train_scanners),
        "test_scanner": cfg.seg_test_scanner,
        "source": "parameters seg_train_rocks and seg_train_scanners",
    }


def _names(names) -> str:
    names = [str(n) for n in ([names] if isinstance(names, str) else names)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def statement(cid: str, split: dict) -> str:
    """A claim's statement with the data's rocks and scanners filled in."""
    return STATEMENTS[cid].format(**{k: _names(v) for k, v in split.items() if k != "source"})


def needs_two(split: dict) -> str | None:
    """Why claim 5 cannot be judged on this data (it is about segmenters trained on two rocks and two scanners,
    the paper's design), or None."""
    few = [
        f"one training {what} ({_names(split[key])})"
        for key, what in (("train_rocks", "rock"), ("train_scanners", "scanner"))
        if len(split[key]) < 2
    ]
    if not few:
        return None
    return (
        f"not evaluated: the data give {' and '.join(few)}; the claim is about segmenters trained on two rocks and "
        f"two scanners and judged on another of each; list a second in {split['source']}"
    )


FROZEN_OF = {"linear": "linear head (frozen)", "cnn": "CNN head (frozen)"}
DEFAULT_CHOICE = "linear head (frozen)"
# The stand-in "features learned" precondition: its frozen linear head against the same architecture's at random
# init, on the held-out rock (the random row is the stand-in's architecture only with vit_arch microct_standin)
FEATURES_LEARNED_METHOD = "linear head (frozen)"
TRAINED_HEADS = tuple(FROZEN_OF.values())  # frozen rows with a training budget (kNN segmentation has none)


def is_trained_arm(row) -> bool:
    """Whether a segmentation row is a gradient-trained arm, whose record carries its ``budget``: the frozen
    linear and CNN heads, every LoRA row and the UNet (not the classical pipelines, the random forest, kNN
    segmentation or the per-token oracle)."""
    return row["kind"] in ("LoRA", "from scratch") or (row["kind"] == "frozen" and row["method"] in TRAINED_HEADS)


def judged_ks(cfg, train_slices_per_rock: int | None = None) -> list[int]:
    """The k of the kNN grid that a claim is judged on: those below the training slices per rock (a
    larger k must take most neighbours from other rocks)."""
    if train_slices_per_rock is None:
        train_slices_per_rock = (cfg.samples_per_rock - 1) * cfg.slices_per_sample * len(cfg.scanners)
    return [int(k) for k in cfg.knn_ks if k < train_slices_per_rock]


def _seg(method: str, arm: str, split: str = "ood_rock") -> dict:
    return {"method": method, "arm": arm, "split": split}


def _resolvable(kind: str, split: str, baseline: str, margin: float = 0.0) -> Precondition:
    base = (
        _seg(baseline, "classical" if baseline == BEST_CLASSICAL else "baseline", split)
        if baseline in (BEST_CLASSICAL, BEST_BASELINE)
        else _seg(baseline, kind, split)
    )
    return Precondition(
        f"resolvable ({split})",
        Compare("miou", a=_seg(ORACLE, kind, split), b=base, margin=margin, table="segmentation"),
        why=f"the per-token oracle of this token grid (per slice, the token scores that best fit the true mask "
        f"through the heads' own bilinear read-out) scores above {baseline}{f' + {margin:g}' if margin else ''} on {split}: "
        "the grid allows a per-token head to win",
    )


def analogue_preconditions(kind: str, ks: list[int] | None = None) -> list[Precondition]:
    """What an analogue claim (the stand-in in place of DINOv2) rests on: the stand-in *trained* (its held-out
    loss below :data:`TRAINED_RATIO` of the better learner-free predictor's, on the same held-out crops and masks)
    and its *features learned* on what the claim measures, paired over seeds against the same architecture at
    random init: with ``ks`` (claim 1, rock classification) its class-token kNN at the smallest judged k, else
    (the segmentation claims) its frozen linear head on the held-out rock."""
    trained = [
        Precondition.trained(
            "final_loss",
            {"arm": kind},
            TRAINED_RATIO,
            learner_free="learner_free_loss",
            why=f"the stand-in's held-out MAE loss is below {TRAINED_RATIO:g} x the loss of {LEARNER_FREE_PREDICTOR}, "
            "on the same held-out crops and masks",
        ),
    ]
    if ks:
        knn = {"probe": "knn", "feature": "cls", "k": int(min(ks))}
        return trained + [
            Precondition.features_learned(
                "accuracy",
                pretrained={"arm": kind, **knn},
                random={"arm": "random", **knn},
                table="classification",
                name=f"features learned (rock classification, kNN k={int(min(ks))})",
            )
        ]
    return trained + [
        Precondition.features_learned(
            "miou",
            pretrained=_seg(FEATURES_LEARNED_METHOD, kind),
            random=_seg(FEATURES_LEARNED_METHOD, "random"),
            table="segmentation",
            name="features learned (held-out-rock segmentation)",
        )
    ]


def no_random_control(cfg) -> str | None:
    """Why the analogue claims cannot be judged (their "features learned" control is missing), or None."""
    if "random" not in cfg.backbones:
        return (
            "not evaluated: the 'features learned' control (a random-init ViT of the stand-in's architecture) was "
            "not run; add random to parameter backbones (with vit_arch microct_standin)"
        )
    if cfg.vit_arch != STANDIN_ARCH:
        return (
            f"not evaluated: the 'features learned' control must be the stand-in's architecture, but the random row "
            f"is {cfg.vit_arch!r}; set parameter vit_arch to {STANDIN_ARCH}"
        )
    return None


@dataclass(frozen=True)
class _Vit:
    """What one ViT kind's claims read: the LoRA heads run, the LoRA head and the best method chosen on the
    in-distribution split, and why LoRA cannot be judged (None when it can)."""

    kind: str
    lora_heads: list[str]
    lora_choice: str
    best: str
    no_lora: str | None


def _vit(cfg, kind: str, pick: dict[str, str], unavailable: dict[str, str]) -> _Vit:
    lora_heads = list(cfg.lora_heads)
    no_lora = unavailable.get(f"lora:{kind}") or (
        None
        if kind in cfg.lora_backbones and lora_heads
        else "not evaluated: LoRA was not run for this backbone in this preset; add it to parameter lora_backbones "
        "(and a head to lora_heads), or run the paper preset"
    )
    return _Vit(
        kind,
        lora_heads,
        pick.get("lora", f"{lora_heads[0]} head + LoRA" if lora_heads else "linear head + LoRA"),
        pick.get("best", DEFAULT_CHOICE),
        no_lora,
    )


# Each claim below: (id, comparisons, preconditions, why it cannot be judged or None, note)


C1 = "c1_knn_rock_classification"


def _knn_classification(v: _Vit, ks: list[int], unavailable: dict[str, str]) -> tuple:
    """1. kNN classification near perfect at every judged k, and one t-SNE cluster per rock."""
    c1 = [
        Compare(
            "accuracy",
            a={"arm": v.kind, "probe": "knn", "feature": "cls", "k": k},
            b=NEAR_PERFECT_ACCURACY,
            table="classification",
            label=f"kNN accuracy (k={k}) > {NEAR_PERFECT_ACCURACY}",
            effect=0.0,
            effect_source=THRESHOLD_SOURCE,
        )
        for k in ks
    ]
    c1.append(
        Compare(
            "tsne_silhouette",
            a={"arm": v.kind},
            b=CLUSTER_SILHOUETTE,
            table="embeddings",
            label=f"t-SNE silhouette of the rocks > {CLUSTER_SILHOUETTE}",
            effect=0.0,
            effect_source=THRESHOLD_SOURCE,
        )
    )
    why_not = (
        None if ks else "not evaluated: no k of parameter knn_ks is below the training slices per rock; add a smaller k"
    ) or unavailable.get("tsne")
    floor = [
        Precondition(
            f"grey levels alone fall short (k={k})",
            Check(
                "accuracy",
                {"arm": HISTOGRAM, "probe": "knn", "feature": "histogram", "k": k},
                "<",
                NEAR_PERFECT_ACCURACY,
                table="classification",
                label=f"kNN accuracy of the {HISTOGRAM} (k={k}) < {NEAR_PERFECT_ACCURACY}",
            ),
            why="the floor row: a kNN on each slice's grey-level histogram does not already classify the rocks "
            "near perfectly, so the claim tests what the features add (rocks told apart by their grey levels alone "
            "would pass it whatever the features)",
        )
        for k in ks
    ]
    note = (
        "judged at k = " + ", ".join(map(str, ks)) + " (below the training slices per rock); floor row: the "
        f"{HISTOGRAM} kNN"
    )
    return C1, c1, floor, why_not, note


def _linear_head_beats_classical(v: _Vit) -> tuple:
    """2. The linear head vs every classical pipeline, third rock."""
    compare = [
        Compare(
            "miou",
            a=_seg("linear head (frozen)", v.kind),
            b=_seg(c, "classical"),
            table="segmentation",
            label=f"linear head > {c} (ood_rock)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        for c in CLASSICAL
    ]
    return "c2_linear_head_beats_classical", compare, [_resolvable(v.kind, "ood_rock", BEST_CLASSICAL)], None, ""


def _lora_lifts_heads(v: _Vit) -> tuple:
    """3. LoRA lifts each frozen head by at least LORA_LIFT, at the same budget."""
    heads = v.lora_heads or ["linear"]
    compare = [
        Compare(
            "miou",
            a=_seg(f"{h} head + LoRA", v.kind),
            b=_seg(FROZEN_OF[h], v.kind),
            margin=LORA_LIFT,
            table="segmentation",
            label=f"{h} head: LoRA - frozen > {LORA_LIFT} (ood_rock)",
            effect=PAPER_LORA_LIFT.get(h, PAPER_LORA_LIFT["linear"]),
            effect_source=f"the paper's lift of the {h if h in PAPER_LORA_LIFT else 'linear'} head with LoRA "
            f"(+{PAPER_LORA_LIFT.get(h, PAPER_LORA_LIFT['linear']):.2f} mIoU)",
        )
        for h in heads
    ]
    preconditions = [_resolvable(v.kind, "ood_rock", FROZEN_OF[heads[0]], LORA_LIFT)] + [
        Precondition.same_budget(
            a={"method": f"{h} head + LoRA", "arm": v.kind},
            b={"method": FROZEN_OF[h], "arm": v.kind},
            label=f"the {h} head with LoRA and the frozen {h} head",
        )
        for h in heads
    ]
    note = (
        "the lift is LoRA's only if the head trained with LoRA and the frozen head it is compared with had "
        "the same optimiser steps, batch size and schedule"
    )
    return "c3_lora_lifts_heads", compare, preconditions, v.no_lora, note


def _lora_beats_unet(v: _Vit) -> tuple:
    """4. LoRA (head chosen in distribution) vs the UNet, with fewer trainable parameters."""
    choice = v.lora_choice
    compare = [
        Compare(
            "miou",
            a=_seg(choice, v.kind),
            b=_seg("UNet from scratch", "unet"),
            table="segmentation",
            label=f"{choice} > UNet from scratch (ood_rock)",
            effect=PAPER_LORA_OVER_UNET,
            effect_source="the paper's LoRA linear head over its UNet (0.81 vs 0.77 mIoU)",
        )
    ]
    preconditions = [
        Precondition(
            "fewer trainable parameters",
            Check("param_ratio_vs_unet", {"method": choice, "arm": v.kind}, "<", 1.0, table="params"),
            why="the paper's comparison: the LoRA model trains fewer parameters than the UNet",
        ),
        Precondition.same_budget(
            a={"method": choice, "arm": v.kind},
            b={"method": "UNet from scratch", "arm": "unet"},
            label=f"{choice} and the UNet from scratch (the claim is about fewer trainable parameters, "
            "not fewer steps: steps, batch size and schedule must match)",
        ),
    ]
    note = (
        f"LoRA head chosen on the in-distribution split: {choice}; the claim is about trainable "
        "parameters, so both train with the same steps, batch size and schedule"
    )
    return "c4_lora_beats_unet", compare, preconditions, v.no_lora, note


def _lora_beats_resnet_lora(v: _Vit, unavailable: dict[str, str]) -> tuple:
    """4b. LoRA (head chosen in distribution) vs the pretrained ResNet + LoRA, at the same budget."""
    choice = v.lora_choice
    compare = [
        Compare(
            "miou",
            a=_seg(choice, v.kind),
            b=_seg("linear head + LoRA", "resnet"),
            table="segmentation",
            label=f"{choice} > ResNet + LoRA (ood_rock)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
    ]
    preconditions = [
        Precondition.same_budget(
            a={"method": choice, "arm": v.kind},
            b={"method": "linear head + LoRA", "arm": "resnet"},
            label=f"{choice} and the ResNet + LoRA",
        )
    ]
    return "c4b_lora_beats_resnet_lora", compare, preconditions, v.no_lora or unavailable.get("resnet"), ""


def _holds_out_of_distribution(v: _Vit, unavailable: dict[str, str], split: dict) -> tuple:
    """5. The ViT's best method (chosen in distribution) vs the UNet and every classical pipeline, out of
    distribution."""
    compare = [
        Compare(
            "miou",
            a=_seg(v.best, v.kind, split),
            b=_seg(m, arm, split),
            table="segmentation",
            label=f"{v.best} > {m} ({split})",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        for split in ("ood_rock", "ood_scanner")
        for m, arm in [(c, "classical") for c in CLASSICAL] + [("UNet from scratch", "unet")]
    ]
    preconditions = [_resolvable(v.kind, s, BEST_BASELINE) for s in ("ood_rock", "ood_scanner")]
    note = f"method chosen on the in-distribution split: {v.best}"
    reasons = [r for r in (needs_two(split), unavailable.get("ood_scanner")) if r]
    why_not = "; and ".join(reasons[:1] + [r.removeprefix("not evaluated: ") for r in reasons[1:]]) or None
    return "c5_holds_out_of_distribution", compare, preconditions, why_not, note


def declare_claims(
    cfg,
    unavailable: dict[str, str] | None = None,
    chosen: dict[str, dict[str, str]] | None = None,
    ks: list[int] | None = None,
    split: dict | None = None,
) -> list[Claim]:
    """The paper's claims for DINOv2, then the same tests on labkit's stand-in ViT (an analogue).

    Context (all optional; with none, every arm is assumed available):

    - ``unavailable``: ``{arm: reason}`` for arms that could not run (``dinov2``, ``ssl``, ``resnet``,
      ``lora:<kind>``, ``tsne``), reasons a user can act on;
    - ``chosen``: ``{kind: {"lora": method, "best": method}}``, the methods picked on the
      in-distribution split (:func:`experiment.claim_context`), never on the split they are judged on;
    - ``ks``: the k judged for claim 1 (default: :func:`judged_ks`);
    - ``split``: the manifest's rocks and scanners for real volumes (default: the parameters), which fill the
      statements and decide whether claim 5 can be judged (:func:`needs_two`).
    """
    unavailable = dict(unavailable or {})
    chosen = dict(chosen or {})
    ks = judged_ks(cfg) if ks is None else list(ks)
    split = data_split(cfg, split)
    kinds = [k for k in ("dinov2", "ssl") if k in cfg.backbones] or ["dinov2"]
    claims = []
    for kind in kinds:
        suffix = "" if kind == "dinov2" else f"__{kind}"
        prefix = "" if kind == "dinov2" else f"[analogue: {BACKBONE_LABELS[kind]} in place of DINOv2] "
        blocked = unavailable.get(kind) or (None if kind == "dinov2" else no_random_control(cfg))
        v = _vit(cfg, kind, chosen.get(kind, {}), unavailable)
        for cid, compare, preconditions, why_not, note in (
            _knn_classification(v, ks, unavailable),
            _linear_head_beats_classical(v),
            _lora_lifts_heads(v),
            _lora_beats_unet(v),
            _lora_beats_resnet_lora(v, unavailable),
            _holds_out_of_distribution(v, unavailable, split),
        ):
            claims.append(
                Claim(
                    cid + suffix,
                    prefix + statement(cid, split),
                    compare,
                    ([] if kind == "dinov2" else analogue_preconditions(kind, ks if cid == C1 else None))
                    + preconditions,
                    unavailable=blocked or why_not,
                    note=note,
                )
            )
    return claims


def claims(cfg, runs: Runs) -> list[Claim]:
    """The claims of a run: :func:`declare_claims` with the run's context (the arms that could not run, the methods
    chosen in distribution, the judged k)."""
    return declare_claims(cfg, **runs.context)


HEADLINE = "ood_rock_miou_best_backbone_linear"
HEADLINE_ORDER = ("dinov2", "ssl", "random")  # the best available backbone first


def headline(runs: Runs) -> dict:
    """The headline metrics: :data:`HEADLINE`, the held-out-rock mean IoU of the frozen linear head of the best
    available backbone (:data:`HEADLINE_ORDER`), named in ``headline_backbone``; each evaluated row's mean IoU on the
    held-out rock, the linear heads of DINOv2, the random ViT and the stand-in, each ViT's best kNN accuracy over k,
    and the run's seconds."""
    from labkit.studies.dinov2_microct.tables import segmentation

    seg = segmentation(runs)
    out = {"seconds": round(runs.seconds, 1)}
    for _, r in seg.iterrows():
        if r["status"] != "evaluated":
            continue
        key = f"{r['method']}|{r['backbone']}".strip("|")
        out[f"ood_rock_miou/{key}"] = r["ood_rock/miou"]

    def pick(method, kind):
        rows = seg[(seg["method"] == method) & (seg["backbone"] == BACKBONE_LABELS[kind])]
        return (
            float(rows["ood_rock/miou"].iloc[0])
            if len(rows) and "ood_rock/miou" in rows and pd.notna(rows["ood_rock/miou"].iloc[0])
            else None
        )

    out["ood_rock_miou_dinov2_linear"] = pick("linear head (frozen)", "dinov2")
    # the headline: the best available backbone's frozen linear head on the held-out rock, named (DINOv2 when its
    # weights are present, else labkit's stand-in, else the random-init ViT; with no ViT, the best baseline)
    out[HEADLINE], out["headline_backbone"] = None, None
    for kind in HEADLINE_ORDER:
        value = pick("linear head (frozen)", kind)
        if value is not None:
            out[HEADLINE], out["headline_backbone"] = value, f"linear head (frozen) | {BACKBONE_LABELS[kind]}"
            break
    if out[HEADLINE] is None:
        base = seg[seg["kind"].isin(["classical", "from scratch"]) & (seg["status"] == "evaluated")]
        if len(base) and "ood_rock/miou" in base and base["ood_rock/miou"].notna().any():
            best = base.loc[base["ood_rock/miou"].idxmax()]
            out[HEADLINE], out["headline_backbone"] = float(best["ood_rock/miou"]), f"{best['method']} (no ViT ran)"
    out["ood_rock_miou_random_vit_linear"] = pick("linear head (frozen)", "random")
    out["ood_rock_miou_ssl_vit_linear"] = pick("linear head (frozen)", "ssl")
    cls = runs.tables["classification_rows"]
    for kind, lab in BACKBONE_LABELS.items():
        k = cls[(cls["backbone"] == lab) & (cls["probe"] == "knn") & (cls["status"] == "evaluated")]
        out[f"knn_accuracy_best_k/{kind}"] = float(k.groupby("k")["accuracy"].mean().max()) if len(k) else None
    return out
