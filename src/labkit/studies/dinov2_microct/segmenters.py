"""Training and prediction of the segmenters on grey slices (labkit's ``fit``, batches on the model's device), the
LoRA fine-tune of a backbone with a head, a trained arm's budget, and the per-token oracle (the ceiling of any
per-token head on a token grid)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from labkit.core.seeding import seed_everything
from labkit.models.vit_heads import BackboneSegmenter, create_head
from labkit.studies.dinov2_microct.backbones import torch_device, vit_input_size
from labkit.studies.dinov2_microct.data import NUM_PHASES


def train_budget(n_train: int, batch_size: int, epochs: int, lr: float, trainable: int) -> dict[str, Any]:
    """A trained arm's budget (:func:`labkit.core.claims.budget_record`) as labkit's ``fit`` runs it: AdamW,
    ``epochs`` passes over ``n_train`` slices in batches of ``batch_size`` (the last one short), the learning
    rate annealed by a cosine stepped once per epoch."""
    from labkit.core.claims import budget_record  # here: a grid worker importing the tasks imports no claims module

    per_epoch = math.ceil(n_train / batch_size)
    steps = per_epoch * int(epochs)
    schedule = f"AdamW, cosine stepped per epoch over {int(epochs)} epochs of {per_epoch} steps ({steps} steps)"
    return budget_record(steps, min(int(batch_size), int(n_train)), lr, schedule, int(trainable))


def _loader(images, masks, batch_size, seed, shuffle=True):
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32)),
        torch.from_numpy(np.ascontiguousarray(masks, np.int64)),
    )
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def train_segmenter(cfg, model, images, masks, *, batch_size, epochs, lr, seed, desc):
    """labkit's training loop, on the GPU when there is one (the loop moves batches to the model)."""
    from labkit.methods.training import fit

    return fit(
        model.to(torch_device(cfg)),
        _loader(images, masks, batch_size, seed),
        task="segmentation",
        num_classes=NUM_PHASES,
        epochs=epochs,
        lr=lr,
        scheduler="cosine",
        seed=seed,
        progress=cfg.progress,
        desc=desc,
    )


def predict(model, images, batch_size=16) -> np.ndarray:
    """Phase maps (N, H, W) of grey slices (N, H, W), batched, on the model's device."""
    from labkit.methods.training import predict_segmentation

    return predict_segmentation(model, images[:, None], batch_size)


def token_oracle(masks: np.ndarray, grid: int, padded_size: int | None = None) -> np.ndarray:
    """The ceiling of any per-token head on a ``grid`` x ``grid`` token grid: each token is given the
    exact phase fractions of the pixels it covers, which are upsampled bilinearly (as the heads' scores
    are) and the argmax taken per pixel. ``masks`` (N, H, W) -> phase maps (N, H, W). With
    ``padded_size`` the slices sit in the top-left of a reflect-padded input of that side."""
    import torch.nn.functional as F

    m = torch.from_numpy(np.asarray(masks, np.int64))
    n, h, w = m.shape
    onehot = F.one_hot(m, NUM_PHASES).permute(0, 3, 1, 2).float()
    if padded_size:
        onehot = F.pad(onehot, (0, padded_size - w, 0, padded_size - h), mode="replicate")
    frac = F.adaptive_avg_pool2d(onehot, grid)
    size = (padded_size, padded_size) if padded_size else (h, w)
    up = F.interpolate(frac, size=size, mode="bilinear", align_corners=False)[:, :, :h, :w]
    return up.argmax(1).numpy().astype(np.int64)


def fit_lora(cfg, backbone, head_kind, seg_tr, seed, desc, targets=None, img_size=None):
    from labkit.models.lora import apply_lora

    seed_everything(seed)
    tuned = apply_lora(
        copy.deepcopy(backbone), rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=targets or cfg.lora_targets
    )
    dim = getattr(backbone, "num_features", None) or backbone.embed_dim
    model = BackboneSegmenter(
        tuned, create_head(head_kind, dim, NUM_PHASES), img_size or vit_input_size(cfg), cfg.resize_policy
    )
    r = train_segmenter(
        cfg,
        model,
        seg_tr.images,
        seg_tr.masks,
        batch_size=cfg.lora_batch_size,
        epochs=cfg.lora_epochs,
        lr=cfg.lora_lr,
        seed=seed,
        desc=desc,
    )
    return model, r
