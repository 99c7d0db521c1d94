"""Dual-polarisation SAR sea-ice scenes: a physics-based simulator and readers for real formats.

Simulator
---------
:func:`simulate_scene` makes one Sentinel-1 EW-like scene (HH and HV backscatter in dB) over an
ice-chart-like label map with four classes (open water, new/young ice, first-year ice, multi-year
ice; land is masked). The image is formed the way the radar sees the surface:

* **Ice chart.** Chart polygons (warped Voronoi cells) get a stage of development from their distance
  to the coast relative to the month's ice edge (the East Greenland Current carries multi-year ice
  along the coast; new and young ice forms at the ice edge and in leads when it freezes; none forms
  in the melt season). Each polygon has a total concentration and a secondary ice type, so what the
  radar sees inside a polygon is a mix of floes and leads while the chart names the dominant type,
  as real charts do.
* **Backscatter per surface type and season.** Each ice type has a dry-snow (freeze) and a wet-snow
  (melt) signature at the reference incidence angle, a spread between polygons, small-scale texture
  and an incidence-angle slope across the swath (18.9 to 47 degrees, EW). Texture differs by surface type
  and polarisation (:data:`TEXTURE`). The month's air temperature plus the scene's own weather anomaly
  gives a snow-wetness fraction: wet snow absorbs C-band, so multi-year ice loses its volume
  scattering and the ice types converge. Open water follows a wind-speed law; in the freeze season
  grease ice and short fetch damp the capillary waves, in the melt season open water is wind-roughened
  and its backscatter rises into the range of wet ice. The overlap between classes is a consequence of
  these signatures, not a target.
* **Sensor.** Multiplicative speckle (Gamma, ``looks``), an additive thermal-noise floor of the same
  level in HH and HV (Sentinel-1 EW NESZ, :data:`NOISE_FLOOR_DB`, with its source) that varies across the
  five EW sub-swaths (residual banding after denoising), and azimuth scalloping. Some scenes miss a corner of the frame (swath edge: no data, NaN).

Scenes are "compressed swaths": the width spans the full EW incidence range and pixels keep GRD speckle
statistics, so a small array carries the radiometric difficulties of a full scene.

Real formats
------------
:func:`read_ai4arctic_netcdf` (AI4Arctic / AutoICE variable names, via xarray), :func:`read_geotiff_scene`
(SAR GeoTIFF + label GeoTIFF via :func:`labkit.data.io.read_geotiff`), :func:`to_db` / :func:`to_linear`,
:func:`check_db_range` (linear-vs-dB mix-ups name the band), :class:`BandNormalizer` (per-band
standardisation; NaN pixels are filled after normalising and their labels ignored, never propagated).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from labkit.core.errors import DataError, ParameterError

CLASS_NAMES: tuple[str, ...] = ("open_water", "young_ice", "first_year_ice", "multi_year_ice")
"""Class names in label-id order (land and no data are ``IGNORE_INDEX``)."""
WATER, YOUNG, FYI, MYI = range(4)
LAND = 4  # surface code only (never a label): land is masked with IGNORE_INDEX
IGNORE_INDEX = 255
BAND_NAMES: tuple[str, str] = ("HH", "HV")
CLASS_COLOURS = ("#1f4e9c", "#9ad0f5", "#f2f2f2", "#d95f02")
OTHER_CLASS_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"
)  # fmt: skip
INCIDENCE_NAMES = ("INCIDENCE", "INCIDENCE_ANGLE", "ANGLE", "THETA")
"""Band names (any case) read as the incidence angle in degrees, the network's third input."""
# The authors' input standardisation (geohai/sea-ice-segment, configs/SA-all.ini ``[datamodule] mean, std``): HH dB,
# HV dB and incidence angle in degrees over their ExtremeEarth training scenes (computed by their
# utils/compute_mean_std.py). ``standardisation: authors`` uses them as they are; ``training_scenes`` computes the
# same three statistics on the run's own training scenes (the authors' procedure on other data).
AUTHORS_STANDARDISATION = {
    "mean": (-13.41794195, -27.00508461, 34.10005417),
    "std": (5.42232225, 5.09901729, 7.83123517),
    "source": "geohai/sea-ice-segment configs/SA-all.ini",
}


def class_colours(class_names: Sequence[str]) -> tuple[str, ...]:
    """A colour per class: the sea-ice chart colours for the kit's four classes, else a qualitative palette."""
    if tuple(class_names) == CLASS_NAMES:
        return CLASS_COLOURS
    return tuple(OTHER_CLASS_COLOURS[i % len(OTHER_CLASS_COLOURS)] for i in range(len(class_names)))


# --- Geometry of Sentinel-1 EW mode ------------------------------------------------------------------
EW_INCIDENCE_RANGE = (18.9, 47.0)  # degrees, near to far range
REFERENCE_INCIDENCE = 34.0  # degrees; the AI4Arctic training scenes average 34.0 (publisher statistics)
EW_SUBSWATHS = 5

# --- Numbers derived from the real Sentinel-1 chip -------------------------------------------------
# Source: <shared>/data/sea_ice/sen1floods11_sar_water_proxy/Spain_7370579_S1Hand.tif + LabelHand.tif
# (Sen1Floods11, CC BY 4.0; IW GRD, VV/VH in dB; water vs not-water, not sea ice). Derived with
# ``real_chip_statistics()`` below (recomputed and compared in tests/sar_transfer when the chip exists):
#   median dB per class over all labelled pixels;
#   speckle looks: the median 9x9-window standard deviation of dB over water eroded by 8 px (8,144 px)
#   inverted through std_dB = 10/ln10 * sqrt(trigamma(L)) (gives an ENL that includes texture, so a
#   lower bound on the product's looks).
REAL_CHIP_STATS = {
    "VV_water_median_db": -17.61,
    "VV_land_median_db": -9.42,
    "VH_water_median_db": -25.16,
    "VH_land_median_db": -16.55,
    "VV_water_enl": 2.90,
    "VH_water_enl": 1.37,
}
# How the simulator uses them: the speckle looks are the chip's co-pol water ENL rounded (3); the thermal
# noise floor (-25 dB mean over the swath, both channels, see NOISE_FLOOR_DB) sits at the chip's cross-pol
# level over calm water, which is noise-floor limited in Sentinel-1 (VH water -25.2 dB); calm freeze-season
# water in HH (a co-pol channel like VV, 2-4 dB lower over water at mid incidence) is darker than the chip's
# flood water and, at far range, noise-limited too. tests/sar_transfer/test_sar_data.py checks the simulator
# against these numbers.
DEFAULT_LOOKS = 3.0
# --- Thermal noise: Sentinel-1 EW, both channels -----------------------------------------------------
# The noise-equivalent sigma0 (NESZ) is the instrument's, not the polarisation's: HH and HV are received by
# the same antenna through receive chains of the same design, so both channels see noise of similar level
# and the same range profile (sub-swath steps, a bow within each sub-swath). Values: the Sentinel-1 EW
# requirement is NESZ <= -22 dB (ESA Sentinel-1 SAR User Guide, EW mode characteristics); the noise
# vectors annotated in EW GRD products lie a few dB under it, about -22 (EW1, near range) to -28 dB
# (Sentinel-1 MPC annual performance reports), which this simulator models as a -25 dB mean with the
# sub-swath profile below, for both channels. It matches the real chip's cross-pol water (VH -25.2 dB,
# noise-limited). Approximate values: use them as a plausibility model, not as a calibration.
NOISE_FLOOR_DB = {"HH": -25.0, "HV": -25.0}
HV_NOISE_FLOOR_DB = NOISE_FLOOR_DB["HV"]
HH_NOISE_FLOOR_DB = NOISE_FLOOR_DB["HH"]
NOISE_FLOOR_SOURCE = (
    "Sentinel-1 EW NESZ: requirement <= -22 dB (ESA Sentinel-1 SAR User Guide); product noise "
    "vectors about -22 to -28 dB across EW1-EW5 (Sentinel-1 MPC annual performance reports); "
    "the same for HH and HV (one antenna, one receiver design)"
)
# Weather: each scene draws its own wind (open water) and an air-temperature anomaly (deg C, normal with
# this standard deviation) around the month's climatology, which moves its snow wetness.
WEATHER_TEMPERATURE_SD = 2.0
# AI4Arctic publisher statistics (misc/global_meanstd.npy of the AI4ArcticSeaIceChallenge toolkit, as quoted
# in public code): HH -14.5 +- 5.7 dB, HV -24.7 +- 4.7 dB over 513 EW scenes. A plausibility range only.
AI4ARCTIC_MEAN_STD_DB = {"HH": (-14.51, 5.66), "HV": (-24.70, 4.75)}

# --- Backscatter signatures at the reference incidence angle ---------------------------------------
# (HH dB, HV dB, spread between polygons dB, HH slope dB/deg, HV slope dB/deg); texture: TEXTURE below.
# Dry snow (freeze): literature ranges for C-band at ~34 deg (e.g. Makynen & Karvonen 2017 for first-year
# ice slopes; multi-year ice bright from volume scattering in desalinated ice, HV well above the floor).
# Wet snow (melt): liquid water in the snow absorbs, multi-year ice loses its volume scattering; melt
# ponds make ice more heterogeneous (larger spread).
DRY_SIGNATURES = {
    YOUNG: (-19.0, -28.5, 2.5, -0.25, -0.10),
    FYI: (-16.0, -25.0, 1.5, -0.22, -0.10),
    MYI: (-10.0, -18.5, 1.5, -0.12, -0.08),
    LAND: (-8.0, -15.0, 2.0, -0.10, -0.05),
}
WET_SIGNATURES = {
    YOUNG: (-18.0, -27.5, 2.5, -0.25, -0.10),
    FYI: (-15.0, -26.0, 2.5, -0.20, -0.08),
    MYI: (-13.5, -24.0, 2.5, -0.15, -0.08),
    LAND: (-13.0, -21.0, 2.0, -0.10, -0.05),
}
# Open water, HH: sigma0 = a + b*log10(U) at the reference angle (a CMOD-like wind law for HH, which sits
# 2-4 dB under VV at mid incidence); steep incidence slope; cross-pol ~13 dB below co-pol over the ocean.
WATER_HH_A, WATER_HH_B = -28.0, 17.0
WATER_SLOPE = -0.50
WATER_CROSS_POL_RATIO = -13.0
WATER_TEXTURE_DB = 0.8
SEAWATER_FREEZING_C = -1.8
FREEZE_WAVE_DAMPING = 0.45  # grease/frazil ice and short fetch in leads damp short waves when it freezes


# Small-scale texture (dB) by surface type and polarisation: (HH amplitude, HV amplitude, correlation length
# in pixels, HH-HV correlation). Texture is the surface's own structure within a polygon, not speckle:
# wind streaks and long waves on open water (co-pol mostly; cross-pol over water is near the noise floor);
# rafting and frost flowers on young ice (rough in co-pol); level first-year ice with sparse ridges (smooth);
# hummocky multi-year ice (volume scattering: strongest in cross-pol, coarser structure). Wet snow
# (melt) damps the texture of ice by TEXTURE_MELT_DAMPING (liquid water masks the volume and the surface).
TEXTURE = {
    WATER: (0.8, 0.4, 3.0, 0.6),
    YOUNG: (1.2, 0.8, 1.0, 0.5),
    FYI: (0.7, 0.6, 1.5, 0.4),
    MYI: (1.0, 1.5, 2.5, 0.7),
    LAND: (2.0, 2.0, 2.5, 0.8),
}
TEXTURE_MELT_DAMPING = 0.35


@dataclass
class SarScene:
    """One SAR scene with its chart labels.

    ``sar``: (2, H, W) float32 backscatter in dB (co-pol, cross-pol), NaN where no data.
    ``labels``: (H, W) int64 class ids, ``IGNORE_INDEX`` on land and where there is no data.
    ``land``: (H, W) bool. ``incidence``: (H, W) float32 degrees (NaN if unknown).
    ``surface``: the true surface type per pixel (simulator only; a chart names only the dominant type).
    """

    sar: np.ndarray
    labels: np.ndarray
    land: np.ndarray
    incidence: np.ndarray
    name: str
    month: int | None = None
    band_names: tuple[str, ...] = BAND_NAMES
    class_names: tuple[str, ...] = CLASS_NAMES
    surface: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)

    @property
    def valid(self) -> np.ndarray:
        """Pixels with backscatter in every band and not on land."""
        return np.isfinite(self.sar).all(axis=0) & ~self.land

    @property
    def season(self) -> str:
        """``freeze``, ``melt`` or ``transition``: from a scene list when it says, else from the month."""
        if self.meta.get("season"):
            return str(self.meta["season"])
        if self.month is None:
            return "unknown"
        m = melt_fraction(self.month)
        return "melt" if m >= 0.5 else ("freeze" if m < 0.05 else "transition")


# ---------------------------------------------------------------------------------------------------
# Season physics
# ---------------------------------------------------------------------------------------------------


def air_temperature(month: float) -> float:
    """Monthly mean 2 m air temperature (deg C) on the East Greenland shelf: about -24 in Feb, +4 in Jul."""
    return float(-10.0 + 14.0 * np.cos(2 * np.pi * (month - 7.25) / 12.0))


def melt_fraction(month: float, temperature_offset: float = 0.0) -> float:
    """Fraction of the snow cover that is wet (0 dry, 1 wet): a logistic in air temperature around -1 deg C;
    ``temperature_offset``: the scene's weather, deg C above the month's climatology."""
    return float(1.0 / (1.0 + np.exp(-(air_temperature(month) + temperature_offset + 1.0) / 1.5)))


def ice_edge(month: float) -> float:
    """Ice-edge position as a fraction of the coast-to-frame distance: widest in March, narrowest in September."""
    return float(0.55 + 0.25 * np.cos(2 * np.pi * (month - 3.0) / 12.0))


def _check_month(month) -> int:
    if isinstance(month, bool) or not isinstance(month, (int, np.integer)) or not 1 <= int(month) <= 12:
        raise ParameterError(f"month must be an integer 1..12, got {month!r}")
    return int(month)


# ---------------------------------------------------------------------------------------------------
# Simulator
# ---------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with correlation length ``sigma`` pixels.

    Long correlation lengths are drawn on a coarser grid and interpolated up: the field is just as smooth,
    and a 2048-pixel scene does not pay for Gaussian kernels thousands of pixels wide.
    """
    h, w = shape
    factor = int(max(1, sigma // 4))
    if factor > 1:
        coarse = (int(np.ceil(h / factor)) + 1, int(np.ceil(w / factor)) + 1)
        small = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="reflect")
        field_ = ndimage.zoom(small, factor, order=1, mode="nearest", grid_mode=False)[:h, :w]
    else:
        field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field_ - field_.mean()) / (field_.std() + 1e-12)


def _uniform_field(rng, shape, sigma) -> np.ndarray:
    """A spatially smooth field with (approximately) uniform marginals in [0, 1): floes and leads."""
    from scipy.special import ndtr

    return ndtr(_smooth_noise(rng, shape, sigma))


def incidence_angles(shape: tuple[int, int]) -> np.ndarray:
    """Incidence angle (deg) per pixel: columns run from near to far range over the EW swath."""
    h, w = shape
    near, far = EW_INCIDENCE_RANGE
    row = np.linspace(near, far, w, dtype=np.float32)
    return np.broadcast_to(row, (h, w)).copy()


def _class_probabilities(rel_distance: float, melt: float, coastal: bool, freeze: float | None = None) -> np.ndarray:
    """P(dominant stage of development) of a chart polygon; ``rel_distance`` = distance / ice edge;
    ``freeze``: how strongly new ice forms (0 when the air is above sea water's freezing point)."""
    freeze = 1.0 - melt if freeze is None else freeze
    if coastal:  # coastal flaw polynya: new ice when it freezes, open water in summer
        p = [0.15 + 0.4 * melt, 0.45 * freeze, 0.25, 0.15]
    elif rel_distance > 1.0:  # beyond the ice edge
        p = [1.0, 0.0, 0.0, 0.0]
    elif rel_distance > 0.8:  # marginal ice zone
        p = [0.35 * melt, 0.6 * freeze, 0.4 + 0.2 * melt, 0.05]
    elif rel_distance < 0.45:  # old ice carried along the coast by the East Greenland Current
        p = [0.0, 0.05 * freeze, 0.35, 0.6]
    else:  # pack
        p = [0.05 * melt, 0.15 * freeze, 0.6, 0.25]
    p = np.asarray(p, dtype=float)
    return p / p.sum()


def simulate_chart(
    shape: tuple[int, int],
    month: int,
    rng: np.random.Generator,
    polygon_size: float = 0.16,
    temperature_offset: float = 0.0,
):
    """An ice-chart-like map: (labels, surface, land, polygon_id).

    ``labels`` names each polygon's dominant stage (land = IGNORE_INDEX); ``surface`` is what lies in each
    pixel (floes of the secondary type, leads of water or, when it freezes, of new ice).
    """
    month = _check_month(month)
    h, w = shape
    melt = melt_fraction(month, temperature_offset)
    # new ice forms only when the air is colder than sea water's freezing point (-1.8 deg C)
    forming = (1.0 - melt) if air_temperature(month) + temperature_offset < SEAWATER_FREEZING_C else 0.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Coast on the west (East Greenland), a wiggly line over 6-16 % of the width.
    wiggle = ndimage.gaussian_filter1d(rng.standard_normal(h), h / 12, mode="reflect")
    coast = np.clip(w * (0.11 + 0.03 * wiggle / (wiggle.std() + 1e-12)), 0.04 * w, 0.2 * w)
    land = xx < coast[:, None]
    rel = (xx - coast[:, None]) / (w - coast[:, None])
    rel = rel + 0.07 * _smooth_noise(rng, shape, max(h, w) / 8)
    # Chart polygons: Voronoi cells in warped coordinates, so boundaries meander like drawn polygons.
    from scipy.spatial import cKDTree

    side = polygon_size * np.sqrt(h * w)
    n_poly = max(8, int(round(h * w / side**2)))
    seeds = rng.uniform([0, 0], [h, w], size=(n_poly, 2))
    warp = 0.35 * side
    wy = yy + warp * _smooth_noise(rng, shape, side / 3)
    wx = xx + warp * _smooth_noise(rng, shape, side / 3)
    _, polygon = cKDTree(seeds).query(np.stack([wy.ravel(), wx.ravel()], 1))
    polygon = polygon.reshape(shape).astype(np.int32)

    edge = ice_edge(month)
    dominant = np.zeros(n_poly, dtype=np.int64)
    concentration = np.ones(n_poly)
    secondary = np.zeros(n_poly, dtype=np.int64)
    secondary_fraction = np.zeros(n_poly)
    land_near = ndimage.distance_transform_edt(~land) <= max(2, int(0.05 * w))
    counts = np.maximum(np.bincount(polygon.ravel(), minlength=n_poly), 1)  # a seed may own no pixel
    mean_rel = np.bincount(polygon.ravel(), rel.ravel(), minlength=n_poly) / counts
    sea_frac = np.bincount(polygon.ravel(), (~land).ravel(), minlength=n_poly) / counts
    coastal_frac = np.bincount(polygon.ravel(), (land_near & ~land).ravel(), minlength=n_poly) / counts
    for p in range(n_poly):
        r = mean_rel[p] / edge
        coastal = coastal_frac[p] > 0.5 * sea_frac[p] and rng.random() < 0.5
        c = int(rng.choice(4, p=_class_probabilities(r, melt, coastal, forming)))
        dominant[p] = c
        if c == WATER:
            concentration[p] = rng.uniform(0.0, 0.1)  # open water: some brash / bergy bits
            secondary[p] = YOUNG if forming > 0 else FYI
        elif r > 0.8:
            concentration[p] = rng.uniform(0.4, 0.8)  # marginal ice zone: loose
        else:
            concentration[p] = rng.uniform(0.85, 1.0)  # pack ice
        if c == MYI:
            secondary[p], secondary_fraction[p] = FYI, rng.uniform(0.05, 0.35)
        elif c == FYI:
            secondary[p] = MYI if r < 0.6 else YOUNG
            secondary_fraction[p] = rng.uniform(0.0, 0.3) if secondary[p] == MYI else rng.uniform(0, 0.3) * forming
        elif c == YOUNG:
            secondary[p], secondary_fraction[p] = FYI, rng.uniform(0.0, 0.2)

    labels = dominant[polygon]
    labels[land] = IGNORE_INDEX
    # What the radar sees: leads (open water, refrozen into new ice when it freezes) and floes of the
    # secondary type inside each polygon, at floe scale.
    u_leads = _uniform_field(rng, shape, 1.5)
    u_floes = _uniform_field(rng, shape, 2.0)
    conc = concentration[polygon]
    surface = labels.copy()
    open_px = u_leads >= conc
    refrozen = _uniform_field(rng, shape, 1.0) < 0.7 * forming
    is_water_poly = dominant[polygon] == WATER
    # Ice in an open-water polygon: bits of the secondary type where u_leads < concentration.
    surface = np.where(is_water_poly, np.where(u_leads < conc, secondary[polygon], WATER), surface)
    ice_poly = ~is_water_poly
    floe2 = u_floes < secondary_fraction[polygon]
    surface = np.where(ice_poly & floe2, secondary[polygon], surface)
    surface = np.where(ice_poly & open_px, np.where(refrozen, YOUNG, WATER), surface)
    surface[land] = LAND
    return labels.astype(np.int64), surface.astype(np.int64), land, polygon


def _subswath_noise_profile(width: int, rng: np.random.Generator) -> np.ndarray:
    """Residual thermal-noise level (dB offset) across range: parabolic per sub-swath, steps between them."""
    x = np.linspace(0, EW_SUBSWATHS, width, endpoint=False)
    index = np.floor(x).astype(int)
    within = x - index
    step = np.array([2.0, 0.5, 0.0, -0.5, -1.0]) + rng.normal(0, 0.3, EW_SUBSWATHS)  # EW1 is noisiest
    return 3.0 * (2 * within - 1) ** 2 - 1.0 + step[index]


def texture_fields(surface: np.ndarray, rng: np.random.Generator, melt: float = 0.0) -> np.ndarray:
    """(2, H, W) small-scale texture in dB (HH, HV) by surface type, from :data:`TEXTURE`.

    Each type has its own amplitude per polarisation, its own correlation length, and HH and HV fields that
    are correlated (``rho``) but not identical; wet snow damps the texture of ice and land.
    """
    out = np.zeros((2,) + surface.shape, dtype=np.float64)
    for cls, (amp_hh, amp_hv, corr, rho) in TEXTURE.items():
        sel = surface == cls
        if not sel.any():
            continue
        damp = 1.0 - TEXTURE_MELT_DAMPING * melt if cls != WATER else 1.0
        a = _smooth_noise(rng, surface.shape, corr)
        b = _smooth_noise(rng, surface.shape, corr)
        out[0][sel] = damp * amp_hh * a[sel]
        out[1][sel] = damp * amp_hv * (rho * a[sel] + np.sqrt(1.0 - rho**2) * b[sel])
    return out


def simulate_backscatter(
    surface: np.ndarray,
    polygon: np.ndarray,
    month: int,
    rng: np.random.Generator,
    looks: float = DEFAULT_LOOKS,
    wind_speed: float | None = None,
    noise_floor_db: float | Sequence[float] = (HH_NOISE_FLOOR_DB, HV_NOISE_FLOOR_DB),
    scalloping_db: float = 0.4,
    temperature_offset: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """HH and HV in dB (2, H, W) for a surface-type map; returns the array and the scene's physical settings.

    ``noise_floor_db``: the mean thermal-noise level of (HH, HV) in dB (one number: both channels).
    """
    if looks <= 0:
        raise ParameterError(f"looks must be > 0, got {looks}")
    floors = np.broadcast_to(np.asarray(noise_floor_db, dtype=float), (2,))
    shape = surface.shape
    h, w = shape
    melt = melt_fraction(month, temperature_offset)
    theta = incidence_angles(shape) - REFERENCE_INCIDENCE
    n_poly = int(polygon.max()) + 1
    sigma_db = np.zeros((2,) + shape, dtype=np.float64)
    texture = texture_fields(surface, rng, melt)
    for cls in (YOUNG, FYI, MYI, LAND):
        sel = surface == cls
        dry, wet = np.asarray(DRY_SIGNATURES[cls]), np.asarray(WET_SIGNATURES[cls])
        hh, hv, spread, s_hh, s_hv = (1 - melt) * dry + melt * wet
        # one mean per polygon and type: ice of one age and history looks alike within a chart polygon
        offset = rng.normal(0.0, spread, n_poly)[polygon[sel]]
        cross_offset = 0.7 * offset + rng.normal(0.0, 0.5 * spread, n_poly)[polygon[sel]]
        sigma_db[0][sel] = hh + offset + texture[0][sel] + s_hh * theta[sel]
        sigma_db[1][sel] = hv + cross_offset + texture[1][sel] + s_hv * theta[sel]
    if wind_speed is None:
        wind_speed = float(np.clip(7.0 * rng.weibull(2.0), 1.5, 16.0))
    sel = surface == WATER
    local_wind = wind_speed * np.exp(0.2 * _smooth_noise(rng, shape, max(h, w) / 6))
    effective_wind = np.maximum(local_wind * (1 - FREEZE_WAVE_DAMPING * (1 - melt)), 1.0)
    water_hh = WATER_HH_A + WATER_HH_B * np.log10(effective_wind) + WATER_SLOPE * theta
    sigma_db[0][sel] = water_hh[sel] + texture[0][sel]
    sigma_db[1][sel] = water_hh[sel] + WATER_CROSS_POL_RATIO + texture[1][sel]
    # Radar measurement: speckled signal plus speckled thermal noise (the same range profile in both
    # channels: one antenna), scalloped along azimuth.
    signal = 10.0 ** (sigma_db / 10.0)
    profile = _subswath_noise_profile(w, rng)
    noise_db = np.stack([floors[0] + profile, floors[1] + profile])
    noise = 10.0 ** (noise_db / 10.0)[:, None, :]
    speckle = rng.gamma(looks, 1.0 / looks, size=signal.shape)
    noise_fluct = rng.gamma(looks, 1.0 / looks, size=signal.shape)
    measured = signal * speckle + noise * noise_fluct
    phase = rng.uniform(0, 2 * np.pi, EW_SUBSWATHS)
    sub = np.minimum((np.arange(w) * EW_SUBSWATHS) // w, EW_SUBSWATHS - 1)
    period = max(h / 6.0, 8.0)
    scallop_db = scalloping_db * np.sin(2 * np.pi * np.arange(h)[:, None] / period + phase[sub][None, :])
    measured = measured * 10.0 ** (scallop_db / 10.0)
    physics = {
        "wind_speed": wind_speed,
        "melt_fraction": melt,
        "air_temperature": air_temperature(month) + temperature_offset,
        "temperature_offset": float(temperature_offset),
        "looks": looks,
        "noise_floor_db": [float(f) for f in floors],
    }
    return (10.0 * np.log10(measured)).astype(np.float32), physics


def simulate_scene(
    month: int,
    size: int | tuple[int, int] = 256,
    seed: int | Sequence[int] = 0,
    looks: float = DEFAULT_LOOKS,
    wind_speed: float | None = None,
    no_data_corner: bool | None = None,
    polygon_size: float = 0.16,
    name: str | None = None,
    temperature_offset: float | None = None,
) -> SarScene:
    """One simulated Sentinel-1 EW scene of the given month (1..12) over East Greenland sea ice.

    ``seed``: an int or a sequence of ints (e.g. ``(seed, k)`` for the k-th scene of a month). Each scene
    draws its own weather: wind speed (unless ``wind_speed``) and an air-temperature anomaly (unless
    ``temperature_offset``) of standard deviation :data:`WEATHER_TEMPERATURE_SD`.
    """
    month = _check_month(month)
    shape = (size, size) if np.isscalar(size) else tuple(int(s) for s in size)
    if min(shape) < 16:
        raise ParameterError(f"scene size must be >= 16 pixels a side, got {shape}")
    seeds = [int(seed)] if np.isscalar(seed) else [int(v) for v in seed]
    rng = np.random.default_rng(np.random.SeedSequence([*seeds, month]))
    if temperature_offset is None:
        temperature_offset = float(rng.normal(0.0, WEATHER_TEMPERATURE_SD))
    labels, surface, land, polygon = simulate_chart(
        shape, month, rng, polygon_size=polygon_size, temperature_offset=temperature_offset
    )
    sar, physics = simulate_backscatter(
        surface, polygon, month, rng, looks=looks, wind_speed=wind_speed, temperature_offset=temperature_offset
    )
    if no_data_corner is None:
        no_data_corner = bool(rng.random() < 0.5)
    if no_data_corner:  # the swath edge cuts a corner of the frame
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w]
        cut = (xx / w) + (1 - yy / h) > 1.0 + rng.uniform(0.55, 0.75)
        sar[:, cut] = np.nan
        labels = labels.copy()
        labels[cut] = IGNORE_INDEX
    name = name or f"S1_EW_sim_2018{month:02d}_seed{'-'.join(map(str, seeds))}"
    return SarScene(
        sar=sar,
        labels=labels,
        land=land,
        incidence=incidence_angles(shape),
        name=name,
        month=month,
        surface=surface,
        meta={"simulated": True, "seed": seeds, **physics},
    )


def simulate_year(
    size: int = 256, seed: int = 0, months: Sequence[int] = tuple(range(1, 13)), looks: float = DEFAULT_LOOKS
) -> list[SarScene]:
    """One scene per month (as the ExtremeEarth East Greenland 2018 series)."""
    return [simulate_scene(m, size=size, seed=seed, looks=looks) for m in months]


# ---------------------------------------------------------------------------------------------------
# Units, checks, normalisation
# ---------------------------------------------------------------------------------------------------


def to_db(linear: np.ndarray) -> np.ndarray:
    """10*log10 of linear backscatter; non-positive or non-finite values become NaN (masked, not -inf)."""
    linear = np.asarray(linear, dtype=np.float64)
    out = np.full(linear.shape, np.nan)
    ok = np.isfinite(linear) & (linear > 0)
    out[ok] = 10.0 * np.log10(linear[ok])
    return out.astype(np.float32)


def to_linear(db: np.ndarray) -> np.ndarray:
    """Linear backscatter from dB (NaN stays NaN)."""
    return (10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)).astype(np.float32)


DB_PHYSICAL_RANGE = (-60.0, 40.0)


def check_db_range(sar: np.ndarray, band_names: Sequence[str] = BAND_NAMES, source: str = "scene") -> None:
    """Raise DataError naming the band when values are not plausible sigma0 in dB.

    Catches linear values passed as dB (all >= 0, median below 1), min-max normalised values (all within
    [-1.5, 1.5]) and values outside the physical range of C-band sigma0 (-60 .. +40 dB).
    """
    sar = np.asarray(sar)
    for i, band in enumerate(band_names):
        values = sar[i][np.isfinite(sar[i])]
        if values.size == 0:
            raise DataError(f"{source}: band {band} holds no valid (finite) pixels")
        lo, med, hi = np.percentile(values, [0.5, 50, 99.5])
        if values.min() >= 0 and med < 1.0:
            raise DataError(
                f"{source}: band {band} looks linear, not dB (all values >= 0, median {med:.3g}); "
                "convert it with labkit.data.sar.to_db or declare the units as linear"
            )
        if -1.5 <= lo and hi <= 1.5:
            raise DataError(f"{source}: band {band} looks normalised (values within [{lo:.2f}, {hi:.2f}]), not dB")
        if lo < DB_PHYSICAL_RANGE[0] or hi > DB_PHYSICAL_RANGE[1]:
            raise DataError(
                f"{source}: band {band} has values outside the physical range of sigma0 in dB "
                f"{DB_PHYSICAL_RANGE} (0.5-99.5 percentiles {lo:.1f} .. {hi:.1f}); is it in the wrong units?"
            )


def validate_scene(scene: SarScene, num_classes: int | None = None, source: str | None = None) -> SarScene:
    """Check shapes, polarisations, units and legend; return the scene with NaN pixels' labels ignored."""
    source = source or scene.name
    num_classes = len(scene.class_names) if num_classes is None else num_classes
    sar = np.asarray(scene.sar)
    if sar.ndim != 3 or sar.shape[0] != 2:
        raise DataError(
            f"{source}: SAR must be (2, H, W) with a co-pol and a cross-pol band, got shape {sar.shape}"
            f" (bands {tuple(scene.band_names)}): a polarisation is missing"
        )
    if sar.shape[1:] != scene.labels.shape:
        raise DataError(f"{source}: SAR size {sar.shape[1:]} differs from label size {scene.labels.shape}")
    if scene.land.shape != scene.labels.shape:
        raise DataError(f"{source}: land mask size {scene.land.shape} differs from label size {scene.labels.shape}")
    check_db_range(sar, scene.band_names, source)
    labels = np.asarray(scene.labels)
    outside = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if outside.any():
        codes = sorted(np.unique(labels[outside]).tolist())
        raise DataError(
            f"{source}: chart holds class id(s) {codes[:10]} outside the legend "
            f"{dict(enumerate(scene.class_names))} at {int(outside.sum())} pixel(s)"
        )
    missing = ~np.isfinite(sar).all(axis=0)
    if missing.any():
        labels = labels.copy()
        labels[missing] = IGNORE_INDEX
    labels = labels.copy() if labels is scene.labels else labels
    labels[scene.land] = IGNORE_INDEX
    scene.labels = labels.astype(np.int64)
    return scene


def network_input(scene: SarScene) -> np.ndarray:
    """(3, H, W) float32: co-pol and cross-pol backscatter (dB) and the incidence angle (degrees), the three inputs
    the authors feed the network (geohai/sea-ice-segment: HH, HV, incidence angle). NaN where there is no data."""
    incidence = np.asarray(scene.incidence, np.float32)
    return np.concatenate([np.asarray(scene.sar, np.float32), incidence[None]], axis=0)


def fill_missing_incidence(scene: SarScene, source: str | None = None) -> SarScene:
    """A scene without an incidence angle (no incidence band, or one with no finite value) gets the documented
    substitute: the constant :data:`REFERENCE_INCIDENCE` (34 degrees, the AI4Arctic training scenes' mean), which
    standardises to a constant channel that carries no information; a warning names the file and
    ``scene.meta["incidence"]`` says ``"substitute"`` (the study's data table reports it)."""
    incidence = np.asarray(scene.incidence, np.float32)
    if incidence.shape == scene.labels.shape and np.isfinite(incidence).any():
        scene.meta.setdefault("incidence", "read")
        return scene
    warnings.warn(
        f"{source or scene.name}: no incidence-angle band; the network's third input is the constant "
        f"{REFERENCE_INCIDENCE:g} degrees (documented substitute: it carries no information)",
        stacklevel=2,
    )
    scene.incidence = np.full(scene.labels.shape, REFERENCE_INCIDENCE, np.float32)
    scene.meta["incidence"] = "substitute"
    return scene


class BandNormalizer:
    """Per-channel standardisation of the network input (:func:`network_input`: co-pol dB, cross-pol dB, incidence
    degrees), fitted on valid training pixels only, or fixed (:meth:`fixed`, e.g. the authors' statistics).

    ``transform`` returns float32 with NaN (no data) replaced by 0 after standardising (the channel mean),
    so no NaN reaches a network; labels of those pixels are ignored by :func:`validate_scene`. A constant channel
    (a substituted incidence angle) standardises to 0.
    """

    def __init__(self):
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.source = "training scenes"

    @classmethod
    def fixed(cls, mean: Sequence[float], std: Sequence[float], source: str) -> BandNormalizer:
        out = cls()
        out.mean_, out.std_, out.source = np.asarray(mean, float), np.asarray(std, float), source
        return out

    def fit(self, scenes: Sequence[SarScene]) -> BandNormalizer:
        if not scenes:
            raise DataError("BandNormalizer.fit: no scenes given")
        sums = sq = count = None
        for scene in scenes:
            vals = network_input(scene)[:, scene.valid].astype(np.float64)
            finite = np.isfinite(vals)
            vals = np.where(finite, vals, 0.0)
            if sums is None:
                sums, sq, count = np.zeros(len(vals)), np.zeros(len(vals)), np.zeros(len(vals))
            sums += vals.sum(axis=1)
            sq += (vals**2).sum(axis=1)
            count += finite.sum(axis=1)
        if count is None or count.min() == 0:
            raise DataError("BandNormalizer.fit: the scenes hold no valid sea pixels")
        self.mean_ = sums / count
        std = np.sqrt(np.maximum(sq / count - self.mean_**2, 0.0))
        self.std_ = np.where(std > 1e-6 * np.maximum(np.abs(self.mean_), 1.0), std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise a (C, H, W) array of the channels the normaliser was fitted on."""
        if self.mean_ is None:
            raise RuntimeError("BandNormalizer is not fitted: call fit(scenes) first")
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] != len(self.mean_):
            raise ValueError(f"BandNormalizer: {x.shape[0]} channels given, fitted on {len(self.mean_)}")
        out = (x - self.mean_[:, None, None]) / self.std_[:, None, None]
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def transform_scene(self, scene: SarScene) -> np.ndarray:
        """The scene's standardised network input (:func:`network_input`), NaN replaced by 0."""
        return self.transform(network_input(scene))

    def fit_transform(self, scenes: Sequence[SarScene]) -> list[np.ndarray]:
        self.fit(scenes)
        return [self.transform_scene(s) for s in scenes]


# ---------------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------------


def check_tile_fits(scene: SarScene, tile: int, rows: tuple[float, float] = (0.0, 1.0)) -> tuple[int, int]:
    """Row range (start, stop) of ``scene`` for ``rows`` fractions; DataError when a tile does not fit."""
    h, w = scene.shape
    r0, r1 = int(round(rows[0] * h)), int(round(rows[1] * h))
    if r1 - r0 < tile or w < tile:
        raise DataError(
            f"{scene.name}: region of {r1 - r0} x {w} pixels (rows {rows}) is smaller than the "
            f"tile {tile} x {tile}; use a smaller tile or a larger scene"
        )
    return r0, r1


def sample_tiles(
    scenes: Sequence[SarScene],
    normalizer: BandNormalizer,
    tile: int,
    n_tiles: int,
    rng: np.random.Generator,
    rows: tuple[float, float] = (0.0, 1.0),
    min_valid: float = 0.5,
    positions: bool = False,
) -> tuple[np.ndarray, ...]:
    """Random tiles (N, C, t, t) of the standardised network input and labels (N, t, t) from the ``rows`` band of each scene.

    Tiles are spread evenly over scenes; a tile with less than ``min_valid`` labelled pixels is redrawn
    (up to 20 times) so land and no-data corners do not dominate. Tiles are drawn with replacement: with
    ``positions`` a third array (N, 3) gives each tile's scene index, row and column (:func:`tile_coverage`).
    """
    normed = [normalizer.transform_scene(s) for s in scenes]
    images = np.zeros((n_tiles, normed[0].shape[0], tile, tile), np.float32)
    masks = np.full((n_tiles, tile, tile), IGNORE_INDEX, np.int64)
    spans = [check_tile_fits(s, tile, rows) for s in scenes]
    where = np.zeros((n_tiles, 3), np.int64)
    for i in range(n_tiles):
        k = i % len(scenes)
        (r0, r1), w = spans[k], scenes[k].shape[1]
        for _ in range(20):
            y = int(rng.integers(r0, r1 - tile + 1))
            x = int(rng.integers(0, w - tile + 1))
            lab = scenes[k].labels[y : y + tile, x : x + tile]
            if (lab != IGNORE_INDEX).mean() >= min_valid:
                break
        images[i] = normed[k][:, y : y + tile, x : x + tile]
        masks[i] = lab
        where[i] = (k, y, x)
    return (images, masks, where) if positions else (images, masks)


def tile_coverage(
    scenes: Sequence[SarScene], where: np.ndarray, tile: int, rows: tuple[float, float] = (0.0, 1.0)
) -> dict[str, float]:
    """How much distinct area tiles drawn at ``where`` (:func:`sample_tiles` positions) come from: labelled pixels
    drawn (a pixel drawn twice counts twice), distinct labelled pixels covered, the training area (labelled pixels
    in the ``rows`` band of the scenes), and the oversampling factor (drawn / distinct: 1 when no tile overlaps
    another, 16 when every pixel is drawn 16 times on average)."""
    covered = [np.zeros(s.shape, bool) for s in scenes]
    drawn = 0
    for k, y, x in np.asarray(where, np.int64).reshape(-1, 3):
        labelled = scenes[k].labels[y : y + tile, x : x + tile] != IGNORE_INDEX
        drawn += int(labelled.sum())
        covered[k][y : y + tile, x : x + tile] = True
    distinct = area = 0
    for scene, cover in zip(scenes, covered):
        r0, r1 = check_tile_fits(scene, tile, rows)
        labelled = scene.labels != IGNORE_INDEX
        distinct += int((cover & labelled).sum())
        area += int(labelled[r0:r1].sum())
    n = len(np.asarray(where).reshape(-1, 3))
    return {
        "tiles": n,
        "drawn_pixels": drawn,
        "distinct_pixels": distinct,
        "area_pixels": area,
        "distinct_per_tile": distinct / n if n else float("nan"),
        "oversampling": drawn / distinct if distinct else float("nan"),
        "area_covered": distinct / area if area else float("nan"),
    }


def grid_tiles(
    scenes: Sequence[SarScene], normalizer: BandNormalizer, tile: int, rows: tuple[float, float] = (0.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping tiles covering the ``rows`` band of each scene (validation), skipping empty ones."""
    images, masks = [], []
    for scene in scenes:
        r0, r1 = check_tile_fits(scene, tile, rows)
        normed = normalizer.transform_scene(scene)
        for y in range(r0, r1 - tile + 1, tile):
            for x in range(0, scene.shape[1] - tile + 1, tile):
                lab = scene.labels[y : y + tile, x : x + tile]
                if (lab != IGNORE_INDEX).any():
                    images.append(normed[:, y : y + tile, x : x + tile])
                    masks.append(lab)
    if not images:
        raise DataError(f"no labelled {tile}x{tile} tiles in rows {rows} of {[s.name for s in scenes]}")
    return np.stack(images), np.stack(masks).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# Real formats
# ---------------------------------------------------------------------------------------------------

AI4ARCTIC_VARIABLES = {
    "HH": "nersc_sar_primary",
    "HV": "nersc_sar_secondary",
    "incidence": "sar_incidenceangle",
    "distance": "distance_map",
}
# AI4Arctic ready-to-train stage-of-development classes -> this kit's legend.
# 0 ice free, 1 new ice, 2 young ice, 3 thin first-year, 4 thick first-year, 5 old (multi-year) ice; 255 fill.
SOD_TO_CLASS = {0: WATER, 1: YOUNG, 2: YOUNG, 3: FYI, 4: FYI, 5: MYI}
AI4ARCTIC_FILL = 255
_LINEAR_UNITS = ("linear", "m2/m2", "m^2/m^2", "1", "intensity")


def _sar_band_as_db(da, band: str, path) -> np.ndarray:
    values = np.asarray(da.values, dtype=np.float64)
    fill = da.attrs.get("_FillValue", da.encoding.get("_FillValue"))
    if fill is not None and np.isfinite(fill):
        values[values == fill] = np.nan
    units = str(da.attrs.get("units", "dB")).strip().lower()
    if units in _LINEAR_UNITS:
        values = to_db(values)
    elif units not in ("db", "decibel", "decibels"):
        raise DataError(
            f"{path}: variable '{da.name}' ({band}) has units '{da.attrs.get('units')}'; expected dB or linear"
        )
    return values.astype(np.float32)


def read_ai4arctic_netcdf(path: str | Path, label: str = "SOD") -> SarScene:
    """An AI4Arctic-style netCDF scene: HH/HV (dB or linear, from ``units``), incidence angle, the chart's
    SIC/SOD/FLOE rasters (uint8, fill 255), land from ``distance_map == 0``; NaN SAR pixels are masked.

    Labels come from SOD (mapped to this kit's four classes); pixels with SIC == 0 are open water.
    SIC and FLOE are kept in ``meta`` as arrays.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        ds = xr.open_dataset(path, mask_and_scale=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable netCDF file ({exc})") from exc
    with ds:
        names = set(ds.variables)
        for band in ("HH", "HV"):
            if AI4ARCTIC_VARIABLES[band] not in names:
                raise DataError(
                    f"{path}: polarisation {band} is missing (no variable "
                    f"'{AI4ARCTIC_VARIABLES[band]}'; variables: {sorted(names)})"
                )
        if label not in names:
            raise DataError(f"{path}: no chart variable '{label}' (variables: {sorted(names)})")
        bands = [_sar_band_as_db(ds[AI4ARCTIC_VARIABLES[b]], b, path) for b in ("HH", "HV")]
        if bands[0].ndim != 2:
            raise DataError(
                f"{path}: SAR variable '{AI4ARCTIC_VARIABLES['HH']}' must be 2-D, got shape {bands[0].shape}"
            )
        shape = bands[0].shape
        # Every raster must lie on the HH grid (same dimensions and size): a chart or HV on another grid
        # would be silently misaligned, so it is an error naming the variable, never a resample.
        hh_dims = tuple(ds[AI4ARCTIC_VARIABLES["HH"]].dims)
        for name in [
            AI4ARCTIC_VARIABLES["HV"],
            label,
            "SIC",
            "FLOE",
            AI4ARCTIC_VARIABLES["incidence"],
            AI4ARCTIC_VARIABLES["distance"],
            "land_mask",
        ]:
            if name in names and (tuple(ds[name].shape) != shape or tuple(ds[name].dims) != hh_dims):
                raise DataError(
                    f"{path}: variable '{name}' is on a different grid from HH "
                    f"('{AI4ARCTIC_VARIABLES['HH']}' {dict(zip(hh_dims, shape))}, '{name}' "
                    f"{dict(zip(ds[name].dims, ds[name].shape))}); put every raster on the SAR grid "
                    "(e.g. the AI4Arctic ready-to-train files) before reading"
                )
        sar = np.stack(bands)
        chart = np.asarray(ds[label].values).astype(np.int64)
        sic = np.asarray(ds["SIC"].values).astype(np.int64) if "SIC" in names else None
        floe = np.asarray(ds["FLOE"].values).astype(np.int64) if "FLOE" in names else None
        if AI4ARCTIC_VARIABLES["incidence"] in names:
            incidence = np.asarray(ds[AI4ARCTIC_VARIABLES["incidence"]].values, dtype=np.float32)
        else:
            incidence = np.full(shape, np.nan, np.float32)
        if AI4ARCTIC_VARIABLES["distance"] in names:
            land = np.asarray(ds[AI4ARCTIC_VARIABLES["distance"]].values) == 0
        elif "land_mask" in names:
            land = np.asarray(ds["land_mask"].values).astype(bool)
        else:
            land = np.zeros(shape, bool)
        attrs = dict(ds.attrs)
    legend = SOD_TO_CLASS if label == "SOD" else None
    if legend is None:
        raise DataError(f"{path}: only SOD labels map onto this kit's classes (asked for '{label}')")
    bad = ~np.isin(chart, list(legend) + [AI4ARCTIC_FILL])
    if bad.any():
        codes = sorted(np.unique(chart[bad]).tolist())
        raise DataError(
            f"{path}: chart '{label}' holds code(s) {codes[:10]} outside the legend "
            f"{sorted(legend)} + fill {AI4ARCTIC_FILL} at {int(bad.sum())} pixel(s)"
        )
    lut = np.full(256, IGNORE_INDEX, np.int64)
    for code, cls in legend.items():
        lut[code] = cls
    labels = lut[chart]
    if sic is not None:
        labels[(sic == 0) & (chart != AI4ARCTIC_FILL)] = WATER
    month = None
    stem = path.name
    if len(stem) >= 8 and stem[:8].isdigit():
        month = int(stem[4:6]) if 1 <= int(stem[4:6]) <= 12 else None
    scene = SarScene(
        sar=sar,
        labels=labels,
        land=land,
        incidence=incidence,
        name=str(path),
        month=month,
        meta={"SIC": sic, "FLOE": floe, "attrs": attrs, "source": "ai4arctic"},
    )
    return validate_scene(scene, source=str(path))


def write_ai4arctic_netcdf(path: str | Path, scene: SarScene, units: str = "dB") -> Path:
    """Write a scene with AI4Arctic variable names (fixtures for tests; small exports)."""
    import xarray as xr

    dims = ("sar_lines", "sar_samples")
    sar = scene.sar if units == "dB" else to_linear(scene.sar)
    inverse = {v: k for k, v in SOD_TO_CLASS.items() if k in (0, 1, 4, 5)}  # class -> a representative code
    inverse[YOUNG] = 2
    sod = np.full(scene.shape, AI4ARCTIC_FILL, np.uint8)
    for cls, code in inverse.items():
        sod[scene.labels == cls] = code
    sic = np.where(scene.labels == WATER, 0, 10).astype(np.uint8)
    sic[scene.labels == IGNORE_INDEX] = AI4ARCTIC_FILL
    floe = np.where(scene.labels == WATER, 0, 3).astype(np.uint8)
    floe[scene.labels == IGNORE_INDEX] = AI4ARCTIC_FILL
    distance = np.where(scene.land, 0, 10).astype(np.uint8)
    ds = xr.Dataset(
        {
            "nersc_sar_primary": (
                dims,
                sar[0].astype(np.float32),
                {"units": units, "long_name": "HH backscatter, NERSC noise corrected"},
            ),
            "nersc_sar_secondary": (
                dims,
                sar[1].astype(np.float32),
                {"units": units, "long_name": "HV backscatter, NERSC noise corrected"},
            ),
            "sar_incidenceangle": (dims, scene.incidence.astype(np.float32), {"units": "degree"}),
            "SIC": (dims, sic, {"long_name": "sea ice concentration class (tens of percent)"}),
            "SOD": (dims, sod, {"long_name": "stage of development class"}),
            "FLOE": (dims, floe, {"long_name": "floe size class"}),
            "distance_map": (dims, distance, {"long_name": "distance to land zone (0 = land)"}),
        },
        attrs={"scene_id": scene.name, "ice_service": "simulated"},
    )
    encoding = {v: {"_FillValue": AI4ARCTIC_FILL} for v in ("SIC", "SOD", "FLOE")}
    encoding.update(
        {
            v: {"_FillValue": None}
            for v in ("nersc_sar_primary", "nersc_sar_secondary", "sar_incidenceangle", "distance_map")
        }
    )
    ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
    return Path(path)


_POLARISATION_PAIRS = (("HH", "HV"), ("VV", "VH"))


def _select_bands(
    names: list[str], n_bands: int, band_names: Sequence[str] | None, sar_path
) -> tuple[list[int], int | None, tuple[str, str]]:
    """(indices of the two polarisations, index of the incidence band or None, the two polarisations' names) of a
    SAR GeoTIFF's bands. ``band_names`` (the ``sar_bands`` parameter): with bands the file names, which of them to
    use (two polarisations, co-pol first, and optionally an incidence band); with unnamed bands, every band's name
    in order. Without it, the file's own names (HH+HV or VV+VH, and an incidence band if named)."""
    file_named = len(names) == n_bands and all(names)
    if band_names is not None:
        wanted = [str(b).upper() for b in band_names]
        if file_named:
            missing = [b for b in wanted if b not in names]
            if missing:
                raise DataError(
                    f"{sar_path}: has no band {', '.join(missing)} (its bands: {', '.join(names)}); parameter "
                    f"'sar_bands' names {list(band_names)}"
                )
            index = [names.index(b) for b in wanted]
        else:
            if len(wanted) != n_bands:
                raise DataError(
                    f"{sar_path}: has {n_bands} unnamed band(s) but parameter 'sar_bands' names {len(wanted)} "
                    f"({list(band_names)}); name every band of the file in order, e.g. [HH, HV, incidence]"
                )
            index = list(range(n_bands))
        pols = [(i, b) for i, b in zip(index, wanted) if b not in INCIDENCE_NAMES]
        angle = [i for i, b in zip(index, wanted) if b in INCIDENCE_NAMES]
        if len(pols) != 2:
            raise DataError(
                f"{sar_path}: parameter 'sar_bands' {list(band_names)} must name two polarisations (co-pol first, "
                f"then cross-pol, e.g. [VV, VH]) and optionally an incidence band ({', '.join(INCIDENCE_NAMES)}); "
                f"it names {len(pols)} polarisation(s)"
            )
        return [pols[0][0], pols[1][0]], (angle[0] if angle else None), (pols[0][1], pols[1][1])
    if n_bands < 2:
        raise DataError(
            f"{sar_path}: has {n_bands} band(s) {names}; a co-polarised and a cross-polarised "
            "band are needed (HH+HV or VV+VH): a polarisation is missing"
        )
    angle = next((names.index(b) for b in INCIDENCE_NAMES if b in names), None)
    pair = next((p for p in _POLARISATION_PAIRS if all(b in names for b in p)), None)
    if pair is not None:
        return [names.index(b) for b in pair], angle, pair
    if any(names):
        raise DataError(
            f"{sar_path}: bands {names} do not hold a co-pol/cross-pol pair (HH+HV or VV+VH): a polarisation is "
            "missing, or name the two to use with parameter 'sar_bands' (e.g. [VV, VH])"
        )
    if n_bands != 2:
        # Which of three or more unnamed bands are the polarisations cannot be guessed (and dropping one silently
        # would hide a mistake): the file must name its bands, or the caller must.
        raise DataError(
            f"{sar_path}: {n_bands} bands without names; name them in the file (band "
            "descriptions) or say which are which with parameter 'sar_bands' (e.g. [HH, HV, incidence])"
        )
    warnings.warn(f"{sar_path}: the 2 bands are unnamed; taking band 1 as co-pol and band 2 as cross-pol", stacklevel=3)
    return [0, 1], None, ("band1", "band2")


def read_geotiff_scene(
    sar_path: str | Path,
    label_path: str | Path | None = None,
    *,
    band_names: Sequence[str] | None = None,
    label_map: dict[int, int] | None = None,
    label_nodata: Sequence[int] = (),
    class_names: Sequence[str] = CLASS_NAMES,
    units: str = "dB",
    legend: dict[int, str] | None = None,
    legend_path: str | Path | None = None,
) -> SarScene:
    """A SAR GeoTIFF (two polarisations, optionally an incidence-angle band) with an optional label GeoTIFF.

    Bands (:func:`_select_bands`): the file's band descriptions, or ``band_names`` (the ``sar_bands`` parameter);
    any two polarisations (HH/HV, VV/VH, ...), co-pol first; a band named ``incidence`` (or ``angle``) is the
    incidence angle. Labels: with ``legend`` (label value -> class name, e.g. read from the data folder's
    ``legend.json``) the classes are the legend's, in value order; else ``label_map`` maps file codes to class ids
    (default: identity over ``class_names``). Codes in ``label_nodata`` (unless the legend names them) become
    ``IGNORE_INDEX``; any other code is an error that names the label file, the legend file and the values.
    """
    from labkit.data.io import read_geotiff

    data, meta = read_geotiff(sar_path)
    names = [str(n).upper() if n else "" for n in (meta.get("band_names") or [])]
    pol_index, angle_index, pair = _select_bands(names, data.shape[0], band_names, sar_path)
    sar = data[pol_index].astype(np.float32)
    if units.lower() in _LINEAR_UNITS:
        sar = to_db(sar)
    h, w = sar.shape[1:]
    if legend is not None:
        values = sorted(int(v) for v in legend)
        class_names = tuple(str(legend[v]) for v in values)
        label_map = {v: i for i, v in enumerate(values)}
        label_nodata = [c for c in label_nodata if int(c) not in legend]
    if label_path is not None:
        lab_raw, _ = read_geotiff(label_path, masked_nodata=False)
        if lab_raw.shape[1:] != (h, w):
            raise DataError(
                f"{label_path}: label size {lab_raw.shape[1:]} differs from SAR size {(h, w)} of {sar_path}"
            )
        codes = lab_raw[0]
        if not np.all(np.isfinite(codes)) or not np.all(codes == np.round(codes)):
            raise DataError(f"{label_path}: labels must be integer codes (found non-integer or NaN values)")
        codes = codes.astype(np.int64)
        mapping = dict(label_map) if label_map is not None else {i: i for i in range(len(class_names))}
        known = set(mapping) | set(int(c) for c in label_nodata)
        bad = ~np.isin(codes, list(known))
        if bad.any():
            found = sorted(np.unique(codes[bad]).tolist())
            if legend is not None:
                raise DataError(
                    f"{label_path}: label value(s) {found[:10]} at {int(bad.sum())} pixel(s) are not in the legend "
                    f"{legend_path or ''} ({', '.join(f'{v}={legend[v]}' for v in sorted(legend))}; no-data values "
                    f"{list(label_nodata)}): add them to the legend file"
                )
            raise DataError(
                f"{label_path}: code(s) {found[:10]} outside the legend {sorted(mapping)} "
                f"(no-data codes {list(label_nodata)}) at {int(bad.sum())} pixel(s)"
            )
        labels = np.full((h, w), IGNORE_INDEX, np.int64)
        for code, cls in mapping.items():
            labels[codes == code] = cls
    else:
        labels = np.full((h, w), IGNORE_INDEX, np.int64)
    incidence = data[angle_index].astype(np.float32) if angle_index is not None else np.full((h, w), np.nan, np.float32)
    scene = SarScene(
        sar=sar,
        labels=labels,
        land=np.zeros((h, w), bool),
        incidence=incidence,
        name=str(sar_path),
        band_names=tuple(pair),
        class_names=tuple(class_names),
        meta={"crs": meta.get("crs"), "transform": meta.get("transform"), "source": "geotiff"},
    )
    return validate_scene(scene, source=str(sar_path))


# ---------------------------------------------------------------------------------------------------
# Folders of real scenes: a scene list decides the splits
# ---------------------------------------------------------------------------------------------------

DATA_SOURCES = ("simulated", "ai4arctic", "geotiff", "extremeearth")
SEASONS = ("freeze", "melt", "transition")
SPLITS = ("train", "val", "test")
SCENE_LIST = "scenes.csv"
SCENE_LIST_COLUMNS = ("file", "date", "season", "split")
GEOTIFF_LABEL_NODATA = (255, -1)
# ExtremeEarth (MET Norway's East Greenland 2018 polygons, Zenodo 10.5281/zenodo.4683174, rasterised onto each
# Sentinel-1 scene as the group's utils/rasterize.py does): label rasters hold the WMO SIGRID-3 stage of
# development of the thickest ice (the polygons' SA attribute), 0 where the polygon is ice free (poly_type W),
# -1 on land (poly_type L) and -9999 where there is no polygon (the group's nodata value).
EXTREMEEARTH_SA_TO_CLASS = {
    0: WATER,
    81: YOUNG,
    82: YOUNG,
    83: YOUNG,
    84: YOUNG,
    85: YOUNG,
    86: FYI,
    87: FYI,
    88: FYI,
    89: FYI,
    91: FYI,
    93: FYI,
    95: MYI,
    96: MYI,
    97: MYI,
}
EXTREMEEARTH_IGNORED = (-9999, -1, 98, 99)  # no data, land, glacier ice, undetermined
EXTREMEEARTH_BANDS = ("HH", "HV", "incidence")  # the group's denoised_resampled rasters (dB, dB, degrees)
EXTREMEEARTH_PUBLISHED = (
    "ExtremeEarth polar use case: sea-ice polygons for 12 Sentinel-1 EW scenes over East "
    "Greenland, 2018 (MET Norway), Zenodo https://doi.org/10.5281/zenodo.4683174; the "
    "Sentinel-1 EW GRD scenes themselves from the Copernicus Data Space "
    "(https://dataspace.copernicus.eu)"
)
AI4ARCTIC_PUBLISHED = (
    "AI4Arctic Sea Ice Challenge ready-to-train dataset (DTU, "
    "https://data.dtu.dk/collections/AI4Arctic_Sea_Ice_Challenge_Dataset/6244065)"
)

LAYOUTS = {
    "ai4arctic": f"""{{data_root}}/
  {SCENE_LIST}                      file,date,season,split  (one row per scene)
  20180116T075430_dmi_prep.nc     AI4Arctic ready-to-train netCDF: nersc_sar_primary (HH), nersc_sar_secondary (HV),
  ...                             sar_incidenceangle, SIC, SOD, FLOE, distance_map, all on the SAR grid""",
    "geotiff": f"""{{data_root}}/
  {SCENE_LIST}                      file,date,season,split[,label]
  legend.json                     label value -> class name, e.g. {{{{"0": "land", "1": "water"}}}} (or legend.csv)
  sar/<scene>.tif                 two polarisations in dB (named HH/HV or VV/VH, or set sar_bands) and
                                  optionally an incidence-angle band (degrees) named incidence
  labels/<scene>.tif              one band on the same grid, values as in the legend; 255 or -1 no data""",
    "extremeearth": f"""{{data_root}}/
  {SCENE_LIST}                      optional: file,date,season,split (default: January freeze test, July melt test,
                                  the other ten months training, as in the paper)
  denoised_resampled/20180116t075430.tif            HH, HV (dB), incidence angle (degrees)
  labels_rasterized/seaice_s1_20180116t075430.tif   SIGRID-3 SA codes; 0 ice free, -1 land, -9999 no data""",
}


@dataclass
class SceneEntry:
    """One row of a scene list: the scene's file (and label raster), acquisition date, season and split."""

    file: Path
    date: str
    season: str
    split: str
    label: Path | None = None

    @property
    def month(self) -> int | None:
        digits = "".join(ch for ch in self.date if ch.isdigit())
        return int(digits[4:6]) if len(digits) >= 6 and 1 <= int(digits[4:6]) <= 12 else None


def describe_layout(data_source: str) -> str:
    """The folder layout a data source expects (for errors and docs)."""
    if data_source not in LAYOUTS:
        raise ParameterError(f"data_source must be one of {DATA_SOURCES}, got {data_source!r}")
    return LAYOUTS[data_source]


def _extremeearth_label(root: Path, sar_file: Path) -> Path:
    return root / "labels_rasterized" / f"seaice_s1_{sar_file.stem}.tif"


def _default_extremeearth_list(root: Path) -> list[SceneEntry]:
    folder = root / "denoised_resampled"
    files = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"{root}: no ExtremeEarth scenes: expected denoised_resampled/<yyyymmddthhmmss>.tif "
            f"(and no {SCENE_LIST}); layout:\n{LAYOUTS['extremeearth'].format(data_root=root)}"
        )
    entries = []
    for f in files:
        month = int(f.stem[4:6]) if len(f.stem) >= 6 and f.stem[:6].isdigit() else None
        if month is None:
            raise DataError(f"{f}: ExtremeEarth scene names start with the acquisition date (yyyymmdd...)")
        season = "freeze" if month in (1, 2, 3, 4, 10, 11, 12) else ("melt" if month in (6, 7, 8) else "transition")
        split = "test" if month in (1, 7) else "train"
        entries.append(SceneEntry(f, f.stem[:8], season, split, _extremeearth_label(root, f)))
    return entries


def read_scene_list(root: str | Path, data_source: str) -> list[SceneEntry]:
    """The scenes of ``root`` (``scenes.csv``: file, date, season, split; optional label), checked.

    Errors (DataError, naming the scene list and the row): a missing column, a file that does not exist,
    an unknown season or split, a label raster that does not exist, no training scene, and a test season
    that no scene has (at least one freeze and one melt test scene).
    """
    import pandas as pd

    root = Path(root)
    describe_layout(data_source)
    if not root.is_dir():
        raise DataError(f"data_root {root} is not a folder")
    listing = root / SCENE_LIST
    if not listing.is_file():
        if data_source == "extremeearth":
            entries = _default_extremeearth_list(root)
        else:
            raise DataError(
                f"{listing}: no scene list; a {data_source} folder needs {SCENE_LIST} with columns "
                f"{', '.join(SCENE_LIST_COLUMNS)}; layout:\n{LAYOUTS[data_source].format(data_root=root)}"
            )
    else:
        try:
            table = pd.read_csv(listing, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{listing}: not a readable CSV scene list ({exc})") from exc
        missing = [c for c in SCENE_LIST_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(
                f"{listing}: missing column(s) {missing} (has {list(table.columns)}); "
                f"columns: {', '.join(SCENE_LIST_COLUMNS)}[, label]"
            )
        entries = []
        for i, row in table.iterrows():
            where = f"{listing} row {i + 2}"
            season, split = row["season"].strip().lower(), row["split"].strip().lower()
            if season not in SEASONS:
                raise DataError(f"{where}: season {row['season']!r} is not one of {SEASONS}")
            if split not in SPLITS:
                raise DataError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
            file = root / row["file"].strip()
            if not file.is_file():
                raise DataError(f"{where}: scene file {file} does not exist")
            label = None
            if data_source == "geotiff":
                label = (
                    root / (row.get("label") or "").strip()
                    if (row.get("label") or "").strip()
                    else root / "labels" / file.name
                )
            elif data_source == "extremeearth":
                label = (
                    root / row["label"].strip() if (row.get("label") or "").strip() else _extremeearth_label(root, file)
                )
            entries.append(SceneEntry(file, row["date"].strip(), season, split, label))
    for e in entries:
        if e.label is not None and not e.label.is_file():
            raise DataError(f"{e.file}: its label raster {e.label} does not exist")
    if data_source == "geotiff":
        read_geotiff_legend(root)
    where = listing if listing.is_file() else root
    if not any(e.split == "train" for e in entries):
        raise DataError(f"{where}: no scene has split 'train'")
    for season in ("freeze", "melt"):
        if not any(e.split == "test" and e.season == season for e in entries):
            raise DataError(
                f"{where}: no test scene of the {season} season (the study scores freeze and melt "
                f"test scenes; seasons of the test scenes: "
                f"{sorted({e.season for e in entries if e.split == 'test'}) or 'none'})"
            )
    return entries


def read_extremeearth_scene(sar_path: str | Path, label_path: str | Path) -> SarScene:
    """An ExtremeEarth scene as the group's code prepared it: HH, HV (dB) and incidence angle in one GeoTIFF,
    the rasterised SIGRID-3 stage-of-development chart on the same grid."""
    from labkit.data.io import read_geotiff

    data, meta = read_geotiff(sar_path)
    names = [str(n).upper() if n else "" for n in (meta.get("band_names") or [])]
    bands = None if any(names) else list(EXTREMEEARTH_BANDS)[: data.shape[0]]
    scene = read_geotiff_scene(
        sar_path, label_path, band_names=bands, label_map=EXTREMEEARTH_SA_TO_CLASS, label_nodata=EXTREMEEARTH_IGNORED
    )
    lab_raw, _ = read_geotiff(label_path, masked_nodata=False)
    scene.land = lab_raw[0] == -1
    scene.labels[scene.land] = IGNORE_INDEX
    scene.meta["source"] = "extremeearth"
    return scene


def read_geotiff_legend(root: str | Path) -> tuple[dict[int, str], Path]:
    """(label value -> class name, the legend file) of a ``geotiff`` folder: ``legend.json`` (``{"0": "land",
    "1": "water"}``) or ``legend.csv`` (``value,class``), read as the noisy-label study's GeoTIFF tree reads its
    legend. A geotiff folder without one is an error: its classes are the data's, never a fixed legend."""
    from labkit.data.geotiff_tree import LEGEND_FILES, read_legend

    root = Path(root)
    try:
        legend = read_legend(root)
    except DataError as exc:
        if any((root / f).exists() for f in LEGEND_FILES):
            raise
        example = ", ".join(f'"{i}": "{n}"' for i, n in enumerate(CLASS_NAMES))
        raise DataError(
            f"{root}: no legend file ({' or '.join(LEGEND_FILES)}) mapping the label rasters' values to class names; "
            f'e.g. legend.json {{{example}}} for the sea-ice classes, or {{"0": "land", "1": "water"}} for '
            f"a water mask (values {list(GEOTIFF_LABEL_NODATA)} are no data unless the legend names them)"
        ) from exc
    path = next(root / f for f in LEGEND_FILES if (root / f).exists())
    return legend, path


def load_scene(
    entry: SceneEntry, data_source: str, sar_bands: Sequence[str] | None = None, root: str | Path | None = None
) -> SarScene:
    """Read one scene of a scene list in its data source's format; season and date from the list. A ``geotiff``
    scene's classes come from the legend file in ``root`` (:func:`read_geotiff_legend`)."""
    if data_source == "ai4arctic":
        scene = read_ai4arctic_netcdf(entry.file)
    elif data_source == "geotiff":
        if root is None:
            raise ParameterError("load_scene: a geotiff scene needs its data folder (root), which holds the legend")
        legend, legend_path = read_geotiff_legend(root)
        scene = read_geotiff_scene(
            entry.file,
            entry.label,
            band_names=list(sar_bands) if sar_bands else None,
            label_nodata=GEOTIFF_LABEL_NODATA,
            legend=legend,
            legend_path=legend_path,
        )
    elif data_source == "extremeearth":
        scene = read_extremeearth_scene(entry.file, entry.label)
    else:
        raise ParameterError(
            f"load_scene reads real scenes; data_source {data_source!r} is not one of {DATA_SOURCES[1:]}"
        )
    scene.month = entry.month if entry.month is not None else scene.month
    scene.meta.update({"season": entry.season, "split": entry.split, "date": entry.date})
    scene.name = entry.file.stem
    return scene


def write_scene_tree(
    root: str | Path, scenes: Sequence[tuple[SarScene, str, str]], layout: str, scene_list: bool = True
) -> Path:
    """Write ``(scene, season, split)`` triples as a folder of ``layout`` (fixtures for tests and examples).

    Dates come from each scene's month (2018, day 15). Returns ``root``.
    """
    from labkit.data.io import write_geotiff

    root = Path(root)
    describe_layout(layout)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    if layout == "geotiff" and scenes:
        import json

        legend = {str(i): name for i, name in enumerate(scenes[0][0].class_names)}
        (root / "legend.json").write_text(json.dumps(legend, indent=1))
    for i, (scene, season, split) in enumerate(scenes):
        month = scene.month or 1
        stamp = f"2018{month:02d}{15 + i % 10:02d}t0{i % 10}0000"
        if layout == "ai4arctic":
            rel = f"{stamp.upper()}_dmi_prep.nc"
            write_ai4arctic_netcdf(root / rel, scene)
        elif layout == "geotiff":
            rel = f"sar/{stamp}.tif"
            (root / "sar").mkdir(exist_ok=True)
            (root / "labels").mkdir(exist_ok=True)
            bands, names = np.nan_to_num(scene.sar, nan=-9999.0), list(scene.band_names)
            if np.isfinite(scene.incidence).any():
                bands, names = (
                    np.concatenate([bands, np.nan_to_num(scene.incidence, nan=-9999.0)[None]]),
                    [
                        *names,
                        "incidence",
                    ],
                )
            write_geotiff(root / rel, bands.astype(np.float32), nodata=-9999.0, band_names=names)
            write_geotiff(
                root / "labels" / f"{stamp}.tif",
                np.where(scene.labels == IGNORE_INDEX, 255, scene.labels).astype(np.uint8),
            )
        else:
            rel = f"denoised_resampled/{stamp}.tif"
            (root / "denoised_resampled").mkdir(exist_ok=True)
            (root / "labels_rasterized").mkdir(exist_ok=True)
            stack = np.concatenate([np.nan_to_num(scene.sar, nan=-9999.0), scene.incidence[None]]).astype(np.float32)
            write_geotiff(root / rel, stack, nodata=-9999.0)  # unnamed bands, as the group's rasters
            inverse = {WATER: 0, YOUNG: 83, FYI: 86, MYI: 95}
            codes = np.full(scene.shape, -9999, np.int16)
            for cls, code in inverse.items():
                codes[scene.labels == cls] = code
            codes[scene.land] = -1
            write_geotiff(root / "labels_rasterized" / f"seaice_s1_{stamp}.tif", codes, nodata=-9999)
        rows.append({"file": rel, "date": f"2018-{month:02d}-{15 + i % 10:02d}", "season": season, "split": split})
    if scene_list:
        import pandas as pd

        pd.DataFrame(rows, columns=list(SCENE_LIST_COLUMNS)).to_csv(root / SCENE_LIST, index=False)
    return root


# ---------------------------------------------------------------------------------------------------
# Statistics (calibration against the real chip; class histograms)
# ---------------------------------------------------------------------------------------------------


def _shared_chip_folder() -> Path:
    """The Sen1Floods11 chip in the workplace's ``shared/data`` beside the repository (``<root>/../shared``)."""
    from labkit.core.paths import repo_root

    return repo_root().parent / "shared" / "data" / "sea_ice" / "sen1floods11_sar_water_proxy"


SHARED_CHIP = _shared_chip_folder()


def enl_from_db_std(std_db: float) -> float:
    """Equivalent number of looks whose Gamma speckle has this standard deviation in dB."""
    from scipy import optimize, special

    target = float(std_db)
    fn = lambda looks: 10.0 / np.log(10.0) * np.sqrt(special.polygamma(1, looks)) - target  # noqa: E731
    return float(optimize.brentq(fn, 0.05, 1e4))


def local_db_std(db: np.ndarray, mask: np.ndarray, window: int = 9) -> float:
    """Median over ``mask`` of the standard deviation of dB in ``window`` x ``window`` neighbourhoods."""
    db = np.asarray(db, np.float64)
    mean = ndimage.uniform_filter(db, window)
    mean_sq = ndimage.uniform_filter(db**2, window)
    std = np.sqrt(np.maximum(mean_sq - mean**2, 0))
    return float(np.median(std[mask]))


def real_chip_statistics(folder: str | Path = SHARED_CHIP) -> dict | None:
    """Recompute ``REAL_CHIP_STATS`` from the shared Sen1Floods11 chip; None when it is absent."""
    folder = Path(folder)
    sar_file, label_file = folder / "Spain_7370579_S1Hand.tif", folder / "Spain_7370579_LabelHand.tif"
    if not (sar_file.is_file() and label_file.is_file()):
        return None
    scene = read_geotiff_scene(
        sar_file, label_file, label_map={1: 0, 0: 1}, label_nodata=(-1,), class_names=("water", "not_water")
    )
    water = ndimage.binary_erosion(scene.labels == 0, iterations=8)
    out = {}
    for b, band in enumerate(scene.band_names):
        out[f"{band}_water_median_db"] = float(np.nanmedian(scene.sar[b][scene.labels == 0]))
        out[f"{band}_land_median_db"] = float(np.nanmedian(scene.sar[b][scene.labels == 1]))
        out[f"{band}_water_enl"] = enl_from_db_std(local_db_std(scene.sar[b], water))
    return out


def class_backscatter(scenes: Sequence[SarScene], max_pixels: int = 20000, seed: int = 0):
    """Long table (season, class, band, dB) of labelled pixels, subsampled per scene, for histograms."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for scene in scenes:
        ok = (scene.labels != IGNORE_INDEX) & np.isfinite(scene.sar).all(0)
        idx = np.flatnonzero(ok.ravel())
        if idx.size > max_pixels:
            idx = rng.choice(idx, max_pixels, replace=False)
        labels = scene.labels.ravel()[idx]
        for b, band in enumerate(scene.band_names):
            frames.append(
                pd.DataFrame(
                    {
                        "scene": scene.name,
                        "month": scene.month,
                        "season": scene.season,
                        "class": np.asarray(scene.class_names)[labels],
                        "band": band,
                        "db": scene.sar[b].ravel()[idx],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def calibration_table(scenes: Sequence[SarScene], folder: str | Path = SHARED_CHIP):
    """The simulator's statistics next to the real chip's (stored constants and, when the chip is present,
    recomputed) and the AI4Arctic publisher's global statistics."""
    import pandas as pd

    live = real_chip_statistics(folder)
    freeze = [s for s in scenes if s.season == "freeze"]
    melt = [s for s in scenes if s.season == "melt"]

    def water_pixels(group, band):
        vals = [s.sar[band][(s.labels == WATER) & s.valid] for s in group]
        return np.concatenate(vals) if vals else np.array([np.nan])

    def sim_enl(group):
        values = []
        for s in group:
            water = ndimage.binary_erosion((s.surface if s.surface is not None else s.labels) == WATER, iterations=6)
            water &= s.valid
            if water.sum() > 50:
                values.append(enl_from_db_std(local_db_std(np.nan_to_num(s.sar[0], nan=-30.0), water)))
        return float(np.median(values)) if values else float("nan")

    allv = [np.concatenate([s.sar[b][s.valid] for s in scenes]) for b in (0, 1)]
    nan = float("nan")
    rows = [
        (
            "cross-pol over water, median dB (noise-floor limited)",
            REAL_CHIP_STATS["VH_water_median_db"],
            live["VH_water_median_db"] if live else nan,
            float(np.median(water_pixels(freeze, 1))),
            float(np.median(water_pixels(melt, 1))),
            float(np.median(water_pixels(scenes, 1))),
            "chip VH (IW) vs simulated HV (EW)",
        ),
        (
            "co-pol over water, median dB",
            REAL_CHIP_STATS["VV_water_median_db"],
            live["VV_water_median_db"] if live else nan,
            float(np.median(water_pixels(freeze, 0))),
            float(np.median(water_pixels(melt, 0))),
            float(np.median(water_pixels(scenes, 0))),
            "chip VV (calm flood water) vs simulated HH: HH is 2-4 dB under VV over water; freeze water is damped",
        ),
        (
            "co-pol speckle ENL over water (texture included)",
            REAL_CHIP_STATS["VV_water_enl"],
            live["VV_water_enl"] if live else nan,
            sim_enl(freeze),
            sim_enl(melt),
            sim_enl(scenes),
            "9x9 dB std -> trigamma inversion; additive noise near the floor raises the apparent ENL",
        ),
        (
            "co-pol mean dB",
            AI4ARCTIC_MEAN_STD_DB["HH"][0],
            nan,
            nan,
            nan,
            float(np.mean(allv[0])),
            "reference: AI4Arctic publisher mean over 513 EW scenes (plausibility only)",
        ),
        (
            "cross-pol mean dB",
            AI4ARCTIC_MEAN_STD_DB["HV"][0],
            nan,
            nan,
            nan,
            float(np.mean(allv[1])),
            "reference: AI4Arctic publisher mean over 513 EW scenes (plausibility only)",
        ),
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "quantity",
            "reference (stored)",
            "reference (recomputed from shared chip)",
            "simulated freeze scenes",
            "simulated melt scenes",
            "simulated year",
            "note",
        ],
    )
