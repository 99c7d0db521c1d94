"""Linear probing, then LoRA fine-tuning, at the budget of the probe it is compared with.

One training run over ``epochs`` passes (AdamW, cosine annealed per epoch over all of them, one seeded data order):
the head first learns on frozen, precomputed patch tokens; for the last ``finetune_epochs`` passes either the head
keeps learning on the same tokens (the frozen arm), or the backbone's LoRA adapters join it and the batches run
through the backbone (the LoRA arm). Both arms therefore take the same optimiser steps, batch size and schedule, and
their first ``epochs - finetune_epochs`` passes are the same computation, so a difference between them is what the
adapters add: not a longer or differently scheduled training (the frozen head trained for as long as LoRA's whole
run, and LoRA starting from that trained head, as in linear-probe-then-fine-tune)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def _logits(out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return out if tuple(out.shape[-2:]) == tuple(size) else F.interpolate(out, size=size, mode="bilinear")


def probe_then_finetune(
    head: torch.nn.Module,
    tokens: np.ndarray,
    token_masks: np.ndarray,
    *,
    epochs: int,
    finetune_epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    model: torch.nn.Module | None = None,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    finetune_lr: float | None = None,
    weight_decay: float = 1e-4,
    ignore_index: int = 255,
    device: torch.device | str = "cpu",
) -> float:
    """Train ``head`` (tokens (N, D, h, w) -> logits) in place; returns the seconds it took.

    ``tokens`` and ``token_masks`` (N, H, W; padded with ``ignore_index`` where the input was padded) are the frozen
    backbone's patch tokens of the training images and their masks. Without ``model`` every pass trains the head on
    them. With ``model`` (images -> logits at the slice size, whose head is ``head`` and whose only other trainable
    parameters are its LoRA adapters), the last ``finetune_epochs`` passes train ``model`` on ``images`` and
    ``masks`` (the adapters at ``finetune_lr``, default ``lr``, on the same cosine). The data order is one seeded
    permutation per pass, the same for both arms."""
    if not 0 <= finetune_epochs <= epochs:
        raise ValueError(f"finetune_epochs must be in [0, epochs={epochs}], got {finetune_epochs}")
    device = torch.device(device)
    head.to(device)
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": lr}]
    head_ids = {id(p) for p in head.parameters()}
    if model is not None:
        model.to(device)
        adapters = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups.append({"params": adapters, "lr": finetune_lr if finetune_lr is not None else lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    n = len(tokens)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        tuned = model is not None and epoch >= epochs - finetune_epochs
        (model if tuned else head).train()
        order = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, batch_size):
            idx = np.sort(order[start : start + batch_size])
            if tuned:
                x = torch.from_numpy(np.ascontiguousarray(images[idx][:, None], np.float32)).to(device)
                y = torch.from_numpy(np.asarray(masks[idx], np.int64)).to(device)
                out = model(x)
            else:
                x = torch.from_numpy(np.asarray(tokens[idx], np.float32)).to(device)
                y = torch.from_numpy(np.asarray(token_masks[idx], np.int64)).to(device)
                out = head(x)
            loss = loss_fn(_logits(out, tuple(y.shape[-2:])), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return time.perf_counter() - t0


def steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of :func:`probe_then_finetune` (the last batch of a pass is short)."""
    return math.ceil(n_train / batch_size) * int(epochs)
