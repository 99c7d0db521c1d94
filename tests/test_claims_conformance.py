"""The claim contract, checked for every study on synthetic seed tables (scikit-learn's
``parametrize_with_checks`` habit): each study declares its claims with
``labkit.studies.<study>.declare_claims(cfg)`` (no results needed; every arm assumed available), and the
kit's one judge must then give

- *held* on a table where every comparison holds and every precondition passes,
- *did not hold* when the evidence is flipped (every interval wholly below its effect of interest),
- *inconclusive*, with the seeds that would decide it, when every interval straddles margin and effect,
- *not evaluated: n seeds < 3* with two seeds,
- *not evaluated* naming the precondition when any one precondition fails,

and every verdict states its rule.
"""

import importlib

import pytest

from labkit.core.claims import HELD, INCONCLUSIVE, NOT_EVALUATED, NOT_HELD, RULE, Claim, judge, synthetic_tables
from labkit.core.params import list_specs

STUDIES = [s.name for s in list_specs()]


def _claims(study: str) -> list[Claim]:
    module = importlib.import_module(f"labkit.studies.{study}")
    assert hasattr(module, "declare_claims"), f"labkit.studies.{study} must declare its claims for the judge"
    cfg = list_specs()[STUDIES.index(study)].resolve("default")
    claims = module.declare_claims(cfg)
    assert claims, f"{study} declares no claims"
    assert all(isinstance(c, Claim) for c in claims)
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids)), f"{study}: a claim id is declared twice"
    return claims


@pytest.mark.parametrize("study", STUDIES)
def test_claims_follow_the_one_rule(study):
    for claim in _claims(study):
        assert claim.unavailable is None, f"{study}/{claim.id}: declare_claims(cfg) must assume every arm available"
        held = judge(claim, synthetic_tables(claim, n_seeds=5))
        assert held["status"] == HELD, f"{study}/{claim.id}: {held['reason']}"
        assert held["rule"] == RULE
        flipped = judge(claim, synthetic_tables(claim, n_seeds=5, flip=True))
        assert flipped["status"] == NOT_HELD, f"{study}/{claim.id} flipped: {flipped['reason']}"
        straddling = judge(claim, synthetic_tables(claim, n_seeds=5, straddle=True))
        assert straddling["status"] == INCONCLUSIVE, f"{study}/{claim.id} straddling: {straddling['reason']}"
        assert "seeds would decide it" in straddling["reason"] and straddling["seeds_to_decide"] > 5
        for comp in claim.compare:
            assert comp.effect_source, (
                f"{study}/{claim.id}: part '{comp.describe()}' does not say where its effect comes from"
            )
        thin = judge(claim, synthetic_tables(claim, n_seeds=2))
        assert thin["status"] == NOT_EVALUATED and "n seeds 2 < 3" in thin["reason"], f"{study}/{claim.id}"
        for i, pre in enumerate(claim.preconditions):
            broken = judge(claim, synthetic_tables(claim, n_seeds=5, break_precondition=i))
            assert broken["status"] == NOT_EVALUATED, f"{study}/{claim.id} with '{pre.name}' failing"
            assert f"precondition '{pre.name}' failed" in broken["reason"]
        for verdict in (held, flipped):
            for comp in verdict["comparisons"]:
                assert {"mean_diff", "ci95_low", "ci95_high", "wins", "n", "margin"} <= set(comp)
            for pre in verdict["preconditions"]:
                assert {"name", "passed", "evidence"} <= set(pre)


@pytest.mark.parametrize("study", STUDIES)
def test_claims_that_cannot_run_say_why(study):
    module = importlib.import_module(f"labkit.studies.{study}")
    for claim in _claims(study):
        blocked = Claim(
            claim.id,
            claim.statement,
            claim.compare,
            claim.preconditions,
            unavailable="weights unavailable: put them in LABKIT_WEIGHTS_DIR",
        )
        verdict = judge(blocked, {})
        assert verdict["status"] == NOT_EVALUATED and "LABKIT_WEIGHTS_DIR" in verdict["reason"]
    assert module  # the module imported cleanly
