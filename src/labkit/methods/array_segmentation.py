"""Segmenters on in-memory single-channel image arrays: a seeded loader of (N, H, W) images and masks, labkit's
``fit`` on it (batches on the model's device), batched prediction, the budget that ``fit`` spends (for the claims'
``same budget`` preconditions) and the per-token oracle, the ceiling of any per-token head on a token grid (its scores fitted to the mask
through the heads' bilinear read-out)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def fit_budget(n_train: int, batch_size: int, epochs: int, lr: float, trainable: int) -> dict[str, Any]:
    """A trained arm's budget (:func:`labkit.core.claims.budget_record`) as labkit's ``fit`` runs it: AdamW,
    ``epochs`` passes over ``n_train`` images in batches of ``batch_size`` (the last one short), the learning
    rate annealed by a cosine stepped once per epoch."""
    from labkit.core.claims import budget_record  # here: a grid worker importing its tasks imports no claims module

    per_epoch = math.ceil(n_train / batch_size)
    steps = per_epoch * int(epochs)
    schedule = f"AdamW, cosine stepped per epoch over {int(epochs)} epochs of {per_epoch} steps ({steps} steps)"
    return budget_record(steps, min(int(batch_size), int(n_train)), lr, schedule, int(trainable))


def array_loader(images, masks, batch_size: int, seed: int, shuffle: bool = True):
    """A DataLoader of grey images (N, H, W) as (N, 1, H, W) float32 and masks (N, H, W) int64, shuffled by a
    generator seeded with ``seed``."""
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32)),
        torch.from_numpy(np.ascontiguousarray(masks, np.int64)),
    )
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def fit_segmenter(model, images, masks, *, num_classes, batch_size, epochs, lr, seed, device, progress=False, desc=""):
    """labkit's training loop (AdamW, cosine stepped per epoch) on ``device`` (the loop moves batches to the
    model); returns its :class:`labkit.methods.training.FitResult`."""
    from labkit.methods.training import fit

    return fit(
        model.to(device),
        array_loader(images, masks, batch_size, seed),
        task="segmentation",
        num_classes=num_classes,
        epochs=epochs,
        lr=lr,
        scheduler="cosine",
        seed=seed,
        progress=progress,
        desc=desc,
    )


def predict_grey(model, images, batch_size: int = 16) -> np.ndarray:
    """Class maps (N, H, W) of grey images (N, H, W), batched, on the model's device."""
    from labkit.methods.training import predict_segmentation

    return predict_segmentation(model, images[:, None], batch_size)


ORACLE_FIT_STEPS = 100  # Adam steps of the fitted per-token logits (measured: 0.82 / 0.84 mIoU at 100 / 600 steps)


def token_oracle(
    masks: np.ndarray,
    grid: int,
    num_classes: int,
    padded_size: int | None = None,
    fit_steps: int = ORACLE_FIT_STEPS,
    batch_size: int = 16,
) -> np.ndarray:
    """The ceiling of any per-token head on a ``grid`` x ``grid`` token grid, under the heads' own read-out (one
    score per class and token, upsampled bilinearly to the slice, argmax per pixel): per slice, the token scores
    that best fit the true mask through that read-out (cross-entropy, ``fit_steps`` Adam steps from the log of
    each token's exact phase fractions). ``fit_steps=0`` is the phase-fraction oracle alone (each token given the
    fractions of the pixels it covers), a lower bound: scores are not probabilities, and a head can place a
    boundary between two token centres where fractions cannot (measured on the default slices at 24 x 24 tokens:
    0.67 with fractions, 0.82 fitted). ``masks`` (N, H, W) -> class maps (N, H, W). With ``padded_size`` the
    images sit in the top-left of a reflect-padded input of that side."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny steps: threads only add synchronisation (measured 4-8x slower on 2 cores)
    try:
        return _token_oracle(masks, grid, num_classes, padded_size, fit_steps, batch_size)
    finally:
        torch.set_num_threads(threads)


def _token_oracle(masks, grid, num_classes, padded_size, fit_steps, batch_size) -> np.ndarray:
    import torch.nn.functional as F

    m_all = torch.from_numpy(np.asarray(masks, np.int64))
    n, h, w = m_all.shape
    size = (padded_size, padded_size) if padded_size else (h, w)
    out = []
    for i in range(0, n, batch_size):
        m = m_all[i : i + batch_size]
        onehot = F.one_hot(m, num_classes).permute(0, 3, 1, 2).float()
        if padded_size:
            onehot = F.pad(onehot, (0, padded_size - w, 0, padded_size - h), mode="replicate")
        frac = F.adaptive_avg_pool2d(onehot, grid)
        if fit_steps <= 0:
            scores = frac
        else:
            with torch.enable_grad():
                scores = torch.log(frac.clamp(min=1e-3)).requires_grad_(True)
                opt = torch.optim.Adam([scores], lr=0.1)
                for _ in range(int(fit_steps)):
                    up = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)[:, :, :h, :w]
                    loss = F.cross_entropy(up, m)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            scores = scores.detach()
        up = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)[:, :, :h, :w]
        out.append(up.argmax(1).numpy().astype(np.int64))
    return np.concatenate(out) if out else np.zeros((0, h, w), np.int64)
