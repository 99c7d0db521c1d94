"""Readers for the raster formats the studies meet: GeoTIFF, TIFF stacks, PNG/JPEG slices.

Every error is a :class:`DataError` that names the file and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from labkit.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def read_geotiff(path: str | Path, masked_nodata: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Bands (B, H, W) as float32 and metadata (nodata, crs, transform, band_names, dtype).

    With ``masked_nodata`` the no-data value becomes NaN, so it is masked downstream and never averaged in.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    path = _existing(path)
    try:
        with rasterio.open(path) as src:
            data = src.read().astype(np.float32)
            meta = {
                "nodata": src.nodata,
                "crs": str(src.crs) if src.crs else None,
                "transform": tuple(src.transform)[:6],
                "band_names": list(src.descriptions),
                "dtype": src.dtypes[0],
                "width": src.width,
                "height": src.height,
                "count": src.count,
            }
    except RasterioIOError as exc:
        raise DataError(f"{path}: not a readable GeoTIFF ({exc})") from exc
    if masked_nodata and meta["nodata"] is not None and not np.isnan(meta["nodata"]):
        data[data == meta["nodata"]] = np.nan
    return data, meta


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    nodata: float | None = None,
    crs: str | None = "EPSG:32633",
    transform=None,
    band_names: list[str] | None = None,
) -> Path:
    """Write (B, H, W) or (H, W) as a GeoTIFF (used for fixtures and exports)."""
    import rasterio
    from rasterio.transform import from_origin

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(f"{path}: a GeoTIFF needs (bands, H, W), got shape {array.shape}")
    transform = transform or from_origin(500000.0, 5100000.0, 10.0, 10.0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[1],
        width=array.shape[2],
        count=array.shape[0],
        dtype=array.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(array)
        for i, name in enumerate(band_names or [], 1):
            dst.set_band_description(i, name)
    return Path(path)


def read_image(path: str | Path) -> np.ndarray:
    """A 2-D (grey) or (H, W, 3/4) image as stored: 8-bit as uint8, 16-bit as uint16."""
    from PIL import Image, UnidentifiedImageError

    path = _existing(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff_stack(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                return np.asarray(img)  # palette indices: a label image, keep the ids
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(img).astype(np.uint16 if img.mode.startswith("I;16") else np.int32)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey levels of an image stored as RGB(A) (µCT slices often are); 2-D input is returned as is."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3].astype(np.float32)
        return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(image.dtype)
    raise DataError(f"cannot make a grey image of shape {image.shape}")


def read_tiff_stack(path: str | Path) -> np.ndarray:
    """A TIFF file as an array: a 3-D stack is (Z, Y, X).

    Every page must have the same shape: tifffile then reads the first series only (one page of a mixed
    stack), so a stack of unequal pages is an error naming the page sizes, never a silent truncation.
    """
    import tifffile

    path = _existing(path)
    try:
        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(page.shape) for page in tif.pages]
            if len(set(shapes)) > 1:
                sizes = ", ".join(f"{'x'.join(map(str, s))} ({shapes.count(s)} pages)" for s in dict.fromkeys(shapes))
                raise DataError(
                    f"{path}: the TIFF's {len(shapes)} pages differ in size ({sizes}); a stack needs "
                    "pages of one size (write each size to its own file)"
                )
            return tif.asarray()
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable TIFF ({exc})") from exc
