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


def t_half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided t-interval of a mean over ``n`` values of spread ``sd``."""
    from scipy import stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))


def seeds_for_half_width(sd: float, half_width: float, start: int = 2, limit: int = 10_000) -> int | None:
    """The fewest seeds whose 95 % t-interval, at spread ``sd``, is narrower than ``half_width`` (None when
    more than ``limit`` would be needed, or the spread is unknown)."""
    if not (np.isfinite(sd) and np.isfinite(half_width)) or half_width <= 0:
        return None
    if sd == 0:
        return max(start, 2)
    lo, hi = max(start, 2), max(start, 2)
    while t_half_width(sd, hi) >= half_width:  # t shrinks monotonically with n: bracket, then bisect
        lo, hi = hi, hi * 2
        if hi > limit:
            return None if t_half_width(sd, limit) >= half_width else _bisect(sd, half_width, lo, limit)
    return _bisect(sd, half_width, lo, hi)


def _bisect(sd: float, half_width: float, lo: int, hi: int) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if t_half_width(sd, mid) < half_width:
            hi = mid
        else:
            lo = mid + 1
    return lo


def detectable_shift(sd: float, n: int, power: float = 0.8) -> float:
    """The true mean difference a one-sided 97.5 % t-bound clears with probability ``power`` at ``n`` values
    of spread ``sd``: (t_0.975 + t_power) sd / sqrt(n), the usual minimum-detectable-effect formula."""
    from scipy import stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(power, n - 1)) * sd / np.sqrt(n))
