"""The ViTs of the grid's tasks: DINOv2 from its resolved weights, the random-init control of ``vit_arch`` and
labkit's stand-in (:mod:`labkit.methods.microct_standin`) from its checkpoint, each meeting the slices on its
patch grid (``token_grid``, ``img_size``, ``resize_policy``)."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

import torch

from labkit.core.errors import DataError
from labkit.core.seeding import seed_everything
from labkit.models.vit_heads import grid_input_size, patch_size_of
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS

# the random control's default architecture: the stand-in's (labkit.methods.microct_standin.ARCH)
STANDIN_ARCH = "microct_standin"


@dataclass
class Backbone:
    kind: str
    label: str
    model: torch.nn.Module | None
    weights_id: str
    status: str  # "ok" or the reason it is not evaluated
    name: str = ""
    img_size: int = 0  # input side fed to the model (fitted to its patch grid)
    input: str = ""  # how slices meet the patch grid (see input_note)
    pretraining: dict = field(default_factory=dict)  # the stand-in's training record (loss, trivial loss, steps)
    file: str = ""  # the checkpoint file a grid task loads (the stand-in)
    digest: str = ""  # its digest (part of the tasks' fingerprint)

    @property
    def ok(self) -> bool:
        return self.model is not None


@functools.cache
def arch_patch_size(name: str) -> int:
    """Patch side of a ViT architecture (from its timm name, else from a randomly built model)."""
    if name == STANDIN_ARCH:
        from labkit.methods.microct_standin import ARCH

        return int(ARCH["patch_size"])
    from labkit.models.backbones import create_backbone, timm_name

    m = re.search(r"patch(\d+)", timm_name(name))
    if m:
        return int(m.group(1))
    return patch_size_of(create_backbone(name, weights="random", num_classes=0))


def vit_input_size(cfg, arch: str | None = None) -> int:
    """The ViT's input side. With ``token_grid`` set: ``token_grid`` x the patch of ``arch`` (default
    ``vit_arch``), so every ViT gets the same token grid whatever its patch. Else ``img_size`` (or the
    slice side) fitted to the patch grid by ``resize_policy``: the next multiple of the patch
    (``resize``, ``pad``) or a DataError (``error``)."""
    patch = arch_patch_size(arch or cfg.vit_arch)
    if cfg.get("token_grid"):
        return int(cfg.token_grid) * patch
    size = int(cfg.img_size or cfg.slice_size)
    try:
        return grid_input_size(size, patch, cfg.resize_policy)
    except DataError as exc:
        raise DataError(
            f"{'img_size' if cfg.img_size else 'slice_size'} {size}: {exc} (parameter resize_policy is 'error')"
        ) from exc


def build_random_vit(cfg, seed: int, size: int) -> torch.nn.Module:
    """The random-init control of architecture ``vit_arch`` (``microct_standin``: the stand-in's)."""
    from labkit.models.backbones import create_backbone

    seed_everything(seed)
    if cfg.vit_arch == STANDIN_ARCH:
        from labkit.methods.microct_standin import build_vit

        return build_vit(size)
    return create_backbone(cfg.vit_arch, weights="random", img_size=size, num_classes=0)


def load_ssl_backbone(cfg, progress: bool = False) -> Backbone:
    """labkit's stand-in for DINOv2 (:mod:`labkit.methods.microct_standin`), from ``ssl_weights``:
    ``labkit:microct_standin_vit`` (the checkpoint shipped with the kit) or a file the same command
    wrote. Its training record (loss, trivial predictor's loss, steps, curve) comes from the sidecar
    and decides the "trained" precondition."""
    from pathlib import Path

    from labkit.core.grid import file_digest
    from labkit.methods import microct_standin

    label = BACKBONE_LABELS["ssl"]
    value = str(cfg.ssl_weights)
    if value == f"labkit:{microct_standin.NAME}":
        path = microct_standin.SHIPPED.with_suffix(".safetensors")
    elif value.startswith("labkit:") or value in ("random", "pretrained"):
        return Backbone(
            "ssl",
            label,
            None,
            "",
            f"not evaluated: parameter 'ssl_weights' is {value!r}; use labkit:{microct_standin.NAME} or a file "
            "written by `python -m labkit.methods.microct_standin`",
        )
    else:
        path = Path(value)
    if not path.is_file():
        return Backbone(
            "ssl",
            label,
            None,
            "",
            f"not evaluated: parameter 'ssl_weights' names the stand-in checkpoint {path}, which is missing; make it with "
            f"`python -m labkit.methods.microct_standin --out {path.with_suffix('')}`",
        )
    size = vit_input_size(cfg, STANDIN_ARCH)
    model, record = microct_standin.load(path, img_size=size)
    digest = file_digest(path)
    record = _with_learner_free_loss(digest, json.dumps(record, sort_keys=True, default=str))
    return Backbone(
        "ssl",
        label,
        model,
        f"{microct_standin.NAME}({digest[:16]})",
        "ok",
        STANDIN_ARCH,
        size,
        input_note(cfg, model, size),
        pretraining=record,
        file=str(path.resolve()),
        digest=digest,
    )


@functools.lru_cache(maxsize=4)
def _with_learner_free_loss(digest: str, record: str) -> dict:
    """The checkpoint's record with the learner-free loss of its held-out check (computed once per file)."""
    from labkit.methods import microct_standin

    return microct_standin.with_learner_free_loss(json.loads(record))


def build_backbone(cfg, kind: str, seed: int, weights: dict | None = None) -> Backbone:
    """The ViT of a grid task: DINOv2 from its resolved ``weights``, the random control (seeded), or the
    stand-in from its checkpoint (``weights["path"]``)."""
    if kind == "dinov2":
        from labkit.models.backbones import create_backbone

        size = vit_input_size(cfg, cfg.dinov2_backbone)
        model = create_backbone(cfg.dinov2_backbone, weights=weights["weights"], img_size=size, num_classes=0)
        note = input_note(cfg, model, size)
        return Backbone(
            kind, BACKBONE_LABELS[kind], model, str(weights["weights"]), "ok", cfg.dinov2_backbone, size, note
        )
    if kind == "random":
        size = vit_input_size(cfg)
        model = build_random_vit(cfg, seed, size)
        note = input_note(cfg, model, size)
        return Backbone(kind, BACKBONE_LABELS[kind], model, f"random(seed={seed})", "ok", cfg.vit_arch, size, note)
    from labkit.methods import microct_standin

    size = vit_input_size(cfg, STANDIN_ARCH)
    model, _ = microct_standin.load(weights["path"], img_size=size)
    weights_id = f"{microct_standin.NAME}({weights['digest'][:16]})"
    return Backbone(
        kind, BACKBONE_LABELS[kind], model, weights_id, "ok", STANDIN_ARCH, size, input_note(cfg, model, size)
    )


def input_note(cfg, model: torch.nn.Module, size: int | None = None) -> str:
    """How slices meet the backbone's patch grid (said in the report's backbone table)."""
    patch = patch_size_of(model)
    size = int(size or vit_input_size(cfg))
    if size % patch:
        raise DataError(f"input side {size} is not a multiple of the patch size {patch}")
    grid = f"{size // patch}x{size // patch} tokens of {patch} px"
    if cfg.slice_size == size:
        return f"slices of {cfg.slice_size} px fit the patch grid ({grid})"
    if cfg.resize_policy == "pad":
        return (
            f"slices of {cfg.slice_size} px are reflect-padded to {size} px ({grid}); the padding is not "
            f"trained on and predictions are cropped back to {cfg.slice_size} px"
        )
    return (
        f"slices of {cfg.slice_size} px are resized bilinearly to {size} px ({grid}); predictions are "
        f"resized back to {cfg.slice_size} px"
    )


def torch_device(cfg) -> torch.device:
    """The device of a grid task (its ``device`` setting, resolved once before the grid)."""
    from labkit.core.device import resolve_device

    return resolve_device(cfg.device, announce=False)
