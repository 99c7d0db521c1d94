"""labkit's stand-in for DINOv2: fixed-step MAE pretraining, its provenance record, the shipped checkpoint."""

import json

import numpy as np
import pytest
import torch

from labkit.methods import microct_standin as standin
from labkit.studies import dinov2_microct as study
from labkit.studies.base import Runs
from labkit.studies.dinov2_microct.claims import TRAINED_RATIO

SMALL_CROP = 56  # the tests train and check at 8 x 8 tokens (the shipped stand-in: 24 x 24), to stay fast


@pytest.fixture
def small_crop(monkeypatch):
    monkeypatch.setattr(standin, "TRAIN_CROP", SMALL_CROP)


def test_trivial_loss_is_the_image_mean_predictor(small_crop):
    torch.manual_seed(0)
    mae = standin._mae(standin.build_vit(standin.TRAIN_CROP), 0.5)
    x = torch.randn(4, 3, standin.TRAIN_CROP, standin.TRAIN_CROP)
    _, trivial = standin.heldout_losses(mae, x)
    # the mean predictor's MSE over hidden pixels is about the per-image variance (hidden patches are random)
    var = float(((x - x.mean((2, 3), keepdim=True)) ** 2).mean())
    assert abs(trivial - var) < 0.1 * var


def test_learner_free_losses_use_the_masks_of_the_heldout_check(small_crop):
    torch.manual_seed(0)
    mae = standin._mae(standin.build_vit(standin.TRAIN_CROP), 0.5)
    x = torch.rand(40, 3, standin.TRAIN_CROP, standin.TRAIN_CROP) + torch.rand(40, 3, 1, 1)
    _, trivial = standin.heldout_losses(mae, x, seed=3)
    losses = standin.learner_free_losses(x, 0.5, seed=3)
    # the same masks (same generator and batches): the image-mean predictor's loss is the very same number
    assert losses["image_mean"] == pytest.approx(trivial, rel=1e-6)
    # the visible pixels' mean cannot use the hidden ones: never better than the image mean on the hidden patches
    assert losses["visible_mean"] >= losses["image_mean"]
    # by hand on one image: each hidden patch filled with the mean of the visible pixels (per channel)
    from labkit.methods.ssl import patchify, random_masking

    one = x[:1]
    n = (standin.TRAIN_CROP // 7) ** 2
    _, mask, _ = random_masking(1, n, 0.5, generator=torch.Generator().manual_seed(0))
    pix = patchify(one, 7).reshape(1, n, 49, 3)
    vis = pix[0][mask[0] == 0].reshape(-1, 3).mean(0)
    expected = float(((pix[0][mask[0] == 1] - vis) ** 2).mean())
    assert standin.learner_free_losses(one, 0.5)["visible_mean"] == pytest.approx(expected, rel=1e-5)


def test_interpolating_predictor_beats_the_visible_mean_on_smooth_images_only(small_crop):
    """The stronger learner-free predictor: on smooth images (a ramp) interpolating the visible pixels around a
    hidden one is far better than their mean; on white noise it is no better (nothing to interpolate)."""
    ramp = torch.linspace(0, 1, standin.TRAIN_CROP)
    smooth = (ramp[None, None, :, None] * ramp[None, None, None, :]).expand(4, 3, -1, -1).clone()
    losses = standin.learner_free_losses(smooth, 0.5)
    assert losses["interpolated"] < 0.1 * losses["visible_mean"] and losses["best"] == losses["interpolated"]
    noise = torch.rand(4, 3, standin.TRAIN_CROP, standin.TRAIN_CROP, generator=torch.Generator().manual_seed(0))
    losses = standin.learner_free_losses(noise, 0.5)
    assert losses["interpolated"] > 0.95 * losses["visible_mean"]


def test_norm_pix_learner_free_loss_is_about_one():
    """With per-patch normalised targets the learner-free predictors predict about 0 (every normalised patch has
    mean 0), so their loss is about 1, computed in the MAE's target space."""
    x = torch.rand(4, 3, 56, 56)
    losses = standin.learner_free_losses(x, 0.5, norm_pix=True)
    assert losses["visible_mean"] == pytest.approx(1.0, abs=0.05)


def test_norm_pix_interpolation_is_shrunk_when_it_predicts_nothing():
    """Negative control of the shrunk interpolator (per-patch normalised targets): on white noise the normalised
    interpolation predicts nothing, so the best scale is the smallest one and it beats the unit-variance guess
    (loss about 2) by far."""
    noise = torch.rand(4, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    losses = standin.learner_free_losses(noise, 0.5, norm_pix=True)
    assert losses["interpolation_scale"] == min(standin.INTERPOLATION_SCALES)
    assert losses["interpolated"] < 1.2 * losses["visible_mean"] and losses["best"] <= losses["visible_mean"]
    assert standin.learner_free_losses(noise, 0.5)["interpolation_scale"] == 1.0  # pixel targets: never shrunk


def test_zero_steps_is_a_checkpoint_the_learner_free_predictor_beats(monkeypatch, small_crop):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(standin, "_slices", lambda seed, spr: rng.random((6, 112, 112)).astype(np.float32))
    _, record = standin.pretrain(steps=0, batch_size=2, progress=False)
    assert record["steps"] == 0 and record["curve"] == []
    assert record["learner_free_ratio"] == pytest.approx(record["final_loss"] / record["learner_free_loss"])
    assert record["learner_free_ratio"] > TRAINED_RATIO


def test_pretraining_runs_a_fixed_number_of_steps_and_records_provenance(tmp_path, monkeypatch, small_crop):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(standin, "_slices", lambda seed, spr: rng.random((6, 112, 112)).astype(np.float32))
    encoder, record = standin.pretrain(steps=3, batch_size=2, log_every=1, progress=False)
    assert record["steps"] == 3 and [c["step"] for c in record["curve"]] == [1, 2, 3]
    assert record["loss_ratio"] == pytest.approx(record["final_loss"] / record["trivial_loss"])
    assert record["mask_ratio"] == standin.MASK_RATIO and "seconds" in record
    path = standin.save(encoder, record, tmp_path / "s", "python -m labkit.methods.microct_standin --steps 3")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["command"].endswith("--steps 3") and meta["pretraining"]["steps"] == 3 and "git_commit" in meta
    model, rec = standin.load(path, img_size=56)
    assert model.patch_embed.grid_size == (8, 8) and rec["steps"] == 3
    x = torch.randn(1, 3, 168, 168)
    with torch.no_grad():  # float16 storage: the reloaded encoder matches to half precision
        a, b = encoder(x), standin.load(path)[0](x)
    assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()))


def test_shipped_checkpoint_has_its_provenance_and_a_24x24_grid():
    path = standin.SHIPPED.with_suffix(".safetensors")
    if not path.is_file():
        pytest.skip("the stand-in checkpoint is not shipped in this checkout")
    assert path.stat().st_size < 25e6
    model, rec = standin.load()
    assert model.patch_embed.grid_size == (24, 24)
    for key in ("steps", "final_loss", "trivial_loss", "loss_ratio", "curve", "data", "mask_ratio"):
        assert key in rec, key
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["command"].startswith("python -m labkit.methods.microct_standin") and meta["git_commit"]
    # pretrained at the grid it is used at, and its record carries the learner-free loss "trained" is judged on
    assert rec["train_crop"] == rec["eval_size"] == standin.EVAL_SIZE
    rec = standin.with_learner_free_loss(rec)
    # "trained" is judged against the better learner-free predictor (visible-pixel mean or interpolation)
    lf = rec["learner_free_losses"]
    assert rec["learner_free_loss"] == min(lf["visible_mean"], lf["interpolated"]) == lf["best"]
    assert rec["decoder"] == "conv" and rec["mask_ratio"] == standin.MASK_RATIO
    assert rec["learner_free_ratio"] == pytest.approx(rec["final_loss"] / rec["learner_free_loss"])
    # the study's table states the threshold and whether it passed
    table = study.tables.pretraining(Runs(examples={"pretraining": {"ssl": rec}}))
    assert table["trained"].iloc[0] == (rec["learner_free_ratio"] < TRAINED_RATIO)
