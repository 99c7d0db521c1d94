"""The preset's real budget (``labkit plan``), from the same helpers the study's grids use."""

from __future__ import annotations

import math

from labkit.methods.linear_probe import LinearProbe
from labkit.methods.unet_training import effective_batch
from labkit.studies.base import regime_seeds
from labkit.studies.noisy_label_pretraining.data import (
    STUDY,
    finetune_steps,
    label_key,
    main_noisy_key,
    shared_pretraining,
    steps_for_k,
    sweep_levels,
)
from labkit.studies.noisy_label_pretraining.setup import FEWEST_TILES_ONLY, PROBE_STEPS, pretrain_jobs
from labkit.studies.noisy_label_pretraining.tasks import build_model

#: Classes of task A where the data decide it (the simulated legend's fine classes).
PLAN_CLASSES = 7


def _finetune_runs(cfg) -> dict[int, int]:
    """Fine-tuning runs per k, as ``run`` adds them: the regime seeds' random init at the fewest and the most tiles,
    every init at every k (some at the fewest only), the sweep, its k's own arms, task B."""
    ks = sorted(cfg.k_values)
    main, levels, sweep_k = main_noisy_key(cfg), sweep_levels(cfg), int(cfg.sweep_k or ks[0])
    runs: dict[int, int] = {}
    add = lambda k, n=1: runs.__setitem__(k, runs.get(k, 0) + n)  # noqa: E731
    extra = [v for v in regime_seeds(cfg) if v not in cfg.seeds]
    add(ks[-1], len(extra)), add(ks[0], len(extra))
    for k in ks:
        add(k, len(cfg.seeds) * sum(1 for i in cfg.inits if not (i in FEWEST_TILES_ONLY and k != ks[0])))
    add(sweep_k, len(cfg.seeds) * sum(1 for v in levels if label_key(v) != main or sweep_k not in ks))
    if sweep_k not in ks:
        add(sweep_k, 3 * len(cfg.seeds))
    if cfg.data_source == "simulated":
        add(cfg.task_b_k, 2 * len(cfg.seeds))
    return runs


def plan(cfg) -> list:
    """Pretraining and fine-tuning grids as ``run`` builds them (ImageNet init assumed available; task B only
    on simulated data): a fixed number of steps, each batch ``batch_size`` tiles capped at the tiles drawn from
    (no tile twice in a batch); ``epochs`` are data epochs (steps x batch / tiles)."""
    from labkit.core.plan import GridPlan, TaskBudget, measure

    s = {k: cfg[k] for k in ("encoder", "encoder_depth", "decoder_width", "batch_size", "tile", "eval_points")}
    bands, b, tile = len(cfg.bands), s["batch_size"], s["tile"]
    build = lambda: build_model(PLAN_CLASSES, s["encoder"], bands, s["decoder_width"], encoder_depth=s["encoder_depth"])  # noqa: E731
    flops, tr, tot = measure(
        ("noisy", s["encoder"], s["encoder_depth"], s["decoder_width"], tile, bands), build, [(2, bands, tile, tile)]
    )

    def common(items: int) -> dict:
        # batches of batch_size capped at the tiles drawn from, no tile twice in a batch (unet_training.tile_loader)
        batch = effective_batch(b, items)
        return dict(
            input_size=f"{tile} px x {bands} ch",
            batch=batch,
            requested_batch=b,
            full_batch_ok=True,
            trainable_params=tr,
            total_params=tot,
            flops_per_step=flops * batch,
        )

    main, levels = main_noisy_key(cfg), sweep_levels(cfg)
    label_sets = ["clean"] + sorted({main} | {label_key(v) for v in levels})
    shared = shared_pretraining(cfg)
    layer_steps = cfg.get("layer_pretrain_steps")
    layer_steps = int(cfg.pretrain_steps if layer_steps is None else layer_steps)
    jobs = pretrain_jobs(cfg.seeds, label_sets, main, int(cfg.pretrain_steps), layer_steps, shared)
    n = int(cfg.n_pretrain_tiles)
    pres = []
    for what in ("arms", "layers"):  # each job counted under its first purpose
        group = [key for key, purposes in jobs.items() if purposes[0] == what]
        if not group:
            continue
        steps = group[0][3]
        epochs = min(10, steps)
        spe = max(1, steps // epochs) if epochs else 0  # 0 steps: nothing is trained
        pres.append(
            TaskBudget(
                {
                    "arms": "pretrain (the arms' label sets" + (", shared by every seed)" if shared else ", per seed)"),
                    "layers": "pretrain (the layer-wise trio per seed)",
                }[what],
                len(group),
                n,
                steps=epochs * spe,
                epochs=round(epochs * spe * effective_batch(b, n) / n, 2),
                steps_per_epoch=math.ceil(n / effective_batch(b, n)),
                params={
                    "batch": "batch_size",
                    "data_items": "n_pretrain_tiles",
                    "steps": "layer_pretrain_steps" if what == "layers" else "pretrain_steps",
                },
                **common(n),
            )
        )
    ks = sorted(cfg.k_values)
    fine = []
    for k, n in sorted(_finetune_runs(cfg).items()):
        steps = steps_for_k(finetune_steps(cfg), ks, k)
        per = max(1, steps // s["eval_points"])
        batch = effective_batch(b, k)
        fine.append(
            TaskBudget(
                f"fine-tune k={k}",
                n,
                k,
                steps=s["eval_points"] * per,
                epochs=round(s["eval_points"] * per * batch / k, 1),
                steps_per_epoch=math.ceil(k / batch),
                params={"batch": "batch_size", "data_items": "k_values", "steps": "finetune_steps"},
                notes=f"batch {batch} of the {k} tiles (batch_size {b} capped at k: no tile twice in a batch); "
                f"lr {cfg.finetune_lr:g} (finetune_lr) for random init, "
                f"{cfg.finetune_lr if cfg.get('finetune_lr_pretrained') is None else cfg.finetune_lr_pretrained:g} "
                "(finetune_lr_pretrained) for the pretrained arms",
                **common(k),
            )
        )
    # the frozen linear probes ("features learned"): noisy-pretrained and random-init encoder per claim seed, a
    # linear head trained on the fewest tiles; the frozen encoder's forward counted, the head alone trainable
    probe_build = lambda: LinearProbe(build().encoder, PLAN_CLASSES)  # noqa: E731
    p_flops, p_tr, p_tot = measure(
        ("noisy-probe", s["encoder"], s["encoder_depth"], s["decoder_width"], tile, bands),
        probe_build,
        [(2, bands, tile, tile)],
    )
    steps = int(cfg.get("probe_steps") or PROBE_STEPS)
    probe = TaskBudget(
        f"probe k={ks[0]}",
        2 * len(cfg.seeds),
        ks[0],
        steps=steps,
        epochs=round(steps * effective_batch(b, ks[0]) / ks[0], 1),
        steps_per_epoch=math.ceil(ks[0] / effective_batch(b, ks[0])),
        params={"batch": "batch_size", "data_items": "k_values", "steps": "probe_steps"},
        **{
            **common(ks[0]),
            "trainable_params": p_tr,
            "total_params": p_tot,
            "flops_per_step": p_flops * effective_batch(b, ks[0]),
        },
    )
    return [
        GridPlan(
            STUDY,
            "pretrain",
            f"{len(label_sets)} label sets {'shared' if shared else f'x {len(cfg.seeds)} seeds'}; clean (order 0, 1) and "
            f"main noisy x {len(cfg.seeds)} seeds for the layer-wise claim (one network serving both trained once)",
            pres,
        ),
        GridPlan(
            STUDY,
            "finetune",
            "inits x k x seeds, the noise sweep, task B and regime runs",
            fine,
            notes="classes from the data (7 counted); plus a QDA grid without a network",
        ),
        GridPlan(
            STUDY,
            "probe",
            f"frozen linear probes: noisy-pretrained and random-init encoder x {len(cfg.seeds)} seeds (the noisy one "
            "is also the saved checkpoint's, whose sidecar records this precondition)",
            [probe],
        ),
    ]
