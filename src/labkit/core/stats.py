"""Small statistics for judging a paper's claim over seeds."""

from __future__ import annotations

import numpy as np


def paired_difference(a, b) -> dict[str, float]:
    """Mean of ``a - b`` over paired seeds with a 95% t-interval, and how many seeds ``a`` won."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}")
    diff = a - b
    n = len(diff)
    mean = float(diff.mean()) if n else float("nan")
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n))
    else:
        half = float("nan")
    return {
        "mean_diff": mean,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "wins": int((diff > 0).sum()),
        "n": int(n),
    }


def paired_by_index(a, b) -> dict[str, float]:
    """:func:`paired_difference` of two pandas Series over the index labels (seeds) they share.

    With no shared label, ``n`` is 0 and the other values are NaN.
    """
    common = a.index.intersection(b.index)
    return paired_difference(a.loc[common].to_numpy(dtype=float), b.loc[common].to_numpy(dtype=float))
