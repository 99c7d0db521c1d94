"""Industrial surface simulator: materials, physically caused defects, pixel masks and defect types.

Every image is drawn the way a line-scan or area camera sees a part:

1. **Material texture** on a canvas larger than the frame, from its manufacturing process:
   brushed metal (abrasive belt: noise stretched along the brushing direction), machined metal
   (turning marks: periodic grooves from the tool feed), sand casting (multi-scale grain),
   glazed ceramic tiles (flat glaze, darker grout joints, tile-to-tile shade), plain-woven
   fabric (over/under thread crossings), and the real CC0 textures shipped inside scikit-image
   (``brick``, ``gravel``, ``grass``).
2. **Pose**: a random rotation, scale and shift of the part under the camera (one similarity warp).
3. **Defects**, each from a physical cause, rendered into the image with a pixel mask:
   ``scratch`` (an abrasive particle dragged across: a smooth groove, dark with a bright lip on the
   lit side), ``crack`` (fatigue/thermal crack: a jagged, persistent random walk, dark because it
   is deep, sometimes branched), ``blowhole`` (gas porosity: a round cavity, shadowed on the side
   facing the light, bright on the other inner wall, with a raised rim), ``edge_break`` (a chip
   missing at the part edge showing the dark conveyor behind; on fabric a fray with loose
   threads) and ``stain`` (oil or water residue: a soft, irregular film, darker or brighter).
4. **Acquisition**: lighting gradient and vignetting (multiplicative), photon (signal-dependent) and
   read noise, clipping to [0, 1].

Defect contrast is set by the physics (groove depth, cavity size, stain thickness) relative to the
texture, so some textures hide some defects: nothing here knows which method should win. The camera
is an inspection station's: low-angle light that makes relief cast shadows, so grooves, cracks and
cavities show darker than the texture's own relief (35-75 %), and every kind is a defect a person
sees and labels (a stain's mask is where its film shows, over 40 % of its peak). Before December 2026
scratches and cracks were 8-45 % dark over under 1.5 px and stains 8-20 % with half the defect pixels:
only the edge breaks (a black belt behind a large chip) were learnable at 64 px, so whether a 4-image
labelled set held one decided a run (``docs/data/ssl_industrial.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from labkit.core.errors import ParameterError

PROCEDURAL_MATERIALS = ("brushed_metal", "machined_metal", "casting", "ceramic_tile", "woven")
SKIMAGE_TEXTURES = ("brick", "gravel", "grass")
MATERIALS = PROCEDURAL_MATERIALS + SKIMAGE_TEXTURES
DEFECT_TYPES = ("scratch", "crack", "blowhole", "edge_break", "stain")

# Which defects a material's process can produce (gas porosity needs a melt or a fired body).
MATERIAL_DEFECTS: dict[str, tuple[str, ...]] = {
    "brushed_metal": ("scratch", "crack", "edge_break", "stain"),
    "machined_metal": ("scratch", "blowhole", "edge_break", "stain"),
    "casting": ("blowhole", "crack", "edge_break", "stain", "scratch"),
    "ceramic_tile": ("crack", "blowhole", "edge_break", "stain", "scratch"),
    "woven": ("edge_break", "stain", "scratch"),
    "brick": ("crack", "edge_break", "stain"),
    "gravel": ("stain", "crack", "edge_break"),
    "grass": ("stain", "edge_break", "scratch"),
}

# Colour of each material under white light (used when channels == 3).
_TINTS = {
    "brushed_metal": (0.92, 0.95, 1.0),
    "machined_metal": (0.95, 0.96, 1.0),
    "casting": (0.85, 0.82, 0.8),
    "ceramic_tile": (1.0, 0.97, 0.9),
    "woven": (0.7, 0.8, 1.0),
    "brick": (1.0, 0.7, 0.55),
    "gravel": (0.9, 0.88, 0.82),
    "grass": (0.6, 1.0, 0.5),
}

# Photographs shipped inside scikit-image that are NOT surfaces: the "unrelated images" control.
UNRELATED_IMAGES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "page",
    "clock",
    "cell",
)

_TEXTURE_CACHE: dict[str, np.ndarray] = {}


def _skimage_image(name: str) -> np.ndarray:
    """A scikit-image data image as float32 grey in [0, 1] (cached)."""
    if name not in _TEXTURE_CACHE:
        import skimage.data
        from skimage.color import rgb2gray

        img = getattr(skimage.data, name)()
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        img = img.astype(np.float32)
        if img.max() > 1.0:
            img = img / 255.0
        _TEXTURE_CACHE[name] = img
    return _TEXTURE_CACHE[name]


@dataclass
class SurfaceSet:
    """Images of surfaces with defect masks.

    images: (N, C, H, W) float32 in [0, 1]; masks: (N, H, W) int64 (1 = defect);
    defect_types: (N,) str, ``"good"`` for defect-free; materials: (N,) str.
    """

    images: np.ndarray
    masks: np.ndarray
    defect_types: np.ndarray
    materials: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        """Image-level label: 1 if the image has a defect, else 0."""
        return (self.defect_types != "good").astype(np.int64)

    def subset(self, index) -> SurfaceSet:
        index = np.asarray(index)
        return SurfaceSet(
            self.images[index], self.masks[index], self.defect_types[index], self.materials[index], dict(self.meta)
        )


def _normalise(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / (a.std() + 1e-8)


def _material_texture(material: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """Grey texture of a material on a (side, side) canvas, mean about 0.5."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    noise = rng.standard_normal((side, side)).astype(np.float32)
    if material == "brushed_metal":
        # Abrasive belt: long streaks along x, a fine grain across them.
        streaks = _normalise(ndimage.gaussian_filter(noise, sigma=(0.6, 12.0)))
        return 0.55 + 0.07 * streaks + 0.015 * noise
    if material == "machined_metal":
        # Turning/milling: grooves at the tool feed period, phase wandering slowly.
        period = rng.uniform(3.0, 6.0)
        wander = ndimage.gaussian_filter(rng.standard_normal((side, side)), sigma=8) * 15
        grooves = np.sin(2 * np.pi * yy / period + wander)
        return 0.6 + 0.05 * grooves + 0.012 * noise
    if material == "casting":
        # Sand casting: sand grain (fine) over slow thickness/roughness waves (coarse).
        fine = _normalise(ndimage.gaussian_filter(noise, 1.0))
        coarse = _normalise(ndimage.gaussian_filter(rng.standard_normal((side, side)), 6.0))
        return 0.45 + 0.06 * fine + 0.05 * coarse
    if material == "ceramic_tile":
        # Glaze is flat; grout joints are darker; each tile fired to a slightly different shade.
        pitch = rng.uniform(0.45, 0.8) * side / 1.6
        ox, oy = rng.uniform(0, pitch, 2)
        tx, ty = np.floor((xx + ox) / pitch), np.floor((yy + oy) / pitch)
        shade = rng.normal(0, 0.03, (int(side / pitch) + 3, int(side / pitch) + 3))
        img = 0.72 + shade[ty.astype(int) % shade.shape[0], tx.astype(int) % shade.shape[1]]
        dx = np.minimum((xx + ox) % pitch, pitch - (xx + ox) % pitch)
        dy = np.minimum((yy + oy) % pitch, pitch - (yy + oy) % pitch)
        grout = np.exp(-((np.minimum(dx, dy) / 1.2) ** 2))
        return img - 0.3 * grout + 0.008 * noise
    if material == "woven":
        # Plain weave: warp over weft on alternate cells, each thread with a rounded profile.
        p = rng.uniform(4.0, 7.0)
        cell = (np.floor(xx / p) + np.floor(yy / p)) % 2
        warp = np.sin(np.pi * (xx % p) / p)
        weft = np.sin(np.pi * (yy % p) / p)
        return 0.45 + 0.18 * np.where(cell > 0, warp, weft) + 0.02 * noise
    if material in SKIMAGE_TEXTURES:
        from skimage.transform import resize

        tex = _skimage_image(material)
        crop = int(rng.uniform(0.25, 0.45) * tex.shape[0])
        y0, x0 = rng.integers(0, tex.shape[0] - crop), rng.integers(0, tex.shape[1] - crop)
        patch = resize(tex[y0 : y0 + crop, x0 : x0 + crop], (side, side), order=1, anti_aliasing=True)
        return (0.5 + 0.6 * (patch - patch.mean())).astype(np.float32)
    raise ParameterError(f"unknown material {material!r}; choose from {MATERIALS}")


def _pose(texture: np.ndarray, size: int, rng: np.random.Generator, max_rotation: float) -> np.ndarray:
    """Rotate/scale/shift the canvas and cut the (size, size) camera frame from its centre."""
    side = texture.shape[0]
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.05, 0.05, 2) * size
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.array([[c, -s], [s, c]])
    centre_out = np.array([size / 2, size / 2])
    offset = np.array([side / 2, side / 2]) + shift - matrix @ centre_out
    return ndimage.affine_transform(
        texture, matrix, offset=offset, output_shape=(size, size), order=1, mode="reflect"
    ).astype(np.float32)


def _curve_distance(points: np.ndarray, size: int) -> np.ndarray:
    """Distance (px) of every pixel to a polyline given as dense (K, 2) row/col points."""
    grid = np.ones((size, size), bool)
    idx = np.round(points).astype(int)
    keep = (idx >= 0).all(1) & (idx < size).all(1)
    grid[idx[keep, 0], idx[keep, 1]] = False
    if grid.all():
        return np.full((size, size), np.inf, np.float32)
    return ndimage.distance_transform_edt(grid).astype(np.float32)


def _light_direction(rng):
    a = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(a), np.cos(a)])


def _draw_scratch(img, size, rng):
    # Quadratic Bezier: a particle dragged in a gentle arc across part of the surface.
    p0, p2 = rng.uniform(0.1, 0.9, 2) * size, rng.uniform(0.1, 0.9, 2) * size
    while np.linalg.norm(p2 - p0) < 0.35 * size:
        p2 = rng.uniform(0.05, 0.95, 2) * size
    p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * size, 2)
    t = np.linspace(0, 1, 4 * size)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    dist = _curve_distance(pts, size)
    # Under the station's low-angle light the groove's far wall is in shadow: 35-55 % darker over 1.2-2.2 px.
    width = rng.uniform(1.2, 2.2)
    depth = rng.uniform(0.35, 0.55)
    groove = np.exp(-((dist / width) ** 2))
    # Lip thrown up beside the groove catches the light: a faint bright halo.
    lip = np.exp(-(((dist - 1.5 * width) / width) ** 2))
    img = img * (1 - depth * groove) + 0.35 * depth * lip
    return img, dist <= max(width, 0.75)


def _draw_crack(img, size, rng):
    # Fatigue crack: persistent random walk (direction changes by small jumps), may branch.
    mask_pts = []
    start = rng.uniform(0.15, 0.85, 2) * size
    heading = rng.uniform(0, 2 * np.pi)
    n_steps = int(rng.uniform(0.4, 0.9) * size)
    branches = [(start, heading, n_steps)]
    while branches:
        pos, head, steps = branches.pop()
        pos = pos.copy()
        for i in range(steps):
            head += rng.normal(0, 0.35)
            pos = pos + 0.8 * np.array([np.sin(head), np.cos(head)])
            mask_pts.append(pos.copy())
            if i > 3 and rng.random() < 0.02 and len(branches) < 2:
                branches.append((pos.copy(), head + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0), steps // 3))
    dist = _curve_distance(np.array(mask_pts), size)
    # An open crack is deep and narrow: little light reaches its floor (50-75 % darker over a 1-1.8 px opening).
    opening = rng.uniform(1.0, 1.8)
    depth = rng.uniform(0.5, 0.75)
    img = img * (1 - depth * np.exp(-((dist / opening) ** 2)))
    return img, dist <= opening


def _draw_blowhole(img, size, rng):
    r = rng.uniform(3.0, 6.0)
    cy, cx = rng.uniform(r + 2, size - r - 2, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    d = np.sqrt(dy**2 + dx**2)
    light = _light_direction(rng)
    inside = d <= r
    # Cavity: the wall facing the light is lit, the opposite floor in shadow.
    shading = 0.5 + 0.5 * np.clip((dy * light[0] + dx * light[1]) / (r + 1e-6), -1, 1)
    depth = rng.uniform(0.35, 0.7)
    cavity = np.where(inside, 1 - depth * (1 - 0.6 * shading), 1.0)
    rim = 1 + 0.15 * np.exp(-(((d - r - 0.8) / 0.7) ** 2))
    return img * cavity * rim, inside


def _draw_edge_break(img, size, rng, material):
    # A chip lost from one edge of the part: the dark belt shows through, fracture face bright.
    side = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along = [xx, yy, xx, yy][side]
    depth_from_edge = [yy, xx, size - 1 - yy, size - 1 - xx][side]
    centre = rng.uniform(0.2, 0.8) * size
    # A chip is a small piece lost: 7-16 % of the frame along the edge (half-width), 5-12 % into the part.
    half = rng.uniform(0.07, 0.16) * size
    reach = rng.uniform(0.05, 0.12) * size
    rough = ndimage.gaussian_filter1d(rng.normal(0, 1.5, size), 1.5)
    profile = reach * np.clip(1 - ((along - centre) / half) ** 2, 0, None)
    profile = profile + np.where(profile > 0, rough[along.astype(int)], 0)
    region = depth_from_edge < profile
    # The belt behind: its shade and the light it gets differ from part to part (dark, never black).
    background = rng.uniform(0.08, 0.2) + 0.02 * rng.standard_normal((size, size))
    if material in ("woven", "grass"):
        # Fray: broken threads hang out into the gap, pointing away from the edge.
        threads = np.zeros((size, size), np.float32)
        for _ in range(int(half / 2)):
            pos = centre + rng.uniform(-half, half)
            lane = np.abs(along - pos) < 0.6
            threads = np.maximum(threads, lane * (depth_from_edge > rng.uniform(0, reach)) * 0.35)
        background = background + threads
    edge = np.exp(-(((depth_from_edge - profile) / 0.8) ** 2)) * (profile > 0)
    img = np.where(region, background, img) + 0.15 * edge
    return img, region


def _draw_stain(img, size, rng):
    # Residue film: irregular blob (noisy field thresholded inside a soft envelope), low contrast.
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    sy, sx = rng.uniform(0.06, 0.14, 2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    envelope = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    field_ = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.5)
    field_ = field_ / (field_.std() + 1e-8)
    thickness = np.clip(envelope + 0.25 * field_ * envelope - 0.35, 0, None)
    thickness = ndimage.gaussian_filter(thickness, 1.0)
    if thickness.max() <= 0:
        return img, np.zeros((size, size), bool)
    thickness = thickness / thickness.max()
    # A film that shows: 35-55 % darker (oil, coolant) or, one in four, brighter (dried salts) at its thickest;
    # the mask is where it is over 40 % of that (a thinner rim does not show and is not labelled).
    contrast = rng.uniform(0.35, 0.55) * rng.choice([-1.0, 1.0], p=[0.75, 0.25])
    return img * (1 + contrast * thickness), thickness > 0.4


def _draw_defect(kind, img, size, rng, material):
    if kind == "scratch":
        return _draw_scratch(img, size, rng)
    if kind == "crack":
        return _draw_crack(img, size, rng)
    if kind == "blowhole":
        return _draw_blowhole(img, size, rng)
    if kind == "edge_break":
        return _draw_edge_break(img, size, rng, material)
    if kind == "stain":
        return _draw_stain(img, size, rng)
    raise ParameterError(f"unknown defect type {kind!r}; choose from {DEFECT_TYPES}")


def _acquire(img, size, rng, lighting, read_noise, photon_gain):
    """Camera: lighting gradient and vignetting, then photon and read noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    g = rng.uniform(-lighting, lighting, 2)
    gradient = 1 + g[0] * yy * 2 + g[1] * xx * 2
    vignette = 1 - lighting * 0.5 * (xx**2 + yy**2)
    brightness = rng.uniform(0.85, 1.15)
    img = np.clip(img * gradient * vignette * brightness, 0, None)
    sigma = np.sqrt(img / photon_gain + read_noise**2)
    return img + sigma * rng.standard_normal(img.shape)


class SurfaceSimulator:
    """Draws surface images with physically caused defects.

    Parameters
    ----------
    size: side of the square camera frame in pixels.
    channels: 1 (grey) or 3 (colour: the material's tint under white light).
    materials: subset of :data:`MATERIALS`.
    defect_types: subset of :data:`DEFECT_TYPES` (a material only gets the ones its process makes).
    defect_fraction: probability that an image has a defect.
    lighting: strength of the lighting gradient/vignetting (0 = uniform light).
    read_noise, photon_gain: sensor noise (std of read noise; photons per unit intensity).
    max_rotation: largest part rotation in degrees.
    """

    def __init__(
        self,
        size: int = 64,
        channels: int = 1,
        materials=MATERIALS,
        defect_types=DEFECT_TYPES,
        defect_fraction: float = 0.5,
        lighting: float = 0.25,
        read_noise: float = 0.01,
        photon_gain: float = 2000.0,
        max_rotation: float = 180.0,
    ):
        if size < 16:
            raise ParameterError(f"size must be at least 16 px, got {size}")
        if channels not in (1, 3):
            raise ParameterError(f"channels must be 1 or 3, got {channels}")
        bad = [m for m in materials if m not in MATERIALS]
        if bad or not materials:
            raise ParameterError(f"unknown material(s) {bad}; choose from {MATERIALS}")
        bad = [d for d in defect_types if d not in DEFECT_TYPES]
        if bad:
            raise ParameterError(f"unknown defect type(s) {bad}; choose from {DEFECT_TYPES}")
        if not 0.0 <= defect_fraction <= 1.0:
            raise ParameterError(f"defect_fraction must be in [0, 1], got {defect_fraction}")
        self.size, self.channels = int(size), int(channels)
        self.materials, self.defect_types = tuple(materials), tuple(defect_types)
        self.defect_fraction, self.lighting = float(defect_fraction), float(lighting)
        self.read_noise, self.photon_gain = float(read_noise), float(photon_gain)
        self.max_rotation = float(max_rotation)

    def sample_one(self, rng: np.random.Generator, material: str | None = None, defect: str | None = None):
        """One image (C, H, W), its mask (H, W) bool, defect type and material."""
        material = material or self.materials[rng.integers(len(self.materials))]
        if defect is None:
            allowed = [d for d in MATERIAL_DEFECTS[material] if d in self.defect_types]
            defect = "good"
            if allowed and rng.random() < self.defect_fraction:
                defect = allowed[rng.integers(len(allowed))]
        side = int(np.ceil(self.size * 1.6))
        img = _pose(_material_texture(material, side, rng), self.size, rng, self.max_rotation)
        mask = np.zeros((self.size, self.size), bool)
        if defect != "good":
            img, mask = _draw_defect(defect, img, self.size, rng, material)
        img = _acquire(img, self.size, rng, self.lighting, self.read_noise, self.photon_gain)
        if self.channels == 3:
            tint = np.asarray(_TINTS[material]) * rng.uniform(0.9, 1.1, 3)
            img = img[None] * tint[:, None, None]
        else:
            img = img[None]
        return np.clip(img, 0, 1).astype(np.float32), mask, defect, material

    def sample(self, n: int, seed: int = 0, defect_fraction: float | None = None) -> SurfaceSet:
        """``n`` images; ``defect_fraction`` overrides the simulator's for this draw (0 = all good)."""
        if n < 0:
            raise ParameterError(f"n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        keep = self.defect_fraction
        if defect_fraction is not None:
            self.defect_fraction = float(defect_fraction)
        try:
            items = [self.sample_one(rng) for _ in range(n)]
        finally:
            self.defect_fraction = keep
        if not items:
            images = np.zeros((0, self.channels, self.size, self.size), np.float32)
            masks = np.zeros((0, self.size, self.size), np.int64)
        else:
            images = np.stack([i[0] for i in items])
            masks = np.stack([i[1] for i in items]).astype(np.int64)
        return SurfaceSet(
            images,
            masks,
            np.array([i[2] for i in items], dtype=object).astype(str),
            np.array([i[3] for i in items], dtype=object).astype(str),
            {"size": self.size, "channels": self.channels, "seed": seed},
        )


def simulate_surfaces(n: int, size: int = 64, channels: int = 1, seed: int = 0, **kwargs) -> SurfaceSet:
    """Shortcut: ``SurfaceSimulator(size, channels, **kwargs).sample(n, seed)``."""
    defect_fraction = kwargs.pop("defect_fraction", 0.5)
    return SurfaceSimulator(size=size, channels=channels, defect_fraction=defect_fraction, **kwargs).sample(n, seed)


def unrelated_images(n: int, size: int = 64, channels: int = 1, seed: int = 0, sources=UNRELATED_IMAGES) -> np.ndarray:
    """``n`` random crops of photographs shipped with scikit-image that show no industrial surface.

    The control set for "in-domain vs unrelated pretraining data": same count, size and channels
    as the in-domain set, same [0, 1] range, but people, animals, food, sky and text.
    """
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out = np.empty((n, channels, size, size), np.float32)
    for i in range(n):
        img = _skimage_image(sources[rng.integers(len(sources))])
        crop = int(rng.uniform(0.2, 0.5) * min(img.shape))
        y0, x0 = rng.integers(0, img.shape[0] - crop + 1), rng.integers(0, img.shape[1] - crop + 1)
        patch = resize(img[y0 : y0 + crop, x0 : x0 + crop], (size, size), order=1, anti_aliasing=True)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[i] = np.clip(patch, 0, 1)[None]
    return out
