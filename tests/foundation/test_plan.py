"""``labkit plan``: every study's budget at every preset, the degenerate checks, the FLOP counter, the CLI."""

import pytest
import torch

from labkit.cli import main
from labkit.core.errors import ParameterError
from labkit.core.plan import GridPlan, TaskBudget, check_budgets, count_flops, measure
from labkit.runner import study_plan

STUDIES = ["dinov2_microct", "noisy_label_pretraining", "ssl_industrial", "sar_transfer", "farcluss"]


@pytest.fixture(scope="module", params=[(s, p) for s in STUDIES for p in ("smoke", "default", "paper")], ids=str)
def planned(request):
    study, preset = request.param
    return study, preset, study_plan(study, preset, {}, allow_degenerate=True)


def test_every_study_plans_with_positive_budgets(planned):
    study, preset, (plans, _warnings) = planned
    assert plans
    for plan in plans:
        assert plan.n_tasks > 0 and plan.steps > 0 and plan.flops > 0, plan.summary()
        for b in plan.budgets:
            assert b.steps > 0 and b.total_params > 0 and b.flops_per_step > 0, (study, preset, b)


def test_a_pretraining_batch_larger_than_the_unlabeled_set_is_refused_naming_both_parameters():
    # the paper preset's own batch (32 of 150 images) plans; the audit's batch of 256 on 150 images is refused
    assert study_plan("ssl_industrial", "paper", {})[0]
    with pytest.raises(ParameterError) as err:
        study_plan("ssl_industrial", "paper", {"pretrain_batch_size": 256})
    msg = str(err.value)
    assert "pretrain_batch_size = 256" in msg and "n_unlabeled = 150" in msg


def _budget(**kw):
    base = dict(
        name="t",
        n_tasks=1,
        data_items=100,
        input_size="8 px",
        batch=10,
        steps=100,
        epochs=10,
        steps_per_epoch=10,
        trainable_params=1,
        total_params=1,
        flops_per_step=1.0,
        params={"batch": "bs", "data_items": "n_items", "epochs": "n_epochs", "steps": "n_steps", "warmup": "wu"},
    )
    return GridPlan("s", "g", "1", [TaskBudget(**{**base, **kw})])


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(batch=200, requested_batch=200), ["bs = 200", "n_items = 100"]),
        (dict(batch=50, steps_per_epoch=2, steps=20, counts_epochs=True), ["2 optimiser step", "n_epochs"]),
        (dict(steps=5, warmup=10), ["5 optimiser steps", "warm-up of 10", "wu"]),
    ],
    ids=["batch>data", "few-steps-per-epoch", "shorter-than-warmup"],
)
def test_degenerate_budgets_are_refused(kw, words):
    with pytest.raises(ParameterError) as err:
        check_budgets([_budget(**kw)])
    assert all(w in str(err.value) for w in words)
    assert check_budgets([_budget(**kw)], allow_degenerate=True)
    assert check_budgets([_budget()]) == []


def test_flop_counter_on_a_linear_layer():
    layer = torch.nn.Linear(7, 5)
    x = torch.randn(3, 7)
    assert count_flops(layer, x, backward=False) == 2 * 7 * 5 * 3
    assert count_flops(layer, x.requires_grad_(), backward=True) == 3 * 2 * 7 * 5 * 3


def test_trainable_counts_the_parameters_that_receive_a_gradient():
    class SkipsAStage(torch.nn.Module):  # like a U-Net that stops its encoder before the last stage
        def __init__(self):
            super().__init__()
            self.used = torch.nn.Linear(4, 3)  # 15 parameters
            self.unreached = torch.nn.Linear(3, 100)  # 400 parameters the forward never reaches

        def forward(self, x):
            return self.used(x)

    flops, trainable, total = measure("skips-a-stage", SkipsAStage, [(1, 4)])
    assert (trainable, total) == (15, 415)
    # a frozen part receives no gradient either; without a backward, requires_grad decides
    _, trainable, _ = measure("skips-no-backward", SkipsAStage, [(1, 4)], backward=False)
    assert trainable == 415


def test_cli_exit_codes(capsys):
    assert main(["plan", "sar_transfer", "--preset", "smoke"]) == 0
    assert "sar_transfer/grid" in capsys.readouterr().out
    assert main(["plan", "ssl_industrial", "--preset", "paper", "-p", "pretrain_batch_size", "256"]) == 2
    assert "pretrain_batch_size" in capsys.readouterr().err
    assert main(["plan", "ssl_industrial", "--preset", "paper", "--allow-degenerate", "--markdown"]) == 0
    assert "| ssl_industrial |" in capsys.readouterr().out
    assert main(["plan", "sar_transfer", "-p", "epochs", "0"]) == 2
