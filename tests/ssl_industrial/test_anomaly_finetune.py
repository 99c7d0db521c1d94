import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.methods.anomaly import PatchCore, anomaly_aurocs, greedy_coreset, vit_patch_features
from labkit.methods.ssl_industrial_finetune import (TokenClassifier, TokenSegmenter, finetune_classification,
                                                    finetune_segmentation, trunk_tokens)
from labkit.models.backbones import create_backbone


def _vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", weights="random", img_size=32, patch_size=8, in_chans=1, num_classes=0,
                           depth=3).eval()


def test_greedy_coreset_covers_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    pts = torch.from_numpy(np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres]).astype(np.float32))
    idx = greedy_coreset(pts, 4)
    assert sorted((idx // 50).tolist()) == [0, 1, 2, 3]


def test_patchcore_finds_a_bright_blob_without_labels():
    rng = np.random.default_rng(0)
    good = rng.normal(0.5, 0.05, (20, 1, 32, 32)).astype(np.float32)
    test = rng.normal(0.5, 0.05, (10, 1, 32, 32)).astype(np.float32)
    masks = np.zeros((10, 32, 32), int)
    for i in range(5):
        test[i, 0, 8:16, 16:24] += 0.5
        masks[i, 8:16, 16:24] = 1
    pooled = lambda x: torch.cat([F.avg_pool2d(x, 4), F.max_pool2d(x, 4)], 1)  # noqa: E731
    scores, maps = PatchCore(pooled, coreset_ratio=0.5).fit(good).score(test)
    res = anomaly_aurocs(scores, maps, (masks.sum((1, 2)) > 0).astype(int), masks)
    assert res["image_auroc"] == 1.0 and res["pixel_auroc"] > 0.9
    assert maps.shape == (10, 32, 32)


def test_vit_patch_features_grid():
    enc, x = _vit(), torch.rand(2, 1, 32, 32)
    feats = vit_patch_features(enc, x, layers=(1, -1))
    assert feats.shape == (2, 2 * 192, 4, 4)
    with torch.no_grad():  # the last layer's part is the last block's patch-token grid (before the norm)
        last = trunk_tokens(enc, x, 0)[:, 1:].transpose(1, 2).reshape(2, 192, 4, 4)
    assert torch.allclose(feats[:, 192:], last, atol=1e-5)


def test_trunk_tokens_split_matches_the_full_encoder():
    enc = _vit()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        full = enc.forward_features(x)
        assert torch.allclose(enc.norm(trunk_tokens(enc, x, 0)), full, atol=1e-5)
        seg = TokenSegmenter(enc, 2, out_size=32).eval()
        tokens = trunk_tokens(enc, x, 2)
        assert torch.allclose(seg.top.patch_tokens(tokens), full[:, 1:], atol=1e-5)
        assert seg(tokens).shape == (3, 2, 32, 32)
        assert TokenClassifier(enc, 1)(trunk_tokens(enc, x, 1)).shape == (3, 2)


def test_finetuning_learns_a_learnable_task_and_leaves_the_encoder_alone():
    enc = _vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.3, (48, 1, 32, 32)).astype(np.float32)
    masks = np.zeros((48, 32, 32), np.int64)
    labels = np.zeros(48, np.int64)
    for i in range(0, 48, 2):  # defect: a bright 8x8 square in a random patch
        r, c = rng.integers(0, 4, 2) * 8
        images[i, 0, r:r + 8, c:c + 8] += 3.0
        masks[i, r:r + 8, c:c + 8] = 1
        labels[i] = 1
    tokens = trunk_tokens(enc, images, 2)
    seg = finetune_segmentation(enc, tokens[:32], masks[:32], tokens[32:], masks[32:], trainable_blocks=2,
                                steps=60, batch_size=8, lr=2e-3)
    assert seg["defect_iou"] > 0.5
    cls = finetune_classification(enc, tokens[:32], labels[:32], tokens[32:], labels[32:], trainable_blocks=2,
                                  steps=40, batch_size=8, lr=2e-3)
    assert cls["balanced_accuracy"] > 0.8
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), f"fine-tuning changed the shared encoder's {k}"


def test_trainable_blocks_out_of_range():
    from labkit.core.errors import ParameterError

    with pytest.raises(ParameterError, match="trainable_blocks"):
        trunk_tokens(_vit(), torch.rand(1, 1, 32, 32), 7)
