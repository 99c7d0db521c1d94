"""Long-tailed aerial scene simulator for semi-supervised segmentation.

Each scene is a small nadir view of farmland: fields of bare soil and grass
(Voronoi parcels), lakes, woodland, hedgerows on some field borders, roads,
buildings beside the roads, vehicles on the roads, and single tree crowns.
Layers are painted back to front so later objects occlude earlier ones
(tree crowns hide parts of vehicles, roads and roofs).

The image is formed the way an airborne camera sees it: every class has a
reflectance (RGB) and a texture with its own spatial scale (crop rows,
canopy clumps, road grain); grass and woodland share a hue and differ mostly
in texture scale and brightness, hedgerows are woodland-like, grey roofs
look like asphalt. A seasonal shift moves vegetation towards soil colours,
illumination varies smoothly over the scene, haze adds a veil, the optics
blur everything with a Gaussian PSF (so boundaries become ambiguous over
1-2 pixels) and the sensor adds shot and read noise.

The class frequencies are long-tailed because of the geometry, not because of
a target: parcels cover most of the scene, roads are 3-6 ground units wide,
vehicles 1.6x3 units and hedgerows one or two units wide.

``SceneConfig.resolution`` is the camera's pixels per ground unit: every ground
length (parcels' crop rows, roads, buildings, vehicles, hedgerows, tree crowns,
texture scales) is that many pixels per unit, while the optics' blur stays
0.6-1.3 px (a finer sensor behind a lens designed for it). A scene of side
``2 n`` at resolution 2 covers the ground of a scene of side ``n`` at 1 with the
same object counts, so the class shares stay and only the sampling is finer
(a vehicle is about 3x6 px instead of 2x3).

Splits: :func:`sample_labeled_split` draws the labelled subset for a fraction
(fixed by the seed) and :func:`write_split_lists` saves it as the
``labeled.txt`` / ``unlabeled.txt`` id lists used by public semi-supervised
benchmarks (e.g. ``splits/pascal/1_16/labeled.txt``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import ndimage

from labkit.core.errors import DataError, ParameterError

SCENE_CLASSES: tuple[str, ...] = (
    "soil",
    "grass",
    "woodland",
    "water",
    "road",
    "building",
    "vehicle",
    "hedgerow",
)
"""Class names, in label-id order."""

# Reflectance (linear RGB, 0..1) of each class under the reference sun.
_REFLECTANCE = np.array(
    [
        [0.46, 0.36, 0.26],  # soil
        [0.30, 0.44, 0.20],  # grass
        [0.20, 0.32, 0.15],  # woodland (darker, same hue as grass)
        [0.10, 0.16, 0.24],  # water
        [0.40, 0.40, 0.40],  # road (asphalt/gravel)
        [0.52, 0.30, 0.24],  # building (red roof; grey roofs drawn separately)
        [0.65, 0.65, 0.70],  # vehicle (overridden per vehicle)
        [0.21, 0.33, 0.16],  # hedgerow (woodland-like)
    ],
    dtype=np.float32,
)
# (texture sigma in pixels, relative amplitude) per class: the spatial scale of
# the reflectance variation inside a class.
_TEXTURE = np.array(
    [
        [1.2, 0.16],  # soil: clods
        [0.6, 0.10],  # grass: fine
        [1.6, 0.28],  # woodland: canopy clumps
        [3.0, 0.05],  # water: smooth
        [0.5, 0.05],  # road: grain
        [0.5, 0.04],  # building
        [0.5, 0.03],  # vehicle
        [1.2, 0.26],  # hedgerow
    ],
    dtype=np.float32,
)


@dataclass
class SceneConfig:
    """Parameters of the scene simulator."""

    size: int = 64
    n_parcels: tuple[int, int] = (4, 9)
    water_probability: float = 0.45
    woodland_cover: tuple[float, float] = (0.0, 0.25)
    hedgerow_probability: float = 0.5
    n_roads: tuple[int, int] = (0, 2)
    n_buildings: tuple[int, int] = (0, 4)
    n_vehicles: tuple[int, int] = (0, 6)
    n_tree_crowns: tuple[int, int] = (0, 6)
    psf_sigma: tuple[float, float] = (0.6, 1.3)
    season_shift: float = 0.5
    read_noise: float = 0.015
    photons_at_white: float = 2000.0
    resolution: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ParameterError(f"SceneConfig.size must be >= 16, got {self.size}")
        if not self.resolution > 0:
            raise ParameterError(f"SceneConfig.resolution must be > 0, got {self.resolution}")


@dataclass
class SceneSet:
    """Simulated scenes: images (N,3,H,W) float32 in [0,1], masks (N,H,W) int64."""

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...] = SCENE_CLASSES
    config: SceneConfig = field(default_factory=SceneConfig)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int]) -> SceneSet:
        idx = np.asarray(indices, dtype=np.int64)
        return SceneSet(self.images[idx], self.masks[idx], [self.ids[i] for i in idx], self.class_names, self.config)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    field_ -= field_.mean()  # a wide kernel leaves an offset that would dominate after scaling
    return field_ / (field_.std() + 1e-8)


def _draw_rect(mask: np.ndarray, cy: float, cx: float, h: float, w: float, angle: float) -> np.ndarray:
    """Boolean mask of a rotated rectangle centred at (cy, cx)."""
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)


def _render_scene(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    n, r = cfg.size, cfg.resolution  # r: pixels per ground unit (every length below is in ground units x r)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    label = np.zeros((n, n), dtype=np.int64)
    reflect = np.zeros((3, n, n), dtype=np.float32)

    # 1. Parcels (Voronoi): soil or grass, each with its own crop-row direction.
    n_parcels = int(rng.integers(cfg.n_parcels[0], cfg.n_parcels[1] + 1))
    seeds = rng.uniform(0, n, size=(n_parcels, 2)).astype(np.float32)
    dist = np.sqrt((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2)
    order = np.argsort(dist, axis=0)
    nearest, second = order[0], order[1]
    d_sorted = np.take_along_axis(dist, order[:2], axis=0)
    parcel_class = rng.choice([0, 1], size=n_parcels, p=[0.5, 0.5])
    label[:] = parcel_class[nearest]
    rows = np.zeros((n, n), dtype=np.float32)
    for p in range(n_parcels):
        theta = rng.uniform(0, np.pi)
        period = r * rng.uniform(2.5, 5.0)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        rows = np.where(nearest == p, wave * rng.uniform(0.03, 0.1), rows)

    # 2. Water: smooth low-lying areas.
    if rng.random() < cfg.water_probability:
        terrain = _smooth_noise(rng, (n, n), n / 6)
        label[terrain > np.quantile(terrain, 1 - rng.uniform(0.05, 0.2))] = 3

    # 3. Woodland patches.
    cover = rng.uniform(*cfg.woodland_cover)
    if cover > 0.01:
        wood = _smooth_noise(rng, (n, n), n / 10)
        label[wood > np.quantile(wood, 1 - cover)] = 2

    # 4. Hedgerows on some parcel borders (1-2 px wide, woodland-like texture).
    if rng.random() < cfg.hedgerow_probability and n_parcels > 1:
        pair_keep = rng.random((n_parcels, n_parcels)) < 0.5
        border = (d_sorted[1] - d_sorted[0]) < r * rng.uniform(0.6, 1.2)
        keep = pair_keep[np.minimum(nearest, second), np.maximum(nearest, second)]
        label[border & keep & (label != 3)] = 7

    # 5. Roads: straight or gently curving bands.
    road_mask = np.zeros((n, n), dtype=bool)
    for _ in range(int(rng.integers(cfg.n_roads[0], cfg.n_roads[1] + 1))):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-n / 3, n / 3)
        bend = _smooth_noise(rng, (n, n), n / 3) * r * rng.uniform(0, 3)
        dist_line = (xx - n / 2) * np.sin(angle) - (yy - n / 2) * np.cos(angle) - offset + bend
        road_mask |= np.abs(dist_line) < r * rng.uniform(1.5, 2.8)
    label[road_mask] = 4

    # 6. Buildings beside roads (or anywhere when there is no road): red or grey roofs.
    roof_grey = np.zeros((n, n), dtype=bool)
    building_mask = np.zeros((n, n), dtype=bool)
    if road_mask.any():
        near_road = ndimage.binary_dilation(road_mask, iterations=max(1, round(6 * r))) & ~road_mask
    else:
        near_road = np.ones((n, n), dtype=bool)
    candidates = np.argwhere(near_road)
    for _ in range(int(rng.integers(cfg.n_buildings[0], cfg.n_buildings[1] + 1))):
        if len(candidates) == 0:
            break
        cy, cx = candidates[rng.integers(len(candidates))]
        rect = _draw_rect(label, cy, cx, r * rng.uniform(3, 7), r * rng.uniform(4, 9), rng.uniform(0, np.pi))
        rect &= ~road_mask
        building_mask |= rect
        if rng.random() < 0.5:
            roof_grey |= rect
    label[building_mask] = 5

    # 7. Vehicles on roads: 2x3 px, random paint.
    vehicle_paint = np.zeros((3, n, n), dtype=np.float32)
    road_px = np.argwhere(road_mask)
    for _ in range(int(rng.integers(cfg.n_vehicles[0], cfg.n_vehicles[1] + 1))):
        if len(road_px) == 0:
            break
        cy, cx = road_px[rng.integers(len(road_px))]
        rect = _draw_rect(label, cy, cx, 1.6 * r, 3.0 * r, rng.uniform(0, np.pi))
        label[rect] = 6
        paint = rng.choice([0.85, 0.15, 0.55]) * np.ones(3) + rng.normal(0, 0.08, 3)
        vehicle_paint[:, rect] = np.clip(paint, 0.02, 0.95)[:, None]

    # 8. Single tree crowns on top of everything (occlusion).
    for _ in range(int(rng.integers(cfg.n_tree_crowns[0], cfg.n_tree_crowns[1] + 1))):
        cy, cx = rng.uniform(0, n, 2)
        radius = r * rng.uniform(1.5, 3.5)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = 2

    # Image formation.
    season = rng.uniform(0, cfg.season_shift)  # 0 = summer green, 1 = dry
    refl_cls = _REFLECTANCE.copy()
    for veg in (1, 2, 7):
        refl_cls[veg] = (1 - season) * refl_cls[veg] + season * (0.6 * refl_cls[veg] + 0.4 * _REFLECTANCE[0])
    for c in range(len(SCENE_CLASSES)):
        sel = label == c
        if not sel.any():
            continue
        sigma, amp = _TEXTURE[c]
        tex = 1.0 + amp * _smooth_noise(rng, (n, n), float(sigma) * r)
        if c in (0, 1):
            tex = tex + rows
        reflect[:, sel] = refl_cls[c][:, None] * tex[sel][None]
    grey_roof = roof_grey & (label == 5)
    reflect[:, grey_roof] = _REFLECTANCE[4][:, None] * (1.0 + 0.05 * rng.standard_normal(grey_roof.sum()))[None]
    is_vehicle = label == 6
    reflect[:, is_vehicle] = vehicle_paint[:, is_vehicle]

    illumination = 1.0 + 0.15 * _smooth_noise(rng, (n, n), n / 2)
    haze = rng.uniform(0.0, 0.08)
    radiance = np.clip(reflect * illumination[None] * (1 - haze) + haze * 0.8, 0, None)
    psf = rng.uniform(*cfg.psf_sigma)  # the optics blur in pixels: a finer sensor keeps its PSF in pixels
    blurred = np.stack([ndimage.gaussian_filter(ch, psf, mode="reflect") for ch in radiance])
    photons = rng.poisson(np.clip(blurred, 0, None) * cfg.photons_at_white).astype(np.float32)
    image = photons / cfg.photons_at_white + rng.normal(0, cfg.read_noise, blurred.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def simulate_scenes(n_images: int, seed: int, config: SceneConfig | None = None, prefix: str = "scene") -> SceneSet:
    """Render ``n_images`` scenes; the same seed gives the same scenes."""
    if n_images < 1:
        raise ParameterError(f"n_images must be >= 1, got {n_images}")
    cfg = config or SceneConfig()
    parent = np.random.SeedSequence(seed)
    images = np.empty((n_images, 3, cfg.size, cfg.size), dtype=np.float32)
    masks = np.empty((n_images, cfg.size, cfg.size), dtype=np.int64)
    for i, child in enumerate(parent.spawn(n_images)):
        images[i], masks[i] = _render_scene(np.random.default_rng(child), cfg)
    ids = [f"{prefix}_{i:05d}" for i in range(n_images)]
    return SceneSet(images, masks, ids, SCENE_CLASSES, cfg)


# ----------------------------------------------------------------------------- statistics


def class_frequencies(masks: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Fraction of (non-ignored) pixels of each class."""
    valid = masks[masks != ignore_index]
    counts = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def frequency_groups(
    frequencies: np.ndarray, class_names: Sequence[str], head_min: float = 0.15, tail_max: float = 0.02
) -> dict[str, str]:
    """Map each class to ``head`` (>= head_min of pixels), ``tail`` (< tail_max) or ``body``."""
    groups = {}
    for name, f in zip(class_names, frequencies):
        groups[name] = "head" if f >= head_min else ("tail" if f < tail_max else "body")
    return groups


def boundary_band(masks: np.ndarray, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Boolean mask of pixels within ``width`` pixels of a class boundary (the ambiguous zone)."""
    masks = np.asarray(masks)
    band = np.zeros(masks.shape, dtype=bool)
    flat = masks.reshape(-1, *masks.shape[-2:])
    out = band.reshape(-1, *masks.shape[-2:])
    for i, m in enumerate(flat):
        edge = np.zeros(m.shape, dtype=bool)
        edge[:, 1:] |= m[:, 1:] != m[:, :-1]
        edge[:, :-1] |= m[:, 1:] != m[:, :-1]
        edge[1:, :] |= m[1:, :] != m[:-1, :]
        edge[:-1, :] |= m[1:, :] != m[:-1, :]
        if width > 1:
            edge = ndimage.binary_dilation(edge, iterations=width - 1)
        out[i] = edge & (m != ignore_index)
    return band


# ----------------------------------------------------------------------------- splits


def fraction_name(fraction: float) -> str:
    """``0.0625 -> "1_16"`` (the folder names public split lists use)."""
    frac = Fraction(fraction).limit_denominator(1024)
    return f"{frac.numerator}_{frac.denominator}"


class SplitCoverageWarning(UserWarning):
    """A labelled split leaves some class without any labelled pixel."""


def sample_labeled_split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Randomly choose ``round(fraction * len(ids))`` labelled ids (at least 1); the rest are unlabeled.

    Raises DataError when the unlabeled set would be empty (nothing to learn from).
    """
    if not 0 < fraction <= 1:
        raise ParameterError(f"labelled fraction must be in (0, 1], got {fraction}")
    ids = list(ids)
    if not ids:
        raise DataError("cannot split an empty id list")
    n_labeled = max(1, int(round(fraction * len(ids))))
    order = np.random.default_rng(seed).permutation(len(ids))
    labeled = sorted(ids[i] for i in order[:n_labeled])
    unlabeled = sorted(ids[i] for i in order[n_labeled:])
    if not unlabeled:
        raise DataError(
            f"labelled fraction {fraction} of {len(ids)} images leaves the unlabeled set empty; "
            "semi-supervised training needs unlabeled images (use a smaller fraction or more images)"
        )
    return labeled, unlabeled


def missing_classes(
    masks: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    context: str = "labelled split",
) -> list[str]:
    """Names of classes with no labelled pixel in ``masks``; warns (SplitCoverageWarning) if any."""
    present = np.bincount(masks[masks != ignore_index].ravel(), minlength=num_classes)[:num_classes] > 0
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    missing = [names[c] for c in range(num_classes) if not present[c]]
    if missing:
        warnings.warn(
            f"{context}: no labelled pixel of class(es) {missing}; their IoU can only come from unlabeled data",
            SplitCoverageWarning,
            stacklevel=2,
        )
    return missing


def write_split_lists(directory: str | Path, labeled: Sequence[str], unlabeled: Sequence[str]) -> Path:
    """Write ``labeled.txt`` and ``unlabeled.txt`` (one id per line) into ``directory``."""
    from labkit.core.atomic import atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "labeled.txt", "".join(f"{i}\n" for i in labeled))
    atomic_write_text(directory / "unlabeled.txt", "".join(f"{i}\n" for i in unlabeled))
    return directory


def read_split_list(path: str | Path, known_ids: Sequence[str] | None = None) -> list[str]:
    """Read one id per line; with ``known_ids``, ids not among them raise DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if known_ids is not None:
        known = set(known_ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"split list {path} names {len(unknown)} unknown sample(s), e.g. {unknown[:3]}")
    return ids
