"""Table cells that show a value's spread over seeds: ``mean ± sd`` as text."""

from __future__ import annotations

import pandas as pd


def mean_sd_cell(values, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sd`` of ``values`` times ``scale`` (default: fractions as %), the sd of a single value shown as 0."""
    values = pd.Series(values, dtype=float)
    m, s = values.mean(), values.std()
    return f"{scale * m:.{digits}f} ± {scale * (s if s == s else 0):.{digits}f}"
