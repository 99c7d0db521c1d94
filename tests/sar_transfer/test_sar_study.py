"""The study's methods: encoder adaptation, identical arms, evaluation, the grid's tables and the claims."""

import numpy as np
import pandas as pd
import pytest
import torch

from labkit.core.claims import HELD, NOT_EVALUATED, NOT_HELD, budget_record, judge_all, missing_budget
from labkit.core.errors import CheckpointMismatchError, DataError, ParameterError
from labkit.core.metrics import ConfusionMatrix
from labkit.core.params import load_spec
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES, IGNORE_INDEX
from labkit.models.weight_transfer import adapt_input_conv_weight
from labkit.models.weights import unavailable_reason
from labkit.studies import sar_transfer as study
from labkit.studies.sar_transfer import experiment, frames, tables, tasks
from labkit.studies.sar_transfer.claims import CLAIMS, declare_claims
from labkit.studies.sar_transfer.data import (
    CHECKPOINT_NAME,
    INITS,
    check_settings,
    check_sizes,
    data_settings,
    make_data,
    training_tiles,
)


def smoke_cfg(**overrides):
    return load_spec("sar_transfer").resolve("smoke", overrides)


@pytest.fixture
def optical_checkpoint(tmp_path, monkeypatch):
    """A stand-in for the noisy-label study's checkpoint: a 4-band ResNet-18 U-Net encoder (depth 5)."""
    import segmentation_models_pytorch as smp

    import labkit.models.registry as registry
    from labkit.core.checkpoints import save_checkpoint

    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(123)
    unet = smp.Unet(encoder_name="tu-resnet18", encoder_weights=None, in_channels=4, classes=5)
    state = unet.encoder.state_dict()
    save_checkpoint(
        registry.named_checkpoint_path(CHECKPOINT_NAME),
        state,
        {"bands": "RGBN", "study": "noisy_label_pretraining", "produced_by": "test"},
    )
    return state


def test_spec_consumes_the_cross_sensor_checkpoint():
    spec = load_spec("sar_transfer")
    assert CHECKPOINT_NAME in spec.consumes
    assert spec.params["cross_sensor_weights"].presets["default"] == f"labkit:{CHECKPOINT_NAME}"


def test_first_conv_adaptation_keeps_filters_and_band_sum():
    w = torch.randn(64, 4, 7, 7)
    out = adapt_input_conv_weight(w, 2)
    assert out.shape == (64, 2, 7, 7)
    torch.testing.assert_close(out.sum(1), w.sum(1))  # response to a band-constant input is preserved
    torch.testing.assert_close(out[:, 0], out[:, 1])
    rgb = torch.randn(8, 3, 3, 3)
    assert adapt_input_conv_weight(rgb, 2).shape == (8, 2, 3, 3)
    torch.testing.assert_close(adapt_input_conv_weight(w, 4), w)


def test_model_is_resnet18_truncated_after_layer3_with_deeplab_head():
    """As the group's code: torchvision resnet18 up to layer3 (256 channels, stride 16) and DeepLabHead."""
    model = tasks.create_model(decoder_channels=64).eval()
    keys = model.encoder.state_dict().keys()
    assert any(k.startswith("model.layer3.") for k in keys) and not any(k.startswith("model.layer4.") for k in keys)
    assert model.encoder.out_channels[-1] == 256
    x = torch.zeros(2, 3, 64, 64)  # co-pol, cross-pol, incidence angle: the authors' three inputs
    with torch.no_grad():
        features = model.encoder(x)
        assert features[-1].shape[-2:] == (4, 4)  # stride 16, no dilation
        assert model(x).shape == (2, 4, 64, 64)
    assert type(model.decoder).__name__ == "DeepLabV3Decoder"


def test_settings_are_checked_before_any_work(tmp_path):
    with pytest.raises(ParameterError, match="multiple of 16.*got 40"):
        check_sizes(256, 40)
    with pytest.raises(ParameterError, match="scene_size 96 is too small for tile 64"):
        check_sizes(96, 64)
    with pytest.raises(ParameterError, match="at least two distinct"):
        check_settings(smoke_cfg(tiles=[16, 16]))
    with pytest.raises(ParameterError, match="cross_sensor_weights.*does not exist"):
        check_settings(smoke_cfg(cross_sensor_weights=str(tmp_path / "typo.safetensors")))
    with pytest.raises(ParameterError, match="imagenet_weights.*does not exist"):
        check_settings(smoke_cfg(imagenet_weights=str(tmp_path / "missing.pth")))
    with pytest.raises(ParameterError, match="data_root.*is not an existing folder"):
        check_settings(smoke_cfg(data_source="geotiff", data_root=str(tmp_path / "nowhere")))
    with pytest.raises(ParameterError, match="include random"):
        check_settings(smoke_cfg(inits=["cross_sensor"]))
    check_settings(smoke_cfg())


def test_paper_preset_without_data_root_names_the_dataset_layout_and_source():
    cfg = load_spec("sar_transfer").resolve("paper")
    with pytest.raises(ParameterError) as info:
        check_settings(cfg)
    message = str(info.value)
    assert "extremeearth" in message and "data_root" in message
    assert "10.5281/zenodo.4683174" in message  # where it is published
    assert "denoised_resampled" in message and "labels_rasterized" in message  # the layout


def test_encoder_state_fits_truncated_encoder(optical_checkpoint):
    encoder = tasks.create_model().encoder
    loaded, info = experiment.adapt_encoder_state(optical_checkpoint, encoder, "the stand-in checkpoint")
    encoder.load_state_dict(loaded, strict=True)
    assert info["dropped_stages"] == ["layer4"] and info["first_conv_bands"] == "4 -> 3"
    for key in ("model.layer2.0.conv1.weight", "model.layer3.1.conv2.weight", "model.layer3.0.bn1.running_var"):
        torch.testing.assert_close(encoder.state_dict()[key], optical_checkpoint[key])
    broken = {k: v for k, v in optical_checkpoint.items() if not k.startswith("model.layer1.")}
    with pytest.raises(CheckpointMismatchError, match="lacks .*model.layer1"):
        experiment.adapt_encoder_state(broken, encoder, "a broken checkpoint")


def test_the_noisy_studys_4_stage_encoder_fills_every_key_and_a_short_or_foreign_state_is_named(optical_checkpoint):
    """The noisy-label study now saves its arms' own 4-stage encoder (stem to layer3): nothing to drop, every key the
    truncated encoder loads comes from the file (the first convolution adapted from its 4 bands); a 3-stage state,
    or a state with blocks the encoder has no place for (a ResNet-34), is an error naming the keys, through
    resolve_weights before any work, naming the parameter and the file."""
    import labkit.models.registry as registry
    from labkit.core.checkpoints import save_checkpoint
    from labkit.methods.unet_training import build_model

    encoder = tasks.create_model().encoder
    state = {k: v.detach().clone() for k, v in build_model(6, "resnet18", 4, 8, seed=5, encoder_depth=4).encoder.state_dict().items()}  # fmt: skip
    loaded, info = experiment.adapt_encoder_state(state, encoder, "the 4-stage encoder")
    assert info["dropped_keys"] == 0 and info["dropped_stages"] == [] and set(loaded) == set(encoder.state_dict())
    for key, value in loaded.items():
        expected = adapt_input_conv_weight(state[key], 3) if key == "model.conv1.weight" else state[key]
        torch.testing.assert_close(value, expected)
    short = {k: v for k, v in state.items() if not k.startswith("model.layer3.")}  # a 3-stage encoder
    with pytest.raises(CheckpointMismatchError, match=r"lacks \d+ key\(s\) .*\(in layer3\).*at least 4 stages"):
        experiment.adapt_encoder_state(short, encoder, "a 3-stage encoder")
    deeper = {**state, "model.layer1.2.conv1.weight": state["model.layer1.0.conv1.weight"]}  # a ResNet-34's block
    with pytest.raises(CheckpointMismatchError, match=r"no place for: \['model.layer1.2.conv1.weight'\]"):
        experiment.adapt_encoder_state(deeper, encoder, "a deeper encoder")
    path = save_checkpoint(registry.named_checkpoint_path(CHECKPOINT_NAME), short, {"study": "noisy_label_pretraining"})
    with pytest.raises(CheckpointMismatchError, match="parameter 'cross_sensor_weights'.*" + path.name):
        experiment.resolve_weights(smoke_cfg())


def test_missing_weights_are_reported_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "empty"))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = smoke_cfg(inits=["random", "cross_sensor", "imagenet"], pretrain_if_missing=False)
    weights = experiment.resolve_weights(cfg)
    assert weights["random"]["status"] == "ok"
    for arm in ("cross_sensor", "imagenet"):  # offline, and no checkpoint: reported, never random
        assert weights[arm]["status"] == "not evaluated" and weights[arm]["path"] is None
        assert weights[arm]["reason"].startswith("weights unavailable")
    assert "labkit reproduce noisy_label_pretraining" in weights["cross_sensor"]["reason"]
    claims = {c.id: c for c in declare_claims(cfg, unavailable=experiment.unavailable_arms(weights))}
    assert "LABKIT_WEIGHTS_DIR" in claims["better_on_melt"].unavailable  # the paper's arm: what to do
    assert claims["better_on_melt_cross_sensor"].unavailable.startswith("weights unavailable")


def test_weights_record_the_checkpoint_and_its_provenance(optical_checkpoint):
    weights = experiment.resolve_weights(smoke_cfg())
    cs = weights["cross_sensor"]
    assert cs["status"] == "ok" and cs["digest"] and cs["path"].endswith(".safetensors")
    prov = cs["provenance"]
    assert prov["checkpoint"] == CHECKPOINT_NAME and len(prov["sha256"]) == 64
    assert prov["checkpoint_meta"]["produced_by"] == "test" and prov["produced_here"] is False
    table = frames.weights_frame(weights)
    assert "sha256" in table.set_index("arm").loc["cross_sensor", "weights"]


def test_the_cross_sensor_description_is_generated_from_the_checkpoint_sidecar(optical_checkpoint):
    """Issue 31: a checkpoint made on 13-band tiles is described as such (never as "labkit's 4-band optical
    land-cover encoder"), with the digest of the file the run used."""
    import labkit.models.registry as registry
    from labkit.core.checkpoints import save_checkpoint

    bands = [f"B{i:02d}" for i in range(1, 14)]
    save_checkpoint(
        registry.named_checkpoint_path(CHECKPOINT_NAME),
        optical_checkpoint,
        {"study": "noisy_label_pretraining", "bands": bands, "in_channels": 13, "data_source": "geotiff",
         "classes": ["forest", "water"], "n_tiles": 12, "encoder": "resnet18", "encoder_depth": 5},
    )  # fmt: skip
    weights = experiment.resolve_weights(smoke_cfg())
    cs = weights["cross_sensor"]
    text = cs["label"]
    assert "13-band" in text and "B13" in text and "2 classes (forest, water)" in text, text
    assert "4-band" not in text and "land-cover" not in text and "resnet18 encoder (5 stages)" in text
    assert cs["provenance"]["sha256"][:12] in text and "noisy_label_pretraining" in text
    table = frames.weights_frame(weights).set_index("arm")
    assert table.loc["cross_sensor", "description"] == text
    claims = declare_claims(smoke_cfg(), descriptions={"cross_sensor": text})
    assert any(text in (c.note or "") for c in claims)


def test_a_weights_file_is_an_option(tmp_path, optical_checkpoint):
    """e.g. Sentinel-1 pretrained ResNet-18 weights a user has: timm key names, 2 input bands, a classifier."""
    import timm

    from labkit.core.checkpoints import save_checkpoint

    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False, in_chans=2).state_dict()
    file = save_checkpoint(tmp_path / "s1_resnet18", state, {"source": "user"})
    weights = experiment.resolve_weights(smoke_cfg(cross_sensor_weights=str(file)))
    assert weights["cross_sensor"]["status"] == "ok"
    assert weights["cross_sensor"]["provenance"]["first_conv_bands"] == "2 -> 3"
    description = weights["cross_sensor"]["label"]  # generated from the file, with its digest
    assert "s1_resnet18.safetensors" in description and weights["cross_sensor"]["digest"] != ""
    assert weights["cross_sensor"]["provenance"]["sha256"][:12] in description
    model = tasks.build_model("cross_sensor", 0, weights["cross_sensor"]["path"], 32)
    torch.testing.assert_close(
        model.encoder.state_dict()["model.layer2.0.conv1.weight"], state["layer2.0.conv1.weight"]
    )


def test_arms_differ_only_in_the_encoder(optical_checkpoint):
    weights = experiment.resolve_weights(smoke_cfg())
    a = tasks.build_model("random", 7).state_dict()
    b = tasks.build_model("cross_sensor", 7, weights["cross_sensor"]["path"]).state_dict()
    for key in a:
        same = torch.equal(a[key], b[key])
        if key.startswith("encoder.") and key.endswith("weight") and "conv" in key:
            assert not same, key
        elif not key.startswith("encoder."):
            assert same, key  # decoder and head start identical
    torch.testing.assert_close(
        b["encoder.model.conv1.weight"], adapt_input_conv_weight(optical_checkpoint["model.conv1.weight"], 3)
    )


def test_scene_scores_average_over_classes_in_the_chart():
    cm = ConfusionMatrix(4)
    target = np.array([0, 0, 2, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 3, 3])  # a false alarm of class 1, absent from the chart
    cm.update(pred, target)
    scores = tasks.scene_scores(cm)
    assert scores["classes_present"] == 3
    assert scores["miou"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["iou/young_ice"] == 0.0


def test_predict_scene_masks_no_data():
    scene = sar.simulate_scene(1, size=80, seed=0, no_data_corner=True)
    norm = sar.BandNormalizer().fit([scene])
    pred = tasks.predict_scene(tasks.create_model(), scene, norm, tile=48, overlap=0.25)
    assert pred.shape == scene.shape
    assert (pred[~scene.valid] == IGNORE_INDEX).all()
    assert set(np.unique(pred[scene.valid])) <= {0, 1, 2, 3}


def test_predict_scene_smaller_than_the_tile_is_padded_not_cropped():
    scene = sar.simulate_scene(7, size=40, seed=1, no_data_corner=False)
    norm = sar.BandNormalizer().fit([scene])
    pred = tasks.predict_scene(tasks.create_model(decoder_channels=32), scene, norm, tile=64, overlap=0.25)
    assert pred.shape == (40, 40)
    assert (pred[scene.land] == IGNORE_INDEX).all() and set(np.unique(pred[scene.valid])) <= {0, 1, 2, 3}


def test_simulated_data_has_several_test_scenes_per_season_each_with_its_own_weather():
    cfg = smoke_cfg(n_test_scenes=3)
    data = make_data(data_settings(cfg), 0)
    seasons = [s.season for s in data.test_scenes]
    assert seasons.count("freeze") == 3 and seasons.count("melt") == 3
    winds = {round(s.meta["wind_speed"], 3) for s in data.test_scenes}
    temps = {round(s.meta["air_temperature"], 3) for s in data.test_scenes}
    assert len(winds) == 6 and len(temps) == 6
    assert {s.month for s in data.train_scenes}.isdisjoint({1, 7})
    few, _ = training_tiles(data, data_settings(cfg), 0, 16)
    many, _ = training_tiles(data, data_settings(cfg), 0, 32)
    np.testing.assert_array_equal(few, many[:16])  # fewer tiles are a subset of more


def test_late_gain_measures_the_plateau():
    assert tasks.late_gain([0.1, 0.3, 0.5, 0.6, 0.61, 0.6, 0.6, 0.6, 0.6, 0.6]) == pytest.approx(-0.01)
    assert tasks.late_gain([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]) == pytest.approx(0.2)


def test_pixel_features_are_the_bands_and_local_means():
    img = np.random.default_rng(0).standard_normal((2, 12, 10)).astype(np.float32)
    feats = tasks.pixel_features(img)
    assert feats.shape == (120, 8)
    np.testing.assert_allclose(feats[:, 0], img[0].ravel())
    np.testing.assert_allclose(feats[:, 6], (img[0] - img[1]).ravel(), atol=1e-6)


# ---- tables and claims on fake records ---------------------------------------------------------------


def _record(arm, seed, n_tiles, miou, curve=None, class_iou=None):
    scenes = []
    for season in ("freeze", "melt"):
        for k in range(3):
            ious = (class_iou or {}).get(season, {n: miou[season] for n in CLASS_NAMES})
            row = {
                "scene": f"{season}_{k + 1}",
                "season": season,
                "month": 1 if season == "freeze" else 7,
                "wind_speed": 5.0,
                "air_temperature": -20.0,
                "miou": miou[season] + 0.001 * k,
                "mean_f1": 0.5,
                "pixel_accuracy": 0.5,
                "classes_present": 4,
            }
            for name in CLASS_NAMES:
                row[f"iou/{name}"] = ious[name]
                row[f"f1/{name}"] = ious[name]
                row[f"present/{name}"] = True
            scenes.append(row)
    rec = {"arm": arm, "seed": seed, "n_tiles": n_tiles, "scenes": scenes, "confusion": {}, "maps": {}, "seconds": 1.0}
    if curve is not None:
        rec.update(
            val_miou=np.asarray(curve, float),
            train_loss=np.ones(len(curve)),
            steps_per_epoch=3,
            epochs=len(curve),
            best_val_miou=max(curve),
            late_gain=tasks.late_gain(curve),
            budget=budget_record(3 * len(curve), 8, 1e-3, f"constant over {3 * len(curve)} steps", 1000),
        )
    return rec


def _probe(arm, seed, miou):
    scenes = [{"scene": f"{season}_1", "season": season, "miou": miou} for season in ("freeze", "melt")]
    budget = budget_record(tasks.PROBE_STEPS, 8, tasks.PROBE_LR, "constant", 1028)
    return {"arm": arm, "seed": seed, "n_tiles": 16, "probe": True, "scenes": scenes, "budget": budget}


def _coverage(n_tiles, distinct, area=10_000):
    drawn = n_tiles * 100
    return {"tiles": n_tiles, "drawn_pixels": drawn, "distinct_pixels": distinct, "area_pixels": area,
            "distinct_per_tile": distinct / n_tiles, "oversampling": drawn / distinct, "area_covered": distinct / area}  # fmt: skip


# A producer's source-task record, as the noisy-label study writes it into its checkpoint's sidecar.
LEARNED = {
    "passed": True,
    "estimate": 0.0696,
    "ci": [0.0118, 0.1274],
    "n": 3,
    "unit": "seeds",
    "statement": "the sev0p3-pretrained encoder, frozen, with a linear per-pixel head beats the same U-Net's "
    "random-init encoder probed alike",
    "margin": 0.0,
}
NOT_LEARNED = {**LEARNED, "passed": False, "estimate": 0.002, "ci": [-0.03, 0.034]}


def _results(
    seeds=(0, 1, 2, 3),
    pre_faster=True,
    melt_gain=0.05,
    freeze_mixed=True,
    data_limited=True,
    floor=0.2,
    area=True,
    record=LEARNED,
):
    cfg = smoke_cfg(seeds=list(seeds), tiles=[16, 64])
    slow = [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6]
    fast = [0.3, 0.5, 0.58, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    records = []
    rng = np.random.default_rng(0)
    for s in seeds:
        base = 0.5 + 0.01 * rng.standard_normal()
        noise = 0.002 * rng.standard_normal()
        records.append(
            _record("random", s, 16, {"freeze": base, "melt": base}, slow) | {"coverage": _coverage(16, 1500)}
        )
        rich = base + (0.1 if data_limited else 0.0) + noise
        # the data-rich tiles: from 4x the distinct area of the fewest, or (area=False) nearly the same pixels again
        cover = _coverage(64, 6000 if area else 2000)
        records.append(_record("random", s, 64, {"freeze": rich, "melt": rich}, slow) | {"coverage": cover})
        classes = {n: base for n in CLASS_NAMES}
        if freeze_mixed:
            classes = {
                "open_water": base + 0.02,
                "young_ice": base - 0.02,
                "first_year_ice": base,
                "multi_year_ice": base,
            }
        records.append(
            _record(
                "cross_sensor",
                s,
                16,
                {"freeze": base + noise, "melt": base + melt_gain + noise},
                fast if pre_faster else slow[:1] + slow[:-1],
                class_iou={"freeze": classes},
            )
        )
        records.append(_record("gbm", s, 16, {"freeze": 0.45, "melt": 0.4}))
        for n_tiles in (16, 64):
            records.append(_record("majority", s, n_tiles, {"freeze": floor, "melt": floor}))
    probe = {s: 0.4 + 0.01 * rng.standard_normal() for s in seeds}
    probes = [_probe("random", s, probe[s]) for s in seeds]
    probes += [_probe("cross_sensor", s, probe[s] + 0.05 + 0.005 * rng.standard_normal()) for s in seeds]
    weights = {
        "random": {"status": "ok", "reason": "", "label": "r", "provenance": {}},
        "cross_sensor": {"status": "ok", "reason": "", "label": "c", "provenance": {}},
        "imagenet": {
            "status": "not evaluated",
            "reason": unavailable_reason("imagenet_weights", "resnet18"),
            "label": "i",
            "provenance": {},
        },
    }
    # the sidecar's record through the study's own reading of it
    meta = {"study": "noisy_label_pretraining", **({"features_learned": record} if record is not None else {})}
    experiment._source_task_record(
        weights["cross_sensor"]["provenance"], "cross_sensor", f"labkit:{CHECKPOINT_NAME}", meta, "ckpt.json"
    )
    settings = dict(cfg)
    return cfg, frames.GridRecords(records=records, weights=weights, settings=settings, probes=probes)


def _verdicts(cfg, res):
    runs = experiment.gather(res)  # the claims judged as the notebook's report.conclude judges them
    return {v["id"]: v for v in judge_all(study.claims(cfg, runs), runs.tables)}


def _smoke_grid(cfg):
    """The smoke grid's records, run serially in this process."""
    return experiment.run_grid(cfg, experiment.resolve_weights(cfg), progress=False, threads=1)


def test_claims_follow_the_evidence():
    cfg, res = _results()
    v = _verdicts(cfg, res)
    assert [v[f"{c}_cross_sensor"]["status"] for c in CLAIMS] == [HELD, HELD, HELD]
    for c in CLAIMS:  # the paper's arm: not evaluated, with what to do
        assert v[c]["status"] == NOT_EVALUATED and "LABKIT_WEIGHTS_DIR" in v[c]["reason"]
    conv = frames.convergence_frame(res)
    bar = conv[conv.arm == "random"]["threshold"].iloc[0]
    assert bar == pytest.approx(0.95 * 0.6)  # the common bar: 95 % of the lower arm's best
    epochs = conv.pivot_table(index="seed", columns="arm", values="epochs_to_common")
    assert (epochs["random"] == 7).all() and (epochs["cross_sensor"] == 3).all()
    assert (conv["steps_to_common"] == 3 * conv["epochs_to_common"]).all()

    cfg, res = _results(pre_faster=False, melt_gain=-0.05, freeze_mixed=False)
    v = _verdicts(cfg, res)
    assert [v[f"{c}_cross_sensor"]["status"] for c in CLAIMS] == [NOT_HELD] * 3


def test_claims_are_not_evaluated_outside_their_regime():
    cfg, res = _results(data_limited=False)
    v = _verdicts(cfg, res)
    for c in ("better_on_melt_cross_sensor", "freeze_smaller_mixed_cross_sensor"):
        assert v[c]["status"] == NOT_EVALUATED and "precondition 'data-limited' failed" in v[c]["reason"]
    assert v["faster_convergence_cross_sensor"]["status"] == HELD
    # an arm still climbing at the end of training has not plateaued
    for r in res.records:
        if r["arm"] == "random" and r["n_tiles"] == 16:
            r["val_miou"] = np.linspace(0.1, 0.6, 10)
            r["late_gain"] = tasks.late_gain(r["val_miou"])
    v = _verdicts(cfg, res)
    assert "precondition 'plateau (random)' failed" in v["faster_convergence_cross_sensor"]["reason"]
    cfg, res = _results(seeds=(0, 1))
    assert "n seeds 2 < 3" in _verdicts(cfg, res)["better_on_melt_cross_sensor"]["reason"]


def test_a_data_rich_control_still_climbing_leaves_the_season_claims_not_evaluated():
    """Issue 29: the data-limited control is read in epochs; a data-rich run that has not plateaued is step-limited."""
    cfg, res = _results()
    for r in res.records:
        if r["arm"] == "random" and r["n_tiles"] == 64:
            r["val_miou"] = np.linspace(0.1, 0.6, 10)  # negative control: still rising at its last epoch
            r["late_gain"] = tasks.late_gain(r["val_miou"])
    v = _verdicts(cfg, res)
    for c in ("better_on_melt_cross_sensor", "freeze_smaller_mixed_cross_sensor"):
        assert v[c]["status"] == NOT_EVALUATED
        assert "precondition 'plateau (random, data-rich)' failed" in v[c]["reason"]
    assert v["faster_convergence_cross_sensor"]["status"] == HELD


def test_a_training_area_too_small_for_the_data_rich_tiles_leaves_the_season_claims_not_evaluated():
    """Issue 29: 16x the tiles drawn from nearly the same pixels is not a data-rich control."""
    cfg, res = _results()
    v = _verdicts(cfg, res)
    assert v["better_on_melt_cross_sensor"]["status"] == HELD
    cfg, res = _results(area=False)  # negative control: the data-rich tiles from 1.33x the fewest's distinct area
    v = _verdicts(cfg, res)
    for c in ("better_on_melt_cross_sensor", "freeze_smaller_mixed_cross_sensor"):
        assert v[c]["status"] == NOT_EVALUATED and "precondition 'distinct area' failed" in v[c]["reason"]
    assert v["faster_convergence_cross_sensor"]["status"] == HELD  # convergence reads no data-rich run
    runs = experiment.gather(res)
    table = tables.coverage_table(runs).set_index("n_tiles")
    assert table.loc[64, "oversampling"] == pytest.approx(3.2) and table.loc[64, "area_gain"] == pytest.approx(
        1.33, 0.01
    )
    assert table.loc[16, "distinct_per_tile"] == 94  # 1500 distinct pixels / 16 tiles


def test_tile_coverage_counts_distinct_pixels_and_oversampling():
    scene = sar.simulate_scene(2, size=64, seed=0, no_data_corner=False)
    scene.labels[:] = 0  # every pixel labelled
    same = np.array([[0, 0, 0]] * 4)  # four draws of the same tile
    cov = sar.tile_coverage([scene], same, 16)
    assert cov["distinct_pixels"] == 256 and cov["drawn_pixels"] == 1024 and cov["oversampling"] == 4.0
    apart = np.array([[0, 0, 0], [0, 0, 16], [0, 16, 0], [0, 16, 16]])
    cov = sar.tile_coverage([scene], apart, 16)
    assert cov["oversampling"] == 1.0 and cov["area_covered"] == pytest.approx(1024 / 64**2)


def test_a_small_training_area_warns_with_the_oversampling_factor(recwarn):
    cfg, res = _results()
    for r in res.records:
        if r.get("coverage") and r["n_tiles"] == 64:
            r["coverage"] = _coverage(64, 400)  # 6400 pixels drawn from 400: 16x
    with pytest.warns(UserWarning, match="drawn 16.0 times on average"):
        experiment.warn_oversampling(res)
    cfg, res = _results()
    experiment.warn_oversampling(res)
    assert not [w for w in recwarn if "times on average" in str(w.message)]


def test_tables_show_floor_reference_and_per_scene_scores():
    cfg, res = _results()
    runs = experiment.gather(res)
    regime = tables.regime_table(runs)
    assert {"claims' regime", "data-rich (ceiling)", "classical reference"} <= set(regime.role)
    assert (regime.dropna(subset=["epochs_mean"])["epochs_mean"] == 10).all()  # the epochs each run trained
    scenes = tables.scene_table(runs)
    assert len(scenes) == 6 and {"random", "cross_sensor", "gbm"} <= set(scenes.columns)
    seasons = tables.season_table(runs)
    assert set(seasons.season) == {"freeze", "melt"}
    metrics = study.headline(runs)
    assert metrics["pretrained_arm"] == "cross_sensor" and metrics["headline_arm"] == "cross_sensor"
    assert "cross-sensor encoder (ImageNet weights absent)" in metrics["headline_note"]
    assert metrics["melt_miou_pretrained"] == pytest.approx(
        frames.season_frame(res).query("arm == 'cross_sensor' and season == 'melt' and n_tiles == 16")["miou"].mean()
    )
    assert len(tables.per_class_table(runs)) > 0 and not tables.convergence_table(runs).empty
    assert isinstance(frames.history_frame(res), pd.DataFrame)


# ---- budgets, the same-budget and above-the-floor preconditions --------------------------------------


def test_every_trained_arm_of_a_smoke_run_records_its_budget(optical_checkpoint):
    cfg = smoke_cfg()
    res = _smoke_grid(cfg)
    trained = [r for r in res.records if r["arm"] in INITS]
    assert {r["arm"] for r in trained} == set(cfg["inits"])
    for r in trained:
        missing = missing_budget(r)
        assert not missing, f"sar_transfer grid: the {r['arm']} record at {r['n_tiles']} tiles lacks budget {missing}"
        # the budget granted (every arm the same epochs and stopping rule); the steps taken may be fewer
        assert r["budget"]["steps"] == cfg["epochs"] * r["steps_per_epoch"] >= r["steps_taken"]
        assert "early stopping after 20 epochs" in r["budget"]["schedule"] and len(r["lr_history"]) == r["epochs"]
    # the frozen probes: one per arm and seed, the encoder at its initial weights, only the readout trained
    assert {(p["arm"], p["seed"]) for p in res.probes} == {(a, s) for a in cfg["inits"] for s in cfg["seeds"]}
    for p in res.probes:
        missing = missing_budget(p)
        assert not missing, f"sar_transfer grid: the {p['arm']} frozen probe record lacks budget {missing}"
        assert p["budget"]["steps"] == tasks.PROBE_STEPS and p["budget"]["trainable_params"] == 4 * 256 + 4
        assert p["encoder_digest_after"] == p["encoder_digest_before"]
        initial = tasks.build_model(p["arm"], p["seed"], res.weights[p["arm"]]["path"], cfg["decoder_channels"])
        assert p["encoder_digest_before"] == tasks.state_digest(initial.encoder), p["arm"]
    probes = frames.claim_tables(res)["probes"]
    assert len(probes) == len(res.probes) and probes["miou"].between(0, 1).all()
    probe_rows = tables.probe_table(experiment.gather(res)).set_index("arm")  # each arm, then each paired difference
    assert set(probe_rows.index) == {*cfg["inits"], "cross_sensor - random"}
    assert probe_rows.loc["cross_sensor - random", "row"] == "frozen features on SAR vs random init (paired)"
    budgets = frames.claim_tables(res)["budgets"]
    assert set(budgets.arm) == set(cfg["inits"]) and budgets["seeds"].sum() == len(trained)
    few = budgets[budgets.n_tiles == min(cfg["tiles"])].set_index("arm")
    assert few.loc["random", "steps"] == few.loc["cross_sensor", "steps"]
    assert few.loc["random", "schedule"] == few.loc["cross_sensor", "schedule"]
    # the stand-in's sidecar records no source-task result: its claims are not evaluated, naming what to provide
    for c, verdict in _verdicts(cfg, res).items():
        if c.endswith("_cross_sensor"):
            assert verdict["status"] == NOT_EVALUATED and "records no 'features_learned'" in verdict["reason"], c


def test_unequal_budgets_leave_the_claims_not_evaluated_naming_both_budgets():
    cfg, res = _results()
    for r in res.records:  # one seed of the pretrained arm trained longer
        if r["arm"] == "cross_sensor" and r["seed"] == 1:
            r["budget"] = {**r["budget"], "steps": r["budget"]["steps"] + 30}
    v = _verdicts(cfg, res)
    for c in CLAIMS:
        verdict = v[f"{c}_cross_sensor"]
        assert verdict["status"] == NOT_EVALUATED and "precondition 'same budget' failed" in verdict["reason"]
        assert "steps 30/60" in verdict["reason"] and "steps 30" in verdict["reason"]


def test_arms_at_the_majority_floor_leave_the_claims_not_evaluated():
    cfg, res = _results()
    by_seed = {r["seed"]: r for r in res.records if r["arm"] == "random" and r["n_tiles"] == 16}
    for r in res.records:  # the floor row scores what random init scores
        if r["arm"] == "majority":
            r["scenes"] = [dict(s) for s in by_seed[r["seed"]]["scenes"]]
    v = _verdicts(cfg, res)
    for c in CLAIMS:
        verdict = v[f"{c}_cross_sensor"]
        assert verdict["status"] == NOT_EVALUATED
        assert "precondition 'above the floor (random," in verdict["reason"]
    claim = next(c for c in declare_claims(cfg) if c.id == "better_on_melt_cross_sensor")
    assert {p.name for p in claim.preconditions} >= {
        "same budget",
        "above the floor (cross_sensor, melt scenes)",
        "above the floor (random, melt scenes)",
    }


# ---- features learned: on the encoder's source task, from its producer's record in the sidecar -------------


def test_features_learned_is_read_from_the_producers_record_not_from_a_sar_probe():
    """The cross-sensor encoder's frozen SAR probe below random init's is a finding, not a gate: with its
    producer's source-task record passed, its claims are judged; the reason quotes the record."""
    cfg, res = _results()
    for p in res.probes:  # the cross-sensor encoder's frozen features serve SAR worse than random ones
        if p["arm"] == "cross_sensor":
            p["scenes"] = [{**s, "miou": s["miou"] - 0.2} for s in p["scenes"]]
    runs = experiment.gather(res)
    v = {x["id"]: x for x in judge_all(study.claims(cfg, runs), runs.tables)}
    for c in CLAIMS:
        verdict = v[f"{c}_cross_sensor"]
        assert verdict["status"] == HELD, verdict["reason"]
        (pre,) = [p for p in verdict["preconditions"] if p["name"] == "features learned (cross_sensor)"]
        assert pre["passed"] and "noisy_label_pretraining" in pre["why"] and "[+0.0118, +0.1274]" in pre["why"]
        assert LEARNED["statement"] in pre["why"]
    probes = tables.probe_table(runs).set_index("arm")  # the finding stays in the report
    assert probes.loc["cross_sensor", "miou_mean"] < probes.loc["random", "miou_mean"]
    for claim in declare_claims(cfg):  # every pretrained arm's three claims carry it
        arm = "cross_sensor" if claim.id.endswith("_cross_sensor") else "imagenet"
        names = {p.name for p in claim.preconditions}
        assert f"features learned ({arm})" in names, claim.id
        assert all(p.test.table != "probes" for p in claim.preconditions)


def test_a_record_that_failed_leaves_the_claims_not_evaluated_quoting_it():
    """Negative control: the producer recorded that its encoder learned nothing (passed=false)."""
    cfg, res = _results(record=NOT_LEARNED)
    v = _verdicts(cfg, res)
    for c in CLAIMS:
        verdict = v[f"{c}_cross_sensor"]
        assert verdict["status"] == NOT_EVALUATED, c
        reason = verdict["reason"]
        assert "precondition 'features learned (cross_sensor)' failed" in reason, reason
        assert "[-0.03, +0.034]" in reason and "noisy_label_pretraining" in reason and "failed)" in reason


def test_a_sidecar_without_the_record_leaves_the_claims_not_evaluated_naming_what_to_provide():
    cfg, res = _results(record=None)
    v = _verdicts(cfg, res)
    for c in CLAIMS:
        verdict = v[f"{c}_cross_sensor"]
        assert verdict["status"] == NOT_EVALUATED and not verdict["preconditions"], c
        reason = verdict["reason"]
        assert "records no 'features_learned'" in reason and "labkit reproduce noisy_label_pretraining" in reason
        assert "parameter 'cross_sensor_weights'" in reason
    # a record whose verdict contradicts its interval is refused, with what is wrong
    cfg, res = _results(record={**LEARNED, "ci": [-0.01, 0.1]})
    reason = _verdicts(cfg, res)["better_on_melt_cross_sensor"]["reason"]
    assert "unusable" in reason and "does not lie above its margin 0" in reason
    cfg, res = _results(record={"passed": True})
    assert "lacks estimate, ci, n" in _verdicts(cfg, res)["better_on_melt_cross_sensor"]["reason"]


def test_the_record_travels_from_the_checkpoint_sidecar(optical_checkpoint):
    """Through resolve_weights: a labkit checkpoint whose sidecar records it, one that does not, and a weights file
    (its own JSON sidecar or none); the ImageNet arm's source task is its weights' published evaluation."""
    import labkit.models.registry as registry
    from labkit.core.checkpoints import save_checkpoint

    weights = experiment.resolve_weights(smoke_cfg())  # the fixture's sidecar has no record
    prov = weights["cross_sensor"]["provenance"]
    assert "features_learned" not in prov and "noisy_label_pretraining" in prov["features_learned_missing"]
    assert experiment.unjudged_features(weights) == {"cross_sensor": prov["features_learned_missing"]}
    meta = {"study": "noisy_label_pretraining", "produced_by": "test", "features_learned": LEARNED}
    save_checkpoint(registry.named_checkpoint_path(CHECKPOINT_NAME), optical_checkpoint, meta)
    weights = experiment.resolve_weights(smoke_cfg())
    record = weights["cross_sensor"]["provenance"]["features_learned"]
    assert record["ci"] == LEARNED["ci"] and record["producer"] == "noisy_label_pretraining"
    assert experiment.unjudged_features(weights) == {}
    from labkit.studies.sar_transfer import source_features

    table = source_features.frame(weights)
    assert table.set_index("arm").loc["cross_sensor", "passed"] == 1.0
    prov = {}  # a plain file without a sidecar: write one beside it
    experiment._source_task_record(prov, "cross_sensor", "/data/s1.pth", {}, None)
    assert (
        "no sidecar" in prov["features_learned_missing"] and "write a JSON sidecar" in prov["features_learned_missing"]
    )
    prov = {}
    experiment._source_task_record(prov, "imagenet", "pretrained", {}, None)
    assert prov["features_learned"]["passed"] and "71.5 % top-1" in prov["features_learned"]["statement"]


def test_the_probe_trains_only_its_linear_readout():
    cfg = smoke_cfg()
    data = data_settings(cfg)
    d = make_data(data, 0)
    images, masks = training_tiles(d, data, 0, 16)
    probe = tasks.FrozenProbe(tasks.build_model("random", 0, None, 32).encoder, len(CLASS_NAMES))
    encoder = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    readout = probe.readout.weight.detach().clone()
    losses = tasks.train_probe(probe, images, masks, steps=10, lr=1e-2, batch=8, seed=0)
    assert len(losses) == 10 and losses[-1] < losses[0]
    for key, value in probe.encoder.state_dict().items():  # weights and batch-norm statistics alike
        assert torch.equal(value, encoder[key]), key
    assert not torch.equal(probe.readout.weight, readout)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["readout.weight", "readout.bias"]
    with torch.no_grad():
        assert probe(torch.zeros(2, 3, 48, 48)).shape == (2, tasks.NUM_CLASSES, 48, 48)


def test_a_vv_vh_water_mask_shows_its_own_bands_and_classes(tmp_path):
    """Issue 31: a Sentinel-1 VV/VH chip with a 0/1 water mask: figures labelled VV/VH with non-empty class panels,
    classes land/water from the legend, the incidence substitute reported."""
    import matplotlib

    matplotlib.use("Agg")
    from labkit.studies.sar_transfer import figures

    from .test_sar_data import _water_mask_tree

    root = _water_mask_tree(tmp_path / "chip")
    cfg = smoke_cfg(data_source="geotiff", data_root=str(root), tile=32, scene_size=64, n_val_tiles=4)
    with pytest.warns(UserWarning, match="no incidence-angle band"):
        data = study.data(cfg)
    assert data.class_names == ("land", "water") and data.band_names == ("VV", "VH") and data.num_classes == 2
    fig = figures.backscatter_histograms_figure(data)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["freeze season, VV", "freeze season, VH", "melt season, VV", "melt season, VH"]
    assert all(ax.patches for ax in fig.axes)  # no empty panel
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"land", "water"}
    fig = figures.scenes_figure(data)
    assert fig.axes[0].get_title().endswith(": VV") and fig.axes[1].get_title().startswith("VH")
    inputs = tables.inputs_table(data)
    assert set(inputs["incidence angle"]) == {"substitute (constant 34 degrees)"}
    assert set(inputs["classes"]) == {"land, water"} and set(inputs["polarisations"]) == {"VV/VH"}
    with pytest.raises(DataError, match="s0.tif: has no band HV"):
        study.data(
            smoke_cfg(data_source="geotiff", data_root=str(root), tile=32, n_val_tiles=4, sar_bands=["VV", "HV"])
        )


def test_a_validation_subset_larger_than_the_validation_tiles_is_an_error():
    cfg = smoke_cfg(n_val_tiles=21)  # the smoke scenes' lower rows hold 20 labelled 48 px tiles
    with pytest.raises(ParameterError, match="parameter 'n_val_tiles' 21 is more than the 20 labelled 48 px"):
        study.data(cfg)
    assert len(study.data(smoke_cfg(n_val_tiles=20)).train_scenes) == 10


def test_plan_shows_the_papers_epochs_steps_and_validation_cost():
    cfg = load_spec("sar_transfer").resolve("paper", {"seeds": [0]})
    (grid,) = experiment.plan(cfg)
    budgets = {b.name: b for b in grid.budgets}
    rich = budgets["random n_tiles=4000"]
    assert rich.epochs == 300 and rich.steps == 300 * 125 and rich.batch == 32
    assert "lr x0.1 after 5 epochs" in rich.notes and "early stopping after 20 epochs" in rich.notes
    assert "512 tiles (n_val_tiles, a fixed subset) after every epoch, 153,600 tile forwards" in rich.notes
    assert cfg["lr"] == 1e-5 and cfg["standardisation"] == "authors"


def test_more_training_scenes_per_month_widen_the_distinct_area():
    """Issue 29: the data-rich control needs distinct area; each extra training scene of a month draws its own
    weather, and the first keeps the one-scene data (fewer tiles come from the same pool)."""
    settings = data_settings(smoke_cfg(scene_size=64, tile=16, train_scenes_per_month=2))
    two = make_data(settings, 0)
    one = make_data({**settings, "train_scenes_per_month": 1}, 0)
    assert len(two.train_scenes) == 2 * len(one.train_scenes) == 20
    assert np.array_equal(two.train_scenes[0].sar, one.train_scenes[0].sar, equal_nan=True)
    assert len({s.name for s in two.train_scenes}) == 20 and not np.array_equal(
        two.train_scenes[0].sar, two.train_scenes[1].sar, equal_nan=True
    )
    assert load_spec("sar_transfer").params["train_scenes_per_month"].presets["default"] == 2
