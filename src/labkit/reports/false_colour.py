"""Images as colours for figures: a percentile-stretched false-colour composite of a two-band image (e.g. HH and
HV backscatter) and a class map painted with one colour per class and masks painted over it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stretch(band: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
    """``band`` scaled so that its ``lo`` and ``hi`` percentiles (NaN ignored) become 0 and 1, clipped."""
    a, b = np.nanpercentile(band, [lo, hi])
    return np.clip((band - a) / max(b - a, 1e-6), 0, 1)


def rgb(colour: str) -> np.ndarray:
    """A matplotlib colour (name or hex) as three floats in [0, 1]."""
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(colour), dtype=float)


def false_colour(bands: np.ndarray, nodata_colour: str) -> np.ndarray:
    """(H, W, 3) composite of a (2, H, W) image: R = first band, G = second, B = first minus second (for dB
    backscatter, the co/cross-polarisation ratio), each percentile-stretched; a pixel where any band is not finite
    gets ``nodata_colour``."""
    first, second = bands
    out = np.stack([stretch(first), stretch(second), stretch(first - second)], axis=-1)
    nodata = ~np.isfinite(bands).all(axis=0)
    out = np.nan_to_num(out, nan=0.0)
    out[nodata] = rgb(nodata_colour)
    return out


def class_map_rgb(
    labels: np.ndarray,
    class_colours: Sequence[str],
    masks: Sequence[tuple[np.ndarray, str]] = (),
    other: float = 0.5,
) -> np.ndarray:
    """(H, W, 3) colours of a class map: class ``i`` in ``class_colours[i]``, then each ``(mask, colour)`` of
    ``masks`` painted over in order; any other label (e.g. an ignored pixel) grey at ``other``."""
    out = np.full(labels.shape + (3,), other)
    for cls, colour in enumerate(class_colours):
        out[labels == cls] = rgb(colour)
    for mask, colour in masks:
        out[mask] = rgb(colour)
    return out
