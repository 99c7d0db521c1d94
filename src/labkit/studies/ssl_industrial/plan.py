"""Study 3's plan: the preset's real budget of its three grids (``labkit plan``), from the same helpers the study
runs (:func:`experiment.pretrain_params`, :func:`experiment.finetune_tasks`); no pixel is read: a real folder's
pretraining inputs, PatchCore's memory bank and test set are its images' tiles, counted from file names and image
headers (:func:`data.split_inputs`), and the unrelated photos count as many as the pretraining inputs."""

from __future__ import annotations

from collections import Counter

from .data import NAME, PRETRAINED, VIT_INITS, split_inputs
from .experiment import encoder_kwargs, finetune_tasks, pretrain_params
from .tasks import dinov2_encoder, dinov2_side, new_vit, pretraining_epochs

#: The paper's settings (MAE: He et al. 2022; SimCLR: Chen et al. 2020) that the plan warns about when far off.
REFERENCE = {"mask_ratio": 0.75, "pretrain_batch_size": 256}


def plan(cfg) -> list:
    """The three grids' budgets (``labkit plan``)."""
    from labkit.core.plan import GridPlan

    c, s = cfg.channels, cfg.img_size
    vit = lambda: new_vit(cfg.arch, s, cfg.patch_size, c, encoder_kwargs(cfg))  # noqa: E731
    real = split_inputs(cfg)  # a real folder: its sets' images and tiles (headers only); None when simulated
    pre = _pretrain_budgets(cfg, vit, real)
    tasks = finetune_tasks(cfg, {"file": None}, {}, {})
    fine = _finetune_budgets(cfg, vit, tasks)
    patch = _patchcore_budgets(cfg, vit, real)
    return [
        GridPlan(NAME, "pretrain", f"{len(pre)} pretrainings x 1 seed", pre),
        GridPlan(
            NAME,
            "finetune",
            f"inits x label counts x seeds ({len(tasks)} tasks less the untrained floor)",
            fine,
            notes="'all_good' runs are the no-training floor: not counted",
        ),
        GridPlan(NAME, "patchcore", f"{len(patch)} inits x 1 seed", patch),
    ]


def _pretrain_budgets(cfg, vit, sets) -> list:
    """One budget per pretraining (MAE or SimCLR, in-domain or unrelated)."""
    from labkit.core.plan import TaskBudget, measure
    from labkit.methods.ssl import MaskedAutoencoder, SimCLR

    c, s = cfg.channels, cfg.img_size
    real = sets and sets["unlabeled"]  # a real folder: its defect-free images cut into img_size tiles
    n = real["tiles"] if real else cfg.n_unlabeled
    where = (
        f"{real['tiles']} tiles of img_size {s} cut from the {real['images']} defect-free images left for "
        f"pretraining (n_unlabeled = {cfg.n_unlabeled})"
        if real
        else ""
    )
    pre = []
    for init in [name for name in PRETRAINED if name in cfg.inits]:
        p = pretrain_params(cfg, {"file": None}, init)
        batch = p["batch_size"]
        epochs = pretraining_epochs(p["steps"], n, batch)
        spe = n // batch
        if p["method"] == "mae":
            build = lambda: MaskedAutoencoder(  # noqa: E731
                vit(), 96, 1, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.mae_norm_pix_loss
            )
        else:
            build = lambda: SimCLR(vit())  # noqa: E731
        flops, tr, tot = measure(("ssl", p["method"], s, c, cfg.arch, str(encoder_kwargs(cfg))), build, [(2, c, s, s)])
        pre.append(
            TaskBudget(
                f"{init} ({p['method'].upper()})",
                1,
                n,
                f"{s} px x {c} ch",
                batch,
                epochs * spe,
                epochs,
                spe,
                tr,
                tot,
                flops * batch,
                notes="; ".join(
                    x for x in (where, "the unrelated photos: as many inputs" if init == "mae_unrelated" else "") if x
                ),
                params={
                    "batch": "pretrain_batch_size",
                    "data_items": "n_unlabeled",
                    "steps": "mae_steps" if p["method"] == "mae" else "simclr_steps",
                },
                counts_epochs=True,
                warmup=max(1, epochs * spe // 10),
                requested_batch=p["batch_size"],
            )
        )
    return pre


def _finetune_budgets(cfg, vit, tasks) -> list:
    """One budget per fine-tuning kind (init x protocol x label count), the untrained floor left out."""
    from labkit.core.plan import TaskBudget, measure
    from labkit.methods.defect_segmentation import ViTSegmenter, small_unet

    c, s = cfg.channels, cfg.img_size
    kinds = Counter((t["init"], t["protocol"], t["n_labels"]) for t in tasks if t["init"] != "all_good")
    fine = []
    for (init, protocol, n_labels), count in kinds.items():
        frozen = protocol == "frozen"
        if init == "unet":
            build, side = (lambda: small_unet(c)), s
        else:
            side = dinov2_side(s) if init == "dinov2" else s
            enc = (lambda: dinov2_encoder(s, "random")) if init == "dinov2" else vit
            build = lambda enc=enc, frozen=frozen: ViTSegmenter(  # noqa: E731
                enc(), out_size=s, head=cfg.seg_head, frozen=frozen
            )
        ch = 3 if init == "dinov2" else c
        flops, tr, tot = measure(
            ("ssl-ft", init, frozen, side, ch, str(encoder_kwargs(cfg))), build, [(2, ch, side, side)]
        )
        batch = min(cfg.finetune_batch_size, n_labels)
        fine.append(
            TaskBudget(
                f"{init} {protocol} k={n_labels}",
                count,
                n_labels,
                f"{side} px x {ch} ch",
                batch,
                cfg.finetune_steps,
                cfg.finetune_steps / max(1, n_labels // batch),
                max(1, n_labels // batch),
                tr,
                tot,
                flops * batch,
                notes="frozen: features cached, the encoder's forward counted once per step (an upper bound)"
                if frozen
                else "",
                params={"batch": "finetune_batch_size", "data_items": "label_counts", "steps": "finetune_steps"},
                requested_batch=cfg.finetune_batch_size,
                full_batch_ok=True,
            )
        )
    return fine


def _patchcore_budgets(cfg, vit, real) -> list:
    """One budget per PatchCore init: forward passes only, over the memory bank and the test set (on a real
    folder their ``img_size`` tiles, :func:`data.split_inputs`, as the run cuts them)."""
    from labkit.core.plan import TaskBudget, measure

    c, s = cfg.channels, cfg.img_size
    inits = [i for i in cfg.inits if i in VIT_INITS]
    if real:
        n_fwd = real["good"]["tiles"] + real["test"]["tiles"]
        what = (
            f"{real['good']['tiles']} memory-bank tiles (of the first n_good = {real['good']['images']} defect-free "
            f"images) + {real['test']['tiles']} test tiles (of {real['test']['images']} images), img_size {s}"
        )
    else:
        n_fwd, what = cfg.n_good + cfg.n_test, "n_good + n_test images"
    patch = []
    for init in inits:
        side = dinov2_side(s) if init == "dinov2" else s
        ch = 3 if init == "dinov2" else c
        build = (lambda: dinov2_encoder(s, "random")) if init == "dinov2" else vit
        flops, tr, tot = measure(
            ("ssl-pc", init, side, ch, str(encoder_kwargs(cfg))), build, [(1, ch, side, side)], backward=False
        )
        patch.append(
            TaskBudget(
                f"{init} features",
                1,
                n_fwd,
                f"{side} px x {ch} ch",
                64,
                -(-n_fwd // 64),
                1,
                -(-n_fwd // 64),
                0,
                tot,
                flops * 64,
                notes=f"forward passes only (no optimiser): {what} in batches of 64",
                full_batch_ok=True,
            )
        )
    return patch
