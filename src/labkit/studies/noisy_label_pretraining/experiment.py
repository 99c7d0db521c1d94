"""The experiment: three cached grids and the layer-wise analysis, gathered into ``Runs``.

1. **Pretraining** (grid ``noisy_label_pretraining-pretrain``): per seed, one initial U-Net pretrained on the clean
   labels, on the clean labels **in another data order** (the null of the layer-wise measure), and on noisy labels
   at each severity of the sweep. Each is a cached task; its weights go to a file whose digest enters every
   fine-tuning task's fingerprint.
2. **Fine-tuning** (grid ``noisy_label_pretraining-finetune``): init x k x seed; every run on k tiles trains for the
   steps measured for random initialisation to plateau on k tiles (validation mIoU along training is recorded and
   checked), from the same decoder initialisation and data order. Extra ``regime_seeds`` run random init at the
   fewest and the most tiles for the label-limited precondition. The floor (the most frequent class everywhere) and
   a per-pixel QDA (grid ``noisy_label_pretraining-qda``, the classical reference) are rows of the same tables.
3. **Probes** (grid ``noisy_label_pretraining-probe``): per claim seed, the main noisy-pretrained encoder and the same
   U-Net's random-init encoder, frozen, each read out by a linear per-pixel head (:class:`labkit.methods.linear_probe.LinearProbe`)
   trained ``probe_steps`` steps on the fewest clean tiles of task A: what "features learned" reads.
4. The layer-wise measure (:func:`labkit.methods.weight_analysis.layerwise_divergence`), matched: the clean
   pretraining in data order 1 against the noisy one in order 0 (raw) and against the clean one in order 0 (the
   null), so both pairs differ in data order and only the raw pair in labels; CKA of encoder features alike.

The arms' own noisy-pretrained ResNet-18 encoder (the first seed's main noisy pretraining, ``encoder_depth`` stages)
is saved as the labkit checkpoint ``noisy-pretrained-unet-r18`` (:mod:`labkit.methods.noisy_label_encoder`; the SAR
study consumes it), its sidecar carrying this run's "features learned" precondition on that same encoder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from labkit.core.grid import Grid, grid_runs
from labkit.methods import weight_analysis
from labkit.methods.noisy_label_encoder import (
    CHECKPOINT_NAME,
    checkpoint_meta,
    save_pretrained_encoder,
)
from labkit.models.features_record import make_record
from labkit.studies.base import Runs, Stopwatch, grid_options, run_grids
from labkit.studies.noisy_label_pretraining.data import (
    STUDY,
    StudyData,
    check_parameters,
    label_key,
    make_data,
    steps_for_k,
)
from labkit.studies.noisy_label_pretraining.setup import (
    BUDGET_TABLE_COLUMNS,
    FEWEST_TILES_ONLY,
    FOR_ARMS,
    FOR_LAYERS,
    FT_KEYS,
    LAYER_NULL,
    LAYER_RAW,
    LAYER_REFERENCE,
    PRETRAIN_COLUMNS,
    PROBE_COLUMNS,
    THREADS,
    Setup,
    budget_row,
    features_learned,
    pretrain_jobs,
    resolve_setup,
)
from labkit.studies.noisy_label_pretraining.tasks import (
    TASK_A,
    TASK_B,
    _load_arrays,
    _model_from,
    finetune_task,
    pretrain_task,
    probe_task,
    qda_task,
)
from labkit.studies.noisy_label_pretraining.weights import external_encoder, weights_file

# ---- grid 1: pretraining (the arms' label sets, shared or per seed; the layer-wise trio per seed)


def _pretrain_jobs(run: Setup) -> dict:
    """The run's pretrainings (:func:`setup.pretrain_jobs`), ``(seed, labels, order, steps) -> purposes``."""
    s = run.s
    return pretrain_jobs(
        s["seeds"], run.label_sets, run.main, s["pretrain_steps"], s["layer_pretrain_steps"], s["shared_pretraining"]
    )


def _pretrain_grid(run: Setup, jobs: dict) -> Grid:
    s, files = run.s, run.data.files
    pre = Grid(f"{STUDY}-pretrain", pretrain_task)
    common = dict(model=run.model, batch_size=s["batch_size"], lr=s["lr"], device=run.device)
    for seed, labels, order, steps in jobs:
        pre.add(data=files[seed], seed=seed, labels=labels, order=order, steps=steps, **common)
    return pre


def _pretrain(cfg, run: Setup, progress) -> dict:
    """Run the pretraining grid: the pretraining table's rows (one per purpose a network serves), each network's
    weights (in memory and as a file) by ``(purpose, seed, labels, order)``, the named checkpoint's state (the
    arms' own main noisy encoder, the first seed's) and every run's budget."""
    s = run.s
    jobs = _pretrain_jobs(run)
    pre = _pretrain_grid(run, jobs)
    (result,) = run_grids(cfg, pre, progress=progress, threads=THREADS)
    rows, states, budgets = [], {}, []
    for key, record in zip(jobs, result.records):
        seed, labels, order, _ = key
        purposes = jobs[key]
        for purpose in purposes:
            budgets.append(
                budget_row(record, pre.name, stage="pretrain", purpose=purpose, seed=seed, labels=labels, order=order)
            )
        severity = run.severity_of.get(labels, np.nan)
        for purpose in purposes:
            states[(purpose, seed, labels, order)] = record["state"]
            rows.append(
                {"seed": seed, "purpose": purpose, "labels": labels, "order": order, "severity": severity}
                | {k: record[k] for k in PRETRAIN_COLUMNS}
            )
    # the named checkpoint: the encoder every seed's noisy arms start from when shared (the first seed's), the
    # one the features-learned precondition probes, so its sidecar's record is that precondition's verdict
    checkpoint_state = states.get((FOR_ARMS, s["seeds"][0], run.main, 0)) if run.save else None
    files = {
        key: weights_file(state, {"purpose": key[0], "seed": key[1], "labels": key[2], "order": key[3]})
        for key, state in states.items()
        if key[0] == FOR_ARMS
    }
    return {
        "table": pd.DataFrame(rows),
        "states": states,
        "files": files,
        "checkpoint_state": checkpoint_state,
        "budgets": budgets,
    }


# ---- grid 2: fine-tuning (init x k x seed, the sweep, the second task)


def _finetune_grid(run: Setup, files: dict, external: dict | None) -> tuple[Grid, list[dict], int]:
    """The fine-tuning grid, each task's table keys (in task order) and how many regime-seed runs lead it."""
    s = run.s
    ft = Grid(f"{STUDY}-finetune", finetune_task)
    metas = []

    def add(seed, task, init, k, labels):
        if init == "random":
            weights = None
        elif init == "imagenet":
            weights = {**external, "part": "encoder"}
        else:
            weights = {
                **files[(FOR_ARMS, run.pool_of(seed), labels, 0)],
                "part": "full" if init.endswith("_full") else "encoder",
            }
        ft.add(
            data=run.data.files[seed],
            seed=seed,
            task=task,
            init=init,
            k=k,
            weights=weights,
            model=run.model,
            steps=steps_for_k(s["finetune_steps"], s["k_values"], k),
            eval_points=s["eval_points"],
            batch_size=s["batch_size"],
            lr=s["finetune_lr"] if init == "random" else s["finetune_lr_pretrained"],
            device=run.device,
        )
        severity = (
            run.severity_of.get(labels, np.nan)
            if init.startswith("noisy")
            else (0.0 if init.startswith("clean") else np.nan)
        )
        pretraining = {"random": "none", "imagenet": "external"}.get(init, labels)
        metas.append(
            {"seed": seed, "task": task, "init": init, "k": k, "pretraining": pretraining, "severity": severity}
        )

    # Longest tasks first (the most tiles, then the regime seeds' runs), so the pool does not end on one long run.
    for seed in s["regime_seeds"]:  # the label-limited precondition's extra seeds: random init, fewest and most tiles
        for k in (s["k_values"][-1], s["k_values"][0]):
            add(seed, TASK_A, "random", k, run.main)
    n_regime = len(metas)
    for seed in s["seeds"]:
        for k in sorted(s["k_values"], reverse=True):
            for init in s["inits"]:
                if init in run.unavailable or (init in FEWEST_TILES_ONLY and k != s["k_values"][0]):
                    continue
                add(seed, TASK_A, init, k, "clean" if init.startswith("clean") else run.main)
        for level in s["noise_levels"]:
            if label_key(level) != run.main or s["sweep_k"] not in s["k_values"]:
                add(seed, TASK_A, "noisy_full", s["sweep_k"], label_key(level))
        for init in ("random", "noisy_full", "clean_full"):
            if s["sweep_k"] not in s["k_values"]:
                add(seed, TASK_A, init, s["sweep_k"], "clean" if init == "clean_full" else run.main)
        if TASK_B not in run.unavailable:
            for init in ("random", "noisy_encoder"):
                add(seed, TASK_B, init, s["task_b_k"], run.main)
    return ft, metas, n_regime


def _finetune(cfg, run: Setup, files: dict, progress) -> dict:
    """Resolve the reference encoder, run the fine-tuning grid: rows of the claim seeds, of the regime seeds,
    the validation curves and every run's budget."""
    external = None
    if "imagenet" in run.s["inits"]:
        external, reason = external_encoder(run.s, len(run.data.classes_a))
        if reason:
            run.unavailable["imagenet"] = reason
    ft, metas, n_regime = _finetune_grid(run, files, external)
    (result,) = run_grids(cfg, ft, progress=progress, threads=THREADS)
    rows, curves, regime, budgets = [], [], [], []
    outcome = ("miou", "pixel_accuracy", "late_gain", "best_point", "kept_initial", "steps", "seconds")
    for i, (meta, record) in enumerate(zip(metas, result.records)):
        keys = {k: meta[k] for k in FT_KEYS}
        budgets.append(budget_row(record, ft.name, stage="finetune", regime=i < n_regime, **keys))
        row = {**meta, **{k: record[k] for k in outcome}}
        if i < n_regime:
            regime.append(row)
            continue
        rows.append(row)
        curve = np.asarray(record["curve"], dtype=float)
        for j, v in enumerate(curve):
            step = int(round((j + 1) * record["steps"] / len(curve)))
            curves.append({**meta, "point": j + 1, "step": step, "val_miou": float(v)})
    return {"rows": rows, "curves": curves, "regime": regime, "budgets": budgets}


# ---- grid 3: frozen linear probes (the "features learned" precondition)


def _probes(cfg, run: Setup, files: dict, progress) -> dict:
    """The main noisy-pretrained encoder (the arms' own, network ``arms``; also the saved named checkpoint's) and the
    random-init one, frozen, a linear head trained on the fewest clean tiles of task A for probe_steps steps."""
    s = run.s
    probe = Grid(f"{STUDY}-probe", probe_task)
    metas = []
    for seed in s["seeds"]:
        for init, weights, labels in (
            ("noisy_encoder", {**files[(FOR_ARMS, run.pool_of(seed), run.main, 0)], "part": "encoder"}, run.main),
            ("random", None, "none"),
        ):
            probe.add(
                data=run.data.files[seed],
                seed=seed,
                init=init,
                k=s["k_values"][0],
                weights=weights,
                model=run.model,
                steps=s["probe_steps"],
                batch_size=s["batch_size"],
                lr=s["probe_lr"],
                device=run.device,
            )
            metas.append(
                {
                    "seed": seed,
                    "network": FOR_ARMS,
                    "task": TASK_A,
                    "init": init,
                    "k": s["k_values"][0],
                    "pretraining": labels,
                }
            )
    (result,) = run_grids(cfg, probe, progress=progress, threads=THREADS)
    rows, budgets = [], []
    for meta, record in zip(metas, result.records):
        keys = {k: v for k, v in meta.items() if k != "network"}
        budgets.append(budget_row(record, probe.name, stage="probe", purpose=meta["network"], regime=False, **keys))
        rows.append({**meta, **{k: record[k] for k in ("miou", "pixel_accuracy", "steps", "seconds")}})
    return {"rows": rows, "budgets": budgets}


# ---- grid 4: the classical reference (per-pixel QDA) and the floor


def _references(cfg, run: Setup, progress) -> list[dict]:
    """QDA and the floor (the most frequent class everywhere) at every k a claim compares at (the sweep's k too),
    as rows of the fine-tuning table."""
    s = run.s
    qda = Grid(f"{STUDY}-qda", qda_task)
    for seed in s["seeds"]:
        for k in sorted(set(s["k_values"]) | {s["sweep_k"]}):
            qda.add(data=run.data.files[seed], seed=seed, task=TASK_A, k=k, num_classes=len(run.data.classes_a))
    result = qda.run(executor="serial", progress=grid_options(cfg, progress=progress)["progress"])
    rows = []
    for task, record in zip(result.tasks, result.records):
        for init, prefix in (("qda", ""), ("majority", "majority_")):
            rows.append(
                {
                    "seed": task.params["seed"],
                    "task": TASK_A,
                    "init": init,
                    "k": task.params["k"],
                    "pretraining": "none",
                    "severity": np.nan,
                    "miou": record[f"{prefix}miou"],
                    "pixel_accuracy": record[f"{prefix}pixel_accuracy"],
                    "late_gain": np.nan,
                    "best_point": 0,
                    "kept_initial": False,
                    "steps": 0,
                    "seconds": record["seconds"] if init == "qda" else 0.0,
                }
            )
    return rows


# ---- the layer-wise measure with its null, and CKA of encoder features against the same null

#: (name, the other network) of each comparison, each against the clean pretraining in data order 1
#: (``LAYER_REFERENCE``): the raw pair differs from it in data order and labels, the null pair in data order only.
COMPARISONS = ((LAYER_RAW, "noisy"), (LAYER_NULL, "clean"))


def _layerwise(run: Setup, states: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    s, ka = run.s, len(run.data.classes_a)
    layer_frames, cka_frames = [], []
    for seed in s["seeds"]:
        init_state = {k: v.detach() for k, v in _model_from(run.model, ka, 1000 * seed + 11).state_dict().items()}
        as_t = lambda st: {k: torch.as_tensor(v) for k, v in st.items()}  # noqa: E731
        pretrained = {
            "reference": as_t(states[(FOR_LAYERS, seed, *LAYER_REFERENCE)]),
            "clean": as_t(states[(FOR_LAYERS, seed, "clean", 0)]),
            "noisy": as_t(states[(FOR_LAYERS, seed, run.main, 0)]),
        }
        for name, other in COMPARISONS:
            df = weight_analysis.layerwise_divergence(
                pretrained["reference"],
                pretrained[other],
                init_state,
                sample=s["layer_sample"],
                bins=s["kl_bins"],
                seed=seed,
            )
            df.insert(0, "comparison", name)
            df.insert(0, "seed", seed)
            layer_frames.append(df)
        arrays = _load_arrays(run.data.files[seed]["path"], run.data.files[seed]["digest"])
        images = torch.as_tensor(arrays["x_test"][:8])
        nets = {}
        for key in ("reference", "clean", "noisy"):
            nets[key] = _model_from(run.model, ka, 0)
            nets[key].load_state_dict(pretrained[key])
        for name, other in COMPARISONS:
            df = weight_analysis.encoder_feature_cka(nets["reference"].encoder, nets[other].encoder, images, seed=seed)
            df.insert(0, "comparison", name)
            df.insert(0, "seed", seed)
            cka_frames.append(df)
    return pd.concat(layer_frames, ignore_index=True), pd.concat(cka_frames, ignore_index=True)


# ---- the checkpoint another study uses


def checkpoint_features_learned(run: Setup, probes: pd.DataFrame) -> dict:
    """The "features learned (noisy-pretrained encoder)" precondition of the claims, as the named checkpoint's
    sidecar records it (key ``features_learned``, format :mod:`labkit.models.features_record`): the saved encoder is
    the arms' own, so the record is that precondition judged by :mod:`labkit.core.claims` with the claims' own
    constructor (:func:`setup.features_learned`) on the same ``probes`` table: the same verdict and numbers."""
    s = run.s
    k_few = s["k_values"][0]
    result = features_learned(run.main, k_few, FOR_ARMS, s["shared_pretraining"]).evaluate({"probes": probes})
    pooled = (
        "one pretraining shared by every seed: the interval covers the probe draws (tiles, head, random-init "
        "encoder) only"
        if s["shared_pretraining"]
        else "each seed's own pretraining"
    )
    saved = (
        "the saved encoder, every seed's fine-tuned arms' own"
        if s["shared_pretraining"]
        else f"the saved encoder is seed {s['seeds'][0]}'s, one of the per-seed encoders the fine-tuned arms start from"
    )
    statement = (
        f"frozen linear probe (per-pixel head, {s['probe_steps']} steps on the k={k_few} clean tiles of task A) of "
        f"the {run.main}-pretrained ResNet-18 encoder ({s['encoder_depth']} stages; {saved}) vs the same network at random init, test mIoU on the {run.data.source} land-cover tiles, paired "
        f"over seeds {s['seeds']} ({pooled}); this study's precondition 'features learned (noisy-pretrained "
        "encoder)' itself"
    )
    return make_record(result, statement)


def _checkpoint(run: Setup, pretrain: pd.DataFrame, state, probes: pd.DataFrame) -> dict:
    """Save the arms' noisy-pretrained ResNet-18 encoder (the first seed's main noisy pretraining, ``encoder_depth``
    stages) as ``noisy-pretrained-unet-r18``, its sidecar carrying the source task's "features learned" record
    (:func:`checkpoint_features_learned`).

    Returns ``{"saved": bool, "path" or "reason": str}`` (and the ``features_learned`` record) for the report."""
    s = run.s
    if not run.save_checkpoint:
        return {"saved": False, "reason": "save_checkpoint is false"}
    if s["encoder"] != "resnet18":
        return {
            "saved": False,
            "reason": f"encoder is {s['encoder']}; '{CHECKPOINT_NAME}' holds ResNet-18 only "
            "(the SAR study produces its own with produce_pretrained_encoder)",
        }
    if state is None:
        return {"saved": False, "reason": "no noisy-pretrained encoder in the results"}
    if s["pretrain_steps"] == 0:
        return {"saved": False, "reason": "pretrain_steps=0: the encoder was never pretrained (its initial weights)"}
    seed, main, data = s["seeds"][0], run.main, run.data
    norm = _load_arrays(data.files[seed]["path"], data.files[seed]["digest"])["norm"]
    row = pretrain[
        (pretrain.purpose == FOR_ARMS) & (pretrain.seed == seed) & (pretrain.labels == main) & (pretrain.order == 0)
    ].iloc[0]
    meta = checkpoint_meta(
        data.bands,
        data.classes_a,
        s["noise_models"] if main != "real" else ["real labels_noisy"],
        s["noise_severity"] if main != "real" else float("nan"),
        norm[0],
        norm[1],
        s["encoder"],
        {
            "n_tiles": s["n_pretrain_tiles"],
            "steps": s["pretrain_steps"],
            "encoder_depth": s["encoder_depth"],
            "tile": s["tile"],
            "seed": seed,
            "pixel_noise_rate": float(row.pixel_noise_rate),
            "decoder_width": s["decoder_width"],
            "data_source": data.source,
            "produced_by": f"{STUDY} notebook",
            "features_learned": checkpoint_features_learned(run, probes),
        },
    )
    path = save_pretrained_encoder(state, meta)
    return {"saved": True, "path": str(path), "features_learned": meta["features_learned"]}


# ---- the run


def run(cfg, data: StudyData | None = None, progress: bool | None = None) -> Runs:
    """Every experiment of the study for each seed of ``cfg`` (see the module docstring), gathered into ``Runs``:
    the frames by name (``tables``: what the claims judge and what the tables and figures read), the arms that could
    not run and why (``unavailable``), the claims' context, the settings, the data and the checkpoint saved
    (``examples``)."""
    with Stopwatch() as clock:
        check_parameters(cfg)
        data = data or make_data(cfg)
        setup = resolve_setup(cfg, data)
        pre = _pretrain(cfg, setup, progress)
        ft = _finetune(cfg, setup, pre["files"], progress)
        probes = _probes(cfg, setup, pre["files"], progress)
        finetune = ft["rows"] + _references(cfg, setup, progress)
        layers, cka = _layerwise(setup, pre["states"])
        checkpoint = _checkpoint(
            setup, pre["table"], pre["checkpoint_state"], pd.DataFrame(probes["rows"], columns=PROBE_COLUMNS)
        )
    patch = (data.real_patch or {}).get("summary") or {"available": False, "reason": "not loaded (make_data alone)"}
    runs = Runs(
        tables={
            "finetune": pd.DataFrame(finetune),
            "pretraining": pre["table"],
            "val_curves": pd.DataFrame(ft["curves"]),
            "extra_regime_runs": pd.DataFrame(ft["regime"], columns=list(finetune[0]) if finetune else None),
            "layer_divergence": layers,
            "cka": cka,
            "budgets": pd.DataFrame(pre["budgets"] + ft["budgets"] + probes["budgets"], columns=BUDGET_TABLE_COLUMNS),
            "probes": pd.DataFrame(probes["rows"], columns=PROBE_COLUMNS),
        },
        unavailable=setup.unavailable,
        context={"unavailable": setup.unavailable},
        examples={"settings": setup.s, "data": data, "checkpoint": checkpoint, "real_patch": patch},
        grids=grid_runs(since=clock.started),
        checkpoints=[checkpoint["path"]] if checkpoint["saved"] else [],
        seconds=clock.seconds,
    )
    return runs
