"""Pretraining budgeted in optimiser steps at every preset; the paper preset's batches fit its data."""

import pytest

import labkit
from labkit.core.errors import ParameterError
from labkit.studies import ssl_industrial as study
from labkit.studies.ssl_industrial import experiment, tasks
from labkit.studies.ssl_industrial.plan import plan

from .fixtures import write_per_class_tree


def _cfg(preset="smoke", **over):
    return labkit.configure("ssl_industrial", preset, over)


def test_epochs_follow_from_the_steps_and_whole_epochs_run_at_least_the_steps():
    assert tasks.pretraining_epochs(96, 384, 32) == 8  # 12 steps per epoch
    assert tasks.pretraining_epochs(100, 384, 32) == 9
    assert tasks.pretraining_epochs(0, 384, 32) == 0
    assert tasks.pretraining_epochs(20_000, 150, 32) == 5_000  # paper: 4 steps per epoch


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_every_preset_budgets_pretraining_in_steps_with_a_batch_that_fits(preset):
    cfg = _cfg(preset)
    for init in ("mae", "simclr", "mae_unrelated"):
        p = experiment.pretrain_params(cfg, {"file": None}, init)
        assert "steps" in p and "epochs" not in p
        assert p["batch_size"] <= cfg.n_unlabeled
    if preset == "paper":
        assert cfg.pretrain_batch_size <= cfg.n_unlabeled // 4  # an epoch is several steps
        assert cfg.mae_steps >= 1_000 and cfg.simclr_steps >= 1_000
        assert cfg.finetune_batch_size <= min(cfg.label_counts)  # no run trains on its whole set every step


def test_a_pretraining_batch_larger_than_the_unlabeled_set_is_an_error_naming_both_before_any_work(tmp_path):
    with pytest.raises(ParameterError, match=r"pretrain_batch_size = 64 .*n_unlabeled = 32"):
        _cfg(pretrain_batch_size=64, n_unlabeled=32)  # at configure time: data, plan and reproduce never start
    with pytest.raises(ParameterError, match=r"pretrain_batch_size = 64 .*32 images"):
        tasks.pretraining_epochs(10, 32, 64)


def test_the_steps_run_are_recorded_beside_the_steps_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(mae_steps=3)  # 32 images in batches of 16: 2 steps per epoch, so 2 epochs = 4 steps
    data = study.data(cfg)
    rec = tasks.pretrain_task(**experiment.pretrain_params(cfg, data, "mae"))
    assert rec["steps_asked"] == 3 and rec["steps"] == 4 and rec["epochs_run"] == 2
    assert rec["budget"]["steps"] == 4


def test_paper_plan_shows_thousands_of_pretraining_steps():
    pre = plan(_cfg("paper"))[0]
    assert pre.grid == "pretrain"
    for b in pre.budgets:
        assert b.steps >= 1_000 and b.batch <= b.data_items // 4 and b.requested_batch == b.batch


def test_seeds_that_must_share_labelled_images_are_warned_about_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = write_per_class_tree(tmp_path / "plant", defects=("crack",), n_per_defect=6)
    cfg = _cfg(
        data_source="per_class", data_root=str(root), n_unlabeled=16, n_good=8, seeds=[0, 1, 2], label_counts=[2, 4]
    )
    data = study.data(cfg)  # 3 defect images in the pool
    with pytest.warns(UserWarning, match=r"at 4 labels, 3 seeds share up to \d+ labelled image\(s\): the pool holds"):
        lines = experiment.warn_shared_labels(cfg, data)
    assert lines
    table = study.tables.subset_overlap(cfg, data)
    assert (table["max_shared_between_seeds"] > 0).any()
    big = write_per_class_tree(tmp_path / "big", defects=("crack",), n_per_defect=40, n_good=60)
    apart = _cfg(
        data_source="per_class", data_root=str(big), n_unlabeled=16, n_good=8, seeds=[0, 1, 2], label_counts=[2, 4]
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert experiment.warn_shared_labels(apart, study.data(apart)) == []  # 20 defect images: 4 per seed fit
