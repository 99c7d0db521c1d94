"""The preset's real budget (``labkit plan``): the trained rows of the grid, measured on the models they build."""

from __future__ import annotations

import math

from labkit.methods import baselines
from labkit.models.vit_heads import BackboneSegmenter, create_head
from labkit.studies.dinov2_microct.backbones import STANDIN_ARCH, vit_input_size
from labkit.studies.dinov2_microct.data import NAME, VIT_KINDS, phases_of
from labkit.studies.dinov2_microct.experiment import parts


def _train_slices(cfg) -> int:
    """Segmentation training slices, counted from the parameters (real volumes: the data may differ)."""
    return len(cfg.seg_train_rocks) * len(cfg.seg_train_scanners) * (cfg.samples_per_rock - 1) * cfg.slices_per_sample


def _budget(cfg, name, build, size, batch, epochs, key, prefix, batch_param=None):
    """One trained row's budget: ``epochs`` passes over the training slices in batches of ``batch``."""
    from labkit.core.plan import TaskBudget, measure

    n_seg = _train_slices(cfg)
    flops, tr, tot = measure(key + (cfg.lora_rank, cfg.lora_targets), build, [(2, 1, cfg.slice_size, cfg.slice_size)])
    spe = math.ceil(n_seg / batch)
    return TaskBudget(
        name,
        len(cfg.seeds),
        n_seg,
        f"{size} px (slices of {cfg.slice_size})",
        min(batch, n_seg),
        spe * epochs,
        epochs,
        spe,
        tr,
        tot,
        flops * min(batch, n_seg),
        counts_epochs=True,
        requested_batch=batch,
        params={
            "batch": batch_param or f"{prefix}_batch_size",
            "data_items": "samples_per_rock/slices_per_sample",
            "epochs": f"{prefix}_epochs",
        },
    )


def _lora(cfg, name, make, targets, head, size, key):
    """A LoRA row's budget: the backbone from ``make`` with adapters on ``targets`` and a ``head``."""
    from labkit.models.lora import apply_lora

    def build():
        tuned = apply_lora(make(), rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=targets)
        dim = getattr(tuned, "num_features", None) or tuned.embed_dim
        return BackboneSegmenter(tuned, create_head(head, dim, len(phases_of(cfg))), size, cfg.resize_policy)

    # the passes through the backbone: the last lora_epochs of head_epochs (the probe before them runs on cached tokens)
    return _budget(
        cfg, name, build, size, cfg.batch_size, cfg.lora_epochs, ("lora", key, head, size), "lora", "batch_size"
    )


def plan(cfg) -> list:
    """The grid of :func:`experiment.build_grid` (every arm assumed available): per seed, the U-Net from scratch, the
    ResNet + LoRA and each ViT's LoRA heads (:func:`tasks.train_arm`: the passes through the backbone); the segmentation training slices counted
    from the parameters (real volumes: from the data). Frozen heads on cached tokens and the probes are not
    counted."""
    from labkit.core.plan import GridPlan
    from labkit.models.backbones import create_backbone

    out = [
        _budget(
            cfg,
            "UNet from scratch",
            lambda: baselines.create_unet(len(phases_of(cfg)), in_channels=1),
            cfg.slice_size,
            cfg.unet_batch_size,
            cfg.unet_epochs,
            ("unet", cfg.slice_size),
            "unet",
        )
    ]
    size = vit_input_size(cfg)
    resnet = lambda: create_backbone(cfg.resnet_backbone, weights="random", num_classes=0)  # noqa: E731
    out.append(_lora(cfg, "ResNet + LoRA linear", resnet, "resnet-convs", "linear", size, cfg.resnet_backbone))
    arch = {"dinov2": cfg.dinov2_backbone, "ssl": STANDIN_ARCH, "random": cfg.vit_arch}
    for kind in [k for k in VIT_KINDS if k in cfg.backbones and k in cfg.lora_backbones]:
        side = vit_input_size(cfg, arch[kind])
        if arch[kind] == STANDIN_ARCH:
            from labkit.methods.microct_standin import build_vit

            make = lambda side=side: build_vit(side)  # noqa: E731
        else:
            make = lambda side=side, a=arch[kind]: create_backbone(a, weights="random", img_size=side, num_classes=0)  # noqa: E731
        for head in cfg.lora_heads:
            out.append(_lora(cfg, f"{kind} ViT + LoRA {head}", make, cfg.lora_targets, head, side, arch[kind]))
    note = "slices counted from the parameters" + (
        "" if cfg.data_source == "simulated" else " (real volumes: from data)"
    )
    return [
        GridPlan(
            NAME,
            "grid",
            f"{len(parts(cfg))} parts x {len(cfg.seeds)} seeds",
            out,
            notes=note + "; frozen heads and probes on cached tokens not counted",
        )
    ]
