"""Loaders for the two public semi-supervised segmentation benchmarks' folder layouts.

* Pascal VOC 2012: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose
  indices are class ids; 255 marks the ignored object borders), ``ImageSets/Segmentation/<split>.txt``.
* Cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; label ids map to the 19 train ids, the rest
  to 255.

:func:`load_semisup_folder` reads a whole benchmark tree (VOC ``train_aug``, Cityscapes, or your own
``images/`` + ``masks/`` + ``classes.txt``) with the split lists under ``splits/``.

Both also read semi-supervised split lists (``labeled.txt``): one id per line (VOC) or
``<image path> <mask path>`` relative to the root per line (UniMatch's format). The datasets are not
redistributed by labkit: point ``root`` at a local copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from labkit.core.errors import DataError

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Cityscapes label id -> train id (the official table in cityscapesscripts' labels.py).
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_MAX_LABEL_ID = 33


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map (n,3) uint8: the bit-interleaving scheme of the VOC devkit."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def write_palette_png(path: str | Path, mask: np.ndarray) -> None:
    """Save class ids as a VOC-style palette PNG (for fixtures and for exporting predictions)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    img.save(path)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {path} cannot be read: {exc}") from exc


def read_voc_mask(path: str | Path, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """Class ids (H,W) int64 of a VOC palette PNG (or greyscale ids, or RGB VOC colours).

    Ids other than 0..num_classes-1 and 255 raise DataError naming the file and the ids.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask {path} does not exist")
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"mask {path} cannot be read: {exc}") from exc
    if mode in ("P", "L"):
        ids = arr.astype(np.int64)
    elif mode in ("RGB", "RGBA"):
        # An RGB rendering of the palette: map each VOC colour back to its index.
        palette = voc_palette()
        codes = {tuple(int(v) for v in palette[i]): i for i in list(range(num_classes)) + [IGNORE_INDEX]}
        rgb = arr[..., :3].reshape(-1, 3)
        uniq, inverse = np.unique(rgb, axis=0, return_inverse=True)
        unknown = [tuple(int(v) for v in u) for u in uniq if tuple(int(v) for v in u) not in codes]
        if unknown:
            raise DataError(f"mask {path}: RGB colours {unknown[:5]} are not VOC class colours")
        lut = np.array([codes[tuple(int(v) for v in u)] for u in uniq])
        ids = lut[inverse.ravel()].reshape(arr.shape[:2]).astype(np.int64)
    else:
        raise DataError(f"mask {path} has PIL mode {mode}; expected a palette (P) or greyscale (L) PNG of class ids")
    bad = np.unique(ids[(ids >= num_classes) & (ids != IGNORE_INDEX)])
    if bad.size:
        raise DataError(
            f"mask {path} holds ids {bad[:10].tolist()} outside the {num_classes} classes "
            f"(0..{num_classes - 1}) and the ignore index {IGNORE_INDEX}"
        )
    return ids


def read_cityscapes_mask(path: str | Path) -> np.ndarray:
    """Train ids (H,W) int64 of a ``*_gtFine_labelIds.png``; ids above 33 raise DataError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask {path} does not exist")
    try:
        with Image.open(path) as img:
            ids = np.asarray(img).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"mask {path} cannot be read as a label-id image: {exc}") from exc
    if ids.ndim != 2:
        raise DataError(f"mask {path} has shape {ids.shape}; expected a single-channel label-id image")
    bad = np.unique(ids[(ids > CITYSCAPES_MAX_LABEL_ID) | (ids < 0)])
    if bad.size:
        raise DataError(f"mask {path} holds label ids {bad[:10].tolist()} outside Cityscapes' 0..33")
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut[ids]


def _fit(image: np.ndarray, mask: np.ndarray, crop: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop to ``crop`` x ``crop``, padding smaller images (image 0, mask 255)."""
    if crop is None:
        return image, mask
    h, w = mask.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = mask.shape
    y, x = (h - crop) // 2, (w - crop) // 2
    return image[:, y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]


class _PairFolder(Dataset):
    class_names: tuple[str, ...] = ()

    def __init__(self, pairs: list[tuple[str, Path, Path]], crop: int | None, source: Path):
        missing = [(sid, p) for sid, img, msk in pairs for p in (img, msk) if not p.is_file()]
        if missing:
            raise DataError(
                f"{source} names {len(missing)} missing file(s), e.g. "
                + "; ".join(f"{sid}: {p}" for sid, p in missing[:3])
            )
        if not pairs:
            raise DataError(f"{source} lists no samples")
        self.pairs, self.crop, self.source = pairs, crop, source

    @property
    def ids(self) -> list[str]:
        return [p[0] for p in self.pairs]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sid, img_path, mask_path = self.pairs[index]
        image, mask = _read_rgb(img_path), self.read_mask(mask_path)
        if image.shape[1:] != mask.shape:
            raise DataError(f"sample {sid}: image {img_path} is {image.shape[1:]} but mask {mask_path} is {mask.shape}")
        return _fit(image, mask, self.crop)

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))

    def to_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All (or the first ``limit``) samples stacked: images (N,3,H,W) float32, masks (N,H,W) int64."""
        n = len(self) if limit is None else min(limit, len(self))
        loaded = [self.load(i) for i in range(n)]
        shapes = {m.shape for _, m in loaded}
        if len(shapes) > 1:
            raise DataError(f"{self.source}: samples differ in size {sorted(shapes)[:3]}; pass crop= to stack them")
        return (np.stack([i for i, _ in loaded]).astype(np.float32), np.stack([m for _, m in loaded]), self.ids[:n])


def _list_lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


class VOCSegmentationFolder(_PairFolder):
    """Pascal VOC 2012 segmentation: ``split`` is ``train``/``val`` (ImageSets) or a split-list file."""

    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str | Path = "train",
        crop: int | None = None,
        mask_dir: str = "SegmentationClass",
    ):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"VOC root {root} is not a folder")
        list_path = (
            Path(split) if Path(split).suffix == ".txt" else root / "ImageSets" / "Segmentation" / f"{split}.txt"
        )
        pairs = []
        for tokens in _list_lines(list_path):
            if len(tokens) >= 2:  # UniMatch-style "JPEGImages/x.jpg SegmentationClass/x.png"
                pairs.append((Path(tokens[0]).stem, root / tokens[0], root / tokens[1]))
            else:
                sid = tokens[0]
                pairs.append((sid, root / "JPEGImages" / f"{sid}.jpg", root / mask_dir / f"{sid}.png"))
        super().__init__(pairs, crop, list_path)

    def read_mask(self, path: Path) -> np.ndarray:
        return read_voc_mask(path, len(self.class_names))


class CityscapesFolder(_PairFolder):
    """Cityscapes fine annotations with label ids mapped to the 19 train ids."""

    class_names = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str | Path = "train", crop: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"Cityscapes root {root} is not a folder")
        pairs = []
        if Path(split).suffix == ".txt":
            source = Path(split)
            for tokens in _list_lines(source):
                if len(tokens) < 2:
                    raise DataError(f"split list {source}: line {' '.join(tokens)!r} needs '<image> <mask>'")
                mask = tokens[1].replace("_labelTrainIds", "_labelIds")
                pairs.append((Path(tokens[0]).name.replace("_leftImg8bit.png", ""), root / tokens[0], root / mask))
        else:
            source = root / "leftImg8bit" / str(split)
            if not source.is_dir():
                raise DataError(f"Cityscapes split folder {source} does not exist")
            for img in sorted(source.glob("*/*_leftImg8bit.png")):
                stem = img.name.replace("_leftImg8bit.png", "")
                mask = root / "gtFine" / str(split) / img.parent.name / f"{stem}_gtFine_labelIds.png"
                pairs.append((stem, img, mask))
        super().__init__(pairs, crop, source)

    def read_mask(self, path: Path) -> np.ndarray:
        return read_cityscapes_mask(path)


def check_split_against_folder(ids: Sequence[str], dataset: _PairFolder) -> None:
    """DataError if a split list names ids the dataset does not hold."""
    known = set(dataset.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"split names {len(unknown)} id(s) not in {dataset.source}, e.g. {unknown[:3]}")


# ----------------------------------------------------------------------------- semi-supervised benchmark trees

FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """Class names from a ``classes.txt`` (one per line, in id order); DataError when missing, empty,
    duplicated or too long for 8-bit masks (255 is the ignore index)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class list {path} does not exist: write one class name per line, in id order")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"class list {path} names no class")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"class list {path} names {dup} more than once")
    if len(names) > IGNORE_INDEX:
        raise DataError(
            f"class list {path} names {len(names)} classes; masks hold at most {IGNORE_INDEX} "
            f"(id {IGNORE_INDEX} is ignored)"
        )
    return tuple(names)


class MaskFolder(_PairFolder):
    """Your own data: ``images/<id>.<png|jpg|tif>`` and ``masks/<id>.png`` (palette or greyscale class ids,
    255 ignored) with the classes of ``classes.txt``."""

    def __init__(
        self,
        root: str | Path,
        ids: Sequence[str],
        class_names: Sequence[str],
        crop: int | None = None,
        source: Path | None = None,
    ):
        root = Path(root)
        self.class_names = tuple(class_names)
        pairs = []
        for sid in ids:
            image = next(
                (
                    root / "images" / f"{sid}{s}"
                    for s in FOLDER_IMAGE_SUFFIXES
                    if (root / "images" / f"{sid}{s}").is_file()
                ),
                root / "images" / f"{sid}.png",
            )
            pairs.append((sid, image, root / "masks" / f"{sid}.png"))
        super().__init__(pairs, crop, source or root)

    def read_mask(self, path: Path) -> np.ndarray:
        try:
            return read_voc_mask(path, len(self.class_names))
        except DataError as exc:
            if "outside the" not in str(exc):
                raise
            raise DataError(
                f"{exc}: classes.txt names only {len(self.class_names)} classes; add a name for every value the "
                "masks hold (one per line, in id order)"
            ) from None


@dataclass
class SemiSupData:
    """A real benchmark as arrays: the training pool (labelled and unlabeled), the held-out set, the classes and
    the labelled lists read from ``data_root/splits/<split>/labeled.txt``."""

    train_images: np.ndarray
    train_masks: np.ndarray
    train_ids: list[str]
    val_images: np.ndarray
    val_masks: np.ndarray
    val_ids: list[str]
    class_names: tuple[str, ...]
    split_lists: dict[str, list[str]]
    train_sizes: np.ndarray | None = None  # (N, 2) each training image's true height and width in its canvas
    val_sizes: np.ndarray | None = None
    notes: list[str] | None = None  # what was done to the data that a reader must know (padding, subsets)


def _sample_id(token: str, source: str) -> str:
    name = Path(token).name
    if source == "cityscapes":
        for suffix in ("_leftImg8bit.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"):
            name = name.replace(suffix, "")
        return name
    return Path(name).stem


def read_id_list(path: Path, source: str) -> list[str]:
    """Sample ids of a split list: one id per line, or ``<image path> <mask path>`` (UniMatch's format)."""
    ids = [_sample_id(tokens[0], source) for tokens in _list_lines(path)]
    if not ids:
        raise DataError(f"split list {path} lists no samples")
    return ids


class ImageSizeWarning(UserWarning):
    """Real images and ``image_size`` that do not fit well: images padded, or a crop tiny against the images."""


def _whole(dataset: _PairFolder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every sample at its full size as bytes, padded to the largest (image 0, mask 255, so padding is never
    scored or learned): images (N,3,H,W) uint8, masks (N,H,W) uint8, sizes (N,2) the true (height, width)."""
    images, masks = [], []
    for i in range(len(dataset)):
        sid, img_path, mask_path = dataset.pairs[i]
        image, mask = _read_rgb(img_path), dataset.read_mask(mask_path)
        if image.shape[1:] != mask.shape:
            raise DataError(f"sample {sid}: image {img_path} is {image.shape[1:]} but mask {mask_path} is {mask.shape}")
        images.append(np.round(image * 255).astype(np.uint8))
        masks.append(mask.astype(np.uint8))
    sizes = np.array([m.shape for m in masks], dtype=np.int64)
    h, w = sizes.max(axis=0) if len(sizes) else (0, 0)
    out_i = np.zeros((len(images), 3, h, w), dtype=np.uint8)
    out_m = np.full((len(masks), h, w), IGNORE_INDEX, dtype=np.uint8)
    for k, (img, msk) in enumerate(zip(images, masks)):
        out_i[k, :, : msk.shape[0], : msk.shape[1]] = img
        out_m[k, : msk.shape[0], : msk.shape[1]] = msk
    return out_i, out_m, sizes


def _at_least(images: np.ndarray, masks: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The canvas padded (image 0, mask 255) so that both sides are at least ``side``."""
    ph, pw = max(side - masks.shape[1], 0), max(side - masks.shape[2], 0)
    if ph or pw:
        images = np.pad(images, ((0, 0), (0, 0), (0, ph), (0, pw)))
        masks = np.pad(masks, ((0, 0), (0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return images, masks


def _draw(ids: list[str], n: int | None, keep: Sequence[str], rng: np.random.Generator) -> list[str]:
    """``n`` of ``ids`` (all of ``keep`` and the rest drawn at random), in their listed order."""
    if n is None or n >= len(ids):
        return list(ids)
    kept = set(keep)
    rest = [i for i in ids if i not in kept]
    chosen = set(rng.choice(len(rest), size=max(n - len(kept), 0), replace=False).tolist()) if rest else set()
    picked = kept | {rest[k] for k in chosen}
    return [i for i in ids if i in picked]


def size_notes(sizes: np.ndarray, ids: Sequence[str], crop: int, parameter: str = "image_size") -> list[str]:
    """What a reader must know of the images against the crop: those smaller (padded with the ignore index) and a
    crop tiny against them (the parameter to raise); each also warned (:class:`ImageSizeWarning`)."""
    notes = []
    small = [(i, s) for i, s in zip(ids, sizes) if s[0] < crop or s[1] < crop]
    if small:
        eg = ", ".join(f"{i} ({s[0]}x{s[1]})" for i, s in small[:3])
        notes.append(
            f"{len(small)} of {len(ids)} training images are smaller than {parameter} {crop} (e.g. {eg}): their "
            f"crops are padded with the ignore index {IGNORE_INDEX}, so the padding is neither learned nor scored"
        )
    if len(sizes):
        med_h, med_w = (int(v) for v in np.median(sizes, axis=0))
        share = crop * crop / max(med_h * med_w, 1)
        if share < 1 / 16:
            notes.append(
                f"{parameter} {crop} is small against images of {med_h}x{med_w} (median): a crop holds "
                f"{100 * share:.1f}% of an image, too little context to tell the classes apart; raise {parameter} "
                f"(e.g. to {min(med_h, med_w)})"
            )
    for note in notes:
        warnings.warn(note, ImageSizeWarning, stacklevel=3)
    return notes


def load_semisup_folder(
    source: str,
    root: str | Path,
    crop: int,
    n_train: int | None = None,
    n_val: int | None = None,
    splits: Sequence[str] | None = None,
    seed: int = 0,
) -> SemiSupData:
    """Read a VOC ``train_aug``, Cityscapes or own-folders tree with its split lists (see docs/data/farcluss.md).

    Every sample is kept whole, as bytes (uint8), padded to the largest and to at least ``crop`` (image 0, mask
    255: the padding is neither learned nor scored), with its true size: training takes a new random ``crop``
    window of each image at every step, held-out images are scored whole (sliding windows of ``crop``).
    ``splits``: names of folders under ``root/splits/`` whose ``labeled.txt`` is read (each must exist and name
    training samples). ``n_train`` / ``n_val``: subsets drawn at random with ``seed`` (the labelled samples of
    the split lists always kept), not the first ids in listed order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data_root {root} is not a folder")
    split_root = root / "splits"
    if source == "voc":
        class_names = VOC_CLASSES
        pool_list = split_root / "train_aug.txt"
        val_list = split_root / "val.txt"
        if not val_list.is_file():
            val_list = root / "ImageSets" / "Segmentation" / "val.txt"
        if not val_list.is_file():
            raise DataError(f"VOC tree {root} has no splits/val.txt (nor ImageSets/Segmentation/val.txt)")
        pool = read_id_list(pool_list, source) if pool_list.is_file() else None
    elif source == "cityscapes":
        class_names = CITYSCAPES_CLASSES
        pool = None
    elif source == "folders":
        class_names = read_class_list(root / "classes.txt")
        val_list = split_root / "val.txt"
        if not val_list.is_file():
            raise DataError(f"folder {root} has no splits/val.txt naming the held-out ids")
        images = root / "images"
        if not images.is_dir():
            raise DataError(f"folder {root} has no images/ folder")
        pool = None
    else:
        raise DataError(f"unknown data source {source!r}")
    split_lists = {}
    for name in splits or ():
        path = split_root / str(name) / "labeled.txt"
        if not path.is_file():
            found = sorted(p.parent.name for p in split_root.glob("*/labeled.txt")) if split_root.is_dir() else []
            raise DataError(f"split list {path} does not exist (splits found under {split_root}: {found or 'none'})")
        split_lists[str(name)] = read_id_list(path, source)
    # The training pool: the listed pool, or every sample of the tree that is not held out.
    if source == "cityscapes":
        every = CityscapesFolder(root, "train")
        val_ds = CityscapesFolder(root, "val")
        by_id = {sid: (img, msk) for sid, img, msk in every.pairs}
        pool = pool or list(by_id)
    else:
        val_ids = read_id_list(val_list, source)
        if pool is None:
            if source == "voc":
                listed = [i for ids in split_lists.values() for i in ids]
                for extra in sorted(split_root.glob("*/unlabeled.txt")) if split_root.is_dir() else []:
                    listed += read_id_list(extra, source)
                train_list = root / "ImageSets" / "Segmentation" / "train.txt"
                pool = list(dict.fromkeys(listed)) or read_id_list(train_list, source)
            else:
                held = set(val_ids)
                pool = sorted(
                    p.stem
                    for p in (root / "images").iterdir()
                    if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES and p.stem not in held
                )
    known = set(pool)
    for name, ids in split_lists.items():
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(
                f"split list {split_root / name / 'labeled.txt'} names {len(unknown)} sample(s) not in "
                f"the training pool, e.g. {unknown[:3]}"
            )
    labelled = list(dict.fromkeys(i for ids in split_lists.values() for i in ids))
    rng = np.random.default_rng(seed)
    order = _draw(list(dict.fromkeys(pool)), n_train, labelled, rng)
    if source == "cityscapes":
        train_ds = CityscapesFolder.__new__(CityscapesFolder)
        _PairFolder.__init__(train_ds, [(i, *by_id[i]) for i in order], crop, root / "leftImg8bit" / "train")
        keep = _draw([p[0] for p in val_ds.pairs], n_val, (), rng)
        val_pairs = [p for p in val_ds.pairs if p[0] in set(keep)]
        val_ds = CityscapesFolder.__new__(CityscapesFolder)
        _PairFolder.__init__(val_ds, val_pairs, None, root / "leftImg8bit" / "val")
    elif source == "voc":
        train_ds = VOCSegmentationFolder.__new__(VOCSegmentationFolder)
        _PairFolder.__init__(
            train_ds,
            [(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in order],
            crop,
            pool_list if pool_list.is_file() else split_root,
        )
        val_ids = _draw(val_ids, n_val, (), rng)
        val_ds = VOCSegmentationFolder.__new__(VOCSegmentationFolder)
        _PairFolder.__init__(
            val_ds,
            [(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in val_ids],
            None,
            val_list,
        )
    else:
        train_ds = MaskFolder(root, order, class_names, crop=crop, source=root / "images")
        val_ds = MaskFolder(root, _draw(val_ids, n_val, (), rng), class_names, source=val_list)
    x, y, sizes = _whole(train_ds)
    xv, yv, val_sizes = _whole(val_ds)
    notes = size_notes(sizes, train_ds.ids, crop)
    x, y = _at_least(x, y, crop)
    xv, yv = _at_least(xv, yv, crop)
    return SemiSupData(x, y, train_ds.ids, xv, yv, val_ds.ids, tuple(class_names), split_lists, sizes, val_sizes, notes)
