"""Semi-supervised segmentation with an EMA teacher: FARCLUSS and its baselines.

One training step (:class:`TeacherStudentTrainer.step`) covers every method:

* ``supervised``: cross-entropy on the labelled batch only.
* ``fixmatch``: the teacher labels weakly augmented unlabeled images (random scale
  crop, flips, 90-degree turns); pixels whose top probability reaches ``threshold``
  (0.95) become hard targets for the student on strongly augmented views (colour
  jitter, grey, blur, CutMix) - the FixMatch/UniMatch weak-to-strong baseline.
* ``farcluss``: four switchable parts on the same teacher-student
  (Tarubinga et al., arXiv 2506.11142):

  1. ``fuzzy``: top-K teacher probabilities, renormalised, as soft targets
     (no threshold);
  2. ``uncertainty``: each unlabeled pixel's loss is weighted by the teacher's
     certainty (1 - normalised entropy, or the max probability);
  3. ``rebalance``: class weights from a running estimate of pseudo-label class
     frequencies (rare classes count more);
  4. ``prototype``: InfoNCE between pixel embeddings and class prototypes
     (running means of the teacher's confident embeddings): O(N C) for N pixels
     and C classes. ``pairwise`` swaps in a ReCo-style pixel-to-pixel supervised
     contrast on the same sampled pixels, O(N^2), for the cost comparison.

Switching parts off degrades FARCLUSS to the baseline: without ``fuzzy`` the
targets are hard; without ``fuzzy`` and ``uncertainty`` the 0.95 threshold masks
pixels exactly as in ``fixmatch``.

The EMA teacher is evaluated (for every method, the supervised one too), so the
comparison is not confounded by weight averaging.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.errors import DataError, ParameterError

METHODS = ("supervised", "fixmatch", "farcluss")
PARTS = ("fuzzy", "uncertainty", "rebalance", "prototype")

# The strong (photometric) view of the unlabeled images; CutMix is applied on top in both.
# ``paper``: UniMatch/FixMatch's colour jitter (+-40 % brightness and contrast, +-50 % saturation), random
# grey (p 0.2) and Gaussian blur (sigma 0.3-1.2 px, p 0.5), made for natural photographs.
# ``cue_preserving``: for the simulated scenes, whose classes differ by hue (soil vs grass vs water), by
# texture scale (grass vs woodland vs hedgerow) and by 1-2 px structures (hedgerows, vehicles): +-15 %
# brightness and contrast, +-10 % saturation, no grey (it removes the hue cue), no blur (it removes the
# texture-scale cue and the thin classes), plus Gaussian sensor noise (sigma 0.02); the view still differs
# from the weak one, as the weak-to-strong consistency needs.
STRONG_AUGMENTATIONS = {
    "paper": {
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.5,
        "grey": 0.2,
        "blur": 0.5,
        "blur_sigma": (0.3, 1.2),
        "noise": 0.0,
    },
    "cue_preserving": {
        "brightness": 0.15,
        "contrast": 0.15,
        "saturation": 0.1,
        "grey": 0.0,
        "blur": 0.0,
        "blur_sigma": (0.3, 1.2),
        "noise": 0.02,
    },
}


@dataclass(frozen=True)
class SemiSupConfig:
    """Every switch and constant of the teacher-student step."""

    method: str = "farcluss"
    fuzzy: bool = True
    uncertainty: bool = True
    rebalance: bool = True
    prototype: bool = True
    pairwise: bool = False
    top_k: int = 3
    threshold: float = 0.95
    certainty: str = "entropy"
    ema_momentum: float = 0.99
    unsup_weight: float = 1.0
    contrast_weight: float = 0.1
    temperature: float = 0.1
    rebalance_power: float = 0.5
    rebalance_momentum: float = 0.9
    max_class_weight: float = 5.0
    prototype_momentum: float = 0.9
    prototype_confidence: float = 0.7
    contrast_pixels: int = 512
    cutmix_probability: float = 0.5
    crop_min_scale: float = 1.0
    strong: str = "paper"

    def __post_init__(self) -> None:
        if self.strong not in STRONG_AUGMENTATIONS:
            raise ParameterError(f"strong must be one of {sorted(STRONG_AUGMENTATIONS)}, got {self.strong!r}")
        self._check()

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.certainty not in ("entropy", "maxprob"):
            raise ParameterError(f"certainty must be 'entropy' or 'maxprob', got {self.certainty!r}")
        if self.top_k < 1:
            raise ParameterError(f"top_k must be >= 1, got {self.top_k}")
        if not 0 <= self.ema_momentum < 1:
            raise ParameterError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if not 0 < self.crop_min_scale <= 1:
            raise ParameterError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")

    @property
    def uses_unlabeled(self) -> bool:
        return self.method != "supervised"

    @property
    def uses_contrast(self) -> bool:
        return self.method == "farcluss" and (self.prototype or self.pairwise)


def method_config(method: str, **overrides) -> SemiSupConfig:
    """The config of a named method: ``supervised``, ``fixmatch`` or ``farcluss`` (all parts on)."""
    if method == "supervised":
        base = SemiSupConfig(method="supervised", fuzzy=False, uncertainty=False, rebalance=False, prototype=False)
    elif method == "fixmatch":
        base = SemiSupConfig(method="fixmatch", fuzzy=False, uncertainty=False, rebalance=False, prototype=False)
    elif method == "farcluss":
        base = SemiSupConfig(method="farcluss")
    else:
        raise ParameterError(f"unknown method {method!r} (one of {METHODS})")
    return replace(base, **overrides)


def ablation_configs(base: SemiSupConfig | None = None) -> dict[str, SemiSupConfig]:
    """FARCLUSS with each part removed, and parts added one by one to the hard-threshold baseline."""
    full = base or method_config("farcluss")
    configs = {"FARCLUSS (all parts)": full}
    for part in PARTS:
        configs[f"without {part}"] = replace(full, **{part: False})
    configs["hard threshold (no part)"] = replace(full, **{p: False for p in PARTS})
    added: dict[str, bool] = {p: False for p in PARTS}
    names = []
    for part in PARTS[:-1]:
        added[part] = True
        names.append(part)
        configs["+ " + " + ".join(names)] = replace(full, **added)
    return configs


# ----------------------------------------------------------------------------- model


class SegmenterWithEmbedding(nn.Module):
    """An smp segmenter plus a projection head on the decoder features, with input normalisation.

    ``forward(x)`` gives logits at the input size (usable by sliding-window inference);
    ``forward_with_embedding(x)`` also gives L2-normalised pixel embeddings at the decoder's stride.
    """

    def __init__(
        self,
        segmenter: nn.Module,
        embed_dim: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ):
        super().__init__()
        self.segmenter = segmenter
        channels = segmenter.segmentation_head[0].in_channels
        # One 1x1 conv: the contrastive head must stay light next to the decoder.
        self.projection = nn.Sequential(nn.Conv2d(channels, embed_dim, 1))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        features = self.segmenter.encoder((x - self.mean) / self.std)
        return self.segmenter.decoder(features)

    def forward_with_embedding(self, x: torch.Tensor, embed: bool = True):
        decoded = self._decode(x)
        logits = self.segmenter.segmentation_head(decoded)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        emb = l2_normalize_channels(self.projection(decoded)) if embed else None
        return logits, emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x, embed=False)[0]


def l2_normalize_channels(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` for (B,D,H,W) maps (equal to within float rounding).

    ``torch.linalg.vector_norm`` over the strided channel axis of a small NCHW map is several times
    slower on the CPU than a sum of squares, forward and backward.
    """
    return x / x.square().sum(dim=1, keepdim=True).sqrt().clamp_min(eps)


def input_multiple(model: nn.Module) -> int:
    """The multiple every input side must be, asked of the model (smp: its encoder's output stride, where the
    architecture requires divisible inputs; DeepLabV3+ ResNet at output stride 16 needs 16)."""
    seg = model.segmenter if isinstance(model, SegmenterWithEmbedding) else model
    encoder = getattr(seg, "encoder", None)
    return int(getattr(encoder, "output_stride", 1) or 1)


def round_to_multiple(size: int, multiple: int) -> int:
    """``size`` rounded to the nearest multiple of ``multiple`` (ties up), at least one multiple."""
    return max(multiple, int(multiple * ((size + multiple / 2) // multiple)))


def as_float(images):
    """Images as float32 in [0, 1]: uint8 arrays or tensors (real photographs, stored as bytes) are divided by
    255; float images are returned as they are."""
    if isinstance(images, torch.Tensor):
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images


def random_crops(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    sizes: torch.Tensor,
    crop: int,
    generator: torch.Generator,
    ignore_index: int = 255,
):
    """One random ``crop`` x ``crop`` window per sample, drawn anew at every call from the whole image
    (``sizes``: each sample's true (height, width) inside its padded canvas). An image smaller than ``crop`` is
    padded (image 0, mask ``ignore_index``), as UniMatch does."""
    b, _, canvas_h, canvas_w = images.shape
    out_i = images.new_zeros((b, images.shape[1], crop, crop))
    out_m = None if masks is None else masks.new_full((b, crop, crop), ignore_index)
    for k in range(b):
        h, w = int(sizes[k, 0]), int(sizes[k, 1])
        y = int(torch.randint(0, max(h - crop, 0) + 1, (1,), generator=generator))
        x = int(torch.randint(0, max(w - crop, 0) + 1, (1,), generator=generator))
        hh, ww = min(crop, h - y, canvas_h - y), min(crop, w - x, canvas_w - x)
        out_i[k, :, :hh, :ww] = images[k, :, y : y + hh, x : x + ww]
        if masks is not None:
            out_m[k, :hh, :ww] = masks[k, y : y + hh, x : x + ww]
    return out_i, out_m


def build_model(
    num_classes: int,
    encoder: str = "resnet10t",
    arch: str = "deeplabv3plus",
    embed_dim: int = 32,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    weights: str = "random",
    **segmenter_kwargs,
) -> SegmenterWithEmbedding:
    """DeepLabV3+ (or U-Net) from the foundation's factory, wrapped with an embedding head.

    ``weights``: the encoder's weights (``random``, ``pretrained`` for timm's ImageNet weights, a checkpoint
    path or ``labkit:<name>``), resolved by :func:`labkit.models.segmentation.create_segmenter`. With
    pretrained weights the input is normalised by the ImageNet mean and std the encoder was trained with.
    """
    from labkit.models.segmentation import create_segmenter

    segmenter = create_segmenter(
        arch, encoder=encoder, weights=weights, in_channels=3, num_classes=num_classes, **segmenter_kwargs
    )
    if weights != "random":
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return SegmenterWithEmbedding(segmenter, embed_dim=embed_dim, mean=mean, std=std)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student; buffers (BN statistics) are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


# ----------------------------------------------------------------------------- augmentation


def random_scale_crop(images: torch.Tensor, masks: torch.Tensor | None, min_scale: float, generator: torch.Generator):
    """Per-sample random crop of side ``s`` x the image side (``s`` uniform in [min_scale, 1]) at a random
    position, resized back to the full size: images bilinearly, masks by nearest neighbour, through the
    same sampling grid so that image and mask stay aligned. ``min_scale >= 1`` returns the inputs untouched
    (and draws no random numbers).
    """
    if min_scale >= 1:
        return images, masks
    b = images.shape[0]
    scale = min_scale + (1 - min_scale) * torch.rand(b, generator=generator)
    shift = (2 * torch.rand(b, 2, generator=generator) - 1) * (1 - scale)[:, None]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    out_i = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is None:
        return out_i, None
    out_m = (
        F.grid_sample(
            masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="border", align_corners=False
        )[:, 0]
        .round()
        .to(masks.dtype)
    )
    return out_i, out_m


def weak_augment(
    images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator, crop_min_scale: float = 1.0
):
    """Random scale crop (see :func:`random_scale_crop`), then per-sample flips and 90-degree turns
    (aerial views have no 'up'); every geometric change is identical for image and mask.
    """
    images, masks = random_scale_crop(images, masks, crop_min_scale, generator)
    out_i, out_m = [], []
    for b in range(images.shape[0]):
        k = int(torch.randint(0, 4, (1,), generator=generator))
        flip = bool(torch.randint(0, 2, (1,), generator=generator))
        img = torch.rot90(images[b], k, (-2, -1))
        img = img.flip(-1) if flip else img
        out_i.append(img)
        if masks is not None:
            m = torch.rot90(masks[b], k, (-2, -1))
            out_m.append(m.flip(-1) if flip else m)
    return torch.stack(out_i), (torch.stack(out_m) if masks is not None else None)


def strong_photometric(images: torch.Tensor, generator: torch.Generator, kind: str = "paper") -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation), random grey, Gaussian blur and sensor noise, with the
    strengths of :data:`STRONG_AUGMENTATIONS` ``[kind]``; geometry unchanged."""
    if kind not in STRONG_AUGMENTATIONS:
        raise ParameterError(f"strong augmentation must be one of {sorted(STRONG_AUGMENTATIONS)}, got {kind!r}")
    a = STRONG_AUGMENTATIONS[kind]
    b = images.shape[0]

    def uniform(lo, hi):
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=generator)).to(images.device)

    x = images * uniform(1 - a["brightness"], 1 + a["brightness"])
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(1 - a["contrast"], 1 + a["contrast"]) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * uniform(1 - a["saturation"], 1 + a["saturation"]) + grey
    to_grey = (torch.rand(b, 1, 1, 1, generator=generator) < a["grey"]).to(images.device)
    x = torch.where(to_grey, x.mean(dim=1, keepdim=True).expand_as(x), x)
    blur = (torch.rand(b, generator=generator) < a["blur"]).to(images.device)
    if blur.any():
        lo, hi = a["blur_sigma"]
        sigma = float(lo + (hi - lo) * torch.rand(1, generator=generator))
        radius = max(1, int(math.ceil(2 * sigma)))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
        taps = taps / taps.sum()
        c = x.shape[1]
        blurred = F.conv2d(
            F.pad(x[blur], (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c
        )
        blurred = F.conv2d(
            F.pad(blurred, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c
        )
        x = x.clone()
        x[blur] = blurred
    if a["noise"]:
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = x + a["noise"] * noise
    return x.clamp(0, 1)


def cutmix_boxes(batch: int, height: int, width: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """(B,H,W) bool: True where sample b takes pixels from its partner (a box of 25-50% area, with prob p)."""
    boxes = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        if float(torch.rand(1, generator=generator)) >= probability:
            continue
        area = 0.25 + 0.25 * float(torch.rand(1, generator=generator))
        ratio = math.exp((float(torch.rand(1, generator=generator)) - 0.5) * math.log(3.0))
        h = min(height, max(1, int(round(math.sqrt(area * height * width * ratio)))))
        w = min(width, max(1, int(round(math.sqrt(area * height * width / ratio)))))
        y = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        x = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        boxes[b, y : y + h, x : x + w] = True
    return boxes


def apply_cutmix(tensor: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Paste ``tensor[partner]`` into ``tensor`` inside ``boxes``; works for images (B,C,H,W) and maps (B,H,W)."""
    mixed = tensor[partner]
    mask = boxes if tensor.dim() == 3 else boxes[:, None]
    return torch.where(mask, mixed, tensor)


# ----------------------------------------------------------------------------- pseudo-labels


def certainty_map(probs: torch.Tensor, measure: str = "entropy") -> torch.Tensor:
    """(B,H,W) in [0,1]: 1 - entropy / log(C) (``entropy``) or the top probability (``maxprob``)."""
    if measure == "maxprob":
        return probs.max(dim=1).values
    c = probs.shape[1]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
    return (1.0 - entropy / math.log(c)).clamp(0, 1)


def fuzzy_targets(probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep each pixel's top-K class probabilities, renormalised to sum to one."""
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    targets = torch.zeros_like(probs).scatter_(1, indices, values)
    return targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-12)


def pseudo_labels(probs: torch.Tensor, config: SemiSupConfig, class_weights: torch.Tensor | None = None):
    """Targets (B,C,H,W) and per-pixel weights (B,H,W) from teacher probabilities, as ``config`` says."""
    certainty = certainty_map(probs, config.certainty)
    if config.fuzzy:
        targets = fuzzy_targets(probs, config.top_k)
        weights = certainty if config.uncertainty else torch.ones_like(certainty)
    else:
        hard = probs.argmax(dim=1)
        targets = F.one_hot(hard, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        if config.uncertainty:
            weights = certainty
        else:
            weights = (probs.max(dim=1).values >= config.threshold).to(probs.dtype)
    if config.rebalance and class_weights is not None:
        weights = weights * (targets * class_weights.view(1, -1, 1, 1)).sum(dim=1)
    return targets, weights


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over all pixels of weight * (-sum_c target_c log p_c); zero-weight pixels still count in the mean."""
    per_pixel = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_pixel * weights).mean()


class ClassFrequencyTracker:
    """Running (EMA) class frequencies of the pseudo-labels and the rebalancing weights they imply."""

    def __init__(self, num_classes: int, momentum: float = 0.9, power: float = 0.5, max_weight: float = 5.0):
        self.frequencies = torch.full((num_classes,), 1.0 / num_classes)
        self.momentum, self.power, self.max_weight = momentum, power, max_weight

    @torch.no_grad()
    def update(self, targets: torch.Tensor) -> None:
        batch_freq = targets.sum(dim=(0, 2, 3))
        batch_freq = batch_freq / batch_freq.sum().clamp_min(1e-12)
        self.frequencies = self.momentum * self.frequencies + (1 - self.momentum) * batch_freq

    def weights(self) -> torch.Tensor:
        raw = (self.frequencies + 1e-4) ** (-self.power)
        raw = raw / (self.frequencies * raw).sum()  # frequency-weighted mean of 1 keeps the loss scale
        return raw.clamp(max=self.max_weight)


# ----------------------------------------------------------------------------- contrast


def prototype_contrast(
    embeddings: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, prototypes: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE of N pixel embeddings (N,D) against C class prototypes (C,D): O(N C D).

    The (C,N) logits put the classes along dim 0: the same cross-entropy as ``F.cross_entropy`` on
    (N,C), but CPU log-softmax over a short contiguous class axis is several times slower.
    """
    logits = prototypes @ embeddings.t() / temperature
    loss = -F.log_softmax(logits, dim=0).gather(0, labels[None]).squeeze(0)
    return (loss * weights).sum() / weights.sum().clamp_min(1e-6)


def pairwise_contrast(
    embeddings: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ReCo-style supervised pixel contrast over all N x N pairs of the sampled pixels: O(N^2 D)."""
    n = embeddings.shape[0]
    sim = embeddings @ embeddings.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    sim = sim.masked_fill(self_mask, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positive.sum(dim=1)
    per_pixel = -(log_prob * positive).sum(dim=1) / n_pos.clamp_min(1)
    w = weights * (n_pos > 0)
    return (per_pixel * w).sum() / w.sum().clamp_min(1e-6)


def sample_pixels(labels: torch.Tensor, weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (into the flattened maps) of up to ``n`` pixels with a valid label and positive weight."""
    valid = torch.nonzero((labels.reshape(-1) >= 0) & (weights.reshape(-1) > 0)).squeeze(1)
    if valid.numel() > n:
        valid = valid[torch.randperm(valid.numel(), generator=generator)[:n].to(valid.device)]
    return valid


# ----------------------------------------------------------------------------- trainer


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 1e-4, head_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """``adamw``, or ``sgd`` as UniMatch trains DeepLabV3+ (momentum 0.9, weight decay 1e-4); the encoder (the
    backbone) at ``lr`` and everything else (decoder, heads) at ``head_lr_scale`` x ``lr`` (UniMatch: 10x)."""
    if name not in OPTIMIZERS:
        raise ParameterError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    seg = model.segmenter if isinstance(model, SegmenterWithEmbedding) else model
    backbone = {id(p) for p in getattr(seg, "encoder", nn.Module()).parameters()}
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if id(p) in backbone], "lr": lr},
        {"params": [p for p in params if id(p) not in backbone], "lr": lr * head_lr_scale},
    ]
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


class TeacherStudentTrainer:
    """Student trained by AdamW or SGD, EMA teacher, prototypes and class-frequency tracker; one call per step."""

    def __init__(
        self,
        model: SegmenterWithEmbedding,
        num_classes: int,
        config: SemiSupConfig,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        ignore_index: int = 255,
        optimizer: str = "adamw",
        head_lr_scale: float = 1.0,
    ):
        self.student = model
        self.teacher = copy.deepcopy(model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.config, self.num_classes, self.ignore_index = config, num_classes, ignore_index
        self.optimizer = make_optimizer(model, optimizer, lr, weight_decay, head_lr_scale)
        self.generator = torch.Generator().manual_seed(seed)
        self.tracker = ClassFrequencyTracker(
            num_classes, config.rebalance_momentum, config.rebalance_power, config.max_class_weight
        )
        embed_dim = model.projection[-1].out_channels
        self.prototypes = torch.zeros(num_classes, embed_dim)
        self.prototype_ready = torch.zeros(num_classes, dtype=torch.bool)
        self.device = next(model.parameters()).device
        self.tracker.frequencies = self.tracker.frequencies.to(self.device)
        self.prototypes = self.prototypes.to(self.device)
        self.prototype_ready = self.prototype_ready.to(self.device)
        self.steps = 0

    @torch.no_grad()
    def _update_prototypes(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """EMA update of the class prototypes from (B,D,h,w) embeddings and (B,h,w) labels (-1 = skip)."""
        flat = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
        self._update_prototypes_flat((flat, labels.reshape(-1)))

    @torch.no_grad()
    def _update_prototypes_flat(self, *groups: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One EMA update of the prototypes per ``(embeddings (N,D), labels (N,))`` group, applied in order.

        Each group's class means come from one shared scatter (labels of group g are offset by g*C,
        skipped pixels go to a spare row), so two groups cost one ``index_add_`` instead of two
        full passes; the per-group blends then run on the tiny (C,D) prototype table.
        """
        c, n_groups = self.num_classes, len(groups)
        dim = self.prototypes.shape[1]
        emb = groups[0][0] if n_groups == 1 else torch.cat([e for e, _ in groups])
        spare = n_groups * c
        labs = torch.cat([torch.where(lab >= 0, lab + g * c, spare) for g, (_, lab) in enumerate(groups)])
        sums = emb.new_zeros(spare + 1, dim).index_add_(0, labs, emb)
        seen = (torch.bincount(labs, minlength=spare + 1)[:spare] > 0).view(n_groups, c, 1)
        means = F.normalize(sums[:spare], dim=1).view(n_groups, c, dim)
        m = self.config.prototype_momentum
        protos, ready = self.prototypes, self.prototype_ready[:, None]
        for g in range(n_groups):
            blended = F.normalize(m * protos + (1 - m) * means[g], dim=1)
            protos = torch.where(seen[g], torch.where(ready, blended, means[g]), protos)
            ready = ready | seen[g]
        self.prototypes, self.prototype_ready = protos, ready[:, 0]

    def step(
        self, labeled_images: torch.Tensor, labeled_masks: torch.Tensor, unlabeled_images: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One optimisation step; returns the loss terms."""
        cfg, g = self.config, self.generator
        self.student.train()
        labeled_images, labeled_masks = labeled_images.to(self.device), labeled_masks.to(self.device)
        if unlabeled_images is not None:
            unlabeled_images = unlabeled_images.to(self.device)
        xl, yl = weak_augment(labeled_images, labeled_masks, g, cfg.crop_min_scale)
        want_emb = cfg.uses_contrast
        terms: dict[str, torch.Tensor] = {}
        if not cfg.uses_unlabeled:
            logits, emb_l = self.student.forward_with_embedding(xl, embed=want_emb)
            terms["supervised"] = F.cross_entropy(logits, yl, ignore_index=self.ignore_index)
        else:
            if unlabeled_images is None or unlabeled_images.shape[0] == 0:
                raise DataError("semi-supervised step needs a non-empty batch of unlabeled images")
            xu, _ = weak_augment(unlabeled_images, None, g, cfg.crop_min_scale)
            with torch.no_grad():
                self.teacher.eval()
                t_logits, t_emb = self.teacher.forward_with_embedding(xu, embed=want_emb)
                probs = t_logits.softmax(dim=1)
                class_w = self.tracker.weights() if cfg.rebalance else None
                targets, weights = pseudo_labels(probs, cfg, class_w)
                if cfg.rebalance:
                    self.tracker.update(targets)
                boxes = cutmix_boxes(xu.shape[0], xu.shape[2], xu.shape[3], cfg.cutmix_probability, g).to(self.device)
                partner = torch.roll(torch.arange(xu.shape[0], device=self.device), 1)
                xs = apply_cutmix(strong_photometric(xu, g, cfg.strong), boxes, partner)
                targets = apply_cutmix(targets, boxes, partner)
                weights = apply_cutmix(weights, boxes, partner)
            logits, emb = self.student.forward_with_embedding(torch.cat([xl, xs]), embed=want_emb)
            n_l = xl.shape[0]
            terms["supervised"] = F.cross_entropy(logits[:n_l], yl, ignore_index=self.ignore_index)
            terms["unsupervised"] = cfg.unsup_weight * soft_cross_entropy(logits[n_l:], targets, weights)
            if want_emb:
                terms["contrast"] = cfg.contrast_weight * self._contrast(
                    emb, yl, t_emb, probs, targets, weights, n_l, boxes, partner
                )
        loss = sum(terms.values())
        stats = {}
        if cfg.uses_unlabeled:
            # How much of the unlabeled signal survives: pixels with a non-zero weight, and the mean weight.
            stats = {"pseudo_kept": (weights > 0).float().mean().detach(), "pseudo_weight": weights.mean().detach()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        momentum = min(cfg.ema_momentum, 1.0 - 1.0 / (self.steps + 2))  # mean-teacher warm-up of the EMA
        ema_update(self.teacher, self.student, momentum)
        self.steps += 1
        return (
            {k: float(v.detach()) for k, v in terms.items()}
            | {"loss": float(loss.detach())}
            | {k: float(v) for k, v in stats.items()}
        )

    def _contrast_labels(
        self, size, yl: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ):
        """Labels and weights at the embedding stride ``size``.

        Returns the labelled pixels' labels (nearest sampling, -1 = ignored), the unlabeled pixels'
        labels and weights (area means of the CutMixed targets and weights) and the teacher's confident
        labels on the un-mixed unlabeled images (-1 below ``prototype_confidence``), for the prototypes.
        """
        cfg, c = self.config, self.num_classes
        h, w = yl.shape[-2:]
        if h % size[0] == 0 and w % size[1] == 0:  # integer stride: nearest sampling is plain slicing
            lab_l = yl[:, :: h // size[0], :: w // size[1]]
        else:
            lab_l = F.interpolate(yl[:, None].float(), size=size, mode="nearest")[:, 0].long()
        lab_l = torch.where(lab_l == self.ignore_index, -1, lab_l)
        # One area pooling for targets, weights and teacher probabilities (channel-wise, so the same means);
        # at an integer stride area pooling is average pooling, which is quicker.
        stacked = torch.cat([targets, weights[:, None], probs], dim=1)
        if h % size[0] == 0 and w % size[1] == 0:
            pooled = F.avg_pool2d(stacked, (h // size[0], w // size[1]))
        else:
            pooled = F.interpolate(stacked, size=size, mode="area")
        t_small, w_small, t_lab = pooled[:, :c], pooled[:, c], pooled[:, c + 1 :]
        conf_u, lab_u = t_small.max(dim=1)
        lab_u = torch.where(conf_u > 0, lab_u, -1)
        t_arg = t_lab.max(dim=1).indices  # = argmax (first maximum), but quicker on a strided class axis
        t_arg = torch.where(certainty_map(t_lab, cfg.certainty) >= cfg.prototype_confidence, t_arg, -1)
        return lab_l, lab_u, w_small, t_arg

    def _contrast(self, emb, yl, t_emb, probs, targets, weights, n_l, boxes=None, partner=None) -> torch.Tensor:
        """The contrastive term of a step: prototype InfoNCE (or pairwise) on sampled pixel embeddings."""
        cfg = self.config
        dim = emb.shape[1]
        with torch.no_grad():
            lab_l, lab_u, w_small, t_arg = self._contrast_labels(emb.shape[-2:], yl, probs, targets, weights)
        flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        n_lab = lab_l.numel()
        with torch.no_grad():
            # Prototypes: labelled teacher pixels are not computed (no teacher pass on them), so use the
            # student's detached labelled embeddings, then the teacher's confident unlabeled ones.
            self._update_prototypes_flat(
                (flat[:n_lab].detach(), lab_l.reshape(-1)),
                (t_emb.permute(0, 2, 3, 1).reshape(-1, dim), t_arg.reshape(-1)),
            )
            labels = torch.cat([lab_l.reshape(-1), lab_u.reshape(-1)])
            pix_w = torch.cat([w_small.new_ones(n_lab), w_small.reshape(-1)])
            if cfg.prototype and not cfg.pairwise:
                # A spare False at the end: label -1 indexes it, so ignored pixels stay ignored.
                ready = torch.cat([self.prototype_ready, self.prototype_ready.new_zeros(1)])[labels]
                labels = torch.where(ready, labels, -1)
            idx = sample_pixels(labels, pix_w, cfg.contrast_pixels, self.generator)
        if idx.numel() < 2:
            return flat.sum() * 0.0
        if idx.numel() < labels.numel():
            flat, labels, pix_w = flat[idx], labels[idx], pix_w[idx]
        # else: every pixel is used, in order; skipping the gather gives the same loss without a scatter in backward
        if cfg.pairwise:
            return pairwise_contrast(flat, labels, pix_w, cfg.temperature)
        return prototype_contrast(flat, labels, pix_w, self.prototypes, cfg.temperature)


def train_semisupervised(
    model: SegmenterWithEmbedding,
    labeled_images: np.ndarray,
    labeled_masks: np.ndarray,
    unlabeled_images: np.ndarray | None,
    config: SemiSupConfig,
    *,
    num_classes: int,
    iterations: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
    desc: str = "",
    lr_schedule: str = "constant",
    optimizer: str = "adamw",
    head_lr_scale: float = 1.0,
    crop: int | None = None,
    labeled_sizes: np.ndarray | None = None,
    unlabeled_sizes: np.ndarray | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint=None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` for ``iterations`` steps; returns (the EMA teacher, per-step loss history).

    ``lr_schedule``: ``constant`` or ``poly`` (lr x (1 - t/T)^0.9 over the ``iterations`` steps, the decay
    of UniMatch and FARCLUSS). ``optimizer``, ``head_lr_scale``: see :func:`make_optimizer`. ``crop``: every
    step takes a new random ``crop`` x ``crop`` window of each drawn image (:func:`random_crops`; the sizes give
    each image's true extent in its padded canvas); None trains on the images as they are. uint8 images are
    scaled to [0, 1] per batch. ``on_checkpoint(steps, teacher)`` is called after each step count in
    ``checkpoints`` (e.g. to score the teacher part-way: the plateau); it must draw no random numbers.
    """
    if lr_schedule not in ("constant", "poly"):
        raise ParameterError(f"lr_schedule must be 'constant' or 'poly', got {lr_schedule!r}")
    from tqdm.auto import tqdm

    if len(labeled_images) == 0:
        raise DataError("no labelled images: the labelled split is empty")
    if config.uses_unlabeled and (unlabeled_images is None or len(unlabeled_images) == 0):
        raise DataError(f"{config.method} needs unlabeled images, but the unlabeled set is empty")
    torch.manual_seed(seed)
    trainer = TeacherStudentTrainer(
        model,
        num_classes,
        config,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        optimizer=optimizer,
        head_lr_scale=head_lr_scale,
    )
    scheduler = None
    if lr_schedule == "poly":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer, lambda t: max(0.0, 1.0 - t / max(iterations, 1)) ** 0.9
        )
    xl_all, yl_all = (
        torch.from_numpy(np.ascontiguousarray(labeled_images)),
        torch.from_numpy(np.ascontiguousarray(labeled_masks)).long(),
    )
    xu_all = torch.from_numpy(np.ascontiguousarray(unlabeled_images)) if config.uses_unlabeled else None

    def full_sizes(images):
        return torch.tensor([list(images.shape[-2:])] * len(images)) if images is not None else None

    sl = torch.as_tensor(labeled_sizes) if labeled_sizes is not None else full_sizes(xl_all)
    su = torch.as_tensor(unlabeled_sizes) if unlabeled_sizes is not None else full_sizes(xu_all)
    g = torch.Generator().manual_seed(seed + 7919)
    crop_g = torch.Generator().manual_seed(seed + 104_729)  # its own stream: crops leave the other draws as they were
    rows = []
    start = time.perf_counter()
    for it in tqdm(range(iterations), desc=desc or config.method, disable=not progress, leave=False):
        li = torch.randint(0, len(xl_all), (batch_size,), generator=g)
        ui = torch.randint(0, len(xu_all), (batch_size,), generator=g) if xu_all is not None else None
        xl, yl, xu = xl_all[li], yl_all[li], xu_all[ui] if ui is not None else None
        if crop is not None:
            xl, yl = random_crops(xl, yl, sl[li], crop, crop_g)
            xu = random_crops(xu, None, su[ui], crop, crop_g)[0] if xu is not None else None
        terms = trainer.step(as_float(xl), yl, as_float(xu) if xu is not None else None)
        rows.append({"iteration": it, "lr": trainer.optimizer.param_groups[0]["lr"], **terms})
        if scheduler is not None:
            scheduler.step()
        if on_checkpoint is not None and it + 1 in checkpoints:
            on_checkpoint(it + 1, trainer.teacher)
    history = pd.DataFrame(rows)
    history.attrs["seconds"] = time.perf_counter() - start
    return trainer.teacher, history


# ----------------------------------------------------------------------------- evaluation


class _DeviceAdapter(nn.Module):
    """Moves CPU inputs to the wrapped model's device and its outputs back to the CPU."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(x.to(device)).cpu()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 32, tile: int | None = None) -> np.ndarray:
    """Class ids (N,H,W); images larger than ``tile`` go through the foundation's sliding-window inference."""
    from labkit.methods.inference import sliding_window_predict

    model.eval()
    num_classes = None
    preds = []
    multiple = input_multiple(model)
    if tile is not None and max(images.shape[-2:]) > tile:
        if tile % multiple:
            raise ParameterError(f"the sliding window's side {tile} is not a multiple of the model's {multiple}")
        # The foundation's sliding window feeds CPU tensors; the adapter carries them to the model's device.
        on_device = _DeviceAdapter(model)
        for image in images:
            image = as_float(image)
            if num_classes is None:
                num_classes = on_device(torch.from_numpy(np.ascontiguousarray(image[None, :, :tile, :tile]))).shape[1]
            probs = sliding_window_predict(on_device, image, num_classes, tile=tile, overlap=0.25)
            preds.append(probs.argmax(axis=0))
        return np.stack(preds)
    device = next(model.parameters()).device
    h, w = images.shape[-2:]
    ph, pw = -h % multiple, -w % multiple  # padded to the model's multiple, the padding cut off the prediction
    for i in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(as_float(images[i : i + batch_size])))
        if ph or pw:
            batch = F.pad(batch, (0, pw, 0, ph))
        preds.append(model(batch.to(device))[..., :h, :w].argmax(dim=1).cpu().numpy())
    return np.concatenate(preds)


def score_predictions(
    pred: np.ndarray,
    target: np.ndarray,
    class_names: Sequence[str],
    band: np.ndarray | None = None,
    ignore_index: int = 255,
) -> dict[str, float]:
    """mIoU and per-class IoU; with ``band`` also ``boundary_miou`` over the boundary-band pixels."""
    from labkit.core.metrics import ConfusionMatrix

    k = len(class_names)
    scores = ConfusionMatrix(k, ignore_index).update(pred, target).scores(class_names)
    out = {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"]}
    out.update({key: v for key, v in scores.items() if key.startswith("iou/")})
    if band is not None:
        banded = np.where(band, target, ignore_index)
        out["boundary_miou"] = ConfusionMatrix(k, ignore_index).update(pred, banded).miou()
    return out


def config_table(configs: dict[str, SemiSupConfig]) -> pd.DataFrame:
    """One row per named config with its switches (for the notebook)."""
    return pd.DataFrame([{"name": n, **{p: getattr(c, p) for p in PARTS}} for n, c in configs.items()])


def config_dict(config: SemiSupConfig) -> dict:
    return asdict(config)


# ----------------------------------------------------------------------------- cost per iteration


class SavedTensorMeter:
    """Bytes of tensors autograd saves for backward during a forward pass (the activation memory).

    On the CPU there is no allocator peak counter; the saved activations are what grows with
    pixels and pairs, so they stand for the step's peak memory. On CUDA, use the allocator's peak.
    """

    def __init__(self):
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor):
        self.bytes += tensor.numel() * tensor.element_size()
        return tensor

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def measure_step_costs(
    model_factory,
    configs: dict[str, SemiSupConfig],
    labeled_images: torch.Tensor,
    labeled_masks: torch.Tensor,
    unlabeled_images: torch.Tensor,
    num_classes: int,
    repeats: int = 5,
    warmup: int = 2,
    seed: int = 0,
    reference: str | None = None,
    baselines: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Wall time and memory per training step of each config on the same batch.

    The configs are stepped in rounds (one step of each per round, the order reversed every other
    round) so that load from other processes falls on all of them alike. Columns:

    * ``ms_per_iteration``: the best time over ``repeats`` rounds (the least disturbed step);
    * ``ms_median``: the median time;
    * ``vs_reference``: the median over rounds of this step's time / the ``reference`` config's time in
      the same round (default reference: the first config);
    * ``extra_ms`` and ``extra_pct_of_reference``: for configs named in ``baselines`` (config -> the
      config it adds to), the median over rounds of (time - baseline's time) and of that difference as a
      percentage of the reference's time in the same round. Ratios and differences within a round are
      far steadier on a shared machine than differences of separately taken minima;
    * ``saved_activation_mb``: the activation bytes saved for backward (see :class:`SavedTensorMeter`);
      on CUDA also ``peak_mb``, the allocator's peak during one step.

    ``model_factory()`` must build identical fresh models (on the device to measure).
    """
    names = list(configs)
    reference = reference or names[0]
    baselines = baselines or {}
    for name in [reference, *baselines, *baselines.values()]:
        if name not in configs:
            raise ParameterError(f"measure_step_costs: {name!r} is not one of the configs {names}")
    trainers = {}
    for name, config in configs.items():
        torch.manual_seed(seed)
        trainers[name] = TeacherStudentTrainer(model_factory(), num_classes, config, seed=seed)
    cuda = trainers[names[0]].device.type == "cuda"

    def timed_step(trainer) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.step(labeled_images, labeled_masks, unlabeled_images)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step(labeled_images, labeled_masks, unlabeled_images)
    rounds = []
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        rounds.append({name: timed_step(trainers[name]) for name in order})
    times = pd.DataFrame(rounds)[names] * 1000
    rows = []
    for name, trainer in trainers.items():
        row = {
            "method": name,
            "ms_per_iteration": float(times[name].min()),
            "ms_median": float(times[name].median()),
            "vs_reference": float((times[name] / times[reference]).median()),
        }
        if name in baselines:
            diff = times[name] - times[baselines[name]]
            row["extra_ms"] = float(diff.median())
            row["extra_pct_of_reference"] = float((100 * diff / times[reference]).median())
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with SavedTensorMeter() as meter:
            trainer.step(labeled_images, labeled_masks, unlabeled_images)
        row["saved_activation_mb"] = meter.bytes / 2**20
        if cuda:
            row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["rounds_ms"] = times
    return table


def measure_contrast_costs(
    n_pixels: Sequence[int],
    num_classes: int = 8,
    embed_dim: int = 32,
    temperature: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Forward+backward time and saved memory of prototype vs pairwise contrast on the same N pixels."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(num_classes, embed_dim, generator=g), dim=1)
    rows = []
    for n in n_pixels:
        base = torch.randn(n, embed_dim, generator=g)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        weights = torch.rand(n, generator=g)
        for name in ("prototype", "pairwise"):
            times, saved = [], 0
            for r in range(repeats + 1):
                emb = base.clone().requires_grad_(True)
                t0 = time.perf_counter()
                with SavedTensorMeter() as meter:
                    z = F.normalize(emb, dim=1)
                    if name == "prototype":
                        loss = prototype_contrast(z, labels, weights, prototypes, temperature)
                    else:
                        loss = pairwise_contrast(z, labels, weights, temperature)
                loss.backward()
                if r:  # the first call pays one-off allocation costs
                    times.append(time.perf_counter() - t0)
                saved = meter.bytes
            rows.append(
                {"contrast": name, "pixels": n, "ms": 1000 * float(np.min(times)), "saved_activation_mb": saved / 2**20}
            )
    return pd.DataFrame(rows)


def measure_contrast_scaling(
    n_pixels: Sequence[int],
    num_classes: int = 8,
    embed_dim: int = 32,
    temperature: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Forward+backward time and saved memory of prototype vs pairwise contrast on the same N pixels, one
    row per (contrast, pixels, repeat). Repeats are interleaved (each repeat measures every size and both
    contrasts), so load from other processes falls on all alike; one unmeasured pass first."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(num_classes, embed_dim, generator=g), dim=1)
    inputs = {}
    for n in n_pixels:
        inputs[n] = (
            torch.randn(n, embed_dim, generator=g),
            torch.randint(0, num_classes, (n,), generator=g),
            torch.rand(n, generator=g),
        )

    def once(name: str, n: int) -> tuple[float, int]:
        base, labels, weights = inputs[n]
        emb = base.clone().requires_grad_(True)
        t0 = time.perf_counter()
        with SavedTensorMeter() as meter:
            z = F.normalize(emb, dim=1)
            if name == "prototype":
                loss = prototype_contrast(z, labels, weights, prototypes, temperature)
            else:
                loss = pairwise_contrast(z, labels, weights, temperature)
        loss.backward()
        return time.perf_counter() - t0, meter.bytes

    rows = []
    for r in range(repeats + 1):
        for n in n_pixels:
            for name in ("prototype", "pairwise") if r % 2 == 0 else ("pairwise", "prototype"):
                seconds, saved = once(name, n)
                if r:  # the first pass pays one-off allocation costs
                    rows.append(
                        {
                            "contrast": name,
                            "pixels": int(n),
                            "repeat": r - 1,
                            "ms": 1000 * seconds,
                            "saved_activation_mb": saved / 2**20,
                        }
                    )
    return pd.DataFrame(rows)
