"""SAR sea-ice study, its data: the checks the spec cannot express, then the scenes (simulated or read from
``data_root``) and the training and validation tiles every grid task draws from them.

``data_source`` ``simulated`` gives a year of East Greenland scenes per seed and several freeze and melt test scenes,
each with its own weather; ``ai4arctic``, ``geotiff`` and ``extremeearth`` read real scenes from ``data_root``, whose
scene list decides the splits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labkit.core.errors import DataError, ParameterError
from labkit.core.params import check_data_root
from labkit.data import sar
from labkit.data.layouts_sar import sar_layouts
from labkit.data.sar import CLASS_NAMES

NAME = "sar_transfer"
CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
NUM_CLASSES = len(CLASS_NAMES)  # the simulated and sea-ice sources' classes; a geotiff legend sets its own
IN_CHANNELS = 3  # co-pol, cross-pol, incidence angle: the authors' three inputs (sar.network_input)
INITS = ("random", "imagenet", "cross_sensor")
PRETRAINED_ARMS = ("imagenet", "cross_sensor")  # the paper's arm first: it is the headline when evaluated
REFERENCE_ARMS = ("gbm", "majority")
TRAIN_MONTHS = (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)
TEST_MONTHS = {"freeze": 1, "melt": 7}  # the held-out test months of the paper (January, July)
SEASONS = ("freeze", "melt")

OVERSAMPLING_WARNING = 4.0  # a run warns when its data-rich tiles draw each labelled pixel more often on average

ENCODER_DEPTH = 4  # smp stages kept: stem, layer1, layer2, layer3 (layer4 dropped)
OUTPUT_STRIDE = 16  # layer3's stride in an undilated ResNet-18: tiles must be a multiple of it


def check_sizes(scene_size: int, tile: int, val_fraction: float = 0.25) -> None:
    """ParameterError unless a training and a validation tile fit in a scene and the tile suits the network."""
    if tile % OUTPUT_STRIDE:
        raise ParameterError(
            f"tile must be a multiple of {OUTPUT_STRIDE} (the truncated ResNet-18's output stride), got {tile}"
        )
    if scene_size < 2 * tile or scene_size * (1.0 - val_fraction) < tile:
        raise ParameterError(
            f"scene_size {scene_size} is too small for tile {tile}: each training scene must hold a training tile "
            f"above and a validation tile below its lower {val_fraction:.0%} of rows (scene_size >= 2 x tile)"
        )


def check_settings(cfg) -> None:
    """Every check that needs no work, before any: sizes, tiles, the data folder (weights files: the spec).

    At the ``paper`` preset without ``data_root`` this stops at once, naming the dataset, the folder layout
    and where it is published.
    """
    source = cfg["data_source"]
    root = check_data_root(cfg, sar_layouts(docs="docs/data/sar_transfer.md"))
    check_sizes(cfg["scene_size"], cfg["tile"], cfg["val_fraction"])
    tiles = list(cfg["tiles"])
    if len(set(tiles)) < 2 or min(tiles) < 1:
        raise ParameterError(
            f"parameter 'tiles' needs at least two distinct positive training-tile counts (the "
            f"fewest is the data-limited regime the claims are judged in), got {tiles}"
        )
    unknown = [i for i in cfg["inits"] if i not in INITS]
    if unknown or "random" not in cfg["inits"]:
        raise ParameterError(
            f"parameter 'inits': {unknown or cfg['inits']} must name arms of {INITS} and include random (the reference)"
        )
    if cfg["sar_bands"] is not None and source != "geotiff":
        raise ParameterError("parameter 'sar_bands' names the bands of GeoTIFF scenes (data_source geotiff)")
    if root is not None:
        sar.read_scene_list(root, source)  # the list and its files, before any work


def data_settings(cfg) -> dict[str, Any]:
    """The JSON-able data parameters a grid task needs to build its data."""
    root = cfg["data_root"]
    return {
        "data_source": cfg["data_source"],
        "data_root": str(Path(root).expanduser().resolve()) if root else None,
        "sar_bands": list(cfg["sar_bands"]) if cfg["sar_bands"] else None,
        "scene_size": cfg["scene_size"],
        "tile": cfg["tile"],
        "val_fraction": cfg["val_fraction"],
        "n_val_tiles": cfg["n_val_tiles"],
        "looks": cfg["looks"],
        "n_test_scenes": cfg["n_test_scenes"],
        "train_scenes_per_month": cfg["train_scenes_per_month"],
        "max_tiles": max(cfg["tiles"]),
        "standardisation": cfg["standardisation"],
    }


@dataclasses.dataclass
class SarData:
    """One seed's scenes: training (and validation) scenes, test scenes, the input normaliser (co-pol, cross-pol,
    incidence angle). Class and band names are the data's (a geotiff folder's legend, its polarisations)."""

    train_scenes: list[sar.SarScene]
    val_scenes: list[sar.SarScene]
    test_scenes: list[sar.SarScene]
    normalizer: sar.BandNormalizer
    source: str

    @property
    def scenes(self) -> list[sar.SarScene]:
        return self.train_scenes + self.val_scenes + self.test_scenes

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.train_scenes[0].class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def band_names(self) -> tuple[str, ...]:
        """The two polarisations (co-pol, cross-pol) as the data names them, e.g. ("VV", "VH")."""
        return tuple(self.train_scenes[0].band_names)

    @property
    def input_names(self) -> tuple[str, ...]:
        return (*self.band_names, "incidence angle")


def normalizer(settings: Mapping, train: list[sar.SarScene]) -> sar.BandNormalizer:
    """The input standardisation (``standardisation``): the authors' statistics as published, or the same
    statistics computed on the training scenes."""
    if settings.get("standardisation") == "authors":
        s = sar.AUTHORS_STANDARDISATION
        return sar.BandNormalizer.fixed(s["mean"], s["std"], f"the authors' statistics ({s['source']})")
    return sar.BandNormalizer().fit(train)


def _simulated(settings: Mapping, seed: int) -> SarData:
    size, looks = settings["scene_size"], settings["looks"]
    # each training month: ``train_scenes_per_month`` scenes, each its own weather draw (the first keeps the seed)
    train = [
        sar.simulate_scene(m, size=size, seed=(seed,) if k == 0 else (seed, 2000 + k), looks=looks)
        for m in TRAIN_MONTHS
        for k in range(settings.get("train_scenes_per_month", 1))
    ]
    test = []
    for season, month in TEST_MONTHS.items():
        for k in range(settings["n_test_scenes"]):  # each its own wind and weather draw
            scene = sar.simulate_scene(month, size=size, seed=(seed, 1000 + k), looks=looks, name=f"{season}_{k + 1}")
            scene.meta["season"] = season
            test.append(scene)
    return SarData(train, [], test, normalizer(settings, train), "simulated")


def _real(settings: Mapping) -> SarData:
    source, root = settings["data_source"], Path(settings["data_root"])
    entries = sar.read_scene_list(root, source)
    scenes = {"train": [], "val": [], "test": []}
    first = None
    for entry in entries:
        scene = sar.load_scene(entry, source, settings.get("sar_bands"), root=root)
        sar.fill_missing_incidence(scene, str(entry.file))
        sar.check_tile_fits(scene, settings["tile"])
        first = first or (entry.file, scene)
        for what in ("band_names", "class_names"):
            if tuple(getattr(scene, what)) != tuple(getattr(first[1], what)):
                raise DataError(
                    f"{entry.file}: its {what.replace('_', ' ')} {list(getattr(scene, what))} differ from "
                    f"{first[0]}'s {list(getattr(first[1], what))}; every scene of a run must share them"
                )
        scenes[entry.split].append(scene)
    test = [s for s in scenes["test"] if s.season in SEASONS]
    return SarData(scenes["train"], scenes["val"], test, normalizer(settings, scenes["train"]), source)


@functools.lru_cache(maxsize=2)
def _cached_data(key: str) -> SarData:
    settings = json.loads(key)
    seed = settings.pop("_seed")
    if settings["data_source"] == "simulated":
        return _simulated(settings, seed)
    return _real(settings)


def make_data(settings: Mapping, seed: int) -> SarData:
    """The scenes of ``seed`` (simulated: each seed its own year; real: the same scenes for every seed)."""
    key = dict(settings)
    key["_seed"] = int(seed) if settings["data_source"] == "simulated" else 0
    return _cached_data(json.dumps(key, sort_keys=True))


def _val_split(data: SarData, settings: Mapping) -> float:
    """Fraction of rows of each training scene used for training tiles (the rest: validation)."""
    if data.val_scenes:
        return 1.0
    tile = settings["tile"]
    return 1.0 - max(settings["val_fraction"], tile / min(s.shape[0] for s in data.train_scenes))


def training_tiles(
    data: SarData, settings: Mapping, seed: int, n_tiles: int, coverage: bool = False
) -> tuple[np.ndarray, ...]:
    """The first ``n_tiles`` of one seeded draw of ``max_tiles`` tiles: fewer tiles are a subset of more. With
    ``coverage`` a third item says how much distinct area they come from (``sar.tile_coverage``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    rows = (0.0, _val_split(data, settings))
    images, masks, where = sar.sample_tiles(
        data.train_scenes,
        data.normalizer,
        settings["tile"],
        max(settings["max_tiles"], n_tiles),
        rng,
        rows=rows,
        positions=True,
    )
    if not coverage:
        return images[:n_tiles], masks[:n_tiles]
    return (
        images[:n_tiles],
        masks[:n_tiles],
        sar.tile_coverage(data.train_scenes, where[:n_tiles], settings["tile"], rows),
    )


def validation_tiles(data: SarData, settings: Mapping, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation tiles: a fixed seeded subset of ``n_val_tiles`` of the val scenes' tiles (or of the lower rows of
    the training scenes), the same for every arm; more than they hold is a ParameterError."""
    if data.val_scenes:
        images, masks = sar.grid_tiles(data.val_scenes, data.normalizer, settings["tile"])
    else:
        images, masks = sar.grid_tiles(
            data.train_scenes, data.normalizer, settings["tile"], rows=(_val_split(data, settings), 1.0)
        )
    n = settings["n_val_tiles"]
    if n > len(images):
        where = (
            "validation scenes"
            if data.val_scenes
            else f"lower {1 - _val_split(data, settings):.0%} of the training scenes"
        )
        raise ParameterError(
            f"parameter 'n_val_tiles' {n} is more than the {len(images)} labelled {settings['tile']} px validation "
            f"tiles the {where} hold; set n_val_tiles to at most {len(images)}"
        )
    if len(images) > n:
        keep = np.sort(
            np.random.default_rng(np.random.SeedSequence([int(seed), 11])).choice(len(images), n, replace=False)
        )
        images, masks = images[keep], masks[keep]
    return images, masks


def data_inputs(cfg) -> dict[str, str]:
    """Digests of the real data a grid reads (part of every task's fingerprint)."""
    from labkit.core.grid import file_digest

    if cfg["data_source"] == "simulated":
        return {}
    return {"data_root": file_digest(Path(cfg["data_root"]).expanduser())}


def data(cfg) -> SarData:
    """The first seed's scenes (the notebook's figures); checks every setting first, before any work (the
    validation subset against the validation tiles the scenes hold, too)."""
    check_settings(cfg)
    settings = data_settings(cfg)
    first = make_data(settings, cfg["seeds"][0])
    validation_tiles(first, settings, cfg["seeds"][0])
    return first
