"""The claim judge itself: the four-verdict rule, the seeds that would decide, preconditions and their
negative controls, one-sample comparisons, thin evidence."""

import numpy as np
import pandas as pd
import pytest

from labkit.core.claims import (
    HELD,
    INCONCLUSIVE,
    NOT_EVALUATED,
    NOT_HELD,
    Check,
    Claim,
    Compare,
    Precondition,
    judge,
    judge_all,
    seeds_to_decide,
    verdicts_table,
)
from labkit.core.stats import seeds_for_half_width, t_half_width


def _runs(diffs, base=0.5, a="a"):
    rows = []
    for seed, d in enumerate(diffs):
        rows += [{"arm": a, "seed": seed, "miou": base + d}, {"arm": "b", "seed": seed, "miou": base}]
    return pd.DataFrame(rows)


def _claim(effect=0.02, **kw):
    return Claim("c", "A beats B", [Compare("miou", a={"arm": "a"}, b={"arm": "b"}, effect=effect, **kw)])


def test_held_refuted_and_inconclusive():
    assert judge(_claim(), _runs([0.1, 0.12, 0.11]))["status"] == HELD
    # the interval lies wholly below the effect of interest: the data exclude an effect that matters
    refuted = judge(_claim(), _runs([-0.01, -0.012, -0.011]))
    assert refuted["status"] == NOT_HELD and "below the effect of interest 0.02" in refuted["reason"]
    # an interval above 0 but below the effect: it holds at margin 0 (held is judged first)
    assert judge(_claim(), _runs([0.005, 0.006, 0.007]))["status"] == HELD
    # every seed won, but the interval covers both 0 and the effect: inconclusive, not refuted
    verdict = judge(_claim(), _runs([0.3, 0.01, 0.01]))
    assert verdict["status"] == INCONCLUSIVE and verdict["comparisons"][0]["wins"] == 3
    assert verdict["seeds_to_decide"] >= 4 and "seeds would decide it" in verdict["reason"]
    # a margin the interval does not clear, an effect it does not exclude
    assert judge(_claim(margin=0.2, effect=0.3), _runs([0.1, 0.12, 0.11]))["status"] == NOT_HELD
    assert judge(_claim(margin=0.1, effect=0.2), _runs([0.05, 0.15, 0.11]))["status"] == INCONCLUSIVE


def test_a_refuted_part_outweighs_an_undecided_one():
    runs = pd.concat([_runs([0.3, 0.01, 0.01]), _runs([-0.1, -0.11, -0.12], a="c")]).drop_duplicates(["arm", "seed"])
    claim = Claim(
        "c",
        "s",
        [
            Compare("miou", a={"arm": "a"}, b={"arm": "b"}, effect=0.02, label="a vs b"),
            Compare("miou", a={"arm": "c"}, b={"arm": "b"}, effect=0.02, label="c vs b"),
        ],
    )
    verdict = judge(claim, runs)
    assert verdict["status"] == NOT_HELD and "1 of 2 parts refuted: c vs b" in verdict["reason"]
    assert "a vs b" not in verdict["reason"]


def test_seeds_to_decide_within_20_percent_on_a_simulated_spread():
    """The spread estimated from a pilot of 200 seeds gives an n at which the interval's half-width is the one
    that decides the part (median over simulated repeats within 20 % of it), and n within 20 % of the n at the
    true spread."""
    rng = np.random.default_rng(0)
    true_mean, true_sd, effect = 0.015, 0.03, 0.03
    pilot = true_mean + true_sd * rng.standard_normal(200)
    estimate = seeds_to_decide(float(pilot.mean()), float(pilot.std(ddof=1)), 3, 0.0, effect)
    n, needed = estimate["seeds_to_decide"], estimate["half_width_needed"]
    repeats = [t_half_width(float(np.std(true_sd * rng.standard_normal(n), ddof=1)), n) for _ in range(400)]
    assert abs(np.median(repeats) - needed) / needed < 0.2, (n, needed, np.median(repeats))
    truth = seeds_for_half_width(true_sd, needed)  # the n the true spread needs for the same half-width
    assert abs(n - truth) / truth < 0.2, (n, truth)
    # the judge reports it for an undecided claim on the first 5 seeds
    verdict = judge(_claim(effect=effect), _runs(true_mean + true_sd * np.array([1.0, -1.0, 0.5, -0.5, 0.0])))
    assert verdict["status"] == INCONCLUSIVE and verdict["seeds_to_decide"] > 5


def test_every_verdict_reports_its_minimum_detectable_effect():
    verdict = judge(_claim(), _runs([0.1, 0.12, 0.11]))
    mde = verdict["min_detectable_effect"]
    assert mde == pytest.approx(verdict["comparisons"][0]["min_detectable_effect"]) and mde > 0
    wider = judge(_claim(), _runs([0.1, 0.2, 0.0]))["min_detectable_effect"]
    assert wider > mde  # more spread, larger detectable effect


def test_an_effect_of_interest_is_required_and_beyond_the_margin():
    with pytest.raises(ValueError, match="claim 'c'.*no effect of interest"):
        Claim("c", "s", [Compare("miou", a={"arm": "a"}, b={"arm": "b"})])
    with pytest.raises(ValueError, match="claim 'c'.*not beyond the margin"):
        Claim("c", "s", [Compare("miou", a={"arm": "a"}, b={"arm": "b"}, margin=0.05, effect=0.05)])
    with pytest.raises(ValueError, match="claim 'c'.*not beyond the margin"):
        Claim("c", "s", [Compare("miou", a={"arm": "a"}, b={"arm": "b"}, effect=0.0)])
    # against a constant, the threshold itself is a valid effect of interest
    Claim("c", "s", [Compare("acc", a={"arm": "a"}, b=0.95, effect=0.0)])


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
        [
            Compare(
                "pct", a={"contrast": "prototype"}, b=10.0, greater=False, table="costs", pair_on=("round",), effect=0
            )
        ],
    )
    assert judge(claim, {"costs": costs})["status"] == HELD
    costs["pct"] += 6  # wholly above 10 %: refuted
    assert judge(claim, {"costs": costs})["status"] == NOT_HELD
    costs["pct"] = [8.0, 12.0, 9.0, 11.0, 10.0]  # straddles 10 %
    assert judge(claim, {"costs": costs})["status"] == INCONCLUSIVE


# ----------------------------------------------------------------------------- preconditions: negative controls


def _with(pre, tables):
    claim = Claim("c", "s", [Compare("miou", a={"arm": "a"}, b={"arm": "b"}, effect=0.02)], [pre])
    return judge(claim, {"runs": _runs([0.1, 0.12, 0.11]), **tables})


def test_trained_fails_on_a_learner_free_predictor_and_an_untrained_model():
    pre = Precondition.trained("final_loss", {"encoder": "mae"}, 0.9, learner_free="learner_free_loss")

    def table(loss):
        return {"pretraining": pd.DataFrame({"encoder": ["mae"], "final_loss": [loss], "learner_free_loss": [0.553]})}

    assert _with(pre, table(0.30))["status"] == HELD
    # the control: a loss equal to the learner-free predictor's (the MAE that learned the mean grey level)
    learner_free = _with(pre, table(0.551))
    assert learner_free["status"] == NOT_EVALUATED and "precondition 'trained' failed" in learner_free["reason"]
    assert "0.99" in learner_free["reason"]
    # the control: an untrained model, worse than the learner-free predictor
    assert _with(pre, table(1.2))["status"] == NOT_EVALUATED
    # a precomputed ratio works the same way
    ratio = Precondition.trained("loss_ratio", {"encoder": "mae"}, 0.5)
    assert _with(ratio, {"pretraining": pd.DataFrame({"encoder": ["mae"], "loss_ratio": [0.99]})})["status"] == (
        NOT_EVALUATED
    )


def _probe(pretrained, random):
    rows = [{"encoder": "mae", "seed": s, "probe": v} for s, v in enumerate(pretrained)]
    rows += [{"encoder": "random", "seed": s, "probe": v} for s, v in enumerate(random)]
    return {"probes": pd.DataFrame(rows)}


def test_features_learned_fails_when_pretrained_and_random_probes_score_the_same():
    pre = Precondition.features_learned("probe", {"encoder": "mae"}, {"encoder": "random"}, table="probes")
    assert _with(pre, _probe([0.7, 0.72, 0.71], [0.5, 0.52, 0.49]))["status"] == HELD
    same = _with(pre, _probe([0.581, 0.60, 0.57], [0.578, 0.59, 0.58]))
    assert same["status"] == NOT_EVALUATED and "precondition 'features learned' failed" in same["reason"]


def test_label_limited_fails_when_all_and_few_labels_score_the_same():
    rows = [{"arm": "sup", "k": k, "seed": s, "miou": 0.5 + 0.01 * s} for k in (4, 64) for s in range(3)]
    pre = Precondition.label_limited(
        "miou", {"arm": "sup", "k": 64}, {"arm": "sup", "k": 4}, margin=0.02, table="regime"
    )
    verdict = _with(pre, {"regime": pd.DataFrame(rows)})
    assert verdict["status"] == NOT_EVALUATED and "label-limited" in verdict["reason"]
    rows = [{**r, "miou": r["miou"] + (0.1 if r["k"] == 64 else 0)} for r in rows]
    assert _with(pre, {"regime": pd.DataFrame(rows)})["status"] == HELD


def test_plateau_fails_on_a_still_rising_curve():
    pre = Precondition.plateau("late_gain", {"arm": "a"}, 0.02)
    rising = np.linspace(0.2, 0.6, 10)
    from labkit.studies.noisy_label_pretraining.tasks import late_gain

    def table(curve):
        return {"curves": pd.DataFrame({"arm": ["a"], "late_gain": [late_gain(curve)]})}

    assert _with(pre, table(rising))["status"] == NOT_EVALUATED
    assert _with(pre, table(np.r_[rising, np.full(40, 0.6)]))["status"] == HELD


def test_above_the_floor_fails_when_every_arm_equals_the_floor_row():
    rows = [{"arm": arm, "seed": s, "ap": 0.044 + 0.001 * s} for arm in ("mae", "all good") for s in range(3)]
    pre = Precondition.above_floor("ap", {"arm": "mae"}, {"arm": "all good"}, margin=0.01, table="floor")
    at_floor = _with(pre, {"floor": pd.DataFrame(rows)})
    assert at_floor["status"] == NOT_EVALUATED and "above the floor (arm=mae)" in at_floor["reason"]
    rows = [{**r, "ap": r["ap"] + (0.2 if r["arm"] == "mae" else 0)} for r in rows]
    assert _with(pre, {"floor": pd.DataFrame(rows)})["status"] == HELD


def test_same_budget_fails_on_unequal_steps_and_names_both_budgets():
    budgets = pd.DataFrame(
        [
            {"arm": "lora", "steps": 30, "batch_size": 8, "schedule": "constant 1e-3"},
            {"arm": "frozen", "steps": 75, "batch_size": 8, "schedule": "constant 3e-3"},
        ]
    )
    pre = Precondition.same_budget({"arm": "lora"}, {"arm": "frozen"})
    verdict = _with(pre, {"budgets": budgets})
    assert verdict["status"] == NOT_EVALUATED
    assert (
        "steps 30" in verdict["reason"] and "steps 75" in verdict["reason"] and "differ in steps" in verdict["reason"]
    )
    budgets.loc[1, ["steps", "schedule"]] = [30, "constant 1e-3"]
    assert _with(pre, {"budgets": budgets})["status"] == HELD
    # a missing budget record fails too
    assert _with(pre, {"budgets": budgets.iloc[:1]})["status"] == NOT_EVALUATED


# ----------------------------------------------------------------------------- the rest of the judge


def test_several_parts_name_the_failing_ones():
    runs = pd.concat([_runs([0.1, 0.11, 0.12]), _runs([-0.1, 0.2, 0.0]).replace({"a": "c"})])
    runs = runs.drop_duplicates(["arm", "seed"])
    claim = Claim(
        "c",
        "s",
        [
            Compare("miou", a={"arm": "a"}, b={"arm": "b"}, label="a vs b", effect=0.02),
            Compare("miou", a={"arm": "c"}, b={"arm": "b"}, label="c vs b", effect=0.02),
        ],
    )
    verdict = judge(claim, runs)
    assert verdict["status"] == INCONCLUSIVE and "c vs b" in verdict["reason"] and "a vs b" not in verdict["reason"]


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
    undecided = judge(_claim(), _runs([0.3, 0.01, 0.01]))
    table = verdicts_table([verdict, judge(_claim(), _runs([0.1, 0.12, 0.11])), undecided])
    assert list(table.columns) == ["claim", "status", "statement", "preconditions", "reason", "seeds to decide"]
    assert table["seeds to decide"].tolist()[:2] == ["-", "-"]
    assert table["seeds to decide"].iloc[2] == f"about {undecided['seeds_to_decide']} seeds"


def test_check_needs_a_matching_row():
    check = Check("x", {"arm": "zz"}, "<", 1.0)
    assert check.evaluate({"runs": pd.DataFrame({"arm": ["a"], "x": [0.0]})})["holds"] is False
    assert np.isfinite(judge(_claim(), _runs([0.1, 0.12, 0.11]))["comparisons"][0]["ci95_low"])


def test_a_reason_against_a_constant_with_no_spread_shows_no_zero_width_interval_and_names_its_unit():
    # an all-labels tail IoU of 0 in every seed against a floor of 0.05: every difference is -0.05
    regime = pd.DataFrame([{"arm": "full", "seed": s, "miou_tail": 0.0} for s in range(5)])
    pre = Precondition("tail resolvable", Compare("miou_tail", a={"arm": "full"}, b=0.05, table="regime"))
    verdict = _with(pre, {"regime": regime})
    assert verdict["status"] == NOT_EVALUATED
    assert "-0.05 in each of 5 seeds (no spread)" in verdict["reason"] and "CI [-0.05, -0.05]" not in verdict["reason"]
    # a cost comparison pairs measuring rounds, and says so
    rounds = pd.DataFrame(
        [
            {"arm": arm, "round": r, "ms": base + 0.1 * r * (arm == "a")}
            for r in range(3)
            for arm, base in (("a", 5), ("b", 1))
        ]
    )
    cost = Claim(
        "cost", "a costs more", [Compare("ms", a={"arm": "a"}, b={"arm": "b"}, pair_on=("round",), effect=1.0)]
    )
    assert "3/3 measuring rounds" in judge(cost, {"runs": rounds})["reason"]
