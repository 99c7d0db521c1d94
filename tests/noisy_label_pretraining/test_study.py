"""The study module: the checkpoint other studies use, a tiny end-to-end run, and the claim rules."""

import numpy as np
import pandas as pd
import pytest

from labkit.core.checkpoints import load_checkpoint
from labkit.models.segmentation import create_segmenter
from labkit.studies import noisy_label_pretraining as study

TINY = dict(seeds=[0], tile=32, bands=["B08", "B04", "B03", "B02"], encoder="resnet10t", decoder_width=8,
            batch_size=4, lr=1e-3, finetune_lr=1e-3, n_pretrain_tiles=8, pretrain_epochs=1, finetune_steps=2,
            finetune_epochs=1, k_values=[2, 4], n_test_tiles=4, noise_models=list(study.DEFAULT_NOISE),
            noise_severity=0.3, noise_levels=[1.0], sweep_k=None, task_b_k=2,
            inits=["random", "noisy_encoder", "noisy_full", "clean_full", "imagenet"], kl_bins=32)


def test_produce_pretrained_encoder_loads_into_a_resnet18_unet_encoder():
    path = study.produce_pretrained_encoder(n_tiles=8, epochs=1, tile=32, progress=False)
    assert path.name == "noisy-pretrained-unet-r18.safetensors" and path.exists()
    state, meta = load_checkpoint(path)
    model = create_segmenter("unet", encoder="resnet18", weights="random", in_channels=4, num_classes=3)
    model.encoder.load_state_dict(state, strict=True)  # exactly the encoder's keys
    assert meta["in_channels"] == 4 and meta["bands"] == ["B08", "B04", "B03", "B02"]
    assert meta["classes"][-1] == "artificial" and meta["noise_severity"] == 0.6
    assert len(meta["norm_mean"]) == 4 and 0 < meta["pixel_noise_rate"] < 1
    # and through the foundation's named-checkpoint route
    named = create_segmenter("unet", encoder="resnet18", weights="labkit:noisy-pretrained-unet-r18",
                             in_channels=4, num_classes=3)
    key = next(iter(state))
    assert np.allclose(named.encoder.state_dict()[key].numpy(), state[key].numpy())


def test_produce_refuses_other_encoders():
    with pytest.raises(ValueError, match="ResNet-18"):
        study.produce_pretrained_encoder(n_tiles=4, encoder="resnet10t", progress=False)


def test_tiny_run_has_every_row_and_honest_unavailable_imagenet():
    results = study.run(TINY, progress=False)
    ft = results.finetune
    lulc = ft[ft.task == "lulc"]
    for init in ["random", "noisy_encoder", "noisy_full", "clean_full"]:
        assert set(lulc[lulc.init == init].k) == {2, 4}
    assert "imagenet" in results.unavailable and "weights unavailable" in results.unavailable["imagenet"]
    assert "imagenet" not in set(ft.init)  # never replaced by random weights
    assert set(results.pretrain.severity) == {0.0, 0.3, 1.0}
    rates = results.pretrain.set_index("severity").pixel_noise_rate
    assert rates[0.0] == 0 and rates[0.3] < rates[1.0]
    assert set(ft[ft.task == "structure"].init) == {"random", "noisy_encoder", "clean_encoder"}
    assert {"encoder", "decoder"} <= set(results.kl.part)
    assert ft.miou.between(0, 1).all()
    claims = study.evaluate_claims(results)
    assert [c["id"] for c in claims] == ["noisy_pretraining_beats_random", "encoder_transfers_to_new_classes",
                                         "encoder_robust_decoder_sensitive", "benefit_shrinks_with_noise"]
    saved = study.save_study_checkpoint(results)
    assert saved == {"saved": False, "reason": saved["reason"]} and "resnet10t" in saved["reason"]


def _fake_results(gain_small, gain_large, seeds=(0, 1, 2)):
    """Fine-tuning rows whose noisy_full - random gain is ``gain_small`` at k=4 and ``gain_large`` at k=64
    (a number, or one number per seed)."""
    per_seed = lambda g: list(g) if np.ndim(g) else [g] * len(seeds)  # noqa: E731
    rows = []
    for k, gains in ((4, per_seed(gain_small)), (64, per_seed(gain_large))):
        for seed, gain in zip(seeds, gains):
            rows.append(dict(seed=seed, task="lulc", init="random", k=k, severity=0.3, miou=0.4))
            rows.append(dict(seed=seed, task="lulc", init="noisy_full", k=k, severity=0.3, miou=0.4 + gain))
    settings = dict(seeds=list(seeds), k_values=[4, 64], noise_severity=0.3, sweep_k=4, task_b_k=16)
    kl = pd.DataFrame(columns=["seed", "comparison", "part", "kl", "depth"])
    return study.Results(pd.DataFrame(rows), pd.DataFrame(columns=["seed", "severity", "pixel_noise_rate",
                                                                   "test_miou"]),
                         kl, pd.DataFrame(), {}, settings)


def test_claim_one_follows_the_numbers():
    table = study.gains_table(_fake_results(0.10, 0.02))
    assert table.mean_diff.round(3).tolist() == [0.10, 0.02]
    assert study.claim_label_efficiency(_fake_results(0.10, 0.02))["status"] == "held"
    # gain larger with more labels: the second half of the claim fails
    assert study.claim_label_efficiency(_fake_results(0.02, 0.10))["status"] == "did not hold"
    assert study.claim_label_efficiency(_fake_results(-0.05, -0.10))["status"] == "did not hold"
    assert study.claim_layerwise(_fake_results(0.1, 0.0))["status"] == "not evaluated"


def test_claim_one_needs_an_interval_above_zero_not_just_wins():
    # positive in every seed, but so uneven that the 95 % interval includes 0 (the last default run's situation)
    claim = study.claim_label_efficiency(_fake_results([0.001, 0.002, 0.09], 0.0))
    assert claim["status"] == "did not hold"
    assert claim["evidence"]["wins_by_k"][4] == "3/3" and claim["evidence"]["ci95_by_k"][4][0] < 0
    assert "not shown" in claim["reason"]
    assert study.claim_label_efficiency(_fake_results([0.04, 0.05, 0.06], 0.0))["status"] == "held"
    # one seed: no interval, so no verdict
    one = study.claim_label_efficiency(_fake_results(0.1, 0.0, seeds=(0,)))
    assert one["status"] == "not evaluated" and "at least 2" in one["reason"]


def test_tables_keep_to_the_k_sweep():
    results = _fake_results(0.1, 0.0)
    extra = pd.DataFrame([dict(seed=s, task="lulc", init=i, k=2, severity=0.3, miou=0.9)
                          for s in (0, 1, 2) for i in ("random", "noisy_full")])
    results.finetune = pd.concat([results.finetune, extra], ignore_index=True)  # a noise sweep at sweep_k=2
    assert study.gains_table(results).k.tolist() == [4, 64]
    assert set(study.label_efficiency_table(results).k) == {4, 64}


def test_claim_two_needs_the_task_b_gain_shown():
    results = _fake_results(0.1, 0.0)
    rows = []
    for seed, gain in zip((0, 1, 2), (0.03, 0.04, 0.05)):
        rows += [dict(seed=seed, task="structure", init="random", k=16, severity=0.3, miou=0.3),
                 dict(seed=seed, task="structure", init="noisy_encoder", k=16, severity=0.3, miou=0.3 + gain)]
    results.finetune = pd.concat([results.finetune, pd.DataFrame(rows)], ignore_index=True)
    assert study.claim_encoder_transfer(results)["status"] == "held"
    results.finetune.loc[(results.finetune.init == "noisy_encoder") & (results.finetune.seed == 2), "miou"] = 0.25
    claim = study.claim_encoder_transfer(results)
    assert claim["status"] == "did not hold" and claim["evidence"]["wins"] == 2


def _sweep_results(gains_by_level):
    """Noise-sweep rows: per severity, the per-seed gain over random at sweep_k=4 (0 = clean_full)."""
    results = _fake_results(0.1, 0.0)
    rows, pre = [], []
    for level, gains in gains_by_level.items():
        for seed, gain in enumerate(gains):
            init = "clean_full" if level == 0 else "noisy_full"
            if level != 0.3:  # the main severity's noisy_full rows exist already
                rows.append(dict(seed=seed, task="lulc", init=init, k=4, severity=0.3 if level == 0 else level,
                                 miou=0.4 + gain))
            pre.append(dict(seed=seed, severity=level, pixel_noise_rate=level / 2, test_miou=0.3))
    ft = results.finetune
    ft = ft[~((ft.init == "noisy_full") & (ft.k == 4))]
    main = [dict(seed=s, task="lulc", init="noisy_full", k=4, severity=0.3, miou=0.4 + g)
            for s, g in enumerate(gains_by_level[0.3])]
    results.finetune = pd.concat([ft, pd.DataFrame(rows + main)], ignore_index=True)
    results.pretrain = pd.DataFrame(pre)
    return results


def test_claim_four_shrinks_and_holds_over_a_range():
    held = study.claim_noise_sweep(_sweep_results({0.0: [0.10, 0.11, 0.12], 0.3: [0.07, 0.08, 0.09],
                                                   1.0: [0.00, 0.01, -0.01]}))
    assert held["status"] == "held", held["reason"]
    assert held["evidence"]["gain_shown_at_severities"] == [0.3]
    # means shrink and stay positive, but the gain at the lowest noisy level is not shown: did not hold
    weak = study.claim_noise_sweep(_sweep_results({0.0: [0.10, 0.11, 0.12], 0.3: [0.001, 0.002, 0.12],
                                                   1.0: [0.00, 0.01, -0.01]}))
    assert weak["status"] == "did not hold" and weak["evidence"]["positive_mean_at_every_noisy_level"] is False
    # the benefit grows with noise: did not hold
    grows = study.claim_noise_sweep(_sweep_results({0.0: [0.00, 0.01, 0.00], 0.3: [0.07, 0.08, 0.09],
                                                    1.0: [0.10, 0.11, 0.12]}))
    assert grows["status"] == "did not hold" and grows["evidence"]["shrinks"] is False


def test_claim_three_compares_encoder_and_decoder_kl():
    results = _fake_results(0.1, 0.0)
    rows = []
    for seed in (0, 1, 2):
        for comparison in ("clean vs noisy pretrained", "noisy pretrained vs fine-tuned (k=4)"):
            rows += [dict(seed=seed, comparison=comparison, part="encoder", kl=0.01, depth=0),
                     dict(seed=seed, comparison=comparison, part="decoder", kl=0.05 if seed else 0.001, depth=1)]
    results.kl = pd.DataFrame(rows)
    claim = study.claim_layerwise(results)
    assert claim["status"] == "did not hold"  # seed 0 has the decoder lower
    results.kl.loc[results.kl.part == "decoder", "kl"] = 0.05
    assert study.claim_layerwise(results)["status"] == "held"


def test_claim_three_also_needs_the_size_normalised_ratio():
    results = _fake_results(0.1, 0.0)
    rows = []
    for seed in (0, 1, 2):
        for name, part, noisy, moved in (("encoder.a.weight", "encoder", 0.001, 0.0011),
                                         ("decoder.b.weight", "decoder", 0.05, 0.5)):
            rows += [dict(seed=seed, comparison="clean vs noisy pretrained", name=name, part=part, kl=noisy, depth=0),
                     dict(seed=seed, comparison=study.MOVEMENT, name=name, part=part, kl=moved, depth=0)]
    results.kl = pd.DataFrame(rows)
    # raw KL: encoder far below decoder; but the encoder diverged almost as far as training moved it (ratio
    # 0.9) while the decoder moved ten times further than it diverged (ratio 0.1): the claim does not hold
    claim = study.claim_layerwise(results)
    assert claim["status"] == "did not hold" and "size-normalised" in claim["reason"]
    assert claim["evidence"]["checks"]["raw KL, clean vs noisy pretrained"] is True
    results.kl.loc[(results.kl.comparison == study.MOVEMENT) & (results.kl.part == "encoder"), "kl"] = 0.1
    assert study.claim_layerwise(results)["status"] == "held"


def test_real_patch_figure_absent_and_present(tmp_path, shared_data):
    fig, summary = study.real_patch_figure(tmp_path)
    assert fig is None and not summary["available"] and "REFERENCE_SCENES.npy" in summary["reason"]
    root = shared_data / "remote_sensing" / "eolearn_testeopatch_slovenia"
    if not root.is_dir():
        pytest.skip("eo-learn patch absent")
    fig, summary = study.real_patch_figure(root)
    assert fig is not None and summary["nodata_label_pixels"] == 155 and summary["class_pixels"]["forest"] == 7601
    assert 0 < summary["noisy_pixel_rate"] < 1


def test_every_preset_validates_and_paper_matches_the_paper_setting():
    from labkit.core.params import load_spec

    spec = load_spec("noisy_label_pretraining")
    for preset in ("smoke", "default", "paper"):
        study.validate_settings(spec.resolve(preset))
    paper = spec.resolve("paper")
    # the paper: U-Net, ResNet-18 encoder, 4-band NIR-R-G-B, 288-pixel patches, smp's default decoder
    assert paper.encoder == "resnet18" and paper.tile == 288 and list(paper.bands) == ["B08", "B04", "B03", "B02"]
    assert study.decoder_channels(paper.decoder_width) == (256, 128, 64, 32, 16)
    assert len(paper.seeds) >= 3 and len(spec.resolve("default").seeds) >= 3


@pytest.mark.parametrize("change, message", [
    (dict(tile=48), "tile=48: the 5-stage U-Net needs a multiple of 32"),
    (dict(noise_models=["boundary", "smudge"]), "noise_models: unknown"),
    (dict(noise_models=["sensor_rule"], bands=["B03", "B02"]), "'sensor_rule' thresholds NDVI"),
    (dict(noise_severity=0.0), "noise_severity must be > 0"),
    (dict(inits=["noisy_full", "imagenet"]), "inits must include 'random'"),
    (dict(inits=["random", "moco"]), "inits: unknown initialisations"),
    (dict(k_values=[4, 4]), "k_values must be distinct"),
    (dict(bands=["B08", "B99"]), "bands: unknown Sentinel-2 bands"),
])
def test_bad_settings_are_refused_before_any_training(change, message):
    with pytest.raises(ValueError, match=message):
        study.run({**TINY, **change}, progress=False)


def test_training_refuses_other_band_counts_and_nan_tiles_naming_them():
    from labkit.core.errors import DataError
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
    # prepared: no-data pixels filled, masked to 255, counted; training then runs on finite losses only
    x, y, counts = landcover.prepare_tiles(images, labels, 4, 6, names=["a.tif", "b.tif"])
    assert counts["nodata_pixels"] == 64 and (y[0, :8, :8] == 255).all() and (y[0, 8:, 8:] == 0).all()
    fit = study.train(model, x, y, 6, 1, 1, 2, desc="prepared tiles")
    assert len(fit.history) == 1 and np.isfinite(fit.history.train_loss).all()


def test_imagenet_stem_gives_each_band_its_own_colour_filter(tmp_path, monkeypatch):
    """With ImageNet weights at hand (here a stand-in file), R, G, B keep their filters and NIR gets their mean."""
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "resnet10t.c3_in1k.safetensors")
    monkeypatch.setenv("LABKIT_WEIGHTS_DIR", str(tmp_path))
    state = study.imagenet_encoder_state(6, "resnet10t", ["B08", "B04", "B03", "B02"], 8)
    rgb = reference.state_dict()["conv1.0.weight"]  # timm's stem: R, G, B input filters
    stem = state["encoder.model.conv1.0.weight"]
    assert stem.shape[1] == 4
    torch_close = lambda a, b: np.allclose(a.numpy(), b.numpy(), atol=1e-6)  # noqa: E731
    assert torch_close(stem[:, 1], rgb[:, 0] * 0.75)  # B04 (red) <- red filter
    assert torch_close(stem[:, 3], rgb[:, 2] * 0.75)  # B02 (blue) <- blue filter
    assert torch_close(stem[:, 0], rgb.mean(1) * 0.75)  # B08 (NIR) <- mean of the three
    deeper = "encoder.model.layer1.0.conv1.weight"
    assert torch_close(state[deeper], reference.state_dict()["layer1.0.conv1.weight"])
    model = study.build_model(6, "resnet10t", in_channels=4, decoder_width=8, seed=0)
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items()}, strict=True)
    monkeypatch.delenv("LABKIT_WEIGHTS_DIR")
    with pytest.raises(study.WeightsUnavailableError):
        study.imagenet_encoder_state(6, "resnet10t", ["B08", "B04", "B03", "B02"], 8)
