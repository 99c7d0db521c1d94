"""FARCLUSS experiment: every arm x split x seed as a grid of cached tasks (after a grid of the splits' warm-ups),
then the cost per iteration, gathered into :class:`labkit.studies.base.Runs`.

Each distinct configuration is one arm and runs once per split and seed (:func:`arms.run_plan`). The all-labels
supervised run (split ``all``) is the ceiling of the label-limited precondition and of the tail-resolvable one; the
extra ``regime_seeds`` run supervised-only at the smallest split and with all labels (the preconditions' table).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from labkit.core.claims import BUDGET_KEYS
from labkit.core.grid import Grid, GridResult, grid_runs
from labkit.core.paths import cache_dir
from labkit.data import scenes as sc
from labkit.data.prepared_arrays import write_prepared_arrays, write_state_file
from labkit.methods import semisup as ss
from labkit.models.weights import resolve_weights
from labkit.studies.base import Runs, Stopwatch, regime_seeds, run_grids, task_device

from .arms import (
    ABLATION_ADD,
    ABLATION_REMOVE,
    FLOOR_ARM,
    ablation_arms,
    arm_config,
    decoder_kwargs,
    main_runs,
    model_params,
    run_plan,
)
from .costs import CostResults, measure_costs, no_cost_tables
from .data import ALL_LABELS, GROUPS, NAME, StudyData, crop_size, labelled_indices, split_fraction, split_names
from .tasks import arm_task, build_model, warmup_task

#: The claims judged on trained arms (not the cost claims, which time steps of random weights).
ARM_CLAIMS = ("beats_baselines_every_fraction", "largest_gains_tail_and_boundaries", "each_part_contributes")
BUDGET_TABLE_COLUMNS = ["arm", "split", *BUDGET_KEYS, "unlabeled_batch", "seeds"]


@dataclass
class Trained:
    """What the two grids computed: one row per trained run (arm x split x seed, regime runs included) with its
    scores, its budget, the labelled splits, and the FARCLUSS teacher of the first split and seed."""

    every: pd.DataFrame
    budgets: pd.DataFrame
    splits: pd.DataFrame
    teacher: Any = None
    seconds: float = 0.0


def run(cfg, data: StudyData, split_dir: str | Path | None = None) -> Runs:
    """Train every arm (:func:`train`), measure the cost per iteration (:func:`costs.measure_costs`), gather both.

    The encoder's weights are resolved once first (``pretrained`` fetched here if need be, so that the tasks only
    read a file). Every trained arm starts from that encoder: when its weights cannot be had, no arm trains and
    every claim about the arms is *not evaluated* with the reason (the parameter to set and the file to provide);
    the rest of the study (the splits, the cost per iteration, which times random weights) still runs.

    ``split_dir``: where the drawn split lists are written (the notebook passes its run folder); by default the
    run folder ``labkit reproduce`` names (``LABKIT_REPORT_DIR``), else a fresh temporary folder: never a shared
    cache that another run would overwrite."""
    split_dir = Path(split_dir) if split_dir else _split_folder()
    weights = resolve_weights("encoder_weights", cfg.encoder_weights, cfg.encoder)
    with Stopwatch() as clock:
        trained = train(cfg, data, split_dir) if weights.ok else not_trained(cfg, data, split_dir)
        costs = measure_costs(cfg, data)
    reason = None if weights.ok else f"every arm trains the encoder from these weights; {weights.reason}"
    runs = gather(cfg, trained, data, costs, weights_reason=reason)
    runs.grids, runs.seconds = grid_runs(since=clock.started), clock.seconds
    return runs


def _split_folder() -> Path:
    """The run's own folder for its split lists: ``splits/`` of the run folder ``labkit reproduce`` names, else a
    fresh temporary folder."""
    import os
    import tempfile

    managed = os.environ.get("LABKIT_REPORT_DIR")
    return Path(managed) / "splits" if managed else Path(tempfile.mkdtemp(prefix="farcluss-splits-"))


def train(cfg, data: StudyData, split_dir: str | Path | None = None, progress: bool | None = None) -> Trained:
    """Every arm x split x seed as a grid of cached tasks (after a grid of the splits' warm-ups)."""
    start = time.perf_counter()
    root = cache_dir(NAME)
    shared = _shared(cfg, data, root / "data")
    plan = run_plan(cfg)
    few, extra_seeds = split_names(cfg)[0], [s for s in regime_seeds(cfg) if s not in cfg.seeds]
    # every (split, seed) trained: the main seeds on every split, the extra regime seeds on the smallest and all
    trained = [(sp, sd) for sp in dict.fromkeys(s for _, s in plan) for sd in cfg.seeds]
    trained += [(sp, sd) for sp in (few, ALL_LABELS) for sd in extra_seeds]
    runs = [(a, sp, sd) for a, sp in plan for sd in cfg.seeds]
    runs += [("supervised", sp, sd) for sp in (few, ALL_LABELS) for sd in extra_seeds]
    labelled, split_rows = _labelled_splits(cfg, data, trained, Path(split_dir) if split_dir else _split_folder())
    (warm,) = run_grids(cfg, _warmup_grid(cfg, trained, labelled, shared), progress=progress)
    warm_files = _warm_files(warm, root / "warm")
    (arms,) = run_grids(cfg, _arm_grid(cfg, data, runs, labelled, warm_files, shared), progress=progress)
    every, budgets, teacher = _records(arms, shared["model"])
    return Trained(
        add_group_scores(every, data), budgets, pd.DataFrame(split_rows), teacher, time.perf_counter() - start
    )


#: The columns of the trained runs' table when no arm could train (the tables, figures and headline read them).
RUN_COLUMNS = ["arm", "split", "seed", "n_labeled", "miou", "miou_head", "miou_body", "miou_tail", "boundary_miou"]


def not_trained(cfg, data: StudyData, split_dir: str | Path | None = None) -> Trained:
    """What :func:`train` gives when no arm can train (the encoder's weights are missing): the labelled splits
    (drawn and listed as a trained run would), and empty runs and budgets."""
    plan = run_plan(cfg)
    trained = [(sp, sd) for sp in dict.fromkeys(s for _, s in plan) for sd in cfg.seeds]
    _, split_rows = _labelled_splits(cfg, data, trained, Path(split_dir) if split_dir else _split_folder())
    empty = pd.DataFrame(columns=RUN_COLUMNS).astype({"seed": int, "n_labeled": int})
    return Trained(empty, pd.DataFrame(columns=["arm", "split", "seed", *BUDGET_KEYS]), pd.DataFrame(split_rows))


def _shared(cfg, data: StudyData, folder: Path) -> dict[str, Any]:
    """What every task of both grids shares: the study's arrays written once under their digest (the grids'
    input), the network's parameters and the device, resolved here once."""
    arrays = {
        "train_images": data.train.images,
        "train_masks": data.train.masks,
        "val_images": data.val.images,
        "val_masks": data.val.masks,
        "val_band": data.val_band,
    }
    if data.train_sizes is not None:  # whole images (real: in padded canvases) cropped at every step: true sizes
        arrays["train_sizes"] = np.asarray(data.train_sizes)
    data_file, digest = write_prepared_arrays(
        folder,
        {**arrays, "class_names": np.array(data.class_names, dtype=object).astype(str)},
        digest_of=tuple(arrays),
    )
    inputs = {"data": digest}
    if cfg.encoder_weights != "random":  # new weights in the same file rerun the tasks (random init has no file)
        inputs["weights"] = resolve_weights("encoder_weights", cfg.encoder_weights, cfg.encoder, fetch=False).digest
    shared = {
        "data_file": data_file,
        "digest": digest,
        "model": model_params(cfg, data),
        "device": task_device(cfg),
        # every step's optimiser, and a new random crop per step from whole real images (none on simulated scenes)
        "optimiser": optimiser_params(cfg) | ({"crop": data.crop} if data.crop is not None else {}),
    }
    return {**shared, "inputs": inputs}


def optimiser_params(cfg) -> dict[str, Any]:
    """The tasks' optimiser parameters; AdamW at one learning rate is the tasks' default and is not passed, so
    that the cached tasks of the CPU presets keep their keys."""
    optimizer, scale = str(cfg.optimizer), float(cfg.head_lr_scale)
    return {} if (optimizer, scale) == ("adamw", 1.0) else {"optimizer": optimizer, "head_lr_scale": scale}


def _labelled_splits(cfg, data: StudyData, trained, split_dir: Path) -> tuple[dict, list[dict]]:
    """The labelled indices of every (split, seed) and one row per (split, seed): its sizes, the classes without a
    labelled pixel (warned) and the split lists written (drawn splits) or read (``data_root/splits/``)."""
    labelled: dict[tuple[str, int], list[int]] = {}
    rows = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sc.SplitCoverageWarning)
        for split, seed in trained:
            chosen, missing = labelled_indices(cfg, data, split, seed)
            labelled[split, seed] = chosen
            row = {
                "split": split,
                "seed": seed,
                "labeled": len(chosen),
                "unlabeled": len(data.train) - len(chosen),
                "classes_without_labels": ", ".join(missing),
            }
            if split != ALL_LABELS and split not in data.split_lists:
                ids = data.train.ids
                chosen_ids = [ids[i] for i in chosen]
                taken = set(chosen)
                rest = [ids[i] for i in range(len(ids)) if i not in taken]
                path = sc.write_split_lists(split_dir / split / f"seed{seed}", chosen_ids, rest)
                row["lists"] = f"{path.parent.name}/{path.name}/labeled.txt"
            else:
                row["lists"] = "data_root/splits/" + split if split in data.split_lists else "-"
            rows.append(row)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=4)  # the caller of run
    return labelled, rows


def _warmup_grid(cfg, trained, labelled, shared: dict) -> Grid:
    """One supervised warm-up per (split, seed), shared by every arm of that split and seed."""
    warm = Grid(f"{NAME}-warmup", warmup_task, inputs=shared["inputs"])
    for split, seed in trained:
        warm.add(
            data_file=shared["data_file"],
            split=split,
            labeled=labelled[split, seed],
            seed=seed,
            model=shared["model"],
            iterations=cfg.warmup_iterations,
            crop_min_scale=cfg.crop_min_scale,
            device=shared["device"],
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            **shared["optimiser"],
        )
    return warm


def _warm_files(result: GridResult, folder: Path) -> dict[tuple[str, int], tuple[str, str]]:
    """Each warm-up's weights as a file named by its content: (split, seed) -> (path, digest). The arm tasks name
    their warm-up by its content, so that their draws do not depend on this code."""
    return {
        (task.params["split"], task.params["seed"]): write_state_file(folder, record["state"])
        for task, record in zip(result.tasks, result.records)
    }


def _arm_grid(cfg, data: StudyData, runs, labelled, warm_files, shared: dict) -> Grid:
    """One task per (arm, split, seed), from that split and seed's warm-up; the FARCLUSS run of the first split and
    seed keeps its teacher's weights (the pseudo-label figure's)."""
    arms = Grid(f"{NAME}-arms", arm_task, inputs=shared["inputs"])
    first_split = split_names(cfg)[0]
    for arm, split, seed in runs:
        path, fp = warm_files[split, seed]
        arms.add(
            data_file=shared["data_file"],
            split=split,
            labeled=labelled[split, seed],
            seed=seed,
            arm=arm,
            config=asdict(arm_config(cfg, arm)),
            model=shared["model"],
            iterations=cfg.iterations,
            lr_schedule=cfg.lr_schedule,
            warm_path=path,
            warm_digest=fp,
            device=shared["device"],
            tile=data.tile,
            class_names=list(data.class_names),
            keep_state=bool(arm == "farcluss" and split == first_split and seed == cfg.seeds[0]),
            warmup_iterations=cfg.warmup_iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            **shared["optimiser"],
        )
    return arms


def _records(result: GridResult, model: dict) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """The arm grid's records as one row of scalars per run, one row of budget per run, and the kept teacher."""
    rows, budgets, teacher = [], [], None
    for task, record in zip(result.tasks, result.records):
        p = task.params
        budgets.append({"arm": p["arm"], "split": p["split"], "seed": p["seed"], **record["budget"]})
        if "state" in record:
            teacher = build_model(model)
            teacher.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in record["state"].items()})
            teacher.eval()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append({"arm": p["arm"], "split": p["split"], "seed": p["seed"], **scalars})
    return pd.DataFrame(rows), pd.DataFrame(budgets), teacher


def add_group_scores(runs: pd.DataFrame, data: StudyData) -> pd.DataFrame:
    """Columns ``miou_head``, ``miou_body``, ``miou_tail``: mean IoU over the classes of each frequency group."""
    runs = runs.copy()
    for group in GROUPS:
        cols = [f"iou/{c}" for c in data.class_names if data.groups[c] == group and f"iou/{c}" in runs]
        runs[f"miou_{group}"] = runs[cols].mean(axis=1, skipna=True) if cols else np.nan
    return runs


# ----------------------------------------------------------------------------- gathered


def gather(
    cfg, trained: Trained, data: StudyData, costs: CostResults | None = None, weights_reason: str | None = None
) -> Runs:
    """The runs every table, figure, claim and headline reads.

    ``tables``: what the claims are judged on: ``runs`` (arm x split x seed at the main seeds, with the
    majority-class floor rows), ``gains`` (baseline x part x seed), ``regime`` (supervised at the smallest split and
    all labels over the regime seeds), ``budgets`` (each trained arm's steps, batch size, lr, schedule, trainable
    parameters), ``cost_rounds`` (contrast x measuring round), ``scaling`` (contrast x repeat) and ``cost_regime``
    (the size of the network whose step was timed); and ``trained`` (the runs without the floor rows), ``splits``,
    ``step_costs`` and ``contrast_scaling`` for the tables.

    ``weights_reason``: why no arm trained (the encoder's weights missing): every trained arm and every claim about
    the arms is then unavailable with that reason."""
    few, every = split_names(cfg)[0], trained.every
    regime = every[(every.arm == "supervised") & every.split.isin([few, ALL_LABELS])].reset_index(drop=True)
    runs = every[every.seed.isin(cfg.seeds)].reset_index(drop=True)
    if "fraction" not in runs:
        fractions = [split_fraction(s) for s in runs.split]
        runs.insert(
            2, "fraction", [f if f is not None else n / len(data.train) for f, n in zip(fractions, runs.n_labeled)]
        )
    tables = {
        "runs": _with_floor(runs, data.floor_miou),
        # the plateau precondition reads its own table: only the rows that measure a late gain (a floor row or a
        # comparison's row must not count as an arm that was never scored part-way); NaN stays and fails the check
        "plateau": runs.reindex(columns=["arm", "split", "seed", "late_gain"]).reset_index(drop=True),
        "gains": gains_table(runs),
        "regime": regime if len(regime) else runs,
        "budgets": budget_table(trained.budgets),
        **(costs.claim_tables() if costs is not None else no_cost_tables()),
        "trained": runs,
        "splits": trained.splits,
        "step_costs": costs.table if costs is not None else pd.DataFrame(),
        "contrast_scaling": costs.scaling if costs is not None else pd.DataFrame(),
    }
    not_run = [a for a in (*ABLATION_REMOVE, *ABLATION_ADD) if a not in ablation_arms(cfg)]
    unavailable = {a: f"not run at ablation: {cfg.ablation}; run with ablation: all" for a in not_run}
    claims_unavailable = {}
    if weights_reason:
        unavailable.update({arm: weights_reason for arm, _ in run_plan(cfg)})
        claims_unavailable = {c: weights_reason for c in ARM_CLAIMS}
    return Runs(
        tables=tables,
        unavailable=unavailable,
        context={"data": data, "unavailable": claims_unavailable},
        examples={"teacher": trained.teacher, "training_seconds": trained.seconds},
    )


def gains_table(runs: pd.DataFrame) -> pd.DataFrame:
    """FARCLUSS minus each baseline per seed, averaged over the main splits: one row per baseline x part x seed."""
    main = main_runs(runs).set_index(["split", "seed", "arm"])
    cols = {"head": "miou_head", "body": "miou_body", "tail": "miou_tail", "boundary": "boundary_miou", "all": "miou"}
    rows = []
    if main.empty:
        return pd.DataFrame(rows, columns=["baseline", "part", "seed", "gain"])
    far = main.xs("farcluss", level="arm")
    for base in ("supervised", "fixmatch"):
        diff = far[list(cols.values())] - main.xs(base, level="arm")[list(cols.values())]
        per_seed = diff.groupby(level="seed").mean()
        for part, col in cols.items():
            for seed, value in per_seed[col].items():
                rows.append({"baseline": base, "part": part, "seed": seed, "gain": float(value)})
    return pd.DataFrame(rows, columns=["baseline", "part", "seed", "gain"])


def budget_table(budgets: pd.DataFrame | None) -> pd.DataFrame:
    """The training budget of every trained arm from initialisation (shared warm-up + the arm's steps): one
    row per arm, split and distinct budget, with the seeds that had it. The "same budget" precondition reads
    it; ``unlabeled_batch`` (the unlabeled images a teacher-student step adds) is shown, not compared."""
    if budgets is None or budgets.empty:
        return pd.DataFrame(columns=BUDGET_TABLE_COLUMNS)
    budgets = budgets.copy()
    if "unlabeled_batch" not in budgets:
        budgets["unlabeled_batch"] = np.nan
    keys = ["arm", "split", *BUDGET_KEYS, "unlabeled_batch"]
    table = budgets.groupby(keys, as_index=False, sort=False, dropna=False).agg(seeds=("seed", "nunique"))
    return table[BUDGET_TABLE_COLUMNS].reset_index(drop=True)


def _with_floor(runs: pd.DataFrame, floor_miou: float) -> pd.DataFrame:
    """The runs and, per split and seed, the majority-class floor row (arm :data:`FLOOR_ARM`) they pair with."""
    if not math.isfinite(floor_miou) or runs.empty:
        return runs
    keys = runs[["split", "seed"]].drop_duplicates()
    floor = keys.assign(arm=FLOOR_ARM, miou=float(floor_miou))
    if "fraction" in runs:
        floor = floor.merge(runs[["split", "fraction"]].drop_duplicates("split"), on="split", how="left")
    return pd.concat([runs, floor], ignore_index=True)


# ----------------------------------------------------------------------------- the preset's real budget (labkit plan)

#: Classes of each data source (``folders``: from the data; VOC's count is used).
PLAN_CLASSES = {"voc": 21, "cityscapes": 19, "folders": 21}


def plan(cfg) -> list:
    """The warm-up and arm grids from :func:`run_plan`, :func:`regime_seeds` and :func:`split_names`; a
    teacher-student step is the student's forward and backward on the labelled and the unlabelled batch plus
    the teacher's forward on the unlabelled one."""
    from labkit.core.plan import GridPlan, TaskBudget, measure

    classes = len(sc.SCENE_CLASSES) if cfg.data_source == "simulated" else PLAN_CLASSES[cfg.data_source]
    kwargs = decoder_kwargs(cfg)
    build = lambda: ss.build_model(classes, cfg.encoder, cfg.arch, cfg.embed_dim, weights="random", **kwargs)  # noqa: E731
    size, note = crop_size(cfg)  # the side the model can take, asked of it
    fb, tr, tot = measure(("farcluss", cfg.encoder, cfg.arch, size, str(kwargs)), build, [(2, 3, size, size)])
    if cfg.data_source != "simulated":
        what = "a new random crop of a whole image"
    elif cfg.scene_size is not None and cfg.scene_size > size:
        what = f"a new random crop of a whole {cfg.scene_size}-px simulated scene"
    else:
        what = "a whole simulated scene"
    seen = (
        f"a step sees {cfg.batch_size} x {size} x {size} = {cfg.batch_size * size * size:,} labelled pixels "
        f"({what} per image; the teacher-student arms as many unlabelled)"
    )
    note = "; ".join(n for n in (seen, note) if n)
    fwd, _, _ = measure(
        ("farcluss-fwd", cfg.encoder, cfg.arch, size, str(kwargs)), build, [(2, 3, size, size)], backward=False
    )
    extra = [s for s in regime_seeds(cfg) if s not in cfg.seeds]
    few, n_train = split_names(cfg)[0], cfg.n_train_images
    n_trained = len(split_names(cfg)) * len(cfg.seeds) + 2 * len(extra)
    b = cfg.batch_size
    common = dict(trainable_params=tr, total_params=tot, params={"batch": "batch_size", "data_items": "n_train_images"})
    warm = TaskBudget(
        "supervised warm-up",
        n_trained,
        n_train,
        f"{size} px x 3 ch",
        b,
        cfg.warmup_iterations,
        notes=note + ("; " if note else "") + "labelled images drawn with replacement",
        replacement=True,
        flops_per_step=fb * b,
        **common,
    )
    arms: dict[str, int] = {}
    for arm, _split in run_plan(cfg):
        arms[arm] = arms.get(arm, 0) + len(cfg.seeds)
    arms["supervised"] = arms.get("supervised", 0) + 2 * len(extra)
    budgets = [
        TaskBudget(
            arm,
            n,
            n_train,
            f"{size} px x 3 ch",
            b,
            cfg.iterations,
            replacement=True,
            flops_per_step=fb * b if arm == "supervised" else (2 * fb + fwd) * b,
            notes=(
                f"{size} px crops"
                if arm == "supervised"
                else f"{b} labelled + {b} unlabelled {size} px crops per step, plus the teacher's forward"
            ),
            **common,
        )
        for arm, n in arms.items()
    ]
    return [
        GridPlan(
            "farcluss",
            "warmup",
            f"{len(split_names(cfg))} splits x {len(cfg.seeds)} seeds (+ regime seeds at {few}, all)",
            [warm],
        ),
        GridPlan(
            "farcluss", "arms", f"{len(run_plan(cfg))} (arm, split) x {len(cfg.seeds)} seeds + regime runs", budgets
        ),
    ]
