"""labkit's stand-in for DINOv2 on micro-CT: a small ViT pretrained by masked image modelling on unlabeled
simulated slices at the token grid it is used at, for a fixed number of steps (never a wall-clock cap), shipped as
a safetensors checkpoint.

The architecture (:data:`ARCH`): a ViT with 7-px patches, 192 channels, 4 blocks and 3 heads (about 1.8 M
parameters, 3.6 MB in float16), without LayerScale, pretrained on whole 112-px slices resized 1.5x to
:data:`EVAL_SIZE` = 168 px, a 24 x 24 token grid (rotations and flips as augmentation; no resampling of the
position embedding between pretraining and use).

The objective: an MAE (the encoder sees the visible quarter of the tokens; 75 % hidden) whose decoder is one
residual 3 x 3 convolution on the token grid (:class:`ConvDecoderMAE`), MSE on the hidden patches' per-patch
normalised pixels (``--norm-pix``; pixel targets until round 6). Why:

- a loss with learner-free predictors to beat, so "trained" is a number: the better of (a) every hidden patch
  filled with the mean of its image's visible pixels and (b) a Gaussian-weighted mean of the visible pixels
  around each hidden pixel at the best sigma (normalised convolution; :func:`learner_free_losses`), for
  normalised targets also shrunk toward 0 by the best factor. (b) is the strong one: with pixel targets 0.40 of
  the image-mean predictor's loss at 50 % hidden, 0.63 at 75 %; with normalised targets its loss is 0.766
  against the visible mean's 0.825;
- a convolutional decoder: MAE's transformer decoder must first learn from position embeddings which of 576
  tokens are neighbours, and on this CPU budget it did not (round 4: from scratch 200 steps at 168 px, ratio
  1.008; a warm start on 56-px crops, ratio 1.03 after 60 steps at 168 px). A 3 x 3 convolution has locality
  from the first step;
- a weak decoder and 75 % hidden, so the encoder does the work: measured on the study's own check (frozen linear
  head on the held-out rock, seeds 0-2, paired with the random-init ViT of the same architecture), a 3-layer
  conv decoder at 50 % hidden reached 0.20 of the image-mean loss but its features equalled random ones
  (-0.004, +0.001, +0.001 mIoU); one conv layer at 75 % hidden (300 steps, 138 CPU-s) gave +0.007, +0.006,
  +0.003, and its class-token kNN (k=5) 0.49-0.57 against 0.20-0.31 for the random ViT;
- per-patch normalised targets (``--norm-pix``, MAE's ``norm_pix_loss``), chosen in round 6 on the study's own
  check (frozen linear head on the held-out rock, paired with the random-init ViT, seeds 0-7, measured outside the
  study): pixel targets at 800 steps gave +0.013, +0.002, +0.002 (seeds 0-2) and nothing once the head was trained
  5x longer; normalised targets at 800 steps +0.007 on seeds 0-2 but +0.000 on seeds 3-7; at 1,800 steps
  +0.013 on average, positive on 8 of 8 seeds (+0.003 to +0.023), class-token kNN (k = 5) 0.70-0.87 against
  0.14-0.39 for the random ViT, and +0.06 to +0.11 on the held-out scanner. The segmentation heads still read grey
  levels: the encoder sees them in its input, only its reconstruction target drops them.

Produce (or reproduce) the shipped checkpoint with (one CPU thread; about 771 CPU-s, measured with ``time``)::

    python -m labkit.methods.microct_standin --steps 1800 --batch-size 16 --mask-ratio 0.75 --decoder conv --conv-layers 1 --encoder-input visible --norm-pix --out src/labkit/methods/weights/microct_standin_vit

Its sidecar ``.json`` records the data, the steps, the loss curve, the held-out loss, the learner-free
predictors' losses, the command and the git commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from labkit.core.seeding import seed_everything

NAME = "microct_standin_vit"
ARCH = {"base": "vit_tiny_patch16_224", "patch_size": 7, "embed_dim": 192, "depth": 4, "num_heads": 3}
EVAL_SIZE = 168
TRAIN_CROP = EVAL_SIZE  # pretrained at the token grid it is used at (24 x 24 tokens, whole slices)
SHIPPED = Path(__file__).resolve().parent / "weights" / NAME
# the unlabeled pretraining slices: simulated with their own seeds, disjoint from every evaluation seed
DATA = {
    "rock_types": [
        "well_sorted_sandstone",
        "poorly_sorted_sandstone",
        "vuggy_carbonate",
        "oolitic_limestone",
        "laminated_shale",
    ],
    "scanners": ["benchtop_80kv", "industrial_140kv", "synchrotron_25kev"],
    "samples_per_rock": 8,
    "slices_per_sample": 8,
    "size": 112,
    "slice_step": 3,
    "grain_scale": 1.0,
    "seed": 987_654,
    "heldout_seed": 987_655,
}


def build_vit(img_size: int = EVAL_SIZE, arch: dict | None = None):
    """The stand-in architecture (randomly initialised): a timm VisionTransformer, ``num_classes=0``."""
    from labkit.models.backbones import create_backbone

    arch = dict(arch or ARCH)
    base = arch.pop("base")
    return create_backbone(base, weights="random", img_size=img_size, num_classes=0, **arch)


def _slices(seed: int, samples_per_rock: int) -> np.ndarray:
    from labkit.data.microct import simulate_slices

    d = DATA
    ds = simulate_slices(
        tuple(d["rock_types"]),
        tuple(d["scanners"]),
        samples_per_rock=samples_per_rock,
        slices_per_sample=d["slices_per_sample"],
        size=d["size"],
        slice_step=d["slice_step"],
        grain_scale=d["grain_scale"],
        seed=seed,
    )
    return ds.images


def _prepared(images: np.ndarray) -> torch.Tensor:
    """Grey slices (N, H, W) in [0, 1] -> the ViT's inputs at EVAL_SIZE (3-channel, ImageNet-normalised)."""
    from labkit.models.vit_heads import prepare_input

    return prepare_input(torch.from_numpy(np.asarray(images, np.float32)), EVAL_SIZE)


def _augment(batch: torch.Tensor, gen: torch.Generator, crop: int | None = None) -> torch.Tensor:
    n, _, h, w = batch.shape
    crop = int(crop or TRAIN_CROP)
    out = torch.empty(n, batch.shape[1], crop, crop)
    ys = torch.randint(0, h - crop + 1, (n,), generator=gen)
    xs = torch.randint(0, w - crop + 1, (n,), generator=gen)
    rot = torch.randint(0, 4, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen)
    for i in range(n):
        piece = batch[i, :, ys[i] : ys[i] + crop, xs[i] : xs[i] + crop]
        piece = torch.rot90(piece, int(rot[i]), dims=(1, 2))
        out[i] = piece.flip(2) if flip[i] else piece
    return out


def sincos_2d(grid: int, dim: int, prefix: int = 1) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE's), (1, prefix + grid*grid, dim); prefix rows zero."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for pos in (ys.flatten(), xs.flatten()):
        out = pos[:, None] * omega[None]
        parts += [torch.sin(out), torch.cos(out)]
    emb = torch.cat(parts, 1).float()
    return torch.cat([torch.zeros(prefix, dim), emb], 0)[None]


def normalise_patches(target: torch.Tensor) -> torch.Tensor:
    """MAE's per-patch normalised targets (``norm_pix_loss``): each patch's pixels (last axis) to mean 0 and unit
    variance; the one formula of the loss and of its learner-free predictors."""
    return (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5


class ConvDecoderMAE(torch.nn.Module):
    """A masked autoencoder over the stand-in ViT whose decoder is convolutional on the token grid: the tokens
    (a learned mask embedding at the hidden ones) laid out as a (dim, grid, grid) map, ``conv_layers`` residual
    3 x 3 convolutions with GELU, then a per-token linear map to the patch's pixels. Locality comes with the
    convolution, so the decoder interpolates from the neighbouring tokens from the first steps; a transformer
    decoder must first learn from position embeddings which of 576 tokens are neighbours (measured: at 24 x 24
    tokens it stayed on the image-mean plateau for hundreds of CPU steps).

    ``encoder_input``: ``visible`` (MAE: the encoder sees the visible tokens only) or ``all`` (SimMIM: it sees
    all of them, the hidden ones replaced by a learned mask embedding, so it is trained on the full token grid
    it is used at and must itself carry context to the hidden positions)."""

    def __init__(
        self,
        encoder,
        mask_ratio: float,
        norm_pix_loss: bool = False,
        decoder_dim: int = 128,
        conv_layers: int = 1,
        encoder_input: str = "visible",
    ):
        super().__init__()
        from labkit.core.errors import ParameterError

        if encoder_input not in ("visible", "all"):
            raise ParameterError(f"encoder_input must be 'visible' or 'all', got {encoder_input!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise ParameterError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        nn = torch.nn
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss, self.encoder_input = float(mask_ratio), bool(norm_pix_loss), encoder_input
        self.patch = int(encoder.patch_embed.patch_size[0])
        self.channels = int(encoder.patch_embed.proj.in_channels)
        self.grid = int(encoder.patch_embed.grid_size[0])
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        dim = int(encoder.embed_dim)
        self.encoder_mask = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        layers = []
        for _ in range(int(conv_layers)):
            layers += [nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * self.channels)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.encoder_mask, std=0.02)
        with torch.no_grad():  # MAE's fixed sine-cosine position embedding, one per grid
            encoder.pos_embed.copy_(sincos_2d(self.grid, encoder.pos_embed.shape[-1], self.prefix))
        encoder.pos_embed.requires_grad_(False)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        from labkit.methods.ssl import patchify

        target = patchify(images, self.patch)
        return normalise_patches(target) if self.norm_pix_loss else target

    def forward(self, images: torch.Tensor, mask_ratio: float | None = None, generator=None):
        """Returns (loss over the hidden patches, predicted patches (B, L, p*p*C), mask (B, L) with 1 = hidden)."""
        from labkit.methods.ssl import masked_patch_mse, random_masking

        enc = self.encoder
        x = enc.patch_embed(images)
        if x.ndim == 4:
            x = x.flatten(1, 2)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        keep, mask, restore = random_masking(x.shape[0], x.shape[1], ratio, x.device, generator)
        pos = enc.pos_embed
        if self.encoder_input == "all":
            x = torch.lerp(x, self.encoder_mask.expand_as(x), mask[..., None])
        x = x + pos[:, self.prefix :]
        if self.encoder_input == "visible":
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([enc.cls_token.expand(x.shape[0], -1, -1) + pos[:, : self.prefix], x], 1)
        x = enc.norm_pre(x)
        for block in enc.blocks:
            x = block(x)
        y = self.decoder_embed(enc.norm(x)[:, self.prefix :])
        if self.encoder_input == "visible":  # hidden positions get the decoder's mask token
            hidden = self.mask_token.expand(y.shape[0], restore.shape[1] - y.shape[1], -1)
            y = torch.gather(torch.cat([y, hidden], 1), 1, restore[..., None].expand(-1, -1, y.shape[-1]))
        b, n, d = y.shape
        grid = y.transpose(1, 2).reshape(b, d, self.grid, self.grid)
        grid = grid + self.convs(grid)
        pred = self.decoder_pred(self.decoder_norm(grid.flatten(2).transpose(1, 2)))
        return masked_patch_mse(pred, self.target(images), mask), pred, mask


def _mae(
    encoder,
    mask_ratio: float,
    norm_pix: bool = False,
    decoder: str = "transformer",
    conv_layers: int = 1,
    encoder_input: str = "visible",
):
    """The masked autoencoder: ``decoder`` ``conv`` (:class:`ConvDecoderMAE`, the shipped stand-in's) or
    ``transformer`` (labkit's MAE with fixed sine-cosine position embeddings in encoder and decoder, as in MAE;
    learned embeddings from a random start kept the held-out loss at the trivial predictor's, ratio 1.03 after
    400 steps)."""
    from labkit.methods.ssl import MaskedAutoencoder

    if decoder == "conv":
        return ConvDecoderMAE(encoder, mask_ratio, norm_pix, conv_layers=conv_layers, encoder_input=encoder_input)
    mae = MaskedAutoencoder(
        encoder, decoder_dim=128, decoder_depth=2, decoder_heads=4, mask_ratio=mask_ratio, norm_pix_loss=norm_pix
    )
    grid = int(encoder.patch_embed.grid_size[0])
    with torch.no_grad():
        encoder.pos_embed.copy_(sincos_2d(grid, encoder.pos_embed.shape[-1], mae.prefix))
        mae.decoder_pos.copy_(sincos_2d(grid, mae.decoder_pos.shape[-1], mae.prefix))
    encoder.pos_embed.requires_grad_(False)
    mae.decoder_pos.requires_grad_(False)
    return mae


@torch.no_grad()
def heldout_losses(mae, images: torch.Tensor, seed: int = 0, batch_size: int = 32) -> tuple[float, float]:
    """(MAE loss, trivial predictor's loss) on held-out crops with fixed masks: the trivial predictor
    gives every hidden pixel its image's mean value (per channel)."""
    from labkit.methods.ssl import patchify

    mae.eval()
    gen = torch.Generator().manual_seed(seed)
    crops = images[:, :, :TRAIN_CROP, :TRAIN_CROP]
    total, trivial, n = 0.0, 0.0, 0
    for i in range(0, len(crops), batch_size):
        x = crops[i : i + batch_size]
        loss, _, mask = mae(x, generator=gen)
        target = mae.target(x)  # the loss's target space (per-patch normalised with norm_pix_loss)
        mean = (
            target.mean((1, 2), keepdim=True)
            if mae.norm_pix_loss
            else patchify(x.mean((2, 3), keepdim=True).expand_as(x), mae.patch)
        )
        per_patch = ((mean - target) ** 2).mean(-1)
        total += float(loss) * len(x)
        trivial += float((per_patch * mask).sum() / mask.sum()) * len(x)
        n += len(x)
    return total / n, trivial / n


INTERPOLATION_SIGMAS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # px at EVAL_SIZE; the best one on the held-out crops
# per-patch normalised targets: the normalised interpolation shrunk toward 0 (the targets' mean) by the best of
# these factors (a unit-variance guess of a partly predictable patch loses to a shrunk one: measured on the
# held-out crops, 1.04 unshrunk, 0.79 at 0.5, 0.83 for the visible mean)
INTERPOLATION_SCALES = (0.25, 0.5, 0.75, 1.0)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian convolution with zero padding (B, C, H, W)."""
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


@torch.no_grad()
def learner_free_losses(
    images: torch.Tensor,
    mask_ratio: float,
    seed: int = 0,
    batch_size: int = 32,
    patch: int | None = None,
    norm_pix: bool = False,
) -> dict[str, float]:
    """The losses of learner-free predictors of the hidden patches, on the held-out crops and with the very
    masks :func:`heldout_losses` draws (same generator, seed and batches), in the MAE's target space (its
    inputs' pixels, or per-patch normalised ones with ``norm_pix``):

    - ``visible_mean``: every hidden pixel given the mean of that image's *visible* pixels (per channel; labkit's
      MAE predictor, :func:`labkit.methods.ssl.mae_learner_free_losses`);
    - ``interpolated``: every hidden pixel given a Gaussian-weighted mean of the visible pixels around it
      (normalised convolution: blur(x * visible) / blur(visible)), at the best of :data:`INTERPOLATION_SIGMAS`
      on these very crops (``interpolation_sigma``): a smooth interpolator of what the MAE sees, learning nothing;
      with ``norm_pix`` the normalised interpolation times the best of :data:`INTERPOLATION_SCALES`
      (``interpolation_scale``), since a unit-variance guess of a partly predictable patch loses to a shrunk one;
    - ``best``: the lower of the two, the "trained" precondition's reference;
    - ``image_mean``: every hidden pixel given the mean of all of its image's pixels, hidden ones included
      (what :func:`heldout_losses` reports as the trivial loss; it peeks at the answer).
    """
    from labkit.methods.ssl import mae_learner_free_losses, patchify, random_masking, unpatchify

    patch = int(patch or ARCH["patch_size"])
    gen = torch.Generator().manual_seed(seed)
    crops = images[:, :, :TRAIN_CROP, :TRAIN_CROP]
    channels = crops.shape[1]
    scales = INTERPOLATION_SCALES if norm_pix else (1.0,)
    interpolators = [(s, a) for s in INTERPOLATION_SIGMAS for a in scales]
    names = ["visible_mean", "image_mean"] + [f"interpolated@{s:g}x{a:g}" for s, a in interpolators]
    totals, n = dict.fromkeys(names, 0.0), 0

    def normalised(t):
        return normalise_patches(t) if norm_pix else t

    for i in range(0, len(crops), batch_size):
        x = crops[i : i + batch_size]
        target = normalised(patchify(x, patch))  # (B, L, p*p*C), channels last within a patch
        _, mask, _ = random_masking(x.shape[0], target.shape[1], mask_ratio, generator=gen)
        pix = target.reshape(target.shape[0], target.shape[1], -1, channels)  # (B, L, p*p, C)
        batch = {"visible_mean": mae_learner_free_losses(target, mask, channels)["visible_mean"]}
        preds = {"image_mean": pix.mean((1, 2))[:, None, None, :].expand_as(pix)}
        side = x.shape[-1] // patch * patch
        vis_px = unpatchify((1 - mask)[..., None].expand(-1, -1, patch * patch * channels), patch, channels)
        xs = x[:, :, :side, :side]
        for sigma in INTERPOLATION_SIGMAS:
            weight = _gaussian_blur(vis_px[:, :1], sigma)  # the mask is the same in every channel: blurred once
            fill = _gaussian_blur(xs * vis_px, sigma) / weight.clamp(min=1e-6)
            fill = torch.where(weight > 1e-4, fill, xs.mean((2, 3), keepdim=True))
            guess = normalised(patchify(fill, patch)).reshape(pix.shape)
            for scale in scales:
                preds[f"interpolated@{sigma:g}x{scale:g}"] = scale * guess
        for name, pred in preds.items():
            per_patch = ((pix - pred) ** 2).mean((2, 3))
            batch[name] = float((per_patch * mask).sum() / mask.sum())
        for name, value in batch.items():
            totals[name] += value * len(x)
        n += len(x)
    out = {k: v / n for k, v in totals.items()}
    sigma, scale = min(interpolators, key=lambda sa: out[f"interpolated@{sa[0]:g}x{sa[1]:g}"])
    out["interpolated"] = out[f"interpolated@{sigma:g}x{scale:g}"]
    out["interpolation_sigma"], out["interpolation_scale"] = sigma, scale
    out["best"] = min(out["visible_mean"], out["interpolated"])
    return out


def heldout_images(record: dict | None = None) -> torch.Tensor:
    """The held-out slices of the "trained" check (the ViT's inputs), as the pretraining drew them."""
    data = {**DATA, **((record or {}).get("data") or {})}
    return _prepared(_slices(int(data["heldout_seed"]), 1))


def with_learner_free_loss(record: dict) -> dict:
    """``record`` (a checkpoint's pretraining record) with ``learner_free_loss`` (every hidden patch filled with
    the mean of its image's visible pixels) and ``learner_free_ratio`` (the held-out MAE loss over it),
    computed on the same held-out slices and masks as the record's ``final_loss`` when the record lacks them
    (a checkpoint made before they were recorded); ``trivial_loss_recomputed`` checks that the slices and
    masks are the same (it must equal the record's ``trivial_loss``)."""
    out = dict(record)
    if out.get("learner_free_loss") is None and "mask_ratio" in out:
        losses = learner_free_losses(
            heldout_images(out), float(out["mask_ratio"]), norm_pix=bool(out.get("norm_pix_loss", False))
        )
        out["learner_free_loss"] = losses["best"]
        out["trivial_loss_recomputed"] = losses["image_mean"]
    if out.get("learner_free_loss") and out.get("final_loss") is not None:
        out["learner_free_ratio"] = float(out["final_loss"]) / float(out["learner_free_loss"])
    return out


MASK_RATIO = 0.75
LEARNER_FREE_PREDICTOR = (
    "the better of two predictors that learn nothing: every hidden patch filled with the mean of its image's "
    "visible pixels, or a Gaussian-weighted mean of the visible pixels around each hidden pixel (best sigma)"
)


def pretrain(
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1.5e-3,
    mask_ratio: float = MASK_RATIO,
    seed: int = 0,
    samples_per_rock: int | None = None,
    progress: bool = True,
    log_every: int = 50,
    device: str = "cpu",
    norm_pix: bool = False,
    warm_steps: int = 0,
    warm_crop: int = 56,
    decoder: str = "conv",
    conv_layers: int = 1,
    encoder_input: str = "visible",
) -> tuple[torch.nn.Module, dict]:
    """MAE pretraining of the stand-in for exactly ``steps`` optimiser steps. Returns the encoder (at
    EVAL_SIZE, position embedding resampled) and its provenance record (data, steps, loss curve,
    held-out loss and the trivial predictor's loss, their ratio)."""
    seed_everything(seed)
    spr = samples_per_rock or DATA["samples_per_rock"]
    data = _prepared(_slices(DATA["seed"], spr))
    heldout = _prepared(_slices(DATA["heldout_seed"], 1))
    gen = torch.Generator().manual_seed(seed)
    curve, started = [], time.time()
    probe = heldout[:32]
    warm = None
    if warm_steps:  # a warm start on small crops (8 x 8 tokens): cheap steps that get past MAE's early plateau
        warm = _mae(build_vit(warm_crop), mask_ratio, norm_pix, decoder, conv_layers, encoder_input).to(device)
        _train(warm, data, warm_steps, batch_size * 4, lr, gen, curve, started, progress, log_every, None, warm_crop)
    encoder = build_vit(TRAIN_CROP)
    mae = _mae(encoder, mask_ratio, norm_pix, decoder, conv_layers, encoder_input).to(device)
    if warm is not None:  # every weight but the fixed sine-cosine position embeddings (one per grid)
        state = {k: v for k, v in warm.state_dict().items() if k not in ("encoder.pos_embed", "decoder_pos")}
        missing, unexpected = mae.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= {"encoder.pos_embed", "decoder_pos"}, (missing, unexpected)
    _train(
        mae,
        data,
        steps,
        batch_size,
        lr,
        gen,
        curve,
        started,
        progress,
        log_every,
        probe.to(device),
        TRAIN_CROP,
        warm_steps,
    )
    final, trivial = heldout_losses(mae.cpu(), heldout)
    # by keyword: sixteen values in a row are easy to pass in the wrong order
    record = _record(
        mae,
        heldout,
        final,
        trivial,
        data,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        mask_ratio=mask_ratio,
        seed=seed,
        spr=spr,
        norm_pix=norm_pix,
        curve=curve,
        started=started,
        warm_steps=warm_steps,
        warm_crop=warm_crop,
        decoder=decoder,
        conv_layers=conv_layers,
        encoder_input=encoder_input,
    )
    return to_eval_size(encoder.cpu().eval()), record


def _train(mae, data, steps, batch_size, lr, gen, curve, started, progress, log_every, probe, crop, offset=0):
    """``steps`` AdamW steps (linear warm-up over the first 5 %, then a cosine to 0) on random ``crop``-px crops."""
    trainable = [p for p in mae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(steps, 1))))
    )
    device = next(mae.parameters()).device
    running = []
    for step in range(1, steps + 1):
        mae.train()
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        batch = _augment(data[idx], gen, crop).to(device)
        loss, _, _ = mae(batch, generator=None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mae.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            curve.append(
                {
                    "step": offset + step,
                    "crop": crop,
                    "loss": float(np.mean(running)),
                    "seconds": round(time.time() - started, 1),
                }
            )
            if probe is not None and (step % (2 * log_every) == 0 or step == steps):
                f, t = heldout_losses(mae, probe)
                curve[-1]["heldout_ratio"] = round(f / t, 4)
            running = []
            if progress:
                print(
                    f"step {offset + step} ({crop} px) loss {curve[-1]['loss']:.4f} held-out ratio "
                    f"{curve[-1].get('heldout_ratio', float('nan')):.3f} ({curve[-1]['seconds']:.0f} s)",
                    flush=True,
                )


def _record(
    mae,
    heldout,
    final,
    trivial,
    data,
    steps,
    batch_size,
    lr,
    mask_ratio,
    seed,
    spr,
    norm_pix,
    curve,
    started,
    warm_steps=0,
    warm_crop=56,
    decoder="conv",
    conv_layers=1,
    encoder_input="visible",
) -> dict:
    losses = learner_free_losses(heldout, mask_ratio, norm_pix=norm_pix)
    learner_free = losses["best"]
    dec = f"{conv_layers}-layer convolutional decoder" if decoder == "conv" else "transformer decoder"
    sees = (
        "every token, hidden ones as a mask embedding"
        if encoder_input == "all" and decoder == "conv"
        else "the visible tokens"
    )
    record = {
        "method": f"masked image modelling ({'per-patch normalised pixel' if norm_pix else 'pixel'} MSE on the ViT's "
        f"inputs, {mask_ratio:.0%} of 7-px patches hidden, {EVAL_SIZE}-px inputs: 24 x 24 tokens; the encoder sees "
        f"{sees}; {dec})",
        "decoder": decoder,
        "conv_layers": conv_layers if decoder == "conv" else None,
        "encoder_input": encoder_input if decoder == "conv" else "visible",
        "norm_pix_loss": norm_pix,
        "arch": ARCH,
        "train_crop": TRAIN_CROP,
        "eval_size": EVAL_SIZE,
        "steps": steps,
        "warm_steps": warm_steps,
        "warm_crop": warm_crop if warm_steps else None,
        "warm_batch_size": 4 * batch_size if warm_steps else None,
        "batch_size": batch_size,
        "lr": lr,
        "mask_ratio": mask_ratio,
        "seed": seed,
        "data": {**DATA, "samples_per_rock": spr, "n_images": len(data), "n_heldout": len(heldout)},
        "final_loss": final,
        "trivial_loss": trivial,
        "loss_ratio": final / trivial,
        "trivial_predictor": "every hidden pixel set to its image's mean value (per channel)",
        "learner_free_loss": learner_free,
        "learner_free_ratio": final / learner_free,
        "learner_free_predictor": LEARNER_FREE_PREDICTOR,
        "learner_free_losses": {k: v for k, v in losses.items() if "@" not in k},
        "curve": curve,
        "seconds": round(time.time() - started, 1),
    }
    return record


def to_eval_size(encoder, img_size: int = EVAL_SIZE):
    """The same weights in a ViT built for ``img_size`` (position embedding resampled bicubically)."""
    from timm.layers import resample_abs_pos_embed

    model = build_vit(img_size)
    state = dict(encoder.state_dict())
    grid = img_size // ARCH["patch_size"]
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"], (grid, grid), num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1))
    )
    model.load_state_dict(state)
    return model.eval()


def save(encoder, record: dict, out: str | Path, command: str) -> Path:
    import subprocess

    from labkit.core.checkpoints import save_checkpoint

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    meta = {"name": NAME, "study": "dinov2_microct", "pretraining": record, "command": command, "git_commit": commit}
    return save_checkpoint(
        out, {k: v.half() if v.is_floating_point() else v for k, v in encoder.state_dict().items()}, meta
    )


def load(path: str | Path | None = None, img_size: int = EVAL_SIZE):
    """(model at ``img_size``, its provenance record) from the shipped checkpoint or ``path``."""
    from labkit.core.checkpoints import load_checkpoint

    state, meta = load_checkpoint(Path(path) if path else SHIPPED)
    model = build_vit(EVAL_SIZE)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    if img_size != EVAL_SIZE:
        model = to_eval_size(model, img_size)
    return model.eval(), dict(meta.get("pretraining") or {})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.methods.microct_standin", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mask-ratio", type=float, default=MASK_RATIO)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shipped checkpoint used 1)")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-rock", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--norm-pix", action="store_true", help="per-patch normalised targets (MAE's norm_pix_loss)")
    p.add_argument("--warm-steps", type=int, default=0, help="steps on 56-px crops (batch 4x) before the 168-px steps")
    p.add_argument("--decoder", choices=["conv", "transformer"], default="conv")
    p.add_argument("--conv-layers", type=int, default=1, help="3x3 convolutions of the conv decoder")
    p.add_argument(
        "--encoder-input",
        choices=["all", "visible"],
        default="visible",
        help="conv decoder: MAE (visible) or SimMIM (all)",
    )
    p.add_argument("--out", default=str(SHIPPED))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder, record = pretrain(
        args.steps,
        args.batch_size,
        args.lr,
        args.mask_ratio,
        seed=args.seed,
        samples_per_rock=args.samples_per_rock,
        device=args.device,
        norm_pix=args.norm_pix,
        warm_steps=args.warm_steps,
        decoder=args.decoder,
        conv_layers=args.conv_layers,
        encoder_input=args.encoder_input,
    )
    command = "python -m labkit.methods.microct_standin " + " ".join(argv if argv is not None else sys.argv[1:])
    path = save(encoder, record, args.out, command)
    print(
        f"held-out loss {record['final_loss']:.4f}, trivial {record['trivial_loss']:.4f}, "
        f"ratio {record['loss_ratio']:.3f}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
