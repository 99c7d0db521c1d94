"""RGB-pretrained first-convolution filters mapped to a multispectral band set by band name.

ImageNet weights have three input filters, for red, green and blue. A network on other bands (Sentinel-2's NIR, R,
G, B; a GeoTIFF tree's own band descriptions) needs one filter per band: the band named red gets the red filter,
green the green one, blue the blue one, and every other band (NIR, red edge, SWIR, ...) the mean of the three, all
scaled by ``3 / bands`` so that a pixel's summed input keeps its scale (timm's rule for extra channels). Matching by
position instead (timm's ``adapt_input_conv`` repeats R, G, B, R, ...) puts the red filter on NIR when the bands are
NIR, R, G, B.

Band names are matched case-insensitively, ignoring spaces, ``_`` and ``-``: Sentinel-2 (``B04``, ``B03``,
``B02``, also ``B4``, ``B3``, ``B2`` as Landsat 8/9 name the same colours), and plain names (``red``, ``green``,
``blue``, ``R``, ``G``, ``B``). A band set without them takes an explicit choice (``rgb`` argument: the names of the
red, green and blue bands, in that order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The colours of an RGB network's input filters, in its input order.
COLOURS = ("R", "G", "B")
#: Band names (normalised: lower case, no spaces, ``_`` or ``-``) recognised as each colour.
ALIASES = {
    "R": ("b04", "b4", "red", "r"),
    "G": ("b03", "b3", "green", "g"),
    "B": ("b02", "b2", "blue", "b"),
}


class BandMappingError(ValueError):
    """The bands cannot be matched to red, green and blue (the message names the bands)."""


def _norm(name: str) -> str:
    return str(name).lower().replace(" ", "").replace("_", "").replace("-", "")


def rgb_band_indices(bands: Sequence[str], rgb: Sequence[str] | None = None) -> dict[str, int]:
    """``{"R": i, "G": j, "B": l}``: the index in ``bands`` of the red, green and blue band.

    ``rgb``: the names of the red, green and blue bands, in that order (each must be one of ``bands``); None finds
    them by name (:data:`ALIASES`). Raises :class:`BandMappingError` naming the bands when a colour has no band,
    or more than one."""
    bands = [str(b) for b in bands]
    if rgb is not None:
        rgb = [str(b) for b in rgb]
        if len(rgb) != 3 or len(set(rgb)) != 3:
            raise BandMappingError(f"three different band names are needed (red, green, blue), got {rgb}")
        missing = [b for b in rgb if b not in bands]
        if missing:
            raise BandMappingError(f"band(s) {missing} are not among the bands {bands}")
        return {c: bands.index(b) for c, b in zip(COLOURS, rgb)}
    found: dict[str, int] = {}
    for colour in COLOURS:
        hits = [i for i, b in enumerate(bands) if _norm(b) in ALIASES[colour]]
        if len(hits) > 1:
            raise BandMappingError(
                f"bands {[bands[i] for i in hits]} are all named as the {colour} band; name one of them"
            )
        if not hits:
            names = ", ".join(ALIASES[colour])
            raise BandMappingError(f"no band of {bands} is named as the {colour} band (any of: {names})")
        found[colour] = hits[0]
    return found


def map_rgb_filters(weight: torch.Tensor, bands: Sequence[str], rgb: Sequence[str] | None = None) -> torch.Tensor:
    """First-convolution filters ``(O, len(bands), k, k)`` from RGB ones ``(O, 3, k, k)``: each colour's filter
    on its band, the mean of the three on every other band, all scaled by ``3 / len(bands)``."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB first-convolution filters (O, 3, k, k), got shape {tuple(weight.shape)}")
    index = rgb_band_indices(bands, rgb)
    colour_of = {i: c for c, i in index.items()}
    mean = weight.mean(dim=1, keepdim=True)
    columns = [weight[:, COLOURS.index(colour_of[i])][:, None] if i in colour_of else mean for i in range(len(bands))]
    return torch.cat(columns, dim=1) * (3.0 / len(bands))


def describe_mapping(bands: Sequence[str], rgb: Sequence[str] | None = None) -> str:
    """The mapping in words, e.g. ``R->B04, G->B03, B->B02; B08 from the mean of R, G, B``."""
    index = rgb_band_indices(bands, rgb)
    bands = [str(b) for b in bands]
    text = ", ".join(f"{c}->{bands[index[c]]}" for c in COLOURS)
    others = [b for i, b in enumerate(bands) if i not in index.values()]
    return text + (f"; {', '.join(others)} from the mean of R, G, B" if others else "")
