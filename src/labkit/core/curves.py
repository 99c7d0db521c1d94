"""Measures of a training curve (a validation score recorded at evenly spaced points along training)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The late part of training the plateau is read on: its last fifth.
PLATEAU_FRACTION = 0.2


def late_gain(curve: Sequence[float], fraction: float = PLATEAU_FRACTION) -> float:
    """How much the last ``fraction`` of training improved the best validation score: best over the whole curve
    minus best before its last fifth (0 when training had plateaued; needs >= 5 points to resolve a fifth)."""
    curve = np.asarray(curve, dtype=float)
    if len(curve) < 2:
        return float("nan")
    cut = max(1, int(round(len(curve) * (1 - fraction))))
    return float(np.nanmax(curve) - np.nanmax(curve[:cut]))
