"""Rock-type classification probes: kNN (every k of ``knn_ks``) and linear probes on centred feature views, the
baseline rows without a ViT (a grey-level histogram, a random-init ResNet's pooled features), and the t-SNE of the
class tokens with the silhouette of the rocks in it."""

from __future__ import annotations

import numpy as np

from labkit.core.seeding import seed_everything
from labkit.methods import probing
from labkit.studies.dinov2_microct.backbones import torch_device

# classification baseline rows (features without a ViT)
HISTOGRAM = "grey-level histogram (32 bins)"
HISTOGRAM_BINS = 32


def tsne_silhouette(cls_tokens: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE of class tokens and the silhouette of the rock labels in it."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    perplexity = float(min(30, max(2, (len(cls_tokens) - 1) // 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(cls_tokens)
    return emb, float(silhouette_score(emb, labels)) if len(np.unique(labels)) > 1 else float("nan")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centred_views(views: dict[str, np.ndarray], train_index) -> dict[str, np.ndarray]:
    """Each feature view centred on its training mean (so a near-constant token cannot decide a cosine
    kNN: rounding noise around a common direction is not a neighbour ranking); with both ``cls`` and
    ``mean``, their concatenation (each part centred and scaled to unit length, so both weigh alike)."""
    out = {}
    for name, x in views.items():
        x = np.asarray(x, np.float64)
        out[name] = (x - x[train_index].mean(0)).astype(np.float32)
    if "cls" in out and "mean" in out:
        out["cls+mean"] = np.concatenate([_unit(out["cls"]), _unit(out["mean"])], 1).astype(np.float32)
    return out


def grey_histograms(images: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Per-slice grey-level histogram (density over [0, 1]): the simple classical baseline feature."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.stack([np.histogram(np.clip(a, 0, 1), edges, density=True)[0] for a in images]).astype(np.float32)


def knn_too_large(k: int, n_train: int) -> str:
    """Why a k of ``knn_ks`` is not run: a kNN over ``n_train`` training slices cannot take more neighbours than
    that (the search would silently stop at ``n_train`` and repeat the row of the largest k that fits)."""
    return (
        f"not evaluated: k = {k} is more than the {n_train} training slices of the classification split, so it "
        f"would repeat the k = {n_train} row (parameter knn_ks; more slices: samples_per_rock, slices_per_sample)"
    )


def probe_rows(cfg, seed, label, views: dict[str, np.ndarray], labels, tr, te, n_per_class) -> list[dict]:
    """kNN (every k of knn_ks up to the training slices; a larger k is a row saying why it did not run) and linear
    probes on each centred feature view."""
    rows = []
    ks = [int(k) for k in cfg.knn_ks if k <= len(tr)]
    skipped = [int(k) for k in cfg.knn_ks if k > len(tr)]
    for feature, x in centred_views(views, tr).items():
        preds = (
            probing.knn_predict(
                x[tr], labels[tr], x[te], ks, temperature=cfg.knn_temperature, num_classes=int(labels.max()) + 1
            )
            if ks
            else {}
        )
        knn = {"seed": seed, "backbone": label, "probe": "knn", "feature": feature}
        for k, p in preds.items():
            accuracy, below = float((p == labels[te]).mean()), bool(k < n_per_class)
            rows.append({**knn, "k": k, "k_below_class_size": below, "accuracy": accuracy, "status": "evaluated"})
        for k in skipped:  # a row that says why, never a silently capped k
            status = knn_too_large(k, len(tr))
            rows.append({**knn, "k": k, "k_below_class_size": False, "accuracy": np.nan, "status": status})
        p = probing.linear_probe(x[tr], labels[tr], x[te], seed=seed)
        rows.append(
            {
                "seed": seed,
                "backbone": label,
                "probe": "linear",
                "feature": feature,
                "k": np.nan,
                "accuracy": float((p == labels[te]).mean()),
                "status": "evaluated",
            }
        )
    return rows


def resnet_baseline_label(cfg) -> str:
    return f"{cfg.resnet_backbone}, random init (pooled features)"


def classification_baselines(cfg, seed, ds, tr, te, n_per_class) -> list[dict]:
    """The baseline rows of the classification table: a grey-level histogram and a random-init
    ResNet's global-average-pooled features, probed the same way as the ViTs."""
    from labkit.models.backbones import create_backbone

    rows = probe_rows(cfg, seed, HISTOGRAM, {"histogram": grey_histograms(ds.images)}, ds.rock, tr, te, n_per_class)
    seed_everything(seed)
    resnet = create_backbone(cfg.resnet_backbone, weights="random", num_classes=0).to(torch_device(cfg))
    feats = probing.extract_features(
        resnet,
        ds.images,
        img_size=cfg.slice_size,
        backbone=cfg.resnet_backbone,
        weights=f"random(seed={seed})",
        batch_size=cfg.feature_batch_size,
        progress=cfg.progress,
        patch_index=np.zeros(0, np.int64),
    )
    rows += probe_rows(cfg, seed, resnet_baseline_label(cfg), {"pooled": feats.cls}, ds.rock, tr, te, n_per_class)
    return rows
