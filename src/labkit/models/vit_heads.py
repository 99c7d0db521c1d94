"""Heads over the patch tokens of a (frozen or LoRA-tuned) backbone, and the glue that feeds
grey CT slices to an ImageNet-style timm backbone.

- :class:`LinearSegmentationHead`: BatchNorm + 1x1 convolution, bilinear upsampling (the
  DINOv2 paper's linear head; for ViT-B, 768 channels and 3 phases it has 3,843 parameters).
- :class:`ConvSegmentationHead`: a small CNN (two 3x3 conv blocks with one 2x upsampling).
- :class:`BackboneSegmenter`: backbone + head, end to end (used for LoRA fine-tuning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("resize", "pad", "error")


def patch_size_of(model: nn.Module) -> int:
    """Patch side of a timm ViT, or the output stride of a CNN (32 for a ResNet)."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None:
        ps = pe.patch_size
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)
    return 32


def grid_input_size(size: int, patch: int, policy: str = "resize") -> int:
    """The input side a patch grid can take: ``size`` itself when divisible by ``patch``,
    else the next multiple (``resize`` or ``pad``); ``error`` raises DataError."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    if size % patch == 0:
        return size
    if policy == "error":
        raise DataError(f"image side {size} is not a multiple of the patch size {patch}; use policy 'resize' or 'pad'")
    return (size // patch + 1) * patch


def prepare_input(x: torch.Tensor, img_size: int, policy: str = "resize") -> torch.Tensor:
    """Grey slices (B, 1, H, W) or (B, H, W) in [0, 1] -> ImageNet-normalised (B, 3, S, S).

    ``resize``: bilinear resize to ``img_size``; ``pad``: reflect-pad the bottom/right edge up
    to ``img_size`` (no resampling of the CT grey values).
    """
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if (h, w) != (img_size, img_size):
        if policy == "pad":
            if h > img_size or w > img_size:
                raise DataError(f"image of {h}x{w} is larger than the input size {img_size}; cannot pad")
            x = F.pad(x, (0, img_size - w, 0, img_size - h), mode="reflect")
        elif policy == "resize":
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
        else:
            raise DataError(f"image of {h}x{w} does not match the input size {img_size}")
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def backbone_tokens(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class token (B, D), patch-token grid (B, D, h, w)) of a timm ViT; for a CNN the global
    average and the last feature map."""
    feats = model.forward_features(x)
    if feats.ndim == 4:  # CNN feature map
        return feats.mean((2, 3)), feats
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    patch = patch_size_of(model)
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    tokens = feats[:, prefix:]
    if tokens.shape[1] != h * w:
        raise DataError(
            f"backbone gave {tokens.shape[1]} patch tokens for a {x.shape[-2]}x{x.shape[-1]} input; expected {h}x{w}"
        )
    grid = tokens.transpose(1, 2).reshape(len(x), -1, h, w)
    cls = feats[:, 0] if prefix > 0 else tokens.mean(1)
    return cls, grid


class LinearSegmentationHead(nn.Module):
    """BatchNorm + 1x1 convolution over patch tokens; logits upsampled bilinearly by the caller
    (or by ``out_size``)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, tokens: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.conv(self.bn(tokens))
        if out_size is not None:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


class ConvSegmentationHead(nn.Module):
    """A small CNN over patch tokens: 3x3 conv block, 2x upsampling, 3x3 conv block, 1x1 conv."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.block1 = block(in_channels, hidden)
        self.block2 = block(hidden, hidden // 2)
        self.classifier = nn.Conv2d(hidden // 2, num_classes, 1)

    def forward(self, tokens: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.block1(tokens)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        logits = self.classifier(self.block2(x))
        if out_size is not None:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


HEADS = {"linear": LinearSegmentationHead, "cnn": ConvSegmentationHead}


def create_head(kind: str, in_channels: int, num_classes: int) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}")
    return HEADS[kind](in_channels, num_classes)


class TokenHead(nn.Module):
    """A head applied to precomputed (frozen) patch tokens: logits at token resolution; the
    training loop upsamples them to the mask size."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens)


class BackboneSegmenter(nn.Module):
    """Grey slice (B, 1, H, W) -> logits (B, C, H, W) through backbone patch tokens and a head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, img_size: int, policy: str = "resize"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.img_size = int(img_size)
        self.policy = policy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        _, grid = backbone_tokens(self.backbone, prepare_input(x, self.img_size, self.policy))
        logits = self.head(grid)
        if self.policy == "pad":  # crop the padded border back off at token resolution first
            return F.interpolate(logits, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)[
                ..., :h, :w
            ]
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
