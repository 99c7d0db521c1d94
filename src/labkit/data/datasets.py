"""In-memory datasets with input checks that name the sample that is wrong."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from labkit.core.errors import DataError


def validate_segmentation_arrays(
    images: np.ndarray,
    masks: np.ndarray,
    num_classes: int,
    ignore_index: int | None = 255,
    names: Sequence[str] | None = None,
    source: str = "dataset",
) -> None:
    """Raise DataError for wrong shapes, NaNs in images, or mask ids outside ``[0, num_classes)``."""
    images, masks = np.asarray(images), np.asarray(masks)
    if len(images) == 0:
        raise DataError(f"{source}: is empty (no samples)")
    if images.ndim != 4:
        raise DataError(f"{source}: images must be (N, C, H, W), got shape {images.shape}")
    if masks.ndim != 3:
        raise DataError(f"{source}: masks must be (N, H, W), got shape {masks.shape}")
    label = (lambda i: names[i]) if names is not None else (lambda i: f"sample {i}")  # noqa: E731
    if len(images) != len(masks):
        raise DataError(f"{source}: {len(images)} images but {len(masks)} masks")
    if images.shape[2:] != masks.shape[1:]:
        raise DataError(f"{source}: image size {images.shape[2:]} differs from mask size {masks.shape[1:]}")
    bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: {label(first)} has NaN or inf pixels ({int(bad.sum())} sample(s) affected); "
            "mask them or fill them before training"
        )
    valid = masks if ignore_index is None else np.where(masks == ignore_index, 0, masks)
    out = (valid < 0) | (valid >= num_classes)
    if out.any():
        first = int(np.flatnonzero(out.reshape(len(masks), -1).any(axis=1))[0])
        ids = sorted(set(np.unique(masks[first][out[first]]).tolist()))
        raise DataError(
            f"{source}: {label(first)} has label id(s) {ids[:10]} outside the legend "
            f"[0, {num_classes}){'' if ignore_index is None else f' (ignore index {ignore_index})'}"
        )


class ArraySegmentationDataset(Dataset):
    """Images (N, C, H, W) float32 and masks (N, H, W) int64 held in memory; an optional joint transform.

    ``transform(image, mask) -> (image, mask)`` works on tensors, so flips and crops stay aligned.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        num_classes: int,
        ignore_index: int | None = 255,
        transform: Callable | None = None,
        names: Sequence[str] | None = None,
        source: str = "dataset",
    ):
        validate_segmentation_arrays(images, masks, num_classes, ignore_index, names, source)
        self.images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        self.masks = torch.as_tensor(np.asarray(masks, dtype=np.int64))
        self.num_classes = num_classes
        self.transform = transform
        self.names = list(names) if names is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, mask = self.images[index], self.masks[index]
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def random_flip_rotate(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
    """Dihedral augmentation (flips and 90-degree turns) applied identically to image and mask."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
    if flip:
        image, mask = image.flip(-1), mask.flip(-1)
    return image.contiguous(), mask.contiguous()
