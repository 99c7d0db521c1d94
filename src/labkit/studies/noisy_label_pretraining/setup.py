"""What every grid of a run shares: the settings resolved once from the parameters and the data, the network's
parameters as every task receives them, the label sets and the columns of the gathered tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from labkit.core.claims import BUDGET_KEYS, Precondition, missing_budget
from labkit.studies.base import regime_seeds, task_device
from labkit.studies.noisy_label_pretraining.data import (
    INIT_LABELS,
    TASK_B,
    StudyData,
    check_rgb_bands,
    finetune_steps,
    label_key,
    main_noisy_key,
    shared_pretraining,
    sweep_levels,
)

#: Initialisations run at the fewest tiles only: claim 2 reads the fresh-decoder arm there and the headroom
#: precondition the clean upper bound; at more tiles every initialisation converges (measured: all within 0.015 mIoU
#: at k=32, where random init on 8x the tiles is the label-rich reference), so those runs would only cost time.
FEWEST_TILES_ONLY = ("noisy_encoder", "clean_full")
#: "features learned" precondition: the frozen linear probe's steps when the preset names none, and its learning
#: rate (a linear head on fixed features takes a larger step than fine-tuning a whole network).
PROBE_STEPS = 100
PROBE_LR = 1e-2
#: The probes table: one frozen linear probe per seed and encoder.
PROBE_COLUMNS = ["seed", "network", "task", "init", "k", "pretraining", "miou", "pixel_accuracy", "steps", "seconds"]
#: What identifies a fine-tuning run in the budgets table (the claims' filters read these columns).
FT_KEYS = ("seed", "task", "init", "k", "pretraining")
BUDGET_TABLE_COLUMNS = [
    "grid",
    "stage",
    "purpose",
    "seed",
    "labels",
    "order",
    *FT_KEYS[1:],
    "regime",
    *BUDGET_KEYS,
    "missing",
]
#: What a pretraining serves (column ``purpose`` of the pretraining and budgets tables): ``arms`` - the fine-tuned
#: arms and the probes start from it (one per label set when shared, else per seed); ``layers`` - the per-seed
#: pretrainings the layer-wise claim compares. One network serving both has a row for each.
FOR_ARMS, FOR_LAYERS = "arms", "layers"
#: The probes table's ``network``: the encoder the fine-tuned arms start from (``arms``; also the saved named
#: checkpoint's encoder).
PROBE_NETWORKS = (FOR_ARMS,)
#: What a pretraining record gives the pretraining table.
PRETRAIN_COLUMNS = (
    "pixel_noise_rate",
    "final_loss",
    "trivial_loss",
    "loss_ratio",
    "clean_val_loss",
    "clean_val_prior_loss",
    "clean_val_train_prior_loss",
    "clean_val_trivial_loss",
    "clean_loss_ratio",
    "test_miou",
    "steps",
    "seconds",
)
#: The layer-wise measure's two comparisons, matched: both take the clean pretraining in data order 1 as the
#: reference and a pretraining in data order 0 as the other, so the tested pair and the null pair differ in the same
#: things (data order and augmentation draws) except the one under study, the labels (noisy vs clean).
LAYER_REFERENCE = ("clean", 1)
LAYER_RAW = "clean (order 1) vs noisy (order 0)"
LAYER_NULL = "clean (order 1) vs clean (order 0): the null"
#: One torch thread per task: measured faster here (see README).
THREADS = 1


def settings(cfg, data: StudyData) -> dict:
    """The run's settings, resolved once from ``cfg`` and the data (every table and figure reads them)."""
    k_values = sorted(int(k) for k in cfg.get("k_values"))
    return {
        "seeds": [int(s) for s in cfg.get("seeds")],
        "data_source": data.source,
        "tile": int(cfg.get("tile")),
        "encoder": cfg.get("encoder"),
        "encoder_depth": int(cfg.get("encoder_depth")),
        "bands": list(data.bands),
        "decoder_width": int(cfg.get("decoder_width")),
        "batch_size": int(cfg.get("batch_size")),
        "lr": float(cfg.get("lr")),
        "finetune_lr": float(cfg.get("finetune_lr")),
        "finetune_lr_pretrained": float(
            cfg.get("finetune_lr_pretrained")
            if cfg.get("finetune_lr_pretrained") is not None
            else cfg.get("finetune_lr")
        ),
        "n_pretrain_tiles": int(cfg.get("n_pretrain_tiles")),
        "pretrain_steps": int(cfg.get("pretrain_steps")),
        "shared_pretraining": shared_pretraining(cfg),
        "layer_pretrain_steps": int(
            cfg.get("layer_pretrain_steps")
            if cfg.get("layer_pretrain_steps") is not None
            else cfg.get("pretrain_steps")
        ),
        "finetune_steps": finetune_steps(cfg),
        "regime_seeds": [v for v in regime_seeds(cfg) if v not in cfg.get("seeds")],
        "eval_points": int(cfg.get("eval_points")),
        "k_values": k_values,
        "n_val_tiles": int(cfg.get("n_val_tiles")),
        "n_test_tiles": int(cfg.get("n_test_tiles")),
        "noise_models": list(cfg.get("noise_models")),
        "noise_severity": float(cfg.get("noise_severity")),
        "main_noisy_labels": main_noisy_key(cfg),
        "noise_levels": sweep_levels(cfg),
        "sweep_k": int(cfg.get("sweep_k") or k_values[0]),
        "task_b_k": int(cfg.get("task_b_k")),
        "inits": list(cfg.get("inits")),
        "encoder_weights": str(cfg.get("encoder_weights")),
        "rgb_bands": list(cfg.get("rgb_bands")) if cfg.get("rgb_bands") else None,
        "imagenet_bands": check_rgb_bands(cfg, data.bands),
        "kl_bins": int(cfg.get("kl_bins")),
        "layer_sample": int(cfg.get("layer_sample")),
        "plateau_max_gain": float(cfg.get("plateau_max_gain")),
        "probe_steps": int(cfg.get("probe_steps", PROBE_STEPS)),
        "probe_lr": PROBE_LR,
        "label_limited_margin": float(cfg.get("label_limited_margin")),
        "executor": cfg.get("executor", "serial"),
        "device": str(cfg.get("device", "cpu")),
    }


@dataclasses.dataclass
class Setup:
    """What every grid of a run shares: the data, the settings, the device, the network and the label sets."""

    data: StudyData
    s: dict
    device: str
    model: dict  # the U-Net's parameters, as every task receives them
    main: str  # the main noisy label set
    label_sets: list
    severity_of: dict  # label set -> severity (clean 0, the real noisy labels NaN)
    unavailable: dict  # arm or claim part -> what to provide
    save_checkpoint: bool  # the parameter: save the named checkpoint (of a ResNet-18 encoder only)

    @property
    def save(self) -> bool:
        return self.save_checkpoint and self.s["encoder"] == "resnet18"

    def pool_of(self, seed: int) -> int:
        """The seed whose pretraining a seed's arms start from: the first seed's when shared, else its own."""
        return self.s["seeds"][0] if self.s["shared_pretraining"] else seed


def resolve_setup(cfg, data: StudyData) -> Setup:
    s = settings(cfg, data)
    ka = len(data.classes_a)
    model = {
        "encoder": s["encoder"],
        "encoder_depth": s["encoder_depth"],
        "in_channels": len(data.bands),
        "decoder_width": s["decoder_width"],
        "num_classes": ka,
        "num_classes_b": len(data.classes_b) if data.classes_b else ka,
    }
    main = s["main_noisy_labels"]
    unavailable: dict[str, str] = {}
    if data.classes_b is None:
        unavailable[TASK_B] = (
            "the data have one class definition (one legend); the second task needs another "
            "(data_source=simulated only)"
        )
    return Setup(
        data,
        s,
        task_device(cfg),
        model,
        main,
        ["clean"] + sorted({main} | {label_key(v) for v in s["noise_levels"]}),
        {label_key(v): v for v in s["noise_levels"]} | {"clean": 0.0, "real": float("nan")},
        unavailable,
        bool(cfg.get("save_checkpoint", False)),
    )


def init_label(settings: Mapping, init: str) -> str:
    """An arm's label in tables and figures; the ``imagenet`` row names its band mapping (R->B04, ...)."""
    label = INIT_LABELS.get(init, init)
    mapping = settings.get("imagenet_bands") if init == "imagenet" else None
    return f"{label}, bands {mapping}" if mapping else label


def budget_row(record: Mapping, grid: str, **keys) -> dict:
    """One trained run's budget (``record["budget"]``) with the keys the claims filter on; ``missing`` names the
    budget keys the record lacks (empty when it carries a full budget)."""
    budget = record.get("budget") if isinstance(record.get("budget"), Mapping) else {}
    return {
        "grid": grid,
        **keys,
        **{k: budget.get(k) for k in BUDGET_KEYS},
        "missing": ", ".join(missing_budget(record)),
    }


def pretrain_jobs(seeds, label_sets, main: str, steps: int, layer_steps: int, shared: bool) -> dict:
    """Every pretraining a run needs, ``(seed, labels, order, steps) -> purposes``, longest first: the arms' label
    sets (on the first seed's pool when ``shared``, else every seed's) and the layer-wise trio per seed (clean in data
    order 0 and 1, main noisy in order 0, at ``layer_steps``). A network two purposes need is trained once (the
    experiment's grid and ``labkit plan`` both read this). The named checkpoint is the arms' own main noisy encoder
    (the first seed's), no pretraining of its own."""
    seeds = list(seeds)
    jobs: dict = {}
    for seed in seeds[:1] if shared else seeds:
        for labels in label_sets:
            jobs.setdefault((seed, labels, 0, steps), []).append(FOR_ARMS)
    for seed in seeds:
        for labels, order in (("clean", 0), ("clean", 1), (main, 0)):
            jobs.setdefault((seed, labels, order, layer_steps), []).append(FOR_LAYERS)
    return dict(sorted(jobs.items(), key=lambda item: -item[0][3]))


def features_learned(main: str, k_few: int, network: str = FOR_ARMS, shared: bool = True) -> Precondition:
    """The "features learned" precondition of the claims resting on the noisy-pretrained encoder, and the record the
    named checkpoint's sidecar carries (the saved encoder is the arms' own): the ``main``-pretrained encoder, frozen,
    with a linear per-pixel head trained on the k_few clean tiles of task A, against the same U-Net's random-init
    encoder probed alike, paired over seeds (the ``probes`` table, its rows of ``network``). One constructor for
    both, judged by :mod:`labkit.core.claims`, so the two cannot disagree."""
    import dataclasses

    which = "encoder"
    draws = (
        "one shared pretraining, so the interval covers the probe draws (tiles, head, random-init encoder) only"
        if shared
        else "each seed its own pretraining"
    )
    return dataclasses.replace(
        Precondition.features_learned(
            "miou",
            pretrained={"network": network, "init": "noisy_encoder", "pretraining": main},
            random={"network": network, "init": "random"},
            table="probes",
        ),
        name="features learned (noisy-pretrained encoder)",
        why=f"the {main}-pretrained {which}, frozen, with a linear per-pixel head trained on the k={k_few} clean "
        "tiles of task A beats the same U-Net's random-init encoder probed alike (paired over seeds, interval above "
        f"0; {draws}): pretraining left features the task can use; when it fails, pretraining learned nothing a "
        "gain could rest on: raise pretrain_steps (0 trains nothing) or n_pretrain_tiles, or probe longer "
        "(probe_steps)",
    )
