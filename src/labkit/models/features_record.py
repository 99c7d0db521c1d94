"""The "features learned" record a checkpoint's sidecar carries: its producer's source-task verdict, in one format.

A study that saves an encoder for another study writes, under key :data:`KEY` of the checkpoint's JSON sidecar, its
own "features learned" precondition on that encoder (the encoder's frozen probe against the same network at random
init, judged by :mod:`labkit.core.claims`): ``{"passed": bool, "estimate": float, "ci": [lo, hi], "n": int,
"unit": str, "statement": str, "margin": float}`` (:data:`FIELDS`). The consuming study judges its transfer arm's
"features learned" precondition on that record. Both read the format from here (:func:`make_record` writes it,
:func:`check_record` says what is wrong with one), so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The sidecar key of the record.
KEY = "features_learned"
#: The record's fields, every one required.
FIELDS = ("passed", "estimate", "ci", "n", "unit", "statement", "margin")


def make_record(result: Mapping, statement: str) -> dict:
    """The record of a precondition's evaluation (``Precondition.evaluate``'s ``{"passed", "evidence"}``, its
    evidence a paired comparison: ``mean_diff``, ``ci95_low``, ``ci95_high``, ``n``, ``unit``, ``margin``), with the
    ``statement`` saying what was compared. The numbers are the judge's own, unrounded."""
    ev = result["evidence"]
    unit = str(ev.get("unit", "seed"))
    record = {
        "passed": bool(result["passed"]),
        "estimate": float(ev["mean_diff"]),
        "ci": [float(ev["ci95_low"]), float(ev["ci95_high"])],
        "n": int(ev["n"]),
        "unit": "seeds" if unit == "seed" else unit,
        "statement": str(statement),
        "margin": float(ev["margin"]),
    }
    return record


def check_record(record: Any) -> str | None:
    """What is wrong with a ``features_learned`` record (None when it is well formed and consistent)."""
    if not isinstance(record, Mapping):
        return f"'{KEY}' is a {type(record).__name__}, not an object"
    missing = [k for k in FIELDS if k not in record]
    if missing:
        return f"'{KEY}' lacks {', '.join(missing)} (it needs {', '.join(FIELDS)})"
    if not isinstance(record["passed"], bool):
        return f"'{KEY}.passed' is {record['passed']!r}, not true or false"
    ci = record["ci"]
    try:
        lo, hi = (float(v) for v in ci)
        numbers = [float(record["estimate"]), lo, hi, float(record["margin"])]
        n = int(record["n"])
    except (TypeError, ValueError):
        return f"'{KEY}': estimate, margin and the two ends of ci must be numbers and n an integer"
    if not all(math.isfinite(v) for v in numbers) or not lo <= hi or n < 1:
        return f"'{KEY}': ci {list(ci)} must be finite with lo <= hi, and n >= 1 (got {n})"
    if record["passed"] != (lo > float(record["margin"])):
        return (
            f"'{KEY}' says passed={record['passed']} but its interval [{lo:g}, {hi:g}] "
            f"{'does not lie' if record['passed'] else 'lies'} above its margin {float(record['margin']):g}"
        )
    return None
