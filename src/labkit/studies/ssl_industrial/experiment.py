"""Study 3's experiment: the three grids built from the config and run in turn, gathered into ``Runs``.

1. **pretraining** (grid ``ssl_industrial-pretrain``, :func:`tasks.pretrain_task`): MAE and SimCLR on the
   unlabeled in-domain images, MAE on as many unrelated photographs; the in-domain encoders become named
   checkpoints (:data:`CHECKPOINTS`). Which encoders count (precondition "trained") and which weights are
   missing is decided once (:func:`resolve_inits`): ``Runs.unavailable``.
2. **fine-tuning** (grid ``ssl_industrial-finetune``, :func:`tasks.finetune_task`): init x label count x seed
   (:func:`finetune_tasks`), split into the claims' runs and the label-limited regime's (:func:`split_regime`).
3. **anomaly detection** (grid ``ssl_industrial-patchcore``, :func:`tasks.patchcore_task`): one task per init.

``Runs.tables`` holds the tables the claims judge (:func:`claim_tables`) and ``initialisations`` and
``anomaly_detection``; ``Runs.examples["pretrained"]`` each pretraining's record, checkpoint file and digest.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from labkit.core.claims import BUDGET_KEYS, Precondition
from labkit.core.grid import Grid, GridResult, file_digest, grid_runs
from labkit.data.prepared_arrays import load_prepared_arrays
from labkit.methods.run_tables import matched_differences, with_budget_columns
from labkit.models.weights import resolve_weights
from labkit.studies.base import Runs, Stopwatch, regime_seeds, run_grids

from .data import INIT_LABELS, NAME, PRETRAINED, VIT_INITS
from .tasks import DINOV2, finetune_task, patchcore_task, pretrain_task, shared_between_seeds

#: The named labkit checkpoints of the in-domain encoders (``labkit:<name>`` in other studies and notebooks).
CHECKPOINTS = {"mae": "ssl-mae-vit-tiny-industrial", "simclr": "ssl-simclr-vit-tiny-industrial"}


# The precondition "trained" decides which pretrained arms the claims may rest on (Runs.unavailable), so it
# is computed here, below the claims that also state it.
def trained_precondition(cfg, init: str) -> Precondition:
    """Precondition "trained" of a pretrained init: on the same fixed batches (masks, views), the network's
    loss after pretraining below ``trained_max_loss_ratio`` x the best learner-free predictor's."""
    bar = cfg.trained_max_loss_ratio
    method = PRETRAINED[init][0]
    baseline = (
        "each hidden patch filled with its image's visible mean (or zeros, whichever is lower), same masks"
        if method == "mae"
        else "the untrained network (same initial weights) on the same batches and views, or log(2N-1) if lower"
    )
    return Precondition.trained(
        "eval_loss",
        {"init": init},
        bar,
        table="pretraining",
        name=f"trained ({init})",
        learner_free="learner_free_loss",
        why=(
            f"{init} pretraining loss below {bar:g} x the best learner-free predictor's ({baseline}): an encoder "
            "that learned nothing scores a ratio near 1 (0 steps: at least 1), so it must remove at least "
            f"{1 - bar:.0%} of the loss that predictor leaves"
        ),
    )


def pretraining_frame(pretrained: dict) -> pd.DataFrame:
    """The ``pretraining`` claim table: per pretrained init its loss on the fixed evaluation batches after
    pretraining and before (the untrained network), the best learner-free predictor's and their ratio."""
    cols = ["init", "eval_loss", "initial_loss", "learner_free_loss", "learner_free_rule", "loss_ratio", "steps"]
    rows = [{"init": k, **{c: v["record"].get(c) for c in cols[1:]}} for k, v in pretrained.items()]
    return pd.DataFrame(rows, columns=cols)


def is_trained(cfg, init: str, pretrained: dict) -> tuple[bool, str]:
    """Whether ``init`` passed precondition "trained" (the claims' own rule) and, if not, why (actionable)."""
    verdict = trained_precondition(cfg, init).evaluate({"pretraining": pretraining_frame(pretrained)})
    if verdict["passed"]:
        return True, ""
    r = pretrained[init]["record"]
    knob = "mae_steps" if PRETRAINED[init][0] == "mae" else "simclr_steps"
    return False, (
        f"did not train: precondition 'trained ({init})' failed (after {r.get('steps', '?')} steps, loss "
        f"{r['eval_loss']:.4g} on fixed evaluation batches = {r['loss_ratio']:.3f} x the best learner-free "
        f"predictor's {r['learner_free_loss']:.4g} ({r['learner_free_rule']}), not below "
        f"{cfg.trained_max_loss_ratio:g}); pretrain longer ({knob}) or on more images"
    )


def run(cfg, data) -> Runs:
    """Pretrain, decide which encoders count, fine-tune and run PatchCore: every grid of the study, gathered."""
    warn_shared_labels(cfg, data)
    with Stopwatch() as clock:
        pretraining = pretrain_grid(cfg, data)
        (pretrain_result,) = run_grids(cfg, pretraining)
        pretrained = save_encoders(cfg, data, pretraining, pretrain_result)
        unavailable, initialisations = resolve_inits(cfg, pretrained)
        finetuned, detected = run_grids(
            cfg,
            finetune_grid(cfg, data, pretrained, unavailable),
            patchcore_grid(cfg, data, pretrained, unavailable),
        )
        runs, regime = split_regime(cfg, finetune_frame(finetuned))
        tables = claim_tables({"runs": runs, "regime": regime, "pretrained": pretrained})
        tables.update(initialisations=initialisations, anomaly_detection=anomaly_frame(detected))
    return Runs(
        tables=tables,
        unavailable=unavailable,
        context={"unavailable": unavailable},
        examples={"pretrained": pretrained},
        grids=grid_runs(since=clock.started),
        checkpoints=[p["file"] for p in pretrained.values()],
        seconds=clock.seconds,
    )


def warn_shared_labels(cfg, data) -> list[str]:
    """Warn (one line per label count) where the labelled pool is too small for every seed to draw its own images:
    the seeds' runs then share images and their intervals overstate the evidence. Returns the lines."""
    import warnings

    labels = (np.asarray(data["pool"]["defect_types"]) != "good").astype(int)
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    lines = []
    for n in cfg.label_counts:
        seeds = regime_seeds(cfg) if n in (lo, hi) else list(cfg.seeds)
        shared = shared_between_seeds(labels, n, seeds, hi, cfg.data_seed)
        if shared:
            lines.append(
                f"at {n} labels, {len(seeds)} seeds share up to {shared} labelled image(s): the pool holds "
                f"{len(labels)} images ({int(labels.sum())} defective), and disjoint subsets need {n} per seed"
            )
    if lines:
        warnings.warn(
            "labelled subsets overlap (table label_subset_overlap): "
            + "; ".join(lines)
            + "; fewer seeds or label_counts, or more defect images, would keep them apart",
            stacklevel=2,
        )
    return lines


# ----------------------------------------------------------------------------- 1. pretraining
def encoder_kwargs(cfg) -> dict:
    """The ViT's size overrides (``encoder_depth``, ``encoder_width``; heads: width / 32)."""
    kw = {}
    if cfg.encoder_depth:
        kw["depth"] = int(cfg.encoder_depth)
    if cfg.encoder_width:
        kw.update(embed_dim=int(cfg.encoder_width), num_heads=max(1, int(cfg.encoder_width) // 32))
    return kw


def pretrain_params(cfg, data, init) -> dict:
    """One pretraining task's parameters (``init``: a key of ``PRETRAINED``)."""
    method, source = PRETRAINED[init]
    return dict(
        method=method,
        source=source,
        data_file=data["file"],
        arch=cfg.arch,
        encoder_kwargs=encoder_kwargs(cfg),
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        steps=cfg.mae_steps if method == "mae" else cfg.simclr_steps,
        batch_size=cfg.pretrain_batch_size,
        mask_ratio=cfg.mask_ratio,
        norm_pix_loss=cfg.mae_norm_pix_loss,
        seed=cfg.seeds[0],
        device=cfg.device,
    )


def pretrain_grid(cfg, data) -> Grid:
    """The pretraining grid (not run): one task per pretrained init asked for, in ``PRETRAINED``'s order."""
    grid = Grid(f"{NAME}-pretrain", pretrain_task, inputs={"data": data["digest"]})
    for name in PRETRAINED:
        if name in cfg.inits:
            grid.add(**pretrain_params(cfg, data, name))
    return grid


def save_encoders(cfg, data, grid: Grid, result: GridResult) -> dict:
    """Save each pretrained encoder (in-domain ones as named labkit checkpoints) and return
    ``{init: {"record", "file", "task_file", "digest"}}`` for the inits asked for: ``file`` the published one,
    ``task_file`` (and its ``digest``) the copy the grid tasks read."""
    from labkit.core.checkpoints import save_checkpoint
    from labkit.core.paths import cache_dir
    from labkit.models.registry import save_named_checkpoint

    names = [n for n in PRETRAINED if n in cfg.inits]
    pixel_mean, pixel_std = data_pixel_stats(data)
    out = {}
    for name, rec in zip(names, result.records):
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rec["state"].items()}
        meta = {
            "arch": cfg.arch,
            "img_size": cfg.img_size,
            "patch_size": cfg.patch_size,
            "in_chans": cfg.channels,
            "method": PRETRAINED[name][0],
            "encoder_kwargs": json.dumps(encoder_kwargs(cfg)),
            "pixel_mean": pixel_mean,
            "pixel_std": pixel_std,
            "loss_ratio": rec["loss_ratio"],
            "data": f"{data['source']} inspection images, preset {cfg.preset}",
        }
        # the tasks read a copy in the cache, named by the pretraining's fingerprint: a task's cache key holds
        # its parameters' paths, so a copy in the run's folder would recompute every fine-tune in another folder
        cached = save_checkpoint(
            cache_dir(f"{NAME}/encoders") / f"{name}-{grid.tasks[names.index(name)].fingerprint()}", state, meta
        )
        path = save_named_checkpoint(CHECKPOINTS[name], state, meta) if name in CHECKPOINTS else cached
        out[name] = {"record": rec, "file": str(path), "task_file": str(cached), "digest": file_digest(cached)}
    return out


def data_pixel_stats(data) -> tuple[list[float], list[float]]:
    d = load_prepared_arrays(data["file"])
    return d["pixel_mean"].astype(float).tolist(), d["pixel_std"].astype(float).tolist()


def resolve_inits(cfg, pretrained: dict) -> tuple[dict, pd.DataFrame]:
    """``{init: reason}`` for every init asked for that cannot be evaluated (weights unavailable, did not
    train: precondition "trained", :func:`is_trained`), and the initialisations table. An encoder that was
    pretrained but did not train is still fine-tuned and probed (its rows show what an untrained encoder
    scores); the claims resting on it are not evaluated with the reason."""
    unavailable, rows = {}, []
    for name in cfg.inits:
        reason = ""
        if name in PRETRAINED:
            if name not in pretrained:
                reason = "not pretrained in this run"
            else:
                reason = is_trained(cfg, name, pretrained)[1]
        elif name == "dinov2":
            reason = resolve_weights("dinov2_weights", cfg.dinov2_weights, DINOV2).reason
        if reason:
            unavailable[name] = reason
        rows.append(
            {
                "init": name,
                "description": INIT_LABELS.get(name, name),
                "status": (
                    "evaluated"
                    if not reason
                    else "did not train: fine-tuned and shown, no claim rests on it"
                    if name in pretrained
                    else "not evaluated"
                ),
                "reason": reason,
            }
        )
    return unavailable, pd.DataFrame(rows)


# ----------------------------------------------------------------------------- 2. fine-tuning
#: Precondition "above the floor": the arms a claim says score well must beat the 'all good' row (predict no
#: defect: defect AP = the defect-pixel prevalence) by this much defect AP, paired over seeds, so arms that all
#: sit at the floor leave the claim not evaluated rather than "did not hold". Two points: below the practical
#: size of 3, above the seed-to-seed wobble of a predictor that only learned the prevalence. A baseline the
#: claim expects to be weak may sit at the floor (scratch with the fewest labels, which the published default
#: run put at 0.033 against a floor of 0.015; MAE's frozen probe; the unrelated-photo MAE): that is the regime
#: the claim is about, and "A beats B" stays a fair test while A is above the floor.
FLOOR_MARGIN = 0.02

#: The ViT inits a claim says beat scratch (or another init) at the fewest labels: their precondition "above the
#: floor" there is judged over the regime seeds, as label-limited is (:func:`in_regime`).
REGIME_AT_FEWEST = ("mae", "simclr", "dinov2")


def in_regime(init: str, n: int, lo: int, hi: int, protocol: str = "full") -> bool:
    """Whether a run belongs to the regime the preconditions are judged on, over the regime seeds: the scratch ViT
    at the fewest and the most labels (label-limited), and at the fewest labels the inits of
    :data:`REGIME_AT_FEWEST` and the 'all good' floor (above the floor). At 4 labels a run's score is decided by
    which 4 images its seed draws (docs/data/ssl_industrial.md), so 5 seeds cannot say whether an arm sits above
    the floor there."""
    if protocol not in ("full", "-"):
        return False
    if init == "scratch":
        return n in (lo, hi)
    return n == lo and (init in REGIME_AT_FEWEST or init == "all_good")


def finetune_tasks(cfg, data, pretrained: dict, unavailable: dict) -> list[dict]:
    """The grid: every available init x label count x seed (full fine-tuning); the unrelated-photo MAE at the
    fewest labels (claim 3); frozen probes of every ViT init at the most labels (claim 2, and precondition
    "features learned": each pretrained encoder's probe against the random-init ViT's); the U-Net at the fewest
    labels (the few-label CNN baseline; no claim rests on it) and the 'all good' floor at every label count; and over the extra ``regime_seeds`` the scratch ViT at the fewest and
    the most labels and, at the fewest, the inits a claim says score well there and the floor (:func:`in_regime`:
    the label-limited and above-the-floor preconditions' runs, the same task as every other). An encoder
    that was pretrained but did not train is still run (its claims are not evaluated)."""
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    common = dict(
        block=hi,
        data_file=data["file"],
        data_seed=cfg.data_seed,
        arch=cfg.arch,
        encoder_kwargs=encoder_kwargs(cfg),
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        channels=cfg.channels,
        steps=cfg.finetune_steps,
        batch_size=cfg.finetune_batch_size,
        lr=cfg.finetune_lr,
        encoder_lr_scale=cfg.encoder_lr_scale,
        seg_head=cfg.seg_head,
        encoder_weights=cfg.encoder_weights,
        dinov2_weights=cfg.dinov2_weights,
        device=cfg.device,
    )

    def task(init, protocol, n, seed):
        enc = pretrained.get(init, {})
        file, digest = enc.get("task_file"), enc.get("digest")
        return dict(
            init=init, protocol=protocol, n_labels=n, seed=seed, encoder_file=file, encoder_digest=digest, **common
        )

    tasks = []
    for init in [*cfg.inits, "unet", "all_good"]:
        if init in unavailable and init not in pretrained:
            continue
        # the unrelated-photo MAE (claim 3) and the U-Net (no claim rests on it: the few-label CNN baseline, at
        # about twice a ViT run's minutes) at the fewest labels only
        counts = [lo] if init in ("mae_unrelated", "unet") else list(cfg.label_counts)
        for n in counts:
            seeds = regime_seeds(cfg) if in_regime(init, n, lo, hi) else list(cfg.seeds)
            tasks += [task(init, "full" if init in VIT_INITS else "-", n, seed) for seed in seeds]
        if init in VIT_INITS and "frozen" in cfg.protocols:
            tasks += [task(init, "frozen", hi, seed) for seed in cfg.seeds]
    return tasks


RUN_COLUMNS = ["init", "protocol", "n_labels", "seed", "defect_ap", "defect_f1", "image_auroc", "miou", "defect_iou"]
RUN_COLUMNS += [
    "decoder",
    "decoder_params",
    "trainable_params",
    "requires_grad_params",
    "seconds",
    "final_train_loss",
    "n_train",
    "train_defective",
]
RUN_COLUMNS += ["steps", "batch_size", "lr", "schedule"]  # the run's budget (its record's; empty for the floor)


def _grid_inputs(cfg, data, unavailable: dict) -> dict[str, str]:
    """The fine-tuning and PatchCore grids' inputs: the data's digest and, when the DINOv2 arm runs, its weights'
    digest, so that new weights under the same value (``pretrained``, a file) rerun its tasks."""
    inputs = {"data": data["digest"]}
    if "dinov2" in cfg.inits and "dinov2" not in unavailable:
        inputs["dinov2_weights"] = resolve_weights("dinov2_weights", cfg.dinov2_weights, DINOV2, fetch=False).digest
    return inputs


def finetune_grid(cfg, data, pretrained: dict, unavailable: dict) -> Grid:
    """The fine-tuning grid (not run): one task per :func:`finetune_tasks` entry."""
    grid = Grid(f"{NAME}-finetune", finetune_task, inputs=_grid_inputs(cfg, data, unavailable))
    for params in finetune_tasks(cfg, data, pretrained, unavailable):
        grid.add(**params)
    return grid


def finetune_frame(result: GridResult) -> pd.DataFrame:
    """One row per fine-tuning run (:data:`RUN_COLUMNS`), its budget in the budget columns."""
    frame = with_budget_columns(result.frame(), result.records)
    return frame[[c for c in RUN_COLUMNS if c in frame.columns]]


def split_regime(cfg, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, regime)``: ``runs`` holds every run over ``seeds`` (what the claims and the results table read),
    ``regime`` the regime's runs (:func:`in_regime`) over the regime seeds (``seeds`` plus ``regime_seeds``: what
    the label-limited and the above-the-floor-at-the-fewest-labels preconditions read)."""
    runs = frame[frame["seed"].isin(cfg.seeds)].reset_index(drop=True)
    return runs, regime_rows(frame, min(cfg.label_counts), max(cfg.label_counts))


def regime_rows(frame: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    """The rows of ``frame`` that belong to the regime (:func:`in_regime`), every seed they ran."""
    keep = [in_regime(i, int(n), lo, hi, p) for i, n, p in zip(frame["init"], frame["n_labels"], frame["protocol"])]
    return frame[np.asarray(keep, bool)].reset_index(drop=True)


# ----------------------------------------------------------------------------- 3. anomaly detection
def patchcore_grid(cfg, data, pretrained: dict, unavailable: dict) -> Grid:
    """The PatchCore grid (not run): one task per ViT init asked for that has weights."""
    inits = [i for i in cfg.inits if i in VIT_INITS and (i not in unavailable or i in pretrained)]
    grid = Grid(f"{NAME}-patchcore", patchcore_task, inputs=_grid_inputs(cfg, data, unavailable))
    for init in inits:
        enc = pretrained.get(init, {})
        grid.add(
            init=init,
            data_file=data["file"],
            encoder_file=enc.get("task_file"),
            encoder_digest=enc.get("digest"),
            arch=cfg.arch,
            encoder_kwargs=encoder_kwargs(cfg),
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            channels=cfg.channels,
            coreset_ratio=cfg.coreset_ratio,
            neighbourhood=cfg.patchcore_neighbourhood,
            reweight_neighbours=cfg.patchcore_reweight_neighbours,
            encoder_weights=cfg.encoder_weights,
            dinov2_weights=cfg.dinov2_weights,
            seed=cfg.seeds[0],
            device=cfg.device,
        )
    return grid


def anomaly_frame(result: GridResult) -> pd.DataFrame:
    """One row per init: image AUROC, pixel AUROC, AUPRO and the memory bank's size."""
    frame = result.frame()
    if len(frame):
        frame = frame[["init", "image_auroc", "pixel_auroc", "aupro", "memory_bank", "reweight_neighbours"]]
        frame.insert(1, "row", [INIT_LABELS.get(i, i) for i in frame["init"]])
    return frame


# ----------------------------------------------------------------------------- the tables the claims judge
BUDGET_TABLE_COLUMNS = ["stage", "init", "protocol", "n_labels", "seed", *BUDGET_KEYS]


def budgets_frame(runs: pd.DataFrame, pretrained: dict | None = None) -> pd.DataFrame:
    """The ``budgets`` claim table: one row per trained run, ``stage`` pretrain (one per pretrained init, from
    its record's ``budget``) or finetune (init x protocol x label count x seed, from the runs' budget
    columns), with steps, batch_size, lr, schedule and trainable_params. A run without a budget has no row, so
    precondition "same budget" fails on it rather than comparing two blanks."""
    rows = []
    for name, p in (pretrained or {}).items():
        budget = p["record"].get("budget")
        if budget:
            rows.append({"stage": "pretrain", "init": name, "protocol": "-", **budget})
    if all(k in runs.columns for k in BUDGET_KEYS):
        trained = runs.dropna(subset=["steps"])
        for r in trained.to_dict("records"):
            rows.append({"stage": "finetune", **{k: r.get(k) for k in BUDGET_TABLE_COLUMNS if k != "stage"}})
    out = pd.DataFrame(rows, columns=BUDGET_TABLE_COLUMNS)
    whole = {"steps": "Int64", "batch_size": "Int64", "trainable_params": "Int64"}
    return out.astype(dict.fromkeys(whole, float)).astype(whole)


def claim_tables(results: dict) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on: ``runs`` (init x protocol x label count x seed, the 'all good'
    floor and the frozen probes included), ``regime`` (:func:`regime_rows` over the regime seeds: the
    label-limited and above-the-floor-at-the-fewest-labels preconditions'; without one given, those rows of
    ``runs``),
    ``gaps`` (each init's defect AP minus scratch's, same seed and label count), ``gains`` (full fine-tuning
    minus the frozen probe, same seed, at the most labels), ``pretraining`` (per pretrained init: loss after
    pretraining and the best learner-free predictor's, on the same fixed batches) and ``budgets``
    (:func:`budgets_frame`)."""
    runs = results["runs"]
    regime = results.get("regime")
    if regime is None:
        regime = regime_rows(runs, int(runs["n_labels"].min()), int(runs["n_labels"].max()))
    full = runs[runs["protocol"] == "full"]
    gaps = matched_differences(
        full[full["init"] != "scratch"],
        full[full["init"] == "scratch"],
        on=["n_labels", "seed"],
        value="defect_ap",
        out="gap_ap",
        keep=["init", "n_labels", "seed"],
    )
    gains = matched_differences(
        runs[runs["protocol"] == "frozen"],
        full,
        on=["init", "n_labels", "seed"],
        value="defect_ap",
        out="gain_ap",
        keep=["init", "seed"],
        reference_first=True,
    )
    pretrained = results.get("pretrained", {})
    return {
        "runs": runs,
        "regime": regime,
        "gaps": gaps,
        "gains": gains,
        "pretraining": pretraining_frame(pretrained),
        "budgets": budgets_frame(runs, pretrained),
    }
