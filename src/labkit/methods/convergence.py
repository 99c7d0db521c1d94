"""Measures of a learning curve's convergence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def late_gain(curve: Sequence[float], parts: int = 5) -> float:
    """Best score in the last ``1/parts`` of the epochs (at least one) minus the best before it (plateau: small or
    negative); NaN for fewer than two epochs."""
    values = np.asarray(curve, dtype=float)
    if len(values) < 2:
        return float("nan")
    k = max(1, len(values) // parts)
    return float(np.nanmax(values[-k:]) - np.nanmax(values[:-k]))
