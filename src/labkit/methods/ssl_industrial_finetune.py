"""Fine-tuning a (pretrained) timm ViT for defect segmentation and defect/no-defect classification.

The encoder is split into a frozen trunk (patch embedding + the first ``depth - k`` blocks) and a
trainable top (the last ``k`` blocks, the final norm, and a head). ``k = depth`` is full
fine-tuning; ``k = 0`` is a frozen probe with a trained head; in between is MAE's "partial
fine-tuning" (He et al. 2022, Fig. 9). Without augmentation the trunk's output for an image never
changes, so it is computed once (:func:`trunk_tokens`) and every run over every label count and
seed trains only the top: on two CPU cores this is what makes a label-count x seed x
initialisation sweep fit in minutes.

Heads:
- segmentation ``"linear"``: BatchNorm + 1x1 convolution on the patch-token grid, bilinear upsampling.
- segmentation ``"conv"``: a light decoder (3x3 conv blocks with 2x upsampling to full resolution).
- classification: linear layer on the mean and the max of the patch tokens (:func:`mean_max_pool`:
  the max keeps a defect that touches one patch of sixteen from being averaged away).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.core.errors import DataError, ParameterError
from labkit.core.metrics import segmentation_scores

SEG_HEADS = ("linear", "conv")


@torch.inference_mode()
def trunk_tokens(encoder: nn.Module, images, trainable_blocks: int, batch_size: int = 128) -> torch.Tensor:
    """Tokens (N, prefix + L, D) after the frozen part of a timm ViT (all but its last ``trainable_blocks``)."""
    depth = len(encoder.blocks)
    if not 0 <= trainable_blocks <= depth:
        raise ParameterError(f"trainable_blocks must be in [0, {depth}], got {trainable_blocks}")
    encoder.eval()
    images = torch.as_tensor(np.asarray(images, np.float32))
    out = []
    for i in range(0, len(images), batch_size):
        x = encoder.patch_embed(images[i:i + batch_size])
        x = encoder._pos_embed(x)
        x = encoder.norm_pre(encoder.patch_drop(x))
        for block in encoder.blocks[:depth - trainable_blocks]:
            x = block(x)
        out.append(x.clone())
    return torch.cat(out)


class _Top(nn.Module):
    def __init__(self, encoder: nn.Module, trainable_blocks: int):
        super().__init__()
        depth = len(encoder.blocks)
        self.blocks = nn.Sequential(*[copy.deepcopy(b) for b in encoder.blocks[depth - trainable_blocks:]])
        # With no block to tune, the final norm stays frozen too (a probe on the encoder's output).
        self.norm = copy.deepcopy(encoder.norm)
        self.norm.requires_grad_(trainable_blocks > 0)
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        ps = encoder.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.dim = int(encoder.embed_dim)

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(tokens))[:, self.prefix:]


class TokenSegmenter(nn.Module):
    """Trainable top of a ViT + a segmentation head; input: trunk tokens; output: logits at ``out_size``."""

    def __init__(self, encoder: nn.Module, trainable_blocks: int, num_classes: int = 2, head: str = "conv",
                 out_size: int = 64, decoder_channels: int = 32):
        super().__init__()
        if head not in SEG_HEADS:
            raise ParameterError(f"head must be one of {SEG_HEADS}, got {head!r}")
        self.top = _Top(encoder, trainable_blocks)
        self.out_size, self.head_kind = int(out_size), head
        d = self.top.dim
        if head == "linear":
            self.head = nn.Sequential(nn.BatchNorm2d(d), nn.Conv2d(d, num_classes, 1))
        else:
            c = decoder_channels
            layers: list[nn.Module] = [nn.Conv2d(d, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True)]
            ch = 2 * c
            for _ in range(max(0, int(round(math.log2(self.top.patch))) - 1)):
                layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                           nn.Conv2d(ch, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                ch = c
            layers.append(nn.Conv2d(ch, num_classes, 1))
            self.head = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.top.patch_tokens(tokens)
        g = int(round(t.shape[1] ** 0.5))
        grid = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], g, g)
        logits = self.head(grid)
        return F.interpolate(logits, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)


def mean_max_pool(patch_tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, D) -> (B, 2D): mean and max over the patches."""
    return torch.cat([patch_tokens.mean(1), patch_tokens.amax(1)], dim=1)


class TokenClassifier(nn.Module):
    """Trainable top of a ViT + a linear classifier on the mean and max patch token."""

    def __init__(self, encoder: nn.Module, trainable_blocks: int, num_classes: int = 2):
        super().__init__()
        self.top = _Top(encoder, trainable_blocks)
        self.head = nn.Sequential(nn.LayerNorm(2 * self.top.dim), nn.Linear(2 * self.top.dim, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(mean_max_pool(self.top.patch_tokens(tokens)))


def _epochs_for(steps: int, n: int, batch_size: int) -> int:
    return max(1, math.ceil(steps / max(1, math.ceil(n / batch_size))))


def finetune_segmentation(encoder: nn.Module, train_tokens: torch.Tensor, train_masks, test_tokens: torch.Tensor,
                          test_masks, *, trainable_blocks: int, head: str = "conv", steps: int = 60,
                          batch_size: int = 16, lr: float = 5e-4, defect_weight: float | None = None,
                          seed: int = 0, progress: bool = False) -> dict:
    """Train top + head on labelled tokens/masks for a fixed number of steps; score on the test set.

    ``defect_weight``: cross-entropy weight of the defect class (default: sqrt of the background-to-
    defect pixel ratio of the training masks, as defects cover a few percent of the pixels).
    Returns ``{"miou", "defect_iou", "defect_f1", "pixel_accuracy", "seconds", "model"}``.
    """
    from labkit.methods.training import fit

    train_masks = torch.as_tensor(np.asarray(train_masks), dtype=torch.long)
    if len(train_masks) != len(train_tokens):
        raise DataError(f"{len(train_tokens)} training images but {len(train_masks)} masks")
    if defect_weight is None:
        frac = float(train_masks.float().mean().clamp(min=1e-3))
        defect_weight = float(np.clip(np.sqrt((1 - frac) / frac), 1.0, 10.0))
    model = TokenSegmenter(encoder, trainable_blocks, head=head, out_size=int(train_masks.shape[-1]))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(train_tokens, train_masks), batch_size=batch_size, shuffle=True,
                        generator=gen, drop_last=len(train_masks) > batch_size)
    result = fit(model, loader, None, task="segmentation", num_classes=2,
                 epochs=_epochs_for(steps, len(train_masks), batch_size), lr=lr, scheduler="cosine",
                 loss_fn=nn.CrossEntropyLoss(weight=torch.tensor([1.0, defect_weight])), seed=seed,
                 progress=progress, desc=f"fine-tune seg ({len(train_masks)} labels)")
    result.model.eval()
    with torch.inference_mode():
        pred = torch.cat([result.model(test_tokens[i:i + 128]).argmax(1)
                          for i in range(0, len(test_tokens), 128)]).numpy()
    scores = segmentation_scores(pred, np.asarray(test_masks), num_classes=2, class_names=["good", "defect"])
    return {"miou": scores["miou"], "defect_iou": scores["iou/defect"], "defect_f1": scores["f1/defect"],
            "pixel_accuracy": scores["pixel_accuracy"], "seconds": result.seconds, "model": result.model}


def finetune_classification(encoder: nn.Module, train_tokens: torch.Tensor, train_labels, test_tokens: torch.Tensor,
                            test_labels, *, trainable_blocks: int, steps: int = 60, batch_size: int = 16,
                            lr: float = 5e-4, seed: int = 0, progress: bool = False) -> dict:
    """Defect/no-defect classifier (top + linear head); returns accuracy, balanced accuracy, AUROC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from labkit.methods.training import fit

    train_labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    model = TokenClassifier(encoder, trainable_blocks)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(train_tokens, train_labels), batch_size=batch_size, shuffle=True,
                        generator=gen, drop_last=len(train_labels) > batch_size)
    result = fit(model, loader, None, task="classification", num_classes=2,
                 epochs=_epochs_for(steps, len(train_labels), batch_size), lr=lr, scheduler="cosine", seed=seed,
                 progress=progress, desc=f"fine-tune cls ({len(train_labels)} labels)")
    result.model.eval()
    with torch.inference_mode():
        prob = torch.cat([result.model(test_tokens[i:i + 256]).softmax(1)[:, 1]
                          for i in range(0, len(test_tokens), 256)]).numpy()
    y = np.asarray(test_labels)
    pred = (prob > 0.5).astype(int)
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "auroc": float(roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else float("nan"),
            "seconds": result.seconds}
