"""Micro-CT of porous rock: a phase-map simulator, a CT forward model, and loaders for real volumes.

Simulator
---------
Five rock types whose microstructure differs the way a petrographer would describe it
(see :data:`ROCK_TYPES`), each generated as a 3-D phase map with three phases
(:data:`PHASES`: pore, mineral grain/crystal, micro-porous clay or micrite) plus a
material map (quartz vs feldspar grains, calcite, clay, micrite...).

The grey image comes from a CT forward model of the material map (:func:`ct_forward`):
linear attenuation per material at the scanner's effective energy (Compton + photoelectric
approximation, so contrast between minerals changes with energy), partial-volume blur (the
scanner's point-spread function), spatially correlated noise, ring artefacts around the
rotation axis, beam-hardening cupping, and quantisation to the scanner's bit depth.
A scanner is a parameter set (:data:`SCANNERS`), so an out-of-distribution split across
scanners is a real change of physics, not a relabelling.

Loaders
-------
TIFF stacks and folders of slices, raw volumes with an explicit shape/dtype or a header file
(MetaImage ``.mhd``, the ``.raw_header`` of pore-scale imaging tools, or a JSON sidecar),
8/16-bit PNG/JPEG/TIFF slices, and MATLAB ``.mat`` volumes; slicing volumes into 2-D samples;
per-volume intensity normalisation. Bad input raises :class:`labkit.core.errors.DataError`
naming the file and the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from labkit.core.errors import DataError

PHASES: tuple[str, ...] = ("pore", "mineral", "microporous")
PORE, MINERAL, MICRO = 0, 1, 2

SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RAW_SUFFIXES = (".raw", ".bin", ".img", ".vol", ".dat")


# --------------------------------------------------------------------------------------
# Materials and their X-ray attenuation
# --------------------------------------------------------------------------------------
# mu/rho = Compton term + photoelectric term ~ Z^3.5 / E^3.2. The photoelectric constant is
# fitted to water at 30 keV; the result is within ~15% of NIST XCOM for quartz and calcite
# between 30 and 100 keV, which is enough to make contrast depend on the scanner's energy.
_PHOTO_K = 9.5
_Z_EXP = 3.5
_E_EXP = 3.2


@dataclass(frozen=True)
class Material:
    name: str
    density: float  # g/cm^3
    z_eff: float
    phase: int
    micro_porosity: float = 0.0  # fraction of sub-resolution pores (air) inside the voxel

    def attenuation(self, energy_kev: float) -> float:
        """Linear attenuation coefficient (1/cm) at an effective energy."""
        compton = 0.19 * (energy_kev / 30.0) ** -0.1
        photo = _PHOTO_K * self.z_eff**_Z_EXP / energy_kev**_E_EXP
        return (1.0 - self.micro_porosity) * self.density * (compton + photo)


MATERIALS: tuple[Material, ...] = (
    Material("air", 0.0012, 7.6, PORE),
    Material("quartz", 2.65, 11.8, MINERAL),
    Material("feldspar", 2.56, 12.4, MINERAL),
    Material("calcite", 2.71, 14.5, MINERAL),
    Material("clay", 2.60, 12.6, MICRO, micro_porosity=0.40),
    Material("micrite", 2.71, 14.5, MICRO, micro_porosity=0.28),
    Material("brine", 1.05, 8.2, PORE),
)
MATERIAL_INDEX = {m.name: i for i, m in enumerate(MATERIALS)}
_MATERIAL_PHASE = np.array([m.phase for m in MATERIALS], dtype=np.uint8)


def material_phases(materials: np.ndarray) -> np.ndarray:
    """Phase id (0 pore, 1 mineral, 2 micro-porous) of each voxel of a material map."""
    return _MATERIAL_PHASE[materials]


def materials_for_phases(
    phases: np.ndarray, mineral: str = "quartz", micro: str = "clay", pore: str = "air"
) -> np.ndarray:
    """Material map for a phase map from elsewhere (e.g. a real segmented volume)."""
    table = np.array([MATERIAL_INDEX[pore], MATERIAL_INDEX[mineral], MATERIAL_INDEX[micro]], dtype=np.uint8)
    phases = np.asarray(phases)
    validate_phase_labels(phases, len(PHASES), name="phase map")
    return table[phases.astype(np.intp)]


# --------------------------------------------------------------------------------------
# Rock microstructures (3-D phase maps)
# --------------------------------------------------------------------------------------
def _smooth_field(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-8)


# Every rock type shares one mineralogy and one distribution of phase fractions; they differ only in how the
# phases are arranged (texture and morphology). Each rock sample draws its porosity and micro-porosity from the
# same ranges (:data:`PHASE_FRACTION_RANGES`, whatever its rock type: samples of one formation overlap in porosity)
# and its phase map hits them exactly; grey levels per phase are set by the scanner, not the rock. A slice's grey
# histogram then tells its sample's porosity, not its rock type (up to the partial-volume voxels at phase
# boundaries, whose number does depend on the texture, as in real scans).
PHASE_FRACTION_RANGES: dict[str, tuple[float, float]] = {"pore": (0.10, 0.26), "microporous": (0.08, 0.24)}
PHASE_FRACTIONS: dict[str, float] = {"pore": 0.18, "mineral": 0.66, "microporous": 0.16}  # the ranges' middle


def draw_phase_fractions(rng: np.random.Generator) -> dict[str, float]:
    """One sample's phase fractions: porosity and micro-porosity uniform in :data:`PHASE_FRACTION_RANGES`,
    the same for every rock type; the mineral phase takes the rest."""
    pore = float(rng.uniform(*PHASE_FRACTION_RANGES["pore"]))
    micro = float(rng.uniform(*PHASE_FRACTION_RANGES["microporous"]))
    return {"pore": pore, "mineral": 1.0 - pore - micro, "microporous": micro}


FELDSPAR_FRACTION = 0.15  # of the mineral voxels, in every rock (an arkosic / mixed assemblage)


def _take_top(score: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the ``n`` voxels of ``allowed`` with the highest ``score`` (exact count, ties broken
    by position): how every rock hits :data:`PHASE_FRACTIONS` exactly."""
    out = np.zeros(score.shape, bool)
    idx = np.flatnonzero(allowed)
    n = int(min(max(n, 0), idx.size))
    if n:
        vals = score.ravel()[idx]
        keep = idx[np.argpartition(-vals, n - 1)[:n]] if n < idx.size else idx
        out.ravel()[keep] = True
    return out


def _place_ellipsoids(
    shape,
    rng: np.random.Generator,
    radius: Callable[[], float],
    target_fraction: float,
    *,
    aspect: Callable[[], tuple[float, float, float]] = lambda: (1.0, 1.0, 1.0),
    occupied: np.ndarray | None = None,
    max_objects: int = 50000,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop ellipsoids at random until ``target_fraction`` of the volume is covered (overlap allowed: it
    stands for compaction and pressure solution). Returns (coverage mask, q) where ``q`` is each covered
    voxel's normalised radius in the ellipsoid that covers it most centrally (0 centre, 1 rim; 2 outside)."""
    shape_a = np.array(shape)
    covered = np.zeros(shape, bool) if occupied is None else occupied
    q_map = np.full(shape, 2.0, np.float32)
    n_total = covered.size
    count = int(covered.sum())
    for _ in range(max_objects):
        if count >= target_fraction * n_total:
            break
        r = float(radius())
        ax = np.array(aspect(), dtype=float) * r
        c = rng.uniform(-ax, shape_a + ax)
        lo = np.maximum(np.floor(c - ax).astype(int), 0)
        hi = np.minimum(np.ceil(c + ax).astype(int) + 1, shape_a)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        q = np.sqrt(((zz - c[0]) / ax[0]) ** 2 + ((yy - c[1]) / ax[1]) ** 2 + ((xx - c[2]) / ax[2]) ** 2)
        inside = q <= 1.0
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        count += int(np.count_nonzero(inside & ~covered[box]))
        covered[box] |= inside
        q_map[box] = np.minimum(q_map[box], np.where(inside, q, 2.0)).astype(np.float32)
    return covered, q_map


def _n(shape, fr: dict[str, float], phase: str) -> int:
    return int(round(fr[phase] * int(np.prod(shape))))


def _to_materials(rng, phases: np.ndarray, scale: float) -> np.ndarray:
    """Material map of a phase map, with the same assemblage in every rock: air in pores, clay in the
    micro-porous phase, quartz grains/crystals with :data:`FELDSPAR_FRACTION` of the mineral voxels feldspar
    (patches about a grain across)."""
    mat = np.full(phases.shape, MATERIAL_INDEX["air"], np.uint8)
    mineral = phases == MINERAL
    mat[mineral] = MATERIAL_INDEX["quartz"]
    feld = _take_top(_smooth_field(rng, phases.shape, 2.5 * scale), mineral, int(FELDSPAR_FRACTION * mineral.sum()))
    mat[feld] = MATERIAL_INDEX["feldspar"]
    mat[phases == MICRO] = MATERIAL_INDEX["clay"]
    return mat


def _grains_then_pore_fill(rng, shape, scale, fr, radius, aspect, fill_score) -> np.ndarray:
    """Grain-supported rocks: grains cover the mineral fraction, then the pore space is split into the
    micro-porous fill (the voxels of the highest ``fill_score(solid)``) and open pores (the rest)."""
    solid, _ = _place_ellipsoids(shape, rng, radius, fr["mineral"], aspect=aspect)
    solid = _trim(solid, rng, shape, fr)
    phases = np.full(shape, MINERAL, np.uint8)
    phases[~solid] = PORE
    phases[_take_top(fill_score(solid), ~solid, _n(shape, fr, "microporous"))] = MICRO
    return phases


def _trim(solid: np.ndarray, rng, shape, fr) -> np.ndarray:
    """Exactly the mineral fraction: the last grain overshoots by up to one grain's volume; the surplus
    voxels nearest the pore space (grain rims) go back to pore."""
    n_min = _n(shape, fr, "mineral")
    if solid.sum() <= n_min:
        return solid
    depth = ndimage.distance_transform_edt(solid) + 0.01 * rng.random(shape)
    return _take_top(depth, solid, n_min)


def _well_sorted_sandstone(rng, shape, scale, fr):
    """Clean, well-sorted arenite (Berea-like): equant grains of one size (radius ~6.5 px, sorting
    sigma 0.12), grain-coating clay lining every pore wall, open pore bodies in the middle."""

    def coats(solid):
        return -ndimage.distance_transform_edt(~solid) + 0.3 * _smooth_field(rng, shape, 1.0)

    return _grains_then_pore_fill(
        rng,
        shape,
        scale,
        fr,
        lambda: 6.5 * scale * rng.lognormal(0, 0.12),
        lambda: tuple(rng.uniform(0.85, 1.15, 3)),
        coats,
    )


def _poorly_sorted_sandstone(rng, shape, scale, fr):
    """Immature, poorly sorted wacke: angular-elongate grains from silt to coarse sand (lognormal sigma
    0.6), detrital clay filling whole pore clusters in patches, the rest of the pores open."""
    return _grains_then_pore_fill(
        rng,
        shape,
        scale,
        fr,
        lambda: float(np.clip(4.0 * scale * rng.lognormal(0, 0.6), 1.2, 18 * scale)),
        lambda: tuple(rng.uniform(0.6, 1.4, 3)),
        lambda solid: _smooth_field(rng, shape, 3.0 * scale),
    )


def _vuggy_carbonate(rng, shape, scale, fr):
    """Vuggy fabric: large irregular dissolution vugs (unions of lobes) in a crystalline matrix with
    micro-porous mud (micrite-like) patches and fine intercrystalline pores; mineral crystals fill the rest.
    (Same mineral assemblage as every rock here: a silicified/dolomitised fabric; the texture is the vuggy one.)"""
    n_pore = _n(shape, fr, "pore")
    vug = np.zeros(shape, bool)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(10000):  # vugs take about two thirds of the porosity
        if vug.sum() >= 0.65 * n_pore:
            break
        c = rng.uniform(0, np.array(shape))
        for _ in range(rng.integers(3, 7)):  # a vug is a union of lobes: irregular outline
            cc = c + rng.normal(0, 5 * scale, 3)
            r = rng.uniform(4, 10) * scale
            vug |= ((zz - cc[0]) ** 2 + (yy - cc[1]) ** 2 + (xx - cc[2]) ** 2) <= r * r
    if vug.sum() > n_pore:
        vug = _take_top(ndimage.distance_transform_edt(vug) + 0.01 * rng.random(shape), vug, n_pore)
    pore = vug | _take_top(_smooth_field(rng, shape, 1.0), ~vug, n_pore - int(vug.sum()))
    phases = np.full(shape, MINERAL, np.uint8)
    phases[pore] = PORE
    phases[_take_top(_smooth_field(rng, shape, 4.0 * scale), ~pore, _n(shape, fr, "microporous"))] = MICRO
    return phases


def _oolitic_limestone(rng, shape, scale, fr):
    """Oolitic grainstone fabric: well-rounded, very well sorted ooids (radius ~7 px, sorting 0.08) with
    micro-porous nuclei, mineral cortices, an isopachous rim cement round every ooid, open interparticle
    pores. (Same mineral assemblage as every rock here; the texture is the oolitic one.)"""
    n_solid = _n(shape, fr, "mineral") + _n(shape, fr, "microporous")
    ooid, q = _place_ellipsoids(
        shape,
        rng,
        lambda: 7.0 * scale * rng.lognormal(0, 0.08),
        fr["mineral"] + fr["microporous"] - 0.2,
        aspect=lambda: tuple(rng.uniform(0.9, 1.1, 3)),
    )
    if ooid.sum() > n_solid:
        ooid = _take_top(-q, ooid, n_solid)
    rim = _take_top(-ndimage.distance_transform_edt(~ooid) + 0.01 * rng.random(shape), ~ooid, n_solid - ooid.sum())
    phases = np.full(shape, PORE, np.uint8)
    phases[ooid | rim] = MINERAL
    phases[_take_top(-q, ooid, _n(shape, fr, "microporous"))] = MICRO
    return phases


def _laminated_shale(rng, shape, scale, fr):
    """Laminated silty shale fabric: thin, wavy clay (micro-porous) laminae between silt laminae, and
    bedding-parallel flattened pores (bedding is horizontal in a slice)."""
    nz, ny, nx = shape
    zz, yy, xx = np.ogrid[:nz, :ny, :nx]
    period = rng.uniform(20, 32) * scale
    wave = 2.5 * scale * np.sin(2 * np.pi * xx / rng.uniform(60, 120) + rng.uniform(0, 6.3))
    u = yy + wave + 1.5 * _smooth_field(rng, shape, 4.0)
    pores, _ = _place_ellipsoids(
        shape,
        rng,
        lambda: rng.uniform(4.0, 8.0) * scale,
        fr["pore"],
        aspect=lambda: (rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.45), rng.uniform(1.0, 1.8)),
    )
    if pores.sum() > _n(shape, fr, "pore"):
        pores = _take_top(
            ndimage.distance_transform_edt(pores) + 0.01 * rng.random(shape), pores, _n(shape, fr, "pore")
        )
    lamina = np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3)) + 0.3 * _smooth_field(rng, shape, 2.5)
    phases = np.full(shape, MINERAL, np.uint8)
    phases[pores] = PORE
    phases[_take_top(np.broadcast_to(lamina, shape), ~pores, _n(shape, fr, "microporous"))] = MICRO
    return phases


_PHASE_BUILDERS: dict[str, Callable] = {
    "well_sorted_sandstone": _well_sorted_sandstone,
    "poorly_sorted_sandstone": _poorly_sorted_sandstone,
    "vuggy_carbonate": _vuggy_carbonate,
    "oolitic_limestone": _oolitic_limestone,
    "laminated_shale": _laminated_shale,
}


def _material_builder(build: Callable) -> Callable:
    def make(rng, shape, scale):
        return _to_materials(rng, build(rng, shape, scale, draw_phase_fractions(rng)), scale)

    make.__doc__ = build.__doc__
    return make


ROCK_TYPES: dict[str, Callable] = {name: _material_builder(b) for name, b in _PHASE_BUILDERS.items()}


def simulate_rock(
    rock_type: str,
    shape: Sequence[int] = (24, 112, 112),
    *,
    grain_scale: float = 1.0,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """3-D material map (uint8 indices into :data:`MATERIALS`) of one rock sample.

    ``grain_scale`` scales every length (grain radii, vug size, lamina period) in voxels,
    i.e. it plays the role of the voxel size.
    """
    if rock_type not in ROCK_TYPES:
        raise ValueError(f"unknown rock type {rock_type!r}; choose from {sorted(ROCK_TYPES)}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sides (z, y, x), got {tuple(shape)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return ROCK_TYPES[rock_type](rng, tuple(int(s) for s in shape), float(grain_scale))


# --------------------------------------------------------------------------------------
# CT forward model
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scanner:
    """Imaging parameters of one CT scanner (a distribution shift is a change of these)."""

    name: str
    energy_kev: float  # effective energy of the (filtered) beam
    psf_sigma: float  # partial-volume blur, voxels
    noise: float  # noise std relative to the quartz attenuation
    noise_corr: float  # spatial correlation length of the noise, voxels
    ring_amplitude: float  # ring strength relative to the quartz attenuation
    n_rings: int
    cupping: float  # beam-hardening cupping: relative drop of attenuation at the axis
    bit_depth: int = 16


SCANNERS: dict[str, Scanner] = {
    # lab micro-CT at 80 kVp: moderate blur, visible cupping, 8-bit export
    "benchtop_80kv": Scanner("benchtop_80kv", 42.0, 0.9, 0.09, 0.7, 0.03, 6, 0.10, 8),
    # industrial source at 140 kVp: harder beam (less mineral contrast), more blur and noise
    "industrial_140kv": Scanner("industrial_140kv", 68.0, 1.3, 0.12, 0.9, 0.015, 4, 0.18, 16),
    # monochromatic synchrotron: sharp, low noise, no beam hardening, strong rings
    "synchrotron_25kev": Scanner("synchrotron_25kev", 25.0, 0.55, 0.05, 0.5, 0.06, 12, 0.0, 16),
}


def attenuation_map(materials: np.ndarray, energy_kev: float) -> np.ndarray:
    table = np.array([m.attenuation(energy_kev) for m in MATERIALS], dtype=np.float32)
    return table[materials]


def ct_forward(
    materials: np.ndarray,
    scanner: Scanner | str,
    *,
    seed: int | np.random.Generator = 0,
    fov_offset: tuple[float, float] | None = None,
) -> np.ndarray:
    """Reconstructed CT grey values of a 3-D material map (Z, Y, X), quantised to the
    scanner's bit depth (uint8 or uint16). Slices are axial (rings and cupping in-plane)."""
    sc = SCANNERS[scanner] if isinstance(scanner, str) else scanner
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    materials = np.asarray(materials)
    if materials.ndim == 2:
        materials = materials[None]
    mu = attenuation_map(materials, sc.energy_kev)
    ref = MATERIALS[MATERIAL_INDEX["quartz"]].attenuation(sc.energy_kev)
    # partial-volume effect: the PSF mixes attenuation across phase boundaries
    mu = ndimage.gaussian_filter(mu, sc.psf_sigma, mode="reflect")
    nz, ny, nx = mu.shape
    if fov_offset is None:
        fov_offset = tuple(rng.uniform(-0.1, 0.1, 2) * (ny, nx))
    cy, cx = (ny - 1) / 2 + fov_offset[0], (nx - 1) / 2 + fov_offset[1]
    yy, xx = np.mgrid[:ny, :nx]
    r = np.hypot(yy - cy, xx - cx)
    r_fov = max(r.max(), 1.0)
    # beam hardening: the centre of the sample looks less attenuating than its rim
    mu *= (1.0 - sc.cupping * (1.0 - (r / r_fov) ** 2))[None].astype(np.float32)
    # ring artefacts: miscalibrated detector columns -> the same rings on every slice
    rings = np.zeros((ny, nx), np.float32)
    for _ in range(sc.n_rings):
        r0 = rng.uniform(2.0, r_fov)
        rings += rng.choice([-1, 1]) * rng.uniform(0.4, 1.0) * np.exp(-0.5 * ((r - r0) / 0.6) ** 2)
    mu += (sc.ring_amplitude * ref) * rings[None]
    noise = rng.standard_normal(mu.shape).astype(np.float32)
    if sc.noise_corr > 0:
        noise = ndimage.gaussian_filter(noise, (0, sc.noise_corr, sc.noise_corr))
        noise /= noise.std() + 1e-8
    mu += (sc.noise * ref) * noise
    # export window: air .. 1.5x calcite at this energy, as an operator would set it
    hi = 1.5 * MATERIALS[MATERIAL_INDEX["calcite"]].attenuation(sc.energy_kev)
    lo = -0.1 * hi
    top = 255 if sc.bit_depth == 8 else 65535
    grey = np.clip((mu - lo) / (hi - lo), 0.0, 1.0) * top
    return np.round(grey).astype(np.uint8 if sc.bit_depth == 8 else np.uint16)


# --------------------------------------------------------------------------------------
# A labelled set of 2-D slices
# --------------------------------------------------------------------------------------
@dataclass
class MicroCTSlices:
    """2-D slices with phase masks and metadata (rock type, scanner, geometry)."""

    images: np.ndarray  # (N, H, W) float32, normalised per volume
    masks: np.ndarray  # (N, H, W) int64 phase ids
    rock: np.ndarray  # (N,) index into rock_types
    scanner: np.ndarray  # (N,) index into scanners
    geometry: np.ndarray  # (N,) index of the rock sample (phase map) within its rock type
    rock_types: tuple[str, ...]
    scanners: tuple[str, ...]
    phases: tuple[str, ...] = PHASES
    raw: np.ndarray | None = field(default=None, repr=False)  # (N, H, W) quantised grey values
    # real volumes: the rock and scanner split the manifest declares ({train_rocks, test_rock, train_scanners,
    # test_scanner}); None for simulated data, whose split comes from the study's parameters
    split_plan: dict | None = None
    source: str = "simulated"  # where the slices come from (the manifest or layout for real volumes)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> MicroCTSlices:
        index = np.asarray(index)
        return MicroCTSlices(
            self.images[index],
            self.masks[index],
            self.rock[index],
            self.scanner[index],
            self.geometry[index],
            self.rock_types,
            self.scanners,
            self.phases,
            None if self.raw is None else self.raw[index],
            self.split_plan,
            self.source,
        )

    def where(
        self,
        rocks: Iterable[str] | None = None,
        scanners: Iterable[str] | None = None,
        geometries: Iterable[int] | None = None,
    ) -> np.ndarray:
        """Boolean selector over slices."""
        keep = np.ones(len(self), bool)
        if rocks is not None:
            keep &= np.isin(self.rock, [self.rock_types.index(r) for r in rocks])
        if scanners is not None:
            keep &= np.isin(self.scanner, [self.scanners.index(s) for s in scanners])
        if geometries is not None:
            keep &= np.isin(self.geometry, list(geometries))
        return keep

    def select(self, **kw) -> MicroCTSlices:
        return self.subset(np.flatnonzero(self.where(**kw)))

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha1()
        for a in (self.images, self.masks, self.rock, self.scanner, self.geometry):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def simulate_slices(
    rock_types: Sequence[str] = tuple(ROCK_TYPES),
    scanners: Sequence[str] = ("benchtop_80kv",),
    *,
    samples_per_rock: int = 2,
    slices_per_sample: int = 8,
    size: int = 112,
    slice_step: int = 3,
    grain_scale: float = 1.0,
    seed: int = 0,
    normalize: str = "percentile",
    progress: bool = False,
) -> MicroCTSlices:
    """Simulate ``samples_per_rock`` rock samples per rock type, image each with every
    scanner (same geometry, different physics), and cut each volume into axial slices
    ``slice_step`` voxels apart. Intensities are normalised per volume."""
    for s in scanners:
        if s not in SCANNERS:
            raise ValueError(f"unknown scanner {s!r}; choose from {sorted(SCANNERS)}")
    root = np.random.SeedSequence(seed)
    depth = (slices_per_sample - 1) * slice_step + 1
    images, masks, raw, rock_idx, scan_idx, geom_idx = [], [], [], [], [], []
    jobs = [(ri, g) for ri in range(len(rock_types)) for g in range(samples_per_rock)]
    children = root.spawn(len(jobs))
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="simulate rocks", leave=False)
    for (ri, g), child in zip(it, children):
        rng = np.random.default_rng(child)
        mat = simulate_rock(rock_types[ri], (depth + 4, size, size), grain_scale=grain_scale, seed=rng)
        phases = material_phases(mat)[2:-2:slice_step]  # 2-voxel margin keeps z-blur honest
        for _si, sname in enumerate(scanners):
            vol = ct_forward(mat, sname, seed=rng)[2:-2:slice_step]
            raw.append(vol)
            images.append(normalize_volume(vol, method=normalize))
            masks.append(phases.astype(np.int64))
            n = len(vol)
            rock_idx.append(np.full(n, ri))
            scan_idx.append(np.full(n, scanners.index(sname)))
            geom_idx.append(np.full(n, g))
    return MicroCTSlices(
        np.concatenate(images).astype(np.float32),
        np.concatenate(masks),
        np.concatenate(rock_idx),
        np.concatenate(scan_idx),
        np.concatenate(geom_idx),
        tuple(rock_types),
        tuple(scanners),
        PHASES,
        np.concatenate([r.astype(np.uint16) for r in raw]),
    )


# --------------------------------------------------------------------------------------
# Normalisation, slicing and validation
# --------------------------------------------------------------------------------------
def normalize_volume(
    volume: np.ndarray, method: str = "percentile", percentiles: tuple[float, float] = (0.5, 99.5), name: str = "volume"
) -> np.ndarray:
    """Per-volume intensity normalisation to float32.

    ``percentile``: clip to the given percentiles and scale to [0, 1] (robust to rings and
    hot voxels); ``minmax``: scale to [0, 1]; ``zscore``: zero mean, unit std.
    """
    v = np.asarray(volume, dtype=np.float32)
    if v.size == 0:
        raise DataError(f"{name}: empty volume")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{name}: holds {int((~np.isfinite(v)).sum())} NaN/inf values")
    if method == "percentile":
        lo, hi = np.percentile(v, percentiles)
    elif method == "minmax":
        lo, hi = float(v.min()), float(v.max())
    elif method == "zscore":
        sd = float(v.std())
        if sd == 0:
            raise DataError(f"{name}: constant volume (value {float(v.flat[0])}) cannot be normalised")
        return (v - v.mean()) / sd
    else:
        raise ValueError(f"unknown normalisation {method!r}; use percentile, minmax or zscore")
    if hi <= lo:
        raise DataError(f"{name}: constant volume (value {lo}) cannot be normalised")
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def validate_phase_labels(
    labels: np.ndarray, n_phases: int, *, name: str = "labels", ignore_index: int | None = 255
) -> None:
    """Raise DataError when a label map holds ids outside 0..n_phases-1 (or ignore_index)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise DataError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    values = np.unique(labels)
    bad = values[(values < 0) | (values >= n_phases)]
    if ignore_index is not None:
        bad = bad[bad != ignore_index]
    if bad.size:
        raise DataError(f"{name}: label values {bad.tolist()[:10]} are outside the declared phases 0..{n_phases - 1}")


def check_mask_matches(image: np.ndarray, mask: np.ndarray, name: str = "sample") -> None:
    if np.shape(image) != np.shape(mask):
        raise DataError(f"{name}: mask shape {np.shape(mask)} differs from image shape {np.shape(image)}")


def slice_volume(
    volume: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    axis: int = 0,
    step: int = 1,
    start: int = 0,
    n_phases: int | None = None,
    name: str = "volume",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut a (Z, Y, X) volume (and its label volume) into 2-D slices along ``axis``."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise DataError(f"{name}: expected a 3-D volume, got shape {volume.shape}")
    if labels is not None:
        check_mask_matches(volume, labels, name)
        if n_phases is not None:
            validate_phase_labels(labels, n_phases, name=f"{name} labels")
    if step < 1:
        raise ValueError("step must be >= 1")
    index = np.arange(start, volume.shape[axis], step)
    imgs = np.moveaxis(np.take(volume, index, axis=axis), axis, 0)
    labs = None if labels is None else np.moveaxis(np.take(np.asarray(labels), index, axis=axis), axis, 0)
    return np.ascontiguousarray(imgs), None if labs is None else np.ascontiguousarray(labs)


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------
_MET_TYPES = {
    "MET_UCHAR": "uint8",
    "MET_CHAR": "int8",
    "MET_USHORT": "uint16",
    "MET_SHORT": "int16",
    "MET_UINT": "uint32",
    "MET_INT": "int32",
    "MET_FLOAT": "float32",
    "MET_DOUBLE": "float64",
}


def read_raw_header(path: str | Path) -> dict:
    """Parse a raw volume's header into ``{shape (z, y, x), dtype, spacing, data_file, byte_order}``.

    Formats: MetaImage (``.mhd``: DimSize, ElementType, ElementDataFile...), the
    ``.raw_header`` of pore-scale tools (keywords ``Nxyz``/``dxX0`` then ``Nx Ny Nz``,
    ``dx dy dz``, ``X0 Y0 Z0``; uint8 unless a ``dtype`` line says otherwise) and a JSON
    sidecar ``{"shape": [z, y, x], "dtype": "uint16"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: header file not found")
    text = path.read_text(errors="replace")
    try:
        if path.suffix.lower() == ".json":
            d = json.loads(text)
            return {
                "shape": tuple(int(s) for s in d["shape"]),
                "dtype": str(np.dtype(d.get("dtype", "uint8"))),
                "spacing": tuple(d.get("spacing", (1, 1, 1))),
                "data_file": d.get("data_file"),
                "byte_order": d.get("byte_order", "<"),
            }
        if path.suffix.lower() == ".mhd" or "DimSize" in text:
            kv = {}
            for line in text.splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    kv[k.strip()] = v.strip()
            dims = [int(x) for x in kv["DimSize"].split()]
            if len(dims) != 3:
                raise DataError(f"{path}: DimSize has {len(dims)} values; a volume needs 3")
            et = kv.get("ElementType", "MET_UCHAR")
            if et not in _MET_TYPES:
                raise DataError(f"{path}: unsupported ElementType {et}")
            msb = kv.get("BinaryDataByteOrderMSB", kv.get("ElementByteOrderMSB", "False")).lower() == "true"
            return {
                "shape": tuple(reversed(dims)),
                "dtype": _MET_TYPES[et],
                "spacing": tuple(float(x) for x in kv.get("ElementSpacing", "1 1 1").split()[::-1]),
                "data_file": kv.get("ElementDataFile"),
                "byte_order": ">" if msb else "<",
            }
        body = text.split("Comments", 1)[0]
        numeric = [
            ln.split()
            for ln in body.splitlines()
            if ln.split() and all(re.fullmatch(r"[-+0-9.eE]+", t) for t in ln.split())
        ]
        if not numeric or len(numeric[0]) != 3:
            raise DataError(f"{path}: no 'Nx Ny Nz' line found in the header")
        nx, ny, nz = (int(float(t)) for t in numeric[0])
        spacing = tuple(float(t) for t in numeric[1])[::-1] if len(numeric) > 1 else (1.0, 1.0, 1.0)
        m = re.search(r"^\s*dtype\s*[:=]?\s*(\w+)", body, re.M | re.I)
        return {
            "shape": (nz, ny, nx),
            "dtype": str(np.dtype(m.group(1))) if m else "uint8",
            "spacing": spacing,
            "data_file": None,
            "byte_order": "<",
        }
    except DataError:
        raise
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot parse raw-volume header ({type(e).__name__}: {e})") from e


def find_raw_header(path: str | Path) -> Path | None:
    path = Path(path)
    for cand in (
        path.with_name(path.name + "_header"),
        path.with_suffix(".mhd"),
        path.with_suffix(".json"),
        path.with_name(path.name + ".json"),
        path.with_suffix(".hdr"),
    ):
        if cand.is_file() and cand != path:
            return cand
    return None


def raw_volume_layout(
    path: str | Path,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    *,
    header: str | Path | None = None,
    byte_order: str | None = None,
    given_by: str | None = None,
) -> tuple[Path, tuple[int, int, int], np.dtype]:
    """(data file, (Z, Y, X), dtype with its byte order) of a headerless binary volume, from the arguments or
    a header next to the file (``<name>_header``, ``.mhd``, ``.json``), without reading the voxels.

    Given values and a header must agree, and the file size must equal the product of the shape times the
    item size; ``given_by`` names where given values came from in the errors (e.g. "the manifest"; None: the
    arguments).
    """
    path = Path(path)
    hdr_path = Path(header) if header is not None else None
    if path.suffix.lower() == ".mhd":
        hdr_path, hdr = path, read_raw_header(path)
        if not hdr.get("data_file"):
            raise DataError(f"{path}: MetaImage header names no ElementDataFile")
        path = path.parent / hdr["data_file"]
        if not path.is_file():
            raise DataError(f"{hdr_path}: its ElementDataFile {path} does not exist")
    else:
        if not path.is_file():
            raise DataError(f"{path}: raw volume not found")
        hdr_path = hdr_path or find_raw_header(path)
        hdr = read_raw_header(hdr_path) if hdr_path is not None else None

    def claimed(what: str) -> str:  # "shape (4, 5, 6) given" or "the manifest says shape (4, 5, 6)"
        return f"{given_by} says {what}" if given_by else f"{what} given"

    if hdr is not None:
        if shape is not None and tuple(int(s) for s in shape) != tuple(hdr["shape"]):
            raise DataError(
                f"{path}: {claimed(f'shape {tuple(shape)}')} but the header {hdr_path.name} says "
                f"{tuple(hdr['shape'])} (z, y, x)"
            )
        if dtype is not None and np.dtype(dtype) != np.dtype(hdr["dtype"]):
            raise DataError(
                f"{path}: {claimed(f'dtype {np.dtype(dtype)}')} but the header {hdr_path.name} says {hdr['dtype']}"
            )
        shape = shape or hdr["shape"]
        dtype = dtype or hdr["dtype"]
        byte_order = byte_order or hdr.get("byte_order", "<")
    if shape is None or dtype is None:
        missing = (
            f"raw volume without shape and dtype: give them in {given_by}"
            if given_by
            else ("no shape/dtype given and no header found: give them as arguments")
        )
        raise DataError(
            f"{path}: {missing} (shape [z, y, x], dtype, byte order) or put a header next to it "
            f"({path.name}_header, {path.stem}.mhd or {path.stem}.json)"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"{path}: shape {shape} is not a 3-D (z, y, x) shape")
    dt = np.dtype(dtype).newbyteorder(byte_order or "<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    expected = int(np.prod(shape)) * dt.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(
            f"{path}: file has {actual} bytes but shape {shape} (z, y, x) of {np.dtype(dtype).name} needs "
            f"{expected} bytes: the shape or dtype does not match the file"
        )
    return path, shape, dt


def read_raw_volume(
    path: str | Path,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    *,
    header: str | Path | None = None,
    byte_order: str | None = None,
) -> np.ndarray:
    """Read a headerless binary volume, x fastest, returned as (Z, Y, X) in native byte order
    (shape and dtype as :func:`raw_volume_layout` finds and checks them)."""
    path, shape, dt = raw_volume_layout(path, shape, dtype, header=header, byte_order=byte_order)
    return np.fromfile(path, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def read_mat_volume(path: str | Path, variable: str | None = None) -> np.ndarray:
    """Read a 3-D array from a MATLAB .mat file (v4-v7.2). With one 3-D variable in the file,
    ``variable`` may be omitted."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .mat file not found")
    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError as e:  # v7.3 files are HDF5
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported here; re-save with -v7 or read with h5py ({e})"
        ) from e
    except Exception as e:  # scipy raises many types for corrupt files
        raise DataError(f"{path}: cannot read as a .mat file ({type(e).__name__}: {e})") from e
    arrays = {k: v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if variable is None:
        vols = [k for k, v in arrays.items() if v.ndim == 3]
        if len(vols) != 1:
            raise DataError(
                f"{path}: found 3-D variables {vols} (all variables: {sorted(arrays)}); pass variable=... to choose one"
            )
        variable = vols[0]
    if variable not in arrays:
        raise DataError(f"{path}: no variable {variable!r}; variables are {sorted(arrays)}")
    vol = arrays[variable]
    if vol.ndim != 3:
        raise DataError(f"{path}: variable {variable!r} has shape {vol.shape}, not a 3-D volume")
    return np.ascontiguousarray(vol)


def _to_grey(img: np.ndarray, path: Path) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        # channel axis first (foundation's convention) or last
        ch_axis = 0 if img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4) else -1
        img = np.moveaxis(img, ch_axis, -1)[..., :3]
        if img.shape[-1] == 1 or np.all(img == img[..., :1]):
            img = img[..., 0]
        else:  # true colour: ITU-R 601 luma
            img = (img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    if img.ndim != 2:
        raise DataError(f"{path}: expected a 2-D grey or RGB slice, got shape {img.shape}")
    return img


def read_slice(path: str | Path) -> np.ndarray:
    """One 2-D slice (PNG/JPEG/TIFF, 8 or 16 bit, grey or RGB) as a (H, W) array; RGB with
    equal channels (grey stored as RGB, common for CT exports) keeps its integer values."""
    from labkit.data import io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: slice file not found")
    return _to_grey(io.read_image(path), path)


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def read_slice_folder(folder: str | Path, pattern: str = "*") -> np.ndarray:
    """Stack a folder of 2-D slices (natural sort order: slice_2 before slice_10) into (Z, Y, X)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted((p for p in folder.glob(pattern) if p.suffix.lower() in SLICE_SUFFIXES), key=_natural_key)
    if not files:
        raise DataError(f"{folder}: folder holds no slice images ({', '.join(SLICE_SUFFIXES)})")
    first = read_slice(files[0])
    out = np.empty((len(files),) + first.shape, first.dtype)
    out[0] = first
    for i, f in enumerate(files[1:], 1):
        s = read_slice(f)
        if s.shape != first.shape:
            raise DataError(f"{f}: slice shape {s.shape} differs from {files[0].name} {first.shape}")
        out[i] = s
    return out


def tiff_page_shapes(path: str | Path) -> list[tuple[int, ...]]:
    """The shape of every page of a TIFF file, read from the page headers only (no pixel data)."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: TIFF stack not found")
    try:
        with tifffile.TiffFile(path) as tif:
            return [tuple(int(n) for n in page.shape) for page in tif.pages]
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable TIFF ({exc})") from exc


def check_tiff_pages(path: str | Path) -> tuple[int, int, int]:
    """(Z, Y, X) of a TIFF stack whose pages all share one size; a DataError naming the first page that
    differs otherwise (tifffile's imread would return only the first page, silently)."""
    path = Path(path)
    shapes = tiff_page_shapes(path)
    if not shapes:
        raise DataError(f"{path}: TIFF file holds no pages")
    first = shapes[0]
    for i, s in enumerate(shapes[1:], 1):
        if s != first:
            raise DataError(
                f"{path}: TIFF page {i} has shape {s} but page 0 has {first}; every page of a stack must have "
                "the same size (re-export the stack, or list the slices as a folder)"
            )
    return (len(shapes),) + tuple(first[:2])


def read_tiff_volume(path: str | Path) -> np.ndarray:
    """A multi-page TIFF stack as (Z, Y, X); a single page gives Z = 1. Every page is read and must have
    the size of the first (a DataError names the page that differs)."""
    import tifffile

    path = Path(path)
    check_tiff_pages(path)
    try:
        with tifffile.TiffFile(path) as tif:
            vol = np.stack([page.asarray() for page in tif.pages])
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable TIFF ({exc})") from exc
    if vol.ndim == 4 and vol.shape[-1] in (3, 4):
        vol = np.stack([_to_grey(s, path) for s in vol])
    if vol.ndim != 3:
        raise DataError(f"{path}: expected a (Z, Y, X) stack, got shape {vol.shape}")
    return vol


def load_volume(path: str | Path, **kwargs) -> np.ndarray:
    """Dispatch on the path: folder of slices, .tif/.tiff stack, .mat, raw (+header), .mhd,
    or a single PNG/JPEG slice (returned as Z = 1)."""
    path = Path(path)
    if path.is_dir():
        return read_slice_folder(path, **kwargs)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suf = path.suffix.lower()
    if suf in (".tif", ".tiff"):
        return read_tiff_volume(path)
    if suf == ".mat":
        return read_mat_volume(path, **kwargs)
    if suf in RAW_SUFFIXES or suf == ".mhd":
        return read_raw_volume(path, **kwargs)
    if suf in (".png", ".jpg", ".jpeg"):
        return read_slice(path)[None]
    raise DataError(f"{path}: unknown volume format {suf!r} (tif, raw+header, mhd, mat, png/jpg, folder)")


def load_labelled_slices(
    image_path: str | Path,
    label_path: str | Path,
    *,
    n_phases: int = len(PHASES),
    axis: int = 0,
    step: int = 1,
    normalize: str = "percentile",
    image_kwargs: dict | None = None,
    label_kwargs: dict | None = None,
    ignore_index: int | None = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """A grey volume and its phase-label volume (any format :func:`load_volume` reads) as 2-D
    samples: ``(images (N, H, W) float32 normalised per volume, masks (N, H, W) int64)``.

    Errors name the file: a label volume whose shape differs from the image volume, label
    values outside ``0..n_phases-1`` (``ignore_index`` allowed), non-integer labels, a
    constant image volume.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    vol = load_volume(image_path, **(image_kwargs or {}))
    lab = load_volume(label_path, **(label_kwargs or {}))
    if vol.shape != lab.shape:
        raise DataError(
            f"{label_path}: label volume shape {lab.shape} (z, y, x) differs from the image "
            f"volume {image_path.name} {vol.shape}"
        )
    validate_phase_labels(lab, n_phases, name=str(label_path), ignore_index=ignore_index)
    norm = normalize_volume(vol, method=normalize, name=str(image_path))
    images, masks = slice_volume(norm, lab, axis=axis, step=step, name=str(image_path))
    return images.astype(np.float32), masks.astype(np.int64)


# --------------------------------------------------------------------------------------
# Shared real samples (only when present; never copied into the kit)
# --------------------------------------------------------------------------------------
def shared_data_dir() -> Path:
    from labkit.core.paths import repo_root

    return repo_root().parent / "shared" / "data" / "rock_microct"


def load_berea_phase_map(path: str | Path | None = None) -> np.ndarray | None:
    """The DeePore Berea segmentation (0 pore, 1 solid) as a phase map (pore/mineral), or
    None when the file is absent."""
    path = Path(path) if path is not None else shared_data_dir() / "deepore_berea" / "Sample_large.mat"
    if not path.is_file():
        return None
    vol = read_mat_volume(path, "A").astype(np.uint8)
    validate_phase_labels(vol, 2, name=str(path))
    return vol
