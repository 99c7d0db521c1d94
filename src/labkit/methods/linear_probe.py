"""A linear per-pixel readout of a frozen segmentation encoder (a hypercolumn probe)."""

from __future__ import annotations

import torch


class LinearProbe(torch.nn.Module):
    """A linear per-pixel readout of a frozen encoder: one 1x1 convolution per encoder stage (every stage but the
    input itself, stage 0), each upsampled bilinearly to the tile and summed. Bilinear upsampling is linear, so this
    is one 1x1 convolution over the stages' features stacked at tile resolution (a hypercolumn): the simplest
    linear readout that gives every pixel a prediction from the U-Net's encoder alone. The encoder's weights never
    train and its batch-norm statistics stay frozen (it is kept in eval mode)."""

    def __init__(self, encoder: torch.nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        channels = list(encoder.out_channels)[1:]
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(int(c), int(num_classes), 1) for c in channels)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: no batch-norm statistics move either
        return self

    def forward(self, x):
        with torch.no_grad():
            features = self.encoder(x)[1:]
        size = x.shape[-2:]
        out = 0
        for head, f in zip(self.heads, features):
            out = out + torch.nn.functional.interpolate(head(f), size=size, mode="bilinear", align_corners=False)
        return out
