"""Claim 2 on one decoder: the frozen probe and full fine-tuning train the same head on the same batches."""

import pytest
import torch
from torch import nn

import labkit
from labkit.methods.defect_segmentation import (
    TokenSegmenter,
    ViTSegmenter,
    count_trainable,
    train_segmenter,
    upsampling_steps,
    view_features,
)
from labkit.studies import ssl_industrial as study
from labkit.studies.ssl_industrial import experiment, tasks


def _vit(patch):
    return tasks.new_vit("vit_tiny", 4 * patch, patch, 1, {"depth": 2, "embed_dim": 64, "num_heads": 2})


@pytest.mark.parametrize("patch", [4, 8, 14, 16])
def test_both_segmenters_build_the_one_decoder_head(patch):
    enc = _vit(patch)
    a, b = TokenSegmenter(enc, 1, head="conv", out_size=4 * patch), ViTSegmenter(enc, 4 * patch, head="conv")
    assert str(a.head) == str(b.head)  # one builder: 14-px patches gave 3 upsamplings in one, 2 in the other
    assert sum(isinstance(m, nn.Upsample) for m in b.head) == upsampling_steps(patch)
    assert upsampling_steps(14) == 2 and upsampling_steps(16) == 3


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.head(x)


def test_precomputed_views_give_the_very_batches_and_flips_of_on_the_fly_augmentation():
    x, y = torch.randn(6, 1, 8, 8), (torch.rand(6, 8, 8) > 0.7).long()
    torch.manual_seed(0)
    a = _Head()
    b = _Head()
    b.load_state_dict(a.state_dict())
    train_segmenter(a, x, y, steps=7, batch_size=4, lr=1e-2, seed=3)
    views = view_features(lambda t: t, x)
    assert views.shape == (8, 6, 1, 8, 8)
    train_segmenter(b, views[0], y, steps=7, batch_size=4, lr=1e-2, seed=3, views=views)
    assert torch.allclose(a.head.weight, b.head.weight, atol=1e-6)
    c = _Head()
    c.load_state_dict(b.state_dict())
    train_segmenter(c, x, y, steps=7, batch_size=4, lr=1e-2, seed=3, augment=False)  # negative control
    assert not torch.allclose(b.head.weight, c.head.weight, atol=1e-4)


@pytest.mark.parametrize("seg_head", ["linear", "conv"])
def test_frozen_and_full_finetuning_record_the_same_decoder(tmp_path, monkeypatch, seg_head):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    cfg = labkit.configure("ssl_industrial", "smoke", {"seeds": [0], "label_counts": [4, 8], "seg_head": seg_head})
    data = study.data(cfg)
    params = [
        t
        for t in experiment.finetune_tasks(
            cfg, data, {}, {k: "x" for k in ("mae", "simclr", "mae_unrelated", "dinov2")}
        )
        if t["init"] == "scratch" and t["n_labels"] == 8
    ]
    recs = {t["protocol"]: tasks.finetune_task(**t) for t in params}
    assert set(recs) == {"full", "frozen"}
    assert recs["full"]["decoder"] == recs["frozen"]["decoder"] == seg_head
    assert recs["full"]["decoder_params"] == recs["frozen"]["decoder_params"] > 0
    assert recs["frozen"]["trainable_params"] == recs["frozen"]["decoder_params"]
    assert recs["full"]["trainable_params"] > recs["full"]["decoder_params"]
    assert count_trainable(ViTSegmenter(_vit(8), 32, head=seg_head, frozen=True)) == recs["frozen"]["decoder_params"]
