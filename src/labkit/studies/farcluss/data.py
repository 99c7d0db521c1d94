"""FARCLUSS data: simulated aerial scenes or a local VOC / Cityscapes / own-folders copy, the class-frequency groups,
the majority-class floor, and the labelled splits (drawn per seed from a fraction, or read from split lists)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labkit.core.errors import DataError, ParameterError
from labkit.core.params import check_data_root
from labkit.data import scenes as sc
from labkit.data.layouts_segmentation import semisup_layouts
from labkit.methods import semisup as ss

NAME = "farcluss"
ALL_LABELS = "all"
GROUPS = ("head", "body", "tail")

#: What each real source's data_root holds (quoted when data_root is missing or wrong).
LAYOUTS = semisup_layouts("docs/data/farcluss.md")


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


def majority_floor(train_masks: np.ndarray, val_masks: np.ndarray, class_names) -> float:
    """mIoU of the trivial predictor: the most frequent training class everywhere (the table's floor)."""
    freqs = sc.class_frequencies(train_masks, len(class_names))
    pred = np.full(val_masks.shape, int(np.argmax(freqs)), dtype=np.int64)
    return float(ss.score_predictions(pred, val_masks, class_names)["miou"])


def data(cfg) -> StudyData:
    """Simulated scenes (default), or a local VOC / Cityscapes copy or your own folders (``data_source``,
    ``data_root``); a real source needs an existing ``data_root`` folder (:data:`LAYOUTS` says what it holds)."""
    check_data_root(cfg, LAYOUTS)
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
