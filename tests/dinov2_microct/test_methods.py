"""Probing, heads, LoRA and classical baselines."""

import numpy as np
import pytest
import torch

from labkit.core.errors import DataError
from labkit.methods import baselines, probing
from labkit.models import lora, vit_heads
from labkit.models.backbones import create_backbone


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_backbone("test_vit", weights="random", img_size=32, num_classes=0)


def test_knn_matches_sklearn_weighted_cosine():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    xtr, xte = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(120, 16)).astype(np.float32)
    ytr = rng.integers(0, 4, 300)
    t = 0.07
    ours = probing.knn_predict(xtr, ytr, xte, [5, 20], temperature=t)
    for k in (5, 20):
        sk = KNeighborsClassifier(k, metric="cosine", algorithm="brute", weights=lambda d: np.exp(-d / t))
        assert np.array_equal(ours[k], sk.fit(xtr, ytr).predict(xte))


def test_knn_probe_estimator_and_errors():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    probe = probing.KNNProbe(k=2).fit(x, np.array(["a", "a", "b", "b"]))
    assert list(probe.predict(np.array([[1, 0.05], [0.05, 1]]))) == ["a", "b"]
    with pytest.raises(DataError, match="labels"):
        probing.knn_votes(x, [0, 1], x)


def test_feature_extraction_shapes_and_cache(tiny_vit, tmp_path):
    images = np.random.default_rng(0).random((5, 30, 30)).astype(np.float32)
    f1 = probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="random(0)",
        batch_size=2,
        cache_dir=tmp_path,
        progress=False,
    )
    assert f1.cls.shape == (5, 64) and f1.patch.shape == (5, 64, 2, 2) and not f1.from_cache
    f2 = probing.extract_features(
        tiny_vit, images, img_size=32, backbone="test_vit", weights="random(0)", cache_dir=tmp_path, progress=False
    )
    assert f2.from_cache and np.array_equal(f1.patch, f2.patch)
    # the mean-pooled patch tokens of every image come with them (and back from the cache)
    assert f1.mean.shape == (5, 64) and np.allclose(f1.mean, f1.patch.mean((2, 3)), atol=1e-5)
    assert np.array_equal(f1.mean, f2.mean)
    # batching does not change the features; a different weights id is a different cache entry
    f3 = probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="random(1)",
        batch_size=5,
        cache_dir=tmp_path,
        progress=False,
    )
    assert not f3.from_cache and np.allclose(f1.cls, f3.cls, atol=1e-5)
    with torch.inference_mode():
        ref = tiny_vit.forward_features(vit_heads.prepare_input(torch.from_numpy(images[:1]), 32))
    assert np.allclose(f1.cls[0], ref[0, 0].numpy(), atol=1e-5)


def test_patch_grid_policies():
    assert vit_heads.grid_input_size(112, 14) == 112
    assert vit_heads.grid_input_size(100, 14, "pad") == 112
    with pytest.raises(DataError, match="not a multiple of the patch size 14"):
        vit_heads.grid_input_size(100, 14, "error")
    x = torch.rand(2, 1, 20, 20)
    assert vit_heads.prepare_input(x, 28, "resize").shape == (2, 3, 28, 28)
    padded = vit_heads.prepare_input(x, 28, "pad")
    assert padded.shape == (2, 3, 28, 28)
    assert torch.allclose(padded[:, :, :20, :20], vit_heads.prepare_input(x, 20, "resize"))
    with pytest.raises(DataError):
        vit_heads.prepare_input(torch.rand(1, 1, 40, 40), 28, "pad")


def test_linear_head_parameter_count_matches_paper():
    # ViT-B (768 channels), 3 phases: BatchNorm (2 x 768) + 1x1 conv (768 x 3 + 3) = 3,843
    assert vit_heads.count_parameters(vit_heads.LinearSegmentationHead(768, 3)) == 3843
    head = vit_heads.ConvSegmentationHead(64, 3)
    assert head(torch.rand(2, 64, 4, 4), out_size=(32, 32)).shape == (2, 3, 32, 32)


def test_token_head_learns_a_separable_task():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (40, 4, 4))
    tokens = np.stack([masks * 2.0 - 1, 1 - masks * 2.0], 1).astype(np.float32)  # class in the features
    tokens += 0.1 * rng.normal(size=tokens.shape).astype(np.float32)
    full = np.kron(masks, np.ones((4, 4), int))
    res = probing.train_token_head(tokens, full, num_classes=2, epochs=15, lr=0.05, seed=0)
    pred = probing.predict_token_head(res.model, tokens, (16, 16))
    assert (pred == full).mean() > 0.9
    knn = probing.knn_segment(
        tokens[:30], full[:30], tokens[30:], (16, 16), num_classes=2, k=5, memory_size=500, seed=0
    )
    assert (knn == full[30:]).mean() > 0.9


def test_lora_trains_only_adapters(tiny_vit):
    import copy

    names = lora.lora_target_modules(tiny_vit, "all-linear")
    assert any(n.endswith("qkv") for n in names) and any(n.endswith("fc2") for n in names)
    model = lora.apply_lora(copy.deepcopy(tiny_vit), rank=2, alpha=4, targets="attention")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    seg = vit_heads.BackboneSegmenter(model, vit_heads.create_head("linear", 64, 3), 32)
    out = seg(torch.rand(2, 1, 30, 30))
    assert out.shape == (2, 3, 30, 30)
    before = {n: p.clone() for n, p in model.named_parameters()}
    out.mean().backward()
    torch.optim.SGD([p for p in seg.parameters() if p.requires_grad], lr=1.0).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with pytest.raises(ValueError, match="no Linear"):
        lora.lora_target_modules(tiny_vit, ["nonexistent"])


def test_fcm_matches_scikit_fuzzy():
    import skfuzzy

    rng = np.random.default_rng(0)
    img = np.clip(np.concatenate([rng.normal(m, 12, 3000) for m in (40, 120, 200)]), 0, 255).astype(np.uint8)
    centres = np.array([[30.0], [100.0], [190.0]])
    ours = baselines.fuzzy_cmeans_image(img, 3, init_centers=centres, tol=1e-6)
    u0 = baselines.fcm_memberships(img.reshape(-1, 1), centres)
    cntr, u, *_ = skfuzzy.cmeans(img.reshape(1, -1).astype(float), 3, 2.0, 1e-6, 300, init=u0)
    assert np.abs(u - ours.memberships).max() < 1e-4
    assert np.allclose(np.sort(cntr[:, 0]), np.sort(ours.centers[:, 0]), atol=1e-3)
    full = baselines.fuzzy_cmeans_image(img, 3, init_centers=centres, tol=1e-6, max_levels=0)  # per-pixel path
    assert np.abs(full.memberships - ours.memberships).max() < 1e-4


@pytest.mark.parametrize("method", ["otsu", "kmeans", "fcm"])
def test_cluster_segmenter_recovers_intensity_phases(method):
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 32, 32), int)
    masks[:, :, 10:20], masks[:, :, 20:] = 2, 1  # phase 2 has the middle grey level
    grey = np.array([0.1, 0.9, 0.5])[masks] + rng.normal(0, 0.03, masks.shape)
    seg = baselines.ClusterSegmenter(method, 3, denoise_sigma=0).fit(grey[:2], masks[:2])
    assert list(seg.rank_to_phase_) == [0, 2, 1]
    assert (seg.predict(grey[2:]) == masks[2:]).mean() > 0.98


def test_filter_bank_forest_uses_texture():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), int)
    masks[:, :, 16:] = 1
    # same mean grey on both sides; only the texture (noise amplitude) differs
    images = 0.5 + rng.normal(0, 1, masks.shape) * np.where(masks == 1, 0.2, 0.01)
    feats = baselines.filter_bank(images[0])
    assert feats.shape == (32, 32, baselines.filter_bank_size((1.0, 2.0, 4.0)))
    rf = baselines.FilterBankForest(n_estimators=10, seed=0).fit(images[:4], masks[:4])
    assert (rf.predict(images[4:]) == masks[4:]).mean() > 0.85
    with pytest.raises(DataError, match="differ"):
        rf.fit(images[:2], masks[:2, :10])


def test_unet_from_scratch_shapes():
    net = baselines.create_unet(3, in_channels=1)
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_weighted_kmeans_matches_sklearn_on_histogram():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 5, 500) for m in (10, 50, 90)]).round()
    levels, counts = np.unique(values, return_counts=True)
    ours = baselines.weighted_kmeans_1d(levels, counts.astype(float), 3)
    ref = np.sort(KMeans(3, n_init=5, random_state=0).fit(levels[:, None], sample_weight=counts).cluster_centers_[:, 0])
    assert np.allclose(ours, ref, atol=1e-6)


def test_features_keep_only_the_patch_tokens_asked_for(tiny_vit, tmp_path):
    images = np.random.default_rng(1).random((6, 32, 32)).astype(np.float32)
    full = probing.extract_features(
        tiny_vit, images, img_size=32, backbone="test_vit", weights="r", batch_size=4, cache=False, progress=False
    )
    part = probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="r",
        batch_size=4,
        cache_dir=tmp_path,
        progress=False,
        patch_index=[4, 1, 5],
    )
    assert part.patch.shape == (3, 64, 2, 2) and np.allclose(part.cls, full.cls, atol=1e-5)
    assert np.allclose(part.patch_of([5, 1]), full.patch[[5, 1]], atol=1e-5)
    with pytest.raises(KeyError, match=r"\[0\]"):
        part.patch_of([0, 1])
    again = probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="r",
        cache_dir=tmp_path,
        progress=False,
        patch_index=[1, 4, 5],
    )
    assert again.from_cache and np.array_equal(again.patch_of([4]), part.patch_of([4]))
    # a different subset is a different cache entry; an oversized result is not written
    other = probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="r",
        cache_dir=tmp_path,
        progress=False,
        patch_index=[0],
    )
    assert not other.from_cache
    probing.extract_features(
        tiny_vit,
        images,
        img_size=32,
        backbone="test_vit",
        weights="big",
        cache_dir=tmp_path,
        progress=False,
        max_cache_bytes=10,
    )
    assert not probing.extract_features(
        tiny_vit, images, img_size=32, backbone="test_vit", weights="big", cache_dir=tmp_path, progress=False
    ).from_cache


def test_padded_inputs_are_cropped_back_and_padding_is_not_trained_on():
    rng = np.random.default_rng(0)
    # 12x12 slices reflect-padded to 16x16 for a patch-4 grid: tokens (4x4) encode the padded slice;
    # masks are padded with the ignored label 255, predictions cropped back to 12x12
    padded_masks = rng.integers(0, 2, (40, 4, 4))
    tokens = np.stack([padded_masks * 2.0 - 1, 1 - padded_masks * 2.0], 1).astype(np.float32)
    full = np.kron(padded_masks, np.ones((4, 4), int))  # (40, 16, 16)
    masks = full[:, :12, :12]
    train = probing.pad_masks(masks, 16)
    assert train.shape == (40, 16, 16) and (train[:, 12:, :] == 255).all() and (train[:, :12, :12] == masks).all()
    res = probing.train_token_head(tokens, train, num_classes=2, epochs=15, lr=0.05, seed=0)
    pred = probing.predict_token_head(res.model, tokens, (12, 12), padded_size=(16, 16))
    assert pred.shape == (40, 12, 12) and (pred == masks).mean() > 0.9
    # without the crop, the 16-px grid would be squeezed onto 12 px and misaligned
    squeezed = probing.predict_token_head(res.model, tokens, (12, 12))
    assert (squeezed == masks).mean() < (pred == masks).mean()
    knn = probing.knn_segment(
        tokens[:30],
        train[:30],
        tokens[30:],
        (12, 12),
        num_classes=2,
        k=5,
        memory_size=5000,
        seed=0,
        padded_size=(16, 16),
    )
    assert knn.shape == (10, 12, 12) and (knn == masks[30:]).mean() > 0.9
    with pytest.raises(DataError, match="larger than the padded size"):
        probing.pad_masks(masks, 8)
    with pytest.raises(DataError, match="ignore_index"):
        probing.knn_segment(tokens[:2], np.full((2, 16, 16), 255), tokens[2:4], (12, 12), num_classes=2)


def test_all_linear_lora_targets_every_transformer_linear_but_not_the_patch_embedding():
    dino = create_backbone("dinov2_vits14", weights="random", img_size=28, num_classes=0)
    names = lora.lora_target_modules(dino, "all-linear")
    assert len(names) == 4 * len(dino.blocks) and not any("patch_embed" in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"qkv", "proj", "fc1", "fc2"}
