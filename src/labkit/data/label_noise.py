"""Composable models of pixel-label noise in remote-sensing reference maps, each with a severity.

Every model maps a clean label map ``(H, W)`` (integer class ids; ``ignore_index`` pixels are left alone)
to a noisy one, given a ``numpy.random.Generator``. Severity 0 returns the labels unchanged and 1 is the
model's strongest setting (the exception is :class:`SensorRuleLabels`, whose rule labels differ from the
clean map even at severity 0; its severity scales the other sensor's measurement noise).

- :class:`BoundaryNoise` random dilation of some classes into their neighbours (so others erode),
  as hand-digitised or vectorised polygons do.
- :class:`Misregistration` the label map shifted against the image (co-registration error).
- :class:`ObjectClassFlips` whole objects (connected regions) relabelled to another class.
- :class:`SmallObjectOmission` small objects missing, filled by their surroundings (crowd-sourced maps).
- :class:`CoarseLabels` labels from a coarser map: block majority, then nearest upsampling.
- :class:`SensorRuleLabels` labels from a rule on another sensor: height (LiDAR nDSM) and NDVI thresholds.
- :class:`Compose` applies several in order.

:func:`apply_noise` runs a model over a stack of tiles with one independent generator per tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

IGNORE_INDEX = 255


def _check_severity(severity: float) -> float:
    severity = float(severity)
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be within [0, 1], got {severity}")
    return severity


def _restore_ignored(noisy: np.ndarray, clean: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """Ignored pixels stay ignored, and no ignore label leaks (by a shift or a fill) onto labelled pixels."""
    if ignore_index is None:
        return noisy
    ignored = clean == ignore_index
    leaked = (noisy == ignore_index) & ~ignored
    if leaked.any():
        noisy = _fill_from_nearest(noisy, noisy == ignore_index)
    noisy[ignored] = ignore_index
    return noisy


def _fill_from_nearest(labels: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Replace ``holes`` pixels by the label of the nearest non-hole pixel."""
    if not holes.any() or holes.all():
        return labels
    # Chamfer (chessboard) distance: about 2.5x faster than the exact Euclidean transform, and "nearest" in
    # either metric is a plausible surrounding label.
    iy, ix = ndimage.distance_transform_cdt(holes, metric="chessboard", return_distances=False, return_indices=True)
    out = labels.copy()
    out[holes] = labels[iy[holes], ix[holes]]
    return out


class NoiseModel:
    """Base class: ``model(labels, rng, **context) -> noisy labels`` (a new array)."""

    name = "noise"
    severity: float = 0.0
    ignore_index: int | None = IGNORE_INDEX

    def __call__(self, labels: np.ndarray, rng: np.random.Generator, **context) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"{self.name}: expects one (H, W) label map, got shape {labels.shape}")
        if self.severity == 0 and self.name != "sensor rule":
            return labels.copy()
        return _restore_ignored(self._apply(labels, rng, **context), labels, self.ignore_index)

    def _apply(self, labels, rng, **context):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(severity={self.severity:g})"


@dataclass(repr=False)
class BoundaryNoise(NoiseModel):
    """A random half of the classes present grow by up to ``max_radius * severity`` pixels, eroding the rest."""

    severity: float = 0.5
    max_radius: int = 3
    ignore_index: int | None = IGNORE_INDEX
    name = "boundary"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, **context):
        out = labels.copy()
        classes = [c for c in np.unique(labels) if c != self.ignore_index]
        radius_max = self.max_radius * self.severity
        for c in rng.permutation(classes):
            if rng.random() < 0.5:
                continue
            radius = int(round(rng.uniform(0.5, 1.0) * radius_max))
            if radius < 1:
                continue
            grown = ndimage.maximum_filter((out == c).view(np.uint8), size=2 * radius + 1).astype(bool)
            out[grown] = c
        return out


@dataclass(repr=False)
class Misregistration(NoiseModel):
    """The label map shifted by ``max_shift * severity`` pixels in a random direction (edges replicated)."""

    severity: float = 0.5
    max_shift: float = 4.0
    ignore_index: int | None = IGNORE_INDEX
    name = "misregistration"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, **context):
        angle = rng.uniform(0, 2 * np.pi)
        dy, dx = (int(round(v)) for v in self.max_shift * self.severity * np.array([np.sin(angle), np.cos(angle)]))
        h, w = labels.shape
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        return labels[np.ix_(rows, cols)].copy()


@dataclass(repr=False)
class ObjectClassFlips(NoiseModel):
    """Each connected object is relabelled with probability ``max_rate * severity`` to another class.

    ``num_classes`` bounds the replacement classes (default: the classes present in the tile plus one).
    ``confusion`` (C x C, rows = true class) weights the replacement class; default uniform.
    """

    severity: float = 0.5
    max_rate: float = 0.5
    num_classes: int | None = None
    confusion: np.ndarray | None = None
    ignore_index: int | None = IGNORE_INDEX
    name = "class flips"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, **context):
        from skimage.measure import label as connected

        objects = connected(labels, background=-1, connectivity=1)  # regions of equal value
        n = objects.max() + 1
        first = np.zeros(n, dtype=np.int64)
        first[objects.ravel()[::-1]] = np.arange(objects.size)[::-1]  # one pixel per object
        object_class = labels.ravel()[first]
        num_classes = self.num_classes or int(labels[labels != self.ignore_index].max(initial=0)) + 2
        new_class = object_class.copy()
        flip = (rng.random(n) < self.max_rate * self.severity) & (object_class != self.ignore_index)
        for i in np.flatnonzero(flip):
            weights = (
                np.ones(num_classes)
                if self.confusion is None
                else np.asarray(self.confusion, float)[object_class[i]].copy()
            )
            weights[object_class[i]] = 0
            if weights.sum() > 0:
                new_class[i] = rng.choice(num_classes, p=weights / weights.sum())
        return new_class[objects].astype(labels.dtype)


@dataclass(repr=False)
class SmallObjectOmission(NoiseModel):
    """Objects smaller than ``max_area * severity`` pixels (or of ``classes`` only) vanish into their surroundings."""

    severity: float = 0.5
    max_area: int = 200
    classes: tuple[int, ...] | None = None
    ignore_index: int | None = IGNORE_INDEX
    name = "omission"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, **context):
        from skimage.measure import label as connected

        objects = connected(labels, background=-1, connectivity=1)
        sizes = np.bincount(objects.ravel())
        small = sizes < self.max_area * self.severity
        holes = small[objects]
        if self.classes is not None:
            holes &= np.isin(labels, self.classes)
        holes &= labels != self.ignore_index
        return _fill_from_nearest(labels, holes)


@dataclass(repr=False)
class CoarseLabels(NoiseModel):
    """Majority label over blocks of ``1 + round(severity * (max_factor - 1))`` pixels, upsampled by nearest."""

    severity: float = 0.5
    max_factor: int = 8
    ignore_index: int | None = IGNORE_INDEX
    name = "coarse"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, **context):
        f = 1 + int(round(self.severity * (self.max_factor - 1)))
        if f == 1:
            return labels.copy()
        h, w = labels.shape
        ph, pw = -h % f, -w % f
        padded = np.pad(labels, ((0, ph), (0, pw)), mode="edge").astype(np.int64)
        H, W = padded.shape
        k = int(padded[padded != self.ignore_index].max(initial=0)) + 2  # last slot counts ignored pixels
        values = np.where(padded == self.ignore_index, k - 1, padded)
        block_id = (np.arange(H)[:, None] // f) * (W // f) + np.arange(W)[None, :] // f
        counts = np.bincount((block_id * k + values).ravel(), minlength=(H // f) * (W // f) * k)
        counts = counts.reshape(-1, k)[:, : k - 1]  # ignored pixels do not vote
        block = counts.argmax(1).reshape(H // f, W // f).astype(labels.dtype)
        return np.repeat(np.repeat(block, f, 0), f, 1)[:h, :w]


@dataclass(repr=False)
class SensorRuleLabels(NoiseModel):
    """Labels from thresholds on another sensor, as LiDAR-derived maps are made (``lulc`` legend).

    Needs ``height`` (nDSM, metres) and ``ndvi`` in the context. The rule: NDVI below ``ndvi_water`` and flat
    -> water; height >= ``tree_height`` -> forest; ``shrub_height`` <= height < tree height -> shrubland,
    unless NDVI is below ``ndvi_vegetation`` -> artificial (buildings); flat ground -> grassland if NDVI >=
    ``ndvi_grass`` else cultivated. Flat roads become grassland/cultivated: the rule cannot see them.
    Severity scales the sensors' noise: height noise ``3 m * severity``, NDVI noise ``0.1 * severity``.
    ``class_ids`` maps rule outputs to the legend's ids.
    """

    severity: float = 0.5
    tree_height: float = 5.0
    shrub_height: float = 1.0
    ndvi_water: float = 0.2
    ndvi_vegetation: float = 0.5
    ndvi_grass: float = 0.6
    class_ids: dict = field(
        default_factory=lambda: {
            "cultivated": 0,
            "grassland": 1,
            "shrubland": 2,
            "forest": 3,
            "water": 4,
            "artificial": 5,
        }
    )
    ignore_index: int | None = IGNORE_INDEX
    name = "sensor rule"

    def __post_init__(self):
        self.severity = _check_severity(self.severity)

    def _apply(self, labels, rng, height=None, ndvi=None, **context):
        if height is None or ndvi is None:
            raise ValueError("SensorRuleLabels needs the other sensor's layers: pass height= and ndvi=")
        if height.shape != labels.shape or ndvi.shape != labels.shape:
            raise ValueError(f"height {height.shape} and ndvi {ndvi.shape} must match labels {labels.shape}")
        h = height + rng.normal(0, 3.0 * self.severity, labels.shape)
        v = ndvi + rng.normal(0, 0.1 * self.severity, labels.shape)
        ids = self.class_ids
        out = np.where(v >= self.ndvi_grass, ids["grassland"], ids["cultivated"])
        out = np.where(
            h >= self.shrub_height, np.where(v < self.ndvi_vegetation, ids["artificial"], ids["shrubland"]), out
        )
        out = np.where(h >= self.tree_height, np.where(v < self.ndvi_vegetation, ids["artificial"], ids["forest"]), out)
        out = np.where((v < self.ndvi_water) & (h < self.shrub_height), ids["water"], out)
        return out.astype(labels.dtype)


@dataclass(repr=False)
class Compose(NoiseModel):
    """Applies ``models`` in order (sharing the generator and the context)."""

    models: list = field(default_factory=list)
    ignore_index: int | None = IGNORE_INDEX
    name = "compose"

    @property
    def severity(self) -> float:  # noqa: D401 - the strongest part's severity
        return max((m.severity for m in self.models), default=0.0)

    def __call__(self, labels, rng, **context):
        out = np.asarray(labels).copy()
        for model in self.models:
            out = model(out, rng, **context)
        return _restore_ignored(out, np.asarray(labels), self.ignore_index)

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.models))})"


NOISE_MODELS = {
    "boundary": BoundaryNoise,
    "misregistration": Misregistration,
    "flips": ObjectClassFlips,
    "omission": SmallObjectOmission,
    "coarse": CoarseLabels,
    "sensor_rule": SensorRuleLabels,
}


def make_noise(names, severity: float, num_classes: int | None = None) -> NoiseModel:
    """A :class:`Compose` of the named models (keys of :data:`NOISE_MODELS`), all at ``severity``."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in NOISE_MODELS]
    if unknown:
        raise ValueError(f"unknown noise models {unknown}; known: {', '.join(NOISE_MODELS)}")
    models = []
    for n in names:
        kwargs = {"num_classes": num_classes} if n == "flips" else {}
        models.append(NOISE_MODELS[n](severity=severity, **kwargs))
    return Compose(models)


def apply_noise(model: NoiseModel, labels: np.ndarray, seed: int = 0, progress: bool = False, **context) -> np.ndarray:
    """Noisy copies of a ``(N, H, W)`` label stack; tile ``i`` uses generator ``(seed, i)``.

    ``context`` arrays (e.g. ``height=``, ``ndvi=``) are stacks of the same ``N`` and sliced per tile.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"apply_noise expects (N, H, W) labels, got shape {labels.shape}")
    out = np.empty_like(labels)
    iterator = range(len(labels))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"label noise ({model!r})", leave=False)
    for i in iterator:
        out[i] = model(labels[i], np.random.default_rng([int(seed), i]), **{k: v[i] for k, v in context.items()})
    return out


def noise_rate(clean: np.ndarray, noisy: np.ndarray, ignore_index: int | None = IGNORE_INDEX) -> float:
    """Fraction of (non-ignored) pixels whose label changed."""
    clean, noisy = np.asarray(clean), np.asarray(noisy)
    keep = clean != ignore_index if ignore_index is not None else np.ones(clean.shape, bool)
    return float((clean[keep] != noisy[keep]).mean()) if keep.any() else 0.0
