"""The preconditions that make the study's verdicts trustworthy, each against its negative control through the
real study code:

- a stand-in pretrained for **0 steps** (the real recipe, loaded through the real ``ssl_weights`` path) leaves
  every analogue claim (``__ssl``) *not evaluated*, naming "trained" (its held-out MAE loss against the
  learner-free predictor: each hidden patch filled with the mean of its image's visible pixels) or "features
  learned" (its frozen linear head against the random-init ViT of the same architecture);
- every gradient-trained arm's grid record carries its full budget;
- at ``default`` every compared pair of trained arms (LoRA and its frozen head, LoRA and the UNet, the ViT's and the
  ResNet's LoRA) has the same budget; claims 3 and 4 are *not evaluated* when the budgets differ (the budgets the
  ``default`` preset gave before LoRA started from the frozen head), naming both budgets;
- a LoRA arm starts from the frozen head: with its adapters' learning rate at 0 it is the frozen arm.
"""

import math
from pathlib import Path

import pandas as pd
import pytest

import labkit
from labkit.core.claims import BUDGET_KEYS, judge, judge_all, missing_budget, synthetic_tables
from labkit.methods.array_segmentation import fit_budget as train_budget
from labkit.studies import dinov2_microct as study
from labkit.studies.dinov2_microct import experiment
from labkit.studies.dinov2_microct.claims import LEARNER_FREE_PREDICTOR, STATEMENTS, TRAINED_RATIO, is_trained_arm
from labkit.studies.dinov2_microct.data import make_data, splits

# Three seeds of tiny slices (28 px: a 4 x 4 token grid for the stand-in's 7-px patches), the random control and
# the stand-in (LoRA on it), every trained arm with one optimiser step of 8 slices (the same budget), t-SNE for
# claim 1 and a random ResNet standing in for pretrained ResNet weights (a test double for the ResNet + LoRA row
# only, so that claim 4b runs offline: the study itself never substitutes random weights).
ZERO = dict(
    seeds=[0, 1, 2],
    samples_per_rock=2,
    slices_per_sample=2,
    slice_size=28,
    backbones=["random", "ssl"],
    lora_backbones=["ssl"],
    knn_ks=[1, 3],
    batch_size=8,
    head_epochs=1,
    lora_epochs=1,
    unet_epochs=1,
    unet_batch_size=8,
    rf_trees=5,
    knn_seg_memory=500,
    embedders=["tsne"],
    resnet_backbone="resnet10t",
    executor="serial",
)


@pytest.fixture(scope="module")
def zero_step_run(tmp_path_factory):
    """The study at smoke (shrunk, three seeds) with the stand-in recipe run for 0 optimiser steps."""
    from labkit.methods import microct_standin

    tmp = tmp_path_factory.mktemp("zero_step")
    with pytest.MonkeyPatch.context() as mp:  # two slices per sample: the held-out check's 30 slices, not 120
        mp.setattr(microct_standin, "DATA", {**microct_standin.DATA, "slices_per_sample": 2})
        encoder, record = microct_standin.pretrain(steps=0, samples_per_rock=1, progress=False)
    path = microct_standin.save(encoder, record, tmp / "standin_0_steps", "pretrain(steps=0) in a test")
    cfg = labkit.configure("dinov2_microct", "smoke", dict(ZERO, ssl_weights=str(path)))
    with _offline_resnet(tmp / "cache"):
        res = study.run(cfg, study.data(cfg))
    return cfg, res, record, tmp / "cache"


def _offline_resnet(cache):
    """The cache folder, and a random ResNet in place of the pretrained one (a test double)."""
    import contextlib

    from labkit.models import backbones

    real = backbones.create_backbone

    real_file = backbones.resolve_pretrained_file
    stand_in_file = Path(cache).parent / "resnet_double.safetensors"  # what the resolver digests
    stand_in_file.write_bytes(b"a test double of pretrained ResNet weights")

    def resnet_double(name, weights="pretrained", **kw):
        return real(name, weights="random" if name.startswith("resnet") else weights, **kw)

    def resnet_file(name):
        return stand_in_file if name.startswith("resnet") else real_file(name)

    stack = contextlib.ExitStack()
    mp = stack.enter_context(pytest.MonkeyPatch.context())
    mp.setenv("LABKIT_CACHE", str(cache))
    mp.setattr(backbones, "create_backbone", resnet_double)
    mp.setattr(backbones, "resolve_pretrained_file", resnet_file)
    return stack


def _verdicts(cfg, res):
    return {v["id"]: v for v in judge_all(study.claims(cfg, res), res.tables)}


def test_a_zero_step_standin_leaves_every_analogue_claim_not_evaluated(zero_step_run):
    cfg, res, record, _ = zero_step_run
    assert record["steps"] == 0 and record["curve"] == []
    # the learner-free predictor beats the untrained network: "trained" fails, in the table and in the judge
    table = study.tables.pretraining(res)
    assert table["steps"].iloc[0] == 0 and not table["trained"].iloc[0]
    assert table["learner_free_ratio"].iloc[0] > TRAINED_RATIO
    assert table["learner_free_predictor"].iloc[0] == LEARNER_FREE_PREDICTOR
    verdicts = _verdicts(cfg, res)
    analogue = {k: v for k, v in verdicts.items() if k.endswith("__ssl")}
    assert len(analogue) == len(STATEMENTS)
    for cid, v in analogue.items():
        assert v["status"] == "not evaluated", (cid, v["reason"])
        assert "precondition 'trained' failed" in v["reason"] or "precondition 'features learned'" in v["reason"], (
            cid,
            v["reason"],
        )
        names = {p["name"]: p for p in v["preconditions"]}
        # features learned on what the claim measures: rock classification (claim 1) or held-out-rock segmentation
        learned = (
            "features learned (rock classification, kNN k=1)"  # the smallest judged k of ZERO's knn_ks
            if cid.startswith("c1_")
            else "features learned (held-out-rock segmentation)"
        )
        assert {"trained", learned} <= set(names), cid
        assert not names["trained"]["passed"], cid
        # the features-learned control compared the stand-in with the random ViT on every seed
        assert names[learned]["evidence"]["n"] == 3, cid


def test_equal_budgets_pass_same_budget(zero_step_run):
    """Negative control of 'same budget': with every trained arm at one step of 8 slices, it passes."""
    cfg, res, *_ = zero_step_run
    verdicts = _verdicts(cfg, res)
    for cid in ("c3_lora_lifts_heads__ssl", "c4_lora_beats_unet__ssl", "c4b_lora_beats_resnet_lora__ssl"):
        same = [p for p in verdicts[cid]["preconditions"] if p["name"] == "same budget"]
        assert same and all(p["passed"] for p in same), (cid, same)


def test_every_trained_arm_record_carries_its_budget(zero_step_run):
    cfg, res, _, cache = zero_step_run
    with _offline_resnet(cache):  # the grid's records, read back from the run's cache
        result = experiment.build_grid(cfg).run(executor="serial", progress=False)
    assert result.cached == len(result.records) == 3 * 4
    for record in result.records:
        part = f"seed {record['seed']}, part {record['part']}"
        trained = [r for r in record["segmentation"] if r["status"] == "evaluated" and is_trained_arm(r)]
        assert trained, part
        for row in trained:
            missing = missing_budget(row)
            assert not missing, (
                f"dinov2_microct, grid 'grid' ({part}): the record of {row['method']} | {row['backbone']} "
                f"lacks budget keys {missing}"
            )
        untrained = [r for r in record["segmentation"] if not is_trained_arm(r)]
        assert all("budget" not in r for r in untrained), part
    # gathered: one row per trained arm and seed; the report's table one per arm
    budgets = res.tables["budgets"]
    assert set(BUDGET_KEYS) <= set(budgets.columns) and budgets[list(BUDGET_KEYS)].notna().all().all()
    seg = res.tables["segmentation_rows"]
    arms = seg[(seg["status"] == "evaluated") & seg.apply(is_trained_arm, axis=1)]
    assert len(budgets) == len(arms.drop_duplicates(["method", "backbone", "seed"]))
    assert (budgets["steps"] == 1).all() and (budgets["batch_size"] == 8).all()
    shown = study.tables.budgets(res)
    assert len(shown) == len(arms.drop_duplicates(["method", "backbone"])) and (shown["n_seeds"] == 3).all()


def _budgets_as_configured(cfg, n_train: int) -> pd.DataFrame:
    """The budgets the study's tasks record under ``cfg`` (the same function, the same parameters; trainable
    parameters do not enter 'same budget'): every head, frozen or with LoRA, and the ResNet + LoRA at head_epochs
    and batch_size (:func:`tasks.train_arm`), the UNet at unet_epochs and unet_batch_size."""
    heads = train_budget(n_train, cfg.batch_size, cfg.head_epochs, cfg.head_lr, 1)
    unet = train_budget(n_train, cfg.unet_batch_size, cfg.unet_epochs, cfg.unet_lr, 1)
    rows = []
    for seed in range(3):
        rows += [
            {"method": "linear head + LoRA", "arm": "dinov2", "seed": seed, **heads},
            {"method": "linear head (frozen)", "arm": "dinov2", "seed": seed, **heads},
            {"method": "linear head + LoRA", "arm": "resnet", "seed": seed, **heads},
            {"method": "UNet from scratch", "arm": "unet", "seed": seed, **unet},
        ]
    return pd.DataFrame(rows)


def _claims(cfg):
    ids = ("c3_lora_lifts_heads", "c4_lora_beats_unet", "c4b_lora_beats_resnet_lora")
    return {c.id: c for c in study.declare_claims(cfg) if c.id in ids}


def test_at_default_every_compared_pair_has_the_same_budget_and_unequal_budgets_fail():
    cfg = labkit.configure("dinov2_microct", "default", {})
    ds = make_data(cfg, 0)
    n_train = len(splits(cfg, ds)["seg_train"])
    assert n_train == 48
    budgets = _budgets_as_configured(cfg, n_train)
    assert set(budgets["steps"]) == {60} and set(budgets["batch_size"]) == {16}
    for cid, claim in _claims(cfg).items():
        tables = synthetic_tables(claim)  # every comparison and other precondition holds
        tables["budgets"] = budgets
        verdict = judge(claim, tables)
        assert verdict["status"] == "held", (cid, verdict["reason"])
        same = [p for p in verdict["preconditions"] if p["name"] == "same budget"]
        assert same and all(p["passed"] for p in same), cid
    # negative control: the budgets default gave before (LoRA 30 steps of 8, frozen 75 of 16, UNet 96 of 4)
    before = _budgets_as_configured(cfg, n_train)
    lora = before["method"].eq("linear head + LoRA")
    before.loc[lora, ["steps", "batch_size"]] = [30, 8]
    before.loc[before["method"].eq("linear head (frozen)"), ["steps", "batch_size"]] = [75, 16]
    before.loc[before["arm"].eq("unet"), ["steps", "batch_size"]] = [96, 4]
    for cid, claim in _claims(cfg).items():
        tables = synthetic_tables(claim)
        tables["budgets"] = before
        verdict = judge(claim, tables)
        if cid == "c4b_lora_beats_resnet_lora":  # both LoRA rows: still the same budget
            assert verdict["status"] == "held", verdict["reason"]
            continue
        assert verdict["status"] == "not evaluated", cid
        assert "precondition 'same budget' failed" in verdict["reason"] and "steps 30" in verdict["reason"], cid
    # a UNet configured off the heads' budget fails claim 4's precondition, naming both budgets
    off = labkit.configure("dinov2_microct", "default", {"unet_epochs": 8, "unet_batch_size": 4})
    tables = synthetic_tables(_claims(off)["c4_lora_beats_unet"])
    tables["budgets"] = _budgets_as_configured(off, n_train)
    verdict = judge(_claims(off)["c4_lora_beats_unet"], tables)
    assert verdict["status"] == "not evaluated" and "steps 96" in verdict["reason"] and "steps 60" in verdict["reason"]


def test_a_lora_arm_starts_from_the_frozen_head():
    """LoRA with its adapters' learning rate at 0 is the frozen arm (same initial head, same probe, same data order,
    the same steps): what LoRA adds at its budget is the adapters, nothing else."""
    import numpy as np
    import torch

    from labkit.models.backbones import create_backbone
    from labkit.studies.dinov2_microct.tasks import frozen_tokens, train_arm

    values = {"head_epochs": 3, "lora_epochs": 2, "batch_size": 4, "lora_lr": 0.0, "head_lr": 1e-2, "slice_size": 28}
    cfg = labkit.configure("dinov2_microct", "smoke", values)
    ds = make_data(cfg, 0)
    seg_tr = ds.subset(splits(cfg, ds)["seg_train"][:8])
    torch.manual_seed(0)
    vit = create_backbone("test_vit", weights="random", img_size=32, num_classes=0)
    tokens = frozen_tokens(cfg, vit, seg_tr.images, 32)
    frozen, _, _, fb = train_arm(cfg, vit, "linear", seg_tr, tokens, seg_tr.masks, 0, lora=False, img_size=32)
    lora, n_lora, _, lb = train_arm(cfg, vit, "linear", seg_tr, tokens, seg_tr.masks, 0, lora=True, img_size=32)
    assert fb["steps"] == lb["steps"] == 3 * 2 and fb["schedule"] == lb["schedule"]
    assert n_lora > fb["trainable_params"]  # the adapters train too
    for a, b in zip(frozen.head.state_dict().values(), lora.head.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)
    # and with a learning rate the adapters move the LoRA arm away from the frozen head
    tuned = labkit.configure("dinov2_microct", "smoke", dict(values, lora_lr=1e-2))
    moved, *_ = train_arm(tuned, vit, "linear", seg_tr, tokens, seg_tr.masks, 0, lora=True, img_size=32)
    diffs = [
        float((a.float() - b.float()).abs().max())
        for a, b in zip(frozen.head.state_dict().values(), moved.head.state_dict().values())
    ]
    assert max(diffs) > 1e-4 and np.isfinite(diffs).all()


def test_train_budget_counts_the_steps_fit_takes():
    b = train_budget(12, 8, 3, 1e-3, 10)
    assert b["steps"] == 3 * math.ceil(12 / 8) and b["batch_size"] == 8 and "6 steps" in b["schedule"]
    assert train_budget(5, 8, 2, 1e-3, 10)["batch_size"] == 5  # one short batch per epoch


def test_analogue_claims_need_the_random_control_of_the_standins_architecture():
    base = dict(ZERO)
    no_random = labkit.configure("dinov2_microct", "smoke", dict(base, backbones=["ssl"]))
    other_arch = labkit.configure("dinov2_microct", "smoke", dict(base, vit_arch="dinov2_vits14"))
    for cfg, words in ((no_random, "add random to parameter backbones"), (other_arch, "parameter vit_arch")):
        for c in study.declare_claims(cfg):
            if c.id.endswith("__ssl"):
                verdict = judge(c, {})
                assert verdict["status"] == "not evaluated" and words in verdict["reason"], c.id


def test_claim_1_needs_the_histogram_floor_below_the_bar():
    """Negative control of the floor: rocks a grey-level histogram already classifies near perfectly leave claim 1
    not evaluated (it would hold whatever the features); a floor near chance lets it be judged."""
    from labkit.studies.dinov2_microct.probes import HISTOGRAM

    cfg = labkit.configure("dinov2_microct", "default", {})
    claim = next(c for c in study.declare_claims(cfg, ks=[5, 10]) if c.id == "c1_knn_rock_classification")
    tables = synthetic_tables(claim)

    def with_floor(acc):
        rows = [
            {"arm": HISTOGRAM, "probe": "knn", "feature": "histogram", "k": k, "seed": s, "accuracy": acc}
            for k in (5, 10)
            for s in range(3)
        ]
        return {**tables, "classification": pd.concat([tables["classification"], pd.DataFrame(rows)])}

    high = judge(claim, with_floor(0.99))
    assert high["status"] == "not evaluated" and "grey levels alone fall short (k=5)" in high["reason"], high["reason"]
    assert judge(claim, with_floor(0.25))["status"] == "held"
