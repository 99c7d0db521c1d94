"""Probing frozen backbones: feature extraction with an on-disk cache, kNN and linear probes for
classification, and linear-head / kNN segmentation over patch tokens."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit.core.errors import DataError
from labkit.models.vit_heads import (TokenHead, backbone_tokens, count_parameters, create_head,
                                     prepare_input)


# --------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------
@dataclass
class Features:
    cls: np.ndarray  # (N, D) class token (or pooled feature)
    patch: np.ndarray  # (N, D, h, w) patch-token grid
    seconds: float  # extraction time (0 when read from the cache... see `from_cache`)
    from_cache: bool
    key: str


def data_fingerprint(images: np.ndarray) -> str:
    a = np.ascontiguousarray(images)
    h = hashlib.sha1(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def feature_cache_key(backbone: str, weights: str, img_size: int, data: str, policy: str = "resize") -> str:
    payload = json.dumps({"backbone": backbone, "weights": weights, "img_size": int(img_size),
                          "data": data, "policy": policy, "version": 1}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:24]


def _as_tensor_batch(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return x[:, None] if x.ndim == 3 else x


def extract_features(model: torch.nn.Module, images: np.ndarray, *, img_size: int, backbone: str,
                     weights: str, batch_size: int = 32, policy: str = "resize", cache: bool = True,
                     cache_dir: str | Path | None = None, progress: bool = True,
                     patch_dtype=np.float32) -> Features:
    """Class and patch tokens of grey slices ``images`` (N, H, W) in [0, 1].

    The result is cached under ``cache_dir("features")`` keyed by ``backbone`` name,
    ``weights`` (an id saying which weights: ``pretrained``, ``random(seed=3)``, a checkpoint
    name...), input size, resize policy and a hash of the data, so a rerun reads it back.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DataError(f"extract_features: expected a non-empty (N, H, W) stack, got shape {images.shape}")
    key = feature_cache_key(backbone, weights, img_size, data_fingerprint(images), policy)
    path = None
    if cache:
        from labkit.core.paths import cache_dir as _cache_dir

        root = Path(cache_dir) if cache_dir is not None else _cache_dir("features")
        path = root / f"{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                return Features(z["cls"], z["patch"], float(z["seconds"]), True, key)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    cls_out, patch_out = None, None
    from tqdm.auto import tqdm

    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for i in tqdm(starts, desc=f"features {backbone}", disable=not progress, leave=False):
            x = prepare_input(_as_tensor_batch(images[i:i + batch_size]), img_size, policy)
            c, g = backbone_tokens(model, x)
            if cls_out is None:  # allocate once the token shapes are known
                cls_out = np.empty((len(images), c.shape[1]), np.float32)
                patch_out = np.empty((len(images),) + tuple(g.shape[1:]), patch_dtype)
            cls_out[i:i + len(x)] = c.numpy()
            patch_out[i:i + len(x)] = g.numpy()
    model.train(was_training)
    seconds = time.perf_counter() - t0
    if path is not None:
        from labkit.core.atomic import atomic_save_npz

        atomic_save_npz(path, cls=cls_out, patch=patch_out, seconds=np.float64(seconds))
    return Features(cls_out, patch_out, seconds, False, key)


# --------------------------------------------------------------------------------------
# kNN probe (cosine similarity, temperature-weighted votes)
# --------------------------------------------------------------------------------------
def _l2n(x) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x.float()
    return F.normalize(t, dim=1)


def knn_votes(train_features, train_labels, test_features, ks: Sequence[int] = (20,), *,
              temperature: float = 0.07, num_classes: int | None = None,
              batch_size: int = 2048) -> dict[int, np.ndarray]:
    """Class votes (N_test, C) for each k: the k most cosine-similar training samples vote with
    weight exp(similarity / temperature). One matmul + top-k per test batch, shared by all k."""
    train = _l2n(train_features)
    test = _l2n(test_features)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if len(labels) != len(train):
        raise DataError(f"kNN: {len(train)} training features but {len(labels)} labels")
    if train.shape[1] != test.shape[1]:
        raise DataError(f"kNN: training features have {train.shape[1]} dims, test features {test.shape[1]}")
    ks = [int(k) for k in ks]
    if min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    kmax = min(max(ks), len(train))
    c = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    out = {k: np.empty((len(test), c), np.float32) for k in ks}
    with torch.inference_mode():
        for i in range(0, len(test), batch_size):
            sims, idx = (test[i:i + batch_size] @ train.T).topk(kmax, dim=1)
            weights = (sims / temperature).exp()
            neighbour_labels = labels[idx]
            for k in ks:
                kk = min(k, kmax)
                votes = torch.zeros(len(idx), c)
                votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
                out[k][i:i + len(idx)] = votes.numpy()
    return out


def knn_predict(train_features, train_labels, test_features, ks: Sequence[int] = (20,), **kw) -> dict[int, np.ndarray]:
    """Predicted labels for each k (ties go to the smaller class id, as in scikit-learn)."""
    return {k: v.argmax(1) for k, v in knn_votes(train_features, train_labels, test_features, ks, **kw).items()}


class KNNProbe:
    """scikit-learn-style estimator around :func:`knn_votes`."""

    def __init__(self, k: int = 20, temperature: float = 0.07):
        self.k, self.temperature = int(k), float(temperature)

    def fit(self, X, y):
        X, y = np.asarray(X, np.float32), np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise DataError(f"KNNProbe.fit: X must be (N, D) with N labels, got {X.shape} and {y.shape}")
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        self.X_ = X
        return self

    def predict_proba(self, X) -> np.ndarray:
        v = knn_votes(self.X_, self.y_, X, [self.k], temperature=self.temperature,
                      num_classes=len(self.classes_))[self.k]
        return v / v.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def linear_probe(train_features, train_labels, test_features, *, C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Logistic-regression probe on standardised features; returns test predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(np.asarray(train_features), np.asarray(train_labels))
    return clf.predict(np.asarray(test_features))


# --------------------------------------------------------------------------------------
# Segmentation over patch tokens
# --------------------------------------------------------------------------------------
@dataclass
class HeadResult:
    model: torch.nn.Module
    trainable_params: int
    seconds: float
    history: object


def train_token_head(train_tokens: np.ndarray, train_masks: np.ndarray, *, kind: str = "linear",
                     num_classes: int, epochs: int = 20, lr: float = 1e-3, batch_size: int = 16,
                     val_tokens: np.ndarray | None = None, val_masks: np.ndarray | None = None,
                     seed: int = 0, progress: bool = False) -> HeadResult:
    """Train a linear (BatchNorm + 1x1 conv) or small CNN head on frozen patch tokens
    (N, D, h, w) against full-resolution masks (N, H, W); logits are upsampled bilinearly."""
    from torch.utils.data import DataLoader, TensorDataset

    from labkit.core.seeding import seed_everything
    from labkit.methods.training import fit

    if len(train_tokens) != len(train_masks):
        raise DataError(f"{len(train_tokens)} token grids but {len(train_masks)} masks")
    gen = seed_everything(seed)
    head = TokenHead(create_head(kind, train_tokens.shape[1], num_classes))
    ds = TensorDataset(torch.from_numpy(np.asarray(train_tokens, np.float32)),
                       torch.from_numpy(np.asarray(train_masks, np.int64)))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen)
    val = None
    if val_tokens is not None:
        val = DataLoader(TensorDataset(torch.from_numpy(np.asarray(val_tokens, np.float32)),
                                       torch.from_numpy(np.asarray(val_masks, np.int64))), batch_size=64)
    res = fit(head, loader, val, task="segmentation", num_classes=num_classes, epochs=epochs, lr=lr,
              scheduler="cosine", seed=seed, progress=progress, desc=f"{kind} head")
    return HeadResult(res.model, count_parameters(head), res.seconds, res.history)


@torch.inference_mode()
def predict_token_head(head: torch.nn.Module, tokens: np.ndarray, out_size: tuple[int, int],
                       batch_size: int = 64) -> np.ndarray:
    head.eval()
    preds = []
    for i in range(0, len(tokens), batch_size):
        logits = head(torch.from_numpy(np.asarray(tokens[i:i + batch_size], np.float32)))
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        preds.append(logits.argmax(1).numpy())
    return np.concatenate(preds)


def knn_segment(train_tokens: np.ndarray, train_masks: np.ndarray, test_tokens: np.ndarray,
                out_size: tuple[int, int], *, num_classes: int, k: int = 20, temperature: float = 0.07,
                grid: int | None = None, memory_size: int = 8000, seed: int = 0,
                batch_size: int = 4096) -> np.ndarray:
    """kNN segmentation: patch features upsampled bilinearly to a ``grid`` x ``grid`` map; a
    memory bank of ``memory_size`` labelled training positions; every test position takes the
    temperature-weighted vote of its k nearest (cosine) memory entries; votes are upsampled
    to ``out_size`` and the arg-max is the phase."""
    grid = int(grid or 2 * train_tokens.shape[-1])

    def upsample(t):
        return F.interpolate(torch.from_numpy(np.asarray(t, np.float32)), size=(grid, grid), mode="bilinear",
                             align_corners=False)

    tr = upsample(train_tokens)  # (N, D, g, g)
    d = tr.shape[1]
    lab = F.interpolate(torch.from_numpy(np.asarray(train_masks))[:, None].float(), size=(grid, grid),
                        mode="nearest")[:, 0].long()
    feats = tr.permute(0, 2, 3, 1).reshape(-1, d)
    labels = lab.reshape(-1)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(feats), size=min(memory_size, len(feats)), replace=False)
    memory, memory_labels = feats[pick], labels[pick].numpy()
    preds = []
    for i in range(0, len(test_tokens), max(1, batch_size // (grid * grid))):
        te = upsample(test_tokens[i:i + max(1, batch_size // (grid * grid))])
        n = len(te)
        q = te.permute(0, 2, 3, 1).reshape(-1, d)
        votes = knn_votes(memory, memory_labels, q, [k], temperature=temperature, num_classes=num_classes)[k]
        votes = torch.from_numpy(votes).reshape(n, grid, grid, num_classes).permute(0, 3, 1, 2)
        votes = votes / votes.sum(1, keepdim=True).clamp_min(1e-12)
        preds.append(F.interpolate(votes, size=out_size, mode="bilinear", align_corners=False).argmax(1).numpy())
    return np.concatenate(preds)
