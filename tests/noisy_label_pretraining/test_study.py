"""The study module: the checkpoint other studies use, a tiny end-to-end run on the grid, the claims and their
preconditions, and the checks that stop a run before any work."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from labkit.core.checkpoints import load_checkpoint
from labkit.core.claims import HELD, NOT_EVALUATED, NOT_HELD, judge, judge_all
from labkit.core.errors import DataError, ParameterError, WeightsUnavailableError
from labkit.core.params import Config, load_spec
from labkit.methods.noisy_label_encoder import produce_pretrained_encoder
from labkit.models.segmentation import create_segmenter
from labkit.studies import noisy_label_pretraining as study
from labkit.studies.noisy_label_pretraining.claims import claim_tables

TINY = dict(
    seeds=[0],
    data_source="simulated",
    data_root=None,
    encoder_weights="pretrained",
    tile=32,
    bands=["B08", "B04", "B03", "B02"],
    encoder="resnet10t",
    encoder_depth=3,
    decoder_width=8,
    batch_size=2,
    lr=1e-3,
    finetune_lr=1e-3,
    n_pretrain_tiles=4,
    pretrain_steps=2,
    finetune_steps=4,
    eval_points=2,
    n_val_tiles=1,
    k_values=[2, 4],
    n_test_tiles=2,
    noise_models=list(study.DEFAULT_NOISE),
    noise_severity=0.3,
    noise_levels=[0.3, 1.0],
    sweep_k=None,
    task_b_k=2,
    inits=["random", "noisy_encoder", "noisy_full", "clean_full", "imagenet"],
    kl_bins=16,
    layer_sample=64,
    plateau_max_gain=0.02,
    label_limited_margin=0.02,
    save_checkpoint=True,
    device="cpu",
    executor="serial",
    workers=None,
    scheduler=None,
)


def config(**values) -> Config:
    """TINY with ``values``, as the study receives its parameters."""
    return Config(study.NAME, "test", {**TINY, **values})


def test_produce_pretrained_encoder_loads_into_a_resnet18_unet_encoder():
    path = produce_pretrained_encoder(n_tiles=8, epochs=1, tile=32, progress=False)
    assert path.name == "noisy-pretrained-unet-r18.safetensors" and path.exists()
    state, meta = load_checkpoint(path)
    model = create_segmenter(
        "unet", encoder="resnet18", weights="random", in_channels=4, num_classes=3, encoder_depth=4
    )
    model.encoder.load_state_dict(state, strict=True)  # exactly the 4-stage encoder's keys, as the study saves it
    assert meta["encoder_depth"] == 4 and "features_learned" not in meta  # a small budget proves no features
    assert meta["in_channels"] == 4 and meta["bands"] == ["B08", "B04", "B03", "B02"]
    assert meta["classes"][-1] == "artificial" and meta["noise_severity"] == 0.6
    assert len(meta["norm_mean"]) == 4 and 0 < meta["pixel_noise_rate"] < 1
    named = create_segmenter(
        "unet",
        encoder="resnet18",
        weights="labkit:noisy-pretrained-unet-r18",
        in_channels=4,
        num_classes=3,
        encoder_depth=4,
    )
    key = next(iter(state))
    assert np.allclose(named.encoder.state_dict()[key].numpy(), state[key].numpy())


def test_produce_refuses_other_encoders():
    with pytest.raises(ValueError, match="ResNet-18"):
        produce_pretrained_encoder(n_tiles=4, encoder="resnet10t", progress=False)


def test_tiny_run_on_the_grid_has_every_row_and_resumes_from_cache():
    cfg = config(regime_seeds=[0, 1])  # seed 1 runs random init at the fewest and most tiles only
    runs = study.run(cfg, progress=False)
    ft = runs.tables["finetune"]
    assert set(ft.seed) == {0} and set(runs.tables["pretraining"].seed) == {0}
    regime = runs.tables["extra_regime_runs"]
    assert set(zip(regime.seed, regime.init, regime.k)) == {(1, "random", 2), (1, "random", 4)}
    assert set(claim_tables(runs)["regime"].seed) == {0, 1}
    lulc = ft[ft.task == "lulc"]
    for init in ["random", "noisy_full", "qda", "majority"]:
        assert set(lulc[lulc.init == init].k) == {2, 4}, init
    for init in study.FEWEST_TILES_ONLY:  # claim 2 and the headroom precondition read them at the fewest tiles only
        assert set(lulc[lulc.init == init].k) == {2}, init
    assert not ft[ft.init == "random"].kept_initial.any()  # a random network is never the best validation point
    floor = lulc[lulc.init == "majority"].set_index("k").miou
    assert (floor < lulc[lulc.init == "qda"].set_index("k").miou).all()  # most frequent class everywhere: the floor
    assert "imagenet" in runs.unavailable and "LABKIT_WEIGHTS_DIR" in runs.unavailable["imagenet"]
    assert "Set parameter 'encoder_weights'" in runs.unavailable["imagenet"]
    assert "imagenet" not in set(ft.init)  # never replaced by random weights
    # pretraining: clean, the clean null (another data order) and each noisy severity, from one initialisation
    pre = runs.tables["pretraining"]
    assert set(zip(pre.labels, pre.order)) == {("clean", 0), ("clean", 1), ("sev0p3", 0), ("sev1", 0)}
    # per seed (shared_pretraining false) with layer_pretrain_steps null: the layer-wise trio reuses the arms' clean
    # and main noisy networks (a row for each purpose, one task); the null in data order 1 is the layers' alone
    purposes = pre.groupby(["labels", "order"]).purpose.apply(lambda v: tuple(sorted(v))).to_dict()
    assert purposes == {
        ("clean", 0): ("arms", "layers"),
        ("clean", 1): ("layers",),
        ("sev0p3", 0): ("arms", "layers"),
        ("sev1", 0): ("arms",),
    }
    rates = pre[(pre.order == 0) & (pre.purpose == "arms")].set_index("labels").pixel_noise_rate
    assert rates["clean"] == 0 and 0 < rates["sev0p3"] < rates["sev1"]
    assert set(ft[ft.task == "structure"].init) == {"random", "noisy_encoder"}
    # the sweep: noisy_full at severity 1 on sweep_k tiles, on top of the main severity's rows
    assert set(lulc[(lulc.init == "noisy_full") & (lulc.k == 2)].pretraining) == {"sev0p3", "sev1"}
    curves, layers = runs.tables["val_curves"], runs.tables["layer_divergence"]
    assert ft.miou.between(0, 1).all() and len(curves) == 2 * len(ft[~ft.init.isin(study.REFERENCE_ROWS)])
    assert {study.setup.LAYER_RAW, study.setup.LAYER_NULL} == set(layers.comparison)
    assert (layers["sample"] == layers["sample"].iloc[0]).all()
    # the frozen linear probes of "features learned": the main noisy-pretrained and the random-init encoder
    probes = runs.tables["probes"]
    assert set(zip(probes.seed, probes.init, probes.pretraining)) == {
        (0, "noisy_encoder", "sev0p3"),
        (0, "random", "none"),
    }
    assert probes.miou.between(0, 1).all() and (probes.k == 2).all() and (probes.steps == study.PROBE_STEPS).all()
    assert_every_trained_run_has_a_budget(runs)
    verdicts = judge_all(study.claims(TINY, runs), runs.tables)
    assert [v["id"] for v in verdicts] == [
        "noisy_pretraining_beats_random",
        "encoder_transfers_to_new_classes",
        "encoder_robust_decoder_sensitive",
        "benefit_shrinks_with_noise",
    ]
    assert all(v["status"] == NOT_EVALUATED for v in verdicts)
    assert all("n seeds 1 < 3" in v["reason"] for v in verdicts[:3])
    assert "3 or more severities above 0" in verdicts[3]["reason"]  # TINY sweeps two noisy severities
    saved = runs.examples["checkpoint"]
    assert saved["saved"] is False and "resnet10t" in saved["reason"] and not runs.checkpoints
    again = study.run(cfg, data=runs.examples["data"], progress=False)  # every task from the cache
    assert again.computed == 0
    pd.testing.assert_frame_equal(again.tables["finetune"].drop(columns="seconds"), ft.drop(columns="seconds"))


def assert_every_trained_run_has_a_budget(runs):
    """Every pretraining and fine-tuning record carries a full budget; the budgets table has one row per run."""
    budgets, s = runs.tables["budgets"], runs.examples["settings"]
    missing = budgets[budgets.missing != ""]
    assert missing.empty, f"{study.STUDY}: trained runs without a full budget: " + "; ".join(
        f"grid {r.grid} ({r.stage} seed {r.seed}): missing {r.missing}" for r in missing.itertuples()
    )
    ft = runs.tables["finetune"]
    n_pre = len(runs.tables["pretraining"])  # no pretraining of the checkpoint's own: it is the arms' encoder
    n_ft = len(ft[~ft.init.isin(study.REFERENCE_ROWS)]) + len(runs.tables["extra_regime_runs"])
    counts = budgets.grid.value_counts()
    assert counts.get(f"{study.STUDY}-pretrain", 0) == n_pre, f"{study.STUDY}: grid {study.STUDY}-pretrain"
    assert counts.get(f"{study.STUDY}-finetune", 0) == n_ft, f"{study.STUDY}: grid {study.STUDY}-finetune"
    n_probe = len(runs.tables["probes"])
    assert set(runs.tables["probes"].network) <= {"arms"}  # the arms' encoder, which is also the checkpoint's
    assert n_probe == 2 * len(s["seeds"]), f"{study.STUDY}: grid {study.STUDY}-probe"
    assert counts.get(f"{study.STUDY}-probe", 0) == n_probe, f"{study.STUDY}: grid {study.STUDY}-probe"
    assert (budgets.batch_size == s["batch_size"]).all() and budgets.trainable_params.gt(0).all()


def test_resnet18_run_saves_the_arms_own_encoder_as_the_named_checkpoint(tmp_path, monkeypatch):
    # its own checkpoints folder: this 3-stage encoder must not become the session's shared checkpoint, which the
    # SAR study's tests load (its encoder needs 4 stages and refuses this one, naming the keys)
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    cfg = config(encoder="resnet18", inits=["random", "noisy_full"], k_values=[2, 3], noise_levels=[0.3])
    runs = study.run(cfg, progress=False)
    saved = runs.examples["checkpoint"]
    assert saved["saved"], saved
    assert runs.checkpoints == [saved["path"]]
    state, meta = load_checkpoint(saved["path"])
    # the arms' own encoder (encoder_depth 3 here: stem to layer2), no pretraining of its own
    assert set(runs.tables["pretraining"].purpose) == {"arms", "layers"}
    model = create_segmenter(
        "unet", encoder="resnet18", weights="random", in_channels=4, num_classes=3, encoder_depth=3
    )
    model.encoder.load_state_dict(state, strict=True)
    arms = runs.tables["pretraining"].query("purpose == 'arms' and labels == 'sev0p3'")
    assert len(arms) == 1 and meta["encoder_depth"] == 3 and meta["steps"] == TINY["pretrain_steps"]
    assert meta["encoder"] == "resnet18" and meta["bands"] == TINY["bands"] and meta["noise_severity"] == 0.3
    assert meta["pixel_noise_rate"] == pytest.approx(float(arms.pixel_noise_rate.iloc[0]))
    # the source task's "features learned" record the SAR study judges its cross-sensor arm on: this study's own
    # precondition on the same encoder's probes (network "arms"), in the format both studies import
    from labkit.models.features_record import FIELDS, check_record

    record = meta["features_learned"]
    assert set(record) == set(FIELDS)
    probes = runs.tables["probes"]
    assert set(probes.network) == {"arms"}
    evidence = study.setup.features_learned("sev0p3", 2).evaluate({"probes": probes})
    assert record["passed"] is evidence["passed"] is False  # one seed: never passed
    assert record["n"] == evidence["evidence"]["n"] == 1 and record["unit"] == "seeds" and record["margin"] == 0
    assert "must be finite" in check_record(record)  # one seed has no interval: SAR would call it unusable
    assert "3 stages" in record["statement"] and "random init" in record["statement"]


def test_the_checkpoint_record_is_the_claims_features_learned_verdict_when_it_is_the_same_encoder():
    """The saved encoder is the arms' own (at any encoder_depth): its sidecar record is the precondition's verdict,
    read by the same constructor from the same table (and it fails alike on equal probes), a well-formed record."""
    from labkit.models.features_record import check_record
    from labkit.studies.noisy_label_pretraining.experiment import checkpoint_features_learned

    tables = _tables(probe_gain=0.08)
    cfg = Config(study.NAME, "test", dict(DEFAULT))
    run = SimpleNamespace(
        s={"encoder_depth": 4, "k_values": [4, 32], "shared_pretraining": True, "probe_steps": 100, "seeds": [0, 1, 2]},
        main="sev0p3",
        data=SimpleNamespace(source="simulated"),
    )
    for gain, passed in ((0.08, True), (0.0, False)):
        tables = _tables(probe_gain=gain)
        record = checkpoint_features_learned(run, tables["probes"])
        verdict = judge(study.declare_claims(cfg)[0], tables)
        pre = _precondition(verdict, FEATURES_LEARNED)
        assert record["passed"] is pre["passed"] is passed
        assert record["estimate"] == pytest.approx(pre["evidence"]["mean_diff"]) and record["n"] == 3
        assert record["ci"] == pytest.approx([pre["evidence"]["ci95_low"], pre["evidence"]["ci95_high"]])
        assert "fine-tuned arms' own" in record["statement"] and "4 stages" in record["statement"]
        assert check_record(record) is None


def _tables(
    random_few=0.30,
    random_many=0.40,
    gain_few=0.10,
    gain_many=0.02,
    late=0.0,
    seeds=(0, 1, 2),
    sweep=(0.08, 0.05, 0.01),
    excess=(0.001, 0.02),
    loss_ratio=0.5,
    size_corr=0.1,
    extra_regime_seeds=0,
    regime_noise=0.0,
    clean_gain=0.12,
    floor=0.05,
    noisy_full_steps=150,
    null_steps=200,
    probe_gain=0.08,
):
    """Claim tables with per-seed jitter: the arms' values, the late gains, the sweep, the layer excess, the floor
    (most frequent class) and the budgets (fine-tunes train 150 steps at k=4, 400 at k=32, pretrainings 200;
    ``noisy_full_steps``: the noisy fine-tunes' steps at k=4, shifted alike at k=32; ``null_steps``: the clean null
    pretraining's)."""
    rng = np.random.default_rng(0)
    j = lambda: float(rng.normal(0, 0.003))  # noqa: E731

    def row(seed, init, k, pretraining, miou, late_gain=0.0, task="lulc"):
        return dict(seed=seed, task=task, init=init, k=k, pretraining=pretraining, miou=miou, late_gain=late_gain)

    runs = []
    for s in seeds:
        for k, base, gain in ((4, random_few, gain_few), (32, random_many, gain_many)):
            runs += [
                row(s, "random", k, "none", base + j(), late),
                row(s, "noisy_full", k, "sev0p3", base + gain + j()),
                row(s, "noisy_encoder", k, "sev0p3", base + gain / 2 + j()),
                row(s, "clean_full", k, "clean", base + clean_gain + j()),
            ]
        runs += [
            row(s, "random", 16, "none", 0.3 + j(), late, task="structure"),
            row(s, "noisy_encoder", 16, "sev0p3", 0.35 + j(), task="structure"),
        ]
    runs = pd.DataFrame(runs)
    a = runs[runs.task == "lulc"]
    gains = (
        (a[a.init == "noisy_full"].set_index(["seed", "k"]).miou - a[a.init == "random"].set_index(["seed", "k"]).miou)
        .rename("gain")
        .reset_index()
    )
    sweep_rows = [dict(seed=s, severity=v, gain=g + j()) for s in seeds for v, g in zip((0.3, 0.6, 1.0), sweep)]
    layers = [dict(seed=s, part=p, excess=e + j() / 10) for s in seeds for p, e in zip(("encoder", "decoder"), excess)]
    pre = pd.DataFrame(
        [
            dict(
                seed=s,
                labels=lab,
                order=0,
                loss_ratio=0.9,
                clean_loss_ratio=loss_ratio,
                clean_val_loss=loss_ratio * 1.5,
                clean_val_prior_loss=1.5,
            )
            | {"purpose": purpose}
            for s in seeds
            for lab in ("clean", "sev0p3")
            for purpose in ("arms", "layers")
        ]
    )
    floor_rows = pd.concat(
        [
            runs[runs.task == "lulc"],
            pd.DataFrame([row(s, "majority", k, "none", floor + j()) for s in seeds for k in (4, 32)]),
        ],
        ignore_index=True,
    )

    def budget(stage, steps, **keys):
        return dict(stage=stage, steps=steps, batch_size=4, lr=5e-3, schedule=f"cosine over {steps}", **keys)

    budgets = [
        budget("pretrain", 800, purpose="arms", seed=0, labels=lab, order=0)
        for lab in ("clean", "sev0p3", "sev0p6", "sev1")
    ] + [
        budget("pretrain", null_steps if order else 200, purpose="layers", seed=s, labels=lab, order=order)
        for s in seeds
        for lab, order in (("clean", 0), ("clean", 1), ("sev0p3", 0))
    ]
    for r in runs.itertuples():
        steps = {4: 150, 32: 400, 16: 200}[r.k]
        steps = steps + noisy_full_steps - 150 if r.init == "noisy_full" else steps
        budgets.append(
            budget("finetune", steps, seed=r.seed, task=r.task, init=r.init, k=r.k, pretraining=r.pretraining)
        )
    regime_seeds = tuple(seeds) + tuple(range(max(seeds) + 1, max(seeds) + 1 + extra_regime_seeds))
    regime = pd.DataFrame(
        [
            row(s, "random", k, "none", base + j(), late)
            for s in regime_seeds
            for k, base in ((4, random_few), (32, random_many + (regime_noise if s % 2 else -regime_noise)))
        ]
    )
    probes = pd.DataFrame(
        [
            dict(seed=s, network="arms", task="lulc", init="random", k=4, pretraining="none", miou=0.25 + j())
            for s in seeds
        ]
        + [
            dict(
                seed=s,
                network="arms",
                task="lulc",
                init="noisy_encoder",
                k=4,
                pretraining="sev0p3",
                miou=0.25 + probe_gain + j(),
            )
            for s in seeds
        ]
    )
    return {
        "runs": runs,
        "probes": probes,
        "regime": regime,
        "curves": runs,
        "gains": gains,
        "sweep": pd.DataFrame(sweep_rows),
        "layers": pd.DataFrame(layers),
        "layer_null": pd.DataFrame([dict(seed=s, null_layers=10) for s in seeds]),
        "layer_size": pd.DataFrame([dict(seed=s, excess_size_corr_abs=size_corr) for s in seeds]),
        "pretraining": pre,
        "floor": floor_rows,
        "budgets": pd.DataFrame(budgets),
    }


DEFAULT = load_spec("noisy_label_pretraining").resolve("default")


def _verdicts(**kw):
    return {v["id"]: v for v in judge_all(study.declare_claims(DEFAULT), _tables(**kw))}


def test_claims_hold_on_evidence_that_shows_them():
    assert {v["status"] for v in _verdicts().values()} == {HELD}


def test_claim_one_needs_the_gain_largest_at_the_fewest_labels():
    v = _verdicts(gain_few=0.02, gain_many=0.10)["noisy_pretraining_beats_random"]
    assert v["status"] == NOT_HELD and "larger at k=4 than at k=32" in v["reason"]


def test_a_step_limited_baseline_leaves_every_gain_claim_not_evaluated():
    # random init still improving in the last fifth: the plateau precondition fails, never "did not hold"
    v = _verdicts(late=0.05, gain_few=-0.1)
    for claim in ("noisy_pretraining_beats_random", "encoder_transfers_to_new_classes", "benefit_shrinks_with_noise"):
        assert v[claim]["status"] == NOT_EVALUATED and "precondition 'plateau' failed" in v[claim]["reason"]


def test_a_baseline_that_more_labels_do_not_help_is_not_label_limited():
    v = _verdicts(random_many=0.305)["noisy_pretraining_beats_random"]
    assert v["status"] == NOT_EVALUATED and "precondition 'label-limited' failed" in v["reason"]


def test_label_limited_reads_the_regime_seeds():
    # a spread over 3 seeds too wide for the interval; the same spread over 8 regime seeds passes
    spread = dict(random_many=0.37, regime_noise=0.05)
    v = _verdicts(**spread)["noisy_pretraining_beats_random"]
    assert v["status"] == NOT_EVALUATED and "precondition 'label-limited' failed" in v["reason"]
    v = _verdicts(**spread, extra_regime_seeds=5)["noisy_pretraining_beats_random"]
    label_limited = next(p for p in v["preconditions"] if p["name"] == "label-limited")
    assert label_limited["passed"] and label_limited["evidence"]["n"] == 8


GAIN_CLAIMS = ("noisy_pretraining_beats_random", "encoder_transfers_to_new_classes", "benefit_shrinks_with_noise")


def test_without_headroom_from_clean_pretraining_the_gain_claims_are_not_evaluated():
    v = _verdicts(clean_gain=0.0, gain_few=-0.05)  # even clean pretraining does not beat random init here
    for claim in GAIN_CLAIMS:  # claim 2 (transfer) too: never "did not hold" where clean pretraining gains nothing
        assert v[claim]["status"] == NOT_EVALUATED and "precondition 'headroom' failed" in v[claim]["reason"]
    assert v["encoder_robust_decoder_sensitive"]["status"] == HELD  # the layer claim does not need it
    transfer = next(p for p in v["encoder_transfers_to_new_classes"]["preconditions"] if p["name"] == "headroom")
    assert "task B has no clean-pretrained arm" in transfer["why"]


def test_unequal_budgets_leave_the_compared_claims_not_evaluated_naming_both():
    v = _verdicts(noisy_full_steps=300)  # the noisy fine-tunes trained twice as long as random init
    for claim in ("noisy_pretraining_beats_random", "benefit_shrinks_with_noise"):
        assert v[claim]["status"] == NOT_EVALUATED and "precondition 'same budget" in v[claim]["reason"]
        assert "steps 300" in v[claim]["reason"] and "steps 150" in v[claim]["reason"]
    assert v["encoder_transfers_to_new_classes"]["status"] == HELD  # its arms (noisy_encoder) kept their budget
    v = _verdicts(null_steps=100)  # the null pretraining of the layer claim trained half as long
    layer = v["encoder_robust_decoder_sensitive"]
    assert layer["status"] == NOT_EVALUATED and "same budget (clean vs the clean null pretraining)" in layer["reason"]


def test_arms_at_the_floor_leave_the_gain_claims_not_evaluated():
    v = _verdicts(floor=0.29)  # the most frequent class everywhere scores about what random init does at k=4
    for claim in GAIN_CLAIMS:
        assert v[claim]["status"] == NOT_EVALUATED, claim
        assert "precondition 'above the floor (random init, k=4)' failed" in v[claim]["reason"], claim
    assert _verdicts(floor=0.2)["noisy_pretraining_beats_random"]["status"] == HELD


FEATURES_LEARNED = "features learned (noisy-pretrained encoder)"
#: The claims that rest on the noisy-pretrained encoder (the layer claim compares weights, not what they predict).
ENCODER_CLAIMS = ("noisy_pretraining_beats_random", "encoder_transfers_to_new_classes", "benefit_shrinks_with_noise")


def test_an_encoder_whose_frozen_probe_does_not_beat_random_init_leaves_its_claims_not_evaluated():
    v = _verdicts(probe_gain=0.0)  # the noisy-pretrained encoder's frozen probe scores what random init's does
    for claim in ENCODER_CLAIMS:
        assert v[claim]["status"] == NOT_EVALUATED, claim
        assert f"precondition '{FEATURES_LEARNED}' failed" in v[claim]["reason"], claim
        p = _precondition(v[claim], FEATURES_LEARNED)
        assert not p["passed"] and "raise pretrain_steps" in p["why"]
    assert v["encoder_robust_decoder_sensitive"]["status"] == HELD  # it does not rest on the probe
    assert _verdicts(probe_gain=0.08)["noisy_pretraining_beats_random"]["status"] == HELD


def test_trained_is_read_on_the_clean_validation_loss():
    v = _verdicts(loss_ratio=0.85)
    for claim in study.declare_claims(DEFAULT):  # every claim rests on a pretraining that learned
        assert v[claim.id]["status"] == NOT_EVALUATED and "precondition 'trained' failed" in v[claim.id]["reason"]
    # the noisy training labels' own loss ratio (0.9 in these tables) is not what it reads
    assert _verdicts(loss_ratio=0.5)["noisy_pretraining_beats_random"]["status"] == HELD


def test_finetune_steps_per_k_interpolate_in_log_k():
    assert study.steps_for_k([200, 400], [4, 32], 4) == 200 and study.steps_for_k([200, 400], [4, 32], 32) == 400
    assert study.steps_for_k([200, 400], [4, 32], 8) == 267  # a third of the way in log k
    assert study.steps_for_k([400, 200], [32, 4], 8) == 267  # paired with k_values as given
    assert study.steps_for_k([200, 400], [4, 32], 2) == 200 and study.steps_for_k([300], [4, 32], 16) == 300
    with pytest.raises(ParameterError, match="finetune_steps"):
        study.validate_settings({**TINY, "finetune_steps": [4, 4, 4]})


def test_layer_claim_is_judged_on_the_excess_over_the_null():
    assert _verdicts(excess=(0.02, 0.001))["encoder_robust_decoder_sensitive"]["status"] == NOT_HELD
    v = _verdicts(size_corr=0.9)["encoder_robust_decoder_sensitive"]
    assert v["status"] == NOT_EVALUATED and "size-free estimator" in v["reason"]


def test_noise_sweep_is_judged_on_noisy_levels_only():
    claim = next(c for c in study.declare_claims(DEFAULT) if c.id == "benefit_shrinks_with_noise")
    severities = {c.a.get("severity") for c in claim.compare}
    assert severities == {0.3, 0.6} and all(c.table == "sweep" for c in claim.compare)  # never severity 0
    assert _verdicts(sweep=(0.01, 0.05, 0.08))["benefit_shrinks_with_noise"]["status"] == NOT_HELD
    for levels in ([0.3], [0.3, 1.0]):  # fewer than three noisy severities: not evaluated, saying what to add
        few = study.declare_claims({**DEFAULT, "noise_levels": levels})[-1]
        assert judge(few, {})["status"] == NOT_EVALUATED and "3 or more severities" in judge(few, {})["reason"]


def test_one_legend_leaves_the_second_task_claim_not_evaluated_with_its_reason():
    claim = study.declare_claims(DEFAULT, unavailable={"structure": "one class definition"})[1]
    assert judge(claim, {})["status"] == NOT_EVALUATED and judge(claim, {})["reason"] == "one class definition"


def test_late_gain_reads_the_last_fifth():
    assert study.late_gain([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.45]) == pytest.approx(0.05)
    assert study.late_gain([0.1, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49]) == 0.0


def test_every_preset_validates_and_paper_matches_the_paper_setting():
    spec = load_spec("noisy_label_pretraining")
    for preset in ("smoke", "default", "paper"):
        study.validate_settings(spec.resolve(preset))
    paper = spec.resolve("paper")
    assert paper.encoder == "resnet18" and paper.tile == 288 and list(paper.bands) == ["B08", "B04", "B03", "B02"]
    assert study.decoder_channels(paper.decoder_width) == (256, 128, 64, 32, 16)
    default = spec.resolve("default")
    assert len(default.seeds) >= 3 and default.tile >= 64 and default.tile // 2**default.encoder_depth >= 4
    assert {4, 32} <= set(default.k_values) and len(default.noise_levels) >= 3 and min(default.noise_levels) > 0


def test_paper_without_data_root_stops_at_once_naming_the_dataset():
    paper = load_spec("noisy_label_pretraining").resolve("paper")
    with pytest.raises(ParameterError) as err:
        study.make_data(paper)
    text = str(err.value)
    assert "NoLDO-S12" in text and "huggingface.co/datasets/vikki23/NoLDO-S12" in text
    assert "images/" in text and "labels_noisy/" in text and "labels_clean/" in text and "data_root" in text


def test_paths_that_do_not_exist_are_named_before_any_work(tmp_path):
    with pytest.raises(ParameterError, match="parameter 'data_root' .*nowhere', which is not an existing folder"):
        study.run(config(data_source="geotiff", data_root=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(ParameterError, match="parameter 'data_root' .* but data_source is 'simulated'"):
        study.run(config(data_root=str(tmp_path)), progress=False)
    with pytest.raises(ParameterError, match="parameter 'encoder_weights' .*w.safetensors', which does not exist"):
        load_spec("noisy_label_pretraining").resolve("smoke", {"encoder_weights": str(tmp_path / "w.safetensors")})


def test_real_tiles_always_pretrain_per_seed():
    # real tiles are split per seed: the first seed's pretraining chips could be another seed's test chips
    from labkit.studies.noisy_label_pretraining.data import shared_pretraining

    spec = load_spec("noisy_label_pretraining")
    assert shared_pretraining(spec.resolve("default")) and not shared_pretraining(spec.resolve("paper"))
    real = spec.resolve("smoke", {"data_source": "geotiff", "shared_pretraining": True})
    assert "shared_pretraining" in real.inapplicable and not shared_pretraining(real)
    assert not shared_pretraining(config(data_source="geotiff", shared_pretraining=True))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tile=36), "tile=36: a 3-stage U-Net needs a multiple of 8"),
        (dict(tile=32, encoder_depth=5), "1x1 deepest map"),
        (dict(noise_models=["boundary", "smudge"]), "noise_models: unknown"),
        (dict(noise_models=["sensor_rule"], bands=["B03", "B02"]), "'sensor_rule' thresholds NDVI"),
        (dict(noise_severity=0.0), "noise_severity must be > 0"),
        (dict(noise_levels=[0.0, 0.5]), "clean pretraining is the reference line"),
        (dict(inits=["noisy_full", "imagenet"]), "inits must include 'random'"),
        (dict(inits=["random", "moco"]), "inits: unknown initialisations"),
        (dict(k_values=[4, 4]), "k_values must be two or more distinct"),
        (dict(bands=["B08", "B99"]), "bands: unknown Sentinel-2 bands"),
    ],
)
def test_bad_settings_are_refused_before_any_training(change, message):
    with pytest.raises(ParameterError, match=message):
        study.run(config(**change), progress=False)


def test_training_refuses_other_band_counts_and_nan_tiles_naming_them():
    from labkit.data import landcover

    model = study.build_model(6, "resnet10t", in_channels=4, decoder_width=8, seed=0)
    labels = np.zeros((2, 32, 32), np.int64)
    with pytest.raises(DataError, match="my tiles: have 3 bands but the model takes 4"):
        study.train(model, np.zeros((2, 3, 32, 32), np.float32), labels, 6, 1, 1, 2, desc="my tiles")
    with pytest.raises(DataError, match="test tiles: have 13 bands but the model takes 4"):
        study.score(model, np.zeros((2, 13, 32, 32), np.float32), labels, 6)
    images = np.random.default_rng(0).random((2, 4, 32, 32)).astype(np.float32)
    images[0, :, :8, :8] = np.nan  # no-data corner
    with pytest.raises(DataError, match="NaN"):
        study.train(model, images, labels, 6, 1, 1, 2, desc="raw tiles")
    x, y, counts = landcover.prepare_tiles(images, labels, 4, 6, names=["a.tif", "b.tif"])
    assert counts["nodata_pixels"] == 64 and (y[0, :8, :8] == 255).all() and (y[0, 8:, 8:] == 0).all()
    fit = study.train(model, x, y, 6, 1, 1, 2, desc="prepared tiles")
    assert len(fit.history) == 1 and np.isfinite(fit.history.train_loss).all()


def test_imagenet_stem_gives_each_band_its_own_colour_filter(tmp_path, monkeypatch):
    """With ImageNet weights at hand (here a stand-in file), R, G, B keep their filters and NIR gets their mean."""
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet10t", pretrained=False)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "resnet10t.c3_in1k.safetensors"
    )
    monkeypatch.setenv("LABKIT_WEIGHTS_DIR", str(tmp_path))
    state = study.imagenet_encoder_state(6, "resnet10t", ["B08", "B04", "B03", "B02"], 8)
    rgb = reference.state_dict()["conv1.0.weight"]
    stem = state["encoder.model.conv1.0.weight"]
    assert stem.shape[1] == 4
    close = lambda a, b: np.allclose(a.numpy(), b.numpy(), atol=1e-6)  # noqa: E731
    assert close(stem[:, 1], rgb[:, 0] * 0.75) and close(stem[:, 3], rgb[:, 2] * 0.75)
    assert close(stem[:, 0], rgb.mean(1) * 0.75)
    model = study.build_model(6, "resnet10t", in_channels=4, decoder_width=8, seed=0)
    model.encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items()}, strict=True)
    monkeypatch.delenv("LABKIT_WEIGHTS_DIR")
    with pytest.raises(WeightsUnavailableError):
        study.imagenet_encoder_state(6, "resnet10t", ["B08", "B04", "B03", "B02"], 8)


def test_real_patch_absent_and_present(tmp_path, shared_data):
    patch, summary = study.real_patch(tmp_path)
    assert patch is None and not summary["available"] and "REFERENCE_SCENES.npy" in summary["reason"]
    assert study.real_patch(None)[1]["available"] is False
    assert study.figures.plot_real_patch(SimpleNamespace(real_patch={"patch": None, "summary": summary})) is None
    root = shared_data / "remote_sensing" / "eolearn_testeopatch_slovenia"
    if not root.is_dir():
        pytest.skip("eo-learn patch absent")
    patch, summary = study.real_patch(root)
    fig = study.figures.plot_real_patch(SimpleNamespace(real_patch={"patch": patch, "summary": summary}))
    assert fig is not None and summary["nodata_label_pixels"] == 155 and summary["class_pixels"]["forest"] == 7601


@pytest.fixture(scope="module")
def untrained():
    """The smoke preset over three seeds (three noisy severities, so the sweep claim is judged) with
    ``pretrain_steps=0``: every 'pretrained' network keeps its initial weights."""
    cfg = load_spec("noisy_label_pretraining").resolve(
        "smoke", {"seeds": [0, 1, 2], "pretrain_steps": 0, "noise_levels": [0.3, 0.6, 1.0], "executor": "serial"}
    )
    runs = study.run(cfg, progress=False)
    return cfg, runs, {**runs.tables, **claim_tables(runs)}


def _judged(cfg, runs, tables):
    return {v["id"]: v for v in judge_all(study.claims(cfg, runs), tables)}


def _precondition(verdict, name):
    return next(p for p in verdict["preconditions"] if p["name"] == name)


def test_zero_pretraining_steps_leave_every_claim_not_evaluated_naming_trained(untrained):
    cfg, runs, tables = untrained
    pre = tables["pretraining"]
    assert (pre.steps == 0).all() and pre.final_loss.isna().all()
    assert (pre.clean_val_prior_loss <= pre.clean_val_train_prior_loss).all()  # the better prior is the bar
    assert (pre.clean_loss_ratio >= study.TRAINED_MAX_RATIO).all(), pre[["labels", "order", "clean_loss_ratio"]]
    assert_every_trained_run_has_a_budget(runs)
    assert (tables["budgets"].query("stage == 'pretrain'").steps == 0).all()
    verdicts = _judged(cfg, runs, tables)
    assert len(verdicts) == 4
    for claim, v in verdicts.items():
        assert v["status"] == NOT_EVALUATED, (claim, v["reason"])
        assert "precondition 'trained' failed" in v["reason"], (claim, v["reason"])
        # what a user can do about it: in the precondition's why, shown with the verdict
        # (the layer-wise claim's per-seed pretrainings: layer_pretrain_steps, null taking pretrain_steps)
        assert "pretrain_steps (0 trains nothing" in _precondition(v, "trained")["why"], claim
        for p in v["preconditions"]:  # the fine-tunes and pretrainings a claim compares had the same budget
            assert not p["name"].startswith("same budget") or p["passed"], (claim, p)
    assert runs.examples["checkpoint"]["saved"] is False  # never saved as 'noisy-pretrained'
    # an encoder that was never pretrained is one random encoder against another: no features learned
    for claim in ENCODER_CLAIMS:
        p = _precondition(verdicts[claim], FEATURES_LEARNED)
        assert not p["passed"], (claim, p["evidence"])
        assert f"precondition '{FEATURES_LEARNED}' failed" in verdicts[claim]["reason"], claim


def test_features_learned_fails_on_equal_probes_through_the_real_tables(untrained):
    cfg, runs, tables = untrained
    probes = tables["probes"].copy()
    assert set(probes.init) == {"noisy_encoder", "random"} and probes.seed.nunique() == 3
    random_ = probes[probes.init == "random"].set_index("seed").miou
    probes.loc[probes.init == "noisy_encoder", "miou"] = probes.loc[probes.init == "noisy_encoder", "seed"].map(random_)
    v = _judged(cfg, runs, {**tables, "probes": probes})
    for claim in ENCODER_CLAIMS:
        assert v[claim]["status"] == NOT_EVALUATED, claim
        assert f"precondition '{FEATURES_LEARNED}' failed" in v[claim]["reason"], claim
        assert not _precondition(v[claim], FEATURES_LEARNED)["passed"]
    # the probes trained the same steps, batch size and schedule for both encoders
    budgets = tables["budgets"].query("stage == 'probe'")
    assert len(budgets) == 6 and budgets[["steps", "batch_size", "lr", "schedule"]].nunique().eq(1).all()


def test_the_probe_trains_the_linear_head_only(untrained, monkeypatch):
    """Through the real task: every encoder weight and batch-norm statistic is unchanged after it, the head moved."""
    from labkit.studies.noisy_label_pretraining import tasks

    cfg, runs, _ = untrained
    made = []

    class Recorded(tasks.LinearProbe):
        def __init__(self, encoder, num_classes):
            super().__init__(encoder, num_classes)
            self.before = {k: v.detach().clone() for k, v in self.state_dict().items()}
            made.append(self)

    monkeypatch.setattr(tasks, "LinearProbe", Recorded)
    s, data = runs.examples["settings"], runs.examples["data"]
    model = {
        "encoder": s["encoder"],
        "encoder_depth": s["encoder_depth"],
        "in_channels": len(s["bands"]),
        "decoder_width": s["decoder_width"],
        "num_classes": len(data.classes_a),
        "num_classes_b": 3,
    }
    record = tasks.probe_task(data.files[0], 0, "random", 2, None, model, 5, 2, study.PROBE_LR)
    (probe,) = made
    after = probe.state_dict()
    encoder_keys = [k for k in after if k.startswith("encoder.")]
    assert encoder_keys and any("running_mean" in k for k in encoder_keys)
    changed = [k for k in encoder_keys if not torch.equal(probe.before[k], after[k])]
    assert not changed, f"the probe changed encoder weights: {changed[:5]}"
    assert any(not torch.equal(probe.before[k], after[k]) for k in after if k.startswith("heads."))
    heads = sum(p.numel() for p in probe.heads.parameters())
    assert record["budget"]["trainable_params"] == heads and record["steps"] == 5


def test_same_budget_and_floor_fail_on_their_negative_controls_through_the_real_tables(untrained):
    cfg, runs, tables = untrained
    budgets = tables["budgets"].copy()
    longer = (budgets.stage == "finetune") & (budgets.init == "noisy_full")
    budgets.loc[longer, "steps"] = budgets.loc[longer, "steps"] * 2
    v = _judged(cfg, runs, {**tables, "budgets": budgets})["noisy_pretraining_beats_random"]
    k = runs.examples["settings"]["k_values"][0]
    failed = _precondition(v, f"same budget (noisy_full vs random, k={k})")
    steps = int(tables["budgets"].query(f"stage == 'finetune' and init == 'random' and k == {k}").steps.iloc[0])
    assert not failed["passed"] and failed["evidence"]["differs"] == ["steps"]
    assert f"steps {2 * steps}" in failed["evidence"]["a"] and f"steps {steps}" in failed["evidence"]["b"]
    floor = tables["floor"].copy()
    floor.loc[floor.init == "majority", "miou"] = 1.0  # a floor no arm can clear
    v = _judged(cfg, runs, {**tables, "floor": floor})
    for claim in ("noisy_pretraining_beats_random", "encoder_transfers_to_new_classes", "benefit_shrinks_with_noise"):
        assert f"precondition 'above the floor (random init, k={k})' failed" in v[claim]["reason"], claim


def test_a_network_that_outputs_the_class_prior_is_not_trained(untrained):
    """The negative control of the "trained" bar: the class prior of the training labels at every pixel, scored
    by the code that scores a pretrained network, sits at ratio 1 (or above, where the clean labels' prior is the
    better bar) and fails it."""
    from labkit.methods import class_prior
    from labkit.studies.noisy_label_pretraining import tasks

    cfg, runs, tables = untrained
    data, s = runs.examples["data"], runs.examples["settings"]
    rows = []
    for seed, file in data.files.items():
        if seed not in s["seeds"]:
            continue
        arrays = tasks._load_arrays(file["path"], file["digest"])
        k = len(data.classes_a)
        for labels in ("clean", s["main_noisy_labels"]):
            y = arrays["a_pretrain" if labels == "clean" else f"a_pretrain_{labels}"]
            ratios = {}
            for name, p in (("training labels", class_prior.class_prior(y, k)), ("uniform", np.full(k, 1 / k))):
                prior = class_prior.ClassPrior(p, arrays["x_val"].shape[1])
                losses = class_prior.clean_validation_losses(prior, arrays, y, k, arrays["a_pretrain"])
                ratios[name] = losses["clean_loss_ratio"]
            # each sits at 1 when it is the best prior, above 1 otherwise: never below
            assert min(ratios.values()) >= 1.0 - 1e-5, ratios
            if losses["clean_val_prior_loss"] == losses["clean_val_train_prior_loss"]:
                assert ratios["training labels"] == pytest.approx(1.0, abs=1e-5)
            # the validation labels' own entropy never exceeds the class prior's loss (it is the best constant)
            assert losses["clean_val_trivial_loss"] <= losses["clean_val_prior_loss"] + 1e-5
            for purpose in ("arms", "layers"):
                rows.append({"seed": seed, "purpose": purpose, "labels": labels, "order": 0, **losses})
    v = _judged(cfg, runs, {**tables, "pretraining": pd.DataFrame(rows)})
    layer = v["encoder_robust_decoder_sensitive"]
    assert layer["status"] == NOT_EVALUATED and "precondition 'trained' failed" in layer["reason"]
    assert not any(p["passed"] for p in layer["preconditions"] if p["name"] == "trained")


#: Every claim that compares a pretrained arm with random initialisation (the layer claim compares weights).
PRETRAINED_VS_RANDOM = (
    "noisy_pretraining_beats_random",
    "encoder_transfers_to_new_classes",
    "benefit_shrinks_with_noise",
)


def test_every_claim_comparing_a_pretrained_arm_with_random_init_carries_headroom_and_same_budget():
    for claim in study.declare_claims(DEFAULT):
        against_random = [
            c
            for c in claim.compare
            if isinstance(c.b, dict) and c.b.get("init") == "random" and c.a.get("init") != "random"
        ] + [c for c in claim.compare if c.table in ("gains", "sweep")]  # gains over random, per seed
        names = {p.name for p in claim.preconditions}
        if claim.id in PRETRAINED_VS_RANDOM:
            assert against_random, claim.id
            assert "headroom" in names, claim.id
            budgets = [n for n in names if n.startswith("same budget")]
            assert budgets, claim.id
        else:
            assert not against_random, claim.id


def test_headroom_fails_on_its_negative_control_through_the_real_tables(untrained):
    """The clean-pretrained upper bound scoring exactly what random init scores, per seed, in the run's own tables:
    'headroom' fails on every claim that compares a pretrained arm with random init; the same tables with the upper
    bound clearly above random init pass it."""
    cfg, runs, tables = untrained
    k = runs.examples["settings"]["k_values"][0]
    results = {}
    for gain in (0.0, 0.2):
        frame = tables["runs"].copy()
        few = (frame.task == "lulc") & (frame.k == k)
        random_ = frame[few & (frame.init == "random")].set_index("seed").miou
        upper = few & (frame.init == "clean_full")
        assert upper.sum() == 3
        frame.loc[upper, "miou"] = frame.loc[upper, "seed"].map(random_) + gain + [0.0, 0.001, -0.001][: upper.sum()]
        results[gain] = _judged(cfg, runs, {**tables, "runs": frame})
    for claim in PRETRAINED_VS_RANDOM:
        assert not _precondition(results[0.0][claim], "headroom")["passed"], claim
        assert _precondition(results[0.2][claim], "headroom")["passed"], claim
        assert results[0.0][claim]["status"] == NOT_EVALUATED, claim


def test_the_layer_null_is_matched_to_the_pair_it_corrects():
    """Labels that change nothing (the noisy pretraining equal to the clean one of the same data order) leave no
    excess in any layer: the raw pair and the null pair differ in the same data order. A null taken against the
    other data order than the raw pair (the mismatched design) would read a negative excess here."""
    from labkit.studies.noisy_label_pretraining import experiment, setup

    cfg = config(seeds=[0])
    data = study.make_data(cfg)
    run = setup.resolve_setup(cfg, data)
    init = experiment._model_from(run.model, len(data.classes_a), 11).state_dict()
    rng = np.random.default_rng(0)

    def trained(scale):
        return {k: (v.numpy() + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in init.items()}

    order0, order1 = trained(0.05), trained(0.05)
    states = {("layers", 0, "clean", 0): order0, ("layers", 0, "clean", 1): order1, ("layers", 0, run.main, 0): order0}
    layers, cka = experiment._layerwise(run, states)
    table = study.tables.layer_excess_table(SimpleNamespace(tables={"layer_divergence": layers}))
    assert len(table) and table.null.gt(0).any()
    np.testing.assert_allclose(table.excess, 0.0, atol=1e-12)
    assert set(cka.comparison) == {setup.LAYER_RAW, setup.LAYER_NULL}
    # noisy weights that do differ give a positive excess
    states[("layers", 0, run.main, 0)] = trained(0.2)
    layers, _ = experiment._layerwise(run, states)
    table = study.tables.layer_excess_table(SimpleNamespace(tables={"layer_divergence": layers}))
    assert table.excess.mean() > 0


def test_no_batch_repeats_a_tile_and_the_batch_is_capped_at_the_tiles():
    from labkit.methods.unet_training import DistinctBatches, effective_batch

    batches = list(DistinctBatches(5, 16, 50, torch.Generator().manual_seed(0)))
    assert len(batches) == 50 and all(sorted(b) == [0, 1, 2, 3, 4] for b in batches)  # 16 capped at the 5 tiles
    batches = list(DistinctBatches(32, 4, 200, torch.Generator().manual_seed(0)))
    assert all(len(set(b)) == 4 for b in batches) and len({i for b in batches for i in b}) == 32
    assert effective_batch(16, 5) == 5 and effective_batch(4, 32) == 4


def test_paper_budgets_are_sane_and_plan_shows_them():
    """At paper: every fine-tune's batch at most its k (no tile twice in a batch), about 200 data epochs per k (not
    12,800), the reference code's fine-tuning rate; the plan refuses nothing and names the cap."""
    from labkit.core.plan import degenerate

    paper = load_spec("noisy_label_pretraining").resolve("paper")
    assert paper.finetune_lr == 5e-4
    plans = study.plan(paper)
    fine = next(p for p in plans if p.grid == "finetune").budgets
    for b in fine:
        assert b.batch <= b.data_items, b.name
        assert 150 <= b.epochs <= 250, (b.name, b.epochs)
        assert "capped at k" in b.notes and "0.0005" in b.notes
    assert not [p for p in degenerate(plans) if "finetune" in p or "probe" in p]


def test_the_fine_tuning_pool_holds_the_sweep_k():
    data = study.make_data(config(k_values=[2, 3], task_b_k=2, sweep_k=5, n_pretrain_tiles=4))
    arrays = np.load(data.files[0]["path"])
    assert len(arrays["x_finetune"]) == 5 and data.summary[0]["tiles"]["finetune"] == 5
