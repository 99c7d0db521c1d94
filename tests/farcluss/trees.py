"""Small benchmark trees in the exact published layouts, with split lists, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from labkit.data import segmentation_folders as sf

CITIES = ("aachen", "bremen")


def _blocky_mask(rng, size, classes) -> np.ndarray:
    """A mask of 4x4 blocks of random classes (so every class has whole regions, not salt noise)."""
    h, w = size
    small = rng.choice(classes, size=(-(-h // 4), -(-w // 4)))
    return np.kron(small, np.ones((4, 4), dtype=small.dtype))[:h, :w].astype(np.uint8)


def _image_for(rng, mask) -> np.ndarray:
    colours = rng.integers(0, 255, (256, 3))
    return np.clip(colours[mask] + rng.normal(0, 8, (*mask.shape, 3)), 0, 255).astype(np.uint8)


def write_voc_tree(
    root: Path, n_train: int = 24, n_val: int = 4, size=(20, 24), splits=(("1_4", 6), ("92", 3))
) -> dict:
    """Pascal VOC train_aug layout: JPEGImages/, SegmentationClass/ (palette PNGs, 255 borders), splits/train_aug.txt,
    splits/val.txt and splits/<name>/labeled.txt + unlabeled.txt in UniMatch's '<image> <mask>' format."""
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    train = [f"2008_{i:06d}" for i in range(n_train)]
    val = [f"2007_{i:06d}" for i in range(n_val)]
    for k, sid in enumerate(train + val):
        shape = size if k % 3 else (size[0] - 2, size[1] + 2)  # images of different sizes, as in VOC
        mask = _blocky_mask(rng, shape, [0, 0, 1, 7, 15])
        mask[0, :] = 255
        Image.fromarray(_image_for(rng, mask)).save(root / "JPEGImages" / f"{sid}.jpg", quality=95)
        sf.write_palette_png(root / "SegmentationClass" / f"{sid}.png", mask)
    split_dir = root / "splits"
    split_dir.mkdir(exist_ok=True)
    (split_dir / "train_aug.txt").write_text("".join(f"{i}\n" for i in train))
    (split_dir / "val.txt").write_text("".join(f"{i}\n" for i in val))
    lists = {}
    for name, n in splits:
        labeled = train[:: max(1, len(train) // n)][:n]
        (split_dir / name).mkdir(exist_ok=True)
        (split_dir / name / "labeled.txt").write_text(
            "".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in labeled)
        )
        (split_dir / name / "unlabeled.txt").write_text(
            "".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in train if i not in labeled)
        )
        lists[name] = labeled
    return {"train": train, "val": val, "splits": lists}


def write_cityscapes_tree(root: Path, n_train: int = 16, n_val: int = 3, size=(16, 32), splits=(("1_4", 4),)) -> dict:
    """Cityscapes layout: leftImg8bit/{train,val}/<city>/..._leftImg8bit.png, gtFine/.../..._gtFine_labelIds.png and
    splits/<name>/labeled.txt in UniMatch's format (labelTrainIds names, mapped to the labelIds files)."""
    root = Path(root)
    rng = np.random.default_rng(1)
    out = {"train": [], "val": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(n):
            city = CITIES[k % 2]
            stem = f"{city}_{k:06d}_000019"
            for top in ("leftImg8bit", "gtFine"):
                (root / top / split / city).mkdir(parents=True, exist_ok=True)
            ids = _blocky_mask(rng, size, [7, 8, 11, 21, 23, 26, 0])
            Image.fromarray(_image_for(rng, ids)).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids, mode="L").save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            out[split].append((city, stem))
    lists = {}
    for name, n in splits:
        chosen = out["train"][:: max(1, n_train // n)][:n]
        (root / "splits" / name).mkdir(parents=True, exist_ok=True)
        (root / "splits" / name / "labeled.txt").write_text(
            "".join(
                f"leftImg8bit/train/{c}/{s}_leftImg8bit.png gtFine/train/{c}/{s}_gtFine_labelTrainIds.png\n"
                for c, s in chosen
            )
        )
        lists[name] = [s for _, s in chosen]
    return {**out, "splits": lists}


def write_folder_tree(
    root: Path,
    classes=("background", "crop", "weed"),
    n_train: int = 16,
    n_val: int = 3,
    size=(18, 18),
    palette: bool = False,
    splits=(("1_4", 4),),
) -> dict:
    """Your own data: classes.txt, images/<id>.png, masks/<id>.png (greyscale or palette ids, 255 ignored),
    splits/val.txt and splits/<name>/labeled.txt (one id per line)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    rng = np.random.default_rng(2)
    ids = [f"field_{i:03d}" for i in range(n_train + n_val)]
    for sid in ids:
        mask = _blocky_mask(
            rng, size, [0, 0, 0, 1, 1, 2][: 2 * len(classes)] if len(classes) == 3 else list(range(len(classes)))
        )
        mask[-1, -1] = 255
        Image.fromarray(_image_for(rng, mask)).save(root / "images" / f"{sid}.png")
        if palette:
            sf.write_palette_png(root / "masks" / f"{sid}.png", mask)
        else:
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{sid}.png")
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    lists = {}
    for name, n in splits:
        (root / "splits" / name).mkdir(exist_ok=True)
        (root / "splits" / name / "labeled.txt").write_text("".join(f"{i}\n" for i in ids[:n]))
        lists[name] = ids[:n]
    return {"train": ids[:n_train], "val": ids[n_train:], "splits": lists}
