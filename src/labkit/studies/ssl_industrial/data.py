"""Study 3's data: the checks the spec cannot express, then simulated surfaces or a user's MVTec AD category /
per-class folder (``data_source``, ``data_root``) split by a documented, seeded rule (:func:`split_inspection`):
defect-free images for pretraining and the PatchCore memory bank, defect images between the labelled pool and the
test set, and as many unrelated photographs (the claim-3 control). Saved once as an ``.npz`` every grid task reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from labkit.core.arms import Arm, arm_colours, arm_labels
from labkit.core.errors import DataError, ParameterError
from labkit.core.grid import file_digest
from labkit.core.params import check_data_root
from labkit.core.seeding import regime_seeds
from labkit.data.inspection_folders import GOOD_NAMES
from labkit.data.layouts_inspection import INSPECTION_LAYOUTS
from labkit.data.prepared_arrays import write_prepared_arrays
from labkit.data.surfaces import SurfaceSimulator, unrelated_images

NAME = "ssl_industrial"
#: The initialisations (ViT encoders, then the U-Net) and the 'all good' floor: the rows of every table.
ARMS = (
    Arm("scratch", "ViT from scratch (random init)", "tab:grey"),
    Arm("mae", "MAE (in-domain)", "tab:blue"),
    Arm("simclr", "SimCLR (in-domain)", "tab:orange"),
    Arm("mae_unrelated", "MAE (unrelated photos)", "tab:purple"),
    Arm("dinov2", "DINOv2 ViT-S/14 (hub)", "tab:green"),
    Arm("unet", "small CNN U-Net from scratch", "tab:brown"),
    Arm("all_good", "'all good' (floor: no defect anywhere)", "black", reference=True),
)
INIT_LABELS = arm_labels(ARMS)
COLOURS = arm_colours(ARMS)
#: The pretrained inits: (method, images it pretrains on).
PRETRAINED = {"mae": ("mae", "in_domain"), "simclr": ("simclr", "in_domain"), "mae_unrelated": ("mae", "unrelated")}
VIT_INITS = ("scratch", "mae", "simclr", "mae_unrelated", "dinov2")


#: A defect smaller than this many pixels at ``img_size`` is about gone after the resize (a 3 x 3 blob).
MIN_DEFECT_PIXELS = 9


def check_config(cfg) -> None:
    """The configure-time checks (the spec's ``config_checks``: every entry point runs them before any work; no
    pixel is read). Parameters against each other: a pretraining batch larger than ``n_unlabeled`` (both
    numbers named), ``good_class`` without ``data_source`` per_class, hub weights for the study's ViT. Then the
    ``data_source`` / ``data_root`` rule, and against a real folder's files, counted by name:
    :func:`check_folder_counts`. A real source without ``data_root`` passes here (a plan needs no folder); the
    data step stops on it, quoting the layout."""
    if cfg.pretrain_batch_size > cfg.n_unlabeled:
        raise ParameterError(
            f"parameter pretrain_batch_size = {cfg.pretrain_batch_size} is larger than n_unlabeled = "
            f"{cfg.n_unlabeled}, the unlabeled images it draws its batches from; lower pretrain_batch_size (a "
            "fraction of n_unlabeled, so an epoch is several optimiser steps) or raise n_unlabeled"
        )
    if cfg.good_class is not None and cfg.data_source != "per_class":
        raise ParameterError(
            f"parameter good_class ('{cfg.good_class}') names the defect-free class folder of data_source "
            f"per_class; data_source is {cfg.data_source} (the MVTec layout's defect-free folder is always 'good')"
        )
    if cfg.encoder_weights == "pretrained":
        raise ParameterError(
            "parameter encoder_weights: the study's ViT has no hub weights at its size; give random, "
            "labkit:<name> or a file"
        )
    if cfg.data_source != "simulated" and not cfg.data_root:
        return
    root = check_data_root(cfg, INSPECTION_LAYOUTS)
    if root is not None:
        check_folder_counts(cfg, root)


def no_defect_free_images(cfg, root, classes, readable: bool = False) -> str:
    """The error for a folder without a defect-free image, at configure time (files counted by name) or after
    reading (``readable``): where the study looked, and the parameter that names the folder."""
    image = "readable image" if readable else "image"
    where = (
        f"train/good and test/good hold no {image}"
        if cfg.data_source == "mvtec"
        else f"no class folder is named {'/'.join(GOOD_NAMES)}"
        + (f" or good_class '{cfg.good_class}'" if cfg.good_class else "")
        + f"; every class folder {'was read' if readable else 'reads'} as a defect class: {sorted(set(classes))}. "
        "Name your defect-free folder with good_class (-p good_class <folder>)"
    )
    return f"{root}: 0 defect-free images: {where}"


def check_folder_counts(cfg, root: Path) -> dict:
    """A real folder's image files counted by name (:func:`~labkit.data.inspection_folders.count_inspection_files`)
    against the parameters, with :func:`split_inspection`'s rule: no defect-free image (the folder is not named
    like one: ``good_class``), fewer than 2 defect images, fewer defect-free images left for pretraining than
    ``n_unlabeled`` are errors. (A labelled pool too small for every seed to draw its own images is not: the run
    warns and reports the overlap, table ``label_subset_overlap``.) Returns the counts and the split's sizes."""
    from labkit.data.inspection_folders import count_inspection_files

    counts = count_inspection_files(root, cfg.data_source, good_class=cfg.good_class)
    good, bad = counts["good"], counts["defect"]
    if good == 0:
        raise DataError(no_defect_free_images(cfg, root, counts["classes"]))
    if bad < 2:
        raise DataError(
            f"{root}: {bad} defect image(s); the study needs at least 2 (one for the labelled pool, one for the "
            "test set)"
        )
    sizes = split_sizes(good, bad)
    if sizes["unlabeled"] < cfg.n_unlabeled:
        rest = sizes["unlabeled"]
        remedy = (
            f"lower n_unlabeled (-p n_unlabeled {rest}) or add defect-free images"
            if rest >= 2
            else "add defect-free images (pretraining needs at least 2)"
        )
        raise DataError(
            f"{root}: {good} defect-free images, of which {rest} are left for pretraining after the test set and "
            f"the labelled pool take theirs, but n_unlabeled={cfg.n_unlabeled} were asked for; {remedy}"
        )
    return {**counts, **sizes}


def split_sizes(n_good: int, n_bad: int) -> dict:
    """The sizes :func:`split_inspection` gives a folder of ``n_good`` defect-free and ``n_bad`` defect images."""
    pool_bad = n_bad // 2
    test_bad = n_bad - pool_bad
    test_good, pool_good = min(test_bad, n_good // 4), min(pool_bad, n_good // 4)
    return {
        "pool_defect": pool_bad,
        "pool_good": pool_good,
        "test_defect": test_bad,
        "test_good": test_good,
        "unlabeled": n_good - test_good - pool_good,
    }


def check_inputs(cfg) -> None:
    """Before the data are read: the ``data_source`` / ``data_root`` rule (a real source without its folder stops
    here, quoting the layout), then :func:`check_config` again (a folder changed since configure)."""
    check_data_root(cfg, INSPECTION_LAYOUTS)
    check_config(cfg)


def _pool_size(cfg) -> int:
    """Simulated labelled pool: one block of the most labels per seed (regime seeds included), and 15 % more, as
    about half the draws are defective: no two seeds share an image."""
    return int(np.ceil(1.15 * max(cfg.label_counts) * len(regime_seeds(cfg))))


def warn_small_defects(inspection, cfg) -> dict:
    """Warn, naming ``img_size``, when the median defect of a real folder would cover fewer than
    :data:`MIN_DEFECT_PIXELS` pixels once its image's short side is resized to ``img_size`` (it is resized away:
    every row would sit at the floor), and list the masks whose defect vanished in the resize. Returns the
    numbers (``median_fraction``, ``median_pixels``, ``suggested_img_size``, ``vanished``)."""
    fractions = inspection.defect_fractions
    bad = (inspection.labels == 1) & (fractions > 0) if fractions is not None else None
    if bad is None or not bad.any():
        return {}
    median = float(np.median(fractions[bad]))
    pixels = float(np.median(inspection.defect_pixels[bad]))
    side = int(np.ceil(cfg.img_size * np.sqrt(MIN_DEFECT_PIXELS / pixels) / cfg.patch_size) * cfg.patch_size)
    out = {"median_fraction": median, "median_pixels": pixels, "suggested_img_size": side}
    out["vanished"] = list(inspection.vanished)
    if pixels < MIN_DEFECT_PIXELS:
        warnings.warn(
            f"{cfg.data_root}: the median defect covers {100 * median:.3g} % of its image, {pixels:.1f} pixel(s) with "
            f"the image's short side at img_size={cfg.img_size}: defects this small mostly vanish in the resize and "
            f"every row may sit at the 'all good' floor; raise img_size (-p img_size {side} gives the median defect "
            f"about {MIN_DEFECT_PIXELS} pixels)",
            stacklevel=2,
        )
    if inspection.vanished:
        warnings.warn(
            f"{len(inspection.vanished)} defect mask(s) under {cfg.data_root} have no defect pixel left after the "
            f"resize to img_size={cfg.img_size} (raise img_size): " + "; ".join(inspection.vanished[:10]),
            stacklevel=2,
        )
    return out


def tile_starts(length: int, size: int) -> list[int]:
    """Where tiles of ``size`` start along a side of ``length`` (>= size): the fewest that cover it, evenly spread
    (neighbours overlap when ``size`` does not divide ``length``)."""
    n = -(-length // size)
    return sorted({int(round(x)) for x in np.linspace(0, length - size, n)})


def crop_start(mask: np.ndarray, size: int, rng) -> tuple[int, int]:
    """The top-left corner of one ``size`` x ``size`` crop of an image whose short side is ``size``: for a defect
    mask, the window holding the most defect pixels (the first such along the long side); a defect-free one at a
    seeded random position."""
    h, w = mask.shape
    axis_len = max(h, w)
    if axis_len == size:
        return 0, 0
    profile = mask.sum(axis=0 if h <= w else 1).astype(np.int64)
    if profile.any():
        window = np.convolve(profile, np.ones(size, np.int64), mode="valid")
        start = int(np.argmax(window))
    else:
        start = int(rng.integers(0, axis_len - size + 1))
    return (0, start) if h <= w else (start, 0)


def cut_to_size(s, size: int, how: str, rng) -> dict:
    """A split of aspect-kept images (short side ``size``, :func:`labkit.data.inspection_folders.load_per_class`
    with ``fit="short_side"``) as ``size`` x ``size`` inputs, never squashed: ``tiles`` covers each image (every
    defect pixel lands in at least one tile; a tile of a defect image without defect pixels is defect-free),
    ``crop`` takes one crop per image (a defect image's crop holds the most defect pixels: the labelled pool
    keeps one input per labelled image). Returns images, masks, defect_types, the source image of each input
    (``source``), and for crops the defect pixels the crop left out (``cut_pixels``, per image)."""
    images, masks, types, source, cut = [], [], [], [], []
    for i in range(len(s)):
        im, m, t = s.images[i], s.masks[i], s.defect_types[i]
        h, w = m.shape
        if how == "tiles":
            corners = [(y, x) for y in tile_starts(h, size) for x in tile_starts(w, size)]
        else:
            corners = [crop_start(m, size, rng)]
        for y, x in corners:
            part = m[y : y + size, x : x + size]
            images.append(im[:, y : y + size, x : x + size])
            masks.append(part)
            types.append(t if t == "good" or part.any() or not m.any() else "good")
            source.append(i)
        if how == "crop":
            cut.append(int(m.sum() - masks[-1].sum()))
    c = s.images[0].shape[0] if len(s) else 1
    out = {
        "images": np.stack(images).astype(np.float32) if images else np.zeros((0, c, size, size), np.float32),
        "masks": np.stack(masks).astype(np.int64) if masks else np.zeros((0, size, size), np.int64),
        "defect_types": np.asarray(types, str),
        "source": np.asarray(source, np.int64),
    }
    if how == "crop":
        out["cut_pixels"] = np.asarray(cut, np.int64)
    return out


def fit_real_sets(sets: dict, cfg) -> tuple[dict, dict]:
    """The split's images as ``img_size`` inputs (:func:`cut_to_size`): the labelled pool one crop per image, the
    unlabeled, memory-bank and test sets tiled. Warns, naming the images, when a labelled crop leaves defect
    pixels out (a defect longer than ``img_size``). Returns the sets and what the fit did (``geometry``: per set
    the source images and the inputs cut from them, and the labelled crops that left defect pixels out)."""
    rng = np.random.default_rng(1000 * cfg.data_seed + 11)
    out, geometry = (
        {},
        {"fit": f"short side resized to img_size={cfg.img_size}, aspect kept; pool cropped, others tiled"},
    )
    for name, s in sets.items():
        out[name] = cut_to_size(s, cfg.img_size, "crop" if name == "pool" else "tiles", rng)
        geometry[name] = {"source_images": len(s), "inputs": len(out[name]["images"])}
    pool, cut = sets["pool"], out["pool"]["cut_pixels"]
    if cut.any():
        lost = [f"{pool.files[i]} ({int(cut[i])} of {int(pool.masks[i].sum())} px)" for i in np.flatnonzero(cut)]
        warnings.warn(
            f"{len(lost)} labelled image(s) under {cfg.data_root} hold a defect longer than img_size={cfg.img_size} "
            "after the resize: their crop leaves defect pixels out (the crop keeps the most): " + "; ".join(lost[:10]),
            stacklevel=2,
        )
    geometry["pool_crops_cutting_defects"] = int((cut > 0).sum())
    return out, geometry


def split_order(labels, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded order :func:`split_inspection` deals a folder's defect and defect-free images in (indices)."""
    rng = np.random.default_rng(1000 * data_seed + 7)
    labels = np.asarray(labels)
    return rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))


def _tiles_of(path, img_size: int) -> int:
    """The ``img_size`` tiles :func:`cut_to_size` cuts one image into, from its header alone (no pixel decoded):
    short side resized to ``img_size``, aspect kept, :func:`tile_starts` along both sides. A file whose header
    cannot be read counts one tile (the loader skips or rejects it later)."""
    from PIL import Image

    from labkit.data.inspection_folders import fitted_shape

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - a plan counts; the loader reports the file
        return 1
    fh, fw = fitted_shape((h, w), img_size, "short_side")
    return len(tile_starts(fh, img_size)) * len(tile_starts(fw, img_size))


def split_inputs(cfg) -> dict | None:
    """What a real folder gives the tiled sets, from file names and image headers only (no pixel decoded; a
    plan's count), as :func:`split_inspection` deals it and :func:`cut_to_size` tiles it: per set (``unlabeled``:
    the ``n_unlabeled`` defect-free images left for pretraining; ``good``: the first ``n_good`` of them,
    PatchCore's memory bank; ``test``: its defect and defect-free images) the source ``images`` and the
    ``img_size`` ``tiles`` the run feeds the network (an image longer than it is wide gives several). None for
    simulated data or without a folder."""
    if cfg.data_source == "simulated" or not cfg.data_root:
        return None
    from labkit.data.inspection_folders import list_inspection_files

    files = list_inspection_files(cfg.data_root, cfg.data_source, good_class=cfg.good_class)
    labels = np.array([0 if good else 1 for _, good in files], int)
    bad, good = split_order(labels, cfg.data_seed)
    sizes = split_sizes(len(good), len(bad))
    start = sizes["test_good"] + sizes["pool_good"]
    unlabeled = good[start : start + cfg.n_unlabeled]
    test = np.concatenate([bad[sizes["pool_defect"] :], good[: sizes["test_good"]]])
    sets = {"unlabeled": unlabeled, "good": unlabeled[: cfg.n_good], "test": test}
    tiles = {int(i): _tiles_of(files[i][0], cfg.img_size) for i in np.concatenate(list(sets.values()))}
    return {k: {"images": len(v), "tiles": int(sum(tiles[int(i)] for i in v))} for k, v in sets.items()}


def pretraining_inputs(cfg) -> dict | None:
    """What a real folder gives pretraining (:func:`split_inputs`' ``unlabeled``): the ``n_unlabeled`` defect-free
    images :func:`split_inspection` leaves for pretraining and the ``img_size`` tiles they are cut into, which are
    the inputs the pretraining batches draw from. None for simulated data or without a folder."""
    sets = split_inputs(cfg)
    return None if sets is None else sets["unlabeled"]


def split_inspection(inspection, cfg) -> dict:
    """The documented, seeded split of a real inspection folder (``docs/data/ssl_industrial.md``).

    Shuffled with ``data_seed``: the **defect** images go half to the labelled pool, half to the test set
    (test gets the odd one); the **defect-free** images give the test set as many as it has defect images,
    the pool as many as it has defect images (each at most a quarter of the defect-free images); the rest
    is the unlabeled pretraining set, whose first ``n_good`` images are also PatchCore's memory bank.
    Raises DataError when fewer than ``n_unlabeled`` defect-free images are left for pretraining.
    """
    bad, good = split_order(inspection.labels, cfg.data_seed)
    if len(good) == 0:
        raise DataError(no_defect_free_images(cfg, cfg.data_root, inspection.defect_types, readable=True))
    if len(bad) < 2:
        raise DataError(
            f"{cfg.data_root}: {len(bad)} defect image(s) with masks; the study needs at least 2 "
            "(one for the labelled pool, one for the test set)"
        )
    sizes = split_sizes(len(good), len(bad))
    n_pool_bad, n_test_good, n_pool_good = sizes["pool_defect"], sizes["test_good"], sizes["pool_good"]
    pool_bad, test_bad = bad[:n_pool_bad], bad[n_pool_bad:]
    test_good, pool_good = good[:n_test_good], good[n_test_good : n_test_good + n_pool_good]
    rest = good[n_test_good + n_pool_good :]
    if len(rest) < cfg.n_unlabeled:
        remedy = (
            f"lower n_unlabeled (-p n_unlabeled {len(rest)}) or add defect-free images"
            if len(rest) >= 2
            else "add defect-free images (pretraining needs at least 2)"
        )
        raise DataError(
            f"{cfg.data_root}: {len(good)} defect-free images, of which {len(rest)} are left for "
            f"pretraining after the test set and the labelled pool take theirs, but n_unlabeled="
            f"{cfg.n_unlabeled} were asked for; {remedy}"
        )
    unlabeled = rest[: cfg.n_unlabeled]
    return {
        "unlabeled": inspection.subset(unlabeled),
        "pool": inspection.subset(np.concatenate([pool_bad, pool_good])),
        "test": inspection.subset(np.concatenate([test_bad, test_good])),
        "good": inspection.subset(unlabeled[: cfg.n_good]),
    }


def data(cfg) -> dict:
    """The study's sets: ``unlabeled``, ``pool`` (labelled), ``test``, ``good`` (memory bank), ``unrelated``
    (photos, the claim-3 control), each with ``images`` (N, C, H, W) in [0, 1] (and ``masks``, ``defect_types``),
    saved once as an ``.npz`` that every grid task reads (``data["file"]``, ``data["digest"]``)."""
    check_inputs(cfg)
    base = 1000 * cfg.data_seed
    if cfg.data_source == "simulated":
        sim = SurfaceSimulator(size=cfg.img_size, channels=cfg.channels, defect_fraction=0.5)
        sets = {
            "unlabeled": sim.sample(cfg.n_unlabeled, seed=base + 1, defect_fraction=cfg.unlabeled_defect_fraction),
            "pool": sim.sample(_pool_size(cfg), seed=base + 2),
            "test": sim.sample(cfg.n_test, seed=base + 3),
            "good": sim.sample(cfg.n_good, seed=base + 4, defect_fraction=0.0),
        }
    else:
        from labkit.data.inspection_folders import load_mvtec_style, load_per_class

        # aspect kept (short side img_size), then tiled or cropped to img_size: never squashed
        common = dict(channels=cfg.channels, size=cfg.img_size, on_corrupt=cfg.on_corrupt, fit="short_side")
        if cfg.data_source == "mvtec":
            inspection = load_mvtec_style(cfg.data_root, defect_types=cfg.defect_types, **common)
        else:
            classes = None
            if cfg.defect_types is not None:
                classes = list(cfg.defect_types) + list(GOOD_NAMES) + ([cfg.good_class] if cfg.good_class else [])
            inspection = load_per_class(cfg.data_root, classes=classes, good_class=cfg.good_class, **common)
        defects = warn_small_defects(inspection, cfg)
        sets, geometry = fit_real_sets(split_inspection(inspection, cfg), cfg)
        geometry["masks_vanished_in_resize"] = len(defects.get("vanished", []))
        geometry["median_defect_pixels"] = defects.get("median_pixels")
    out = {}
    for name, s in sets.items():
        out[name] = {
            "images": np.asarray(s["images"] if isinstance(s, dict) else s.images, np.float32),
            "masks": np.asarray(s["masks"] if isinstance(s, dict) else s.masks, np.int64),
            "defect_types": np.asarray(s["defect_types"] if isinstance(s, dict) else s.defect_types, str),
        }
    out["unrelated"] = {
        "images": unrelated_images(
            len(out["unlabeled"]["images"]), size=cfg.img_size, channels=cfg.channels, seed=base + 5
        )
    }
    mean = out["unlabeled"]["images"].mean(axis=(0, 2, 3))
    std = out["unlabeled"]["images"].std(axis=(0, 2, 3)) + 1e-6
    arrays = {f"{k}_{f}": v for k, d in out.items() for f, v in d.items()}
    arrays.update(pixel_mean=mean.astype(np.float32), pixel_std=std.astype(np.float32))
    from labkit.core.paths import cache_dir

    path, _ = write_prepared_arrays(cache_dir(f"{NAME}/data"), arrays, digest_of=sorted(arrays))
    out.update(file=path, digest=file_digest(path), source=cfg.data_source)
    if cfg.data_source != "simulated":
        out["geometry"] = geometry
    return out
