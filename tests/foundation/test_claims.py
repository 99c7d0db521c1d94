"""The claim judge itself: the rule, preconditions, one-sample comparisons, thin evidence."""

import numpy as np
import pandas as pd
import pytest

from labkit.core.claims import (
    HELD,
    NOT_EVALUATED,
    NOT_HELD,
    Check,
    Claim,
    Compare,
    Precondition,
    judge,
    judge_all,
    verdicts_table,
)


def _runs(diffs, base=0.5):
    rows = []
    for seed, d in enumerate(diffs):
        rows += [{"arm": "a", "seed": seed, "miou": base + d}, {"arm": "b", "seed": seed, "miou": base}]
    return pd.DataFrame(rows)


def _claim(**kw):
    return Claim("c", "A beats B", [Compare("miou", a={"arm": "a"}, b={"arm": "b"}, **kw)])


def test_held_only_when_the_interval_clears_the_margin():
    assert judge(_claim(), _runs([0.1, 0.12, 0.11]))["status"] == HELD
    assert judge(_claim(margin=0.2), _runs([0.1, 0.12, 0.11]))["status"] == NOT_HELD
    # positive mean, every seed won, but the interval crosses zero: not shown
    verdict = judge(_claim(), _runs([0.3, 0.01, 0.01]))
    assert verdict["status"] == NOT_HELD and verdict["comparisons"][0]["wins"] == 3


def test_fewer_than_three_shared_seeds_is_not_evaluated():
    runs = _runs([0.1, 0.1, 0.1])
    runs = runs[~((runs.arm == "b") & (runs.seed == 2))]
    verdict = judge(_claim(), runs)
    assert verdict["status"] == NOT_EVALUATED and verdict["reason"] == "n seeds 2 < 3"


def test_less_direction_and_one_sample_constant():
    costs = pd.DataFrame({"round": range(5), "pct": [4.0, 5.0, 6.0, 5.5, 4.5], "contrast": "prototype"})
    claim = Claim(
        "cheap",
        "under 10 %",
        [Compare("pct", a={"contrast": "prototype"}, b=10.0, greater=False, table="costs", pair_on=("round",))],
    )
    assert judge(claim, {"costs": costs})["status"] == HELD
    costs["pct"] += 6
    assert judge(claim, {"costs": costs})["status"] == NOT_HELD


def test_failed_precondition_is_not_evaluated_with_its_numbers():
    runs = _runs([0.1, 0.12, 0.11])
    pre = pd.DataFrame({"encoder": ["mae"], "loss_ratio": [0.99]})
    claim = Claim(
        "c",
        "s",
        [Compare("miou", a={"arm": "a"}, b={"arm": "b"})],
        [Precondition.trained("loss_ratio", {"encoder": "mae"}, 0.5)],
    )
    verdict = judge(claim, {"runs": runs, "pretraining": pre})
    assert verdict["status"] == NOT_EVALUATED
    assert "precondition 'trained' failed" in verdict["reason"] and "0.99" in verdict["reason"]
    pre["loss_ratio"] = 0.3
    assert judge(claim, {"runs": runs, "pretraining": pre})["status"] == HELD


def test_several_parts_name_the_failing_ones():
    runs = pd.concat([_runs([0.1, 0.11, 0.12]), _runs([-0.1, 0.2, 0.0]).replace({"a": "c"})])
    runs = runs.drop_duplicates(["arm", "seed"])
    claim = Claim(
        "c",
        "s",
        [
            Compare("miou", a={"arm": "a"}, b={"arm": "b"}, label="a vs b"),
            Compare("miou", a={"arm": "c"}, b={"arm": "b"}, label="c vs b"),
        ],
    )
    verdict = judge(claim, runs)
    assert verdict["status"] == NOT_HELD and "c vs b" in verdict["reason"] and "a vs b" not in verdict["reason"]


def test_duplicate_rows_for_a_seed_are_an_error():
    runs = pd.concat([_runs([0.1, 0.1, 0.1])] * 2)
    with pytest.raises(ValueError, match="one row per seed"):
        judge(_claim(), runs)


def test_duplicate_claim_ids_and_unavailable_claims():
    with pytest.raises(ValueError, match="declared twice"):
        judge_all([_claim(), _claim()], _runs([0.1] * 3))
    blocked = Claim("c", "s", [], unavailable="weights unavailable")
    verdict = judge(blocked, {})
    assert verdict["status"] == NOT_EVALUATED and verdict["reason"] == "weights unavailable"
    table = verdicts_table([verdict, judge(_claim(), _runs([0.1, 0.12, 0.11]))])
    assert list(table.columns) == ["claim", "status", "statement", "preconditions", "reason"]


def test_check_needs_a_matching_row():
    check = Check("x", {"arm": "zz"}, "<", 1.0)
    assert check.evaluate({"runs": pd.DataFrame({"arm": ["a"], "x": [0.0]})})["holds"] is False
    assert np.isfinite(judge(_claim(), _runs([0.1, 0.12, 0.11]))["comparisons"][0]["ci95_low"])
