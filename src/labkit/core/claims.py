"""The kit's one claim judge: every study's claims are declared as data and judged here by one rule.

A claim is "arm A vs arm B on metric M under filter F, paired over seeds", possibly in several parts,
with the **preconditions** that make the test meaningful (the baseline is label-limited, the stand-in
trained, the resolution allows the effect, both arms plateaued). Claims are declared before any
result exists, so a study's claims can be checked on synthetic tables (``tests/test_claims_conformance.py``).

The rule, the same everywhere (:data:`RULE`):

- a **comparison** holds when the paired 95 % t-interval of ``A - B`` over the shared pairing keys
  (seeds) lies on the claimed side of its margin (0 unless the claim states a size);
- at least :data:`MIN_SEEDS` shared seeds, else the claim is *not evaluated: n seeds < 3*;
- a claim with several parts holds when every part holds; its reason names the parts that failed;
- when a precondition fails, the claim is *not evaluated: precondition '<name>' failed (<numbers>)*,
  never *did not hold*.

Example::

    from labkit.core.claims import Claim, Compare, Precondition, judge

    few = {"arm": "supervised", "fraction": 1 / 16}
    claim = Claim(
        id="beats_supervised", statement="FARCLUSS beats supervised-only at 1/16 labels",
        compare=[Compare("miou", a={"arm": "farcluss", "fraction": 1 / 16}, b=few)],
        preconditions=[Precondition.label_limited("miou", full={"arm": "supervised", "fraction": 1.0},
                                                  few=few, margin=0.02)])
    verdict = judge(claim, runs)   # runs: a tidy DataFrame with columns arm, fraction, seed, miou
    verdict["status"]              # 'held', 'did not hold' or 'not evaluated'
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.stats import paired_difference

HELD, NOT_HELD, NOT_EVALUATED = "held", "did not hold", "not evaluated"
STATUSES = (HELD, NOT_HELD, NOT_EVALUATED)
MIN_SEEDS = 3
RULE = (
    "a comparison holds when the paired 95 % t-interval of the difference over shared seeds lies on the "
    f"claimed side of its margin; at least {MIN_SEEDS} shared seeds; a claim holds when every part holds; "
    "a failed precondition leaves it not evaluated"
)
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

Tables = Mapping[str, pd.DataFrame]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _describe_filter(where: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in where.items()) or "all rows"


def _select(table: pd.DataFrame, where: Mapping[str, Any], table_name: str) -> pd.DataFrame:
    missing = [c for c in where if c not in table.columns]
    if missing:
        raise KeyError(f"table '{table_name}' has no column(s) {missing} (it has {list(table.columns)})")
    mask = np.ones(len(table), dtype=bool)
    for col, value in where.items():
        column = table[col]
        if isinstance(value, float) and pd.api.types.is_float_dtype(column):
            mask &= np.isclose(column.to_numpy(dtype=float), value, rtol=1e-9, atol=1e-12)
        else:
            mask &= (column == value).to_numpy()
    return table[mask]


def _as_tables(tables: pd.DataFrame | Tables) -> Tables:
    return {"runs": tables} if isinstance(tables, pd.DataFrame) else tables


@dataclasses.dataclass(frozen=True)
class Compare:
    """One comparison as data: ``metric`` of the rows matching ``a`` minus those matching ``b``, paired.

    ``b`` is a row filter (another arm) or a number (a one-sample test against a constant). ``greater``:
    the claimed direction (A above B + margin) or, when False, A below B - margin. ``pair_on``: the
    columns that pair rows of A with rows of B (seeds by default; measuring rounds for a cost claim).
    """

    metric: str
    a: Mapping[str, Any]
    b: Mapping[str, Any] | float = 0.0
    greater: bool = True
    margin: float = 0.0
    label: str = ""
    table: str = "runs"
    pair_on: tuple[str, ...] = ("seed",)

    def describe(self) -> str:
        if self.label:
            return self.label
        b = _fmt(self.b) if isinstance(self.b, (int, float)) else f"[{_describe_filter(self.b)}]"
        side = ">" if self.greater else "<"
        margin = f" {'+' if self.greater else '-'} {_fmt(self.margin)}" if self.margin else ""
        return f"{self.metric}: [{_describe_filter(self.a)}] {side} {b}{margin}"

    def values(self, tables: Tables) -> tuple[np.ndarray, np.ndarray]:
        """The paired values of A and B over their shared pairing keys (both 1-D, equal length)."""
        if self.table not in tables:
            raise KeyError(
                f"comparison '{self.describe()}' reads table '{self.table}', which was not given "
                f"(tables: {sorted(tables)})"
            )
        table = tables[self.table]
        a = self._series(table, self.a)
        if isinstance(self.b, Mapping):
            b = self._series(table, self.b)
            common = a.index.intersection(b.index)
            return a.loc[common].to_numpy(dtype=float), b.loc[common].to_numpy(dtype=float)
        return a.to_numpy(dtype=float), np.full(len(a), float(self.b))

    def _series(self, table: pd.DataFrame, where: Mapping[str, Any]) -> pd.Series:
        rows = _select(table, where, self.table)
        if self.metric not in table.columns:
            raise KeyError(f"table '{self.table}' has no metric column '{self.metric}'")
        rows = rows[np.isfinite(rows[self.metric].to_numpy(dtype=float))]
        keys = [k for k in self.pair_on if k in rows.columns]
        if len(keys) != len(self.pair_on):
            raise KeyError(f"table '{self.table}' lacks pairing column(s) {set(self.pair_on) - set(keys)}")
        series = rows.set_index(list(keys))[self.metric]
        if series.index.has_duplicates:
            dup = series.index[series.index.duplicated()][0]
            raise ValueError(
                f"comparison '{self.describe()}': several rows share {self.pair_on} = {dup}; "
                "the filter must pick one row per seed"
            )
        return series

    def evaluate(self, tables: Tables) -> dict[str, Any]:
        """Paired difference (A - B, sign as claimed) with its interval, and whether it holds."""
        a, b = self.values(tables)
        diff = (
            paired_difference(a, b)
            if len(a)
            else {"mean_diff": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "wins": 0, "n": 0}
        )
        if self.greater:
            holds = bool(diff["n"] >= 2 and diff["ci95_low"] > self.margin)
            wins = int((a - b > self.margin).sum())
        else:
            holds = bool(diff["n"] >= 2 and diff["ci95_high"] < -self.margin)
            wins = int((a - b < -self.margin).sum())
        return {
            "comparison": self.describe(),
            "metric": self.metric,
            "direction": ">" if self.greater else "<",
            "mean_diff": diff["mean_diff"],
            "ci95_low": diff["ci95_low"],
            "ci95_high": diff["ci95_high"],
            "wins": wins,
            "n": int(diff["n"]),
            "margin": float(self.margin),
            "holds": holds,
        }


@dataclasses.dataclass(frozen=True)
class Check:
    """A threshold on recorded values, for preconditions that are not paired differences.

    Passes when ``metric`` of every row matching ``where`` satisfies ``op value`` (e.g. the stand-in's final
    pretraining loss ratio ``< 0.5``). At least one row must match.
    """

    metric: str
    where: Mapping[str, Any]
    op: str
    value: float
    table: str = "runs"
    label: str = ""

    def describe(self) -> str:
        return self.label or f"{self.metric} [{_describe_filter(self.where)}] {self.op} {_fmt(self.value)}"

    def evaluate(self, tables: Tables) -> dict[str, Any]:
        if self.op not in _OPS:
            raise ValueError(f"check '{self.describe()}': op must be one of {list(_OPS)}")
        if self.table not in tables:
            raise KeyError(f"check '{self.describe()}' reads table '{self.table}', which was not given")
        rows = _select(tables[self.table], self.where, self.table)
        values = rows[self.metric].to_numpy(dtype=float) if len(rows) else np.array([])
        passed = bool(len(values) and np.isfinite(values).all() and _OPS[self.op](values, self.value).all())
        return {
            "check": self.describe(),
            "values": [round(float(v), 6) for v in values],
            "op": self.op,
            "threshold": float(self.value),
            "holds": passed,
        }


@dataclasses.dataclass(frozen=True)
class Precondition:
    """What makes a claim testable. Passes when its comparison holds (or its check passes)."""

    name: str
    test: Compare | Check
    why: str = ""

    # The preconditions the brief names, as constructors so every study words them alike.
    @classmethod
    def label_limited(
        cls,
        metric: str,
        full: Mapping,
        few: Mapping,
        margin: float,
        table: str = "runs",
        pair_on: tuple[str, ...] = ("seed",),
    ) -> Precondition:
        """The baseline is label-limited: with all labels it beats itself with the fewest by ``margin``."""
        return cls(
            "label-limited",
            Compare(metric, a=full, b=few, margin=margin, table=table, pair_on=pair_on),
            why=f"the baseline with all labels beats itself with the fewest by more than {margin:g} {metric}",
        )

    @classmethod
    def trained(
        cls,
        ratio_metric: str,
        where: Mapping,
        max_ratio: float,
        table: str = "pretraining",
        name: str = "trained",
        why: str | None = None,
    ) -> Precondition:
        """The stand-in trained: its final loss over the trivial predictor's loss is below ``max_ratio``
        (``why`` says which loss, when it is not the final pretraining loss)."""
        return cls(
            name,
            Check(ratio_metric, where, "<", max_ratio, table=table),
            why=why or f"final pretraining loss below {max_ratio:g} x the trivial predictor's loss",
        )

    @classmethod
    def resolvable(
        cls,
        metric: str,
        ceiling: Mapping,
        baseline: Mapping | float,
        margin: float = 0.0,
        table: str = "runs",
        pair_on: tuple[str, ...] = ("seed",),
    ) -> Precondition:
        """The resolution can show it: an oracle ceiling above the baseline it must beat."""
        return cls(
            "resolvable",
            Compare(metric, a=ceiling, b=baseline, margin=margin, table=table, pair_on=pair_on),
            why="an oracle at this resolution scores above the baseline the claim must beat",
        )

    @classmethod
    def plateau(cls, metric: str, where: Mapping, max_late_gain: float, table: str = "curves") -> Precondition:
        """An arm reached a plateau: ``metric`` (its gain over the last fifth of training) is below the bound."""
        return cls(
            "plateau",
            Check(metric, where, "<", max_late_gain, table=table),
            why=f"the last fifth of training improved the score by less than {max_late_gain:g}",
        )

    def evaluate(self, tables: Tables) -> dict[str, Any]:
        result = self.test.evaluate(tables)
        return {"name": self.name, "passed": bool(result.pop("holds")), "why": self.why, "evidence": result}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim: its statement, the comparisons it rests on (all must hold) and its preconditions.

    ``unavailable``: a reason the claim cannot be run at all (weights or data missing), which a user can
    act on; the claim is then *not evaluated* with that reason.
    """

    id: str
    statement: str
    compare: Sequence[Compare]
    preconditions: Sequence[Precondition] = ()
    unavailable: str | None = None
    note: str = ""
    min_seeds: int = MIN_SEEDS

    def __post_init__(self):
        if not self.compare and self.unavailable is None:
            raise ValueError(f"claim '{self.id}' rests on no comparison")
        if self.min_seeds < MIN_SEEDS:
            raise ValueError(f"claim '{self.id}': min_seeds below the kit's {MIN_SEEDS}")


def _brief(evidence: Mapping[str, Any]) -> str:
    if "mean_diff" in evidence:
        return (
            f"{evidence['mean_diff']:+.4g}, 95% CI [{evidence['ci95_low']:+.4g}, {evidence['ci95_high']:+.4g}], "
            f"{evidence['wins']}/{evidence['n']} seeds"
        )
    return f"values {evidence.get('values')} vs {evidence.get('op')} {evidence.get('threshold')}"


def judge(claim: Claim, tables: pd.DataFrame | Tables) -> dict[str, Any]:
    """The verdict on one claim: ``status``, ``reason``, ``rule``, ``comparisons`` and ``preconditions``.

    ``tables``: one tidy DataFrame (named ``runs``) or a mapping of table name to DataFrame.
    """
    base = {
        "id": claim.id,
        "statement": claim.statement,
        "rule": RULE,
        "note": claim.note,
        "comparisons": [],
        "preconditions": [],
    }
    if claim.unavailable:
        return {**base, "status": NOT_EVALUATED, "reason": claim.unavailable}
    tables = _as_tables(tables)
    comparisons = [c.evaluate(tables) for c in claim.compare]
    preconditions = [p.evaluate(tables) for p in claim.preconditions]
    out = {**base, "comparisons": comparisons, "preconditions": preconditions}
    # Interval preconditions need the seeds too; a thin one cannot pass or fail.
    n_values = [c["n"] for c in comparisons] + [p["evidence"]["n"] for p in preconditions if "n" in p["evidence"]]
    if min(n_values) < claim.min_seeds:
        return {**out, "status": NOT_EVALUATED, "reason": f"n seeds {min(n_values)} < {claim.min_seeds}"}
    failed = [p for p in preconditions if not p["passed"]]
    if failed:
        reason = "; ".join(f"precondition '{p['name']}' failed ({_brief(p['evidence'])})" for p in failed)
        return {**out, "status": NOT_EVALUATED, "reason": reason}
    failing = [c for c in comparisons if not c["holds"]]
    if not failing:
        parts = "; ".join(f"{c['comparison']}: {_brief(c)}" for c in comparisons)
        return {**out, "status": HELD, "reason": parts}
    parts = "; ".join(f"{c['comparison']}: {_brief(c)}" for c in failing)
    prefix = "not shown" if len(comparisons) == 1 else f"{len(failing)} of {len(comparisons)} parts not shown"
    return {**out, "status": NOT_HELD, "reason": f"{prefix}: {parts}"}


def judge_all(claims: Sequence[Claim], tables: pd.DataFrame | Tables) -> list[dict[str, Any]]:
    """Verdicts of several claims, in order; duplicate ids are an error (a configuration counts once)."""
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"claim ids declared twice: {dup}")
    return [judge(c, tables) for c in claims]


def verdicts_table(verdicts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per claim: id, status, statement, preconditions (passed or failed) and the reason."""
    rows = []
    for v in verdicts:
        pre = "; ".join(f"{p['name']} {'passed' if p['passed'] else 'FAILED'}" for p in v.get("preconditions", []))
        rows.append(
            {
                "claim": v["id"],
                "status": v["status"],
                "statement": v["statement"],
                "preconditions": pre or "-",
                "reason": v["reason"],
            }
        )
    return pd.DataFrame(rows, columns=["claim", "status", "statement", "preconditions", "reason"])


# ----------------------------------------------------------------------------- synthetic tables
# Used by the conformance test: a table on which every comparison of a claim holds (or, flipped, fails)
# while its preconditions pass (or one fails), built from the claim's declaration alone.


def _node(table: str, metric: str, where: Mapping) -> tuple:
    return (table, metric, tuple(sorted((k, v) for k, v in where.items())))


def synthetic_tables(
    claim: Claim,
    n_seeds: int = 5,
    flip: bool = False,
    break_precondition: int | None = None,
    noise: float = 1e-3,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Tables on which the claim's comparisons all hold (``flip``: all fail in the claimed direction's
    reverse), its preconditions pass except number ``break_precondition``, which fails."""
    edges = []  # (a_node, b_node or constant, signed gap): value(a) - value(b) should be gap
    checks = []
    tests = [(c, flip) for c in claim.compare]
    tests += [(p.test, i == break_precondition) for i, p in enumerate(claim.preconditions)]
    for test, reverse in tests:
        if isinstance(test, Check):
            checks.append((test, reverse))
            continue
        size = abs(test.margin) + 1.0
        gap = size if test.greater else -size
        if reverse:
            gap = -gap
        b = test.b if not isinstance(test.b, Mapping) else _node(test.table, test.metric, test.b)
        edges.append((_node(test.table, test.metric, test.a), b, gap, test.pair_on))
    values: dict[tuple, float] = {}
    for a, b, _, _ in edges:
        values.setdefault(a, 0.0)
        if isinstance(b, tuple):
            values.setdefault(b, 0.0)
    # Relax the constraints value(a) - value(b) ~ gap; constants pin their node.
    for _ in range(50):
        for a, b, gap, _ in edges:
            target_b = float(b) if not isinstance(b, tuple) else values[b]
            values[a] = target_b + gap if not isinstance(b, tuple) else values[a] + 0.5 * (target_b + gap - values[a])
            if isinstance(b, tuple):
                values[b] = values[b] + 0.5 * (values[a] - gap - values[b])
    pair_cols: dict[str, tuple[str, ...]] = {}
    for a, _, _, pair_on in edges:
        pair_cols[a[0]] = pair_on
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {}
    for node, value in values.items():
        table, metric, where = node
        keys = pair_cols.get(table, ("seed",))
        for s in range(n_seeds):
            row = {**dict(where), **{k: s for k in keys}, metric: value + noise * rng.standard_normal()}
            rows.setdefault(table, []).append(row)
    for check, reverse in checks:
        ok = check.value - 1.0 if check.op in ("<", "<=") else check.value + 1.0
        bad = check.value + 1.0 if check.op in ("<", "<=") else check.value - 1.0
        rows.setdefault(check.table, []).append({**dict(check.where), check.metric: bad if reverse else ok})
    out = {}
    for table, table_rows in rows.items():
        frame = pd.DataFrame(table_rows)
        # Rows of several metrics on the same arm and seed: merge them into one row each.
        keys = [c for c in frame.columns if c not in {m for _, m, _ in values} | {c.metric for c, _ in checks}]
        metric_cols = [c for c in frame.columns if c not in keys]
        frame = frame.groupby(keys, dropna=False, as_index=False)[metric_cols].first() if keys else frame
        out[table] = frame
    return out
