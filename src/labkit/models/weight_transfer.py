"""Encoder weights carried from one model into another: the first convolution adapted to another number of input
bands, checkpoint key prefixes mapped onto a segmentation_models_pytorch ``TimmUniversalEncoder``, stages the
target lacks dropped and listed, and any other mismatch named.
"""

from __future__ import annotations

import torch
from torch import nn

from labkit.core.errors import CheckpointMismatchError

FIRST_CONV = "model.conv1.weight"  # a timm ResNet's stem convolution inside smp's TimmUniversalEncoder


def adapt_input_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-convolution filters (O, I, k, k) for ``in_chans`` inputs when the source had ``I`` bands.

    timm's ``adapt_input_conv`` only converts from 3 (RGB) inputs. Bands of another sensor (e.g. SAR) have no
    spectral counterpart among the source's bands, so every new input channel gets the mean filter over the
    source bands, scaled by ``I / in_chans``: the spatial structure of each learned filter is kept and the
    response to an input that is constant over bands is preserved (the sum over input channels is unchanged,
    as timm does when it sums RGB filters into one grey channel).
    """
    if weight.ndim != 4:
        raise CheckpointMismatchError(f"first convolution must be (out, in, k, k), got shape {tuple(weight.shape)}")
    source = weight.shape[1]
    if source == in_chans:
        return weight.clone()
    if source == 3:  # the documented RGB case: use timm's own conversion
        from timm.models import adapt_input_conv

        return adapt_input_conv(in_chans, weight.clone())
    mean = weight.float().mean(dim=1, keepdim=True)
    return (mean.repeat(1, in_chans, 1, 1) * (source / in_chans)).to(weight.dtype)


def timm_encoder_key(key: str) -> str:
    """Checkpoint key -> smp ``TimmUniversalEncoder`` key (``model.<timm key>``): the prefixes of a wrapped
    encoder (``encoder.``, ``backbone.``, ``module.``) are dropped."""
    for prefix in ("encoder.", "backbone.", "module."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key if key.startswith("model.") else f"model.{key}"


def adapt_encoder_state(
    state: dict,
    encoder: nn.Module,
    in_chans: int,
    source: str = "the checkpoint",
    target: str = "the encoder",
    expected: str = "an encoder state dict of the same architecture",
) -> tuple[dict, dict]:
    """Fit an encoder state dict (from a deeper encoder of the same family, any band count) into ``encoder``.

    Keys are mapped by :func:`timm_encoder_key`; stages the target lacks (a deeper stage, a classifier) are
    dropped and listed; the first convolution is adapted to ``in_chans`` (:func:`adapt_input_conv_weight`); any
    key the target needs and the checkpoint lacks, a key the checkpoint has inside a stage the target keeps (another
    architecture, e.g. a deeper ResNet's extra blocks), or any other shape mismatch, is a CheckpointMismatchError
    naming the keys (``source``, ``target`` and ``expected`` word its message): every key the target loads comes
    from the checkpoint. Returns the state dict to load (strictly) and what was done: ``dropped_keys``,
    ``dropped_stages``, ``first_conv_bands``.
    """
    own = encoder.state_dict()
    renamed = {timm_encoder_key(k): v for k, v in state.items()}
    adapted = {}
    if FIRST_CONV in renamed:
        adapted[FIRST_CONV] = adapt_input_conv_weight(renamed[FIRST_CONV], in_chans)
    dropped = sorted(k for k in renamed if k not in own)
    missing = sorted(k for k in own if k not in renamed)
    if missing:
        stages = sorted({k.split(".")[1] for k in missing})
        raise CheckpointMismatchError(
            f"{source} lacks {len(missing)} key(s) of {target} (in {', '.join(stages)}): {missing[:8]} "
            f"(is it {expected}?)"
        )
    kept_stages = {k.split(".")[1] for k in own}
    stray = [k for k in dropped if k.split(".")[1] in kept_stages]
    if stray:
        raise CheckpointMismatchError(
            f"{source} has {len(stray)} key(s) inside the stages {target} keeps that it has no place for: "
            f"{stray[:8]} (is it {expected}?)"
        )
    loaded = {k: adapted.get(k, renamed[k]) for k in own}
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in loaded.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        raise CheckpointMismatchError(f"{source} does not fit {target}: {shapes[:4]}")
    source_bands = int(renamed[FIRST_CONV].shape[1]) if FIRST_CONV in renamed else None
    info = {
        "dropped_keys": len(dropped),
        "dropped_stages": sorted({k.split(".")[1] for k in dropped}),
        "first_conv_bands": f"{source_bands} -> {in_chans}",
    }
    return loaded, info
