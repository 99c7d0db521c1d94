"""Probing frozen backbones: feature extraction with an on-disk cache, kNN and linear probes for
classification, and linear-head / kNN segmentation over patch tokens."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labkit.core.errors import DataError
from labkit.models.vit_heads import TokenHead, backbone_tokens, count_parameters, create_head, prepare_input


# --------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------
@dataclass
class Features:
    cls: np.ndarray  # (N, D) class token (or pooled feature)
    patch: np.ndarray  # (M, D, h, w) patch-token grids of the images in `patch_index` (all N when None)
    seconds: float  # extraction time of the first (uncached) run; see `from_cache`
    from_cache: bool
    key: str
    patch_index: np.ndarray | None = None  # image indices whose patch tokens are kept (None: every image)
    mean: np.ndarray | None = None  # (N, D) mean-pooled patch tokens of every image

    def patch_of(self, index) -> np.ndarray:
        """Patch tokens of images ``index`` (indices into the extracted stack)."""
        index = np.asarray(index)
        if self.patch_index is None:
            return self.patch[index]
        pos = np.searchsorted(self.patch_index, index)
        pos = np.clip(pos, 0, len(self.patch_index) - 1)
        if not np.array_equal(self.patch_index[pos], index):
            missing = sorted(set(np.atleast_1d(index).tolist()) - set(self.patch_index.tolist()))[:5]
            raise KeyError(f"patch tokens of images {missing} were not kept (patch_index)")
        return self.patch[pos]


def data_fingerprint(images: np.ndarray) -> str:
    a = np.ascontiguousarray(images)
    h = hashlib.sha1(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def feature_cache_key(
    backbone: str, weights: str, img_size: int, data: str, policy: str = "resize", patch_index: str | None = None
) -> str:
    fields = {
        "backbone": backbone,
        "weights": weights,
        "img_size": int(img_size),
        "data": data,
        "policy": policy,
        "version": 2,
    }
    if patch_index is not None:  # only then, so keys of earlier caches stay valid
        fields["patch_index"] = patch_index
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def _as_tensor_batch(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return x[:, None] if x.ndim == 3 else x


def extract_features(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    img_size: int,
    backbone: str,
    weights: str,
    batch_size: int = 32,
    policy: str = "resize",
    cache: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    patch_dtype=np.float32,
    patch_index=None,
    max_cache_bytes: float = 4e9,
) -> Features:
    """Class and patch tokens of grey slices ``images`` (N, H, W) in [0, 1].

    The result is cached under ``cache_dir("features")`` keyed by ``backbone`` name,
    ``weights`` (an id saying which weights: ``pretrained``, ``random(seed=3)``, a checkpoint
    name...), input size, resize policy and a hash of the data, so a rerun reads it back.
    ``patch_index`` keeps the patch tokens of those images only (class tokens of all): at
    560 px a ViT-B/14 gives 1,600 x 768 floats per slice. Results larger than
    ``max_cache_bytes`` are not written to disk. Batches go to the model's device.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DataError(f"extract_features: expected a non-empty (N, H, W) stack, got shape {images.shape}")
    if patch_index is not None:
        patch_index = np.unique(np.asarray(patch_index, dtype=np.int64))
        if len(patch_index) and (patch_index[0] < 0 or patch_index[-1] >= len(images)):
            raise IndexError(f"patch_index must lie in 0..{len(images) - 1}")
    index_id = None if patch_index is None else hashlib.sha1(patch_index.tobytes()).hexdigest()[:16]
    key = feature_cache_key(backbone, weights, img_size, data_fingerprint(images), policy, index_id)
    path = None
    if cache:
        from labkit.core.paths import cache_dir as _cache_dir

        root = Path(cache_dir) if cache_dir is not None else _cache_dir("features")
        path = root / f"{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                if "mean" in z:
                    return Features(z["cls"], z["patch"], float(z["seconds"]), True, key, patch_index, z["mean"])
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    keep = None if patch_index is None else np.zeros(len(images), bool)
    if keep is not None:
        keep[patch_index] = True
    n_patch = len(images) if patch_index is None else len(patch_index)
    cls_out, patch_out, mean_out, row = None, None, None, 0
    from tqdm.auto import tqdm

    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for i in tqdm(starts, desc=f"features {backbone}", disable=not progress, leave=False):
            x = prepare_input(_as_tensor_batch(images[i : i + batch_size]), img_size, policy).to(device)
            c, g = backbone_tokens(model, x)
            c, g = c.float().cpu(), g.float().cpu()
            if cls_out is None:  # allocate once the token shapes are known
                cls_out = np.empty((len(images), c.shape[1]), np.float32)
                mean_out = np.empty((len(images), g.shape[1]), np.float32)
                patch_out = np.empty((n_patch,) + tuple(g.shape[1:]), patch_dtype)
            cls_out[i : i + len(x)] = c.numpy()
            mean_out[i : i + len(x)] = g.mean((2, 3)).numpy()
            if keep is None:
                patch_out[i : i + len(x)] = g.numpy()
            else:
                sel = keep[i : i + len(x)]
                patch_out[row : row + int(sel.sum())] = g.numpy()[sel]
                row += int(sel.sum())
    model.train(was_training)
    seconds = time.perf_counter() - t0
    if path is not None and cls_out.nbytes + patch_out.nbytes <= max_cache_bytes:
        from labkit.core.atomic import atomic_save_npz

        atomic_save_npz(path, cls=cls_out, patch=patch_out, mean=mean_out, seconds=np.float64(seconds))
    return Features(cls_out, patch_out, seconds, False, key, patch_index, mean_out)


# --------------------------------------------------------------------------------------
# kNN probe (cosine similarity, temperature-weighted votes)
# --------------------------------------------------------------------------------------
def _l2n(x) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x.float()
    return F.normalize(t, dim=1)


def knn_votes(
    train_features,
    train_labels,
    test_features,
    ks: Sequence[int] = (20,),
    *,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 2048,
) -> dict[int, np.ndarray]:
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
            sims, idx = (test[i : i + batch_size] @ train.T).topk(kmax, dim=1)
            weights = (sims / temperature).exp()
            neighbour_labels = labels[idx]
            for k in ks:
                kk = min(k, kmax)
                votes = torch.zeros(len(idx), c)
                votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
                out[k][i : i + len(idx)] = votes.numpy()
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
        v = knn_votes(self.X_, self.y_, X, [self.k], temperature=self.temperature, num_classes=len(self.classes_))[
            self.k
        ]
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


def train_token_head(
    train_tokens: np.ndarray,
    train_masks: np.ndarray,
    *,
    kind: str = "linear",
    num_classes: int,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 16,
    val_tokens: np.ndarray | None = None,
    val_masks: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
) -> HeadResult:
    """Train a linear (BatchNorm + 1x1 conv) or small CNN head on frozen patch tokens
    (N, D, h, w) against full-resolution masks (N, H, W); logits are upsampled bilinearly."""
    from torch.utils.data import DataLoader, TensorDataset

    from labkit.core.seeding import seed_everything
    from labkit.methods.training import fit

    if len(train_tokens) != len(train_masks):
        raise DataError(f"{len(train_tokens)} token grids but {len(train_masks)} masks")
    gen = seed_everything(seed)
    head = TokenHead(create_head(kind, train_tokens.shape[1], num_classes))
    ds = TensorDataset(
        torch.from_numpy(np.asarray(train_tokens, np.float32)), torch.from_numpy(np.asarray(train_masks, np.int64))
    )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen)
    val = None
    if val_tokens is not None:
        val = DataLoader(
            TensorDataset(
                torch.from_numpy(np.asarray(val_tokens, np.float32)), torch.from_numpy(np.asarray(val_masks, np.int64))
            ),
            batch_size=64,
        )
    res = fit(
        head,
        loader,
        val,
        task="segmentation",
        num_classes=num_classes,
        epochs=epochs,
        lr=lr,
        scheduler="cosine",
        seed=seed,
        progress=progress,
        desc=f"{kind} head",
    )
    return HeadResult(res.model, count_parameters(head), res.seconds, res.history)


def _to_output(scores: torch.Tensor, out_size: tuple[int, int], padded_size: tuple[int, int] | None):
    """Upsample token-resolution scores to the slice: straight to ``out_size``, or, for slices
    reflect-padded to ``padded_size`` before the backbone, to the padded size and then crop."""
    if padded_size is None:
        return F.interpolate(scores, size=tuple(out_size), mode="bilinear", align_corners=False)
    up = F.interpolate(scores, size=tuple(padded_size), mode="bilinear", align_corners=False)
    return up[..., : out_size[0], : out_size[1]]


def pad_masks(masks: np.ndarray, size: int, ignore_index: int = 255) -> np.ndarray:
    """Masks (N, H, W) padded at the bottom/right to ``size`` with ``ignore_index`` (the
    labels of slices reflect-padded for the patch grid; the padding is not trained on)."""
    masks = np.asarray(masks)
    h, w = masks.shape[-2:]
    if h > size or w > size:
        raise DataError(f"masks of {h}x{w} are larger than the padded size {size}")
    return np.pad(masks, ((0, 0), (0, size - h), (0, size - w)), constant_values=ignore_index)


@torch.inference_mode()
def predict_token_head(
    head: torch.nn.Module,
    tokens: np.ndarray,
    out_size: tuple[int, int],
    batch_size: int = 64,
    padded_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Phase maps (N, *out_size) from a head on patch tokens (see :func:`_to_output` for
    ``padded_size``)."""
    head.eval()
    device = next(iter(head.parameters()), torch.empty(0)).device
    preds = []
    for i in range(0, len(tokens), batch_size):
        logits = head(torch.from_numpy(np.asarray(tokens[i : i + batch_size], np.float32)).to(device))
        preds.append(_to_output(logits, out_size, padded_size).argmax(1).cpu().numpy())
    return np.concatenate(preds)


def knn_segment(
    train_tokens: np.ndarray,
    train_masks: np.ndarray,
    test_tokens: np.ndarray,
    out_size: tuple[int, int],
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    grid: int | None = None,
    memory_size: int = 8000,
    seed: int = 0,
    batch_size: int = 4096,
    padded_size: tuple[int, int] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """kNN segmentation: patch features upsampled bilinearly to a ``grid`` x ``grid`` map; a
    memory bank of ``memory_size`` labelled training positions (positions labelled
    ``ignore_index`` are left out); every test position takes the temperature-weighted vote of
    its k nearest (cosine) memory entries; votes are upsampled to ``out_size`` and the
    arg-max is the phase. With ``padded_size`` the masks are those of the padded slices and
    votes are cropped back to ``out_size``."""
    if len(train_tokens) != len(train_masks):
        raise DataError(f"kNN segmentation: {len(train_tokens)} token grids but {len(train_masks)} masks")
    grid = int(grid or 2 * train_tokens.shape[-1])

    def upsample(t):
        return F.interpolate(
            torch.from_numpy(np.asarray(t, np.float32)), size=(grid, grid), mode="bilinear", align_corners=False
        )

    d = train_tokens.shape[1]
    lab = F.interpolate(torch.from_numpy(np.asarray(train_masks))[:, None].float(), size=(grid, grid), mode="nearest")[
        :, 0
    ].long()
    labels = lab.reshape(-1)
    valid = np.flatnonzero((labels != ignore_index).numpy())
    if len(valid) == 0:
        raise DataError("kNN segmentation: every training position is labelled ignore_index")
    rng = np.random.default_rng(seed)
    pick = valid[rng.choice(len(valid), size=min(memory_size, len(valid)), replace=False)]
    memory_labels = labels[pick].numpy()
    # upsample the training grids a chunk at a time and keep only the picked positions (the full
    # upsampled stack of a paper-size run would be tens of GB)
    memory = torch.empty((len(pick), d))
    per_image = grid * grid
    img_of, pos = pick // per_image, pick % per_image
    chunk = max(1, (1 << 26) // max(d * per_image, 1))
    for i in range(0, len(train_tokens), chunk):
        sel = np.flatnonzero((img_of >= i) & (img_of < i + chunk))
        if len(sel) == 0:
            continue
        flat = upsample(train_tokens[i : i + chunk]).permute(0, 2, 3, 1).reshape(-1, d)
        memory[torch.from_numpy(sel)] = flat[torch.from_numpy((img_of[sel] - i) * per_image + pos[sel])]
    preds = []
    per_batch = max(1, batch_size // (grid * grid))
    for i in range(0, len(test_tokens), per_batch):
        te = upsample(test_tokens[i : i + per_batch])
        n = len(te)
        q = te.permute(0, 2, 3, 1).reshape(-1, d)
        votes = knn_votes(memory, memory_labels, q, [k], temperature=temperature, num_classes=num_classes)[k]
        votes = torch.from_numpy(votes).reshape(n, grid, grid, num_classes).permute(0, 3, 1, 2)
        votes = votes / votes.sum(1, keepdim=True).clamp_min(1e-12)
        preds.append(_to_output(votes, out_size, padded_size).argmax(1).numpy())
    return np.concatenate(preds)
