"""FARCLUSS data: simulated aerial scenes or a local VOC / Cityscapes / own-folders copy, the class-frequency groups,
the majority-class floor, and the labelled splits (drawn per seed from a fraction, or read from split lists)."""

from __future__ import annotations

import functools
import json
import warnings
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
#: The seed of the random subsets of a real data set's training pool and held-out set (n_train_images, n_val_images).
SUBSET_SEED = 0

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
    train_sizes: np.ndarray | None = None  # each training image's (height, width) in its (padded) canvas, when cropped
    notes: list[str] = field(default_factory=list)  # what was done to the data (crop rounded, images padded)
    crop: int | None = None  # the side of the random crop every training step takes (None: whole images)

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


class ImageSizeNote(UserWarning):
    """``image_size`` changed to a side the model can take."""


@functools.lru_cache(maxsize=8)
def _multiple(arch: str, encoder: str, kwargs: str) -> int:
    model = ss.build_model(2, encoder, arch, 4, weights="random", **json.loads(kwargs))
    return ss.input_multiple(model)


def model_multiple(cfg) -> int:
    """The multiple every input side must be, asked of the network the arms train (random weights, built once)."""
    from .arms import decoder_kwargs

    return _multiple(cfg.arch, cfg.encoder, json.dumps(decoder_kwargs(cfg), sort_keys=True))


def crop_size(cfg) -> tuple[int, str]:
    """The side the model trains and evaluates at: ``image_size``, or the nearest multiple of the model's required
    multiple with a note saying so (DeepLabV3+ ResNet at output stride 16 cannot take the paper's 321)."""
    multiple = model_multiple(cfg)
    size = ss.round_to_multiple(int(cfg.image_size), multiple)
    if size == cfg.image_size:
        return size, ""
    return size, (
        f"image_size {cfg.image_size} is not a multiple of {multiple}, which {cfg.arch} with encoder {cfg.encoder} "
        f"(encoder_depth {cfg.encoder_depth}) requires of its input sides: the study trains and evaluates at "
        f"{size}, the nearest multiple (set image_size {size} to silence this)"
    )


def data(cfg) -> StudyData:
    """Simulated scenes (default), or a local VOC / Cityscapes copy or your own folders (``data_source``,
    ``data_root``); a real source needs an existing ``data_root`` folder (:data:`LAYOUTS` says what it holds).

    Before anything is read, ``image_size`` is checked against the model (:func:`crop_size`). Real images are
    kept whole (training draws a new random crop of the model's side from each at every step); class shares,
    groups and the floor come from the whole masks."""
    check_data_root(cfg, LAYOUTS)
    size, note = crop_size(cfg)
    notes = [note] if note else []
    if note:
        warnings.warn(note, ImageSizeNote, stacklevel=2)
    split_lists: dict[str, list[str]] = {}
    sizes = None
    crop = None
    if cfg.data_source == "simulated":
        side = scene_side(cfg, size)
        scene_cfg = sc.SceneConfig(size=side, resolution=float(cfg.scene_resolution))
        train = sc.simulate_scenes(cfg.n_train_images, seed=10_000, config=scene_cfg, prefix="train")
        val = sc.simulate_scenes(cfg.n_val_images, seed=20_000, config=scene_cfg, prefix="val")
        names, tile = sc.SCENE_CLASSES, None
        if side > size:  # every step takes a new random crop of image_size; held-out scenes are predicted whole
            crop, sizes = size, np.full((len(train), 2), side, dtype=np.int64)
    else:
        from labkit.data import segmentation_folders as sf

        real = sf.load_semisup_folder(
            cfg.data_source,
            cfg.data_root,
            crop=size,
            n_train=cfg.n_train_images,
            n_val=cfg.n_val_images,
            splits=split_names(cfg) if cfg.splits else None,
            seed=SUBSET_SEED,
        )
        train = sc.SceneSet(real.train_images, real.train_masks, real.train_ids, real.class_names)
        val = sc.SceneSet(real.val_images, real.val_masks, real.val_ids, real.class_names)
        names, tile, split_lists, sizes = real.class_names, size, real.split_lists, real.train_sizes
        crop = size
        notes += real.notes or []
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
        sizes,
        notes,
        crop,
    )


def check_config(cfg) -> None:
    """The spec's configure-time check (no arrays, no model): simulated scenes at least as large as the crop."""
    if cfg.data_source == "simulated" and cfg.scene_size is not None and cfg.scene_size < cfg.image_size:
        raise ParameterError(
            f"scene_size {cfg.scene_size} is smaller than image_size {cfg.image_size} (the random crop every training "
            f"step takes from a scene): raise scene_size to at least {cfg.image_size}, or set it null to train on "
            "whole scenes"
        )


def scene_side(cfg, size: int | None = None) -> int:
    """The side of the simulated scenes: ``scene_size``, or the training side (``image_size`` as the model takes
    it) when null; a scene smaller than the training crop is refused."""
    size = crop_size(cfg)[0] if size is None else size
    side = int(cfg.scene_size) if cfg.scene_size is not None else size
    if side < size:
        raise ParameterError(
            f"scene_size {side} is smaller than image_size {size} (the random crop every training step takes from "
            f"a scene): raise scene_size to at least {size}, or set it null to train on whole scenes"
        )
    return side


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
        chosen = covering_draw(data, fraction, seed, float(getattr(cfg, "split_min_share", 0.0) or 0.0))
    if len(chosen) >= len(ids):
        raise DataError(
            f"split {split} labels all {len(ids)} training images: the unlabeled set is empty "
            "(semi-supervised training needs unlabeled images)"
        )
    missing = sc.missing_classes(
        data.train.masks[chosen], data.num_classes, data.class_names, context=f"split {split} seed {seed}"
    )
    return chosen, missing


#: Draws tried before the covering draw settles for the best one (with a warning).
MAX_DRAWS = 1000


def covering_draw(data: StudyData, fraction: float, seed: int, min_share: float) -> list[int]:
    """Indices of a labelled split of ``fraction`` drawn at ``seed``: the plain random draw
    (:func:`labkit.data.scenes.sample_labeled_split`'s) when every class's pixel share in it is at least ``min_share``
    times its share in the whole pool (or ``min_share`` is 0), else the first of further draws of the seed
    (``default_rng((seed, k))``, k = 1, 2, ...) that is; after :data:`MAX_DRAWS` the draw whose smallest
    ratio is largest, with a warning. A seed whose plain draw covers every class keeps it."""
    ids = data.train.ids
    labeled, _ = sc.sample_labeled_split(ids, fraction, seed)
    index = {i: n for n, i in enumerate(ids)}
    chosen = sorted(index[i] for i in labeled)
    if min_share <= 0:
        return chosen
    n_labeled, masks, pool = len(chosen), data.train.masks, data.frequencies
    present = pool > 0

    def ratio(picked) -> float:
        shares = sc.class_frequencies(masks[picked], data.num_classes)
        return float((shares[present] / pool[present]).min()) if present.any() else 1.0

    best, best_ratio = chosen, ratio(chosen)
    for k in range(1, MAX_DRAWS + 1):
        if best_ratio >= min_share:
            return best
        picked = sorted(np.random.default_rng((seed, k)).permutation(len(ids))[:n_labeled].tolist())
        r = ratio(picked)
        if r > best_ratio:
            best, best_ratio = picked, r
    warnings.warn(
        f"no draw of {n_labeled} labelled images (seed {seed}, {MAX_DRAWS} tries) gives every class at least "
        f"{min_share:g} of its pool share (best {best_ratio:.2f}): the split keeps the best draw; lower "
        "split_min_share or raise the fraction",
        sc.SplitCoverageWarning,
        stacklevel=3,
    )
    return best
