"""Segmentation and classification scores from one confusion matrix, and aggregation over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _as_int_array(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values)


class ConfusionMatrix:
    """Accumulates a (target, prediction) confusion matrix; rows are targets, columns predictions.

    Pixels whose target equals ``ignore_index`` are skipped. Predictions outside ``[0, C)`` are an error.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self._on_device = None  # counts of GPU batches, summed on the GPU and fetched once when read

    @property
    def matrix(self) -> np.ndarray:
        if self._on_device is not None:
            self._matrix += self._on_device.cpu().numpy()
            self._on_device = None
        return self._matrix

    @matrix.setter
    def matrix(self, value: np.ndarray) -> None:
        self._matrix, self._on_device = np.asarray(value, dtype=np.int64), None

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def _update_on_device(self, pred, target) -> ConfusionMatrix:
        """Accumulate GPU tensors on the GPU: no copy to the host per batch (ids are checked there too)."""
        import torch

        c = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        bad = (pred < 0) | (pred >= c) | (target < 0) | (target >= c)
        if bool(bad.any()):  # one scalar sync; the message needs the host anyway
            self.update(pred.cpu(), target.cpu())
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        self._on_device = counts if self._on_device is None else self._on_device + counts
        return self

    def update(self, pred, target) -> ConfusionMatrix:
        if getattr(pred, "is_cuda", False) and getattr(target, "is_cuda", False):
            if tuple(pred.shape) != tuple(target.shape):
                raise ValueError(
                    f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
                )
            return self._update_on_device(pred, target)
        pred, target = _as_int_array(pred), _as_int_array(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
        pred, target = pred.ravel(), target.ravel()
        if target.size == 0:
            return self
        c = self.num_classes
        pmin, pmax = int(pred.min()), int(pred.max())
        if pmin < 0 or pmax >= c:
            raise ValueError(f"prediction holds class id {pmin if pmin < 0 else pmax} outside [0, {c})")
        tmin, tmax = int(target.min()), int(target.max())
        if tmin < 0:
            if self.ignore_index is None or self.ignore_index >= 0 or (target[target < 0] != self.ignore_index).any():
                raise ValueError(f"target holds class id {tmin} outside [0, {c})")
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
            if target.size == 0:
                return self
            tmax = int(target.max())
        if tmax >= c and tmax != self.ignore_index:
            raise ValueError(f"target holds class id {tmax} outside [0, {c})")
        # One pass, no compaction: ignored pixels land in rows >= c of a slightly larger histogram,
        # which are dropped (or reported as out-of-range ids when they are not the ignore index).
        rows = max(tmax + 1, c)
        index = target.astype(np.int64 if rows * c > 2**31 - 1 else np.int32)
        index *= c
        index += pred
        counts = np.bincount(index, minlength=rows * c).reshape(rows, c)
        stray = [r for r in range(c, rows) if r != self.ignore_index and counts[r].any()]
        if stray:
            raise ValueError(f"target holds class id {stray[0]} outside [0, {c})")
        self._matrix += counts[:c]
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = self.matrix + other.matrix
        return out

    @property
    def support(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where a class is absent from both targets and predictions."""
        tp = np.diag(self.matrix).astype(float)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def f1(self) -> np.ndarray:
        """Per-class F1 (= Dice); NaN where a class is absent from both targets and predictions."""
        tp = np.diag(self.matrix).astype(float)
        denom = self.matrix.sum(0) + self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / denom, np.nan)

    def miou(self) -> float:
        values = self.iou()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def mean_f1(self) -> float:
        values = self.f1()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def scores(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        out = {"miou": self.miou(), "pixel_accuracy": self.pixel_accuracy(), "mean_f1": self.mean_f1()}
        out.update({f"iou/{n}": float(v) for n, v in zip(names, self.iou())})
        out.update({f"f1/{n}": float(v) for n, v in zip(names, self.f1())})
        return out


def segmentation_scores(
    pred, target, num_classes: int, ignore_index: int | None = 255, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    return ConfusionMatrix(num_classes, ignore_index).update(pred, target).scores(class_names)


def classification_scores(pred, target, num_classes: int, class_names: Sequence[str] | None = None) -> dict[str, float]:
    cm = ConfusionMatrix(num_classes, ignore_index=None).update(pred, target)
    scores = cm.scores(class_names)
    return {
        "accuracy": scores["pixel_accuracy"],
        "macro_f1": scores["mean_f1"],
        **{k: v for k, v in scores.items() if k.startswith("f1/")},
    }


def aggregate_over_seeds(
    df: pd.DataFrame, value_cols: Sequence[str] | str, group_cols: Sequence[str] | str = ()
) -> pd.DataFrame:
    """Mean, standard deviation and a 95% t-interval of each value column over the rows of each group."""
    from scipy import stats

    value_cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    group_cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    missing = [c for c in value_cols + group_cols if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the table (it has {list(df.columns)})")

    def summarise(frame: pd.DataFrame) -> pd.Series:
        row = {}
        for col in value_cols:
            values = frame[col].dropna().to_numpy(dtype=float)
            n = len(values)
            mean = values.mean() if n else np.nan
            std = values.std(ddof=1) if n > 1 else (0.0 if n == 1 else np.nan)
            half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
            row.update(
                {
                    f"{col}_mean": mean,
                    f"{col}_std": std,
                    f"{col}_ci95_low": mean - half,
                    f"{col}_ci95_high": mean + half,
                }
            )
        row["n"] = len(frame)
        return pd.Series(row)

    if not group_cols:
        return summarise(df).to_frame().T
    rows = [
        dict(zip(group_cols, key if isinstance(key, tuple) else (key,))) | summarise(g).to_dict()
        for key, g in df.groupby(group_cols, sort=False)
    ]
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(int)
    return out
