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
    rows = []
    for seed in seeds:
        for k, gain in ((4, gain_small), (64, gain_large)):
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


def test_real_patch_figure_absent_and_present(tmp_path, shared_data):
    fig, summary = study.real_patch_figure(tmp_path)
    assert fig is None and not summary["available"] and "REFERENCE_SCENES.npy" in summary["reason"]
    root = shared_data / "remote_sensing" / "eolearn_testeopatch_slovenia"
    if not root.is_dir():
        pytest.skip("eo-learn patch absent")
    fig, summary = study.real_patch_figure(root)
    assert fig is not None and summary["nodata_label_pixels"] == 155 and summary["class_pixels"]["forest"] == 7601
    assert 0 < summary["noisy_pixel_rate"] < 1
