"""Self-supervised pretraining of a timm ViT on unlabeled images: masked autoencoding and SimCLR.

- :class:`MaskedAutoencoder` (He et al. 2022): the timm ViT encodes only a random 25% of the
  patches; a light transformer decoder (2 blocks, 128 wide) restores the full token sequence with
  mask tokens and predicts the pixels of the hidden patches; the loss is the mean squared error on
  hidden patches, each patch normalised by its own mean/std (``norm_pix_loss``).
- :class:`SimCLR` (Chen et al. 2020): two augmented views per image, a 2-layer projection MLP and
  the NT-Xent loss (:func:`nt_xent_loss`) that pulls each view towards its partner and away from
  the other 2N-2 views in the batch.
- :class:`BatchAugment`: the SimCLR augmentations (random resized crop, flips, 90-degree
  rotations, brightness/contrast jitter, Gaussian blur, sensor noise) drawn per sample but applied
  to a whole batch in a few tensor ops (one ``affine_grid``/``grid_sample`` for all crops).

Why hand-written: lightly (the obvious library for these losses and transforms) is not installed in
this stack and pulls in pytorch-lightning and hydra; torchvision's v2 transforms draw one random
parameter set per call, so per-sample augmentation needs a Python loop over images, which on two
CPU cores costs as much as the ViT step itself. Each piece here is a few lines and unit-tested.

:func:`pretrain_mae` / :func:`pretrain_simclr` take any array of unlabeled images (N, C, H, W) and
return the pretrained timm encoder and a per-epoch history, so any study can pretrain its own ViT.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.errors import DataError, ParameterError
from labkit.core.seeding import seed_everything


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def check_unlabeled_images(images, batch_size: int, name: str = "unlabeled set") -> np.ndarray:
    """Validate an (N, C, H, W) float array for pretraining; errors name the set and the problem."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"{name}: images must be (N, C, H, W), got shape {images.shape}")
    if images.shape[2] != images.shape[3]:
        raise DataError(f"{name}: images must be square for a ViT, got {images.shape[2]}x{images.shape[3]}")
    if len(images) < batch_size:
        raise DataError(
            f"{name}: {len(images)} images is too small for batch_size {batch_size}; "
            f"give at least {batch_size} images or lower batch_size"
        )
    if batch_size < 2:
        raise ParameterError(f"batch_size must be >= 2, got {batch_size}")
    images = images.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
    if len(bad):
        raise DataError(f"{name}: image(s) {bad[:10].tolist()} contain NaN or inf values")
    return images


def pixel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a set, used to standardise the encoder's input."""
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3)) + 1e-6
    return mean.astype(float).tolist(), std.astype(float).tolist()


def standardise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = x.new_tensor(mean).view(1, -1, 1, 1)
    s = x.new_tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------------------
# masked autoencoder
# --------------------------------------------------------------------------------------
def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), patches in raster order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for square images."""
    b, n, _ = patches.shape
    g = int(round(n**0.5))
    x = patches.reshape(b, g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, g * patch, g * patch)


def random_masking(n_batch: int, n_tokens: int, mask_ratio: float, device=None, generator=None):
    """Per-sample random split of token indices: (keep indices (B, K), mask (B, L) 1=hidden, restore)."""
    n_keep = max(1, int(round(n_tokens * (1 - mask_ratio))))
    if generator is not None and torch.device(generator.device).type != torch.device(device or "cpu").type:
        noise = torch.rand(n_batch, n_tokens, generator=generator).to(device)
    else:
        noise = torch.rand(n_batch, n_tokens, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :n_keep]
    mask = torch.ones(n_batch, n_tokens, device=device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, restore)
    return keep, mask, restore


def masked_patch_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The MAE loss: mean squared error per patch, averaged over the hidden patches (``mask`` 1) of the batch."""
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


@torch.no_grad()
def mae_learner_free_losses(target: torch.Tensor, mask: torch.Tensor, channels: int) -> dict[str, float]:
    """The MAE loss of predictors that learn nothing, on the same targets (B, L, p*p*C) and masks (B, L):

    - ``visible_mean``: every hidden patch filled with the mean of its image's visible target values, per
      channel (for ``norm_pix_loss`` targets about 0, so a loss near 1; computed, not assumed);
    - ``zeros``: every hidden patch predicted as 0 (the mean of standardised or normalised targets).

    ``best`` is the lower of the two: the bar a pretrained MAE must get below to have learned anything
    the image's own visible pixels do not already give.
    """
    b, n, d = target.shape
    per_channel = target.reshape(b, n, d // channels, channels)
    visible = (1 - mask)[..., None, None]
    count = visible.sum(dim=(1, 2)) * (d // channels)  # (B, 1): visible values per channel
    mean = (per_channel * visible).sum(dim=(1, 2)) / count.clamp(min=1)  # (B, C)
    fill = mean[:, None, None, :].expand_as(per_channel).reshape(b, n, d)
    losses = {
        "visible_mean": float(masked_patch_mse(fill, target, mask)),
        "zeros": float(masked_patch_mse(torch.zeros_like(target), target, mask)),
    }
    losses["best"] = min(losses["visible_mean"], losses["zeros"])
    return losses


class MaskedAutoencoder(nn.Module):
    """MAE over a timm VisionTransformer ``encoder`` (kept intact, so its state dict is a plain ViT's)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if not hasattr(encoder, "patch_embed") or not hasattr(encoder, "blocks"):
            raise ParameterError(f"MaskedAutoencoder needs a timm VisionTransformer, got {type(encoder).__name__}")
        if not 0.0 < mask_ratio < 1.0:
            raise ParameterError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), bool(norm_pix_loss)
        ps = encoder.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.channels = int(encoder.patch_embed.proj.in_channels)
        self.n_tokens = int(encoder.patch_embed.num_patches)
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        dim = int(encoder.embed_dim)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.n_tokens + self.prefix, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * self.channels)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def _encoder_pos(self) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.encoder.pos_embed
        if getattr(self.encoder, "no_embed_class", False):
            return pos.new_zeros(1, self.prefix, pos.shape[-1]), pos
        return pos[:, : self.prefix], pos[:, self.prefix :]

    def forward_encoder(self, images: torch.Tensor, mask_ratio: float, generator=None):
        enc = self.encoder
        x = enc.patch_embed(images)
        if x.ndim == 4:  # NHWC patch grid (dynamic_img_size models)
            x = x.flatten(1, 2)
        prefix_pos, patch_pos = self._encoder_pos()
        x = x + patch_pos
        keep, mask, restore = random_masking(x.shape[0], x.shape[1], mask_ratio, x.device, generator)
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        prefix = []
        if getattr(enc, "cls_token", None) is not None:
            prefix.append(enc.cls_token.expand(x.shape[0], -1, -1))
        if getattr(enc, "reg_token", None) is not None:
            prefix.append(enc.reg_token.expand(x.shape[0], -1, -1))
        if prefix:
            x = torch.cat([torch.cat(prefix, 1) + prefix_pos, x], dim=1)
        x = enc.norm_pre(x)
        for block in enc.blocks:
            x = block(x)
        return enc.norm(x), mask, restore

    def forward_decoder(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        prefix, visible = x[:, : self.prefix], x[:, self.prefix :]
        n_hidden = restore.shape[1] - visible.shape[1]
        full = torch.cat([visible, self.mask_token.expand(x.shape[0], n_hidden, -1)], dim=1)
        full = torch.gather(full, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, full], dim=1) + self.decoder_pos
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, self.prefix :]

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """What the decoder predicts, (B, L, p*p*C): the patches, each normalised by its own mean and std
        when ``norm_pix_loss`` is on (the loss's target space)."""
        target = patchify(images, self.patch)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_patch_mse(pred, self.target(images), mask)

    def forward(self, images: torch.Tensor, mask_ratio: float | None = None, generator=None):
        """Returns (loss, predicted patches (B, L, p*p*C), mask (B, L) with 1 = hidden)."""
        latent, mask, restore = self.forward_encoder(
            images, self.mask_ratio if mask_ratio is None else mask_ratio, generator
        )
        pred = self.forward_decoder(latent, restore)
        return self.loss(images, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction with visible patches pasted back, masked input) in the input's units."""
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        _, pred, mask = self(images, generator=gen)
        target = patchify(images, self.patch)
        if self.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
            mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6) ** 0.5
            pred = pred * std + mean
        m = mask[..., None]
        recon = unpatchify(pred * m + target * (1 - m), self.patch, self.channels)
        masked = unpatchify(target * (1 - m), self.patch, self.channels)
        return recon, masked


# --------------------------------------------------------------------------------------
# SimCLR
# --------------------------------------------------------------------------------------
def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N views: view i's positive is its partner."""
    if z1.shape != z2.shape:
        raise ValueError(f"views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class BatchAugment(nn.Module):
    """SimCLR-style augmentation with independent random parameters for every image of a batch.

    Parameters follow SimCLR, toned for grey inspection images: crop scale (0.25, 1), aspect
    (3/4, 4/3), flips and 90-degree turns (surfaces have no up), brightness and contrast jitter
    of +-40%, Gaussian blur with probability 0.5, additive noise.
    """

    def __init__(
        self,
        scale=(0.25, 1.0),
        ratio=(0.75, 1.333),
        jitter: float = 0.4,
        blur_prob: float = 0.5,
        noise_std: float = 0.03,
    ):
        super().__init__()
        self.scale, self.ratio = scale, ratio
        self.jitter, self.blur_prob, self.noise_std = jitter, blur_prob, noise_std

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b = x.shape[0]
        r = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * r(b)
        log_ratio = np.log(self.ratio[0]) + (np.log(self.ratio[1]) - np.log(self.ratio[0])) * r(b)
        aspect = log_ratio.exp()
        sx = (area * aspect).sqrt().clamp(max=1.0)
        sy = (area / aspect).sqrt().clamp(max=1.0)
        tx = (1 - sx) * (2 * r(b) - 1)
        ty = (1 - sy) * (2 * r(b) - 1)
        k = torch.randint(0, 4, (b,), generator=generator).float() * (np.pi / 2)
        cos, sin = torch.cos(k), torch.sin(k)
        flip = torch.where(r(b) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = sx * cos * flip, -sy * sin, tx
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sx * sin * flip, sy * cos, ty
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        contrast = 1 + self.jitter * (2 * r(b, 1, 1, 1) - 1)
        bright = self.jitter * 0.5 * (2 * r(b, 1, 1, 1) - 1) * out.std(dim=(1, 2, 3), keepdim=True).clamp(min=0.1)
        out = (out - mean) * contrast.to(x) + mean + bright.to(x)
        if self.blur_prob > 0:
            c = out.shape[1]
            kernel = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype)
            kernel = (kernel[:, None] * kernel[None, :]).expand(c, 1, 3, 3).contiguous()
            blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="reflect"), kernel.to(x), groups=c)
            use = (r(b, 1, 1, 1) < self.blur_prob).to(x)
            out = use * blurred + (1 - use) * out
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn(out.shape, generator=generator).to(x) * out.std(
                dim=(1, 2, 3), keepdim=True
            )
        return out


def pooled_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of the patch tokens (B, D): the global feature used by SimCLR, probes and kNN."""
    tokens = encoder.forward_features(x)
    prefix = int(getattr(encoder, "num_prefix_tokens", 1))
    return tokens[:, prefix:].mean(1)


class SimCLR(nn.Module):
    """Encoder + projection MLP (D -> hidden -> out), trained with :func:`nt_xent_loss`."""

    def __init__(
        self,
        encoder: nn.Module,
        projection_dim: int = 128,
        hidden_dim: int = 512,
        temperature: float = 0.2,
        augment: BatchAugment | None = None,
    ):
        super().__init__()
        dim = int(encoder.embed_dim if hasattr(encoder, "embed_dim") else encoder.num_features)
        self.encoder = encoder
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, projection_dim),
        )
        self.temperature = float(temperature)
        self.augment = augment or BatchAugment()

    def forward(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """NT-Xent loss of two augmented views of ``images``."""
        v1, v2 = self.augment(images, generator), self.augment(images, generator)
        z = self.projector(pooled_features(self.encoder, torch.cat([v1, v2])))
        return nt_xent_loss(*z.chunk(2), temperature=self.temperature)


# --------------------------------------------------------------------------------------
# pretraining entry points (any study)
# --------------------------------------------------------------------------------------
def _make_encoder(
    arch: str,
    img_size: int,
    in_chans: int,
    patch_size: int | None,
    drop_path_rate: float = 0.0,
    encoder_kwargs: dict | None = None,
):
    from labkit.models.backbones import create_backbone

    kwargs = dict(
        img_size=img_size, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate, **(encoder_kwargs or {})
    )
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    return create_backbone(arch, weights="random", **kwargs)


def _resize_if_needed(images: torch.Tensor, img_size: int) -> torch.Tensor:
    if images.shape[-1] != img_size:
        images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    return images


EVAL_BATCHES = 4  # fixed batches of the training images on which a pretraining is scored before and after


class _BuffersKept:
    """Run a module in training mode (the loss it is trained on: BatchNorm on batch statistics) without
    letting the evaluation move its buffers (BatchNorm running statistics)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.saved = {k: v.detach().clone() for k, v in self.module.named_buffers()}
        self.module.train()
        return self.module

    def __exit__(self, *exc):
        with torch.no_grad():
            for k, v in self.module.named_buffers():
                v.copy_(self.saved[k])
        self.module.train(self.was_training)
        return False


@torch.no_grad()
def evaluation_losses(module: nn.Module, batches, seed: int, device=None) -> dict[str, float]:
    """The module's loss on fixed ``batches`` with a fixed draw of masks / augmented views (``seed``), the
    same every time it is called: before any step it is the untrained network's loss, after training the
    trained one's, on the same inputs. For an MAE, also the learner-free predictors' losses on the same
    masked images (:func:`mae_learner_free_losses`), averaged over the batches."""
    gen = torch.Generator().manual_seed(int(seed))
    sums: dict[str, float] = {}
    with _BuffersKept(module):
        for batch in batches:
            batch = batch.to(device) if device is not None else batch
            out = module(batch, generator=gen)
            if isinstance(module, MaskedAutoencoder):
                loss, _, mask = out
                for k, v in mae_learner_free_losses(module.target(batch), mask, module.channels).items():
                    sums[k] = sums.get(k, 0.0) + v
            else:
                loss = out[0] if isinstance(out, tuple) else out
            sums["loss"] = sums.get("loss", 0.0) + float(loss)
    return {k: v / len(batches) for k, v in sums.items()}


def _pretrain(
    method: str,
    images,
    *,
    arch: str,
    img_size: int,
    patch_size: int | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    progress: bool,
    desc: str,
    make_module,
    max_seconds: float | None = None,
    encoder_kwargs: dict | None = None,
    device=None,
    trivial_loss=None,
):
    from tqdm.auto import tqdm

    from labkit.core.claims import budget_record

    images = check_unlabeled_images(images, batch_size)
    if epochs < 0:
        raise ParameterError(f"epochs must be >= 0 (0 scores the untrained network), got {epochs}")
    seed_everything(seed)
    mean, std = pixel_stats(images)
    encoder = _make_encoder(arch, img_size, images.shape[1], patch_size, encoder_kwargs=encoder_kwargs)
    device = torch.device(device or "cpu")
    module = make_module(encoder).to(device)
    data = standardise(_resize_if_needed(torch.from_numpy(images), img_size), mean, std)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = len(data) // batch_size  # drop the last partial batch (SimCLR needs negatives)
    total = epochs * steps_per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(total, 1))))
    )
    # The same batches, masks and views scored before the first step and after the last (batch_size each:
    # an NT-Xent loss depends on the batch size).
    n_eval = min(EVAL_BATCHES, steps_per_epoch)
    eval_batches = [data[i * batch_size : (i + 1) * batch_size] for i in range(n_eval)]
    eval_seed = 7919 * (int(seed) + 1)
    initial = evaluation_losses(module, eval_batches, eval_seed, device)
    gen = torch.Generator().manual_seed(seed)
    rows, started, steps = [], time.time(), 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        module.train()
        t0, running = time.time(), 0.0
        order = torch.randperm(len(data), generator=gen)
        for i in range(steps_per_epoch):
            batch = data[order[i * batch_size : (i + 1) * batch_size]].to(device)
            out = module(batch, generator=gen)
            loss = out[0] if isinstance(out, tuple) else out
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            steps += 1
        seconds = time.time() - t0
        rows.append(
            {
                "epoch": epoch,
                "loss": running / steps_per_epoch,
                "lr": opt.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_second": steps_per_epoch * batch_size / max(seconds, 1e-9),
            }
        )
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
        if max_seconds is not None and time.time() - started > max_seconds:
            break
    bar.close()
    final = evaluation_losses(module, eval_batches, eval_seed, device)
    module.eval()
    encoder.eval()
    history = pd.DataFrame(rows, columns=["epoch", "loss", "lr", "seconds", "images_per_second"])
    trivial = (
        float(trivial_loss(module, data[: min(len(data), 4 * batch_size)].to(device), gen))
        if trivial_loss
        else float("nan")
    )
    if isinstance(module, MaskedAutoencoder):
        # each hidden patch filled with its image's visible mean (or zeros, whichever is lower), same masks
        rule = "visible_mean" if final["visible_mean"] <= final["zeros"] else "zeros"
        learner_free = final["best"]
        rule = {
            "visible_mean": "each hidden patch = the mean of its image's visible pixels",
            "zeros": "each hidden patch = 0 (the targets' mean)",
        }[rule]
    else:
        # the untrained network (the same initial weights) on the same batches and views, or a constant
        # embedding (log(2N-1)) where that is lower
        learner_free = min(initial["loss"], trivial) if trivial == trivial else initial["loss"]
        rule = (
            "the untrained network on the same batches"
            if learner_free == initial["loss"]
            else "a constant embedding, log(2N-1)"
        )
    ps = encoder.patch_embed.patch_size
    patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
    trainable = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
    encoder.pretrain_meta = {
        "method": method,
        "arch": arch,
        "img_size": int(img_size),
        "patch_size": patch,
        "in_chans": int(images.shape[1]),
        "epochs": int(len(rows)),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": lr,
        "n_images": int(len(images)),
        "seed": int(seed),
        "pixel_mean": mean,
        "pixel_std": std,
        "seconds": round(time.time() - started, 2),
        "trivial_loss": trivial,
        # scored on the same fixed batches (masks, views) before any step and after the last
        "initial_loss": float(initial["loss"]),
        "eval_loss": float(final["loss"]),
        "learner_free_loss": float(learner_free),
        "learner_free_rule": rule,
        "loss_ratio": float(final["loss"] / learner_free) if learner_free > 0 else float("nan"),
        "budget": budget_record(
            steps,
            batch_size,
            lr,
            f"linear warm-up over {warmup} steps, then cosine over {total} steps" if total else "none (0 steps)",
            trainable,
        ),
        **{k: v for k, v in (encoder_kwargs or {}).items()},
    }
    encoder.cpu()
    return encoder, history, module


def pretrain_mae(
    images,
    arch: str = "vit_tiny",
    img_size: int = 64,
    epochs: int = 20,
    batch_size: int = 64,
    mask_ratio: float = 0.75,
    seed: int = 0,
    progress: bool = True,
    patch_size: int | None = None,
    lr: float = 1.5e-3,
    weight_decay: float = 0.05,
    decoder_dim: int = 128,
    decoder_depth: int = 2,
    return_module: bool = False,
    max_seconds: float | None = None,
    norm_pix_loss: bool = True,
    encoder_kwargs: dict | None = None,
    device=None,
):
    """Masked-autoencoder pretraining of a timm ViT on unlabeled ``images`` (N, C, H, W), any range.

    Images are standardised with their own per-channel mean/std (stored in ``encoder.pretrain_meta``
    as ``pixel_mean``/``pixel_std``: feed the encoder inputs standardised the same way) and resized
    to ``img_size`` when needed. Returns ``(encoder, history)`` (``history``: epoch, loss, lr,
    seconds, images_per_second), or ``(encoder, history, mae_module)`` with ``return_module``.
    """
    encoder, history, module = _pretrain(
        "mae",
        images,
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        progress=progress,
        desc="MAE pretraining",
        make_module=lambda enc: MaskedAutoencoder(
            enc,
            decoder_dim=decoder_dim,
            decoder_depth=decoder_depth,
            mask_ratio=mask_ratio,
            norm_pix_loss=norm_pix_loss,
        ),
        max_seconds=max_seconds,
        encoder_kwargs=encoder_kwargs,
        device=device,
        trivial_loss=mae_trivial_loss,
    )
    encoder.pretrain_meta["mask_ratio"] = mask_ratio
    return (encoder, history, module) if return_module else (encoder, history)


def pretrain_simclr(
    images,
    arch: str = "vit_tiny",
    img_size: int = 64,
    epochs: int = 20,
    batch_size: int = 64,
    temperature: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    patch_size: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    projection_dim: int = 128,
    return_module: bool = False,
    max_seconds: float | None = None,
    encoder_kwargs: dict | None = None,
    device=None,
):
    """SimCLR pretraining of a timm ViT on unlabeled ``images``; same inputs and outputs as :func:`pretrain_mae`."""
    encoder, history, module = _pretrain(
        "simclr",
        images,
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        progress=progress,
        desc="SimCLR pretraining",
        make_module=lambda enc: SimCLR(enc, projection_dim=projection_dim, temperature=temperature),
        max_seconds=max_seconds,
        encoder_kwargs=encoder_kwargs,
        device=device,
        trivial_loss=lambda module, data, gen: simclr_trivial_loss(batch_size),
    )
    encoder.pretrain_meta["temperature"] = temperature
    return (encoder, history, module) if return_module else (encoder, history)


@torch.no_grad()
def mae_trivial_loss(module: MaskedAutoencoder, images: torch.Tensor, generator=None) -> float:
    """The MAE loss of the predictor that outputs zeros for every hidden patch (the mean of the normalised
    targets). Not the bar of "trained": filling each hidden patch with its image's visible mean does better
    on standardised pixels (:func:`mae_learner_free_losses`, recorded as ``learner_free_loss``)."""
    _, pred, mask = module(images, generator=generator)
    return float(module.loss(images, torch.zeros_like(pred), mask))


def simclr_trivial_loss(batch_size: int) -> float:
    """NT-Xent of a constant embedding: every one of the 2N-1 candidates equally likely, log(2N - 1)."""
    return float(np.log(2 * batch_size - 1))


def checkpoint_meta(encoder: nn.Module, data: str) -> dict:
    """Meta for :func:`labkit.models.registry.save_named_checkpoint` from an encoder that was pretrained here."""
    meta = dict(getattr(encoder, "pretrain_meta", {}))
    meta["data"] = data
    return meta


def load_ssl_encoder(name: str) -> nn.Module:
    """The encoder of a named labkit SSL checkpoint (e.g. ``"ssl-mae-vit-tiny-industrial"``), built with
    the architecture, input size, patch size and channels recorded in its meta, in eval mode.

    ``encoder.pretrain_meta`` holds that meta; feed the encoder images standardised with
    ``standardise(x, meta["pixel_mean"], meta["pixel_std"])``. A checkpoint that has not been produced
    yet raises :class:`~labkit.core.errors.WeightsUnavailableError` naming the study that makes it;
    one whose meta lacks the settings raises DataError naming the file and the missing keys.
    """
    from labkit.core.checkpoints import load_state_into
    from labkit.models.registry import load_named_checkpoint, named_checkpoint_path

    state, meta = load_named_checkpoint(name)
    needed = ("arch", "img_size", "patch_size", "in_chans", "pixel_mean", "pixel_std")
    missing = [k for k in needed if k not in meta]
    if missing:
        raise DataError(
            f"{named_checkpoint_path(name).with_suffix('.json')}: labkit checkpoint '{name}' has no "
            f"{', '.join(missing)} in its meta, so its encoder cannot be rebuilt; produce it again with "
            f"labkit.methods.ssl (pretrain_mae / pretrain_simclr + checkpoint_meta)"
        )
    encoder = _make_encoder(meta["arch"], int(meta["img_size"]), int(meta["in_chans"]), int(meta["patch_size"]))
    load_state_into(encoder, state, source=f"labkit checkpoint '{name}'")
    encoder.pretrain_meta = meta
    return encoder.eval()
