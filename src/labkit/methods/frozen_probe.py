"""A frozen encoder's linear probe for segmentation: the encoder kept at its initial weights, its deepest features
standardised with fixed statistics of the training tiles and read out per pixel by one 1x1 convolution, the only
part that trains (the "features learned" control of a transfer study); and a digest of a module's weights to show
the encoder did not move."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FrozenProbe(nn.Module):
    """An arm's network cut to its frozen encoder and a linear per-pixel readout.

    The encoder (an smp/timm features encoder with ``out_channels``; e.g. a ResNet-18 cut after layer3, 256
    channels at stride 16) is kept at its initial weights in eval mode (batch-norm statistics frozen too); its deepest feature map is
    standardised per channel with fixed statistics of the training tiles' features (as a linear probe's
    affine-free batch norm) and read out by one 1x1 convolution to the classes, whose logits are bilinearly
    upsampled to the input size. Only the 1x1 convolution trains: the probe is linear in the features.
    """

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        channels = int(encoder.out_channels[-1])
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self.readout = nn.Conv2d(channels, num_classes, kernel_size=1)

    def train(self, mode: bool = True):  # the encoder stays in eval mode whatever the probe's mode
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's standardised deepest features (no gradient ever reaches the encoder)."""
        return (self.encoder(x)[-1] - self.mean) / self.std

    def head(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return nn.functional.interpolate(self.readout(features), size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), tuple(x.shape[-2:]))


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (parameters and buffers): equal digests, equal weights."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_probe(
    probe: FrozenProbe,
    images: np.ndarray,
    masks: np.ndarray,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    ignore_index: int = 255,
) -> list[float]:
    """Fit the probe's readout on the training tiles: the frozen features are computed once, then ``steps``
    Adam steps on shuffled batches (the same order for every arm of a seed). Returns the loss per step."""
    x = torch.from_numpy(images)
    y = torch.from_numpy(masks).long()
    device = probe.readout.weight.device
    with torch.no_grad():
        raw = torch.cat([probe.encoder(x[i : i + 64].to(device))[-1] for i in range(0, len(x), 64)])
        probe.mean.copy_(raw.mean(dim=(0, 2, 3), keepdim=True))
        probe.std.copy_(raw.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))
        feats = (raw - probe.mean) / probe.std
    optimiser = torch.optim.Adam(probe.readout.parameters(), lr=lr)
    order = torch.Generator().manual_seed(int(seed))
    size = tuple(x.shape[-2:])
    losses, queue = [], torch.empty(0, dtype=torch.long)
    probe.train()
    for _ in range(steps):
        if len(queue) < batch:  # a fresh shuffle each epoch; every batch is full
            queue = torch.cat([queue, torch.randperm(len(x), generator=order)])
        idx, queue = queue[:batch], queue[batch:]
        target = y[idx].to(device)
        logits = probe.head(feats[idx], size)
        loss = nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
        loss = loss / (target != ignore_index).sum().clamp_min(1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses
