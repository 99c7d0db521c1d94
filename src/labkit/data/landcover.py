"""Multispectral land-cover landscapes with clean label maps, calibrated on real Sentinel-2 spectra.

The simulator draws tiles of a rural landscape: field parcels (cultivated land, grassland, shrubland),
forest stands, lakes and rivers, roads and buildings. Each object gets a class spectrum drawn from the
per-class mean and covariance measured on real Sentinel-2 L1C pixels (see :func:`calibrate_class_spectra`),
so classes overlap spectrally as much as they do in real imagery and spatial context matters. A tile also
gets a multiplicative illumination (scene gain and a linear gradient) and an additive haze layer whose
spectrum is the measured difference between a hazy and the clear scenes of the same patch. Each tile
carries a normalised surface height (nDSM, as an airborne LiDAR would give) so that labels derived by a
rule on another sensor can be simulated (:mod:`labkit.data.label_noise`).

Real formats: :func:`load_tile` reads GeoTIFF (via :mod:`labkit.data.io`) and NumPy (``.npy``/``.npz``)
tiles with masks of any band count; :func:`load_eolearn_patch` reads the Slovenian eo-learn patch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from labkit.core.errors import DataError

# ----------------------------------------------------------------------------------------------------------
# Legends
# ----------------------------------------------------------------------------------------------------------

#: Sentinel-2 band names in the order of L1C products (and of the constants below).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: The paper's 4-band orthophoto order: near infrared, red, green, blue.
NIRRGB = ("B08", "B04", "B03", "B02")

#: Classes the simulator draws (the finest legend); task legends merge them.
FINE_CLASSES = ("cultivated", "grassland", "shrubland", "forest", "water", "road", "building")

#: Task legends: name -> (class names, fine class -> task class id).
#: ``lulc`` follows eo-learn's Slovenian LULC legend (roads and buildings are "artificial surface").
#: ``structure`` is the second downstream task: low vegetation merged, artificial split into road/building.
TASKS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "lulc": (("cultivated", "grassland", "shrubland", "forest", "water", "artificial"), (0, 1, 2, 3, 4, 5, 5)),
    "structure": (("low vegetation", "forest", "water", "road", "building"), (0, 0, 0, 1, 2, 3, 4)),
}

#: eo-learn LULC ids -> ``lulc`` task ids (0 = no data -> ignore 255; classes absent from our legend -> 255).
EOLEARN_LULC_TO_TASK = {0: 255, 1: 0, 2: 3, 3: 1, 4: 2, 5: 4, 6: 255, 7: 255, 8: 5, 9: 255, 10: 255}
IGNORE_INDEX = 255

# ----------------------------------------------------------------------------------------------------------
# Calibrated constants. Derived by ``calibrate_class_spectra()`` (below) from
#   <shared data>/remote_sensing/eolearn_testeopatch_slovenia (MIT repo, Copernicus data):
#     REFERENCE_SCENES.npy clear scenes 2, 3, 4 (TOA reflectance 0-1) x LULC.npy -> cultivated (11 px x 3
#     scenes, few!), grassland, shrubland, forest, artificial (used for both road and building);
#   <shared data>/sea_ice/sen1floods11_sar_water_proxy/Spain_7370579_S2Hand.tif (/10000) x LabelHand
#     == 1 -> water (the Slovenian patch has no water; this is turbid flood water, CC BY 4.0).
#   Haze spectrum: mean(scene 1, hazy) - mean(scenes 2-4, clear) over the whole Slovenian patch.
#   Scene gain CV: std/mean of the per-scene mean reflectance over the clear scenes.
#   Correlation: pooled within-class correlation between bands (class means removed), all classes above.
# Re-derive with ``calibrate_class_spectra(shared_root)``; a test checks these numbers against it when the
# shared data is present. Rounded to 4 decimals (2 for correlations).
# ----------------------------------------------------------------------------------------------------------
# @@CALIBRATION-START@@
CLASS_SPECTRA_MEAN = {
    "cultivated": (0.1119, 0.091, 0.0905, 0.0662, 0.1092, 0.2608, 0.3128, 0.3044, 0.3461, 0.086, 0.001, 0.1833, 0.0919),
    "grassland": (0.1128, 0.0866, 0.0825, 0.0571, 0.1027, 0.248, 0.3022, 0.2995, 0.338, 0.0969, 0.0011, 0.1887, 0.0895),
    "shrubland": (
        0.1106,
        0.0794,
        0.0688,
        0.0431,
        0.0799,
        0.2157,
        0.2717,
        0.2652,
        0.3034,
        0.0879,
        0.001,
        0.1439,
        0.0639,
    ),
    "forest": (0.1075, 0.0762, 0.0613, 0.0368, 0.0634, 0.1839, 0.2364, 0.2286, 0.2624, 0.0779, 0.001, 0.1063, 0.0447),
    "artificial": (
        0.1163,
        0.0945,
        0.0873,
        0.0681,
        0.1019,
        0.2204,
        0.2656,
        0.2561,
        0.2934,
        0.0862,
        0.0011,
        0.1708,
        0.0923,
    ),
    "water": (0.1352, 0.1093, 0.1055, 0.104, 0.1103, 0.0945, 0.1062, 0.0899, 0.0948, 0.0178, 0.001, 0.0449, 0.0258),
}
CLASS_SPECTRA_STD = {
    "cultivated": (
        0.0049,
        0.0081,
        0.0099,
        0.0161,
        0.0149,
        0.0341,
        0.0398,
        0.0448,
        0.0461,
        0.0135,
        0.0001,
        0.023,
        0.0144,
    ),
    "grassland": (0.0046, 0.0079, 0.011, 0.015, 0.019, 0.0393, 0.0465, 0.0508, 0.0501, 0.0196, 0.0002, 0.0406, 0.0248),
    "shrubland": (0.0049, 0.0045, 0.0072, 0.008, 0.0151, 0.037, 0.0457, 0.0492, 0.0505, 0.0176, 0.0002, 0.035, 0.0186),
    "forest": (0.0045, 0.0036, 0.0044, 0.0043, 0.0091, 0.0361, 0.0484, 0.0524, 0.0537, 0.0171, 0.0002, 0.0288, 0.0128),
    "artificial": (
        0.0049,
        0.0135,
        0.0163,
        0.0211,
        0.0196,
        0.0364,
        0.0435,
        0.05,
        0.0478,
        0.0183,
        0.0002,
        0.0358,
        0.0232,
    ),
    "water": (0.0115, 0.0196, 0.0321, 0.0435, 0.0456, 0.0515, 0.0601, 0.0559, 0.0621, 0.0084, 0.0001, 0.0361, 0.0216),
}
CALIBRATION_PIXELS = {
    "cultivated": 33,
    "grassland": 5331,
    "shrubland": 1074,
    "forest": 22803,
    "artificial": 594,
    "water": 70035,
}
HAZE_SPECTRUM = (0.068, 0.0723, 0.0687, 0.0775, 0.0729, 0.0568, 0.0531, 0.0549, 0.048, 0.0484, 0.0041, 0.0677, 0.0828)
SCENE_GAIN_CV = 0.068
BAND_CORRELATION = (
    (1.0, 0.85, 0.81, 0.8, 0.8, 0.7, 0.67, 0.63, 0.64, 0.48, 0.35, 0.63, 0.64),
    (0.85, 1.0, 0.97, 0.95, 0.91, 0.79, 0.76, 0.75, 0.72, 0.41, 0.25, 0.68, 0.68),
    (0.81, 0.97, 1.0, 0.98, 0.96, 0.8, 0.78, 0.75, 0.72, 0.41, 0.22, 0.64, 0.63),
    (0.8, 0.95, 0.98, 1.0, 0.95, 0.74, 0.72, 0.68, 0.65, 0.37, 0.21, 0.59, 0.59),
    (0.8, 0.91, 0.96, 0.95, 1.0, 0.86, 0.84, 0.78, 0.78, 0.47, 0.25, 0.69, 0.67),
    (0.7, 0.79, 0.8, 0.74, 0.86, 1.0, 0.99, 0.95, 0.98, 0.63, 0.24, 0.86, 0.8),
    (0.67, 0.76, 0.78, 0.72, 0.84, 0.99, 1.0, 0.95, 0.98, 0.63, 0.23, 0.86, 0.78),
    (0.63, 0.75, 0.75, 0.68, 0.78, 0.95, 0.95, 1.0, 0.95, 0.62, 0.22, 0.82, 0.75),
    (0.64, 0.72, 0.72, 0.65, 0.78, 0.98, 0.98, 0.95, 1.0, 0.64, 0.23, 0.89, 0.81),
    (0.48, 0.41, 0.41, 0.37, 0.47, 0.63, 0.63, 0.62, 0.64, 1.0, 0.39, 0.6, 0.55),
    (0.35, 0.25, 0.22, 0.21, 0.25, 0.24, 0.23, 0.22, 0.23, 0.39, 1.0, 0.26, 0.27),
    (0.63, 0.68, 0.64, 0.59, 0.69, 0.86, 0.86, 0.82, 0.89, 0.6, 0.26, 1.0, 0.97),
    (0.64, 0.68, 0.63, 0.59, 0.67, 0.8, 0.78, 0.75, 0.81, 0.55, 0.27, 0.97, 1.0),
)
# @@CALIBRATION-END@@


def calibrate_class_spectra(shared_root: str | Path) -> dict:
    """Measure the simulator's spectral constants on the real Sentinel-2 samples in ``shared_root``.

    Returns ``{"mean": {class: [13 floats]}, "std": {...}, "pixels": {class: n}, "haze": [13],
    "gain_cv": float, "correlation": 13x13 list}``. Raises :class:`DataError` naming a missing file.
    """
    shared_root = Path(shared_root)
    patch = shared_root / "remote_sensing" / "eolearn_testeopatch_slovenia"
    chip = shared_root / "sea_ice" / "sen1floods11_sar_water_proxy"
    needed = [
        patch / "REFERENCE_SCENES.npy",
        patch / "LULC.npy",
        chip / "Spain_7370579_S2Hand.tif",
        chip / "Spain_7370579_LabelHand.tif",
    ]
    for path in needed:
        if not path.exists():
            raise DataError(f"{path}: calibration file missing (see the MANIFEST.md of {path.parent.parent})")
    scenes = np.load(needed[0]).astype(np.float64)  # (5, H, W, 13)
    lulc = np.load(needed[1])[..., 0]
    clear = scenes[2:5]
    by_class: dict[str, np.ndarray] = {}
    for name, ids in (
        ("cultivated", [1]),
        ("grassland", [3]),
        ("shrubland", [4]),
        ("forest", [2]),
        ("artificial", [8]),
    ):
        mask = np.isin(lulc, ids)
        by_class[name] = clear[:, mask, :].reshape(-1, 13)
    import tifffile  # only needed for calibration; the simulator runs on the stored constants

    s2 = tifffile.imread(needed[2]).astype(np.float64) / 10000.0  # (13, 512, 512) L1C x 10000
    water_label = tifffile.imread(needed[3])
    by_class["water"] = s2[:, water_label == 1].T
    centred = np.concatenate([v - v.mean(0) for v in by_class.values()])
    correlation = np.corrcoef(centred.T)
    haze = scenes[1].reshape(-1, 13).mean(0) - clear.reshape(-1, 13).mean(0)
    scene_means = clear.reshape(3, -1, 13).mean(1).mean(1)
    return {
        "mean": {k: v.mean(0).round(4).tolist() for k, v in by_class.items()},
        "std": {k: v.std(0).round(4).tolist() for k, v in by_class.items()},
        "pixels": {k: int(len(v)) for k, v in by_class.items()},
        "haze": haze.round(4).tolist(),
        "gain_cv": float(np.round(scene_means.std() / scene_means.mean(), 4)),
        "correlation": np.nan_to_num(correlation).round(2).tolist(),
    }


def format_calibration(calibration: dict) -> str:
    """Python source of the constants block for ``calibration`` (used to write this module's constants)."""
    lines = ["CLASS_SPECTRA_MEAN = {"]
    lines += [f"    {k!r}: {v},".replace("[", "(").replace("]", ")") for k, v in calibration["mean"].items()]
    lines += ["}", "CLASS_SPECTRA_STD = {"]
    lines += [f"    {k!r}: {v},".replace("[", "(").replace("]", ")") for k, v in calibration["std"].items()]
    lines += [
        "}",
        f"CALIBRATION_PIXELS = {calibration['pixels']}",
        f"HAZE_SPECTRUM = {tuple(calibration['haze'])}",
        f"SCENE_GAIN_CV = {calibration['gain_cv']}",
        "BAND_CORRELATION = (",
    ]
    lines += [f"    {tuple(row)}," for row in calibration["correlation"]]
    lines += [")"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Simulator
# ----------------------------------------------------------------------------------------------------------

#: Fine class -> key of the calibrated spectra (roads and buildings share the artificial-surface spectrum;
#: they differ by shape and height, as they do at 10 m).
_SPECTRUM_OF = {
    "cultivated": "cultivated",
    "grassland": "grassland",
    "shrubland": "shrubland",
    "forest": "forest",
    "water": "water",
    "road": "artificial",
    "building": "artificial",
}


@dataclass
class LandcoverTiles:
    """A batch of simulated (or loaded) tiles: reflectance images, fine labels and surface height."""

    images: np.ndarray  # (N, C, H, W) float32 TOA-like reflectance
    fine_labels: np.ndarray  # (N, H, W) uint8 ids into FINE_CLASSES
    height: np.ndarray  # (N, H, W) float32 metres above ground (nDSM)
    bands: tuple[str, ...] = NIRRGB
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def labels(self, task: str = "lulc") -> np.ndarray:
        """(N, H, W) int64 label map of ``task`` (see :data:`TASKS`)."""
        _, mapping = task_legend(task)
        return np.asarray(mapping, dtype=np.int64)[self.fine_labels]

    def ndvi(self) -> np.ndarray:
        """(N, H, W) NDVI from bands B08 and B04 (needs both)."""
        return ndvi(self.images, self.bands)

    def subset(self, index) -> LandcoverTiles:
        return LandcoverTiles(
            self.images[index], self.fine_labels[index], self.height[index], self.bands, dict(self.meta)
        )


def task_legend(task: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if task not in TASKS:
        raise ValueError(f"unknown land-cover task '{task}'; known: {', '.join(TASKS)}")
    return TASKS[task]


def ndvi(images: np.ndarray, bands=NIRRGB) -> np.ndarray:
    bands = tuple(bands)
    for needed in ("B08", "B04"):
        if needed not in bands:
            raise DataError(f"NDVI needs band {needed}; the tiles have bands {bands}")
    nir = images[..., bands.index("B08"), :, :].astype(np.float32)
    red = images[..., bands.index("B04"), :, :].astype(np.float32)
    return (nir - red) / np.maximum(nir + red, 1e-6)


def _spectral_factor(bands: tuple[str, ...]) -> np.ndarray:
    """Cholesky factor of the calibrated band correlation restricted to ``bands`` (made positive definite)."""
    index = [S2_BANDS.index(b) for b in bands]
    corr = np.asarray(BAND_CORRELATION)[np.ix_(index, index)]
    values, vectors = np.linalg.eigh(corr)  # rounding to 2 decimals can leave tiny negative eigenvalues
    corr = (vectors * np.clip(values, 1e-3, None)) @ vectors.T
    d = np.sqrt(np.diag(corr))
    return np.linalg.cholesky(corr / np.outer(d, d))


def _smooth_field(rng, shape, sigma) -> np.ndarray:
    """Gaussian random field in [0, 1] (rank-normalised), correlation length ~ ``sigma`` pixels."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    ranks = np.argsort(np.argsort(f, axis=None)).reshape(shape)
    return ranks / max(f.size - 1, 1)


class LandscapeSimulator:
    """Draws multispectral land-cover tiles with clean fine label maps.

    Parameters: ``tile`` side in pixels; ``bands`` (Sentinel-2 names, default NIR, R, G, B; all 13 work);
    ``parcel_size`` mean field side in pixels; ``haze`` maximum haze as a fraction of the measured hazy-scene
    haze; ``illumination`` scale of the scene gain variation (1 = measured); ``object_share`` share of the
    within-class variance that is per object (the rest is per pixel); ``psf_sigma`` sensor blur in pixels.
    """

    class_probabilities = {"cultivated": 0.35, "grassland": 0.3, "shrubland": 0.15, "forest": 0.2}

    def __init__(
        self,
        tile: int = 64,
        bands=NIRRGB,
        parcel_size: float = 16.0,
        haze: float = 0.5,
        illumination: float = 1.0,
        object_share: float = 0.6,
        psf_sigma: float = 0.5,
        sensor_noise: float = 0.002,
    ):
        bands = tuple(bands)
        unknown = [b for b in bands if b not in S2_BANDS]
        if unknown:
            raise ValueError(f"unknown Sentinel-2 bands {unknown}; known: {S2_BANDS}")
        if tile < 16:
            raise ValueError(f"tile must be >= 16 pixels, got {tile}")
        self.tile, self.bands = int(tile), bands
        self.parcel_size, self.haze, self.illumination = parcel_size, haze, illumination
        self.object_share, self.psf_sigma, self.sensor_noise = object_share, psf_sigma, sensor_noise
        index = [S2_BANDS.index(b) for b in bands]
        self._mean = np.array([[CLASS_SPECTRA_MEAN[_SPECTRUM_OF[c]][i] for i in index] for c in FINE_CLASSES])
        self._std = np.array([[CLASS_SPECTRA_STD[_SPECTRUM_OF[c]][i] for i in index] for c in FINE_CLASSES])
        self._haze = np.array([HAZE_SPECTRUM[i] for i in index])
        self._factor = _spectral_factor(bands)

    # -- geometry --------------------------------------------------------------------------------------
    def _layout(self, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fine label map, object ids and height for one tile."""
        t = self.tile
        fine = {c: i for i, c in enumerate(FINE_CLASSES)}
        n_parcels = max(2, int(round((t / self.parcel_size) ** 2 * rng.uniform(0.7, 1.3))))
        seeds = np.zeros((t, t), dtype=bool)
        seeds[rng.integers(0, t, n_parcels), rng.integers(0, t, n_parcels)] = True
        _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
        parcel_id = iy * t + ix  # Voronoi cell = id of its nearest seed
        _, parcel_id = np.unique(parcel_id, return_inverse=True)
        parcel_id = parcel_id.reshape(t, t)
        names = list(self.class_probabilities)
        p = np.array([self.class_probabilities[n] for n in names])
        parcel_class = np.array([fine[n] for n in names])[rng.choice(len(names), parcel_id.max() + 1, p=p / p.sum())]
        labels = parcel_class[parcel_id].astype(np.uint8)
        object_id = parcel_id.copy()
        next_id = object_id.max() + 1

        def paint(mask, cls):
            nonlocal next_id
            labels[mask] = fine[cls]
            comp, n = ndimage.label(mask)
            object_id[mask] = comp[mask] + next_id
            next_id += n + 1

        # Forest stands: irregular blobs of a smooth field, over ~0-35 % of the tile.
        forest_cover = rng.uniform(0.0, 0.35)
        if forest_cover > 0.02:
            paint(_smooth_field(rng, (t, t), t / 10) > 1 - forest_cover, "forest")
        yy, xx = np.mgrid[0:t, 0:t].astype(np.float64)
        if rng.random() < 0.3:  # a lake
            paint(_smooth_field(rng, (t, t), t / 8) > 1 - rng.uniform(0.04, 0.12), "water")
        if rng.random() < 0.35:  # a meandering river crossing the tile
            wavelength, amplitude = rng.uniform(0.5, 1.5) * t, rng.uniform(0.05, 0.2) * t
            centre = rng.uniform(0.2, 0.8) * t + amplitude * np.sin(2 * np.pi * yy / wavelength + rng.uniform(0, 6.3))
            across = xx if rng.random() < 0.5 else yy
            along_centre = centre if across is xx else centre.T
            paint(np.abs(across - along_centre) < rng.uniform(1.0, 2.5), "water")
        road = np.zeros((t, t), dtype=bool)
        for _ in range(rng.choice([0, 1, 1, 2])):  # straight roads at random angles (bridges over water)
            angle, offset = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8) * t
            dist = np.abs((xx - t / 2) * np.sin(angle) - (yy - t / 2) * np.cos(angle) - (offset - t / 2))
            road |= dist < rng.uniform(0.6, 1.2)
        if road.any():
            paint(road, "road")
            if rng.random() < 0.6:  # a settlement along the road
                near = ndimage.distance_transform_edt(~road)
                candidates = np.argwhere((near > 1.5) & (near < 6) & (labels != fine["water"]))
                building = np.zeros((t, t), dtype=bool)
                for cy, cx in candidates[
                    rng.choice(len(candidates), min(len(candidates), rng.integers(3, 10)), replace=False)
                ]:
                    h, w = rng.integers(2, 5, size=2)
                    building[cy : cy + h, cx : cx + w] = True
                building &= ~road & (labels != fine["water"])
                paint(building, "building")
        height = np.abs(rng.normal(0, 0.15, (t, t)))
        forest = labels == fine["forest"]
        canopy = 14 + 8 * _smooth_field(rng, (t, t), 1.5) + rng.normal(0, 1.5, (t, t))
        height[forest] = canopy[forest]
        shrub = labels == fine["shrubland"]
        height[shrub] = rng.uniform(0.8, 3.0, shrub.sum())
        building = labels == fine["building"]
        if building.any():
            comp, n = ndimage.label(building)
            height[building] = rng.uniform(4, 12, n + 1)[comp[building]]
        return labels, object_id, height.astype(np.float32)

    # -- radiometry ------------------------------------------------------------------------------------
    def _radiometry(self, rng, labels, object_id, height) -> np.ndarray:
        t, c = self.tile, len(self.bands)
        n_objects = object_id.max() + 1
        object_z = rng.standard_normal((n_objects, c)) @ self._factor.T
        pixel_z = rng.standard_normal((t, t, c)) @ self._factor.T
        std = self._std[labels]
        surface = self._mean[labels] + std * (
            np.sqrt(self.object_share) * object_z[object_id] + np.sqrt(1 - self.object_share) * pixel_z
        )
        forest = labels == FINE_CLASSES.index("forest")
        if forest.any():  # crown shading: gaps in the canopy are darker
            shade = 0.9 + 0.2 * np.clip((height - 14) / 8, 0, 1)
            surface[forest] *= shade[forest][:, None]
        surface = np.clip(surface, 0.0, None).transpose(2, 0, 1)
        if self.psf_sigma > 0:  # sensor point-spread function mixes neighbouring objects at boundaries
            surface = ndimage.gaussian_filter(surface, (0, self.psf_sigma, self.psf_sigma), mode="nearest")
        gain = 1 + self.illumination * SCENE_GAIN_CV * rng.standard_normal()
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:t, 0:t] / t - 0.5
        gradient = 1 + 0.03 * self.illumination * (np.cos(angle) * xx + np.sin(angle) * yy)
        haze_amount = self.haze * rng.uniform(0, 1) * (0.5 + _smooth_field(rng, (t, t), t / 4))
        image = gain * gradient * surface + self._haze[:, None, None] * haze_amount
        image += rng.normal(0, self.sensor_noise, image.shape)
        return np.clip(image, 0, None).astype(np.float32)

    def sample(self, n: int, seed: int = 0, progress: bool = False) -> LandcoverTiles:
        """``n`` tiles; tile ``i`` depends only on ``(seed, i)``, so prefixes of larger draws agree."""
        images = np.empty((n, len(self.bands), self.tile, self.tile), np.float32)
        fine = np.empty((n, self.tile, self.tile), np.uint8)
        height = np.empty((n, self.tile, self.tile), np.float32)
        iterator = range(n)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="simulating tiles", leave=False)
        for i in iterator:
            rng = np.random.default_rng([int(seed), i])
            fine[i], object_id, height[i] = self._layout(rng)
            images[i] = self._radiometry(rng, fine[i], object_id, height[i])
        return LandcoverTiles(
            images, fine, height, self.bands, {"simulator": type(self).__name__, "seed": int(seed), "tile": self.tile}
        )


# ----------------------------------------------------------------------------------------------------------
# Real formats
# ----------------------------------------------------------------------------------------------------------


def _as_mask(values: np.ndarray, source: str, nodata=None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise DataError(f"{source}: a mask must be (H, W), got shape {values.shape}")
    out = np.full(values.shape, IGNORE_INDEX, np.int64)
    finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if nodata is not None:
        finite &= values != nodata
    if values.dtype.kind == "f" and np.any(finite & (values != np.round(values))):
        raise DataError(f"{source}: mask holds non-integer values; expected class ids")
    out[finite] = values[finite].astype(np.int64)
    return out


def load_tile(
    path, mask_path=None, channels_last: bool = False, mask_nodata: float | None = None
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Read one multi-band tile (any band count) and its mask.

    ``path``: GeoTIFF (``.tif``/``.tiff``, via :func:`labkit.data.io.read_geotiff`; no-data becomes NaN),
    ``.npy`` (``(C, H, W)``, or ``(H, W, C)`` with ``channels_last``) or ``.npz`` with arrays ``image`` and
    optionally ``mask``. ``mask_path``: GeoTIFF or ``.npy`` of class ids; the GeoTIFF's declared no-data and
    ``mask_nodata`` (for masks that mark no data by a value they do not declare, e.g. Sen1Floods11's -1)
    become 255 (ignored). Returns ``(image float32 (C, H, W), mask int64 (H, W) or None, meta)``.
    Errors name the file.
    """
    from labkit.data import io

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    suffix = path.suffix.lower()
    mask, meta = None, {"source": str(path)}
    if suffix in (".tif", ".tiff"):
        image, tif_meta = io.read_geotiff(path)
        meta.update(tif_meta)
    elif suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable NumPy file ({exc})") from exc
        if suffix == ".npz":
            with loaded:
                if "image" not in loaded.files:
                    raise DataError(f"{path}: .npz tile needs an 'image' array (has {loaded.files})")
                image = loaded["image"]
                if "mask" in loaded.files:
                    mask = _as_mask(loaded["mask"], f"{path}[mask]", mask_nodata)
        else:
            image = loaded
        if image.dtype.kind not in "biuf":
            raise DataError(f"{path}: tile values must be numbers, got dtype {image.dtype}")
        image = np.asarray(image, np.float32)
        if image.ndim == 3 and channels_last:
            image = image.transpose(2, 0, 1)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise DataError(f"{path}: a tile must be (C, H, W) or (H, W, C), got shape {image.shape}")
    else:
        raise DataError(f"{path}: unsupported tile format '{suffix}' (GeoTIFF, .npy or .npz)")
    if mask_path is not None:
        mask_path = Path(mask_path)
        if mask_path.suffix.lower() in (".tif", ".tiff"):
            values, mask_meta = io.read_geotiff(mask_path)
            mask = _as_mask(values, str(mask_path), mask_nodata)
        elif mask_path.suffix.lower() == ".npy":
            if not mask_path.exists():
                raise DataError(f"{mask_path}: file does not exist")
            try:
                values = np.load(mask_path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"{mask_path}: not a readable NumPy file ({exc})") from exc
            mask = _as_mask(values, str(mask_path), mask_nodata)
        else:
            raise DataError(f"{mask_path}: unsupported mask format '{mask_path.suffix}' (GeoTIFF or .npy)")
    if mask is not None and mask.shape != image.shape[1:]:
        raise DataError(f"{mask_path or path}: mask size {mask.shape} differs from tile size {image.shape[1:]}")
    return image.astype(np.float32), mask, meta


def prepare_tiles(
    images: np.ndarray,
    masks: np.ndarray,
    in_channels: int,
    num_classes: int,
    crop: int | None = None,
    names=None,
    fill_value: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Check tiles for a model and mask bad pixels out of the loss.

    Raises :class:`DataError` naming the tile for: a band count other than ``in_channels``, mask ids outside
    ``[0, num_classes)`` (other than 255), tiles smaller than ``crop``, mask/tile size mismatch. NaN or
    infinite pixels (no-data) are set to ``fill_value`` and their mask to 255, so they never enter the loss;
    the returned dict counts them (``nodata_pixels``, ``tiles_with_nodata``).
    """
    names = list(names) if names is not None else [f"tile {i}" for i in range(len(images))]
    out_images, out_masks, nodata_tiles, nodata_pixels = [], [], 0, 0
    for name, image, mask in zip(names, images, masks):
        image = np.asarray(image, np.float32)
        mask = np.asarray(mask)
        if image.ndim != 3:
            raise DataError(f"{name}: a tile must be (C, H, W), got shape {image.shape}")
        if image.shape[0] != in_channels:
            raise DataError(f"{name}: has {image.shape[0]} bands but the model takes {in_channels}")
        if mask.shape != image.shape[1:]:
            raise DataError(f"{name}: mask size {mask.shape} differs from tile size {image.shape[1:]}")
        if crop is not None and min(image.shape[1:]) < crop:
            raise DataError(f"{name}: tile {image.shape[1]}x{image.shape[2]} is smaller than the crop {crop}")
        bad_ids = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes), IGNORE_INDEX])
        if bad_ids.size:
            raise DataError(
                f"{name}: mask has class id(s) {bad_ids[:10].tolist()} outside the legend "
                f"[0, {num_classes}) (255 = ignore)"
            )
        invalid = ~np.isfinite(image).all(axis=0)
        if invalid.any():
            nodata_tiles += 1
            nodata_pixels += int(invalid.sum())
            image = np.where(np.isfinite(image), image, fill_value).astype(np.float32)
            mask = np.where(invalid, IGNORE_INDEX, mask)
        if crop is not None:
            image, mask = image[:, :crop, :crop], mask[:crop, :crop]
        out_images.append(image)
        out_masks.append(mask.astype(np.int64))
    return (
        np.stack(out_images),
        np.stack(out_masks),
        {"tiles": len(out_images), "tiles_with_nodata": nodata_tiles, "nodata_pixels": nodata_pixels},
    )


def load_eolearn_patch(root: str | Path, scene: int = 2, bands=NIRRGB) -> tuple[np.ndarray, np.ndarray, dict]:
    """The eo-learn Slovenia patch: ``(image (C, H, W) float32, lulc-task mask (H, W) int64, meta)``.

    ``scene`` indexes REFERENCE_SCENES (2-4 are clear). LULC ids are mapped to the ``lulc`` task legend; no data
    and classes absent from it become 255.
    """
    root = Path(root)
    scenes_path, lulc_path = root / "REFERENCE_SCENES.npy", root / "LULC.npy"
    for path in (scenes_path, lulc_path):
        if not path.exists():
            raise DataError(f"{path}: file does not exist (see shared/data/remote_sensing/MANIFEST.md)")
    scenes = np.load(scenes_path, mmap_mode="r", allow_pickle=False)
    if scenes.ndim != 4 or scenes.shape[-1] != len(S2_BANDS):
        raise DataError(f"{scenes_path}: expected (scenes, H, W, 13), got shape {scenes.shape}")
    if not 0 <= scene < scenes.shape[0]:
        raise DataError(f"{scenes_path}: scene {scene} out of range (0..{scenes.shape[0] - 1})")
    index = [S2_BANDS.index(b) for b in bands]
    image = np.asarray(scenes[scene][..., index], np.float32).transpose(2, 0, 1)
    lulc = np.load(lulc_path, allow_pickle=False)[..., 0]
    lut = np.full(int(lulc.max()) + 1, IGNORE_INDEX, np.int64)
    for source_id, task_id in EOLEARN_LULC_TO_TASK.items():
        if source_id < len(lut):
            lut[source_id] = task_id
    return image, lut[lulc], {"source": str(root), "scene": scene, "bands": tuple(bands)}


def write_tile_tree(
    root: str | Path,
    images: np.ndarray,
    clean: np.ndarray,
    noisy: np.ndarray,
    classes: list[str] | tuple[str, ...],
    values: list[int] | None = None,
    names: list[str] | None = None,
    band_names: list[str] | None = None,
    image_nodata: float | None = None,
    label_nodata: int | None = 0,
    legend: str = "json",
    crs: str = "EPSG:32633",
    places: list[int] | None = None,
) -> Path:
    """Write tiles in the ``geotiff`` layout of the noisy-label study (used for fixtures and demos).

    ``root/images/<name>.tif`` (float32, one band per channel, named by ``band_names``; NaN pixels written as
    ``image_nodata`` when given), ``root/labels_noisy/<name>.tif`` and ``root/labels_clean/<name>.tif`` (one
    band of label values: class ``i`` is written as ``values[i]``, default ``i + 1``; ignored pixels (255) as
    the declared no-data ``label_nodata``), and the legend ``root/legend.json`` (``{"<value>": "<class>"}``) or
    ``root/legend.csv`` (``value,class``). Each tile gets its own georeferencing (10 m pixels, tiles side by side);
    ``places``: one place index per tile, tiles of one index on the same bounds (dates of one place).
    """
    from rasterio.transform import from_origin

    from labkit.data.io import write_geotiff

    root = Path(root)
    images, clean, noisy = np.asarray(images), np.asarray(clean), np.asarray(noisy)
    values = list(values) if values is not None else [i + 1 for i in range(len(classes))]
    if len(values) != len(classes):
        raise ValueError(f"{len(values)} label values for {len(classes)} classes")
    names = list(names) if names is not None else [f"tile_{i:03d}.tif" for i in range(len(images))]
    lut = np.full(256, -1, np.int64)
    lut[: len(values)] = values
    lut[IGNORE_INDEX] = -1 if label_nodata is None else label_nodata
    for sub in ("images", "labels_noisy", "labels_clean"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        place = i if places is None else int(places[i])
        transform = from_origin(500000.0 + 10.0 * images.shape[-1] * place, 5100000.0, 10.0, 10.0)
        image = np.asarray(images[i], np.float32)
        if image_nodata is not None:
            image = np.where(np.isfinite(image), image, np.float32(image_nodata))
        write_geotiff(
            root / "images" / name, image, nodata=image_nodata, crs=crs, transform=transform, band_names=band_names
        )
        for sub, labels in (("labels_clean", clean[i]), ("labels_noisy", noisy[i])):
            mapped = lut[np.asarray(labels, np.int64)].astype(np.int16)
            write_geotiff(root / sub / name, mapped, nodata=label_nodata, crs=crs, transform=transform)
    if legend == "json":
        (root / "legend.json").write_text(json.dumps({str(v): c for v, c in zip(values, classes)}, indent=1))
    else:
        (root / "legend.csv").write_text("value,class\n" + "".join(f"{v},{c}\n" for v, c in zip(values, classes)))
    return root
