"""The paper's four claims, in its order, declared as data (no results needed; an edit here only re-renders) and judged by
:mod:`labkit.core.claims` with the preconditions that make them testable: label-limited, plateau, headroom (clean
pretraining itself beats random init), trained (on clean validation labels, against the best class prior), features
learned (the noisy-pretrained encoder's frozen linear probe beats the random-init one's), same budget (every trained
run's record carries its budget: the ``budgets`` table), above the floor, null available, size-free estimator.

The layer-wise measure (:func:`labkit.methods.weight_analysis.layerwise_divergence`): per layer, KL between weight
histograms of **equal-size subsamples** with bins fixed in units of the layer's initial standard deviation, so its
finite-sample floor is the same for every layer; the clean-vs-noisy value minus the clean-vs-clean (other data
order) null is the null-corrected excess that claim 3 is judged on. The null is matched to the pair it corrects:
both take the clean pretraining in data order 1 as reference, the raw pair against the noisy pretraining in order 0,
the null against the clean one in order 0, so the two differ only in the labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pandas as pd

from labkit.core.claims import Check, Claim, Compare, Precondition
from labkit.methods import weight_analysis
from labkit.studies.base import Runs
from labkit.studies.noisy_label_pretraining.data import (
    REFERENCE_ROWS,
    label_key,
    main_noisy_key,
    shared_pretraining,
    sweep_levels,
)
from labkit.studies.noisy_label_pretraining.setup import FOR_ARMS, FOR_LAYERS
from labkit.studies.noisy_label_pretraining.setup import features_learned as setup_features_learned
from labkit.studies.noisy_label_pretraining.tables import (
    layer_null_table,
    layer_parts_table,
    regime_runs,
)
from labkit.studies.noisy_label_pretraining.tasks import TASK_A, TASK_B

#: "trained" precondition: clean validation cross-entropy of a pretrained network over that of the best
#: learner-free predictor: the class prior of its training labels, of the same tiles' clean labels or the uniform one,
#: whichever is best on the clean validation tiles (:func:`labkit.methods.class_prior.clean_validation_losses`).
TRAINED_MAX_RATIO = 0.8
#: "above the floor" precondition: every compared arm beats the most frequent class everywhere by this mIoU.
FLOOR_MARGIN = 0.02
#: Noisy severities (above 0) the noise-sweep claim needs; clean pretraining is a reference, never a level.
MIN_SWEEP_LEVELS = 3
#: Estimator of the layer-wise measure, in words (the report and the README quote it).
LAYER_ESTIMATOR = weight_analysis.DIVERGENCE_ESTIMATOR
#: Effects of interest (labkit.core.claims): the paper reports no effect size for its comparisons.
PRACTICAL_MIOU = 0.02
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper reports no effect size)"
PRACTICAL_EXCESS = 0.002
EXCESS_SOURCE = (
    "a stated practical size: 0.002 of the layer measure, the finite-sample floor (bins - 1) / n of a 64-bin "
    "histogram divergence for a layer of 32k weights"
)
A = {"task": TASK_A}


@dataclasses.dataclass
class _Regime:
    """What several claims share: the k they compare at, the main noisy labels, the sweep's severities and the
    preconditions more than one claim rests on."""

    k_values: list
    finetune_steps: object  # the parameter as given (one count, or one per k)
    k_few: int
    k_many: int
    sweep_k: int
    main: str
    levels: list
    plateau_gain: float
    label_limited: Precondition
    plateau: Precondition
    headroom: Precondition
    features_learned: Precondition
    shared: bool
    pretrain_steps: int
    layer_steps: int

    @property
    def pretraining_note(self) -> str:
        if self.shared:
            return (
                f"; one pretraining per label set ({self.pretrain_steps} steps, on the first seed's pool) shared by "
                "every seed's fine-tunes, so each interval covers the fine-tuning draws (tiles, decoder "
                "initialisation, batches) only, not the pretraining's"
            )
        return f"; each seed its own pretraining ({self.pretrain_steps} steps)"

    @property
    def random_few(self) -> dict:
        return {**A, "init": "random", "k": self.k_few}

    def trained(self, labels, purpose: str = FOR_ARMS) -> Precondition:
        # Read on the clean validation labels: noisy training labels floor the training loss at their own entropy.
        # The learner-free bar is the best class prior (of the labels it trained on, of the same tiles' clean labels,
        # or uniform), scored by the same code (methods.class_prior.ClassPrior). ``purpose``: the pretrainings the
        # arms start from, or the layer-wise claim's per-seed ones.
        return Precondition.trained(
            "clean_val_loss",
            {"purpose": purpose, "labels": labels, "order": 0},
            TRAINED_MAX_RATIO,
            learner_free="clean_val_prior_loss",
            why=f"the {labels}-pretrained network, before fine-tuning, predicts the clean validation tiles with less "
            f"than {TRAINED_MAX_RATIO:g} x the cross-entropy of the class prior (of its training labels, of the same "
            "tiles' clean labels or uniform, whichever predicts them best: the best learner-free predictor; the noisy "
            "training labels' own loss is floored by their noise); when it fails, "
            "pretraining learned too little to test: raise "
            + (
                "pretrain_steps (0 trains nothing)"
                if purpose == FOR_ARMS
                else "layer_pretrain_steps (0 trains nothing; null takes pretrain_steps)"
            )
            + " or n_pretrain_tiles",
        )

    @staticmethod
    def same_budget(a, b, what) -> Precondition:
        # Fine-tunes (or pretrainings) a claim compares: the same steps, batch size and schedule.
        return dataclasses.replace(Precondition.same_budget(a=a, b=b, label=what), name=f"same budget ({what})")

    def finetunes(self, a, b, what) -> Precondition:
        return self.same_budget({"stage": "finetune", **a}, {"stage": "finetune", **b}, what)

    def pretrainings(self, a, b, what) -> Precondition:
        # the layer-wise claim's per-seed pretrainings
        return self.same_budget(
            {"stage": "pretrain", "purpose": FOR_LAYERS, "labels": a[0], "order": a[1]},
            {"stage": "pretrain", "purpose": FOR_LAYERS, "labels": b[0], "order": b[1]},
            what,
        )

    def above_floor(self, arm, what, k=None) -> Precondition:
        return Precondition.above_floor(
            "miou",
            arm=arm,
            floor={**A, "init": "majority", "k": self.k_few if k is None else k},
            margin=FLOOR_MARGIN,
            table="floor",
            label=what,
        )


def _regime(cfg) -> _Regime:
    k_values = sorted(int(k) for k in cfg.get("k_values"))
    k_few, k_many = k_values[0], k_values[-1]
    main = main_noisy_key(cfg)
    plateau_gain = float(cfg.get("plateau_max_gain"))
    random_few = {**A, "init": "random", "k": k_few}
    label_limited = Precondition.label_limited(
        "miou",
        full={**A, "init": "random", "k": k_many},
        few=random_few,
        margin=float(cfg.get("label_limited_margin")),
        table="regime",
    )
    plateau = Precondition.plateau("late_gain", where={**A, "init": "random"}, max_late_gain=plateau_gain)
    # The clean-pretrained upper bound must itself beat random init where the gain is claimed: if pretraining on
    # clean labels gains nothing here, no noisy pretraining can show a gain, and its absence says nothing.
    shared = shared_pretraining(cfg)
    headroom = Precondition(
        "headroom",
        Compare("miou", a={**A, "init": "clean_full", "k": k_few}, b=random_few),
        why=f"the clean-pretrained upper bound beats random init at k={k_few} (paired interval above 0"
        + (
            "; one clean pretraining shared by every seed, so the interval covers the fine-tuning draws only"
            if shared
            else ""
        )
        + "): pretraining can help in this regime at all; otherwise pretrain longer or on more tiles "
        "(pretrain_steps, n_pretrain_tiles) or run the paper preset",
    )
    # The claims that rest on the noisy-pretrained encoder need it to carry features the task can use: its frozen
    # linear probe (tasks.probe_task) beats that of the same U-Net's random-init encoder, paired over seeds. The
    # named checkpoint is that encoder and its sidecar records this verdict (experiment.checkpoint_features_learned).
    features_learned = setup_features_learned(main, k_few, FOR_ARMS, shared)
    return _Regime(
        k_values,
        cfg.get("finetune_steps"),
        k_few,
        k_many,
        int(cfg.get("sweep_k") or k_few),
        main,
        sweep_levels(cfg),
        plateau_gain,
        label_limited,
        plateau,
        headroom,
        features_learned,
        shared,
        int(cfg.get("pretrain_steps")),
        int(
            cfg.get("layer_pretrain_steps")
            if cfg.get("layer_pretrain_steps") is not None
            else cfg.get("pretrain_steps")
        ),
    )


def _gain(r: _Regime) -> Claim:
    noisy_full_few = {**A, "init": "noisy_full", "k": r.k_few, "pretraining": r.main}
    return Claim(
        "noisy_pretraining_beats_random",
        "Pretraining on plentiful noisy labels then fine-tuning on few clean labels beats random initialisation on "
        "the same clean labels; the gain is largest when clean labels are fewest.",
        compare=[
            Compare(
                "miou",
                a=noisy_full_few,
                b=r.random_few,
                label=f"noisy-pretrained encoder+decoder beats random init at k={r.k_few}",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            ),
            Compare(
                "gain",
                a={"k": r.k_few},
                b={"k": r.k_many},
                table="gains",
                label=f"gain over random larger at k={r.k_few} than at k={r.k_many}",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            ),
        ],
        preconditions=[
            r.label_limited,
            r.plateau,
            r.headroom,
            r.trained(r.main),
            r.features_learned,
            r.finetunes(noisy_full_few, r.random_few, f"noisy_full vs random, k={r.k_few}"),
            r.finetunes(
                {**A, "init": "noisy_full", "k": r.k_many, "pretraining": r.main},
                {**A, "init": "random", "k": r.k_many},
                f"noisy_full vs random, k={r.k_many}",
            ),
            r.above_floor(r.random_few, f"random init, k={r.k_few}"),
            r.above_floor(noisy_full_few, f"noisy_full, k={r.k_few}"),
        ],
        note=f"fine-tuning runs train {r.finetune_steps} steps at k={r.k_values} (both arms of a k the "
        "same; measured so random initialisation plateaus)" + r.pretraining_note,
    )


def _transfer(r: _Regime, unavailable: Mapping[str, str]) -> Claim:
    noisy_encoder_few = {**A, "init": "noisy_encoder", "k": r.k_few, "pretraining": r.main}
    # Claim 2's task-B part has no clean-pretrained arm of its own: the task-A headroom stands for it.
    headroom_transfer = dataclasses.replace(
        r.headroom,
        why=r.headroom.why + f"; task B has no clean-pretrained arm, so this task-A headroom at k={r.k_few} stands "
        "for the task-B part too",
    )
    compare = [
        Compare(
            "miou",
            a={"task": TASK_B, "init": "noisy_encoder"},
            b={"task": TASK_B, "init": "random"},
            label="task B (other classes, fresh decoder): noisy encoder beats random init",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        ),
        Compare(
            "miou",
            a=noisy_encoder_few,
            b=r.random_few,
            label=f"task A, fresh decoder: noisy encoder beats random init at k={r.k_few}",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        ),
    ]
    return Claim(
        "encoder_transfers_to_new_classes",
        "The benefit comes through the encoder: the noisy-pretrained encoder with a new decoder helps a task with a "
        "different class definition (merged and split classes).",
        compare=compare,
        preconditions=[
            r.label_limited,
            r.plateau,
            Precondition(
                "plateau (task B)",
                Check("late_gain", {"task": TASK_B, "init": "random"}, "<", r.plateau_gain, table="curves"),
                why=f"random init on task B improved by less than {r.plateau_gain:g} over the last fifth of training",
            ),
            headroom_transfer,
            r.trained(r.main),
            r.features_learned,
            r.finetunes(noisy_encoder_few, r.random_few, f"noisy_encoder vs random, task A k={r.k_few}"),
            r.finetunes(
                {"task": TASK_B, "init": "noisy_encoder"},
                {"task": TASK_B, "init": "random"},
                "noisy_encoder vs random, task B",
            ),
            r.above_floor(r.random_few, f"random init, k={r.k_few}"),
            r.above_floor(noisy_encoder_few, f"noisy_encoder, k={r.k_few}"),
        ],
        unavailable=unavailable.get(TASK_B),
        note="task B has no floor row (the most frequent class is computed on task A only): the floor "
        f"preconditions read task A at k={r.k_few}" + r.pretraining_note,
    )


def _layers(r: _Regime) -> Claim:
    def excess(b, label):
        return Compare(
            "excess",
            a={"part": "decoder"},
            b=b,
            table="layers",
            label=label,
            effect=PRACTICAL_EXCESS,
            effect_source=EXCESS_SOURCE,
        )

    return Claim(
        "encoder_robust_decoder_sensitive",
        "Encoder layers are robust to label noise and the decoder is sensitive: the clean- vs noisy-pretrained weights "
        "differ more in the decoder than in the encoder.",
        compare=[
            excess({"part": "encoder"}, "decoder excess over the null above the encoder's"),
            excess(0.0, "decoder: clean vs noisy above the matched clean vs clean null"),
        ],
        preconditions=[
            Precondition(
                "null available",
                Check("null_layers", {}, ">", 0, table="layer_null"),
                why="a second clean pretraining from the same initial weights in another data order gives every "
                "layer's null value, matched: clean order 1 vs noisy order 0 (raw) against clean order 1 vs clean "
                "order 0 (null), both pairs one data order apart",
            ),
            Precondition(
                "size-free estimator",
                Check("excess_size_corr_abs", {}, "<", 0.5, table="layer_size"),
                why="the null-corrected value the claim is judged on does not follow layer size (|Spearman rho| "
                "of a layer's excess vs its number of weights below 0.5), so a part's mean is not its layers' size",
            ),
            r.trained("clean", FOR_LAYERS),
            r.trained(r.main, FOR_LAYERS),
            r.pretrainings(("clean", 1), (r.main, 0), f"clean (order 1) vs {r.main} pretraining"),
            r.pretrainings(("clean", 1), ("clean", 0), "clean vs the clean null pretraining"),
        ],
        note=LAYER_ESTIMATOR
        + f"; compares each seed's own pretrainings ({r.layer_steps} steps: clean in data order 0 and 1, "
        f"{r.main} in order 0), so the interval covers the pretraining draws",
    )


def _sweep(r: _Regime, unavailable: Mapping[str, str]) -> Claim:
    levels, sweep_k = r.levels, r.sweep_k
    if len(levels) >= MIN_SWEEP_LEVELS:
        lo, hi = levels[0], levels[-1]
        compare = [
            Compare(
                "gain",
                a={"severity": lo},
                b={"severity": hi},
                table="sweep",
                label=f"gain at severity {lo:g} above the gain at {hi:g} (shrinks)",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            )
        ]
        compare += [
            Compare(
                "gain",
                a={"severity": v},
                b=0.0,
                table="sweep",
                label=f"gain above 0 at severity {v:g}",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            )
            for v in levels[:-1]
        ]
        sweep_unavailable = unavailable.get("sweep")
    else:
        compare, sweep_unavailable = (
            [],
            f"noise_levels (with noise_severity) gives {len(levels)} noisy severit{'y' if len(levels) == 1 else 'ies'} "
            f"{levels}; the sweep is judged on {MIN_SWEEP_LEVELS} or more severities above 0: add levels to noise_levels",
        )
    noisy_floor = (
        r.above_floor(
            {**A, "init": "noisy_full", "k": sweep_k, "pretraining": label_key(levels[0])},
            f"noisy_full at severity {levels[0]:g}, k={sweep_k}",
            sweep_k,
        )
        if levels
        else r.above_floor({**A, "init": "noisy_full", "k": sweep_k}, f"noisy_full, k={sweep_k}", sweep_k)
    )
    return Claim(
        "benefit_shrinks_with_noise",
        "The benefit of noisy-label pretraining shrinks as label noise grows and holds over a range of levels.",
        compare=compare,
        preconditions=[
            r.label_limited,
            r.plateau,
            r.headroom,
            # every noisy pretraining of the sweep follows the clean one's recipe: if that did not train,
            # none of them says anything
            r.trained("clean"),
            r.features_learned,
            r.finetunes(
                {**A, "init": "noisy_full", "k": sweep_k},
                {**A, "init": "random", "k": sweep_k},
                f"noisy_full (every severity) vs random, k={sweep_k}",
            ),
            r.above_floor({**A, "init": "random", "k": sweep_k}, f"random init, k={sweep_k}", sweep_k),
            noisy_floor,
        ],
        unavailable=sweep_unavailable,
        note=f"judged on the noisy severities {levels} only, fine-tuned on k={sweep_k} tiles; clean pretraining is "
        "the reference line of the sweep figure, not a level" + r.pretraining_note,
    )


def declare_claims(cfg, unavailable: Mapping[str, str] | None = None, **context) -> list[Claim]:
    """The paper's four claims, in its order, with the preconditions that make each testable.

    ``unavailable``: what could not run (``{"structure": reason}`` when the data have one class definition);
    with no context every arm is assumed available.
    """
    unavailable = dict(unavailable or {})
    r = _regime(cfg)
    return [
        _gain(r),
        _transfer(r, unavailable),
        _layers(r),
        _sweep(r, unavailable),
    ]


def claims(cfg, runs: Runs) -> list[Claim]:
    """The claims of this run (the arms that could not run say so), with the tidy tables they are judged on added
    to ``runs.tables`` (derived from the run's frames here, where the claims are, not in the experiment)."""
    runs.tables.update(claim_tables(runs))
    return declare_claims(cfg, **runs.context)


def claim_tables(runs: Runs) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on (one row per arm x condition x seed), derived from the run's frames
    (``pretraining``, ``budgets`` and ``probes`` are judged as the run gathered them)."""
    s = runs.examples["settings"]
    ft = runs.tables["finetune"]
    columns = ["seed", "task", "init", "k", "pretraining", "severity", "miou", "late_gain"]
    arms = ft[~ft.init.isin(REFERENCE_ROWS)][columns]
    a = arms[arms.task == TASK_A]
    main = s["main_noisy_labels"]
    random_ = a[a.init == "random"].set_index(["seed", "k"]).miou
    full = a[(a.init == "noisy_full") & (a.pretraining == main)].set_index(["seed", "k"]).miou
    gains = (full - random_).dropna().rename("gain").reset_index()
    sweep_rows = []
    rk = a[(a.init == "random") & (a.k == s["sweep_k"])].set_index("seed").miou
    for level in s["noise_levels"]:
        sub = a[(a.init == "noisy_full") & (a.k == s["sweep_k"]) & (a.pretraining == label_key(level))]
        for seed, miou in sub.set_index("seed").miou.items():
            if seed in rk.index:
                sweep_rows.append({"seed": seed, "severity": float(level), "gain": float(miou - rk[seed])})
    layer_null = layer_null_table(runs)
    return {
        "runs": arms.reset_index(drop=True),
        "regime": regime_runs(runs)[columns],
        "curves": arms[["seed", "task", "init", "k", "late_gain"]],
        "gains": gains,
        "sweep": pd.DataFrame(sweep_rows, columns=["seed", "severity", "gain"]),
        "layers": layer_parts_table(runs),
        "layer_null": layer_null,
        "layer_size": layer_null,
        "floor": ft[ft.task == TASK_A][["seed", "task", "init", "k", "pretraining", "severity", "miou"]].reset_index(
            drop=True
        ),
    }
