"""FARCLUSS data: simulated aerial scenes or a local VOC / Cityscapes / own-folders copy, the class-frequency groups,
the majority-class floor, and the labelled splits (drawn per seed from a fraction, or read from split lists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labkit.core.errors import DataError, ParameterError
from labkit.data import scenes as sc
from labkit.methods import semisup as ss

NAME = "farcluss"
ALL_LABELS = "all"
GROUPS = ("head", "body", "tail")
REAL_SOURCES = ("voc", "cityscapes", "folders")

DATASET_HELP = {
    "voc": (
        "Pascal VOC 2012 train_aug (10,582 training images: VOC 2012 merged with SBD's masks) with the "
        "semi-supervised split lists. Expected layout under data_root:\n"
        "  JPEGImages/<id>.jpg\n"
        "  SegmentationClass/<id>.png        train_aug masks (SegmentationClassAug), palette or greyscale ids, "
        "255 = ignore\n"
        "  splits/val.txt                    the 1,449 validation ids\n"
        "  splits/1_16/labeled.txt ...       1_16, 1_8, 1_4, 1_2 (662 / 1323 / 2646 / 5291 ids; blended) and "
        "92, 183, 366, 732, 1464 (classic)\n"
        "  splits/<split>/unlabeled.txt      optional (default: the rest of splits/train_aug.txt or of the "
        "labelled+unlabeled ids)\n"
        "Published at: VOC 2012 http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ , SBD "
        "http://home.bharathh.info/pubs/codes/SBD/download.html (merged as SegmentationClassAug), split lists "
        "https://github.com/LiheYoung/UniMatch/tree/main/splits/pascal (see docs/data/farcluss.md)"
    ),
    "cityscapes": (
        "Cityscapes fine annotations (2,975 training, 500 validation images) with the semi-supervised split "
        "lists. Expected layout under data_root:\n"
        "  leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png\n"
        "  gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png\n"
        "  splits/1_16/labeled.txt ...       1_16, 1_8, 1_4, 1_2 (186 / 372 / 744 / 1488 images), lines "
        "'<image path> <mask path>' or names\n"
        "Published at: https://www.cityscapes-dataset.com/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip), "
        "split lists https://github.com/LiheYoung/UniMatch/tree/main/splits/cityscapes (see docs/data/farcluss.md)"
    ),
    "folders": (
        "your own images and masks. Expected layout under data_root:\n"
        "  classes.txt                       one class name per line, in id order\n"
        "  images/<id>.png|.jpg|.tif\n"
        "  masks/<id>.png                    palette or greyscale class ids, 255 = ignore\n"
        "  splits/val.txt                    held-out ids\n"
        "  splits/<split>/labeled.txt        optional labelled lists (else drawn per seed from the fractions)\n"
        "(see docs/data/farcluss.md)"
    ),
}


@dataclass
class StudyData:
    train: sc.SceneSet
    val: sc.SceneSet
    class_names: tuple[str, ...]
    frequencies: np.ndarray
    groups: dict[str, str]
    val_band: np.ndarray
    source: str
    tile: int | None = None
    head_min: float = 0.15
    tail_max: float = 0.02
    split_lists: dict[str, list[str]] = field(default_factory=dict)  # split name -> labelled ids (from files)
    floor_miou: float = 0.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tail_classes(self) -> list[str]:
        return [c for c in self.class_names if self.groups[c] == "tail"]


def check_inputs(cfg) -> None:
    """Stop before any work when the data cannot be found: a real ``data_source`` needs ``data_root`` (the
    message names the dataset, its layout and where it is published); a given root must exist."""
    if cfg.data_source in REAL_SOURCES:
        if not cfg.data_root:
            raise ParameterError(
                f"data_source={cfg.data_source!r} needs data_root: the folder of {DATASET_HELP[cfg.data_source]}"
            )
        if not Path(cfg.data_root).expanduser().is_dir():
            raise ParameterError(
                f"parameter data_root={cfg.data_root!r} is not an existing folder "
                f"(data_source={cfg.data_source!r} expects {DATASET_HELP[cfg.data_source]})"
            )
    weights = str(cfg.encoder_weights)
    if (
        weights not in ("random", "pretrained")
        and not weights.startswith("labkit:")
        and not Path(weights).expanduser().is_file()
    ):
        raise ParameterError(
            f"parameter encoder_weights={weights!r} is neither random, pretrained, labkit:<name> "
            "nor an existing checkpoint file"
        )


def majority_floor(train_masks: np.ndarray, val_masks: np.ndarray, class_names) -> float:
    """mIoU of the trivial predictor: the most frequent training class everywhere (the table's floor)."""
    freqs = sc.class_frequencies(train_masks, len(class_names))
    pred = np.full(val_masks.shape, int(np.argmax(freqs)), dtype=np.int64)
    return float(ss.score_predictions(pred, val_masks, class_names)["miou"])


def data(cfg) -> StudyData:
    """Simulated scenes (default), or a local VOC / Cityscapes copy or your own folders (``data_source``,
    ``data_root``); checks the inputs first (:func:`check_inputs`)."""
    check_inputs(cfg)
    split_lists: dict[str, list[str]] = {}
    if cfg.data_source == "simulated":
        scene_cfg = sc.SceneConfig(size=cfg.image_size)
        train = sc.simulate_scenes(cfg.n_train_images, seed=10_000, config=scene_cfg, prefix="train")
        val = sc.simulate_scenes(cfg.n_val_images, seed=20_000, config=scene_cfg, prefix="val")
        names, tile = sc.SCENE_CLASSES, None
    else:
        from labkit.data import segmentation_folders as sf

        real = sf.load_semisup_folder(
            cfg.data_source,
            cfg.data_root,
            crop=cfg.image_size,
            n_train=cfg.n_train_images,
            n_val=cfg.n_val_images,
            splits=split_names(cfg) if cfg.splits else None,
        )
        train = sc.SceneSet(real.train_images, real.train_masks, real.train_ids, real.class_names)
        val = sc.SceneSet(real.val_images, real.val_masks, real.val_ids, real.class_names)
        names, tile, split_lists = real.class_names, cfg.image_size, real.split_lists
    freqs = sc.class_frequencies(train.masks, len(names))
    groups = sc.frequency_groups(freqs, names, head_min=cfg.head_min_fraction, tail_max=cfg.tail_max_fraction)
    band = sc.boundary_band(val.masks, width=1)
    return StudyData(
        train,
        val,
        tuple(names),
        freqs,
        groups,
        band,
        cfg.data_source,
        tile,
        cfg.head_min_fraction,
        cfg.tail_max_fraction,
        split_lists,
        majority_floor(train.masks, val.masks, names),
    )


def split_names(cfg) -> list[str]:
    """The labelled splits of the main table: ``splits`` (folder names under data_root/splits/) or the
    ``fractions``' names (``0.0625 -> 1_16``)."""
    if cfg.splits:
        return [str(s) for s in cfg.splits]
    return [sc.fraction_name(f) for f in sorted(cfg.fractions)]


def ablation_split(cfg) -> str:
    if cfg.splits:
        return str(cfg.ablation_split) if cfg.ablation_split else str(cfg.splits[0])
    return sc.fraction_name(cfg.ablation_fraction)


def split_fraction(name: str) -> float | None:
    if name == ALL_LABELS:
        return 1.0
    if "_" in name:
        num, den = name.split("_", 1)
        return int(num) / int(den)
    return None


def labelled_indices(cfg, data: StudyData, split: str, seed: int) -> tuple[list[int], list[str]]:
    """Indices into ``data.train`` of the labelled images of ``split`` at ``seed``, and the classes without
    any labelled pixel (warned). Split lists read from data_root are the same at every seed; otherwise the
    split is drawn per seed from its fraction."""
    ids = data.train.ids
    if split == ALL_LABELS:
        return list(range(len(ids))), []
    if split in data.split_lists:
        index = {i: n for n, i in enumerate(ids)}
        chosen = sorted(index[i] for i in data.split_lists[split])
    else:
        fraction = split_fraction(split)
        if fraction is None:
            raise ParameterError(
                f"split {split!r} is neither a fraction name like 1_16 nor a list under data_root/splits/"
            )
        labeled, _ = sc.sample_labeled_split(ids, fraction, seed)
        index = {i: n for n, i in enumerate(ids)}
        chosen = sorted(index[i] for i in labeled)
    if len(chosen) >= len(ids):
        raise DataError(
            f"split {split} labels all {len(ids)} training images: the unlabeled set is empty "
            "(semi-supervised training needs unlabeled images)"
        )
    missing = sc.missing_classes(
        data.train.masks[chosen], data.num_classes, data.class_names, context=f"split {split} seed {seed}"
    )
    return chosen, missing
