"""The study's methods: encoder adaptation, identical arms, evaluation and the claim logic."""

import numpy as np
import pandas as pd
import pytest
import torch

from labkit.core.errors import CheckpointMismatchError, WeightsUnavailableError
from labkit.core.metrics import ConfusionMatrix
from labkit.studies import sar_transfer as study


@pytest.fixture
def optical_checkpoint(tmp_path, monkeypatch):
    """A stand-in for the noisy-label study's checkpoint: a 4-band ResNet-18 U-Net encoder (depth 5)."""
    import segmentation_models_pytorch as smp

    import labkit.models.registry as registry
    from labkit.core.checkpoints import save_checkpoint

    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    declared = registry.declared_checkpoints()
    if study.CHECKPOINT_NAME not in declared:  # the producing study's spec is not there yet
        monkeypatch.setattr(registry, "declared_checkpoints", lambda: {
            **declared, study.CHECKPOINT_NAME: {"study": "noisy_label_pretraining", "name": study.CHECKPOINT_NAME}})
    torch.manual_seed(123)
    unet = smp.Unet(encoder_name="tu-resnet18", encoder_weights=None, in_channels=4, classes=5)
    state = unet.encoder.state_dict()
    save_checkpoint(registry.named_checkpoint_path(study.CHECKPOINT_NAME), state, {"bands": "RGBN"})
    return state


def test_first_conv_adaptation_keeps_filters_and_band_sum():
    w = torch.randn(64, 4, 7, 7)
    out = study.adapt_input_conv_weight(w, 2)
    assert out.shape == (64, 2, 7, 7)
    torch.testing.assert_close(out.sum(1), w.sum(1))  # response to a band-constant input is preserved
    torch.testing.assert_close(out[:, 0], out[:, 1])
    rgb = torch.randn(8, 3, 3, 3)
    assert study.adapt_input_conv_weight(rgb, 2).shape == (8, 2, 3, 3)
    torch.testing.assert_close(study.adapt_input_conv_weight(w, 4), w)


def test_model_is_resnet18_truncated_after_layer3_with_deeplab_head():
    """As the group's code: torchvision resnet18 up to layer3 (256 channels, stride 16) and DeepLabHead."""
    model = study.create_model(decoder_channels=64).eval()
    keys = model.encoder.state_dict().keys()
    assert any(k.startswith("model.layer3.") for k in keys) and not any(k.startswith("model.layer4.") for k in keys)
    assert model.encoder.out_channels[-1] == 256
    x = torch.zeros(2, 2, 64, 64)
    with torch.no_grad():
        features = model.encoder(x)
        assert features[-1].shape[-2:] == (4, 4)  # stride 16, no dilation
        assert model(x).shape == (2, 4, 64, 64)
    assert type(model.decoder).__name__ == "DeepLabV3Decoder"


def test_sizes_are_checked_before_training():
    from labkit.core.errors import ParameterError

    with pytest.raises(ParameterError, match="multiple of 16.*got 40"):
        study.check_sizes(256, 40)
    with pytest.raises(ParameterError, match="scene_size 96 is too small for tile 64"):
        study.check_sizes(96, 64)
    with pytest.raises(ParameterError, match="scene_size 100 is too small for tile 64"):
        study.make_data(0, scene_size=100, tile=64)
    # refused before any encoder is looked for or produced
    with pytest.raises(ParameterError, match="too small"):
        study.run_study([0], ["random", "cross_sensor"], scene_size=64, tile=48, pretrain_if_missing=True,
                        progress=False)
    study.check_sizes(128, 64)


def test_encoder_state_fits_truncated_encoder(optical_checkpoint):
    encoder = study.create_model().encoder
    loaded, info = study.adapt_encoder_state(optical_checkpoint, encoder)
    encoder.load_state_dict(loaded, strict=True)
    assert info["dropped_stages"] == ["layer4"] and info["first_conv_bands"] == "4 -> 2"
    for key in ("model.layer2.0.conv1.weight", "model.layer3.1.conv2.weight", "model.layer3.0.bn1.running_var"):
        torch.testing.assert_close(encoder.state_dict()[key], optical_checkpoint[key])
    broken = {k: v for k, v in optical_checkpoint.items() if not k.startswith("model.layer1.")}
    with pytest.raises(CheckpointMismatchError, match="lacks .*model.layer1"):
        study.adapt_encoder_state(broken, encoder)


def test_missing_checkpoint_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "empty"))
    encoder = study.create_model().encoder
    with pytest.raises(WeightsUnavailableError, match="labkit reproduce noisy_label_pretraining"):
        study.load_cross_sensor_state(encoder, pretrain_if_missing=False)
    resolved = study.resolve_initialisations(["random", "cross_sensor", "imagenet"], pretrain_if_missing=False)
    assert resolved["random"]["status"] == "ok"
    for init in ("cross_sensor", "imagenet"):  # offline, and no checkpoint: reported, never random
        assert resolved[init]["status"] == "not evaluated"
        assert resolved[init]["reason"].startswith("weights unavailable") and resolved[init]["state"] is None
    with pytest.raises(ValueError, match="unknown initialisation"):
        study.resolve_initialisations(["dino"])


def test_arms_differ_only_in_the_encoder(optical_checkpoint):
    resolved = study.resolve_initialisations(["random", "cross_sensor"])
    assert resolved["cross_sensor"]["status"] == "ok"
    a = study.build_model("random", 7, resolved).state_dict()
    b = study.build_model("cross_sensor", 7, resolved).state_dict()
    for key in a:
        same = torch.equal(a[key], b[key])
        if key.startswith("encoder.") and key.endswith("weight") and "conv" in key:
            assert not same, key
        elif not key.startswith("encoder."):
            assert same, key  # decoder and head start identical
    torch.testing.assert_close(b["encoder.model.conv1.weight"],
                               study.adapt_input_conv_weight(optical_checkpoint["model.conv1.weight"], 2))


def test_scene_scores_average_over_classes_in_the_chart():
    cm = ConfusionMatrix(4)
    target = np.array([0, 0, 2, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 3, 3])  # a false alarm of class 1, absent from the chart
    cm.update(pred, target)
    scores = study.scene_scores(cm)
    assert scores["classes_present"] == 3
    assert scores["miou"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["iou/young_ice"] == 0.0


def test_predict_scene_masks_no_data():
    scene = study.sar.simulate_scene(1, size=80, seed=0, no_data_corner=True)
    norm = study.sar.BandNormalizer().fit([scene])
    model = study.create_model()
    pred = study.predict_scene(model, scene, norm, tile=48, overlap=0.25)
    assert pred.shape == scene.shape
    assert (pred[~scene.valid] == study.IGNORE_INDEX).all()
    assert set(np.unique(pred[scene.valid])) <= {0, 1, 2, 3}


def test_predict_scene_smaller_than_the_tile_is_padded_not_cropped():
    scene = study.sar.simulate_scene(7, size=40, seed=1, no_data_corner=False)
    norm = study.sar.BandNormalizer().fit([scene])
    pred = study.predict_scene(study.create_model(decoder_channels=32), scene, norm, tile=64, overlap=0.25)
    assert pred.shape == (40, 40)
    assert (pred[scene.land] == study.IGNORE_INDEX).all() and set(np.unique(pred[scene.valid])) <= {0, 1, 2, 3}


def test_class_maps_show_land_and_no_data_apart_from_every_class():
    labels = np.array([[0, 1, 2, 3, study.IGNORE_INDEX, study.IGNORE_INDEX]])
    land = np.array([[False] * 4 + [True, False]])
    nodata = np.array([[False] * 5 + [True]])
    rgb = study.class_map_rgb(labels, land, nodata)
    colours = {tuple(np.round(c, 3)) for c in rgb[0]}
    assert len(colours) == 6  # four classes, land and no data all differ
    assert tuple(np.round(rgb[0, 4], 3)) == tuple(np.round(study._rgb(study.LAND_COLOUR), 3))
    scene = study.sar.simulate_scene(7, size=64, seed=0, no_data_corner=True)
    fc = study.false_colour(scene)
    nan = ~np.isfinite(scene.sar).all(0)
    assert np.allclose(fc[nan], study._rgb(study.NO_DATA_COLOUR))


def _fake_results(melt_gain, freeze_gains_by_class, epochs_pre, epochs_rand, seeds=(0, 1, 2)):
    """Scores where the pretrained arm gains ``melt_gain[seed]`` mIoU on melt and the per-class gains on freeze."""
    rng = np.random.default_rng(0)
    rows, fits = [], []
    for s in seeds:
        for season in ("melt", "freeze"):
            base = 0.5 + 0.02 * rng.standard_normal()
            if season == "melt":
                class_gain = {name: melt_gain[s] for name in study.CLASS_NAMES}
            else:
                class_gain = {name: freeze_gains_by_class[name][s] for name in study.CLASS_NAMES}
            for init in ("random", "cross_sensor"):
                on = init == "cross_sensor"
                row = {"seed": s, "init": init, "season": season, "scene": season,
                       "miou": base + (np.mean(list(class_gain.values())) if on else 0.0)}
                row.update({f"iou/{n}": base + (g if on else 0.0) for n, g in class_gain.items()})
                row.update({f"f1/{n}": row[f"iou/{n}"] for n in class_gain})
                rows.append(row)
        for init, epochs in (("random", epochs_rand), ("cross_sensor", epochs_pre)):
            fits.append({"seed": s, "init": init, "best_epoch": 5, "best_val_miou": 0.6,
                         "epochs_to_95": epochs[s], "epochs_run": 10, "seconds": 1.0})
    inits = {"random": {"status": "ok", "reason": "", "label": "r", "info": {}},
             "cross_sensor": {"status": "ok", "reason": "", "label": "c", "info": {}},
             "imagenet": {"status": "not evaluated", "reason": "weights unavailable: offline", "label": "i", "info": {}}}
    return study.SarTransferResults(history=pd.DataFrame(), fits=pd.DataFrame(fits), scores=pd.DataFrame(rows),
                                    confusion={}, predictions={}, example=None, inits=inits, settings={"seconds": 0})


def test_claims_follow_the_evidence():
    mixed = {"open_water": [0.02, 0.01, 0.03], "young_ice": [-0.03, -0.02, -0.04],
             "first_year_ice": [0.0, 0.01, 0.0], "multi_year_ice": [0.01, -0.01, 0.0]}
    good = _fake_results([0.10, 0.12, 0.09], mixed, [2, 3, 2], [6, 7, 5])
    claims = {c["id"]: c for c in study.judge_claims(good)}
    assert good.pretrained_init == "cross_sensor"
    assert [claims[k]["status"] for k in study.CLAIMS] == ["held", "held", "held"]
    assert "cross_sensor" in claims["better_on_melt"]["reason"]

    worse = {k: [-0.1, -0.12, -0.09] for k in study.CLASS_NAMES}
    bad = _fake_results([-0.05, -0.04, -0.06], worse, [6, 7, 5], [2, 3, 2])
    claims = {c["id"]: c for c in study.judge_claims(bad)}
    assert [claims[k]["status"] for k in study.CLAIMS] == ["did not hold"] * 3
    assert claims["freeze_smaller_mixed"]["evidence"]["mixed_sign_across_classes"] is False


def test_freeze_claim_needs_a_melt_gain_not_just_a_melt_difference():
    """A pretrained arm that loses clearly on melt does not make the freeze difference 'smaller' (the paper's
    claim is that the benefit concentrates in the melt season)."""
    mixed = {"open_water": [0.01, 0.02, 0.01], "young_ice": [-0.01, -0.02, -0.01],
             "first_year_ice": [0.0, 0.01, 0.0], "multi_year_ice": [0.0, -0.01, 0.0]}
    res = _fake_results([-0.10, -0.12, -0.09], mixed, [5, 5, 5], [5, 5, 5])
    claims = {c["id"]: c for c in study.judge_claims(res)}
    assert claims["better_on_melt"]["status"] == "did not hold"
    assert claims["freeze_smaller_mixed"]["status"] == "did not hold"
    assert claims["freeze_smaller_mixed"]["evidence"]["melt_gain_minus_abs_freeze_gain"]["mean_diff"] < 0


def test_mixed_signs_count_only_classes_in_the_freeze_chart():
    """A class absent from the freeze chart has no IoU to compare (false alarms alone give 0 vs NaN)."""
    one_sign = {"open_water": [0.02, 0.03, 0.02], "young_ice": [-0.05, -0.04, -0.06],
                "first_year_ice": [0.01, 0.02, 0.01], "multi_year_ice": [0.02, 0.01, 0.02]}
    res = _fake_results([0.10, 0.12, 0.09], one_sign, [2, 3, 2], [6, 7, 5])
    assert {c["id"]: c["status"] for c in study.judge_claims(res)}["freeze_smaller_mixed"] == "held"
    scores = res.scores.copy()
    for name in study.CLASS_NAMES:
        scores[f"present/{name}"] = ~((scores.season == "freeze") & (name == "young_ice"))
    res.scores = scores
    claim = {c["id"]: c for c in study.judge_claims(res)}["freeze_smaller_mixed"]
    assert "young_ice" not in claim["evidence"]["freeze_iou_diff_by_class"]
    assert claim["evidence"]["mixed_sign_across_classes"] is False and claim["status"] == "did not hold"
    table = study.per_class_table(res).set_index(["season", "init", "class"])
    assert table.loc[("freeze", "random", "young_ice"), "n"] == 0
    assert np.isnan(table.loc[("freeze", "random", "young_ice"), "iou_mean"])


def test_common_threshold_convergence_is_reported():
    rows = []
    for seed in (0, 1):
        for init, curve in (("random", [0.2, 0.4, 0.5, 0.6]), ("cross_sensor", [0.45, 0.58, 0.6, 0.7])):
            rows += [{"seed": seed, "init": init, "epoch": e + 1, "val_miou": v} for e, v in enumerate(curve)]
    table = study.epochs_to_common_threshold(pd.DataFrame(rows)).set_index(["seed", "init"])
    assert table.loc[(0, "random"), "epochs_to_common"] == 4  # 0.95 * 0.6 = 0.57
    assert table.loc[(0, "cross_sensor"), "epochs_to_common"] == 2


def test_claims_not_evaluated_without_pretrained_arm_or_seeds():
    res = _fake_results([0.1, 0.1, 0.1], {k: [0, 0, 0] for k in study.CLASS_NAMES}, [1, 1, 1], [2, 2, 2])
    res.inits["cross_sensor"] = {"status": "not evaluated", "reason": "weights unavailable: x", "label": "c",
                                 "info": {}}
    assert {c["status"] for c in study.judge_claims(res)} == {"not evaluated"}
    one = _fake_results([0.1], {k: [0.0] for k in study.CLASS_NAMES}, [1], [2], seeds=(0,))
    claims = study.judge_claims(one)
    assert {c["status"] for c in claims} == {"not evaluated"} and "seed" in claims[0]["reason"]
    assert np.isnan(study.headline_metrics(res)["melt_miou_pretrained"])


def test_tiny_study_runs_both_arms_on_the_same_data(optical_checkpoint):
    res = study.run_study([0, 1], ["random", "cross_sensor"], n_epochs=2, scene_size=96, tile=48,
                          n_train_tiles=16, batch_size=8, progress=False)
    assert res.evaluated == ["random", "cross_sensor"]
    assert len(res.history) == 2 * 2 * 2 and set(res.scores.season) == {"melt", "freeze"}
    assert res.scores["miou"].between(0, 1).all()
    assert res.fits["epochs_to_95"].between(1, 2).all()
    claims = study.judge_claims(res)
    assert [c["id"] for c in claims] == list(study.CLAIMS)
    assert all(c["status"] in ("held", "did not hold") for c in claims)
    metrics = study.headline_metrics(res)
    assert metrics["melt_miou_pretrained"] == pytest.approx(
        res.scores.query("init == 'cross_sensor' and season == 'melt'")["miou"].mean())
    for table in (study.convergence_table(res), study.season_table(res), study.per_class_table(res)):
        assert len(table) > 0
