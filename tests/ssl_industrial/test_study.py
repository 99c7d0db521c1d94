import numpy as np
import pandas as pd
import pytest
import torch

import labkit
from labkit.core.claims import HELD, NOT_EVALUATED, judge
from labkit.core.errors import DataError, ParameterError
from labkit.studies import ssl_industrial as study
from labkit.studies.base import Runs, arm_labels, regime_seeds
from labkit.studies.ssl_industrial import experiment, tasks
from labkit.studies.ssl_industrial.data import check_inputs

from .fixtures import write_mvtec_tree, write_per_class_tree


def _cfg(preset="default", **over):
    return labkit.configure("ssl_industrial", preset, over)


def test_label_subsets_are_disjoint_between_seeds_nested_within_a_seed_and_balanced():
    labels = np.array([1] * 50 + [0] * 50)
    subsets = {s: tasks.label_subset(labels, 32, s, block=32) for s in (0, 1, 2)}
    for s, idx in subsets.items():
        assert len(set(idx)) == 32 and labels[idx].sum() == 16
        assert set(tasks.label_subset(labels, 8, s, block=32)) <= set(idx)  # nested
    assert not set(subsets[0]) & set(subsets[1]) and not set(subsets[1]) & set(subsets[2])
    np.testing.assert_array_equal(subsets[1], tasks.label_subset(labels, 32, 1, block=32))
    with pytest.raises(ParameterError, match="pool holds 100"):
        tasks.label_subset(labels, 101, 0, block=101)


def test_paper_without_data_root_stops_at_once_naming_mvtec_its_layout_and_where_it_is_published():
    cfg = _cfg("paper")
    with pytest.raises(ParameterError) as err:
        study.data(cfg)
    text = str(err.value)
    assert "MVTec AD" in text and "mvtec.com" in text and "ground_truth/<defect>/<name>_mask.png" in text
    assert "data_root" in text


def test_missing_paths_are_errors_naming_the_parameter(tmp_path):
    with pytest.raises(ParameterError, match="parameter 'data_root' is .*nowhere', which is not an existing folder"):
        check_inputs(_cfg(data_source="mvtec", data_root=str(tmp_path / "nowhere")))
    with pytest.raises(ParameterError, match="parameter 'dinov2_weights' .*w.safetensors', which does not exist"):
        _cfg(dinov2_weights=str(tmp_path / "w.safetensors"))  # configure checks it, before any work
    with pytest.raises(ParameterError, match="parameter 'data_root' is .* but data_source is 'simulated'"):
        check_inputs(_cfg(data_root=str(tmp_path)))


@pytest.mark.parametrize("layout,channels", [("mvtec", 3), ("mvtec", 1), ("per_class", 1), ("per_class", 3)])
def test_real_folders_split_by_the_documented_rule(tmp_path, monkeypatch, layout, channels):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    if layout == "mvtec":
        write_mvtec_tree(root, colour=channels == 3)
    else:
        write_per_class_tree(root, colour=channels == 3)
    cfg = _cfg("smoke", data_source=layout, data_root=str(root), channels=channels, n_unlabeled=16, n_good=8)
    data = study.data(cfg)
    assert data["pool"]["images"].shape[1:] == (channels, 32, 32)
    n_bad = 8
    assert (data["pool"]["defect_types"] != "good").sum() == n_bad // 2  # one crop per labelled image
    test_bad = data["test"]["defect_types"] != "good"  # tiles: each defect image gives one or more defect tiles
    assert test_bad.sum() >= n_bad - n_bad // 2
    assert data["geometry"]["test"]["source_images"] == 2 * (n_bad - n_bad // 2)
    assert (data["unlabeled"]["defect_types"] == "good").all() and data["geometry"]["unlabeled"]["source_images"] == 16
    assert data["test"]["masks"][data["test"]["defect_types"] != "good"].any(axis=(1, 2)).all()
    again = study.data(cfg)
    assert again["digest"] == data["digest"]  # seeded split


def test_too_few_defect_free_images_for_pretraining_is_an_error_at_configure_time(tmp_path):
    root = write_mvtec_tree(tmp_path / "d", n_train_good=6)  # 10 defect-free: 6 left after test and pool
    with pytest.raises(DataError, match=r"10 defect-free images, of which 6 .* n_unlabeled=16.*-p n_unlabeled 6"):
        _cfg("smoke", data_source="mvtec", data_root=str(root), n_unlabeled=16, pretrain_batch_size=8)


def test_unknown_defect_folder_is_an_error(tmp_path):
    root = write_mvtec_tree(tmp_path / "d")
    cfg = _cfg("smoke", data_source="mvtec", data_root=str(root), n_unlabeled=16, defect_types=["scratch"])
    with pytest.raises(DataError, match="unknown defect folder 'hole'"):
        study.data(cfg)


def test_every_claim_is_not_evaluated_with_the_reason_when_an_arm_is_missing():
    cfg = _cfg()
    assert all(c.unavailable is None for c in study.declare_claims(cfg))
    claims = {
        c.id: c
        for c in study.declare_claims(
            cfg, unavailable={"dinov2": "weights unavailable: put them in X", "mae": "did not train"}
        )
    }
    assert "weights unavailable" in judge(claims["C4_foundation_model"], {})["reason"]
    for cid in ("C1_label_efficiency_mae", "C2_probe_vs_finetune", "C3_in_domain"):
        assert judge(claims[cid], {})["status"] == NOT_EVALUATED and "did not train" in claims[cid].unavailable
    assert claims["C1_label_efficiency_simclr"].unavailable is None
    dropped = {c.id: c for c in study.declare_claims(_cfg(inits=["scratch", "mae"]))}
    assert "not in inits" in dropped["C3_in_domain"].unavailable


FLOOR_AP = 0.03  # the 'all good' row's defect AP (the defect-pixel prevalence)


def _budget(steps=150, batch=8):
    return {
        "steps": steps,
        "batch_size": batch,
        "lr": 1e-3,
        "schedule": f"cosine over {steps} steps",
        "trainable_params": 1000,
    }


def _runs(gap_small, gap_large, scratch_gain=0.2, probe_gain=0.05, floor=FLOOR_AP, scratch_steps=150):
    """Runs of scratch and MAE (full at both label counts, frozen at the most), and the 'all good' floor."""
    counts = _cfg().label_counts  # the default preset's fewest and most labels
    lo, hi = min(counts), max(counts)
    rows = []
    for seed in range(4):
        for n, gap in ((lo, gap_small), (hi, gap_large)):
            base = 0.1 + (scratch_gain if n == hi else 0) + 0.01 * seed
            rows.append(
                {
                    "init": "scratch",
                    "protocol": "full",
                    "n_labels": n,
                    "seed": seed,
                    "defect_ap": base,
                    **_budget(scratch_steps),
                }
            )
            rows.append(
                {
                    "init": "mae",
                    "protocol": "full",
                    "n_labels": n,
                    "seed": seed,
                    "defect_ap": base + gap + 0.003 * seed,
                    **_budget(),
                }
            )
            rows.append({"init": "all_good", "protocol": "-", "n_labels": n, "seed": seed, "defect_ap": floor})
        rows.append(
            {
                "init": "scratch",
                "protocol": "frozen",
                "n_labels": hi,
                "seed": seed,
                "defect_ap": 0.08 + 0.004 * seed,
                **_budget(),
            }
        )
        rows.append(
            {
                "init": "mae",
                "protocol": "frozen",
                "n_labels": hi,
                "seed": seed,
                "defect_ap": 0.08 + probe_gain + 0.006 * seed,
                **_budget(),
            }
        )
    return pd.DataFrame(rows)


def _pre(eval_loss=0.5, learner_free=1.0):
    return {
        "mae": {
            "record": {
                "eval_loss": eval_loss,
                "learner_free_loss": learner_free,
                "loss_ratio": eval_loss / learner_free,
                "budget": _budget(96, 32),
            }
        }
    }


def test_claim_tables_and_the_judge_on_claim1():
    cfg = _cfg()
    pre = _pre()
    claim = {c.id: c for c in study.declare_claims(cfg)}["C1_label_efficiency_mae"]
    tables = experiment.claim_tables({"runs": _runs(0.1, 0.02), "pretrained": pre})
    lo = min(cfg.label_counts)
    gaps_lo = tables["gaps"][tables["gaps"]["n_labels"] == lo]["gap_ap"]
    assert np.allclose(gaps_lo, 0.1 + 0.003 * np.arange(4))
    assert judge(claim, tables)["status"] == HELD
    widening = judge(claim, experiment.claim_tables({"runs": _runs(0.02, 0.1), "pretrained": pre}))
    assert widening["status"] == "did not hold"
    flat = judge(claim, experiment.claim_tables({"runs": _runs(0.1, 0.02, scratch_gain=0.0), "pretrained": pre}))
    assert flat["status"] == NOT_EVALUATED and "precondition 'label-limited' failed" in flat["reason"]
    # trained: the loss against the best learner-free predictor's on the same batches, not a fixed ratio
    untrained = judge(claim, experiment.claim_tables({"runs": _runs(0.1, 0.02), "pretrained": _pre(0.551, 0.553)}))
    assert untrained["status"] == NOT_EVALUATED and "precondition 'trained (mae)' failed" in untrained["reason"]


def test_features_learned_above_the_floor_and_same_budget_each_fail_on_their_negative_control():
    claim = {c.id: c for c in study.declare_claims(_cfg())}["C1_label_efficiency_mae"]
    pre = _pre()
    # the pretrained encoder's frozen probe no better than the random-init ViT's
    random_features = judge(
        claim, experiment.claim_tables({"runs": _runs(0.1, 0.02, probe_gain=0.0), "pretrained": pre})
    )
    assert random_features["status"] == NOT_EVALUATED
    assert "precondition 'features learned (mae)' failed" in random_features["reason"]
    # every arm at the floor: the floor row as good as the arms
    at_floor = judge(claim, experiment.claim_tables({"runs": _runs(0.1, 0.02, floor=0.5), "pretrained": pre}))
    assert at_floor["status"] == NOT_EVALUATED and "precondition 'above the floor (mae full at" in at_floor["reason"]
    # scratch with the fewest labels at the floor is the regime the claim is about: still judged
    runs = _runs(0.1, 0.02)
    lo = min(_cfg().label_counts)
    runs.loc[(runs["init"] == "scratch") & (runs["n_labels"] == lo), "defect_ap"] = FLOOR_AP + 0.001
    runs.loc[(runs["init"] == "mae") & (runs["n_labels"] == lo), "defect_ap"] += 0.1  # keep the gap narrowing
    assert judge(claim, experiment.claim_tables({"runs": runs, "pretrained": pre}))["status"] == HELD
    # scratch trained for fewer steps than MAE: the evidence names both budgets
    unequal = judge(claim, experiment.claim_tables({"runs": _runs(0.1, 0.02, scratch_steps=75), "pretrained": pre}))
    assert unequal["status"] == NOT_EVALUATED and "precondition 'same budget' failed" in unequal["reason"]
    assert "steps 150" in unequal["reason"] and "steps 75" in unequal["reason"]
    # a run without a budget record cannot pass "same budget" (two blanks are not equal budgets)
    runs = _runs(0.1, 0.02)
    runs.loc[runs["init"] == "scratch", ["steps", "batch_size", "schedule"]] = np.nan
    blank = judge(claim, experiment.claim_tables({"runs": runs, "pretrained": pre}))
    assert blank["status"] == NOT_EVALUATED and "same budget" in blank["reason"] and "no record" in blank["reason"]


def test_all_good_floor_and_a_full_finetune_that_trains_the_patch_embedding(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg("smoke", seeds=[0], label_counts=[4, 8])
    data = study.data(cfg)
    by_arm = {
        (t["init"], t["n_labels"]): t
        for t in experiment.finetune_tasks(
            cfg, data, {}, {k: "x" for k in ("mae", "simclr", "mae_unrelated", "dinov2")}
        )
    }
    assert {k[0] for k in by_arm} == {"scratch", "unet", "all_good"}
    floor = tasks.finetune_task(**by_arm["all_good", 8])
    prevalence = data["test"]["masks"].mean()
    assert floor["defect_f1"] == 0 and floor["image_auroc"] == 0.5 and np.isclose(floor["defect_ap"], prevalence)
    from labkit.methods.defect_segmentation import ViTSegmenter, count_trainable, train_segmenter

    enc = tasks.new_vit("vit_tiny", 32, 8, 1, {"depth": 2, "embed_dim": 64, "num_heads": 2})
    model = ViTSegmenter(enc, out_size=32)
    assert count_trainable(model) == sum(p.numel() for p in model.parameters())
    before = model.encoder.patch_embed.proj.weight.detach().clone()
    x, y = torch.randn(8, 1, 32, 32), (torch.rand(8, 32, 32) > 0.9).long()
    train_segmenter(model, x, y, steps=3, batch_size=4, lr=1e-3, seed=0)
    assert not torch.allclose(before, model.encoder.patch_embed.proj.weight)
    frozen = ViTSegmenter(enc, out_size=32, head="linear", frozen=True)
    before = [p.detach().clone() for p in frozen.encoder.parameters()]
    feats = frozen.features(x).detach()
    train_segmenter(frozen, feats, y, steps=3, batch_size=4, lr=1e-3, seed=0, augment=False, forward=frozen.decode)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.encoder.parameters()))


def test_defect_metrics_and_aupro():
    from labkit.methods.anomaly import aupro
    from labkit.methods.defect_segmentation import defect_metrics

    masks = np.zeros((4, 16, 16), int)
    masks[0, 2:6, 2:6] = 1
    masks[1, 8:12, 8:14] = 1
    perfect = defect_metrics(masks.astype(float), masks)
    assert perfect["defect_ap"] == 1 and perfect["defect_f1"] == 1 and perfect["image_auroc"] == 1
    assert np.isclose(aupro(masks.astype(float), masks), 1.0, atol=0.02)
    noise = np.random.default_rng(0).random(masks.shape)
    assert aupro(noise, masks) < 0.3


def test_patchcore_aggregates_each_patch_with_its_neighbours():
    from labkit.methods.anomaly import PatchCore

    feats = torch.zeros(1, 1, 5, 5)
    feats[0, 0, 2, 2] = 9.0
    pc = PatchCore(lambda im: feats, neighbourhood=3)
    out = pc._features(np.zeros((1, 1, 5, 5), np.float32))
    assert np.isclose(float(out[0, 0, 2, 2]), 1.0) and np.isclose(float(out[0, 0, 1, 1]), 1.0)
    assert float(out[0, 0, 0, 0]) == 0.0
    with pytest.raises(ParameterError, match="odd"):
        PatchCore(lambda im: feats, neighbourhood=2)


def test_pretraining_records_the_trivial_predictors_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg("smoke")
    data = study.data(cfg)
    rec = tasks.pretrain_task(**experiment.pretrain_params(cfg, data, "mae"))
    assert 0.8 < rec["trivial_loss"] < 1.2
    assert np.isclose(rec["loss_ratio"], rec["eval_loss"] / rec["learner_free_loss"])
    assert rec["learner_free_loss"] < rec["initial_loss"]  # the visible mean beats an untrained decoder
    rec = tasks.pretrain_task(**experiment.pretrain_params(cfg, data, "simclr"))
    assert np.isclose(rec["trivial_loss"], np.log(2 * cfg.pretrain_batch_size - 1))
    assert np.isclose(rec["learner_free_loss"], min(rec["initial_loss"], rec["trivial_loss"]))
    assert np.isclose(rec["loss_ratio"], rec["eval_loss"] / rec["learner_free_loss"])


def test_regime_seeds_add_scratch_runs_at_the_fewest_and_most_labels_and_the_floor_arms_at_the_fewest(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg("smoke", seeds=[0, 1], regime_seeds=[0, 1, 2, 3, 4], label_counts=[4, 6, 8])
    assert regime_seeds(cfg) == [0, 1, 2, 3, 4]
    data = study.data(cfg)
    pretrained = {k: {"file": "f", "digest": "d"} for k in ("mae", "simclr")}
    tasks = experiment.finetune_tasks(cfg, data, pretrained, {k: "x" for k in ("mae_unrelated", "dinov2")})
    seeds = {}
    for t in tasks:
        seeds.setdefault((t["init"], t["protocol"], t["n_labels"]), set()).add(t["seed"])
    regime = {0, 1, 2, 3, 4}
    assert seeds["scratch", "full", 4] == seeds["scratch", "full", 8] == regime  # label-limited
    assert seeds["mae", "full", 4] == seeds["simclr", "full", 4] == seeds["all_good", "-", 4] == regime  # the floor
    for key in [
        ("scratch", "full", 6),
        ("mae", "full", 8),
        ("mae", "frozen", 8),
        ("unet", "-", 4),
        ("all_good", "-", 8),
    ]:
        assert seeds[key] == {0, 1}  # the claims stay on seeds
    assert ("unet", "-", 8) not in seeds and ("unet", "-", 6) not in seeds  # the U-Net at the fewest labels only
    overlap = study.tables.subset_overlap(cfg, data).set_index("n_labels")
    assert list(overlap["seeds"]) == [5, 2, 5] and (overlap["max_shared_between_seeds"] == 0).all()
    frame = pd.DataFrame(
        [
            {"init": t["init"], "protocol": t.get("protocol"), "n_labels": t["n_labels"], "seed": t["seed"]}
            for t in tasks
        ]
    )
    runs, regime = experiment.split_regime(cfg, frame)
    assert set(runs["seed"]) == {0, 1} and len(runs) == len(frame) - 3 * 5
    assert set(regime["init"]) == {"scratch", "mae", "simclr", "all_good"} and len(regime) == 5 * 5
    assert set(regime.loc[regime["init"] == "scratch", "n_labels"]) == {4, 8}
    assert set(regime.loc[regime["init"] != "scratch", "n_labels"]) == {4}
    assert regime_seeds(_cfg("smoke")) == [0]  # null: the seeds


def _regime(gains, lo, hi, mae_at_lo=0.3):
    """The regime's rows: scratch at the fewest and the most labels (``gains`` between them), MAE at the fewest
    (``mae_at_lo``, a list per seed or one value) and the floor, one seed per gain."""
    rows = []
    for seed, gain in enumerate(gains):
        for n, ap in ((lo, 0.2), (hi, 0.2 + gain)):
            rows.append({"init": "scratch", "protocol": "full", "n_labels": n, "seed": seed, "defect_ap": ap})
        mae = mae_at_lo[seed] if isinstance(mae_at_lo, list) else mae_at_lo
        rows.append({"init": "mae", "protocol": "full", "n_labels": lo, "seed": seed, "defect_ap": mae})
        rows.append({"init": "all_good", "protocol": "-", "n_labels": lo, "seed": seed, "defect_ap": FLOOR_AP})
    return pd.DataFrame(rows)


def test_label_limited_is_judged_on_the_regime_seeds_and_the_claims_on_seeds():
    cfg = _cfg()
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    pre = _pre()
    claim = {c.id: c for c in study.declare_claims(cfg)}["C1_label_efficiency_mae"]
    runs = _runs(0.1, 0.02, scratch_gain=0.0)  # 4 seeds where scratch gains nothing
    alone = judge(claim, experiment.claim_tables({"runs": runs, "pretrained": pre}))
    assert alone["status"] == NOT_EVALUATED and "label-limited" in alone["reason"]  # no regime: scratch of runs
    steady = _regime([0.15 + 0.01 * (s % 3) for s in range(10)], lo, hi)
    verdict = judge(claim, experiment.claim_tables({"runs": runs, "regime": steady, "pretrained": pre}))
    assert verdict["status"] == HELD
    assert verdict["preconditions"][0]["evidence"]["n"] == 10
    # the 4-label comparison over the regime seeds (both arms ran there), the gaps over the claim seeds
    assert [c["n"] for c in verdict["comparisons"]] == [10, 4]
    noisy = _regime([0.4, -0.2] * 5, lo, hi)  # the same mean gain, too noisy to clear the margin
    verdict = judge(claim, experiment.claim_tables({"runs": runs, "regime": noisy, "pretrained": pre}))
    assert verdict["status"] == NOT_EVALUATED and "precondition 'label-limited' failed" in verdict["reason"]
    table = study.tables.regime_table(cfg, Runs(tables={"runs": runs, "regime": steady})).set_index("row")
    scratch = table.loc[arm_labels(study.ARMS)["scratch"]]
    assert scratch["seeds"] == 10 and np.isclose(scratch["gain"], 0.159) and scratch["gain_ci95_low"] > 0.05
    per_seed = study.tables.regime_runs_table(_cfg(seeds=[0, 1, 2]), Runs(tables={"regime": steady}))
    assert list(per_seed["in_seeds"]) == ["yes"] * 3 + ["regime only"] * 7
    assert np.allclose(per_seed["gain"], [0.15 + 0.01 * (s % 3) for s in range(10)])
    assert np.allclose(per_seed[f"mae_defect_ap_at_{lo}"], 0.3)


def test_above_the_floor_at_the_fewest_labels_is_judged_on_the_regime_seeds():
    # a 4-label run's score is decided by which images its seed draws: bimodal, at the floor or well above it
    cfg = _cfg()
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    claim = {c.id: c for c in study.declare_claims(cfg)}["C1_label_efficiency_mae"]
    gains = [0.15 + 0.01 * (s % 3) for s in range(20)]
    lottery = [0.3 if s % 3 == 0 else FLOOR_AP + 0.002 for s in range(20)]  # 7 of 20 subsets learnable
    tables = experiment.claim_tables(
        {"runs": _runs(0.1, 0.02), "regime": _regime(gains, lo, hi, lottery), "pretrained": _pre()}
    )
    floor = next(
        p for p in judge(claim, tables)["preconditions"] if p["name"].startswith(f"above the floor (mae full at {lo}")
    )
    assert floor["passed"] and floor["evidence"]["n"] == 20 and "regime seeds" in floor["name"]
    at_floor = _regime(gains, lo, hi, FLOOR_AP + 0.002)  # negative control: every subset at the floor
    tables = experiment.claim_tables({"runs": _runs(0.1, 0.02), "regime": at_floor, "pretrained": _pre()})
    verdict = judge(claim, tables)
    assert (
        verdict["status"] == NOT_EVALUATED
        and f"above the floor (mae full at {lo} labels, regime seeds)" in verdict["reason"]
    )


def test_dinov2_without_weights_is_not_evaluated_with_a_reason_naming_the_parameter(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABKIT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    unavailable, inits = experiment.resolve_inits(_cfg(inits=["scratch", "dinov2"]), {})
    assert set(unavailable) == {"dinov2"} and "Set parameter 'dinov2_weights'" in unavailable["dinov2"]
    assert "weights_path=" not in unavailable["dinov2"]
    assert list(inits["status"]) == ["evaluated", "not evaluated"]


def test_new_dinov2_weights_in_the_same_file_rerun_its_tasks(tmp_path):
    # the DINOv2 weights' content is an input of the fine-tuning and PatchCore grids when that arm runs
    from safetensors.torch import save_file

    file = tmp_path / "dinov2.safetensors"
    save_file({"w": torch.zeros(2)}, str(file))
    cfg = _cfg("smoke", dinov2_weights=str(file))
    data = {"digest": "d"}
    first = experiment._grid_inputs(cfg, data, {})
    save_file({"w": torch.ones(2)}, str(file))
    second = experiment._grid_inputs(cfg, data, {})
    assert first["data"] == second["data"] == "d" and first["dinov2_weights"] != second["dinov2_weights"]
    assert experiment._grid_inputs(cfg, data, {"dinov2": "weights unavailable"}) == {"data": "d"}
