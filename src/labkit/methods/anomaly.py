"""PatchCore-style anomaly detection: no defect labels, only defect-free images.

Roth et al. 2022: patch features of defect-free images form a memory bank (thinned by greedy
k-centre coreset selection); a test patch's anomaly score is the distance to its nearest bank
entry; the image score is the largest patch score ``s*`` re-weighted by how isolated its nearest bank
entry ``m*`` is (the paper's eq. 7, :func:`reweighted_image_score`); the pixel map is the patch-score
grid upsampled and smoothed. Patch features are **locally aware** as in the paper: each patch's feature is the
average of the features in its ``neighbourhood`` x ``neighbourhood`` window of adjacent patches
(PatchCore's local neighbourhood aggregation, ``p = 3``). Scored with image AUROC, pixel AUROC
(scikit-learn's ``roc_auc_score``) and AUPRO (:func:`aupro`: per-region overlap up to 30 % FPR).

Why not anomalib: ``pip install --dry-run anomalib`` beside the pinned torch is reported in the
study's documentation (``docs/data/ssl_industrial.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from labkit.core.errors import DataError, ParameterError


def vit_patch_features(encoder: torch.nn.Module, images: torch.Tensor, layers=(-4, -1)) -> torch.Tensor:
    """(B, D*len(layers), h, w) patch features of a timm ViT: mid-level and last block outputs
    concatenated (PatchCore uses mid-level features: local enough for small defects)."""
    n_blocks = len(encoder.blocks)
    idx = sorted({(i % n_blocks) for i in layers})
    feats = encoder.forward_intermediates(images, indices=idx, output_fmt="NCHW", intermediates_only=True)
    return torch.cat(list(feats), dim=1)


def greedy_coreset(features: torch.Tensor, n_select: int, seed: int = 0, projection_dim: int = 128) -> torch.Tensor:
    """Indices of a k-centre greedy coreset (each pick is the point farthest from those picked),
    computed on a random projection as in PatchCore."""
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    x = features
    if features.shape[1] > projection_dim:
        proj = torch.randn(features.shape[1], projection_dim, generator=gen) / projection_dim**0.5
        x = features @ proj
    picked = [int(torch.randint(n, (1,), generator=gen))]
    dist = torch.cdist(x, x[picked[-1]][None]).squeeze(1)
    for _ in range(n_select - 1):
        nxt = int(dist.argmax())
        picked.append(nxt)
        dist = torch.minimum(dist, torch.cdist(x, x[nxt][None]).squeeze(1))
    return torch.tensor(picked)


def reweighted_image_score(
    test_feature: torch.Tensor, memory_bank: torch.Tensor, nearest: torch.Tensor, neighbours: int
) -> torch.Tensor:
    """PatchCore's image score (Roth et al. 2022, eq. 7) for each image's most anomalous test patch.

    ``test_feature`` (B, D): each image's patch ``m_test*`` with the largest nearest-neighbour distance;
    ``nearest`` (B,): the index in ``memory_bank`` (M, D) of its nearest entry ``m*``. With ``s* = ||m_test* -
    m*||`` and ``N_b(m*)`` the ``neighbours`` entries of the bank nearest to ``m*`` (``m*`` itself included)::

        s = (1 - exp(||m_test* - m*||) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * s*

    so a test patch whose nearest entry sits in a sparse region of the bank (far from ``m_test*``'s other
    neighbours too) keeps more of its score. ``neighbours`` 1 keeps ``s*`` (the plain max patch score; eq. 7
    would give 0).
    """
    m_star = memory_bank[nearest]
    s_star = torch.linalg.vector_norm(test_feature - m_star, dim=1)
    if neighbours <= 1:
        return s_star
    b = min(int(neighbours), len(memory_bank))
    to_star = torch.cdist(m_star, memory_bank)
    to_star[torch.arange(len(nearest)), nearest] = -1.0  # m* is its own nearest neighbour, whatever the ties
    support = to_star.topk(b, dim=1, largest=False).indices  # (B, b): N_b(m*)
    dist = torch.linalg.vector_norm(test_feature[:, None] - memory_bank[support], dim=2)
    weight = 1.0 - torch.exp(s_star - torch.logsumexp(dist, dim=1))
    return weight * s_star


class PatchCore:
    """Memory bank of defect-free patch features; scores images by nearest-neighbour distance.

    feature_fn: ``images (B, C, H, W) tensor -> (B, D, h, w)`` patch features (e.g. a lambda around
    :func:`vit_patch_features`). coreset_ratio: fraction of bank patches kept (1.0 = all).
    reweight_neighbours: ``b`` of the image score's re-weighting (:func:`reweighted_image_score`; 1 turns
    it off: the image score is the largest patch score).
    """

    def __init__(
        self,
        feature_fn: Callable[[torch.Tensor], torch.Tensor],
        coreset_ratio: float = 0.25,
        batch_size: int = 64,
        smoothing_sigma: float = 2.0,
        seed: int = 0,
        neighbourhood: int = 3,
        reweight_neighbours: int = 9,
    ):
        if not 0 < coreset_ratio <= 1:
            raise ParameterError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if neighbourhood < 1 or neighbourhood % 2 == 0:
            raise ParameterError(f"neighbourhood must be an odd number >= 1, got {neighbourhood}")
        if reweight_neighbours < 1:
            raise ParameterError(f"reweight_neighbours must be >= 1, got {reweight_neighbours}")
        self.neighbourhood, self.reweight_neighbours = int(neighbourhood), int(reweight_neighbours)
        self.feature_fn, self.coreset_ratio = feature_fn, float(coreset_ratio)
        self.batch_size, self.smoothing_sigma, self.seed = int(batch_size), float(smoothing_sigma), int(seed)

    @torch.inference_mode()
    def _features(self, images) -> torch.Tensor:
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise DataError(f"PatchCore: images must be (N, C, H, W), got shape {images.shape}")
        out = [
            self.feature_fn(torch.from_numpy(images[i : i + self.batch_size])).float().cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        feats = torch.cat(out)
        if self.neighbourhood > 1:  # local neighbourhood aggregation (PatchCore eq. 2): mean over adjacent patches
            p = self.neighbourhood
            feats = F.avg_pool2d(feats, p, stride=1, padding=p // 2, count_include_pad=False)
        return feats

    def fit(self, good_images) -> PatchCore:
        """Build the memory bank from defect-free images (N, C, H, W)."""
        if len(good_images) == 0:
            raise DataError("PatchCore.fit: no defect-free images given")
        feats = self._features(good_images)
        flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        n_select = max(1, int(round(len(flat) * self.coreset_ratio)))
        self.memory_bank_ = flat[greedy_coreset(flat, n_select, self.seed)]
        self.grid_ = feats.shape[-2:]
        return self

    @torch.inference_mode()
    def score(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(image scores (N,), pixel anomaly maps (N, H, W)) for images (N, C, H, W)."""
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError("PatchCore.score called before fit")
        images = np.asarray(images, np.float32)
        feats = self._features(images)
        b, d, h, w = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, d)
        nearest = [torch.cdist(flat[i : i + 4096], self.memory_bank_).min(1) for i in range(0, len(flat), 4096)]
        dists = torch.cat([n.values for n in nearest])
        index = torch.cat([n.indices for n in nearest]).reshape(b, h * w)
        patch_scores = dists.reshape(b, 1, h, w)
        star = patch_scores.flatten(1).argmax(1)  # each image's most anomalous patch
        rows = torch.arange(b)
        image_scores = reweighted_image_score(
            flat.reshape(b, h * w, d)[rows, star], self.memory_bank_, index[rows, star], self.reweight_neighbours
        )
        maps = F.interpolate(patch_scores, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        if self.smoothing_sigma > 0:
            from scipy.ndimage import gaussian_filter

            maps = torch.from_numpy(np.stack([gaussian_filter(m.numpy(), self.smoothing_sigma) for m in maps]))
        return image_scores.numpy(), maps.numpy()


def anomaly_aurocs(image_scores, maps, labels, masks) -> dict:
    """Image AUROC (defect vs good) and pixel AUROC (defect pixels vs all others) with ROC curves."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, masks = np.asarray(labels), np.asarray(masks)
    out = {"image_auroc": float("nan"), "pixel_auroc": float("nan"), "image_roc": None}
    if len(np.unique(labels)) == 2:
        out["image_auroc"] = float(roc_auc_score(labels, image_scores))
        fpr, tpr, _ = roc_curve(labels, image_scores)
        out["image_roc"] = (fpr, tpr)
    flat_masks = (masks.reshape(-1) > 0).astype(int)
    if len(np.unique(flat_masks)) == 2:
        out["pixel_auroc"] = float(roc_auc_score(flat_masks, np.asarray(maps).reshape(-1)))
        out["aupro"] = aupro(maps, masks)
    else:
        out["aupro"] = float("nan")
    return out


def aupro(maps, masks, max_fpr: float = 0.3, n_thresholds: int = 100) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr`` false-positive rate, normalised to [0, 1]
    (Bergmann et al. 2021, MVTec AD): every connected defect region counts alike, however small.

    maps: anomaly scores (N, H, W); masks: (N, H, W) {0, 1}. NaN when there is no defect region or no
    defect-free pixel.
    """
    from scipy import ndimage

    maps, masks = np.asarray(maps, np.float32), np.asarray(masks) > 0
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m)
        regions += [(i, lab == k) for k in range(1, n + 1)]
    good = ~masks
    if not regions or not good.any():
        return float("nan")
    thresholds = np.quantile(maps[good], np.linspace(1.0, 1.0 - max_fpr, n_thresholds))
    fprs, pros = [], []
    for t in thresholds:
        above = maps > t
        fprs.append(float(above[good].mean()))
        pros.append(float(np.mean([above[i][r].mean() for i, r in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    order = np.argsort(fprs)
    fprs, pros = fprs[order], pros[order]
    keep = fprs <= max_fpr
    fprs, pros = np.append(fprs[keep], max_fpr), np.append(pros[keep], pros[keep][-1] if keep.any() else 0.0)
    return float(np.trapezoid(pros, fprs) / max_fpr)
