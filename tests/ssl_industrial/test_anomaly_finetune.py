import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.core.errors import ParameterError
from labkit.methods.anomaly import PatchCore, anomaly_aurocs, greedy_coreset, vit_patch_features
from labkit.methods.defect_segmentation import (
    TokenClassifier,
    TokenSegmenter,
    finetune_classification,
    finetune_segmentation,
    trunk_tokens,
)
from labkit.models.backbones import create_backbone


def _vit():
    torch.manual_seed(0)
    return create_backbone(
        "vit_tiny", weights="random", img_size=32, patch_size=8, in_chans=1, num_classes=0, depth=3
    ).eval()


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
        images[i, 0, r : r + 8, c : c + 8] += 3.0
        masks[i, r : r + 8, c : c + 8] = 1
        labels[i] = 1
    tokens = trunk_tokens(enc, images, 2)
    seg = finetune_segmentation(
        enc, tokens[:32], masks[:32], tokens[32:], masks[32:], trainable_blocks=2, steps=60, batch_size=8, lr=2e-3
    )
    assert seg["defect_iou"] > 0.5
    cls = finetune_classification(
        enc, tokens[:32], labels[:32], tokens[32:], labels[32:], trainable_blocks=2, steps=40, batch_size=8, lr=2e-3
    )
    assert cls["balanced_accuracy"] > 0.8
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), f"fine-tuning changed the shared encoder's {k}"


def test_trainable_blocks_out_of_range():
    from labkit.core.errors import ParameterError

    with pytest.raises(ParameterError, match="trainable_blocks"):
        trunk_tokens(_vit(), torch.rand(1, 1, 32, 32), 7)


def _blob_task(n=48, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.3, (n, 1, 32, 32)).astype(np.float32)
    masks = np.zeros((n, 32, 32), np.int64)
    for i in range(0, n, 2):
        r, c = rng.integers(0, 4, 2) * 8
        images[i, 0, r : r + 8, c : c + 8] += 3.0
        masks[i, r : r + 8, c : c + 8] = 1
    return images, masks


def test_lora_trains_only_adapters_and_head_and_starts_from_the_pretrained_top():
    from labkit.methods.defect_segmentation import count_trainable

    enc = _vit()
    x = torch.rand(2, 1, 32, 32)
    tokens = trunk_tokens(enc, x, 3)
    lora = TokenSegmenter(enc, 3, lora_rank=4, out_size=32).eval()
    full = TokenSegmenter(enc, 3, out_size=32).eval()
    with torch.no_grad():  # LoRA's B matrices start at zero: same features as the encoder's own top
        torch.testing.assert_close(lora.top.patch_tokens(tokens), full.top.patch_tokens(tokens))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert count_trainable(lora) < 0.2 * count_trainable(full)
    assert not any(p.requires_grad for p in lora.top.norm.parameters())


def test_lora_finetuning_learns_and_leaves_the_encoder_alone():
    enc = _vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    images, masks = _blob_task()
    tokens = trunk_tokens(enc, images, 3)
    res = finetune_segmentation(
        enc,
        tokens[:32],
        masks[:32],
        tokens[32:],
        masks[32:],
        trainable_blocks=3,
        steps=60,
        batch_size=8,
        lr=5e-3,
        lora_rank=4,
    )
    assert res["defect_iou"] > 0.3 and res["trainable_params"] > 0
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), f"LoRA fine-tuning changed the shared encoder's {k}"


def test_frozen_probe_trains_only_the_head():
    enc = _vit()
    seg = TokenSegmenter(enc, 0, head="linear", out_size=32)
    assert all(n.startswith("head.") for n, p in seg.named_parameters() if p.requires_grad)


def test_finetuning_bad_inputs_name_the_problem():
    from labkit.core.errors import DataError, ParameterError

    enc = _vit()
    images, masks = _blob_task(8)
    tokens = trunk_tokens(enc, images, 1)
    with pytest.raises(DataError, match="8 training images but 7 masks"):
        finetune_segmentation(enc, tokens, masks[:7], tokens, masks, trainable_blocks=1, steps=1)
    with pytest.raises(DataError, match="8 test images but 6 masks"):
        finetune_segmentation(enc, tokens, masks, tokens, masks[:6], trainable_blocks=1, steps=1)
    with pytest.raises(DataError, match="one size"):
        finetune_segmentation(enc, tokens, masks, tokens, masks[:, :16, :16], trainable_blocks=1, steps=1)
    with pytest.raises(DataError, match="only class 0"):
        finetune_classification(enc, tokens, np.zeros(8, int), tokens, np.zeros(8, int), trainable_blocks=1, steps=1)
    with pytest.raises(ParameterError, match="LoRA needs blocks"):
        TokenSegmenter(enc, 0, lora_rank=4)
    with pytest.raises(ParameterError, match="head must be one of"):
        TokenSegmenter(enc, 1, head="unet")
    with pytest.raises(ParameterError, match="coreset_ratio"):
        PatchCore(lambda x: x, coreset_ratio=0.0)
    with pytest.raises(RuntimeError, match="before fit"):
        PatchCore(lambda x: x).score(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="no defect-free images"):
        PatchCore(lambda x: x).fit(np.zeros((0, 1, 8, 8), np.float32))


def test_finetuning_repeats_whatever_ran_before():
    # The head is built from the run's seed, not from the global RNG state left by earlier work.
    enc = _vit()
    images, masks = _blob_task(24)
    tokens = trunk_tokens(enc, images, 1)
    runs = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        torch.rand(noise * 10)
        runs.append(
            finetune_segmentation(
                enc, tokens[:16], masks[:16], tokens[16:], masks[16:], trainable_blocks=1, steps=3, batch_size=8, seed=5
            )["miou"]
        )
        torch.manual_seed(noise)
        runs.append(
            finetune_classification(
                enc,
                tokens[:16],
                (masks[:16].sum((1, 2)) > 0).astype(int),
                tokens[16:],
                (masks[16:].sum((1, 2)) > 0).astype(int),
                trainable_blocks=1,
                steps=3,
                batch_size=8,
                seed=5,
            )["balanced_accuracy"]
        )
    assert runs[0] == runs[2] and runs[1] == runs[3]


def test_pixel_average_precision_ranks_pixels():
    from labkit.methods.defect_segmentation import pixel_average_precision

    masks = np.zeros((2, 4, 4), int)
    masks[0, :2, :2] = 1
    perfect = masks.astype(float) * 0.2 + 0.1  # every defect pixel above every good one, all below 0.5
    assert pixel_average_precision(perfect, masks) == pytest.approx(1.0)
    assert pixel_average_precision(1 - perfect, masks) < 0.3
    assert np.isnan(pixel_average_precision(perfect, np.zeros_like(masks)))


def test_fixed_steps_and_encoder_lr_scale():
    from labkit.methods import defect_segmentation as ft

    enc = _vit()
    images, masks = _blob_task(20)
    tokens = trunk_tokens(enc, images, 1)
    calls = []
    model = TokenSegmenter(enc, 1, out_size=32)
    loss = torch.nn.CrossEntropyLoss()
    ft._train_steps(
        model,
        tokens,
        torch.as_tensor(masks),
        lambda out, y: calls.append(1) or loss(out, y),
        steps=7,
        batch_size=8,
        lr=1e-3,
        encoder_lr_scale=1.0,
        seed=0,
    )
    assert len(calls) == 7  # exactly the steps asked for, whatever the label count
    frozen_top = TokenSegmenter(enc, 1, out_size=32)
    before = [p.clone() for p in frozen_top.top.parameters()]
    ft._train_steps(
        frozen_top, tokens, torch.as_tensor(masks), loss, steps=3, batch_size=8, lr=1e-3, encoder_lr_scale=0.0, seed=0
    )
    assert all(torch.equal(a, b) for a, b in zip(before, frozen_top.top.parameters()))
    with pytest.raises(ParameterError, match="steps must be >= 1"):
        ft._train_steps(
            model, tokens, torch.as_tensor(masks), loss, steps=0, batch_size=8, lr=1e-3, encoder_lr_scale=1.0, seed=0
        )
