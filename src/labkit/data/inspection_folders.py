"""Loaders for industrial-inspection image folders.

Two layouts:

- **MVTec-style** (:func:`load_mvtec_style`)::

      root/train/good/*.png                        defect-free training images
      root/test/good/*.png                         defect-free test images
      root/test/<defect>/*.png                     defective test images
      root/ground_truth/<defect>/<name>_mask.png   their pixel masks

- **Per-class, image and mask side by side** (:func:`load_per_class`)::

      root/<class>/Imgs/<name>.jpg   image   (jpg, jpeg, bmp, tif, tiff)
      root/<class>/Imgs/<name>.png   its mask (a class of "good"/"ok" images may have none)

Images come back as float32 (N, C, H, W) in [0, 1] with ``channels`` 1 (grey) or 3 (colour),
resized to ``size`` (any input size; masks resized with nearest neighbour): squashed to ``size`` x ``size``
(``fit="squash"``), or with their aspect kept, the short side resized to ``size`` (``fit="short_side"``: the
images and masks are then (N,) object arrays of (C, H, W) and (H, W) arrays, to be tiled or cropped to
``size`` x ``size`` by the caller, so a non-square image is never squashed). Masks are binarised:
a pixel is a defect when its value exceeds ``mask_threshold`` times the mask's full scale (255 for
8-bit, 65535 for 16-bit, 1 for masks stored as 0/1); a defect image whose mask comes out empty
is kept, with one warning listing such masks, and a defect class folder whose masks are **all** empty
is reported as probably the defect-free class (naming ``good_class``). Each image's defect-pixel share
at its own resolution is kept (``InspectionSet.defect_fractions``), and masks that had defect pixels
but none after the resize to ``size`` are listed (``InspectionSet.vanished``).
Float images (e.g. 32-bit TIFF) are scaled by their own min and max; one holding NaN or infinite
pixels raises DataError naming the file and the count (never passed through, never filled in).
Unreadable image files are skipped with one warning that lists them (``on_corrupt="warn"``) or
raise :class:`~labkit.core.errors.DataError` (``on_corrupt="error"``). Every other problem (a
defect image without its mask, a mask whose size differs from its image, an unknown defect folder)
raises a DataError naming the file or folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labkit.core.errors import DataError, ParameterError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD_NAMES = ("good", "ok", "normal", "nondefect", "non_defect")


@dataclass
class InspectionSet:
    """images (N, C, H, W) float32 in [0, 1]; masks (N, H, W) int64 {0, 1}; defect_types (N,) str
    ("good" for defect-free); splits (N,) str; files (N,) source paths; skipped: unreadable files."""

    images: np.ndarray
    masks: np.ndarray
    defect_types: np.ndarray
    splits: np.ndarray
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    #: (N,) each image's defect-pixel share at its own resolution, before any resize (0 for defect-free images).
    defect_fractions: np.ndarray | None = None
    #: masks with defect pixels at their own resolution and none after the resize to ``size``.
    vanished: list[str] = field(default_factory=list)
    #: (N,) each image's defect area in pixels after the resize (its defect share x the resized image's area).
    defect_pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        return (self.defect_types != "good").astype(np.int64)

    def subset(self, index) -> InspectionSet:
        index = np.asarray(index)
        return InspectionSet(
            self.images[index],
            self.masks[index],
            self.defect_types[index],
            self.splits[index],
            [self.files[i] for i in np.arange(len(self))[index]],
            list(self.skipped),
            None if self.defect_fractions is None else self.defect_fractions[index],
            list(self.vanished),
            None if self.defect_pixels is None else self.defect_pixels[index],
        )


def _check_options(channels, on_corrupt, mask_threshold):
    if channels not in (1, 3):
        raise ParameterError(f"channels must be 1 or 3, got {channels}")
    if on_corrupt not in ("warn", "error"):
        raise ParameterError(f"on_corrupt must be 'warn' or 'error', got {on_corrupt!r}")
    if not 0 <= mask_threshold < 1:
        raise ParameterError(f"mask_threshold must be in [0, 1), got {mask_threshold}")


def _to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == bool:
        return image.astype(np.float32)
    image = image.astype(np.float32)
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def _channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3/4) -> (C, H, W)."""
    if image.ndim == 2:
        grey = image
        return grey[None] if channels == 1 else np.repeat(grey[None], 3, axis=0)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if channels == 3:
            return np.moveaxis(rgb, -1, 0)
        return (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[None]
    raise DataError(f"{path}: expected a grey or RGB(A) image, got shape {image.shape}")


def _binarise(mask: np.ndarray, threshold: float) -> np.ndarray:
    """Defect where the value exceeds ``threshold`` x the full scale: 255 (8-bit), 65535 (16-bit), or 1
    for an integer mask stored as 0/1 (a common way to save label masks, which 255 would read as empty)."""
    if mask.ndim == 3:
        mask = mask[..., :3].max(-1)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer) and mask.size and mask.max() <= 1:
        return mask > threshold
    full = 65535 if mask.dtype == np.uint16 else 255 if mask.dtype == np.uint8 else max(float(mask.max()), 1.0)
    return mask > threshold * full


FITS = ("squash", "short_side")


def fitted_shape(shape: tuple[int, int], size: int | None, fit: str = "squash") -> tuple[int, int]:
    """The (H, W) an image of ``shape`` is resized to: ``size`` x ``size`` (squash), or its short side to ``size``
    with the aspect kept (short_side); ``size`` None keeps it."""
    h, w = int(shape[0]), int(shape[1])
    if size is None:
        return h, w
    if fit == "squash":
        return size, size
    scale = size / min(h, w)
    return (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)


def _resize(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    if array.shape[-2:] == tuple(shape):
        return array
    from skimage.transform import resize

    return resize(
        array, array.shape[:-2] + tuple(shape), order=order, anti_aliasing=order > 0, preserve_range=True
    ).astype(array.dtype)


class _Reader:
    def __init__(self, channels, size, on_corrupt, mask_threshold, fit="squash"):
        if fit not in FITS:
            raise ParameterError(f"fit must be one of {FITS}, got {fit!r}")
        self.channels, self.size, self.on_corrupt, self.mask_threshold = channels, size, on_corrupt, mask_threshold
        self.fit = fit
        self.images, self.masks, self.types, self.splits, self.files, self.skipped = [], [], [], [], [], []
        self.empty_masks, self.fractions, self.vanished, self.pixels = [], [], [], []
        self.masks_by_class: dict[str, list[bool]] = {}  # defect class -> whether each of its masks has a defect

    def add(self, image_path: Path, mask_path: Path | None, defect: str, split: str):
        from labkit.data.io import read_image

        try:
            raw = read_image(image_path)
        except DataError as exc:
            if self.on_corrupt == "error":
                raise
            self.skipped.append(f"{image_path} ({str(exc).split(': ', 1)[-1][:80]})")
            return
        if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
            bad = int((~np.isfinite(raw)).sum())
            raise DataError(
                f"{image_path}: {bad} NaN or infinite pixel(s) in a float image; labkit does not guess "
                "values for them (a dead-pixel map or a failed reconstruction?): fill or crop them, or "
                "remove the file"
            )
        image = _channels(_to_float(raw), self.channels, image_path)
        if mask_path is None:
            mask = np.zeros(image.shape[-2:], bool)
        else:
            try:
                mask = _binarise(read_image(mask_path), self.mask_threshold)
            except DataError as exc:
                raise DataError(f"mask {mask_path} of image {image_path} is not readable: {exc}") from exc
            if mask.shape != image.shape[-2:]:
                raise DataError(
                    f"mask {mask_path} is {mask.shape[0]}x{mask.shape[1]} but its image {image_path} "
                    f"is {image.shape[1]}x{image.shape[2]}"
                )
            if defect != "good" and not mask.any():
                self.empty_masks.append(str(mask_path))
            if defect != "good":
                self.masks_by_class.setdefault(defect, []).append(bool(mask.any()))
        shape = fitted_shape(mask.shape, self.size, self.fit)
        resized = _resize(mask.astype(np.uint8), shape, 0)
        if mask.any() and not resized.any():
            self.vanished.append(str(mask_path))
        self.fractions.append(float(mask.mean()))
        self.pixels.append(float(mask.mean()) * shape[0] * shape[1])
        self.images.append(np.clip(_resize(image, shape, 1), 0, 1))
        self.masks.append(resized)
        self.types.append(defect)
        self.splits.append(split)
        self.files.append(str(image_path))

    def finish(self, root: Path) -> InspectionSet:
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image file(s) under {root}: " + "; ".join(self.skipped),
                stacklevel=3,
            )
        if self.empty_masks:
            warnings.warn(
                f"{len(self.empty_masks)} mask(s) of defect images under {root} have no pixel above "
                f"mask_threshold={self.mask_threshold} x full scale (wrong threshold?): "
                + "; ".join(self.empty_masks[:10]),
                stacklevel=3,
            )
        for name, has_defect in self.masks_by_class.items():
            if not any(has_defect):
                warnings.warn(
                    f"defect class folder '{name}' under {root}: all {len(has_defect)} of its masks are empty, so it "
                    f"is probably the defect-free class; if so, name it with good_class (-p good_class {name})",
                    stacklevel=3,
                )
        if not self.images:
            raise DataError(f"{root}: no readable images found")
        if self.fit == "short_side":  # one array per image, its aspect kept
            images, masks = np.empty(len(self.images), object), np.empty(len(self.masks), object)
            for i, (im, m) in enumerate(zip(self.images, self.masks)):
                images[i], masks[i] = im.astype(np.float32), m.astype(np.int64)
        else:
            shapes = {im.shape for im in self.images}
            if len(shapes) > 1:
                raise DataError(
                    f"{root}: images have different sizes {sorted(shapes)[:4]}; pass size=... to resize them"
                )
            images, masks = np.stack(self.images).astype(np.float32), np.stack(self.masks).astype(np.int64)
        return InspectionSet(
            images,
            masks,
            np.array(self.types, dtype=str),
            np.array(self.splits, dtype=str),
            self.files,
            self.skipped,
            np.asarray(self.fractions, np.float64),
            self.vanished,
            np.asarray(self.pixels, np.float64),
        )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _per_class_photos(folder: Path) -> tuple[list[Path], dict[str, Path]]:
    """A per-class ``Imgs`` folder's images and ``{stem: mask}``: the non-PNG files with their PNG masks, or in a
    PNG-only folder the PNGs that are not ``<name>_mask.png`` with those masks."""
    files = _images_in(folder)
    masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
    photos = [p for p in files if p.suffix.lower() != ".png"]
    if not photos:
        photos = [p for p in files if not p.stem.endswith("_mask")]
        masks = {p.stem[:-5]: p for p in files if p.stem.endswith("_mask")}
    return photos, masks


def good_class_names(root: Path, good_classes=GOOD_NAMES, good_class: str | None = None) -> set[str]:
    """The lower-case folder names of a per-class folder's defect-free class: ``good_classes`` and ``good_class`` (a
    plant's own name for it), which must name a folder under ``root`` (DataError naming the parameter and the
    folders there)."""
    names = {g.lower() for g in good_classes}
    if good_class is not None:
        if not (root / good_class).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"parameter good_class: no class folder '{good_class}' under {root}; its class folders are {found}"
            )
        names.add(good_class.lower())
    return names


def _class_files(
    root: Path, layout: str, good_class: str | None, image_dir: str, good_classes
) -> list[tuple[str, bool, list[Path]]]:
    """Each class folder of an inspection folder in the loaders' order: ``(class, defect-free?, image files)``, by
    name only (no pixel is read). ``layout``: ``mvtec`` (train and test sub-folders, ``good`` defect-free) or
    ``per_class`` (:func:`good_class_names`; a class without ``image_dir`` holds no file)."""
    out = []
    if layout == "mvtec":
        for split in ("train", "test"):
            folder = root / split
            if folder.is_dir():
                out += [
                    (sub.name, sub.name == "good", _images_in(sub)) for sub in sorted(folder.iterdir()) if sub.is_dir()
                ]
        return out
    names = good_class_names(root, good_classes, good_class)
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        folder = class_dir / image_dir
        files = _per_class_photos(folder)[0] if folder.is_dir() else []
        out.append((class_dir.name, class_dir.name.lower() in names, files))
    return out


def count_inspection_files(
    root: str | Path, layout: str, *, good_class: str | None = None, image_dir: str = "Imgs", good_classes=GOOD_NAMES
) -> dict:
    """The image files an inspection folder holds, by name only (no pixel is read: a configure-time check):
    ``{"good": defect-free images, "defect": defect images, "classes": {defect class: images}}``. ``layout``:
    ``mvtec`` or ``per_class`` (the loaders' rules). Unreadable files are counted; the loaders skip them later.
    Raises DataError for a ``good_class`` folder that does not exist."""
    classes: dict[str, int] = {}
    good = 0
    for name, is_good, files in _class_files(Path(root), layout, good_class, image_dir, good_classes):
        if is_good:
            good += len(files)
        else:
            classes[name] = classes.get(name, 0) + len(files)
    return {"good": good, "defect": sum(classes.values()), "classes": classes}


def list_inspection_files(
    root: str | Path, layout: str, *, good_class: str | None = None, image_dir: str = "Imgs", good_classes=GOOD_NAMES
) -> list[tuple[Path, bool]]:
    """The image files of an inspection folder in the order the loaders read them, each with whether it is
    defect-free, by name only (no pixel is read): what a plan needs to know which images a split takes.
    ``layout``: ``mvtec`` or ``per_class``. Unreadable files are listed; the loaders skip them later."""
    return [
        (path, is_good)
        for _, is_good, files in _class_files(Path(root), layout, good_class, image_dir, good_classes)
        for path in files
    ]


def load_mvtec_style(
    root: str | Path,
    *,
    splits=("train", "test"),
    defect_types=None,
    channels: int = 3,
    size: int | None = 64,
    mask_threshold: float = 0.5,
    on_corrupt: str = "warn",
    fit: str = "squash",
) -> InspectionSet:
    """Load an MVTec-AD-style category folder (see module docstring; ``fit``: squash or short_side).

    defect_types: the defect folder names expected under ``test/`` (None: accept any); a folder not
    in the list raises DataError. Every defective test image must have its mask.
    """
    _check_options(channels, on_corrupt, mask_threshold)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: inspection folder does not exist")
    reader = _Reader(channels, size, on_corrupt, mask_threshold, fit)
    for split in splits:
        if split not in ("train", "test"):
            raise ParameterError(f"splits must be among ('train', 'test'), got {split!r}")
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{root}: missing the '{split}' folder of the MVTec layout")
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            defect = sub.name
            if split == "train" and defect != "good":
                raise DataError(f"{sub}: the train split of the MVTec layout holds only 'good' images")
            if defect != "good" and defect_types is not None and defect not in defect_types:
                raise DataError(f"{sub}: unknown defect folder '{defect}'; expected one of {sorted(defect_types)}")
            for image_path in _images_in(sub):
                mask_path = None
                if defect != "good":
                    mask_path = root / "ground_truth" / defect / f"{image_path.stem}_mask.png"
                    if not mask_path.exists():
                        raise DataError(f"{image_path}: defect image has no mask (expected {mask_path})")
                reader.add(image_path, mask_path, "good" if defect == "good" else defect, split)
    return reader.finish(root)


def load_per_class(
    root: str | Path,
    *,
    classes=None,
    image_dir: str = "Imgs",
    channels: int = 3,
    size: int | None = 64,
    mask_threshold: float = 0.5,
    on_corrupt: str = "warn",
    good_classes=GOOD_NAMES,
    good_class: str | None = None,
    fit: str = "squash",
) -> InspectionSet:
    """Load ``root/<class>/<image_dir>/<name>.<jpg|...>`` with masks ``<name>.png`` beside them.

    The defect classes are the folder names; the defect-free class is a folder named in ``good_classes``
    (case-insensitive) or ``good_class`` (a plant's own name for it, e.g. ``Normal_parts``; a folder of that
    name must exist). An image of a defect class without its mask raises DataError; in the defect-free class a
    missing mask means an all-good mask. classes: the class folders expected (None: all); others raise DataError.
    ``fit``: squash or short_side (module docstring).
    """
    _check_options(channels, on_corrupt, mask_threshold)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: inspection folder does not exist")
    good_classes = good_class_names(root, good_classes, good_class)
    reader = _Reader(channels, size, on_corrupt, mask_threshold, fit)
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = class_dir.name
        if classes is not None and name not in classes:
            raise DataError(f"{class_dir}: unknown class folder '{name}'; expected one of {sorted(classes)}")
        folder = class_dir / image_dir
        if not folder.is_dir():
            raise DataError(f"{class_dir}: no '{image_dir}' folder with images and masks")
        is_good = name.lower() in good_classes
        photos, masks = _per_class_photos(folder)
        for image_path in photos:
            mask_path = masks.get(image_path.stem)
            if mask_path is None and not is_good:
                raise DataError(
                    f"{image_path}: image of defect class '{name}' has no mask "
                    f"(expected {folder / (image_path.stem + '.png')})"
                )
            reader.add(image_path, mask_path, "good" if is_good else name, "all")
    return reader.finish(root)
