"""Tidy tables of grid runs: each run's training budget as columns, and differences between matched runs (one arm
against a reference arm, one protocol against another) on the same seed and setting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.claims import BUDGET_KEYS


def with_budget_columns(frame: pd.DataFrame, records: Sequence[Mapping[str, Any] | None]) -> pd.DataFrame:
    """``frame`` (one row per record) with each record's ``budget`` (:func:`labkit.core.claims.budget_record`) in
    the :data:`~labkit.core.claims.BUDGET_KEYS` columns, replacing any task parameter of the same name; a run
    without a budget (an untrained floor) gets NaN there."""
    budgets = [r.get("budget") or {} for r in records if r is not None]
    for key in BUDGET_KEYS:
        frame[key] = [b.get(key, np.nan) for b in budgets]
    return frame


def matched_differences(
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    on: Sequence[str],
    value: str,
    out: str,
    keep: Sequence[str] = (),
    reference_first: bool = False,
) -> pd.DataFrame:
    """For each row of ``rows``, in order, that has a row of ``reference`` equal on the ``on`` columns (the first
    such): ``row[value] - reference[value]`` (``reference_first``: the reverse) as column ``out``, after the row's
    ``keep`` columns. Rows without a match have none."""
    on = list(on)
    matched = reference.drop_duplicates(on).set_index(on)[value]
    found = []
    for _, r in rows.iterrows():
        key = tuple(r[k] for k in on) if len(on) > 1 else r[on[0]]
        if key in matched.index:
            a, b = r[value], matched[key]
            found.append({**{k: r[k] for k in keep}, out: float(b) - a if reference_first else a - b})
    return pd.DataFrame(found, columns=[*keep, out])
