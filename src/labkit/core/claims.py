"""The kit's one claim judge: every study's claims are declared as data and judged here by one rule.

A claim is "arm A vs arm B on metric M under filter F, paired over seeds", possibly in several parts,
with the **preconditions** that make the test meaningful (the baseline is label-limited, the stand-in
trained, the resolution allows the effect, both arms plateaued). Claims are declared before any
result exists, so a study's claims can be checked on synthetic tables (``tests/test_claims_conformance.py``).

The rule, the same everywhere (:data:`RULE`). Every comparison of a claim states its ``margin`` and its
**effect of interest** ``effect``: the smallest difference that would matter (from the paper's reported
effect where it gives one, else a stated practical size; ``effect_source`` says which).

- a part **holds** when the paired 95 % t-interval of ``A - B`` over the shared pairing keys (seeds) lies
  past its margin on the claimed side;
- a part is **refuted** when the interval lies wholly below ``effect`` (the data exclude an effect as
  large as the one that matters); otherwise it is **undecided**, and the verdict says about how many seeds
  would decide it at the observed spread (:func:`seeds_to_decide`);
- a claim is *held* when every part holds, *did not hold* when a part is refuted, *inconclusive*
  otherwise; it is *not evaluated* when a precondition failed, fewer than :data:`MIN_SEEDS` seeds are
  shared, or weights or data are missing (the reason says what to provide);
- every verdict reports its minimum detectable effect at its n (:func:`minimum_detectable_effect`).

Example::

    from labkit.core.claims import Claim, Compare, Precondition, judge

    few = {"arm": "supervised", "fraction": 1 / 16}
    claim = Claim(
        id="beats_supervised", statement="FARCLUSS beats supervised-only at 1/16 labels",
        compare=[Compare("miou", a={"arm": "farcluss", "fraction": 1 / 16}, b=few, effect=0.03,
                         effect_source="the paper's gain over UniMatch at 1/16 (+3.0 mIoU)")],
        preconditions=[Precondition.label_limited("miou", full={"arm": "supervised", "fraction": 1.0},
                                                  few=few, margin=0.02)])
    verdict = judge(claim, runs)   # runs: a tidy DataFrame with columns arm, fraction, seed, miou
    verdict["status"]              # 'held', 'did not hold', 'inconclusive' or 'not evaluated'
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.stats import detectable_shift, paired_difference, seeds_for_half_width

HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUATED = "held", "did not hold", "inconclusive", "not evaluated"
STATUSES = (HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUATED)
MIN_SEEDS = 3
MAX_SEEDS_TO_DECIDE = 10_000  # "more than this" is reported as such
POWER = 0.8  # the minimum detectable effect is the true difference the interval clears the margin at with this power
RULE = (
    "a part holds when the paired 95 % t-interval of the difference over shared seeds lies past its margin on "
    "the claimed side, and is refuted when the interval lies wholly below its effect of interest; a claim holds "
    "when every part holds, did not hold when a part is refuted, is inconclusive otherwise; at least "
    f"{MIN_SEEDS} shared seeds; a failed precondition leaves it not evaluated"
)
BUDGET_COLUMNS = ("steps", "batch_size", "schedule")  # what "the same budget" compares
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
    ``effect``: the effect of interest on the claimed side (the smallest difference that would matter; an
    interval wholly below it refutes the part); ``effect_source``: where that number comes from. A claim's
    own comparisons must state it (:class:`Claim` checks); a precondition's need not.
    """

    metric: str
    a: Mapping[str, Any]
    b: Mapping[str, Any] | float = 0.0
    greater: bool = True
    margin: float = 0.0
    label: str = ""
    table: str = "runs"
    pair_on: tuple[str, ...] = ("seed",)
    effect: float | None = None
    effect_source: str = ""

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
        """Paired difference (A - B) with its interval; on the claimed side, whether it holds (past the
        margin) or is refuted (below the effect of interest), and the seeds that would decide it."""
        a, b = self.values(tables)
        diff = (
            paired_difference(a, b)
            if len(a)
            else {"mean_diff": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "wins": 0, "n": 0}
        )
        n = int(diff["n"])
        sign = 1.0 if self.greater else -1.0
        # the difference and its interval on the claimed side (larger is more in the claim's favour)
        mean = sign * diff["mean_diff"]
        low, high = sorted((sign * diff["ci95_low"], sign * diff["ci95_high"]))
        holds = bool(n >= 2 and low > self.margin)
        effect = self.effect
        refuted = bool(n >= 2 and effect is not None and not holds and high < effect)
        wins = int((sign * (a - b) > self.margin).sum())
        sd = float(np.std(sign * (a - b), ddof=1)) if n >= 2 else math.nan
        out = {
            "comparison": self.describe(),
            "metric": self.metric,
            "direction": ">" if self.greater else "<",
            "mean_diff": diff["mean_diff"],
            "ci95_low": diff["ci95_low"],
            "ci95_high": diff["ci95_high"],
            "wins": wins,
            "n": n,
            # what a pair is (seeds; measuring rounds or repeats for a cost claim), so a reason names it
            "unit": "+".join(self.pair_on),
            "margin": float(self.margin),
            "effect": None if effect is None else float(effect),
            "effect_source": self.effect_source,
            "sd": sd,
            "holds": holds,
            "refuted": refuted,
            "outcome": "holds" if holds else "refuted" if refuted else "undecided",
            # the smallest true difference (claimed side) this many seeds would show past the margin
            "min_detectable_effect": float(self.margin + detectable_shift(sd, n, POWER)) if n >= 2 else math.nan,
        }
        if not holds and not refuted and effect is not None:
            out.update(seeds_to_decide(mean, sd, n, self.margin, effect))
        return out


def seeds_to_decide(mean: float, sd: float, n: int, margin: float, effect: float) -> dict[str, Any]:
    """For an undecided part: the interval half-width that would decide it at the observed mean (past the
    margin, or wholly below the effect of interest, whichever is nearer) and about how many seeds give that
    half-width at the observed spread (``None``: more than :data:`MAX_SEEDS_TO_DECIDE`, or a mean that sits
    exactly on a boundary)."""
    if not (np.isfinite(mean) and np.isfinite(sd)):
        return {"half_width_needed": math.nan, "seeds_to_decide": None}
    needed = max(mean - margin, effect - mean)
    seeds = seeds_for_half_width(sd, needed, start=max(n, MIN_SEEDS), limit=MAX_SEEDS_TO_DECIDE)
    return {"half_width_needed": float(needed), "seeds_to_decide": seeds}


@dataclasses.dataclass(frozen=True)
class Check:
    """A threshold on recorded values, for preconditions that are not paired differences.

    Passes when ``metric`` of every row matching ``where`` satisfies ``op value`` (e.g. the stand-in's final
    pretraining loss ratio ``< 0.5``). With ``ratio_to``, the value checked is ``metric / ratio_to`` of each
    row (a loss over a learner-free predictor's loss on the same data). At least one row must match.
    """

    metric: str
    where: Mapping[str, Any]
    op: str
    value: float
    table: str = "runs"
    label: str = ""
    ratio_to: str | None = None

    def describe(self) -> str:
        if self.label:
            return self.label
        metric = f"{self.metric} / {self.ratio_to}" if self.ratio_to else self.metric
        return f"{metric} [{_describe_filter(self.where)}] {self.op} {_fmt(self.value)}"

    def evaluate(self, tables: Tables) -> dict[str, Any]:
        if self.op not in _OPS:
            raise ValueError(f"check '{self.describe()}': op must be one of {list(_OPS)}")
        if self.table not in tables:
            raise KeyError(f"check '{self.describe()}' reads table '{self.table}', which was not given")
        rows = _select(tables[self.table], self.where, self.table)
        values = rows[self.metric].to_numpy(dtype=float) if len(rows) else np.array([])
        if self.ratio_to and len(rows):
            with np.errstate(divide="ignore", invalid="ignore"):
                values = values / rows[self.ratio_to].to_numpy(dtype=float)
        passed = bool(len(values) and np.isfinite(values).all() and _OPS[self.op](values, self.value).all())
        return {
            "check": self.describe(),
            "values": [round(float(v), 6) for v in values],
            "op": self.op,
            "threshold": float(self.value),
            "holds": passed,
        }


@dataclasses.dataclass(frozen=True)
class SameValues:
    """Two sets of rows agree on some columns: the budgets (optimiser steps, batch size, schedule, ...) of two
    compared arms. Passes when both match at least one row and every named column holds one value shared by
    both; the evidence gives both budgets."""

    a: Mapping[str, Any]
    b: Mapping[str, Any]
    columns: tuple[str, ...]
    table: str = "budgets"
    label: str = ""

    def describe(self) -> str:
        return self.label or f"[{_describe_filter(self.a)}] and [{_describe_filter(self.b)}] share {list(self.columns)}"

    def _budget(self, table: pd.DataFrame, where: Mapping[str, Any]) -> dict[str, Any]:
        rows = _select(table, where, self.table)
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise KeyError(f"table '{self.table}' has no budget column(s) {missing}")
        return {c: sorted({_fmt(v) for v in rows[c]}) for c in self.columns} if len(rows) else {}

    def evaluate(self, tables: Tables) -> dict[str, Any]:
        if self.table not in tables:
            raise KeyError(f"check '{self.describe()}' reads table '{self.table}', which was not given")
        a, b = self._budget(tables[self.table], self.a), self._budget(tables[self.table], self.b)
        differs = [c for c in self.columns if not a or not b or a[c] != b[c] or len(a[c]) != 1]
        fmt = lambda x: ", ".join(f"{c} {'/'.join(v)}" for c, v in x.items()) or "no record"  # noqa: E731
        return {
            "check": self.describe(),
            "a": fmt(a),
            "b": fmt(b),
            "differs": differs,
            "holds": not differs,
        }


@dataclasses.dataclass(frozen=True)
class Precondition:
    """What makes a claim testable. Passes when its comparison holds (or its check passes)."""

    name: str
    test: Compare | Check | SameValues
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
        learner_free: str | None = None,
    ) -> Precondition:
        """The pretraining learned: its final held-out loss is below ``max_ratio`` x the loss of the **best
        learner-free predictor** for its objective (for MAE, each hidden patch filled with the mean of the
        image's visible pixels; for a contrastive loss, the untrained network on the same batches; for
        supervised pretraining, the class prior). ``ratio_metric`` is that ratio, or with ``learner_free``
        the final loss, divided here by the column ``learner_free`` (the learner-free loss)."""
        return cls(
            name,
            Check(ratio_metric, where, "<", max_ratio, table=table, ratio_to=learner_free),
            why=why or f"final held-out loss below {max_ratio:g} x the best learner-free predictor's loss",
        )

    @classmethod
    def features_learned(
        cls,
        metric: str,
        pretrained: Mapping,
        random: Mapping,
        margin: float = 0.0,
        table: str = "runs",
        pair_on: tuple[str, ...] = ("seed",),
        name: str = "features learned",
    ) -> Precondition:
        """The pretrained encoder's frozen probe beats the same architecture's frozen probe at random init."""
        return cls(
            name,
            Compare(metric, a=pretrained, b=random, margin=margin, table=table, pair_on=pair_on),
            why="the pretrained encoder's frozen probe beats the same network's at random init "
            f"(paired interval above {margin:g})",
        )

    @classmethod
    def above_floor(
        cls,
        metric: str,
        arm: Mapping,
        floor: Mapping | float,
        margin: float,
        table: str = "runs",
        pair_on: tuple[str, ...] = ("seed",),
        label: str = "",
    ) -> Precondition:
        """An arm the claim compares scores above the study's floor row (majority class, "all good", the class
        prior) by ``margin``: arms that all sit at the floor cannot show a difference between them."""
        what = label or _describe_filter(arm)
        return cls(
            f"above the floor ({what})",
            Compare(metric, a=arm, b=floor, margin=margin, table=table, pair_on=pair_on),
            why=f"{what} scores above the floor row by more than {margin:g} {metric}",
        )

    @classmethod
    def same_budget(
        cls,
        a: Mapping,
        b: Mapping,
        columns: Sequence[str] = BUDGET_COLUMNS,
        table: str = "budgets",
        label: str = "",
    ) -> Precondition:
        """Two compared trained arms had the same budget (optimiser steps, batch size, schedule) unless the
        claim is about budget; the evidence names both budgets."""
        what = label or f"[{_describe_filter(a)}] vs [{_describe_filter(b)}]"
        return cls(
            "same budget",
            SameValues(a, b, tuple(columns), table=table, label=f"budgets of {what}"),
            why=f"compared arms train with equal {', '.join(columns)}",
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
        for c in self.compare:
            if c.effect is None or not math.isfinite(c.effect):
                raise ValueError(
                    f"claim '{self.id}', part '{c.describe()}': no effect of interest; state `effect` (the smallest "
                    "difference that would matter, from the paper where it reports one) and `effect_source`"
                )
            # against another arm the claim is one of improvement: an effect at the margin would refute every
            # interval that does not hold. Against a constant (a threshold), effect = margin is the threshold.
            if isinstance(c.b, Mapping) and not c.effect > c.margin:
                raise ValueError(
                    f"claim '{self.id}', part '{c.describe()}': effect of interest {c.effect:g} is not beyond the "
                    f"margin {c.margin:g}"
                )
            if not isinstance(c.b, Mapping) and c.effect < c.margin:
                raise ValueError(
                    f"claim '{self.id}', part '{c.describe()}': effect of interest {c.effect:g} is below the "
                    f"margin {c.margin:g}"
                )


def budget_record(steps: int, batch_size: int, lr: float, schedule: str, trainable_params: int) -> dict[str, Any]:
    """What a trained arm's grid record carries as ``budget`` (the "same budget" precondition reads it):
    optimiser steps, batch size, peak learning rate, the schedule in words (e.g. "cosine over 150 steps,
    warm-up 10", which should name the steps it spans) and the parameters that receive gradients."""
    if int(steps) < 0 or int(batch_size) < 1:
        raise ValueError(f"a budget needs steps >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    return {
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "schedule": str(schedule),
        "trainable_params": int(trainable_params),
    }


BUDGET_KEYS = ("steps", "batch_size", "lr", "schedule", "trainable_params")


def missing_budget(record: Mapping[str, Any]) -> list[str]:
    """The budget keys a trained arm's record lacks (empty when it carries a full ``budget``)."""
    budget = record.get("budget")
    if not isinstance(budget, Mapping):
        return list(BUDGET_KEYS)
    return [k for k in BUDGET_KEYS if k not in budget]


_UNIT_NAMES = {"seed": "seeds", "round": "measuring rounds", "repeat": "repeats"}


def _unit_text(unit: str) -> str:
    return _UNIT_NAMES.get(unit, f"{unit} values")


def _brief(evidence: Mapping[str, Any]) -> str:
    if "mean_diff" in evidence:
        units = _unit_text(evidence.get("unit", "seed"))
        low, high = evidence["ci95_low"], evidence["ci95_high"]
        if evidence["n"] >= 2 and low == high:
            # every pair gives the same difference (e.g. an IoU of 0 in every seed against a floor): an interval
            # of zero width would read as certainty the spread does not give
            return f"{evidence['mean_diff']:+.4g} in each of {evidence['n']} {units} (no spread)"
        return f"{evidence['mean_diff']:+.4g}, 95% CI [{low:+.4g}, {high:+.4g}], {evidence['wins']}/{evidence['n']} {units}"
    if "differs" in evidence:
        return f"{evidence['a']} vs {evidence['b']}; differ in {', '.join(evidence['differs'])}"
    return f"values {evidence.get('values')} vs {evidence.get('op')} {evidence.get('threshold')}"


def _seeds_text(seeds: int | None) -> str:
    return f"about {seeds} seeds" if seeds is not None else f"more than {MAX_SEEDS_TO_DECIDE} seeds"


def _undecided_text(c: Mapping[str, Any]) -> str:
    return (
        f"{c['comparison']}: {_brief(c)}; neither past the margin {c['margin']:g} nor below the effect of interest "
        f"{c['effect']:g}: {_seeds_text(c.get('seeds_to_decide'))} would decide it"
    )


def judge(claim: Claim, tables: pd.DataFrame | Tables) -> dict[str, Any]:
    """The verdict on one claim: ``status``, ``reason``, ``rule``, ``comparisons``, ``preconditions``,
    ``min_detectable_effect`` (the largest over its parts, at its n) and, when inconclusive,
    ``seeds_to_decide`` (about how many seeds would decide every undecided part).

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
    mde = [c["min_detectable_effect"] for c in comparisons if math.isfinite(c["min_detectable_effect"])]
    out = {
        **base,
        "comparisons": comparisons,
        "preconditions": preconditions,
        "min_detectable_effect": max(mde) if mde else math.nan,
    }
    # Interval preconditions need the seeds too; a thin one cannot pass or fail.
    n_values = [c["n"] for c in comparisons] + [p["evidence"]["n"] for p in preconditions if "n" in p["evidence"]]
    if min(n_values) < claim.min_seeds:
        return {**out, "status": NOT_EVALUATED, "reason": f"n seeds {min(n_values)} < {claim.min_seeds}"}
    failed = [p for p in preconditions if not p["passed"]]
    if failed:
        # what the precondition asks, and so what it would take, said after its numbers
        reason = "; ".join(
            f"precondition '{p['name']}' failed ({_brief(p['evidence'])})" + (f": {p['why']}" if p.get("why") else "")
            for p in failed
        )
        return {**out, "status": NOT_EVALUATED, "reason": reason}
    refuted = [c for c in comparisons if c["refuted"]]
    undecided = [c for c in comparisons if not c["holds"] and not c["refuted"]]
    if not refuted and not undecided:
        parts = "; ".join(f"{c['comparison']}: {_brief(c)}" for c in comparisons)
        return {**out, "status": HELD, "reason": parts}
    several = len(comparisons) > 1
    if refuted:
        parts = "; ".join(
            f"{c['comparison']}: {_brief(c)}, below the effect of interest {c['effect']:g}" for c in refuted
        )
        prefix = f"{len(refuted)} of {len(comparisons)} parts refuted" if several else "refuted"
        return {**out, "status": NOT_HELD, "reason": f"{prefix}: {parts}"}
    needed = [c.get("seeds_to_decide") for c in undecided]
    seeds = None if any(n is None for n in needed) else max(needed)
    prefix = f"{len(undecided)} of {len(comparisons)} parts undecided" if several else "undecided"
    reason = f"{prefix}: " + "; ".join(_undecided_text(c) for c in undecided)
    return {**out, "status": INCONCLUSIVE, "reason": reason, "seeds_to_decide": seeds}


def judge_all(claims: Sequence[Claim], tables: pd.DataFrame | Tables) -> list[dict[str, Any]]:
    """Verdicts of several claims, in order; duplicate ids are an error (a configuration counts once)."""
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"claim ids declared twice: {dup}")
    return [judge(c, tables) for c in claims]


def verdicts_table(verdicts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per claim: id, status, statement, preconditions (passed or failed), the reason and, for an
    inconclusive claim, about how many seeds would decide it."""
    rows = []
    for v in verdicts:
        pre = "; ".join(f"{p['name']} {'passed' if p['passed'] else 'FAILED'}" for p in v.get("preconditions", []))
        seeds = _seeds_text(v.get("seeds_to_decide")) if v["status"] == INCONCLUSIVE else "-"
        rows.append(
            {
                "claim": v["id"],
                "status": v["status"],
                "statement": v["statement"],
                "preconditions": pre or "-",
                "reason": v["reason"],
                "seeds to decide": seeds,
            }
        )
    return pd.DataFrame(rows, columns=["claim", "status", "statement", "preconditions", "reason", "seeds to decide"])


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
    straddle: bool = False,
) -> dict[str, pd.DataFrame]:
    """Tables on which the claim's comparisons all hold, its preconditions pass except number
    ``break_precondition``, which fails. ``flip``: every comparison lies well below its effect of interest
    (refuted); ``straddle``: every comparison's mean sits between its margin and its effect, with a spread
    wide enough that the interval covers both (undecided)."""
    edges = []  # (a_node, b_node or constant, signed gap, pair_on, spread of the difference)
    checks = []
    tests = [(c, flip, straddle) for c in claim.compare]
    tests += [(p.test, i == break_precondition, False) for i, p in enumerate(claim.preconditions)]
    # a straddling part sits halfway between margin and effect, with a spread about four times that distance
    widest = max(
        (4.0 * max((c.effect if c.effect is not None else c.margin + 1.0) - c.margin, 1e-6) for c in claim.compare),
        default=0.0,
    )
    for test, reverse, wide in tests:
        if isinstance(test, (Check, SameValues)):
            checks.append((test, reverse))
            continue
        effect = test.effect if test.effect is not None else test.margin + 1.0
        # a decided comparison is far from its bounds, even beside a straddling part's spread
        size = abs(test.margin) + 1.0 + (10.0 * widest if straddle else 0.0)
        spread = 0.0
        if wide:
            size = 0.5 * (test.margin + effect)
            spread = 4.0 * max(effect - test.margin, 1e-6)
        if reverse:
            size = -(abs(test.margin) + 1.0 + abs(effect))
        gap = size if test.greater else -size
        b = test.b if not isinstance(test.b, Mapping) else _node(test.table, test.metric, test.b)
        edges.append((_node(test.table, test.metric, test.a), b, gap, test.pair_on, spread))
    values: dict[tuple, float] = {}
    for a, b, *_ in edges:
        values.setdefault(a, 0.0)
        if isinstance(b, tuple):
            values.setdefault(b, 0.0)
    # Relax the constraints value(a) - value(b) ~ gap; constants pin their node.
    for _ in range(50):
        for a, b, gap, _, _ in edges:
            target_b = float(b) if not isinstance(b, tuple) else values[b]
            values[a] = target_b + gap if not isinstance(b, tuple) else values[a] + 0.5 * (target_b + gap - values[a])
            if isinstance(b, tuple):
                values[b] = values[b] + 0.5 * (values[a] - gap - values[b])
    pair_cols: dict[str, tuple[str, ...]] = {}
    spreads: dict[tuple, float] = {}
    for a, _, _, pair_on, spread in edges:
        pair_cols[a[0]] = pair_on
        spreads[a] = max(spreads.get(a, 0.0), spread)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {}
    for node, value in values.items():
        table, metric, where = node
        keys = pair_cols.get(table, ("seed",))
        wide = rng.standard_normal(n_seeds)
        wide = spreads.get(node, 0.0) * (wide - wide.mean())  # centred: the mean stays where it was put
        for s in range(n_seeds):
            row = {**dict(where), **{k: s for k in keys}, metric: value + wide[s] + noise * rng.standard_normal()}
            rows.setdefault(table, []).append(row)
    for check, reverse in checks:
        if isinstance(check, SameValues):
            for side, where in (("a", check.a), ("b", check.b)):
                budget = {c: (2 if reverse and side == "b" else 1) for c in check.columns}
                rows.setdefault(check.table, []).append({**dict(where), **budget})
            continue
        ok = check.value - 1.0 if check.op in ("<", "<=") else check.value + 1.0
        bad = check.value + 1.0 if check.op in ("<", "<=") else check.value - 1.0
        if check.ratio_to:  # the value is a ratio to another column: scale both around it
            ok, bad = (
                check.value * (0.5 if check.op in ("<", "<=") else 2.0),
                check.value * (2.0 if check.op in ("<", "<=") else 0.5),
            )
        row = {**dict(check.where), check.metric: bad if reverse else ok}
        if check.ratio_to:
            row[check.ratio_to] = 1.0
        rows.setdefault(check.table, []).append(row)
    metric_names = {m for _, m, _ in values} | {c.metric for c, _ in checks if isinstance(c, Check)}
    metric_names |= {c.ratio_to for c, _ in checks if isinstance(c, Check) and c.ratio_to}
    metric_names |= {col for c, _ in checks if isinstance(c, SameValues) for col in c.columns}
    out = {}
    for table, table_rows in rows.items():
        frame = pd.DataFrame(table_rows)
        # Rows of several metrics on the same arm and seed: merge them into one row each.
        keys = [c for c in frame.columns if c not in metric_names]
        metric_cols = [c for c in frame.columns if c not in keys]
        frame = frame.groupby(keys, dropna=False, as_index=False)[metric_cols].first() if keys else frame
        out[table] = frame
    return out
