"""Classical phase-segmentation pipelines for CT slices and a UNet trained from scratch.

- :class:`ClusterSegmenter`: multi-Otsu thresholds, K-means or fuzzy C-means on (denoised)
  grey levels, per image; clusters are ordered by grey level and each intensity rank is
  mapped to the phase it most often covers in the training set (what an operator does when
  naming the clusters).
- :func:`fuzzy_cmeans`: vectorised fuzzy C-means with sample weights; on quantised images
  :func:`fuzzy_cmeans_image` clusters the histogram (unique grey levels weighted by their
  counts), which gives the same memberships as clustering every pixel.
- :class:`FilterBankForest`: random forest on a multi-scale filter bank (Gaussian, difference
  of Gaussians, gradient magnitude, Hessian and structure-tensor eigenvalues).
- :func:`create_unet`: UNet with a randomly initialised ResNet-18 encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from labkit.core.errors import DataError

_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------
# Fuzzy C-means
# --------------------------------------------------------------------------------------
@dataclass
class FCMResult:
    centers: np.ndarray  # (c, F)
    memberships: np.ndarray  # (c, N)
    n_iter: int
    objective: float


def fcm_memberships(x: np.ndarray, centers: np.ndarray, m: float = 2.0) -> np.ndarray:
    """FCM memberships (c, N) of samples x (N, F) for given centres (c, F)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    d2 = ((x[None, :, :] - np.asarray(centers, np.float64)[:, None, :]) ** 2).sum(-1)
    d = np.fmax(np.sqrt(d2), _EPS)
    u = d ** (-2.0 / (m - 1.0))
    return u / u.sum(0, keepdims=True)


def fuzzy_cmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    m: float = 2.0,
    max_iter: int = 300,
    tol: float = 1e-5,
    weights: np.ndarray | None = None,
    init: np.ndarray | None = None,
    seed: int = 0,
) -> FCMResult:
    """Fuzzy C-means on samples x (N, F) or (N,), optionally weighted (a histogram bin counts
    as ``weight`` samples). Same update and stopping rule as scikit-fuzzy's ``cmeans``
    (stop when the Frobenius norm of the membership change, over all weighted samples, is
    below ``tol``). ``init``: initial memberships (c, N); default random, seeded."""
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    n = len(x)
    if n < n_clusters:
        raise DataError(f"fuzzy C-means: {n} samples for {n_clusters} clusters")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if init is None:
        u = np.random.default_rng(seed).random((n_clusters, n))
    else:
        u = np.array(init, np.float64)
        if u.shape != (n_clusters, n):
            raise ValueError(f"init must be (c, N) = {(n_clusters, n)}, got {u.shape}")
    u = np.fmax(u / u.sum(0, keepdims=True), _EPS)
    expo = -2.0 / (m - 1.0)
    jm = np.nan
    for it in range(1, max_iter + 1):  # noqa: B007 (the count of steps taken is returned)
        u_old = u
        um = (u_old / u_old.sum(0, keepdims=True)) ** m  # skfuzzy renormalises before each step
        um = np.fmax(um, 0)
        wum = um * w
        centers = (wum @ x) / wum.sum(1, keepdims=True)
        if x.shape[1] == 1:  # 1-D fast path: no (c, N, F) temporary
            d = np.abs(x[:, 0][None, :] - centers[:, 0][:, None])
        else:
            d = np.sqrt(((x[None] - centers[:, None]) ** 2).sum(-1))
        d = np.fmax(d, _EPS)
        jm = float((wum * d**2).sum())
        u = d**expo
        u /= u.sum(0, keepdims=True)
        if np.sqrt((((u - u_old) ** 2) * w).sum()) < tol:
            break
    return FCMResult(centers, u, it, jm)


def fuzzy_cmeans_image(
    image: np.ndarray,
    n_clusters: int,
    *,
    m: float = 2.0,
    max_iter: int = 300,
    tol: float = 1e-5,
    init_centers: np.ndarray | None = None,
    seed: int = 0,
    max_levels: int = 65536,
) -> FCMResult:
    """FCM on the grey levels of an image. Memberships depend on the grey level alone, so when
    the image holds at most ``max_levels`` distinct values (8/16-bit CT) the histogram is
    clustered with counts as weights; memberships are returned per pixel (c, N)."""
    flat = np.asarray(image).ravel()
    levels, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if init_centers is not None:
        init = fcm_memberships(
            levels.astype(np.float64)[:, None], np.asarray(init_centers, np.float64).reshape(n_clusters, -1), m
        )
    else:
        init = None
    if len(levels) <= max_levels:
        if init is None:
            init = np.random.default_rng(seed).random((n_clusters, len(levels)))
        res = fuzzy_cmeans(levels, n_clusters, m=m, max_iter=max_iter, tol=tol, weights=counts, init=init)
        return FCMResult(res.centers, res.memberships[:, inverse], res.n_iter, res.objective)
    init_px = None if init is None else init[:, inverse]
    return fuzzy_cmeans(flat, n_clusters, m=m, max_iter=max_iter, tol=tol, init=init_px, seed=seed)


# --------------------------------------------------------------------------------------
# Clustering / thresholding pipelines
# --------------------------------------------------------------------------------------
def weighted_kmeans_1d(values: np.ndarray, weights: np.ndarray, n: int, max_iter: int = 100) -> np.ndarray:
    """Sorted centres of 1-D weighted K-means (Lloyd), initialised at weighted quantiles
    (deterministic)."""
    order = np.argsort(values)
    values, weights = values[order], weights[order]
    cdf = np.cumsum(weights) / weights.sum()
    centers = values[np.searchsorted(cdf, (np.arange(n) + 0.5) / n).clip(0, len(values) - 1)].astype(np.float64)
    for _ in range(max_iter):
        labels = np.abs(values[:, None] - centers[None, :]).argmin(1)
        sums = np.bincount(labels, weights * values, n)
        mass = np.bincount(labels, weights, n)
        new = np.where(mass > 0, sums / np.maximum(mass, 1e-12), centers)
        if np.allclose(new, centers):
            break
        centers = new
    return np.sort(centers)


def _intensity_ranks(image: np.ndarray, method: str, n: int, seed: int) -> np.ndarray:
    """Per-pixel cluster ids 0..n-1 ordered by grey level (0 = darkest)."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    if method == "otsu":
        thresholds = threshold_multiotsu(image, classes=n) if n > 2 else np.array([threshold_otsu(image)])
        return np.digitize(image, thresholds)
    if method == "kmeans":
        # 1-D K-means on the quantised grey levels weighted by their counts (same optimum as on
        # every pixel); scikit-learn's KMeans costs ~50 ms of fixed overhead per call, too much
        # for one call per slice, so this is a few lines of vectorised Lloyd iterations.
        q = np.round(image * 1023).astype(np.int32)
        levels, inverse, counts = np.unique(q.ravel(), return_inverse=True, return_counts=True)
        centers = weighted_kmeans_1d(levels.astype(np.float64), counts.astype(np.float64), n)
        labels = np.abs(levels[:, None] - centers[None, :]).argmin(1)  # centres come sorted
        return labels[inverse].reshape(image.shape)
    if method == "fcm":
        q = np.round(image * 1023).astype(np.int32)
        res = fuzzy_cmeans_image(q, n, seed=seed)
        order = np.argsort(np.argsort(res.centers[:, 0]))
        return order[res.memberships.argmax(0)].reshape(image.shape)
    raise ValueError(f"unknown method {method!r}; use otsu, kmeans or fcm")


@dataclass
class ClusterSegmenter:
    """Per-image unsupervised segmentation (``otsu``, ``kmeans`` or ``fcm``) after a Gaussian
    denoise; intensity ranks are named after phases using the training masks."""

    method: str = "otsu"
    n_clusters: int = 3
    denoise_sigma: float = 1.0
    seed: int = 0
    rank_to_phase_: np.ndarray | None = field(default=None, init=False)

    def _ranks(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(images.shape, np.int64)
        for i, img in enumerate(images):
            if self.denoise_sigma > 0:
                img = ndimage.gaussian_filter(img.astype(np.float32), self.denoise_sigma)
            out[i] = _intensity_ranks(img, self.method, self.n_clusters, self.seed + i)
        return out

    def fit(self, images: np.ndarray, masks: np.ndarray, num_classes: int | None = None):
        images, masks = np.asarray(images), np.asarray(masks)
        if images.shape != masks.shape:
            raise DataError(f"ClusterSegmenter.fit: images {images.shape} and masks {masks.shape} differ")
        c = int(num_classes or masks.max() + 1)
        ranks = self._ranks(images)
        table = np.zeros((self.n_clusters, c), np.int64)
        np.add.at(table, (ranks.ravel(), masks.ravel()), 1)
        self.rank_to_phase_ = table.argmax(1)
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.rank_to_phase_ is None:
            raise RuntimeError("call fit first")
        return self.rank_to_phase_[self._ranks(np.asarray(images))]


# --------------------------------------------------------------------------------------
# Random forest on a filter bank
# --------------------------------------------------------------------------------------
def _sym2_eigvals(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (largest first) of the symmetric 2x2 fields [[a, b], [b, c]], closed form."""
    half_trace = 0.5 * (a + c)
    root = np.sqrt(0.25 * (a - c) ** 2 + b**2)
    return half_trace + root, half_trace - root


def filter_bank(image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 4.0)) -> np.ndarray:
    """Per-pixel features (H, W, F): intensity, and at each scale Gaussian, difference of
    Gaussians (to the next scale), gradient magnitude, 2 Hessian and 2 structure-tensor
    eigenvalues (the ilastik/Weka feature set). Derivatives are Gaussian derivatives and the
    2x2 eigenvalues are closed form (scikit-image's general n-D versions are ~10x slower)."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise DataError(f"filter_bank: expected a 2-D image, got shape {img.shape}")
    feats = [img]
    smooth = [ndimage.gaussian_filter(img, s) for s in sigmas]
    for i, s in enumerate(sigmas):
        feats.append(smooth[i])
        nxt = smooth[i + 1] if i + 1 < len(smooth) else ndimage.gaussian_filter(img, 2 * s)
        feats.append(smooth[i] - nxt)
        gr = ndimage.gaussian_filter(img, s, order=(1, 0))
        gc = ndimage.gaussian_filter(img, s, order=(0, 1))
        feats.append(np.hypot(gr, gc))
        feats.extend(
            _sym2_eigvals(
                ndimage.gaussian_filter(img, s, order=(2, 0)),
                ndimage.gaussian_filter(img, s, order=(1, 1)),
                ndimage.gaussian_filter(img, s, order=(0, 2)),
            )
        )
        # structure tensor: local-gradient outer products at the inner scale, averaged at 2s
        feats.extend(
            _sym2_eigvals(
                ndimage.gaussian_filter(gr * gr, 2 * s),
                ndimage.gaussian_filter(gr * gc, 2 * s),
                ndimage.gaussian_filter(gc * gc, 2 * s),
            )
        )
    return np.stack(feats, -1).astype(np.float32)


@dataclass
class FilterBankForest:
    """Random forest pixel classifier on :func:`filter_bank` features (ilastik/Weka style)."""

    sigmas: tuple = (1.0, 2.0, 4.0)
    n_estimators: int = 30
    max_depth: int | None = 12
    pixels_per_image: int = 500
    seed: int = 0
    n_jobs: int = 1

    def fit(self, images: np.ndarray, masks: np.ndarray):
        from sklearn.ensemble import RandomForestClassifier

        images, masks = np.asarray(images), np.asarray(masks)
        if images.shape != masks.shape:
            raise DataError(f"FilterBankForest.fit: images {images.shape} and masks {masks.shape} differ")
        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for img, msk in zip(images, masks):
            f = filter_bank(img, self.sigmas).reshape(-1, filter_bank_size(self.sigmas))
            pick = rng.choice(len(f), size=min(self.pixels_per_image, len(f)), replace=False)
            xs.append(f[pick])
            ys.append(msk.ravel()[pick])
        self.forest_ = RandomForestClassifier(
            self.n_estimators, max_depth=self.max_depth, n_jobs=self.n_jobs, random_state=self.seed
        ).fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        out = np.empty(images.shape, np.int64)
        chunk = 16  # one predict call per chunk of images: sklearn's per-call overhead is large
        for i in range(0, len(images), chunk):
            f = np.stack([filter_bank(img, self.sigmas) for img in images[i : i + chunk]])
            out[i : i + chunk] = self.forest_.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:-1])
        return out


def filter_bank_size(sigmas: Sequence[float]) -> int:
    return 1 + 7 * len(sigmas)


# --------------------------------------------------------------------------------------
# UNet from scratch
# --------------------------------------------------------------------------------------
def create_unet(num_classes: int, in_channels: int = 1, encoder: str = "resnet18"):
    """UNet with a randomly initialised encoder (no pretraining: the from-scratch baseline)."""
    from labkit.models.segmentation import create_segmenter

    return create_segmenter("unet", encoder=encoder, weights="random", in_channels=in_channels, num_classes=num_classes)
