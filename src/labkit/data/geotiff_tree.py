"""A tree of GeoTIFF tiles with two label masks each, read and checked in full before any work.

The layout (``landcover.write_geotiff_tree`` writes it)::

    root/images/<name>.tif        the image (bands in the file's band descriptions)
    root/labels_noisy/<name>.tif  noisy labels on the image's grid
    root/labels_clean/<name>.tif  clean labels on the image's grid
    root/legend.json              {"<label value>": "<class>"} (or legend.csv: value,class)

Labels are never resampled: a mask on another grid than its image is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labkit.core.errors import DataError
from labkit.data import landcover
from labkit.data.landcover import IGNORE_INDEX

LEGEND_FILES = ("legend.json", "legend.csv")


def read_legend(root: Path) -> dict[int, str]:
    """Label value -> class name from ``legend.json`` (``{"1": "forest"}``) or ``legend.csv`` (``value,class``)."""
    for name in LEGEND_FILES:
        path = root / name
        if not path.exists():
            continue
        try:
            if name.endswith(".json"):
                raw = json.loads(path.read_text())
                if not isinstance(raw, dict):
                    raise ValueError("expected an object mapping label values to class names")
                items = list(raw.items())
            else:
                lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
                if lines and not lines[0].split(",")[0].strip().lstrip("-").isdigit():
                    lines = lines[1:]  # header
                items = [tuple(part.strip() for part in ln.split(",", 1)) for ln in lines]
            legend = {int(k): str(v) for k, v in items}
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a legend mapping integer label values to class names ({exc})") from exc
        if not legend:
            raise DataError(f"{path}: the legend names no class")
        if len(set(legend.values())) != len(legend):
            raise DataError(f"{path}: a class name is given twice")
        return legend
    raise DataError(f"{root}: no legend file ({' or '.join(LEGEND_FILES)}) mapping label values to class names")


def _grid(meta: dict) -> tuple:
    return (meta.get("height"), meta.get("width"), tuple(np.round(meta.get("transform") or (), 9)), meta.get("crs"))


def load_geotiff_tree(root: str | Path, tile: int) -> dict:
    """Read a ``geotiff`` tree: every image with its noisy and clean labels, checked before any training.

    Returns ``{"names", "images" (list of (C, H, W) float32 with NaN = no data), "noisy", "clean" (lists of (H, W)
    int64 task ids, 255 = no data), "classes", "bands", "nodata_pixels", "grids"}`` (``grids``: each tile's
    (height, width, transform, CRS): tiles of one place share it). Raises DataError naming the tile for: a
    missing noisy or clean mask, labels on another grid (shape, transform or CRS: never resampled), another band
    count than the first image, label values outside the legend, tiles smaller than ``tile``.
    """
    from labkit.data import io

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data_root {root}: folder does not exist")
    for sub in ("images", "labels_noisy", "labels_clean"):
        if not (root / sub).is_dir():
            raise DataError(
                f"{root}: missing folder {sub}/ (expected images/, labels_noisy/, labels_clean/ and a legend file)"
            )
    legend = read_legend(root)
    values = sorted(legend)
    lut_size = max(values) + 1
    classes = [legend[v] for v in values]
    paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not paths:
        raise DataError(f"{root / 'images'}: no GeoTIFF tiles (.tif)")
    out = {
        "names": [],
        "images": [],
        "noisy": [],
        "clean": [],
        "classes": classes,
        "bands": None,
        "nodata_pixels": 0,
        "legend_values": values,
        "grids": [],
    }
    for path in paths:
        image, meta = io.read_geotiff(path)
        if out["bands"] is None:
            out["bands"] = [b or f"band {i + 1}" for i, b in enumerate(meta.get("band_names") or [None] * len(image))]
        elif image.shape[0] != len(out["bands"]):
            raise DataError(
                f"{path}: has {image.shape[0]} bands but {paths[0].name} has {len(out['bands'])}; every "
                "tile needs the same bands (the model's input)"
            )
        if min(image.shape[1:]) < tile:
            raise DataError(f"{path}: tile {image.shape[1]}x{image.shape[2]} is smaller than the crop tile={tile}")
        masks = {}
        for kind in ("labels_noisy", "labels_clean"):
            candidates = [
                root / kind / path.name,
                root / kind / (path.stem + ".tiff"),
                root / kind / (path.stem + ".tif"),
            ]
            label_path = next((c for c in candidates if c.exists()), None)
            if label_path is None:
                raise DataError(f"{path}: no {kind[7:]} mask {root / kind / path.name} for this image")
            raw, label_meta = io.read_geotiff(label_path)
            if _grid(label_meta) != _grid(meta):
                what = [
                    n
                    for n, a, b in zip(("shape", "shape", "transform", "CRS"), _grid(label_meta), _grid(meta))
                    if a != b
                ]
                raise DataError(
                    f"{label_path}: on another grid than its image {path.name} ({', '.join(sorted(set(what)))} "
                    f"differ: {_grid(label_meta)} vs {_grid(meta)}); labels are never resampled"
                )
            mask = landcover._as_mask(raw, str(label_path))
            valid = mask != IGNORE_INDEX
            bad = np.setdiff1d(np.unique(mask[valid]), values)
            if bad.size:
                raise DataError(
                    f"{label_path}: label value(s) {bad[:10].tolist()} are not in the legend "
                    f"({', '.join(f'{v}={legend[v]}' for v in values)})"
                )
            lut = np.full(lut_size, IGNORE_INDEX, np.int64)
            lut[values] = np.arange(len(values))
            mapped = np.full(mask.shape, IGNORE_INDEX, np.int64)
            mapped[valid] = lut[mask[valid]]
            masks[kind] = mapped
        invalid = ~np.isfinite(image).all(axis=0)
        out["nodata_pixels"] += int(invalid.sum())
        out["names"].append(path.name)
        out["grids"].append(_grid(meta))
        out["images"].append(image)
        out["noisy"].append(masks["labels_noisy"])
        out["clean"].append(masks["labels_clean"])
    return out


def chips(image: np.ndarray, masks: Sequence[np.ndarray], tile: int):
    """Non-overlapping ``tile`` x ``tile`` windows of one tile and its masks (the remainder is dropped)."""
    _, h, w = image.shape
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            yield image[:, y : y + tile, x : x + tile], [m[y : y + tile, x : x + tile] for m in masks]
