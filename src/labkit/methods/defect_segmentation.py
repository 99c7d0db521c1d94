"""Fine-tuning a (pretrained) timm ViT for defect segmentation and defect/no-defect classification.

The encoder is split into a frozen trunk (patch embedding + the first ``depth - k`` blocks) and a
trainable top (the last ``k`` blocks, the final norm, and a head). ``k = depth`` fine-tunes every
transformer block (the patch embedding, position embedding and class token stay as initialised);
``k = 0`` is a frozen probe with a trained head; in between is MAE's "partial fine-tuning" (He et
al. 2022, Fig. 9). With ``lora_rank > 0`` the top's blocks stay frozen and only low-rank adapters
(LoRA, Hu et al. 2022, via peft: :func:`labkit.models.lora.apply_lora`) on their attention
projections, and the head, are trained. Without augmentation the trunk's output for an image never
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

from labkit.core.errors import DataError, ParameterError
from labkit.core.metrics import segmentation_scores
from labkit.core.seeding import seed_everything

SEG_HEADS = ("linear", "conv")


def upsampling_steps(patch: int) -> int:
    """The conv decoder's 2x upsampling steps over a patch-token grid: floor(log2(patch)) - 1, so the decoder
    never upsamples past half the patch side (the final bilinear resize to the mask's side does the rest)."""
    return max(0, int(math.floor(math.log2(patch))) - 1)


def decoder_head(dim: int, patch: int, kind: str, num_classes: int = 2, decoder_channels: int = 32) -> nn.Module:
    """The one segmentation head over a (B, dim, h, w) patch-token grid, used by every segmenter here.

    ``"linear"``: BatchNorm + 1x1 convolution. ``"conv"``: 1x1 convolution to ``2 * decoder_channels``, then
    :func:`upsampling_steps` blocks of 2x bilinear upsampling + 3x3 convolution + BatchNorm + ReLU, then a 1x1
    convolution to the classes."""
    if kind not in SEG_HEADS:
        raise ParameterError(f"head must be one of {SEG_HEADS}, got {kind!r}")
    if kind == "linear":
        return nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, num_classes, 1))
    c = decoder_channels
    layers: list[nn.Module] = [nn.Conv2d(dim, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True)]
    ch = 2 * c
    for _ in range(upsampling_steps(patch)):
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(ch, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        ch = c
    layers.append(nn.Conv2d(ch, num_classes, 1))
    return nn.Sequential(*layers)


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
        x = encoder.patch_embed(images[i : i + batch_size])
        x = encoder._pos_embed(x)
        x = encoder.norm_pre(encoder.patch_drop(x))
        for block in encoder.blocks[: depth - trainable_blocks]:
            x = block(x)
        out.append(x.clone())
    return torch.cat(out)


class _Top(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        trainable_blocks: int,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        lora_targets="attention",
    ):
        super().__init__()
        depth = len(encoder.blocks)
        if not 0 <= trainable_blocks <= depth:
            raise ParameterError(f"trainable_blocks must be in [0, {depth}], got {trainable_blocks}")
        if lora_rank < 0:
            raise ParameterError(f"lora_rank must be >= 0, got {lora_rank}")
        if lora_rank > 0 and trainable_blocks == 0:
            raise ParameterError("LoRA needs blocks to adapt: trainable_blocks must be >= 1 when lora_rank > 0")
        self.blocks = nn.Sequential(*[copy.deepcopy(b) for b in encoder.blocks[depth - trainable_blocks :]])
        self.blocks.requires_grad_(True)
        self.lora_rank = int(lora_rank)
        if lora_rank > 0:
            from labkit.models.lora import apply_lora

            # peft freezes the copied blocks and trains only the adapters (B starts at 0: same output as before).
            self.blocks = apply_lora(
                self.blocks,
                rank=int(lora_rank),
                alpha=float(lora_alpha if lora_alpha is not None else 2 * lora_rank),
                targets=lora_targets,
            )
        # With no block to tune (or only adapters), the final norm stays frozen too.
        self.norm = copy.deepcopy(encoder.norm)
        self.norm.requires_grad_(trainable_blocks > 0 and lora_rank == 0)
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        ps = encoder.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.dim = int(encoder.embed_dim)

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(tokens))[:, self.prefix :]


class TokenSegmenter(nn.Module):
    """Trainable top of a ViT + a segmentation head; input: trunk tokens; output: logits at ``out_size``."""

    def __init__(
        self,
        encoder: nn.Module,
        trainable_blocks: int,
        num_classes: int = 2,
        head: str = "conv",
        out_size: int = 64,
        decoder_channels: int = 32,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
    ):
        super().__init__()
        if head not in SEG_HEADS:
            raise ParameterError(f"head must be one of {SEG_HEADS}, got {head!r}")
        self.top = _Top(encoder, trainable_blocks, lora_rank, lora_alpha)
        self.out_size, self.head_kind = int(out_size), head
        self.head = decoder_head(self.top.dim, self.top.patch, head, num_classes, decoder_channels)

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

    def __init__(
        self,
        encoder: nn.Module,
        trainable_blocks: int,
        num_classes: int = 2,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
    ):
        super().__init__()
        self.top = _Top(encoder, trainable_blocks, lora_rank, lora_alpha)
        self.head = nn.Sequential(nn.LayerNorm(2 * self.top.dim), nn.Linear(2 * self.top.dim, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(mean_max_pool(self.top.patch_tokens(tokens)))


def count_trainable(model: nn.Module) -> int:
    """Parameters that require gradients (an upper bound of what trains: see :func:`params_with_gradients`)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def params_with_gradients(model: nn.Module) -> int:
    """Parameters holding a gradient now (call after a backward pass): what the optimiser actually updates."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None))


def _check_tokens(train_tokens, n_targets: int, test_tokens, n_test_targets: int, what: str):
    if train_tokens.ndim != 3 or test_tokens.ndim != 3:
        raise DataError(
            f"tokens must be (N, tokens, dim) from trunk_tokens, got {tuple(train_tokens.shape)} "
            f"and {tuple(test_tokens.shape)}"
        )
    if len(train_tokens) == 0:
        raise DataError("no labelled training images given")
    if n_targets != len(train_tokens):
        raise DataError(f"{len(train_tokens)} training images but {n_targets} {what}")
    if n_test_targets != len(test_tokens):
        raise DataError(f"{len(test_tokens)} test images but {n_test_targets} {what}")


def _train_steps(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    encoder_lr_scale: float,
    seed: int,
    weight_decay: float = 1e-4,
    progress: bool = False,
    desc: str = "",
) -> float:
    """Exactly ``steps`` AdamW steps over shuffled mini-batches (the last partial batch dropped when there
    is more than one batch), cosine learning-rate decay over the steps; the top's parameters (blocks,
    norm, LoRA adapters) learn at ``lr * encoder_lr_scale``, the head at ``lr``. Returns seconds."""
    import time

    from tqdm.auto import tqdm

    if steps < 1:
        raise ParameterError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    if not encoder_lr_scale >= 0:
        raise ParameterError(f"encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
    head = [p for p in model.head.parameters() if p.requires_grad]
    top = [p for p in model.top.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": lr}]
    if top and encoder_lr_scale > 0:
        groups.append({"params": top, "lr": lr * encoder_lr_scale})
    elif top:
        for p in top:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    n = len(inputs)
    per_epoch = n // batch_size if n > batch_size else 1
    size = batch_size if n > batch_size else n
    started, step = time.time(), 0
    model.train()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    while step < steps:
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            if step >= steps:
                break
            idx = order[b * size : (b + 1) * size]
            loss = loss_fn(model(inputs[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
    bar.close()
    model.eval()
    return time.time() - started


def finetune_segmentation(
    encoder: nn.Module,
    train_tokens: torch.Tensor,
    train_masks,
    test_tokens: torch.Tensor,
    test_masks,
    *,
    trainable_blocks: int,
    head: str = "conv",
    steps: int = 60,
    batch_size: int = 16,
    lr: float = 5e-4,
    defect_weight: float | None = None,
    seed: int = 0,
    progress: bool = False,
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    encoder_lr_scale: float = 1.0,
) -> dict:
    """Train top + head on labelled tokens/masks for a fixed number of steps; score on the test set.

    ``defect_weight``: cross-entropy weight of the defect class (default: sqrt of the background-to-
    defect pixel ratio of the training masks, as defects cover a few percent of the pixels).
    ``lora_rank > 0``: train LoRA adapters on the top's blocks instead of the blocks themselves.
    ``encoder_lr_scale``: the top's learning rate relative to the head's (below 1 keeps pretrained
    blocks closer to where pretraining left them, as MAE/BEiT fine-tuning does with layer-wise decay).
    Returns ``{"miou", "defect_iou", "defect_f1", "defect_ap", "pixel_accuracy", "trainable_params", "seconds",
    "model"}`` (``defect_ap``: :func:`pixel_average_precision`, threshold-free).
    """
    train_masks = torch.as_tensor(np.asarray(train_masks), dtype=torch.long)
    test_masks = np.asarray(test_masks)
    _check_tokens(train_tokens, len(train_masks), test_tokens, len(test_masks), "masks")
    if train_masks.ndim != 3 or test_masks.ndim != 3 or train_masks.shape[1:] != test_masks.shape[1:]:
        raise DataError(
            f"masks must be (N, H, W) of one size, got training {tuple(train_masks.shape)} and test {test_masks.shape}"
        )
    if defect_weight is None:
        frac = float(train_masks.float().mean().clamp(min=1e-3))
        defect_weight = float(np.clip(np.sqrt((1 - frac) / frac), 1.0, 10.0))
    seed_everything(seed)  # the head's (and LoRA's) initial weights depend on the seed, not on what ran before
    model = TokenSegmenter(
        encoder,
        trainable_blocks,
        head=head,
        out_size=int(train_masks.shape[-1]),
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
    )
    seconds = _train_steps(
        model,
        train_tokens,
        train_masks,
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, defect_weight])),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        encoder_lr_scale=encoder_lr_scale,
        seed=seed,
        progress=progress,
        desc=f"fine-tune seg ({len(train_masks)} labels)",
    )
    with torch.inference_mode():
        logits = torch.cat([model(test_tokens[i : i + 128]) for i in range(0, len(test_tokens), 128)])
    pred = logits.argmax(1).numpy()
    scores = segmentation_scores(pred, test_masks, num_classes=2, class_names=["good", "defect"])
    return {
        "miou": scores["miou"],
        "defect_iou": scores["iou/defect"],
        "defect_f1": scores["f1/defect"],
        "defect_ap": pixel_average_precision(logits.softmax(1)[:, 1].numpy(), test_masks),
        "pixel_accuracy": scores["pixel_accuracy"],
        "trainable_params": count_trainable(model),
        "seconds": seconds,
        "model": model,
    }


def pixel_average_precision(defect_prob, masks) -> float:
    """Average precision of per-pixel defect probabilities against the masks: threshold-free, so it
    does not swing with how the 0.5 cut-off happens to fall after a short fine-tune (NaN without defects)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(masks).reshape(-1) > 0
    if not y.any() or y.all():
        return float("nan")
    return float(average_precision_score(y, np.asarray(defect_prob, np.float32).reshape(-1)))


def finetune_classification(
    encoder: nn.Module,
    train_tokens: torch.Tensor,
    train_labels,
    test_tokens: torch.Tensor,
    test_labels,
    *,
    trainable_blocks: int,
    steps: int = 60,
    batch_size: int = 16,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = False,
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    encoder_lr_scale: float = 1.0,
) -> dict:
    """Defect/no-defect classifier (top + linear head); returns accuracy, balanced accuracy, AUROC.
    Same training as :func:`finetune_segmentation`."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    train_labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    _check_tokens(train_tokens, len(train_labels), test_tokens, len(np.asarray(test_labels)), "labels")
    if len(np.unique(train_labels.numpy())) < 2:
        raise DataError(
            f"classification needs both good and defective training images, got only class "
            f"{int(train_labels[0])} in {len(train_labels)} labels"
        )
    seed_everything(seed)
    model = TokenClassifier(encoder, trainable_blocks, lora_rank=lora_rank, lora_alpha=lora_alpha)
    seconds = _train_steps(
        model,
        train_tokens,
        train_labels,
        nn.CrossEntropyLoss(),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        encoder_lr_scale=encoder_lr_scale,
        seed=seed,
        progress=progress,
        desc=f"fine-tune cls ({len(train_labels)} labels)",
    )
    with torch.inference_mode():
        prob = torch.cat(
            [model(test_tokens[i : i + 256]).softmax(1)[:, 1] for i in range(0, len(test_tokens), 256)]
        ).numpy()
    y = np.asarray(test_labels)
    pred = (prob > 0.5).astype(int)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "auroc": float(roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else float("nan"),
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------
# Study 3 v2: fine-tuning that trains what it says, on images (not cached trunk tokens)
# --------------------------------------------------------------------------------------
class ViTSegmenter(nn.Module):
    """A timm ViT (every parameter: patch embedding, position embedding, class token, blocks, final norm)
    followed by :func:`decoder_head` (``head``: linear or conv) on its patch-token grid, upsampled to ``out_size``.

    ``frozen=True`` freezes the whole encoder (a frozen probe): only the same decoder learns, and the study
    computes the encoder's features once per image and augmentation view (:meth:`features`,
    :func:`view_features`) and trains :meth:`decode` on them.
    Input (B, C, H, W) -> logits (B, num_classes, out_size, out_size).
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_size: int,
        num_classes: int = 2,
        head: str = "conv",
        decoder_channels: int = 32,
        frozen: bool = False,
    ):
        super().__init__()
        if head not in SEG_HEADS:
            raise ParameterError(f"head must be one of {SEG_HEADS}, got {head!r}")
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(not frozen)
        self.frozen = bool(frozen)
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        ps = encoder.patch_embed.patch_size
        patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.out_size = int(out_size)
        self.head_kind = head
        self.head = decoder_head(int(encoder.embed_dim), patch, head, num_classes, decoder_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch-token grid (B, D, h, w)."""
        t = self.encoder.forward_features(x)[:, self.prefix :]
        g = int(round(t.shape[1] ** 0.5))
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], g, g)

    def decode(self, grid: torch.Tensor) -> torch.Tensor:
        logits = self.head(grid)
        return F.interpolate(logits, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))


def small_unet(in_channels: int, num_classes: int = 2) -> nn.Module:
    """A small CNN U-Net trained from scratch (segmentation-models-pytorch: ResNet-18 encoder cut at depth 3,
    decoder 64/32/16 channels, random weights): the supervised CNN row every ViT row is shown against.

    segmentation-models-pytorch builds the whole ResNet-18 and only runs its first three stages at depth 3: its
    ``layer3`` and ``layer4`` (10.5 M of 11.4 M parameters) would require gradients and never receive one. They
    are removed, so every parameter of the model trains (0.88 M) and parameter counts say what trains. The
    weights of the stages kept are drawn as before (they are built first)."""
    import segmentation_models_pytorch as smp

    model = smp.Unet(
        encoder_name="resnet18",
        encoder_weights=None,
        encoder_depth=3,
        decoder_channels=(64, 32, 16),
        in_channels=in_channels,
        classes=num_classes,
    )
    for unused in ("layer3", "layer4"):
        if hasattr(model.encoder, unused):
            setattr(model.encoder, unused, nn.Identity())
    return model


#: The eight views of the augmentation (k quarter turns, then a horizontal flip or not): view ``2 * k + flip``.
N_VIEWS = 8


def _draw_view(gen: torch.Generator) -> tuple[int, bool]:
    k = int(torch.randint(0, 4, (1,), generator=gen))
    return k, bool(torch.randint(0, 2, (1,), generator=gen))


def apply_view(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``t`` (..., H, W) turned ``k`` quarter turns, then flipped horizontally if ``flip``."""
    if k:
        t = torch.rot90(t, k, (-2, -1))
    return torch.flip(t, (-1,)) if flip else t


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """The same random flip / 90-degree turn for a batch of images (B, C, H, W) and masks (B, H, W)."""
    k, flip = _draw_view(gen)
    return apply_view(x, k, flip), apply_view(y, k, flip)


@torch.inference_mode()
def view_features(features, images: torch.Tensor, batch_size: int = 64, device=None) -> torch.Tensor:
    """A frozen encoder's features of every augmentation view of ``images``: (N_VIEWS, N, ...), view ``2 * k +
    flip``, so a frozen probe trains on the same augmented batches as a full fine-tune (``train_segmenter``'s
    ``views``) while the encoder runs once per image and view."""
    device = torch.device(device or "cpu")
    out = []
    for k in range(4):
        for flip in (False, True):
            x = apply_view(images, k, flip)
            out.append(torch.cat([features(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]))
    return torch.stack(out)


def train_segmenter(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    encoder_lr_scale: float = 1.0,
    augment: bool = True,
    weight_decay: float = 1e-4,
    device=None,
    forward=None,
    views: torch.Tensor | None = None,
) -> dict:
    """Exactly ``steps`` AdamW steps (cosine decay) of class-weighted cross-entropy on (images, masks).

    ``model.encoder`` parameters (if any are trainable) learn at ``lr * encoder_lr_scale``, the rest at ``lr``.
    ``forward``: what maps a batch of ``images`` to logits (default ``model``; a frozen probe passes
    ``model.decode`` over cached features). ``views`` (``augment`` on): the inputs precomputed under every
    augmentation view (:func:`view_features`); each batch then reads the view the same random draw picks for
    images, so a frozen probe sees exactly the batches and augmentations a full fine-tune with the same seed
    sees. Returns ``{"seconds", "final_loss", "steps", "trained_params"}``: ``trained_params`` counts the
    parameters that received a gradient at the first step (what trains: a parameter that requires gradients but
    sits in an unused layer, e.g. a U-Net encoder's stages below its depth, does not count).
    """
    import time

    if steps < 1:
        raise ParameterError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device or "cpu")
    model.to(device)
    forward = forward or model
    encoder_params = {id(p) for p in getattr(model, "encoder", nn.Module()).parameters()}
    enc = [p for p in model.parameters() if p.requires_grad and id(p) in encoder_params]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_params]
    groups = [{"params": rest, "lr": lr}] + ([{"params": enc, "lr": lr * encoder_lr_scale}] if enc else [])
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    frac = float(masks.float().mean().clamp(min=1e-3))
    weight = torch.tensor([1.0, float(np.clip(np.sqrt((1 - frac) / frac), 1.0, 10.0))], device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    size = min(batch_size, n)
    started, losses = time.time(), []
    model.train()
    step = 0
    while step < steps:
        order = torch.randperm(n, generator=gen)
        for b in range(max(1, n // size)):
            if step >= steps:
                break
            idx = order[b * size : (b + 1) * size]
            x, y = images[idx], masks[idx]
            if augment and views is not None:
                k, flip = _draw_view(gen)
                x, y = views[2 * k + int(flip)][idx], apply_view(y, k, flip)
            elif augment:
                x, y = _augment(x, y, gen)
            loss = loss_fn(forward(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0:
                trained = params_with_gradients(model)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
    model.eval()
    return {
        "seconds": time.time() - started,
        "final_loss": float(np.mean(losses[-max(1, steps // 10) :])),
        "steps": steps,
        "trained_params": trained,
    }


@torch.inference_mode()
def predict_defect_prob(forward, images: torch.Tensor, batch_size: int = 64, device=None) -> np.ndarray:
    """Defect probability maps (N, H, W) of ``forward`` (a batch -> 2-class logits)."""
    device = torch.device(device or "cpu")
    out = [
        forward(images[i : i + batch_size].to(device)).softmax(1)[:, 1].float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


def defect_metrics(prob: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> dict:
    """The claims' metrics from defect probability maps (N, H, W) and masks (N, H, W) {0, 1}.

    ``defect_ap``: pixel average precision (threshold-free); ``defect_f1``: pixel F1 (Dice) of the defect
    class at ``threshold``; ``image_auroc``: AUROC of the image score (the largest pixel probability)
    against the image label (has a defect or not); ``miou``: mean IoU of good and defect (secondary).
    """
    from sklearn.metrics import roc_auc_score

    prob, masks = np.asarray(prob, np.float32), np.asarray(masks) > 0
    pred = prob > threshold
    tp = float((pred & masks).sum())
    fp, fn = float((pred & ~masks).sum()), float((~pred & masks).sum())
    tn = float(masks.size - tp - fp - fn)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    iou_defect = tp / (tp + fp + fn) if (tp + fp + fn) else float("nan")
    iou_good = tn / (tn + fp + fn) if (tn + fp + fn) else float("nan")
    labels = masks.reshape(len(masks), -1).any(1)
    image_auroc = (
        float(roc_auc_score(labels, prob.reshape(len(prob), -1).max(1)))
        if 0 < labels.sum() < len(labels)
        else float("nan")
    )
    return {
        "defect_ap": pixel_average_precision(prob, masks),
        "defect_f1": float(f1),
        "image_auroc": image_auroc,
        "miou": float(np.nanmean([iou_good, iou_defect])),
        "defect_iou": float(iou_defect),
    }
