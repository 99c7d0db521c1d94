"""How a cost grows with a size: the log-log slope of measurements in the size (1 = linear, 2 = quadratic), one fit
per group of measurements (e.g. per method and repeat)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def log_log_slope(x, y) -> float:
    """Least-squares slope of ``log y`` in ``log x``."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def log_log_slopes(frame: pd.DataFrame, by: list[str], size: str, costs: dict[str, str]) -> pd.DataFrame:
    """One row per group of ``frame`` by ``by`` (sorted): for each ``name: column`` of ``costs``, the log-log slope
    of that column in the column ``size``."""
    rows = []
    for key, grp in frame.groupby(by):
        keys = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, keys)), **{n: log_log_slope(grp[size], grp[c]) for n, c in costs.items()}})
    return pd.DataFrame(rows)
