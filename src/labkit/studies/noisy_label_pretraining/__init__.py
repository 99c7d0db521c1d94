"""Task-specific pretraining with noisy labels for remote-sensing segmentation.

Reproduces the design of Liu, Albrecht, Wang and Zhu (IGARSS 2024, arXiv 2402.16164) over labkit, in the
kit's study order (data, the grid's tasks, claims, tables, figures):

1. **Data** (:func:`make_data`): simulated multispectral land-cover tiles (:mod:`labkit.data.landcover`) or the
   user's GeoTIFF tiles (``data_source=geotiff``: ``images/``, ``labels_noisy/``, ``labels_clean/`` and a legend),
   split per seed into a pretraining pool (noisy labels), a fine-tuning pool, validation and test tiles (clean).
2. **Pretraining** (grid ``noisy_label_pretraining-pretrain``): per seed, one initial U-Net (ResNet encoder, depth
   matched to the tile) pretrained on the clean labels, on the clean labels **in another data order** (the null of
   the layer-wise measure), and on noisy labels at each severity of the sweep. Each is a cached task; its weights
   go to a file whose digest enters every fine-tuning task's fingerprint.
3. **Fine-tuning** (grid ``noisy_label_pretraining-finetune``): init x k x seed; every run on k tiles trains for
   the steps measured for random initialisation to plateau on k tiles (validation mIoU along training is recorded
   and checked), from the same decoder initialisation and data order. Extra ``regime_seeds`` run random init at the
   fewest and the most tiles for the label-limited precondition. The floor (the most frequent class everywhere) and
   a per-pixel QDA (the classical reference) are rows of the same tables.
   **Probes** (grid ``noisy_label_pretraining-probe``): per claim seed, the main noisy-pretrained encoder and the
   same U-Net's random-init encoder, frozen, each read out by a linear per-pixel head
   (:class:`tasks.LinearProbe`) trained ``probe_steps`` steps on the fewest clean tiles of task A: the ``probes``
   table that the "features learned" precondition of claims 1, 2 and 4 reads.
4. **Claims** (:func:`declare_claims`, :func:`claim_tables`), judged by :mod:`labkit.core.claims` with the
   preconditions that make them testable: label-limited, plateau, headroom (clean pretraining itself beats random
   init), trained (on clean validation labels, against the best class prior), features learned (the noisy-pretrained
   encoder's frozen linear probe beats the random-init one's), same budget (every trained run's
   record carries its budget: the ``budgets`` table), above the floor, null available, size-free estimator.
5. The layer-wise measure (:func:`labkit.methods.weight_analysis.layerwise_divergence`): per layer, KL between
   weight histograms of **equal-size subsamples** with bins fixed in units of the layer's initial standard
   deviation, so its finite-sample floor is the same for every layer; the clean-vs-noisy value minus the
   clean-vs-clean (other data order) null is the null-corrected excess that claim 3 is judged on.

The pretrained encoder of the first seed is saved as the named labkit checkpoint ``noisy-pretrained-unet-r18``
(a full-depth ResNet-18 encoder state dict, consumed by the SAR study).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labkit.core.claims import BUDGET_KEYS, Check, Claim, Compare, Precondition, missing_budget
from labkit.core.errors import DataError, ParameterError, WeightsUnavailableError
from labkit.core.metrics import aggregate_over_seeds
from labkit.core.stats import paired_by_index
from labkit.data import label_noise, landcover
from labkit.methods import weight_analysis
from labkit.methods.training import evaluate, fit  # noqa: F401  (re-exported for callers)
from labkit.studies.noisy_label_pretraining.tasks import (  # noqa: F401  (the grid's tasks and their helpers)
    PLATEAU_FRACTION,
    _labels,
    _load_arrays,
    _loader,
    _model_from,
    build_model,
    check_bands,
    decoder_channels,
    encoder_state,
    finetune_task,
    full_state,
    late_gain,
    model_in_channels,
    pretrain_task,
    probe_task,
    qda_task,
    score,
    train,
    trivial_loss,
)

STUDY = "noisy_label_pretraining"
CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
DEFAULT_NOISE = ("boundary", "misregistration", "flips", "omission", "coarse")
INITS = ("random", "noisy_encoder", "noisy_full", "clean_full", "imagenet")
#: Rows of the results that are references (no fine-tuning): the classical model and the floor.
REFERENCE_ROWS = ("qda", "majority")
INIT_LABELS = {
    "random": "random initialisation",
    "noisy_encoder": "noisy-pretrained encoder, new decoder",
    "noisy_full": "noisy-pretrained encoder + decoder",
    "clean_full": "clean-pretrained encoder + decoder (upper bound)",
    "clean_encoder": "clean-pretrained encoder, new decoder",
    "imagenet": "encoder_weights encoder (ImageNet by default)",
    "qda": "per-pixel QDA on the k clean tiles (classical reference)",
    "majority": "most frequent class of the k tiles everywhere (floor)",
}
TASK_A, TASK_B = "lulc", "structure"
IGNORE_INDEX = landcover.IGNORE_INDEX
#: Initialisations run at the fewest tiles only: claim 2 reads the fresh-decoder arm there and the headroom
#: precondition the clean upper bound; at more tiles every initialisation converges (measured: all within 0.015 mIoU
#: at k=32, where random init on 8x the tiles is the label-rich reference), so those runs would only cost time.
FEWEST_TILES_ONLY = ("noisy_encoder", "clean_full")
DATA_SOURCES = ("simulated", "geotiff", "noldo_s12")
LEGEND_FILES = ("legend.json", "legend.csv")
#: "trained" precondition: clean validation cross-entropy of a pretrained network over that of the best
#: learner-free predictor: the class prior of its training labels, of the same tiles' clean labels or the uniform one,
#: whichever is best on the clean validation tiles (:func:`tasks.clean_validation_losses`).
TRAINED_MAX_RATIO = 0.8
#: "features learned" precondition: the frozen linear probe's steps when the preset names none, and its learning
#: rate (a linear head on fixed features takes a larger step than fine-tuning a whole network).
PROBE_STEPS = 100
PROBE_LR = 1e-2
#: "above the floor" precondition: every compared arm beats the most frequent class everywhere by this mIoU.
FLOOR_MARGIN = 0.02
#: Noisy severities (above 0) the noise-sweep claim needs; clean pretraining is a reference, never a level.
MIN_SWEEP_LEVELS = 3
#: What each data source is, where it is published and the folder layout the loader expects.
DATASETS = {
    "geotiff": (
        "your own GeoTIFF tiles",
        "your own data",
        "DATA_ROOT/images/<name>.tif, DATA_ROOT/labels_noisy/<name>.tif, DATA_ROOT/labels_clean/<name>.tif "
        '(same names, same grid) and DATA_ROOT/legend.json ({"<label value>": "<class>"}) or legend.csv',
    ),
    "noldo_s12": (
        "NoLDO-S12 (SSL4EO-S12@NoL noisy Dynamic World / OSM labels and SSL4EO-S12@DW exact labels; Liu et "
        "al., CromSS, IEEE TGRS 2025)",
        "https://huggingface.co/datasets/vikki23/NoLDO-S12 (MIT; code at https://github.com/zhu-xlab/CromSS)",
        "the geotiff layout: DATA_ROOT/images/<name>.tif (Sentinel-2 bands), DATA_ROOT/labels_noisy/<name>.tif "
        "(the NoL noisy labels), DATA_ROOT/labels_clean/<name>.tif (the DW exact labels, same grid) and "
        "DATA_ROOT/legend.json, placed from ssl4eo_s12_nol.zip / ssl4eo_s12_dw.zip (their inner layout is not "
        "documented and the noisy labels are on a coarser grid, which labkit never resamples: see "
        "docs/data/noisy_label_pretraining.md)",
    ),
}


# ---------------------------------------------------------------------------------------------------
# Model and training helpers
# ---------------------------------------------------------------------------------------------------


#: Sentinel-2 bands that ImageNet's red, green and blue input filters belong to.
IMAGENET_RGB_BANDS = ("B04", "B03", "B02")


def imagenet_encoder_state(
    num_classes: int, encoder: str, bands: Sequence[str], decoder_width: int, encoder_depth: int = 5
) -> dict:
    """Encoder state dict (``encoder.*`` keys) with ImageNet weights, its first convolution fitted to ``bands``.

    Each of B04, B03, B02 gets the filter of its own colour, any other band (NIR, red edge, SWIR) the mean of the
    three, all scaled by 3 / bands (timm's rule). Raises WeightsUnavailableError when the weights cannot be had:
    they are never replaced by random ones.
    """
    bands = list(bands)
    rgb = build_model(num_classes, encoder, 3, decoder_width, weights="pretrained", seed=0, encoder_depth=encoder_depth)
    state = {f"encoder.{k}": v.detach().clone() for k, v in rgb.encoder.state_dict().items()}
    stem = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
    w = state[stem]
    mean = w.mean(dim=1, keepdim=True)
    columns = [w[:, IMAGENET_RGB_BANDS.index(b)][:, None] if b in IMAGENET_RGB_BANDS else mean for b in bands]
    state[stem] = torch.cat(columns, dim=1) * (3.0 / len(bands))
    return state


def _unavailable_reason(exc: Exception, encoder: str) -> str:
    """One line for tables and titles that says what to do."""
    from labkit.models.backbones import timm_name

    text = str(exc).strip()
    if "are not available" in text:
        return (
            f"weights unavailable: no {timm_name(encoder)} ImageNet weights on this machine (no local file, no "
            "Hugging Face cache, hub offline); put the timm weights file in LABKIT_WEIGHTS_DIR or pass "
            "encoder_weights=<file>; never replaced by random weights"
        )
    return f"weights unavailable: {text.splitlines()[0] if text else type(exc).__name__}"


def band_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over a tile stack (N, C, H, W), ignoring NaN."""
    mean = np.nanmean(images, axis=(0, 2, 3))
    std = np.nanstd(images, axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    return ((images - np.asarray(mean)[None, :, None, None]) / np.asarray(std)[None, :, None, None]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Data: simulated, or the user's GeoTIFF tiles
# ---------------------------------------------------------------------------------------------------


def noisy_labels(
    tiles: landcover.LandcoverTiles | None,
    clean: np.ndarray,
    noise_models: Sequence[str],
    severity: float,
    seed: int,
    num_classes: int,
) -> np.ndarray:
    """``clean`` corrupted by the composite of ``noise_models`` at ``severity`` (0 returns a copy)."""
    if severity == 0:
        return clean.copy()
    model = label_noise.make_noise(list(noise_models), severity, num_classes)
    context = {}
    if "sensor_rule" in noise_models:
        if tiles is None:
            raise ParameterError("noise_models: 'sensor_rule' needs a surface height, which real tiles lack")
        context = {"height": tiles.height, "ndvi": tiles.ndvi()}
    return label_noise.apply_noise(model, clean, seed=seed, **context)


def simulate_noisy_pool(
    n_tiles: int,
    tile: int,
    seed: int,
    noise_models: Sequence[str],
    severity: float,
    bands=landcover.NIRRGB,
    task: str = TASK_A,
    progress: bool = False,
):
    """Simulated tiles, their clean and noisy ``task`` labels, and the measured pixel noise rate."""
    tiles = landcover.LandscapeSimulator(tile, bands=bands).sample(n_tiles, seed=seed, progress=progress)
    clean = tiles.labels(task)
    num_classes = len(landcover.task_legend(task)[0])
    noisy = noisy_labels(tiles, clean, noise_models, severity, seed, num_classes)
    return tiles, clean, noisy, label_noise.noise_rate(clean, noisy)


def label_key(severity: float | None) -> str:
    """Name of a pretraining label set: ``clean``, ``sev0p3`` (synthetic noise at 0.3) or ``real`` (labels_noisy)."""
    if severity is None:
        return "real"
    return "clean" if float(severity) == 0 else "sev" + f"{float(severity):g}".replace(".", "p")


def main_noisy_key(cfg) -> str:
    """The label set of the main noisy pretraining: the real noisy labels, or synthetic noise at noise_severity."""
    return "real" if _cfg(cfg, "data_source", "simulated") != "simulated" else label_key(_cfg(cfg, "noise_severity"))


def sweep_levels(cfg) -> list[float]:
    """Noisy severities of the sweep (> 0; the main severity of simulated data included)."""
    levels = {float(v) for v in _cfg(cfg, "noise_levels")}
    if _cfg(cfg, "data_source", "simulated") == "simulated":
        levels.add(float(_cfg(cfg, "noise_severity")))
    return sorted(levels - {0.0})


def all_seeds(cfg) -> list[int]:
    """Every seed with data: ``seeds`` (every arm) first, then the extra ``regime_seeds`` (random initialisation at
    the fewest and the most tiles only: the label-limited precondition's runs)."""
    return list(dict.fromkeys([int(s) for s in _cfg(cfg, "seeds")] + [int(s) for s in _cfg(cfg, "regime_seeds") or []]))


def finetune_steps(cfg) -> list[int]:
    """``finetune_steps`` as a list (a single number is one count for every k)."""
    steps = _cfg(cfg, "finetune_steps")
    return [int(steps)] if isinstance(steps, (int, np.integer)) else [int(v) for v in steps]


def steps_for_k(steps: Sequence[int], k_values: Sequence[int], k: int) -> int:
    """Fine-tuning steps on ``k`` tiles: ``steps`` (from :func:`finetune_steps`) holds one count per entry of
    ``k_values`` (paired in their order) or one count for every k; a k between two entries (task B, a sweep k)
    interpolates linearly in log k, and one outside takes the nearest end's count."""
    if len(steps) == 1:
        return steps[0]
    ks = np.log(sorted(int(v) for v in k_values))
    return int(round(float(np.interp(np.log(int(k)), ks, [steps[i] for i in np.argsort(list(k_values))]))))


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
    int64 task ids, 255 = no data), "classes", "bands", "nodata_pixels"}``. Raises DataError naming the tile for: a
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


def _cfg(cfg, name, default=None):
    return cfg.get(name, default) if isinstance(cfg, Mapping) else getattr(cfg, name, default)


def check_data_parameters(cfg) -> None:
    """Stop before any work when the data source cannot be read: a named dataset without data_root, or a path
    that does not exist (errors name the parameter, the dataset, its layout and where it is published)."""
    source = _cfg(cfg, "data_source", "simulated")
    root = _cfg(cfg, "data_root")
    if source not in DATA_SOURCES:
        raise ParameterError(f"parameter 'data_source' must be one of {', '.join(DATA_SOURCES)}, got {source!r}")
    if source != "simulated":
        dataset, where, layout = DATASETS[source]
        if not root:
            raise ParameterError(
                f"data_source={source!r} ({dataset}) needs data_root: a local folder laid out as "
                f"{layout}. Published at {where}. See docs/data/noisy_label_pretraining.md."
            )
        if not Path(root).is_dir():
            raise ParameterError(
                f"parameter 'data_root': {root} does not exist (data_source={source!r}, {dataset}; "
                f"expected layout: {layout})"
            )
    weights = str(_cfg(cfg, "encoder_weights", "pretrained") or "pretrained")
    if weights not in ("random", "pretrained") and not weights.startswith("labkit:") and not Path(weights).exists():
        raise ParameterError(
            f"parameter 'encoder_weights': {weights} does not exist (random, pretrained, a file path or labkit:<name>)"
        )


@dataclasses.dataclass
class StudyData:
    """One prepared data file per seed (normalised tiles and every label set), with what the report says of it."""

    source: str
    files: dict  # seed -> {"path", "digest"}
    classes_a: list
    classes_b: list | None  # None: the data have one class definition (no second task)
    bands: list
    summary: dict  # per seed: tiles per split, pixel noise rate per label set, no-data pixels
    examples: object = None  # LandcoverTiles of the first seed (simulated) for the data figures


def _data_dir() -> Path:
    from labkit.core.paths import cache_dir

    return cache_dir(f"{STUDY}/data")


def _save_arrays(arrays: dict, recipe: dict) -> dict:
    from labkit.core.grid import file_digest

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = _data_dir() / f"{key}.npz"
    if not path.exists():
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return {"path": str(path), "digest": file_digest(path)}


def _split_sizes(cfg) -> dict:
    return {
        "pretrain": int(_cfg(cfg, "n_pretrain_tiles")),
        "finetune": max(int(k) for k in _cfg(cfg, "k_values") + [_cfg(cfg, "task_b_k")]),
        "val": int(_cfg(cfg, "n_val_tiles")),
        "test": int(_cfg(cfg, "n_test_tiles")),
    }


def make_data(cfg, progress: bool = False) -> StudyData:
    """Simulate or load the tiles of every seed and write one prepared file per seed (cached by its recipe).

    ``data_source=simulated``: each seed simulates its own pretraining, fine-tuning, validation and test tiles and
    corrupts the pretraining labels at every severity of the sweep. ``geotiff`` / ``noldo_s12``: the tree under
    ``data_root`` is read and checked in full first (errors name the tile), cut into ``tile`` chips, split per seed
    by tile (chips of one tile stay in one split); the main noisy labels are the tree's ``labels_noisy``, the sweep
    corrupts its clean labels with the synthetic noise models.
    """
    check_data_parameters(cfg)
    validate_settings(cfg)
    source = _cfg(cfg, "data_source", "simulated")
    tile, seeds = int(_cfg(cfg, "tile")), all_seeds(cfg)
    noise_models, levels = list(_cfg(cfg, "noise_models")), sweep_levels(cfg)
    sizes = _split_sizes(cfg)
    classes_a = list(landcover.task_legend(TASK_A)[0])
    classes_b: list | None = list(landcover.task_legend(TASK_B)[0])
    files, summary, examples = {}, {}, None
    if source == "simulated":
        bands = list(_cfg(cfg, "bands"))
        sim = landcover.LandscapeSimulator(tile, bands=bands)
        for seed in seeds:
            base = 1000 * seed
            recipe = {
                "source": source,
                "tile": tile,
                "bands": bands,
                "seed": seed,
                "sizes": sizes,
                "noise_models": noise_models,
                "levels": levels,
                "version": 2,
            }
            split = {name: sim.sample(n, seed=base + i + 1) for i, (name, n) in enumerate(sizes.items())}
            if examples is None:
                examples = split["finetune"].subset(slice(0, 4))
            mean, std = band_statistics(split["pretrain"].images)
            arrays = {f"x_{name}": normalise(t.images, mean, std) for name, t in split.items()}
            for name, t in split.items():
                arrays[f"a_{name}"] = t.labels(TASK_A)
                arrays[f"b_{name}"] = t.labels(TASK_B)
            clean = arrays["a_pretrain"]
            rates = {"clean": 0.0}
            for level in levels:
                noisy = noisy_labels(split["pretrain"], clean, noise_models, level, base + 5, len(classes_a))
                arrays[f"a_pretrain_{label_key(level)}"] = noisy
                rates[label_key(level)] = label_noise.noise_rate(clean, noisy)
            arrays["norm"] = np.stack([mean, std])
            files[seed] = _save_arrays(arrays, recipe)
            summary[seed] = {
                "tiles": {k: int(v) for k, v in sizes.items()},
                "pixel_noise_rate": rates,
                "nodata_pixels": 0,
            }
        return StudyData(source, files, classes_a, classes_b, bands, summary, examples)

    tree = load_geotiff_tree(_cfg(cfg, "data_root"), tile)
    classes_a, classes_b, bands = tree["classes"], None, tree["bands"]
    from labkit.core.grid import file_digest

    tree_digest = file_digest(_cfg(cfg, "data_root"))
    n_tiles = len(tree["names"])
    n_eval = sizes["val"] + sizes["test"]
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(n_tiles)
        split_tiles: dict[str, list[int]] = {"test": [], "val": [], "rest": []}
        counts = {"test": 0, "val": 0}
        for i in order:  # whole tiles into test, then val, until each has its chips
            n_chips = (tree["images"][i].shape[1] // tile) * (tree["images"][i].shape[2] // tile)
            for name in ("test", "val"):
                if counts[name] < sizes[name]:
                    split_tiles[name].append(int(i))
                    counts[name] += n_chips
                    break
            else:
                split_tiles["rest"].append(int(i))
        if not split_tiles["rest"]:
            raise DataError(
                f"data_root {_cfg(cfg, 'data_root')}: {n_tiles} tile(s) give no tiles left for "
                f"pretraining and fine-tuning after {n_eval} test and validation chips of {tile} px; "
                "add tiles or lower n_test_tiles / n_val_tiles"
            )

        def gather(indices):
            xs, noisy, clean = [], [], []
            for i in indices:
                for x, (n, c) in chips(tree["images"][i], [tree["noisy"][i], tree["clean"][i]], tile):
                    xs.append(x), noisy.append(n), clean.append(c)
            return xs, noisy, clean

        parts = {name: gather(idx) for name, idx in split_tiles.items()}
        rest_x, rest_noisy, rest_clean = parts["rest"]
        pick = np.random.default_rng(seed + 1).permutation(len(rest_x))
        pre_idx, ft_idx = pick[: sizes["pretrain"]], pick[: sizes["finetune"]]
        if len(ft_idx) < sizes["finetune"]:
            raise DataError(
                f"data_root {_cfg(cfg, 'data_root')}: {len(rest_x)} chips left for fine-tuning, fewer than "
                f"the largest k ({sizes['finetune']}); add tiles or lower k_values / task_b_k"
            )
        named = {
            "pretrain": (
                [rest_x[i] for i in pre_idx],
                [rest_noisy[i] for i in pre_idx],
                [rest_clean[i] for i in pre_idx],
            ),
            "finetune": ([rest_x[i] for i in ft_idx], None, [rest_clean[i] for i in ft_idx]),
            "val": (parts["val"][0], None, parts["val"][2]),
            "test": (parts["test"][0], None, parts["test"][2]),
        }
        arrays, nodata = {}, 0
        for name, (xs, noisy, clean) in named.items():
            if not xs:
                raise DataError(f"data_root {_cfg(cfg, 'data_root')}: no {tile} px chips for the {name} split")
            images, masks, counts = landcover.prepare_tiles(
                np.stack(xs),
                np.stack(clean),
                len(bands),
                len(classes_a),
                names=[f"{name} chip {i}" for i in range(len(xs))],
                fill_value=np.nan,
            )
            nodata += counts["nodata_pixels"]
            arrays[f"x_{name}"], arrays[f"a_{name}"] = images, masks
            if noisy is not None:
                arrays[f"a_{name}_real"] = np.where(masks == IGNORE_INDEX, IGNORE_INDEX, np.stack(noisy))
        mean, std = band_statistics(arrays["x_pretrain"])
        for name in named:
            x = normalise(arrays[f"x_{name}"], mean, std)
            arrays[f"x_{name}"] = np.nan_to_num(x, nan=0.0)  # no-data pixels: filled, and masked to 255 above
        clean = arrays["a_pretrain"]
        rates = {"clean": 0.0, "real": label_noise.noise_rate(clean, arrays["a_pretrain_real"])}
        for level in levels:
            noisy = noisy_labels(None, clean, noise_models, level, 1000 * seed + 5, len(classes_a))
            arrays[f"a_pretrain_{label_key(level)}"] = np.where(clean == IGNORE_INDEX, IGNORE_INDEX, noisy)
            rates[label_key(level)] = label_noise.noise_rate(clean, noisy)
        arrays["norm"] = np.stack([mean, std])
        recipe = {
            "source": source,
            "tree": tree_digest,
            "tile": tile,
            "seed": seed,
            "sizes": sizes,
            "noise_models": noise_models,
            "levels": levels,
            "version": 2,
        }
        files[seed] = _save_arrays(arrays, recipe)
        summary[seed] = {
            "tiles": {k: int(len(v[0])) for k, v in named.items()},
            "pixel_noise_rate": rates,
            "nodata_pixels": nodata,
            "source_tiles": {k: len(v) for k, v in split_tiles.items()},
        }
    return StudyData(source, files, classes_a, classes_b, bands, summary, None)


# ---------------------------------------------------------------------------------------------------
# The grid's tasks (module-level: they run in worker processes and are cached by their parameters)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# The experiment: two grids (pretraining, then fine-tuning) and the layer-wise analysis
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Results:
    finetune: pd.DataFrame  # seed, task, init, k, pretraining, severity, miou, pixel_accuracy, late_gain, seconds
    pretrain: pd.DataFrame  # seed, labels, order, severity, pixel_noise_rate, loss_ratio, test_miou, seconds
    curves: pd.DataFrame  # seed, task, init, k, pretraining, point, step, val_miou
    layers: pd.DataFrame  # seed, comparison, name, part, depth, n_params, value (per-layer divergence)
    cka: pd.DataFrame  # seed, comparison, stage, channels, cka
    unavailable: dict  # init or claim -> reason
    settings: dict
    data: StudyData | None = None
    checkpoint_state: dict | None = None  # full-depth noisy-pretrained ResNet-18 (first seed), for the named checkpoint
    checkpoint_meta: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    regime: pd.DataFrame | None = None  # random init at the fewest and most tiles on the extra regime seeds
    budgets: pd.DataFrame | None = None  # one row per trained run (pretraining and fine-tuning): its budget
    probes: pd.DataFrame | None = None  # seed, init, pretraining, k, miou: frozen linear probes (features learned)


def validate_settings(cfg) -> None:
    """ParameterError naming the parameter when a combination cannot run (beyond the spec's type/range checks)."""
    tile, depth = int(_cfg(cfg, "tile")), int(_cfg(cfg, "encoder_depth", 5))
    if tile % 2**depth:
        raise ParameterError(f"tile={tile}: a {depth}-stage U-Net needs a multiple of {2**depth}")
    if tile // 2**depth < 2:
        raise ParameterError(
            f"tile={tile} with encoder_depth={depth} leaves the encoder a "
            f"{tile // 2**depth}x{tile // 2**depth} deepest map: lower encoder_depth or raise tile"
        )
    if _cfg(cfg, "data_source", "simulated") == "simulated":
        bands = list(_cfg(cfg, "bands", landcover.NIRRGB))
        unknown = [b for b in bands if b not in landcover.S2_BANDS]
        if unknown:
            raise ParameterError(f"bands: unknown Sentinel-2 bands {unknown}; known: {landcover.S2_BANDS}")
        if "sensor_rule" in list(_cfg(cfg, "noise_models")) and not {"B08", "B04"} <= set(bands):
            raise ParameterError("noise_models: 'sensor_rule' thresholds NDVI, which needs bands B08 and B04")
    noise_models = list(_cfg(cfg, "noise_models"))
    unknown = [n for n in noise_models if n not in label_noise.NOISE_MODELS]
    if unknown or not noise_models:
        raise ParameterError(
            f"noise_models: unknown or empty {unknown or noise_models}; known: {list(label_noise.NOISE_MODELS)}"
        )
    if float(_cfg(cfg, "noise_severity")) <= 0:
        raise ParameterError("noise_severity must be > 0: it is the noisy pretraining (clean pretraining always runs)")
    levels = [float(v) for v in _cfg(cfg, "noise_levels")]
    if any(not 0 < v <= 1 for v in levels):
        raise ParameterError(
            f"noise_levels must lie in (0, 1] (clean pretraining is the reference line, not a level), got {levels}"
        )
    k_values = [int(k) for k in _cfg(cfg, "k_values")]
    if len(set(k_values)) != len(k_values) or min(k_values) < 1 or len(k_values) < 2:
        raise ParameterError(f"k_values must be two or more distinct positive tile counts, got {k_values}")
    inits = list(_cfg(cfg, "inits"))
    unknown = [i for i in inits if i not in INITS]
    if unknown:
        raise ParameterError(f"inits: unknown initialisations {unknown}; known: {INITS}")
    if "random" not in inits:
        raise ParameterError("inits must include 'random': every gain is measured against it")
    steps = finetune_steps(cfg)
    if len(steps) not in (1, len(k_values)):
        raise ParameterError(
            f"finetune_steps must hold one step count for every k or one per entry of k_values ({len(k_values)}), "
            f"got {steps}"
        )
    if int(_cfg(cfg, "eval_points")) > min(steps):
        raise ParameterError(
            "eval_points must be <= every finetune_steps (the steps are split between the evaluations)"
        )


def _settings(cfg, data: StudyData) -> dict:
    k_values = sorted(int(k) for k in _cfg(cfg, "k_values"))
    return {
        "seeds": [int(s) for s in _cfg(cfg, "seeds")],
        "data_source": data.source,
        "tile": int(_cfg(cfg, "tile")),
        "encoder": _cfg(cfg, "encoder"),
        "encoder_depth": int(_cfg(cfg, "encoder_depth")),
        "bands": list(data.bands),
        "decoder_width": int(_cfg(cfg, "decoder_width")),
        "batch_size": int(_cfg(cfg, "batch_size")),
        "lr": float(_cfg(cfg, "lr")),
        "finetune_lr": float(_cfg(cfg, "finetune_lr")),
        "n_pretrain_tiles": int(_cfg(cfg, "n_pretrain_tiles")),
        "pretrain_steps": int(_cfg(cfg, "pretrain_steps")),
        "finetune_steps": finetune_steps(cfg),
        "regime_seeds": [v for v in all_seeds(cfg) if v not in [int(s) for s in _cfg(cfg, "seeds")]],
        "eval_points": int(_cfg(cfg, "eval_points")),
        "k_values": k_values,
        "n_val_tiles": int(_cfg(cfg, "n_val_tiles")),
        "n_test_tiles": int(_cfg(cfg, "n_test_tiles")),
        "noise_models": list(_cfg(cfg, "noise_models")),
        "noise_severity": float(_cfg(cfg, "noise_severity")),
        "main_noisy_labels": main_noisy_key(cfg),
        "noise_levels": sweep_levels(cfg),
        "sweep_k": int(_cfg(cfg, "sweep_k") or k_values[0]),
        "task_b_k": int(_cfg(cfg, "task_b_k")),
        "inits": list(_cfg(cfg, "inits")),
        "encoder_weights": str(_cfg(cfg, "encoder_weights")),
        "kl_bins": int(_cfg(cfg, "kl_bins")),
        "layer_sample": int(_cfg(cfg, "layer_sample")),
        "plateau_max_gain": float(_cfg(cfg, "plateau_max_gain")),
        "probe_steps": int(_cfg(cfg, "probe_steps", PROBE_STEPS)),
        "probe_lr": PROBE_LR,
        "label_limited_margin": float(_cfg(cfg, "label_limited_margin")),
        "executor": _cfg(cfg, "executor", "serial"),
        "device": str(_cfg(cfg, "device", "cpu")),
    }


def _weights_file(state: Mapping[str, np.ndarray], meta: dict) -> dict:
    """Write a pretrained state dict (safetensors) named by its content; returns ``{"path", "digest"}``."""
    from labkit.core.checkpoints import save_checkpoint
    from labkit.core.grid import file_digest
    from labkit.core.paths import cache_dir

    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name]).tobytes())
    path = cache_dir(f"{STUDY}/weights") / f"{digest.hexdigest()[:24]}.safetensors"
    if not path.exists():
        save_checkpoint(path, {k: torch.as_tensor(np.array(v)) for k, v in state.items()}, meta)
    return {"path": str(path), "digest": file_digest(path)}


def _external_encoder(cfg, settings: dict, num_classes: int) -> tuple[dict | None, str | None]:
    """The ``imagenet`` row's encoder (``encoder_weights``) as a weights file, or ``(None, reason)``."""
    weights = settings["encoder_weights"]
    try:
        if weights == "pretrained":
            state = imagenet_encoder_state(
                num_classes,
                settings["encoder"],
                settings["bands"],
                settings["decoder_width"],
                settings["encoder_depth"],
            )
        elif weights == "random":
            return None, "encoder_weights=random: the reference-encoder row would repeat random initialisation"
        else:
            model = build_model(
                num_classes,
                settings["encoder"],
                len(settings["bands"]),
                settings["decoder_width"],
                weights=weights,
                seed=0,
                encoder_depth=settings["encoder_depth"],
            )
            state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    except WeightsUnavailableError as exc:
        return None, _unavailable_reason(exc, settings["encoder"])
    return _weights_file({k: v.numpy() for k, v in state.items()}, {"source": weights}), None


def run(cfg, data: StudyData | None = None, progress: bool = True) -> Results:
    """Every experiment of the study for each seed of ``cfg``, as two cached grids (see the module docstring)."""
    from labkit.core.device import resolve_device
    from labkit.core.grid import Grid

    started = time.time()
    check_data_parameters(cfg)
    validate_settings(cfg)
    data = data or make_data(cfg)
    s = _settings(cfg, data)
    device = str(resolve_device(s["device"], announce=progress))
    executor = {
        "executor": s["executor"],
        "workers": _cfg(cfg, "workers"),
        "scheduler": _cfg(cfg, "scheduler"),
        "progress": progress,
        "threads": 1,
    }  # one torch thread per task: measured faster here (see README)
    ka = len(data.classes_a)
    kb = len(data.classes_b) if data.classes_b else ka
    model = {
        "encoder": s["encoder"],
        "encoder_depth": s["encoder_depth"],
        "in_channels": len(data.bands),
        "decoder_width": s["decoder_width"],
        "num_classes": ka,
        "num_classes_b": kb,
    }
    main = s["main_noisy_labels"]
    label_sets = ["clean"] + sorted({main} | {label_key(v) for v in s["noise_levels"]})
    severity_of = {label_key(v): v for v in s["noise_levels"]} | {"clean": 0.0, "real": float("nan")}
    unavailable: dict[str, str] = {}
    if data.classes_b is None:
        unavailable[TASK_B] = (
            "the data have one class definition (one legend); the second task needs another (simulated data only)"
        )

    # -- grid 1: pretraining (clean, clean in another data order = the null, each noisy label set)
    pre = Grid(f"{STUDY}-pretrain", pretrain_task)
    save = bool(_cfg(cfg, "save_checkpoint", False)) and s["encoder"] == "resnet18"
    if save:  # the named checkpoint: a full-depth ResNet-18 on the first seed's main noisy labels (longest: first)
        seed = s["seeds"][0]
        pre.add(
            data=data.files[seed],
            seed=seed,
            labels=main,
            order=0,
            model=model,
            steps=s["pretrain_steps"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            device=device,
            depth=5,
        )
    for seed in s["seeds"]:
        common = dict(
            data=data.files[seed],
            seed=seed,
            model=model,
            steps=s["pretrain_steps"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            device=device,
        )
        for labels in label_sets:
            pre.add(labels=labels, order=0, **common)
        pre.add(labels="clean", order=1, **common)
    pre_result = pre.run(**executor)
    pre_rows, states, checkpoint_state = [], {}, None
    budget_rows = []
    for task, record in zip(pre_result.tasks, pre_result.records):
        p = task.params
        budget_rows.append(
            _budget_row(
                record,
                pre.name,
                stage="checkpoint" if p.get("depth") == 5 else "pretrain",
                seed=p["seed"],
                labels=p["labels"],
                order=p["order"],
            )
        )
        if p.get("depth") == 5 and s["encoder_depth"] != 5:
            checkpoint_state = record["state"]
            continue
        states[(p["seed"], p["labels"], p["order"])] = record["state"]
        pre_rows.append(
            {
                "seed": p["seed"],
                "labels": p["labels"],
                "order": p["order"],
                "severity": severity_of.get(p["labels"], np.nan),
                **{
                    k: record[k]
                    for k in (
                        "pixel_noise_rate",
                        "final_loss",
                        "trivial_loss",
                        "loss_ratio",
                        "clean_val_loss",
                        "clean_val_prior_loss",
                        "clean_val_train_prior_loss",
                        "clean_val_trivial_loss",
                        "clean_loss_ratio",
                        "test_miou",
                        "steps",
                        "seconds",
                    )
                },
            }
        )
        if (
            save
            and checkpoint_state is None
            and s["encoder_depth"] == 5
            and p["seed"] == s["seeds"][0]
            and p["labels"] == main
            and p["order"] == 0
        ):
            checkpoint_state = record["state"]
    pretrain = pd.DataFrame(pre_rows)
    files = {
        key: _weights_file(state, {"seed": key[0], "labels": key[1], "order": key[2]}) for key, state in states.items()
    }

    # -- grid 2: fine-tuning (init x k x seed, the sweep, the second task) and the QDA reference
    external, reason = (None, None)
    if "imagenet" in s["inits"]:
        external, reason = _external_encoder(cfg, s, ka)
        if reason:
            unavailable["imagenet"] = reason
    ft = Grid(f"{STUDY}-finetune", finetune_task)
    rows_meta = []

    def add(seed, task, init, k, labels):
        if init == "random":
            weights = None
        elif init == "imagenet":
            weights = {**external, "part": "encoder"}
        else:
            weights = {**files[(seed, labels, 0)], "part": "full" if init.endswith("_full") else "encoder"}
        ft.add(
            data=data.files[seed],
            seed=seed,
            task=task,
            init=init,
            k=k,
            weights=weights,
            model=model,
            steps=steps_for_k(s["finetune_steps"], s["k_values"], k),
            eval_points=s["eval_points"],
            batch_size=s["batch_size"],
            lr=s["finetune_lr"],
            device=device,
        )
        rows_meta.append(
            {
                "seed": seed,
                "task": task,
                "init": init,
                "k": k,
                "pretraining": {"random": "none", "imagenet": "external"}.get(init, labels),
                "severity": severity_of.get(labels, np.nan)
                if init.startswith("noisy")
                else (0.0 if init.startswith("clean") else np.nan),
            }
        )

    # Longest tasks first (the most tiles, then the regime seeds' runs), so the pool does not end on one long run.
    for seed in s["regime_seeds"]:  # the label-limited precondition's extra seeds: random init, fewest and most tiles
        for k in (s["k_values"][-1], s["k_values"][0]):
            add(seed, TASK_A, "random", k, main)
    n_regime_runs = len(rows_meta)
    for seed in s["seeds"]:
        for k in sorted(s["k_values"], reverse=True):
            for init in s["inits"]:
                if init in unavailable or (init in FEWEST_TILES_ONLY and k != s["k_values"][0]):
                    continue
                labels = "clean" if init.startswith("clean") else main
                add(seed, TASK_A, init, k, labels)
        for level in s["noise_levels"]:
            if label_key(level) != main or s["sweep_k"] not in s["k_values"]:
                add(seed, TASK_A, "noisy_full", s["sweep_k"], label_key(level))
        for init in ("random", "noisy_full", "clean_full"):
            if s["sweep_k"] not in s["k_values"]:
                add(seed, TASK_A, init, s["sweep_k"], "clean" if init == "clean_full" else main)
        if TASK_B not in unavailable:
            for init in ("random", "noisy_encoder"):
                add(seed, TASK_B, init, s["task_b_k"], main)
    ft_result = ft.run(**executor)
    ft_rows, curve_rows, regime_rows = [], [], []
    for i, (meta, record) in enumerate(zip(rows_meta, ft_result.records)):
        budget_rows.append(
            _budget_row(record, ft.name, stage="finetune", regime=i < n_regime_runs, **{k: meta[k] for k in FT_KEYS})
        )
        row = {
            **meta,
            **{
                k: record[k]
                for k in ("miou", "pixel_accuracy", "late_gain", "best_point", "kept_initial", "steps", "seconds")
            },
        }
        if i < n_regime_runs:
            regime_rows.append(row)
            continue
        ft_rows.append(row)
        curve = np.asarray(record["curve"], dtype=float)
        for i, v in enumerate(curve):
            curve_rows.append(
                {
                    **meta,
                    "point": i + 1,
                    "step": int(round((i + 1) * record["steps"] / len(curve))),
                    "val_miou": float(v),
                }
            )
    # -- grid 3: frozen linear probes (the "features learned" precondition): the main noisy-pretrained encoder and
    # the random-init one, frozen, a linear head trained on the fewest clean tiles of task A for probe_steps steps
    probe = Grid(f"{STUDY}-probe", probe_task)
    probe_meta = []
    for seed in s["seeds"]:
        for init, weights, labels in (
            ("noisy_encoder", {**files[(seed, main, 0)], "part": "encoder"}, main),
            ("random", None, "none"),
        ):
            probe.add(
                data=data.files[seed],
                seed=seed,
                init=init,
                k=s["k_values"][0],
                weights=weights,
                model=model,
                steps=s["probe_steps"],
                batch_size=s["batch_size"],
                lr=s["probe_lr"],
                device=device,
            )
            probe_meta.append(
                {"seed": seed, "task": TASK_A, "init": init, "k": s["k_values"][0], "pretraining": labels}
            )
    probe_result = probe.run(**executor)
    probe_rows = []
    for meta_row, record in zip(probe_meta, probe_result.records):
        budget_rows.append(_budget_row(record, probe.name, stage="probe", regime=False, **meta_row))
        probe_rows.append({**meta_row, **{k: record[k] for k in ("miou", "pixel_accuracy", "steps", "seconds")}})
    qda = Grid(f"{STUDY}-qda", qda_task)
    for seed in s["seeds"]:
        # the floor rows of every k a claim compares at (the sweep's k too)
        for k in sorted(set(s["k_values"]) | {s["sweep_k"]}):
            qda.add(data=data.files[seed], seed=seed, task=TASK_A, k=k, num_classes=ka)
    qda_result = qda.run(executor="serial", progress=progress)
    for task, record in zip(qda_result.tasks, qda_result.records):
        for init, prefix in (("qda", ""), ("majority", "majority_")):
            ft_rows.append(
                {
                    "seed": task.params["seed"],
                    "task": TASK_A,
                    "init": init,
                    "k": task.params["k"],
                    "pretraining": "none",
                    "severity": np.nan,
                    "miou": record[f"{prefix}miou"],
                    "pixel_accuracy": record[f"{prefix}pixel_accuracy"],
                    "late_gain": np.nan,
                    "best_point": 0,
                    "kept_initial": False,
                    "steps": 0,
                    "seconds": record["seconds"] if init == "qda" else 0.0,
                }
            )

    # -- layer-wise measure with its null (and CKA of encoder features against the same null)
    layer_frames, cka_frames = [], []
    for seed in s["seeds"]:
        init_state = {k: v.detach() for k, v in _model_from(model, ka, 1000 * seed + 11).state_dict().items()}
        as_t = lambda st: {k: torch.as_tensor(v) for k, v in st.items()}  # noqa: E731
        clean, null, noisy = (
            as_t(states[(seed, "clean", 0)]),
            as_t(states[(seed, "clean", 1)]),
            as_t(states[(seed, main, 0)]),
        )
        for name, other in (("clean vs noisy", noisy), ("clean vs clean, other data order (null)", null)):
            df = weight_analysis.layerwise_divergence(
                clean, other, init_state, sample=s["layer_sample"], bins=s["kl_bins"], seed=seed
            )
            df.insert(0, "comparison", name)
            df.insert(0, "seed", seed)
            layer_frames.append(df)
        arrays = _load_arrays(data.files[seed]["path"], data.files[seed]["digest"])
        images = torch.as_tensor(arrays["x_test"][:8])
        nets = {}
        for key, st in (("clean", clean), ("null", null), ("noisy", noisy)):
            nets[key] = _model_from(model, ka, 0)
            nets[key].load_state_dict(st)
        for name, other in (("clean vs noisy", "noisy"), ("clean vs clean, other data order (null)", "null")):
            df = weight_analysis.encoder_feature_cka(nets["clean"].encoder, nets[other].encoder, images, seed=seed)
            df.insert(0, "comparison", name)
            df.insert(0, "seed", seed)
            cka_frames.append(df)
    meta = {}
    if checkpoint_state is not None:
        arrays = _load_arrays(data.files[s["seeds"][0]]["path"], data.files[s["seeds"][0]]["digest"])
        norm = arrays["norm"]
        row = pretrain[(pretrain.seed == s["seeds"][0]) & (pretrain.labels == main) & (pretrain.order == 0)].iloc[0]
        meta = checkpoint_meta(
            data.bands,
            data.classes_a,
            s["noise_models"] if main != "real" else ["real labels_noisy"],
            s["noise_severity"] if main != "real" else float("nan"),
            norm[0],
            norm[1],
            s["encoder"],
            {
                "n_tiles": s["n_pretrain_tiles"],
                "steps": s["pretrain_steps"],
                "tile": s["tile"],
                "seed": s["seeds"][0],
                "pixel_noise_rate": float(row.pixel_noise_rate),
                "decoder_width": s["decoder_width"],
                "data_source": data.source,
                "produced_by": f"{STUDY} notebook",
            },
        )
    return Results(
        pd.DataFrame(ft_rows),
        pretrain,
        pd.DataFrame(curve_rows),
        pd.concat(layer_frames, ignore_index=True),
        pd.concat(cka_frames, ignore_index=True),
        unavailable,
        s,
        data,
        checkpoint_state,
        meta,
        time.time() - started,
        pd.DataFrame(regime_rows, columns=list(ft_rows[0]) if ft_rows else None),
        pd.DataFrame(budget_rows, columns=BUDGET_TABLE_COLUMNS),
        pd.DataFrame(probe_rows, columns=PROBE_COLUMNS),
    )


#: The probes table: one frozen linear probe per seed and encoder.
PROBE_COLUMNS = ["seed", "task", "init", "k", "pretraining", "miou", "pixel_accuracy", "steps", "seconds"]


#: What identifies a fine-tuning run in the budgets table (the claims' filters read these columns).
FT_KEYS = ("seed", "task", "init", "k", "pretraining")
BUDGET_TABLE_COLUMNS = [
    "grid",
    "stage",
    "seed",
    "labels",
    "order",
    *FT_KEYS[1:],
    "regime",
    *BUDGET_KEYS,
    "missing",
]


def _budget_row(record: Mapping, grid: str, **keys) -> dict:
    """One trained run's budget (``record["budget"]``) with the keys the claims filter on; ``missing`` names the
    budget keys the record lacks (empty when it carries a full budget)."""
    budget = record.get("budget") if isinstance(record.get("budget"), Mapping) else {}
    return {
        "grid": grid,
        **keys,
        **{k: budget.get(k) for k in BUDGET_KEYS},
        "missing": ", ".join(missing_budget(record)),
    }


# ---------------------------------------------------------------------------------------------------
# The checkpoint another study uses
# ---------------------------------------------------------------------------------------------------


def checkpoint_meta(bands, classes, noise_models, severity, norm_mean, norm_std, encoder, extra=None) -> dict:
    return {
        "in_channels": len(bands),
        "bands": list(bands),
        "classes": list(classes),
        "encoder": encoder,
        "arch": "unet",
        "noise_models": list(noise_models),
        "noise_severity": float(severity),
        "norm_mean": [float(v) for v in norm_mean],
        "norm_std": [float(v) for v in norm_std],
        "producer": f"labkit.studies.{STUDY}",
        **(extra or {}),
    }


def save_pretrained_encoder(model_or_state, meta: dict) -> Path:
    """Save a full-depth ResNet-18 encoder (a U-Net, or its state dict with ``encoder.*`` keys) as the named
    checkpoint ``noisy-pretrained-unet-r18`` (keys of ``model.encoder.state_dict()``)."""
    from labkit.models.registry import save_named_checkpoint

    if meta.get("encoder") != "resnet18":
        raise ValueError(
            f"'{CHECKPOINT_NAME}' holds a ResNet-18 encoder; this model's encoder is {meta.get('encoder')!r}"
        )
    if isinstance(model_or_state, torch.nn.Module):
        state = encoder_state(model_or_state)
    else:
        state = {
            k[len("encoder.") :]: torch.as_tensor(np.array(v))
            for k, v in model_or_state.items()
            if k.startswith("encoder.")
        }
    return save_named_checkpoint(CHECKPOINT_NAME, state, meta)


def produce_pretrained_encoder(
    n_tiles: int = 64,
    epochs: int = 2,
    tile: int = 64,
    seed: int = 0,
    encoder: str = "resnet18",
    progress: bool = True,
    severity: float = 0.6,
    noise_models: Sequence[str] = DEFAULT_NOISE,
    batch_size: int = 8,
    decoder_width: int = 32,
    lr: float = 1e-3,
) -> Path:
    """Simulate ``n_tiles`` noisy land-cover tiles, pretrain a U-Net on them, save its encoder, return the path.

    The checkpoint is ``noisy-pretrained-unet-r18`` (the keys of a full-depth ``model.encoder.state_dict()``; meta:
    bands, in_channels, classes, noise settings, input normalisation). Only ResNet-18 encoders are saved under it.
    """
    if encoder != "resnet18":
        raise ValueError(f"'{CHECKPOINT_NAME}' is a ResNet-18 encoder; got encoder={encoder!r}")
    started = time.time()
    classes = landcover.task_legend(TASK_A)[0]
    tiles, clean, noisy, rate = simulate_noisy_pool(n_tiles, tile, seed, noise_models, severity)
    mean, std = band_statistics(tiles.images)
    model = build_model(len(classes), encoder, len(tiles.bands), decoder_width, seed=seed)
    steps = max(1, int(np.ceil(n_tiles / batch_size)))
    train(
        model,
        normalise(tiles.images, mean, std),
        noisy,
        len(classes),
        epochs,
        steps,
        batch_size,
        lr,
        seed,
        progress,
        desc="noisy-label pretraining",
    )
    meta = checkpoint_meta(
        tiles.bands,
        classes,
        noise_models,
        severity,
        mean,
        std,
        encoder,
        {
            "n_tiles": n_tiles,
            "epochs": epochs,
            "tile": tile,
            "seed": seed,
            "pixel_noise_rate": rate,
            "decoder_width": decoder_width,
            "seconds": round(time.time() - started, 2),
            "produced_by": "produce_pretrained_encoder",
        },
    )
    return save_pretrained_encoder(model, meta)


def save_study_checkpoint(results: Results, enabled: bool = True) -> dict:
    """Save the first seed's full-depth noisy-pretrained ResNet-18 encoder as ``noisy-pretrained-unet-r18``.

    Returns ``{"saved": bool, "path" or "reason": str}`` for the report.
    """
    if not enabled:
        return {"saved": False, "reason": "save_checkpoint is false"}
    encoder = results.settings.get("encoder")
    if encoder != "resnet18":
        return {
            "saved": False,
            "reason": f"encoder is {encoder}; '{CHECKPOINT_NAME}' holds ResNet-18 only "
            "(the SAR study produces its own with produce_pretrained_encoder)",
        }
    if results.checkpoint_state is None:
        return {"saved": False, "reason": "no full-depth noisy-pretrained encoder in the results"}
    if int(results.settings.get("pretrain_steps", 1)) == 0:
        return {"saved": False, "reason": "pretrain_steps=0: the encoder was never pretrained (its initial weights)"}
    return {"saved": True, "path": str(save_pretrained_encoder(results.checkpoint_state, results.checkpoint_meta))}


# ---------------------------------------------------------------------------------------------------
# Claims: declared as data (no results needed), judged by labkit.core.claims
# ---------------------------------------------------------------------------------------------------

#: Estimator of the layer-wise measure, in words (the report and the README quote it).
LAYER_ESTIMATOR = weight_analysis.DIVERGENCE_ESTIMATOR
#: Effects of interest (labkit.core.claims): the paper reports no effect size for its comparisons.
PRACTICAL_MIOU = 0.02
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper reports no effect size)"
PRACTICAL_EXCESS = 0.002
EXCESS_SOURCE = (
    "a stated practical size: 0.002 of the layer measure, the finite-sample floor (bins - 1) / n of a 64-bin "
    "histogram divergence for a layer of 32k weights"
)


def declare_claims(cfg, unavailable: Mapping[str, str] | None = None, **context) -> list[Claim]:
    """The paper's four claims, in its order, with the preconditions that make each testable.

    ``unavailable``: what could not run (``{"structure": reason}`` when the data have one class definition);
    with no context every arm is assumed available.
    """
    unavailable = dict(unavailable or {})
    k_values = sorted(int(k) for k in _cfg(cfg, "k_values"))
    k_few, k_many = k_values[0], k_values[-1]
    sweep_k = int(_cfg(cfg, "sweep_k") or k_few)
    main = main_noisy_key(cfg)
    levels = sweep_levels(cfg)
    plateau_gain = float(_cfg(cfg, "plateau_max_gain"))
    margin = float(_cfg(cfg, "label_limited_margin"))
    A = {"task": TASK_A}
    random_few = {**A, "init": "random", "k": k_few}
    label_limited = Precondition.label_limited(
        "miou", full={**A, "init": "random", "k": k_many}, few=random_few, margin=margin, table="regime"
    )
    plateau = Precondition.plateau("late_gain", where={**A, "init": "random"}, max_late_gain=plateau_gain)

    # The clean-pretrained upper bound must itself beat random init where the gain is claimed: if pretraining on
    # clean labels gains nothing here, no noisy pretraining can show a gain, and its absence says nothing.
    headroom = Precondition(
        "headroom",
        Compare("miou", a={**A, "init": "clean_full", "k": k_few}, b=random_few),
        why=f"the clean-pretrained upper bound beats random init at k={k_few} (paired interval above 0): pretraining "
        "can help in this regime at all; otherwise pretrain longer or on more tiles (pretrain_steps, n_pretrain_tiles) "
        "or run the paper preset",
    )

    # Claim 2's task-B part has no clean-pretrained arm of its own: the task-A headroom stands for it.
    headroom_transfer = dataclasses.replace(
        headroom,
        why=headroom.why + f"; task B has no clean-pretrained arm, so this task-A headroom at k={k_few} stands for "
        "the task-B part too",
    )

    def trained(labels):
        # Read on the clean validation labels: noisy training labels floor the training loss at their own entropy.
        # The learner-free bar is the best class prior (of the labels it trained on, of the same tiles' clean labels,
        # or uniform), scored by the same code (tasks.ClassPrior).
        return Precondition.trained(
            "clean_val_loss",
            {"labels": labels, "order": 0},
            TRAINED_MAX_RATIO,
            learner_free="clean_val_prior_loss",
            why=f"the {labels}-pretrained network, before fine-tuning, predicts the clean validation tiles with less "
            f"than {TRAINED_MAX_RATIO:g} x the cross-entropy of the class prior (of its training labels, of the same "
            "tiles' clean labels or uniform, whichever predicts them best: the best learner-free predictor; the noisy "
            "training labels' own loss is floored by their noise); when it fails, "
            "pretraining learned too little to test: raise pretrain_steps (0 trains nothing) or n_pretrain_tiles",
        )

    def same_budget(a, b, what):
        # Fine-tunes (or pretrainings) a claim compares: the same steps, batch size and schedule.
        return dataclasses.replace(Precondition.same_budget(a=a, b=b, label=what), name=f"same budget ({what})")

    def finetunes(a, b, what):
        return same_budget({"stage": "finetune", **a}, {"stage": "finetune", **b}, what)

    def pretrainings(a, b, what):
        return same_budget(
            {"stage": "pretrain", "labels": a[0], "order": a[1]},
            {"stage": "pretrain", "labels": b[0], "order": b[1]},
            what,
        )

    def above_floor(arm, what, k=k_few):
        return Precondition.above_floor(
            "miou",
            arm=arm,
            floor={**A, "init": "majority", "k": k},
            margin=FLOOR_MARGIN,
            table="floor",
            label=what,
        )

    # The claims that rest on the noisy-pretrained encoder need it to carry features the task can use: its frozen
    # linear probe (tasks.probe_task) beats that of the same U-Net's random-init encoder, paired over seeds.
    features_learned = dataclasses.replace(
        Precondition.features_learned(
            "miou",
            pretrained={"init": "noisy_encoder", "pretraining": main},
            random={"init": "random"},
            table="probes",
        ),
        name="features learned (noisy-pretrained encoder)",
        why=f"the {main}-pretrained encoder, frozen, with a linear per-pixel head trained on the k={k_few} clean "
        "tiles of task A beats the same U-Net's random-init encoder probed alike (paired over seeds, interval above "
        "0): pretraining left features the task can use; when it fails, pretraining learned nothing a gain could rest "
        "on: raise pretrain_steps (0 trains nothing) or n_pretrain_tiles, or probe longer (probe_steps)",
    )
    noisy_full_few = {**A, "init": "noisy_full", "k": k_few, "pretraining": main}
    noisy_encoder_few = {**A, "init": "noisy_encoder", "k": k_few, "pretraining": main}

    claims = [
        Claim(
            "noisy_pretraining_beats_random",
            "Pretraining on plentiful noisy labels then fine-tuning on few clean labels beats random initialisation on "
            "the same clean labels; the gain is largest when clean labels are fewest.",
            compare=[
                Compare(
                    "miou",
                    a={**A, "init": "noisy_full", "k": k_few, "pretraining": main},
                    b=random_few,
                    label=f"noisy-pretrained encoder+decoder beats random init at k={k_few}",
                    effect=PRACTICAL_MIOU,
                    effect_source=PRACTICAL_SOURCE,
                ),
                Compare(
                    "gain",
                    a={"k": k_few},
                    b={"k": k_many},
                    table="gains",
                    label=f"gain over random larger at k={k_few} than at k={k_many}",
                    effect=PRACTICAL_MIOU,
                    effect_source=PRACTICAL_SOURCE,
                ),
            ],
            preconditions=[
                label_limited,
                plateau,
                headroom,
                trained(main),
                features_learned,
                finetunes(noisy_full_few, random_few, f"noisy_full vs random, k={k_few}"),
                finetunes(
                    {**A, "init": "noisy_full", "k": k_many, "pretraining": main},
                    {**A, "init": "random", "k": k_many},
                    f"noisy_full vs random, k={k_many}",
                ),
                above_floor(random_few, f"random init, k={k_few}"),
                above_floor(noisy_full_few, f"noisy_full, k={k_few}"),
            ],
            note=f"fine-tuning runs train {_cfg(cfg, 'finetune_steps')} steps at k={k_values} (both arms of a k the "
            "same; measured so random initialisation plateaus)",
        )
    ]

    transfer = [
        Compare(
            "miou",
            a={"task": TASK_B, "init": "noisy_encoder"},
            b={"task": TASK_B, "init": "random"},
            label="task B (other classes, fresh decoder): noisy encoder beats random init",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        ),
        Compare(
            "miou",
            a={**A, "init": "noisy_encoder", "k": k_few, "pretraining": main},
            b=random_few,
            label=f"task A, fresh decoder: noisy encoder beats random init at k={k_few}",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        ),
    ]
    claims.append(
        Claim(
            "encoder_transfers_to_new_classes",
            "The benefit comes through the encoder: the noisy-pretrained encoder with a new decoder helps a task with a "
            "different class definition (merged and split classes).",
            compare=transfer,
            preconditions=[
                label_limited,
                plateau,
                Precondition(
                    "plateau (task B)",
                    Check("late_gain", {"task": TASK_B, "init": "random"}, "<", plateau_gain, table="curves"),
                    why=f"random init on task B improved by less than {plateau_gain:g} over the last fifth of training",
                ),
                headroom_transfer,
                trained(main),
                features_learned,
                finetunes(noisy_encoder_few, random_few, f"noisy_encoder vs random, task A k={k_few}"),
                finetunes(
                    {"task": TASK_B, "init": "noisy_encoder"},
                    {"task": TASK_B, "init": "random"},
                    "noisy_encoder vs random, task B",
                ),
                above_floor(random_few, f"random init, k={k_few}"),
                above_floor(noisy_encoder_few, f"noisy_encoder, k={k_few}"),
            ],
            unavailable=unavailable.get(TASK_B),
            note="task B has no floor row (the most frequent class is computed on task A only): the floor "
            f"preconditions read task A at k={k_few}",
        )
    )

    claims.append(
        Claim(
            "encoder_robust_decoder_sensitive",
            "Encoder layers are robust to label noise and the decoder is sensitive: the clean- vs noisy-pretrained weights "
            "differ more in the decoder than in the encoder.",
            compare=[
                Compare(
                    "excess",
                    a={"part": "decoder"},
                    b={"part": "encoder"},
                    table="layers",
                    label="decoder excess over the null above the encoder's",
                    effect=PRACTICAL_EXCESS,
                    effect_source=EXCESS_SOURCE,
                ),
                Compare(
                    "excess",
                    a={"part": "decoder"},
                    b=0.0,
                    table="layers",
                    label="decoder: clean vs noisy above the clean vs clean null",
                    effect=PRACTICAL_EXCESS,
                    effect_source=EXCESS_SOURCE,
                ),
            ],
            preconditions=[
                Precondition(
                    "null available",
                    Check("null_layers", {}, ">", 0, table="layer_null"),
                    why="a second clean pretraining from the same initial weights in another data "
                    "order gives every layer's null value",
                ),
                Precondition(
                    "size-free estimator",
                    Check("excess_size_corr_abs", {}, "<", 0.5, table="layer_size"),
                    why="the null-corrected value the claim is judged on does not follow layer size (|Spearman rho| "
                    "of a layer's excess vs its number of weights below 0.5), so a part's mean is not its layers' size",
                ),
                trained("clean"),
                trained(main),
                pretrainings(("clean", 0), (main, 0), f"clean vs {main} pretraining"),
                pretrainings(("clean", 0), ("clean", 1), "clean vs the clean null pretraining"),
            ],
            note=LAYER_ESTIMATOR,
        )
    )

    if len(levels) >= MIN_SWEEP_LEVELS:
        lo, hi = levels[0], levels[-1]
        compare = [
            Compare(
                "gain",
                a={"severity": lo},
                b={"severity": hi},
                table="sweep",
                label=f"gain at severity {lo:g} above the gain at {hi:g} (shrinks)",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            )
        ]
        compare += [
            Compare(
                "gain",
                a={"severity": v},
                b=0.0,
                table="sweep",
                label=f"gain above 0 at severity {v:g}",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            )
            for v in levels[:-1]
        ]
        sweep_unavailable = unavailable.get("sweep")
    else:
        compare, sweep_unavailable = (
            [],
            f"noise_levels (with noise_severity) gives {len(levels)} noisy severit{'y' if len(levels) == 1 else 'ies'} "
            f"{levels}; the sweep is judged on {MIN_SWEEP_LEVELS} or more severities above 0: add levels to noise_levels",
        )
    claims.append(
        Claim(
            "benefit_shrinks_with_noise",
            "The benefit of noisy-label pretraining shrinks as label noise grows and holds over a range of levels.",
            compare=compare,
            preconditions=[
                label_limited,
                plateau,
                headroom,
                # every noisy pretraining of the sweep follows the clean one's recipe: if that did not train,
                # none of them says anything
                trained("clean"),
                features_learned,
                finetunes(
                    {**A, "init": "noisy_full", "k": sweep_k},
                    {**A, "init": "random", "k": sweep_k},
                    f"noisy_full (every severity) vs random, k={sweep_k}",
                ),
                above_floor({**A, "init": "random", "k": sweep_k}, f"random init, k={sweep_k}", sweep_k),
                above_floor(
                    {**A, "init": "noisy_full", "k": sweep_k, "pretraining": label_key(levels[0])},
                    f"noisy_full at severity {levels[0]:g}, k={sweep_k}",
                    sweep_k,
                )
                if levels
                else above_floor({**A, "init": "noisy_full", "k": sweep_k}, f"noisy_full, k={sweep_k}", sweep_k),
            ],
            unavailable=sweep_unavailable,
            note=f"judged on the noisy severities {levels} only, fine-tuned on k={sweep_k} tiles; clean pretraining is "
            "the reference line of the sweep figure, not a level",
        )
    )
    return claims


def claim_tables(results: Results) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on (one row per arm x condition x seed)."""
    s = results.settings
    ft = results.finetune
    columns = ["seed", "task", "init", "k", "pretraining", "severity", "miou", "late_gain"]
    runs = ft[~ft.init.isin(REFERENCE_ROWS)][columns]
    a = runs[runs.task == TASK_A]
    main = s["main_noisy_labels"]
    random_ = a[a.init == "random"].set_index(["seed", "k"]).miou
    full = a[(a.init == "noisy_full") & (a.pretraining == main)].set_index(["seed", "k"]).miou
    gains = (full - random_).dropna().rename("gain").reset_index()
    sweep_rows = []
    rk = a[(a.init == "random") & (a.k == s["sweep_k"])].set_index("seed").miou
    for level in s["noise_levels"]:
        sub = a[(a.init == "noisy_full") & (a.k == s["sweep_k"]) & (a.pretraining == label_key(level))]
        for seed, miou in sub.set_index("seed").miou.items():
            if seed in rk.index:
                sweep_rows.append({"seed": seed, "severity": float(level), "gain": float(miou - rk[seed])})
    return {
        "runs": runs.reset_index(drop=True),
        "regime": regime_runs(results)[columns],
        "curves": runs[["seed", "task", "init", "k", "late_gain"]],
        "gains": gains,
        "sweep": pd.DataFrame(sweep_rows, columns=["seed", "severity", "gain"]),
        "layers": layer_parts_table(results),
        "layer_null": layer_null_table(results),
        "layer_size": layer_null_table(results),
        "pretraining": results.pretrain,
        "budgets": budget_runs(results),
        "probes": probe_runs(results),
        "floor": ft[ft.task == TASK_A][["seed", "task", "init", "k", "pretraining", "severity", "miou"]].reset_index(
            drop=True
        ),
    }


def probe_runs(results: Results) -> pd.DataFrame:
    """One row per frozen linear probe (seed, init, pretraining, k, miou): what "features learned" reads."""
    if results.probes is None:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    return results.probes.reset_index(drop=True)


def probe_table(results: Results) -> pd.DataFrame:
    """Frozen linear probes per encoder (mean over seeds, 95 % interval) and the paired difference noisy-pretrained
    minus random init: the evidence of the "features learned" precondition."""
    runs = probe_runs(results)
    if runs.empty:
        return pd.DataFrame(columns=["init", "pretraining", "k", "miou_mean", "n_seeds"])
    out = aggregate_over_seeds(runs, "miou", ["init", "pretraining", "k"]).rename(columns={"n": "n_seeds"})
    a = runs[runs.init == "noisy_encoder"].set_index("seed").miou
    b = runs[runs.init == "random"].set_index("seed").miou
    if len(set(a.index) & set(b.index)):
        diff = paired_by_index(a, b)
        out["paired_diff_vs_random"] = [diff.get("mean_diff") if i == "noisy_encoder" else np.nan for i in out.init]
    out["steps"] = runs.steps.iloc[0]
    return out


def budget_runs(results: Results) -> pd.DataFrame:
    """One row per trained run (pretraining, fine-tuning, the regime seeds' runs): its grid, the keys the claims
    filter on and its budget; what the "same budget" preconditions read."""
    if results.budgets is None:
        return pd.DataFrame(columns=BUDGET_TABLE_COLUMNS)
    return results.budgets.reset_index(drop=True)


def budgets_table(results: Results) -> pd.DataFrame:
    """Each trained arm's budget, one row per arm and condition (seeds folded into ``n_runs``; a budget column
    that differs between seeds lists its values)."""
    runs = budget_runs(results)
    keys = ["stage", "task", "init", "k", "pretraining", "labels", "order"]
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "n_runs", *BUDGET_KEYS])
    join = lambda v: v.iloc[0] if v.nunique(dropna=False) == 1 else " / ".join(sorted({str(x) for x in v}))  # noqa: E731
    out = (
        runs.groupby(keys, dropna=False, sort=False)
        .agg(n_runs=("seed", "size"), **{c: (c, join) for c in BUDGET_KEYS})
        .reset_index()
    )
    return out.dropna(axis=1, how="all")


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def label_efficiency_table(results: Results, task: str = TASK_A) -> pd.DataFrame:
    """mIoU per initialisation and k (main noisy labels; QDA reference; unavailable rows say why)."""
    df = results.finetune
    main = results.settings["main_noisy_labels"]
    df = df[
        (df.task == task)
        & ((df.pretraining == main) | ~df.init.str.startswith("noisy"))
        & df.k.isin(results.settings["k_values"])
    ]
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    out["label"] = out.init.map(INIT_LABELS)
    for init, reason in results.unavailable.items():
        if init in INITS:
            out = pd.concat(
                [
                    out,
                    pd.DataFrame(
                        [
                            {
                                "init": init,
                                "k": np.nan,
                                "miou_mean": np.nan,
                                "n_seeds": 0,
                                "label": INIT_LABELS.get(init, init),
                                "note": f"not evaluated: {reason}",
                            }
                        ]
                    ),
                ],
                ignore_index=True,
            )
    return out.sort_values(["init", "k"], kind="stable").reset_index(drop=True)


def gains_table(
    results: Results, init: str = "noisy_full", reference: str = "random", task: str = TASK_A
) -> pd.DataFrame:
    """Paired (per seed) mIoU difference ``init - reference`` per k (main noisy labels), with its 95 % interval."""
    df = results.finetune
    main = results.settings["main_noisy_labels"]
    df = df[
        (df.task == task)
        & ((df.pretraining == main) | ~df.init.str.startswith("noisy"))
        & df.k.isin(results.settings["k_values"])
    ]
    rows = []
    for k in sorted(df.k.unique()):
        a = df[(df.init == init) & (df.k == k)].set_index("seed").miou
        b = df[(df.init == reference) & (df.k == k)].set_index("seed").miou
        if not len(set(a.index) & set(b.index)):
            continue
        rows.append({"init": init, "reference": reference, "k": int(k), **paired_by_index(a, b)})
    return pd.DataFrame(rows)


def regime_runs(results: Results) -> pd.DataFrame:
    """Random initialisation on task A at the fewest and the most tiles over every seed (``seeds`` and the extra
    ``regime_seeds``): the rows the label-limited precondition is judged on."""
    ks = (results.settings["k_values"][0], results.settings["k_values"][-1])
    frames = [results.finetune] + ([results.regime] if results.regime is not None and len(results.regime) else [])
    ft = pd.concat(frames, ignore_index=True)
    return ft[(ft.task == TASK_A) & (ft.init == "random") & ft.k.isin(ks)].reset_index(drop=True)


def regime_table(results: Results) -> pd.DataFrame:
    """The regime the claims are judged in, per k: the floor (most frequent class), the classical reference (QDA),
    random initialisation (over the regime seeds too), the noisy- and the clean-pretrained (upper bound) U-Nets;
    with their plateau (largest late gain) and time per run."""
    ft = results.finetune[results.finetune.task == TASK_A]
    regime = regime_runs(results)
    main = results.settings["main_noisy_labels"]
    rows = []
    for init in ("majority", "qda", "random", "noisy_full", "clean_full"):
        for k in results.settings["k_values"]:
            table = regime if init == "random" else ft
            sub = table[(table.init == init) & (table.k == k) & ((table.pretraining == main) | (init != "noisy_full"))]
            if sub.empty:
                continue
            rows.append(
                {
                    "row": INIT_LABELS[init],
                    "k": int(k),
                    "miou_mean": sub.miou.mean(),
                    "late_gain_max": sub.late_gain.max(),
                    "seconds_mean": sub.seconds.mean(),
                    "n_seeds": sub.seed.nunique(),
                }
            )
    return pd.DataFrame(rows)


def noise_sweep_table(results: Results) -> pd.DataFrame:
    """Per noisy severity: pixel noise rate, pretrained mIoU (no fine-tuning), fine-tuned mIoU at sweep_k and the
    paired gain over random initialisation; the clean-pretrained row is the reference (``reference=True``)."""
    s = results.settings
    ft = results.finetune[(results.finetune.task == TASK_A) & (results.finetune.k == s["sweep_k"])]
    random_ = ft[ft.init == "random"].set_index("seed").miou
    pre = results.pretrain[results.pretrain.order == 0]
    rows = []
    for level in [0.0] + list(s["noise_levels"]):
        key = label_key(level)
        sub = (
            ft[(ft.init == "clean_full") if level == 0 else ((ft.init == "noisy_full") & (ft.pretraining == key))]
            .set_index("seed")
            .miou
        )
        gain = paired_by_index(sub, random_) if len(set(sub.index) & set(random_.index)) else {}
        p = pre[pre.labels == key]
        rows.append(
            {
                "severity": level,
                "reference": level == 0,
                "pixel_noise_rate": p.pixel_noise_rate.mean(),
                "pretrained_miou_no_finetune": p.test_miou.mean(),
                "finetuned_miou": sub.mean(),
                "gain_over_random": gain.get("mean_diff", np.nan),
                "gain_ci95_low": gain.get("ci95_low", np.nan),
                "gain_ci95_high": gain.get("ci95_high", np.nan),
                "n_seeds": gain.get("n", 0),
            }
        )
    return pd.DataFrame(rows)


def task_b_table(results: Results) -> pd.DataFrame:
    df = results.finetune[results.finetune.task == TASK_B]
    if df.empty:
        return pd.DataFrame([{"init": "-", "note": f"not evaluated: {results.unavailable.get(TASK_B, 'no rows')}"}])
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    out["k"] = out["k"].astype(int)
    return out


def layer_excess_table(results: Results) -> pd.DataFrame:
    """Per seed and layer: clean vs noisy value, the null (clean vs clean, other order) and their difference."""
    lay = results.layers
    if lay.empty:
        return pd.DataFrame(columns=["seed", "name", "part", "depth", "n_params", "raw", "null", "excess"])
    main = lay[lay.comparison == "clean vs noisy"].set_index(["seed", "name"])
    null = lay[lay.comparison != "clean vs noisy"].set_index(["seed", "name"]).value
    out = main[["part", "depth", "n_params"]].copy()
    out["raw"], out["null"] = main.value, null.reindex(main.index)
    out["excess"] = out.raw - out.null
    return out.reset_index()


def layer_parts_table(results: Results) -> pd.DataFrame:
    """Per seed and part: mean raw value, mean null and mean null-corrected excess over the part's layers."""
    per_layer = layer_excess_table(results)
    return (
        per_layer.groupby(["seed", "part"])[["raw", "null", "excess"]]
        .mean()
        .reset_index()
        .assign(layers=per_layer.groupby(["seed", "part"]).size().to_numpy())
    )


def layer_null_table(results: Results) -> pd.DataFrame:
    """Per seed: layers with a null value, and |Spearman rho| against layer size of the raw value, the null and the
    null-corrected excess (the claim reads the excess: the raw value and the null both follow layer size through
    training itself, as a layer's initial sd shrinks with its fan-in and an Adam step does not)."""
    from scipy.stats import spearmanr

    rows = []
    for seed, sub in layer_excess_table(results).groupby("seed"):
        ok = sub.null.notna()
        row = {"seed": seed, "null_layers": int(ok.sum())}
        for name, column in (("raw", "raw"), ("null", "null"), ("excess", "excess")):
            rho = spearmanr(np.log(sub.n_params[ok]), sub[column][ok]).statistic if ok.sum() > 2 else np.nan
            row[f"{name}_size_corr_abs"] = float(abs(rho))
        rows.append(row)
    columns = ["seed", "null_layers", "raw_size_corr_abs", "null_size_corr_abs", "excess_size_corr_abs"]
    return pd.DataFrame(rows, columns=columns)


def settings_table(results: Results) -> pd.DataFrame:
    return pd.DataFrame([{"setting": k, "value": str(v)} for k, v in results.settings.items()])


def data_table(results: Results) -> pd.DataFrame:
    """Per seed: chips per split, pixel noise rate of each pretraining label set, no-data pixels (masked out)."""
    rows = []
    for seed, info in (results.data.summary if results.data else {}).items():
        rows.append(
            {
                "seed": seed,
                **{f"tiles_{k}": v for k, v in info["tiles"].items()},
                **{f"noise_rate_{k}": round(v, 3) for k, v in info["pixel_noise_rate"].items()},
                "nodata_pixels": info["nodata_pixels"],
            }
        )
    return pd.DataFrame(rows)


def headline_metrics(results: Results) -> dict:
    s = results.settings
    out = {"seconds": round(results.seconds, 1)}
    for r in label_efficiency_table(results).dropna(subset=["k"]).itertuples():
        out[f"miou_{r.init}_k{int(r.k)}"] = round(float(r.miou_mean), 4)
    for r in gains_table(results).itertuples():
        out[f"gain_noisy_full_vs_random_k{int(r.k)}"] = round(float(r.mean_diff), 4)
    out["gain_smallest_k"] = out.get(f"gain_noisy_full_vs_random_k{s['k_values'][0]}", float("nan"))
    for r in layer_parts_table(results).groupby("part")[["raw", "null", "excess"]].mean().reset_index().itertuples():
        out[f"layer_{r.part}_raw"], out[f"layer_{r.part}_null"] = round(float(r.raw), 5), round(float(r.null), 5)
        out[f"layer_{r.part}_excess"] = round(float(r.excess), 5)
    regime = regime_runs(results).pivot_table(index="seed", columns="k", values="miou")
    if regime.shape[1] == 2:
        out["label_limited_diff"] = round(float((regime.iloc[:, 1] - regime.iloc[:, 0]).mean()), 4)
    out["late_gain_max_random"] = round(float(results.finetune[results.finetune.init == "random"].late_gain.max()), 4)
    return out


def closing_note(results: Results, claims: pd.DataFrame) -> str:
    """The report's closing note (markdown): the regime's numbers and each claim's status, from the run's tables."""
    s, m = results.settings, headline_metrics(results)
    k_few, k_many = s["k_values"][0], s["k_values"][-1]

    def num(key, fmt=".3f"):
        value = m.get(key)
        return "n/a" if value is None or not np.isfinite(value) else format(value, fmt)

    def late(task):
        ft = results.finetune
        values = ft[(ft.task == task) & (ft.init == "random")].late_gain
        return "n/a" if values.dropna().empty else f"{values.max():.3f}"

    lines = [
        f"**Regime** ({len(s['seeds'])} seeds; fine-tuning steps {s['finetune_steps']} at k={s['k_values']}): "
        f"floor (most frequent class) {num(f'miou_majority_k{k_few}')} / {num(f'miou_majority_k{k_many}')}; random "
        f"init {num(f'miou_random_k{k_few}')} at k={k_few} and {num(f'miou_random_k{k_many}')} at k={k_many} "
        f"(label-limited over {len(s['seeds']) + len(s.get('regime_seeds', []))} seeds: "
        f"{num('label_limited_diff')}); per-pixel QDA {num(f'miou_qda_k{k_few}')} / {num(f'miou_qda_k{k_many}')}; clean-pretrained (ceiling) "
        f"{num(f'miou_clean_full_k{k_few}')} / {num(f'miou_clean_full_k{k_many}')}; noisy-pretrained encoder+decoder "
        f"{num(f'miou_noisy_full_k{k_few}')} / {num(f'miou_noisy_full_k{k_many}')}. Largest late gain of random init "
        f"{late(TASK_A)} on task A, {late(TASK_B)} on task B (plateau if below "
        f"{s.get('plateau_max_gain', float('nan')):g}).",
        "",
        f"**Layer-wise measure** (mean over seeds): encoder raw {num('layer_encoder_raw', '.3g')}, null "
        f"{num('layer_encoder_null', '.3g')}, excess {num('layer_encoder_excess', '.3g')}; decoder raw {num('layer_decoder_raw', '.3g')}, "
        f"null {num('layer_decoder_null', '.3g')}, excess {num('layer_decoder_excess', '.3g')}.",
        "",
        "**Claims**:",
    ]
    for row in claims.itertuples():
        lines.append(f"- `{row.claim}`: **{row.status}** (preconditions: {row.preconditions}). {row.reason}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------

_CLASS_COLOURS = {
    "cultivated": "#e6c84f",
    "grassland": "#9ad16b",
    "shrubland": "#5f9e4f",
    "forest": "#1f5a2c",
    "water": "#2b6fd6",
    "artificial": "#c0392b",
    "low vegetation": "#9ad16b",
    "road": "#555555",
    "building": "#c0392b",
}


def _cmap(task):
    import matplotlib
    from matplotlib.colors import ListedColormap

    names = landcover.task_legend(task)[0] if task in landcover.TASKS else list(task)
    tab = matplotlib.colormaps["tab10"]
    return ListedColormap([_CLASS_COLOURS.get(n, tab(i % 10)) for i, n in enumerate(names)]), names


def _show_labels(ax, labels, task, title=""):
    cmap, names = _cmap(task)
    shown = np.ma.masked_equal(labels, IGNORE_INDEX)
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def false_colour(image: np.ndarray, bands=landcover.NIRRGB) -> np.ndarray:
    """NIR-R-G false colour (vegetation red), stretched to the 2-98 % range per band."""
    bands = tuple(bands)
    pick = [bands.index(b) for b in ("B08", "B04", "B03") if b in bands][:3]
    rgb = np.nan_to_num(image[pick].transpose(1, 2, 0).astype(np.float64))
    lo, hi = np.percentile(rgb, 2, axis=(0, 1)), np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def plot_tiles(tiles: landcover.LandcoverTiles, n: int = 4):
    """False-colour image, lulc labels, structure labels and height for ``n`` tiles."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = min(n, len(tiles))
    fig, axes = plt.subplots(4, n, figsize=(2.2 * n, 8.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(false_colour(tiles.images[i], tiles.bands))
        axes[0, i].set_title(f"tile {i}: NIR-R-G", fontsize=8)
        axes[0, i].axis("off")
        _show_labels(axes[1, i], tiles.labels(TASK_A)[i], TASK_A, "task A: lulc")
        _show_labels(axes[2, i], tiles.labels(TASK_B)[i], TASK_B, "task B: structure")
        im = axes[3, i].imshow(tiles.height[i], cmap="viridis")
        axes[3, i].set_title("height (nDSM, m)", fontsize=8)
        axes[3, i].axis("off")
    fig.colorbar(im, ax=axes[3, :].tolist(), fraction=0.02)
    for task, row in ((TASK_A, 1), (TASK_B, 2)):
        cmap, names = _cmap(task)
        axes[row, -1].legend(
            handles=[Patch(color=cmap(j), label=nm) for j, nm in enumerate(names)],
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
        )
    return fig


def plot_noise_models(
    tiles: landcover.LandcoverTiles,
    index: int = 0,
    severity: float = 0.6,
    seed: int = 0,
    models: Sequence[str] | None = None,
    composite: Sequence[str] = DEFAULT_NOISE,
):
    """Clean labels of one tile next to each noise model's output and the composite, with pixel noise rates."""
    import matplotlib.pyplot as plt

    models = list(models or label_noise.NOISE_MODELS)
    clean = tiles.labels(TASK_A)[index]
    context = {"height": tiles.height[index], "ndvi": tiles.ndvi()[index]}
    ka = len(landcover.task_legend(TASK_A)[0])
    panels = [("clean", clean)]
    for name in models:
        noisy = label_noise.make_noise(name, severity, ka)(clean, np.random.default_rng(seed), **context)
        panels.append((name, noisy))
    noisy = label_noise.make_noise(list(composite), severity, ka)(clean, np.random.default_rng(seed), **context)
    panels.append(("composite: " + "+".join(composite), noisy))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.6))
    axes[0].imshow(false_colour(tiles.images[index], tiles.bands))
    axes[0].set_title("image (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    for ax, (name, labels) in zip(axes[1:], panels):
        rate = label_noise.noise_rate(clean, labels)
        title = name if name == "clean" else f"{name}\n{rate:.0%} px changed"
        _show_labels(ax, labels, TASK_A, title if len(title) < 40 else f"composite\n{rate:.0%} px changed")
    fig.suptitle(f"label-noise models at severity {severity:g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_label_efficiency(results: Results, task: str = TASK_A):
    """mIoU vs number of clean tiles, one line per initialisation (95 % t-interval band over seeds), QDA dashed,
    the floor (most frequent class) dotted; each initialisation has the colour it has in the curves figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    table = label_efficiency_table(results, task).dropna(subset=["k"])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for init, sub in table.groupby("init", sort=False):
        sub = sub.sort_values("k")
        reference = {"qda": dict(ls="--", color="grey"), "majority": dict(ls=":", color="black")}
        style = reference.get(init, dict(color=f"C{INITS.index(init)}" if init in INITS else "grey"))
        ax.plot(sub.k, sub.miou_mean, marker="o", label=INIT_LABELS.get(init, init), **style)
        if sub.miou_ci95_low.notna().any():
            ax.fill_between(sub.k, sub.miou_ci95_low, sub.miou_ci95_high, color=style["color"], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(results.settings["k_values"], [str(k) for k in results.settings["k_values"]])
    ax.set_xlabel("clean labelled tiles for fine-tuning (k)")
    ax.set_ylabel("test mIoU")
    title = (
        f"label efficiency ({len(results.settings['seeds'])} seed(s), band = 95 % CI, "
        f"steps {results.settings['finetune_steps']} at k={results.settings['k_values']})"
    )
    for init, _reason in results.unavailable.items():
        if init in INITS:
            title += f"\n{INIT_LABELS.get(init, init)}: not evaluated (weights unavailable; see the table)"
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(results: Results):
    """Validation mIoU along fine-tuning (mean over seeds) per initialisation and k; the last fifth shaded."""
    import matplotlib.pyplot as plt

    curves = results.curves
    ks = sorted(curves[curves.task == TASK_A].k.unique())
    panels = [(TASK_A, k) for k in ks] + [(TASK_B, k) for k in sorted(curves[curves.task == TASK_B].k.unique())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3), squeeze=False, sharey=True)
    main = results.settings["main_noisy_labels"]
    for ax, (task, k) in zip(axes[0], panels):
        sub = curves[
            (curves.task == task)
            & (curves.k == k)
            & ((curves.pretraining == main) | ~curves.init.str.startswith("noisy"))
        ]
        for init, g in sub.groupby("init", sort=False):
            m = g.groupby("step").val_miou.mean()
            colour = f"C{INITS.index(init)}" if init in INITS else "grey"  # one colour per init in every panel
            ax.plot(m.index, m.values, marker=".", color=colour, label=INIT_LABELS.get(init, init))
        steps = steps_for_k(results.settings["finetune_steps"], results.settings["k_values"], k)
        ax.axvspan(steps * (1 - PLATEAU_FRACTION), steps, color="grey", alpha=0.12, lw=0)
        ax.set_title(f"task {'A' if task == TASK_A else 'B'} ({task}), k={k}", fontsize=8)
        ax.set_xlabel("fine-tuning step")
    axes[0, 0].set_ylabel("validation mIoU")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(
        f"shaded: the last fifth; plateau = it improves the best score by < {results.settings['plateau_max_gain']:g}",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def plot_noise_sweep(results: Results):
    """Fine-tuned mIoU and the paired gain over random init vs pretraining noise severity (noisy levels), with
    clean pretraining as a horizontal reference line."""
    import matplotlib.pyplot as plt

    sweep = noise_sweep_table(results)
    noisy, ref = sweep[~sweep.reference], sweep[sweep.reference].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(
        noisy.severity,
        noisy.finetuned_miou,
        marker="s",
        label=f"noisy-pretrained, fine-tuned on {results.settings['sweep_k']} clean tiles",
    )
    axes[0].plot(noisy.severity, noisy.pretrained_miou_no_finetune, marker="o", label="pretrained, no fine-tuning")
    axes[0].axhline(ref.finetuned_miou, color="C2", ls="--", lw=1, label="clean-pretrained, fine-tuned (reference)")
    axes[0].set_xlabel("pretraining noise severity")
    axes[0].set_ylabel("test mIoU (clean labels)")
    axes[0].legend(fontsize=7)
    ax2 = axes[0].twiny()
    ax2.set_xlim(axes[0].get_xlim())
    ax2.set_xticks(noisy.severity)
    ax2.set_xticklabels([f"{r:.0%}" for r in noisy.pixel_noise_rate], fontsize=7)
    ax2.set_xlabel("pixels with a wrong label", fontsize=8)
    axes[1].errorbar(
        noisy.severity,
        noisy.gain_over_random,
        yerr=[
            noisy.gain_over_random - noisy.gain_ci95_low.fillna(noisy.gain_over_random),
            noisy.gain_ci95_high.fillna(noisy.gain_over_random) - noisy.gain_over_random,
        ],
        marker="o",
        capsize=3,
        label="noisy-pretrained",
    )
    axes[1].axhline(ref.gain_over_random, color="C2", ls="--", lw=1, label="clean-pretrained (reference)")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_xlabel("pretraining noise severity")
    axes[1].set_ylabel("mIoU gain over random init")
    axes[1].set_title("benefit vs noise (95 % CI over seeds)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_layerwise(results: Results):
    """Per-layer divergence along depth: raw (clean vs noisy) with the null (clean vs clean, other data order),
    and the null-corrected excess; mean over seeds with the min-max band."""
    import matplotlib.pyplot as plt

    per_layer = layer_excess_table(results)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True)
    for ax, cols, title in (
        (axes[0], ("raw", "null"), "raw: clean vs noisy, and the null"),
        (axes[1], ("excess",), "null-corrected: raw - null"),
    ):
        for i, col in enumerate(cols):
            stats = per_layer.groupby(["depth", "part"])[col].agg(["mean", "min", "max"]).reset_index()
            ax.plot(
                stats.depth,
                stats["mean"],
                color=f"C{i}",
                lw=1,
                label={
                    "raw": "clean vs noisy",
                    "null": "clean vs clean, other data order (null)",
                    "excess": "excess over the null",
                }[col],
            )
            ax.fill_between(stats.depth, stats["min"], stats["max"], color=f"C{i}", alpha=0.2, lw=0)
            for part, marker in (("encoder", "o"), ("decoder", "s")):
                p = stats[stats.part == part]
                ax.scatter(p.depth, p["mean"], color=f"C{i}", marker=marker, s=12)
        boundary = per_layer.loc[per_layer.part != "encoder", "depth"].min()
        if np.isfinite(boundary):
            ax.axvline(boundary - 0.5, color="grey", ls="--", lw=0.8)
        if col == "excess":
            ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("KL (nats)")
        ax.legend(fontsize=7)
    axes[1].set_xlabel("layer (forward order; circles encoder, squares decoder and head)")
    fig.suptitle(weight_analysis.DIVERGENCE_ESTIMATOR_SHORT, fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# The real Sentinel-2 patch (a figure of real class geometry under the noise models)
# ---------------------------------------------------------------------------------------------------


def real_patch_figure(
    root: str | Path | None, severity: float = 0.3, noise_models: Sequence[str] = DEFAULT_NOISE, seed: int = 0
):
    """The eo-learn Sentinel-2 patch under ``root`` with its LULC label and a noisy copy; ``(None, reason)`` when
    ``root`` is None or absent. Returns ``(figure, summary dict)``; the summary counts no-data pixels."""
    import matplotlib.pyplot as plt

    if root is None:
        return None, {"available": False, "reason": "no patch folder given (LABKIT_SHARED_DATA unset)"}
    try:
        image, mask, meta = landcover.load_eolearn_patch(root)
    except DataError as exc:
        return None, {"available": False, "reason": str(exc)}
    ka = len(landcover.task_legend(TASK_A)[0])
    images, masks, counts = landcover.prepare_tiles(
        image[None], mask[None], len(meta["bands"]), ka, names=[f"{root}/REFERENCE_SCENES.npy scene {meta['scene']}"]
    )
    models = [m for m in noise_models if m != "sensor_rule"]  # the patch has no surface height (nDSM)
    skipped = [m for m in noise_models if m == "sensor_rule"]
    noisy = (
        label_noise.make_noise(models, severity, ka)(masks[0], np.random.default_rng(seed))
        if models
        else masks[0].copy()
    )
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
    axes[0].imshow(false_colour(images[0], meta["bands"]))
    axes[0].set_title("Sentinel-2 scene 2 (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    _show_labels(axes[1], masks[0], TASK_A, "LULC reference (white = no data)")
    _show_labels(axes[2], noisy, TASK_A, f"composite noise {severity:g}: {label_noise.noise_rate(masks[0], noisy):.0%}")
    fig.tight_layout()
    labelled = masks[0] != IGNORE_INDEX
    summary = {
        "available": True,
        "pixels": int(masks[0].size),
        "labelled_pixels": int(labelled.sum()),
        "nodata_label_pixels": int((~labelled).sum()),
        "nan_image_pixels": counts["nodata_pixels"],
        "class_pixels": {n: int((masks[0] == i).sum()) for i, n in enumerate(landcover.task_legend(TASK_A)[0])},
        "noisy_pixel_rate": label_noise.noise_rate(masks[0], noisy),
        "noise_models": models,
        "noise_models_skipped": {m: "needs a surface height (nDSM) the patch lacks" for m in skipped},
    }
    return fig, summary


def shared_patch_root() -> Path | None:
    """The eo-learn patch under ``LABKIT_SHARED_DATA`` (``remote_sensing/eolearn_testeopatch_slovenia``), if set."""
    import os

    base = os.environ.get("LABKIT_SHARED_DATA")
    return Path(base) / "remote_sensing" / "eolearn_testeopatch_slovenia" if base else None


# ---- plan: the preset's real budget (labkit plan)
from labkit.studies.noisy_label_pretraining.plan import plan  # noqa: E402, F401
