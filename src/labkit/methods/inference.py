"""Sliding-window inference over scenes larger than a training tile."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)  # the last tile is flush with the border
    return starts


def _blend_window(tile: int) -> np.ndarray:
    # A smooth taper weights tile centres over their borders, where context is missing.
    ramp = np.hanning(tile + 2)[1:-1].astype(np.float32)
    return np.maximum(np.outer(ramp, ramp), 1e-3)


@torch.inference_mode()
def sliding_window_predict(
    model: nn.Module, image, num_classes: int, tile: int = 256, overlap: float = 0.25, batch_size: int = 8
) -> np.ndarray:
    """Class probabilities (num_classes, H, W) of a (C, H, W) image, predicted tile by tile.

    Memory: one batch of tiles plus the (num_classes, H, W) float32 output and a (H, W) weight map.
    Images smaller than ``tile`` are zero-padded. NaNs in the input are an error, not silently spread.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image holds NaN or inf values: fill or mask them before prediction")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    c, h, w = image.shape
    ph, pw = max(tile - h, 0), max(tile - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
    H, W = image.shape[1:]
    stride = max(int(tile * (1 - overlap)), 1)
    window = _blend_window(tile)
    probs = np.zeros((num_classes, H, W), dtype=np.float32)
    weight = np.zeros((H, W), dtype=np.float32)
    coords = [(y, x) for y in _starts(H, tile, stride) for x in _starts(W, tile, stride)]
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        batch = torch.from_numpy(np.stack([image[:, y : y + tile, x : x + tile] for y, x in chunk])).to(device)
        out = model(batch)
        out = out["out"] if isinstance(out, dict) else out
        if out.shape[-2:] != (tile, tile):
            out = nn.functional.interpolate(out, size=(tile, tile), mode="bilinear", align_corners=False)
        p = torch.softmax(out.float(), dim=1).cpu().numpy()
        for (y, x), tile_probs in zip(chunk, p):
            probs[:, y : y + tile, x : x + tile] += tile_probs * window
            weight[y : y + tile, x : x + tile] += window
    model.train(was_training)
    probs /= weight
    return probs[:, :h, :w]
