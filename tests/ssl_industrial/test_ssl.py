import numpy as np
import pytest
import torch

from labkit.core.errors import DataError, WeightsUnavailableError
from labkit.methods import ssl
from labkit.methods.ssl import (
    BatchAugment,
    MaskedAutoencoder,
    SimCLR,
    nt_xent_loss,
    patchify,
    pretrain_mae,
    pretrain_simclr,
    random_masking,
    standardise,
    unpatchify,
)
from labkit.models.backbones import create_backbone


def _vit(img=32, patch=8, chans=1):
    torch.manual_seed(0)
    return create_backbone(
        "vit_tiny", weights="random", img_size=img, patch_size=patch, in_chans=chans, num_classes=0, depth=2
    )


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    torch.testing.assert_close(unpatchify(p, 4, 3), x)
    # second patch in raster order is the top-right 4x4 block of the first channel
    torch.testing.assert_close(p[0, 1].reshape(4, 4, 3)[..., 0], x[0, 0, :4, 4:])


def test_random_masking_hides_the_asked_share_per_sample():
    keep, mask, restore = random_masking(5, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (5, 4) and (mask.sum(1) == 12).all()
    for b in range(5):
        assert (mask[b, keep[b]] == 0).all()
    assert not torch.equal(keep[0], keep[1])


def test_mae_learns_to_reconstruct_a_fixed_batch():
    mae = MaskedAutoencoder(_vit(), decoder_dim=32, decoder_depth=1)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    x = torch.stack([torch.sin(xx / (2 + i)) + torch.cos(yy / 3) for i in range(8)])[:, None]
    opt = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert pred.shape == (8, 16, 64) and mask.shape == (8, 16)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    recon, masked = mae.reconstruct(x)
    assert recon.shape == x.shape and (masked == 0).float().mean() > 0.7


def test_nt_xent_prefers_matching_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    matched = nt_xent_loss(z, z + 0.01 * torch.randn(16, 8))
    shuffled = nt_xent_loss(z, z[torch.randperm(16)])
    assert matched < shuffled
    # two samples, orthogonal, exact partner: loss = log(1 + 2 e^0) - 1/t with t = 1
    e = torch.eye(2)
    expected = -np.log(np.e / (np.e + 2))
    assert nt_xent_loss(e, e, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_batch_augment_draws_per_sample_and_repeats_with_a_generator():
    x = torch.rand(1, 1, 32, 32).expand(6, -1, -1, -1).contiguous()
    aug = BatchAugment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # the same image gets different views


def test_simclr_forward_gives_a_finite_loss():
    model = SimCLR(_vit(), projection_dim=16, hidden_dim=32)
    loss = model(torch.rand(8, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("fn", [pretrain_mae, pretrain_simclr])
def test_pretrain_functions_take_any_unlabeled_array(fn):
    images = np.random.default_rng(0).random((24, 1, 40, 40)).astype(np.float32) * 1000  # any range, resized
    enc, hist = fn(images, arch="vit_tiny", img_size=32, patch_size=8, epochs=2, batch_size=8, progress=False)
    assert list(hist["epoch"]) == [1, 2]
    assert {"loss", "lr", "seconds", "images_per_second"} <= set(hist.columns)
    assert np.isfinite(hist["loss"]).all()
    meta = enc.pretrain_meta
    assert meta["img_size"] == 32 and meta["patch_size"] == 8 and meta["in_chans"] == 1
    assert meta["pixel_mean"][0] == pytest.approx(images.mean(), rel=1e-3)
    feats = enc.forward_features(standardise(torch.rand(2, 1, 32, 32), meta["pixel_mean"], meta["pixel_std"]))
    assert feats.shape == (2, 17, 192)


def test_pretrain_rejects_bad_sets():
    with pytest.raises(DataError, match="too small for batch_size 16"):
        pretrain_mae(np.zeros((8, 1, 32, 32), np.float32), img_size=32, patch_size=8, batch_size=16, progress=False)
    bad = np.zeros((8, 1, 32, 32), np.float32)
    bad[3, 0, 1, 1] = np.nan
    with pytest.raises(DataError, match=r"\[3\].*NaN"):
        pretrain_simclr(bad, img_size=32, patch_size=8, batch_size=4, progress=False)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        pretrain_mae(np.zeros((8, 32, 32), np.float32), batch_size=4, progress=False)


def test_named_checkpoint_round_trip_through_create_backbone():
    from labkit.methods.ssl import checkpoint_meta
    from labkit.models.registry import load_named_checkpoint, save_named_checkpoint

    images = np.random.default_rng(0).random((16, 1, 32, 32)).astype(np.float32)
    enc, _ = pretrain_mae(images, img_size=32, patch_size=8, epochs=1, batch_size=8, progress=False)
    save_named_checkpoint("ssl-mae-vit-tiny-industrial", enc, checkpoint_meta(enc, data="test"))
    loaded = create_backbone(
        "vit_tiny", weights="labkit:ssl-mae-vit-tiny-industrial", img_size=32, patch_size=8, in_chans=1, num_classes=0
    ).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), enc.eval().forward_features(x))
    _, meta = load_named_checkpoint("ssl-mae-vit-tiny-industrial")
    assert meta["arch"] == "vit_tiny" and meta["patch_size"] == 8 and meta["epochs"] == 1 and meta["data"] == "test"
    # asked for by name alone: the settings come from the checkpoint's meta
    from labkit.methods.ssl import load_ssl_encoder

    again = load_ssl_encoder("ssl-mae-vit-tiny-industrial")
    assert again.pretrain_meta["pixel_mean"] == pytest.approx(enc.pretrain_meta["pixel_mean"])
    with torch.no_grad():
        torch.testing.assert_close(again.forward_features(x), enc.forward_features(x))


def test_load_ssl_encoder_errors_name_the_problem(tmp_path, monkeypatch):
    import json

    from labkit.methods.ssl import load_ssl_encoder
    from labkit.models.registry import save_named_checkpoint

    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="labkit reproduce ssl_industrial"):
        load_ssl_encoder("ssl-simclr-vit-tiny-industrial")
    save_named_checkpoint("ssl-simclr-vit-tiny-industrial", _vit(), {"arch": "vit_tiny"})
    with pytest.raises(DataError, match=r"ssl-simclr-vit-tiny-industrial.json.*no img_size, patch_size"):
        load_ssl_encoder("ssl-simclr-vit-tiny-industrial")
    assert json.loads((tmp_path / "ssl-simclr-vit-tiny-industrial.json").read_text())["arch"] == "vit_tiny"


def test_missing_named_checkpoint_says_which_study_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "empty"))  # whatever other tests saved
    for name in ("ssl-simclr-vit-tiny-industrial", "ssl-mae-vit-tiny-industrial"):
        with pytest.raises(
            WeightsUnavailableError, match=f"'{name}' does not exist yet.*labkit reproduce ssl_industrial"
        ):
            create_backbone("vit_tiny", weights=f"labkit:{name}", img_size=32, patch_size=8, in_chans=1, num_classes=0)
    with pytest.raises(
        WeightsUnavailableError, match="no study declares .*'ssl-byol-vit'.*ssl-mae-vit-tiny-industrial"
    ):
        create_backbone("vit_tiny", weights="labkit:ssl-byol-vit", img_size=32, patch_size=8, in_chans=1, num_classes=0)


def test_pretrain_rejects_bad_parameters():
    from labkit.core.errors import ParameterError

    images = np.zeros((8, 1, 32, 32), np.float32)
    with pytest.raises(ParameterError, match="epochs must be >= 0"):
        pretrain_mae(images, img_size=32, patch_size=8, batch_size=4, epochs=-1, progress=False)
    with pytest.raises(ParameterError, match="mask_ratio"):
        pretrain_mae(images, img_size=32, patch_size=8, batch_size=4, epochs=1, mask_ratio=1.0, progress=False)
    with pytest.raises(ParameterError, match="batch_size must be >= 2"):
        pretrain_simclr(images, img_size=32, patch_size=8, batch_size=1, progress=False)
    with pytest.raises(DataError, match="square"):
        pretrain_mae(np.zeros((8, 1, 32, 40), np.float32), batch_size=4, progress=False)


def test_mae_learner_free_baseline_by_hand():
    """Each hidden patch filled with the mean of its image's visible pixels, in the loss's target space."""
    from labkit.methods.ssl import MaskedAutoencoder, mae_learner_free_losses, patchify

    # one 1-channel image of four 1-pixel patches 0, 2, 4, 6; the last two hidden: visible mean 1
    target = torch.tensor([[[0.0], [2.0], [4.0], [6.0]]])
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    losses = mae_learner_free_losses(target, mask, channels=1)
    assert losses["visible_mean"] == (3**2 + 5**2) / 2 and losses["zeros"] == (4**2 + 6**2) / 2
    assert losses["best"] == 17.0
    # per channel: channel 0 constant 1, channel 1 constant -2: each hidden patch predicted exactly
    two = torch.tensor([[1.0, -2.0]]).repeat(4, 1)[None]  # (1, 4 patches, 1 pixel x 2 channels)
    assert mae_learner_free_losses(two, mask, channels=2)["visible_mean"] == 0.0
    # a constant image through the MAE's own target: learner-free loss 0, with and without norm_pix_loss
    images = torch.full((2, 1, 32, 32), 0.7)
    for norm_pix in (False, True):
        enc = ssl._make_encoder("vit_tiny", 32, 1, 8, encoder_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 1})
        mae = MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=1, norm_pix_loss=norm_pix)
        _, _, hidden = mae(images, generator=torch.Generator().manual_seed(0))
        assert mae_learner_free_losses(mae.target(images), hidden, 1)["best"] < 1e-12
    assert torch.equal(MaskedAutoencoder(enc, norm_pix_loss=False).target(images), patchify(images, 8))


def test_zero_epochs_scores_the_untrained_network_against_the_learner_free_predictor():
    rng = np.random.default_rng(0)
    images = rng.random((16, 1, 32, 32)).astype(np.float32)
    enc, hist = pretrain_simclr(images, img_size=32, patch_size=8, epochs=0, batch_size=8, progress=False)
    meta = enc.pretrain_meta
    assert len(hist) == 0 and meta["steps"] == 0 and meta["budget"]["steps"] == 0
    assert meta["eval_loss"] == meta["initial_loss"] and meta["loss_ratio"] >= 1.0  # learned nothing
    enc, _ = pretrain_mae(images, img_size=32, patch_size=8, epochs=0, batch_size=8, progress=False)
    meta = enc.pretrain_meta
    assert meta["eval_loss"] == meta["initial_loss"] and meta["loss_ratio"] > 0.9
