"""The study's data: the checks the spec cannot express, then simulated tiles or the user's GeoTIFF tree, split
per seed into a pretraining pool (noisy labels), a fine-tuning pool, validation and test tiles (clean), each seed's
arrays in one prepared file (named by its recipe) that every grid task reads by path and digest.

``data_source=simulated``: multispectral land-cover tiles (:mod:`labkit.data.landcover`), their pretraining labels
corrupted at every severity of the sweep. ``geotiff`` / ``noldo_s12``: the tree under ``data_root``
(:mod:`labkit.data.geotiff_tree`: ``images/``, ``labels_noisy/``, ``labels_clean/`` and a legend), cut into
``tile`` chips; its ``labels_noisy`` are the main noisy labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labkit.core.arms import Arm, arm_labels
from labkit.core.errors import DataError, ParameterError
from labkit.core.params import check_data_root
from labkit.core.seeding import regime_seeds
from labkit.data import label_noise, landcover
from labkit.data.geotiff_tree import load_geotiff_tree
from labkit.data.layouts_geotiff import LAYOUTS
from labkit.methods.noisy_label_encoder import DEFAULT_NOISE, band_statistics, noisy_labels, normalise
from labkit.methods.unet_training import IGNORE_INDEX
from labkit.models.band_mapping import BandMappingError, describe_mapping

NAME = STUDY = "noisy_label_pretraining"
TASK_A, TASK_B = "lulc", "structure"  # the land-cover task the encoder is pretrained on, and the new-classes task
INITS = ("random", "noisy_encoder", "noisy_full", "clean_full", "imagenet")
#: The rows of every table: the initialisations fine-tuned (each the colour of its place in INITS), the
#: clean-pretrained upper bound, the classical reference and the floor (read against, never claimed).
ARMS = (
    Arm("random", "random initialisation", "C0"),
    Arm("noisy_encoder", "noisy-pretrained encoder, new decoder", "C1"),
    Arm("noisy_full", "noisy-pretrained encoder + decoder", "C2"),
    Arm("clean_full", "clean-pretrained encoder + decoder (upper bound)", "C3", reference=True),
    Arm("imagenet", "encoder_weights encoder (ImageNet by default)", "C4"),
    Arm("qda", "per-pixel QDA on the k clean tiles (classical reference)", "grey", reference=True),
    Arm("majority", "most frequent class of the k tiles everywhere (floor)", "black", reference=True),
)
INIT_LABELS = arm_labels(ARMS)
#: Rows of the results that are references (no fine-tuning): the classical model and the floor.
REFERENCE_ROWS = ("qda", "majority")


def label_key(severity: float | None) -> str:
    """Name of a pretraining label set: ``clean``, ``sev0p3`` (synthetic noise at 0.3) or ``real`` (labels_noisy)."""
    if severity is None:
        return "real"
    return "clean" if float(severity) == 0 else "sev" + f"{float(severity):g}".replace(".", "p")


def main_noisy_key(cfg) -> str:
    """The label set of the main noisy pretraining: the real noisy labels, or synthetic noise at noise_severity."""
    return "real" if cfg.get("data_source", "simulated") != "simulated" else label_key(cfg.get("noise_severity"))


def sweep_levels(cfg) -> list[float]:
    """Noisy severities of the sweep (> 0; the main severity of simulated data included)."""
    levels = {float(v) for v in cfg.get("noise_levels")}
    if cfg.get("data_source", "simulated") == "simulated":
        levels.add(float(cfg.get("noise_severity")))
    return sorted(levels - {0.0})


def finetune_steps(cfg) -> list[int]:
    """``finetune_steps`` as a list (a single number is one count for every k)."""
    steps = cfg.get("finetune_steps")
    return [int(steps)] if isinstance(steps, (int, np.integer)) else [int(v) for v in steps]


def shared_pretraining(cfg) -> bool:
    """Whether one pretraining per label set (on the first seed's pool) serves every seed's fine-tunes: simulated
    data only (real tiles are split per seed, so the first seed's pretraining chips can be another seed's fine-tuning
    or test chips: they always pretrain per seed)."""
    return bool(cfg.get("shared_pretraining", False)) and cfg.get("data_source", "simulated") == "simulated"


def steps_for_k(steps: Sequence[int], k_values: Sequence[int], k: int) -> int:
    """Fine-tuning steps on ``k`` tiles: ``steps`` (from :func:`finetune_steps`) holds one count per entry of
    ``k_values`` (paired in their order) or one count for every k; a k between two entries (task B, a sweep k)
    interpolates linearly in log k, and one outside takes the nearest end's count."""
    if len(steps) == 1:
        return steps[0]
    ks = np.log(sorted(int(v) for v in k_values))
    return int(round(float(np.interp(np.log(int(k)), ks, [steps[i] for i in np.argsort(list(k_values))]))))


def check_parameters(cfg) -> None:
    """Stop before any work when the data source cannot be read (``data_root``, quoting the folder's layout) or a
    combination of settings cannot run (:func:`validate_settings`)."""
    check_data_root(cfg, LAYOUTS)
    validate_settings(cfg)


def validate_settings(cfg) -> None:
    """ParameterError naming the parameter when a combination cannot run (beyond the spec's type/range checks)."""
    tile, depth = int(cfg.get("tile")), int(cfg.get("encoder_depth", 5))
    if tile % 2**depth:
        raise ParameterError(f"tile={tile}: a {depth}-stage U-Net needs a multiple of {2**depth}")
    if tile // 2**depth < 2:
        raise ParameterError(
            f"tile={tile} with encoder_depth={depth} leaves the encoder a "
            f"{tile // 2**depth}x{tile // 2**depth} deepest map: lower encoder_depth or raise tile"
        )
    if cfg.get("data_source", "simulated") == "simulated":
        bands = list(cfg.get("bands", landcover.NIRRGB))
        unknown = [b for b in bands if b not in landcover.S2_BANDS]
        if unknown:
            raise ParameterError(f"bands: unknown Sentinel-2 bands {unknown}; known: {landcover.S2_BANDS}")
        if "sensor_rule" in list(cfg.get("noise_models")) and not {"B08", "B04"} <= set(bands):
            raise ParameterError("noise_models: 'sensor_rule' thresholds NDVI, which needs bands B08 and B04")
    noise_models = list(cfg.get("noise_models"))
    unknown = [n for n in noise_models if n not in label_noise.NOISE_MODELS]
    if unknown or not noise_models:
        raise ParameterError(
            f"noise_models: unknown or empty {unknown or noise_models}; known: {list(label_noise.NOISE_MODELS)}"
        )
    if float(cfg.get("noise_severity")) <= 0:
        raise ParameterError("noise_severity must be > 0: it is the noisy pretraining (clean pretraining always runs)")
    levels = [float(v) for v in cfg.get("noise_levels")]
    if any(not 0 < v <= 1 for v in levels):
        raise ParameterError(
            f"noise_levels must lie in (0, 1] (clean pretraining is the reference line, not a level), got {levels}"
        )
    k_values = [int(k) for k in cfg.get("k_values")]
    if len(set(k_values)) != len(k_values) or min(k_values) < 1 or len(k_values) < 2:
        raise ParameterError(f"k_values must be two or more distinct positive tile counts, got {k_values}")
    inits = list(cfg.get("inits"))
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
    if cfg.get("data_source", "simulated") == "simulated":
        check_rgb_bands(cfg, list(cfg.get("bands", landcover.NIRRGB)))
    if int(cfg.get("eval_points")) > min(steps):
        raise ParameterError(
            "eval_points must be <= every finetune_steps (the steps are split between the evaluations)"
        )


#: No-data pixels of the chips a run uses, counted apart: image (NaN in any band), clean label and noisy label
#: (the pretraining chips' noisy masks) no-data; each is masked out of every loss and score.
NO_NODATA = {"nodata_image_pixels": 0, "nodata_label_pixels": 0, "nodata_noisy_label_pixels": 0}


def imagenet_mapped(cfg) -> bool:
    """Whether the run maps ImageNet's RGB filters to its bands: the ``imagenet`` row with ``pretrained`` weights."""
    return "imagenet" in list(cfg.get("inits")) and str(cfg.get("encoder_weights")) == "pretrained"


def check_rgb_bands(cfg, bands: Sequence[str]) -> str | None:
    """The mapping of ImageNet's R, G, B filters to ``bands`` in words (None when no ``imagenet`` row maps them);
    ParameterError naming the bands and the parameter to set when the bands cannot be matched by name."""
    if not imagenet_mapped(cfg):
        return None
    rgb = cfg.get("rgb_bands")
    try:
        return describe_mapping(bands, rgb)
    except BandMappingError as exc:
        what = f"rgb_bands={list(rgb)}" if rgb else "the bands"
        raise ParameterError(
            f"inits includes 'imagenet' with encoder_weights 'pretrained', whose first convolution has red, green and "
            f"blue filters, but {what} of this run cannot be matched to them: {exc}. Set parameter 'rgb_bands' to the "
            "names of the red, green and blue bands (in that order), or drop 'imagenet' from inits, or give "
            "encoder_weights a file for these bands"
        ) from None


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
    real_patch: dict | None = None  # {"patch", "summary"} of the eo-learn Sentinel-2 patch (:func:`real_patch`)


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
        "pretrain": int(cfg.get("n_pretrain_tiles")),
        # every k a fine-tune reads (k_values, task_b_k, sweep_k): the pool holds the largest, never fewer
        "finetune": max(int(k) for k in [*cfg.get("k_values"), cfg.get("task_b_k"), cfg.get("sweep_k") or 0]),
        "val": int(cfg.get("n_val_tiles")),
        "test": int(cfg.get("n_test_tiles")),
    }


def data(cfg) -> StudyData:
    """The study's data (:func:`make_data`) and the real Sentinel-2 patch of the data figures, when the workplace's
    samples are at hand (``LABKIT_SHARED_DATA``)."""
    prepared = make_data(cfg)
    patch, summary = real_patch(
        shared_patch_root(), severity=cfg.get("noise_severity"), noise_models=cfg.get("noise_models")
    )
    prepared.real_patch = {"patch": patch, "summary": summary}
    return prepared


def make_data(cfg) -> StudyData:
    """Simulate or load the tiles of every seed and write one prepared file per seed (cached by its recipe).

    ``data_source=simulated``: each seed simulates its own pretraining, fine-tuning, validation and test tiles and
    corrupts the pretraining labels at every severity of the sweep. ``geotiff`` / ``noldo_s12``: the tree under
    ``data_root`` is read and checked in full first (errors name the tile), cut into ``tile`` chips, split per seed
    (:func:`_tree_plan`): test and validation take whole places (tiles of the same bounds, e.g. dates of one place),
    fine-tuning and pretraining chips come from the other places' chip locations, disjoint, no location in both;
    a split the data cannot fill is an error before any array is built (:func:`_check_plans`), never silently
    smaller. The main noisy labels are the tree's ``labels_noisy``, the sweep corrupts its clean labels with the
    synthetic noise models.
    """
    check_parameters(cfg)
    if cfg.get("data_source", "simulated") == "simulated":
        return _simulated(cfg)
    return _from_tree(cfg)


def _simulated(cfg) -> StudyData:
    """Each seed's own simulated splits, the pretraining labels corrupted at every severity of the sweep."""
    source = cfg.get("data_source", "simulated")
    tile, seeds = int(cfg.get("tile")), regime_seeds(cfg)
    noise_models, levels = list(cfg.get("noise_models")), sweep_levels(cfg)
    sizes = _split_sizes(cfg)
    classes_a = list(landcover.task_legend(TASK_A)[0])
    classes_b = list(landcover.task_legend(TASK_B)[0])
    files, summary, examples = {}, {}, None
    bands = list(cfg.get("bands"))
    sim = landcover.LandscapeSimulator(tile, bands=bands)
    # Shared pretraining: every seed's tiles normalised by the band statistics of the pool that one pretraining saw
    # (the first seed's; as a user normalises with the pretrained network's statistics), each seed by its own else.
    pool_seed = int(cfg.get("seeds")[0]) if shared_pretraining(cfg) else None
    shared_norm = (
        band_statistics(sim.sample(sizes["pretrain"], seed=1000 * pool_seed + 1).images)
        if pool_seed is not None
        else None
    )
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
            **({"norm_pool_seed": pool_seed} if pool_seed is not None else {}),
        }
        split = {name: sim.sample(n, seed=base + i + 1) for i, (name, n) in enumerate(sizes.items())}
        if examples is None:
            examples = split["finetune"].subset(slice(0, 4))
        mean, std = shared_norm if shared_norm is not None else band_statistics(split["pretrain"].images)
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
            **NO_NODATA,
        }
    return StudyData(source, files, classes_a, classes_b, bands, summary, examples)


def _from_tree(cfg) -> StudyData:
    """The GeoTIFF tree under ``data_root``, checked in full, every seed's split planned and checked before any
    array is built (:func:`_tree_plan`, :func:`_check_plans`), then one prepared file per seed."""
    from labkit.core.grid import file_digest

    source, root, tile = cfg.get("data_source", "simulated"), cfg.get("data_root"), int(cfg.get("tile"))
    sizes = _split_sizes(cfg)
    tree = load_geotiff_tree(root, tile)
    check_rgb_bands(cfg, tree["bands"])
    plans = {seed: _tree_plan(cfg, tree, seed, sizes) for seed in regime_seeds(cfg)}
    _check_plans(cfg, plans, sizes)
    tree_digest = file_digest(root)
    shared = [[tree["names"][i] for i in place] for place in _places(tree) if len(place) > 1]
    files, summary = {}, {}
    for seed, plan in plans.items():
        arrays, nodata, rates = _tree_split(cfg, tree, plan)
        recipe = {
            "source": source,
            "tree": tree_digest,
            "tile": tile,
            "seed": seed,
            "sizes": sizes,
            "noise_models": list(cfg.get("noise_models")),
            "levels": sweep_levels(cfg),
            "version": 3,
        }
        files[seed] = _save_arrays(arrays, recipe)
        summary[seed] = {
            "tiles": {k: len(plan[k]) for k in SPLITS},
            "pixel_noise_rate": rates,
            **nodata,
            "source_tiles": {k: len({tree["names"][i] for i, _, _ in plan[k]}) for k in SPLITS},
            "chips": {k: [_chip_id(tree, c) for c in plan[k]] for k in SPLITS},
            "same_place_tiles": shared,
        }
    return StudyData(source, files, tree["classes"], None, tree["bands"], summary, None)


#: The splits of a prepared file, in the order the arrays are written.
SPLITS = ("pretrain", "finetune", "val", "test")


def _chip_id(tree: dict, chip: tuple) -> str:
    i, y, x = chip
    return f"{tree['names'][i]}@{y},{x}"


def _places(tree: dict) -> list[list[int]]:
    """Tiles grouped by place: tiles on the same grid (CRS, bounds, shape; e.g. dates of one place) form one group,
    which never spans two splits. In the order of their first tile."""
    groups: dict = {}
    for i, grid in enumerate(tree["grids"]):
        groups.setdefault(grid, []).append(i)
    return list(groups.values())


def _windows(shape: tuple, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``tile`` windows of a tile (as :func:`chips` cuts them)."""
    h, w = shape
    return [(y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def _tree_plan(cfg, tree: dict, seed: int, sizes: dict) -> dict:
    """One seed's split of the tree's chips, ``(tile index, y, x)`` per split; no place in two splits.

    Whole places (tiles of the same bounds) go to test, then validation, until each has its chips; the chips of the
    other places are grouped by location (a place's window, every date of it). The fine-tuning chips come first,
    one chip (one date) per location, the rest of those locations dropped; the pretraining chips from the other
    locations (every date). ``pretrain_pool``: the chips left for pretraining once the fine-tuning ones are set
    aside (what :func:`_check_plans` compares with ``n_pretrain_tiles``)."""
    tile = int(cfg.get("tile"))
    places = _places(tree)
    shape = lambda i: tree["images"][i].shape[1:]  # noqa: E731
    plan: dict = {name: [] for name in SPLITS}
    rest = []
    for p in np.random.default_rng(seed).permutation(len(places)):  # whole places into test, then val
        place = places[p]
        chips_of = [(i, y, x) for i in place for y, x in _windows(shape(i), tile)]
        for name in ("test", "val"):
            if len(plan[name]) < sizes[name]:
                plan[name] += chips_of
                break
        else:
            rest.append(place)
    locations = [[(i, y, x) for i in place] for place in rest for y, x in _windows(shape(place[0]), tile)]
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(locations))
    ft_locations = order[: sizes["finetune"]]
    plan["finetune"] = [locations[j][int(rng.integers(len(locations[j])))] for j in ft_locations]
    pool = [c for j in order[sizes["finetune"] :] for c in locations[j]]
    plan["pretrain"] = pool[: sizes["pretrain"]]
    plan.update(seed=seed, rest_places=len(rest), locations=len(locations), pretrain_pool=len(pool))
    return plan


def _check_plans(cfg, plans: dict, sizes: dict) -> None:
    """DataError before any array is built when a seed's split cannot give a split its chips: no place left for
    training, fewer fine-tuning locations than the largest k, or fewer pretraining chips than ``n_pretrain_tiles``
    (naming the largest value the data allow, over every seed); nothing is silently reduced."""
    root, tile = cfg.get("data_root"), int(cfg.get("tile"))
    held_out = f"{sizes['test']} test and {sizes['val']} validation chips"
    for plan in plans.values():
        if not plan["rest_places"]:
            raise DataError(
                f"data_root {root}: no place (tiles of one bounds) is left for pretraining and fine-tuning after "
                f"{held_out} of {tile} px (seed {plan['seed']}); add tiles or lower n_test_tiles / n_val_tiles"
            )
        if plan["locations"] < sizes["finetune"]:
            raise DataError(
                f"data_root {root}: the largest fine-tuning k ({sizes['finetune']}, of k_values / task_b_k / sweep_k) is larger "
                f"than the {plan['locations']} chip locations of {tile} px left after {held_out} (seed "
                f"{plan['seed']}), before any pretraining chip; lower k_values / task_b_k, n_test_tiles / n_val_tiles "
                "or add tiles"
            )
    worst = min(plans.values(), key=lambda p: p["pretrain_pool"])
    if worst["pretrain_pool"] < sizes["pretrain"]:
        raise DataError(
            f"n_pretrain_tiles={sizes['pretrain']}: the data allow at most {worst['pretrain_pool']} pretraining chips "
            f"of {tile} px (seed {worst['seed']}: {worst['locations']} chip locations outside the {held_out}, of which "
            f"{sizes['finetune']} are the fine-tuning chips, largest k of k_values / task_b_k / sweep_k, kept apart "
            f"from pretraining); set n_pretrain_tiles to {worst['pretrain_pool']} or less, lower k_values / task_b_k or "
            "n_test_tiles / n_val_tiles, or add tiles"
        )


def _tree_split(cfg, tree: dict, plan: dict):
    """One seed's arrays of the tree (:func:`_tree_plan`): chips per split, no-data masked out of every loss and
    counted (image, clean label, noisy label), normalised by the pretraining chips, the sweep's synthetic noise on
    the clean pretraining labels."""
    tile, classes_a, bands = int(cfg.get("tile")), tree["classes"], tree["bands"]
    arrays, nodata = {}, dict(NO_NODATA)
    for name in SPLITS:
        window = lambda a, y, x: a[..., y : y + tile, x : x + tile]  # noqa: E731
        xs = [window(tree["images"][i], y, x) for i, y, x in plan[name]]
        clean = [window(tree["clean"][i], y, x) for i, y, x in plan[name]]
        if not xs:
            raise DataError(f"data_root {cfg.get('data_root')}: no {tile} px chips for the {name} split")
        # label no-data as the files give it (before image no-data is masked into the same labels)
        nodata["nodata_label_pixels"] += int((np.stack(clean) == IGNORE_INDEX).sum())
        images, masks, counts = landcover.prepare_tiles(
            np.stack(xs),
            np.stack(clean),
            len(bands),
            len(classes_a),
            names=[f"{name} chip {_chip_id(tree, c)}" for c in plan[name]],
            fill_value=np.nan,
        )
        nodata["nodata_image_pixels"] += counts["nodata_pixels"]
        arrays[f"x_{name}"], arrays[f"a_{name}"] = images, masks
        if name == "pretrain":
            noisy = np.stack([window(tree["noisy"][i], y, x) for i, y, x in plan[name]])
            nodata["nodata_noisy_label_pixels"] += int((noisy == IGNORE_INDEX).sum())
            arrays["a_pretrain_real"] = np.where(masks == IGNORE_INDEX, IGNORE_INDEX, noisy)
    mean, std = band_statistics(arrays["x_pretrain"])
    for name in SPLITS:
        x = normalise(arrays[f"x_{name}"], mean, std)
        arrays[f"x_{name}"] = np.nan_to_num(x, nan=0.0)  # no-data pixels: filled, and masked to 255 above
    clean = arrays["a_pretrain"]
    rates = {"clean": 0.0, "real": label_noise.noise_rate(clean, arrays["a_pretrain_real"])}
    seed = plan["seed"]
    for level in sweep_levels(cfg):
        noisy = noisy_labels(None, clean, list(cfg.get("noise_models")), level, 1000 * seed + 5, len(classes_a))
        arrays[f"a_pretrain_{label_key(level)}"] = np.where(clean == IGNORE_INDEX, IGNORE_INDEX, noisy)
        rates[label_key(level)] = label_noise.noise_rate(clean, noisy)
    arrays["norm"] = np.stack([mean, std])
    return arrays, nodata, rates


# ---- the real Sentinel-2 patch (a figure of real class geometry under the noise models)


def shared_patch_root() -> Path | None:
    """The eo-learn patch under ``LABKIT_SHARED_DATA`` (``remote_sensing/eolearn_testeopatch_slovenia``), if set."""
    import os

    base = os.environ.get("LABKIT_SHARED_DATA")
    return Path(base) / "remote_sensing" / "eolearn_testeopatch_slovenia" if base else None


def real_patch(
    root: str | Path | None, severity: float = 0.3, noise_models: Sequence[str] = DEFAULT_NOISE, seed: int = 0
) -> tuple[dict | None, dict]:
    """The eo-learn Sentinel-2 patch under ``root`` with its LULC label and a noisy copy: ``(patch, summary)``,
    ``patch`` None when ``root`` is None or absent (the summary says why). ``patch``: ``image`` (C, H, W),
    ``bands``, ``mask`` and ``noisy`` (H, W); the summary counts no-data pixels and each class's."""
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
    patch = {"image": images[0], "bands": meta["bands"], "mask": masks[0], "noisy": noisy, "severity": severity}
    return patch, summary
