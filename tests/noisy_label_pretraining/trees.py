"""Small GeoTIFF trees in the study's ``geotiff`` layout, written by the tests (simulated tiles, real format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labkit.data import label_noise, landcover

#: A 6-band Sentinel-2 subset (any band count works; the model takes the tree's).
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
#: Label values as a Dynamic World style legend writes them (not 0..n-1): mapped to class ids by the legend.
VALUES = (10, 20, 30, 40, 50, 80)


def write_tree(
    root: Path,
    n_tiles: int = 6,
    size: int = 64,
    seed: int = 0,
    legend: str = "json",
    image_nodata: float | None = -9999.0,
    nodata_step: int | None = None,
    ignored_label_pixels: int = 0,
    places: list[int] | None = None,
    bands: tuple[str, ...] = BANDS,
) -> dict:
    """Write ``n_tiles`` simulated tiles with clean and noisy ``lulc`` labels; returns what was written.

    ``nodata_step``: image pixels ``(y, x)`` with ``y % step == x % step == 0`` are no data (NaN, written as
    ``image_nodata``) in every band of every tile; ``ignored_label_pixels``: pixels of the second tile's clean
    label written as the label no-data value (0); ``places``: one place index per tile (tiles of one index share
    their bounds, as dates of one place do); ``bands``: the band descriptions written.
    """
    tiles = landcover.LandscapeSimulator(size, bands=BANDS).sample(n_tiles, seed=seed)  # simulated as BANDS
    classes = landcover.task_legend("lulc")[0]
    clean = tiles.labels("lulc")
    noisy = label_noise.apply_noise(label_noise.make_noise(["boundary", "flips"], 0.4, len(classes)), clean, seed=1)
    images = tiles.images.copy()
    if nodata_step:
        images[:, :, ::nodata_step, ::nodata_step] = np.nan
    clean_written = clean.copy()
    rows = np.arange(ignored_label_pixels)
    if n_tiles > 1:
        clean_written[1][rows // size, size - 1 - rows % size] = landcover.IGNORE_INDEX
    names = [f"s2_{i:02d}.tif" for i in range(n_tiles)]
    landcover.write_tile_tree(
        root,
        images,
        clean_written,
        noisy,
        classes,
        values=VALUES,
        names=names,
        band_names=list(bands),
        image_nodata=image_nodata,
        legend=legend,
        places=places,
    )
    return {"root": root, "names": names, "images": images, "clean": clean_written, "noisy": noisy, "classes": classes}
