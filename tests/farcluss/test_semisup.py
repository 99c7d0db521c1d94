"""FARCLUSS parts and the teacher-student step."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.core.errors import DataError, ParameterError
from labkit.methods import semisup as ss


def _probs(*rows):
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), -1, 1, 1).permute(1, 0, 2, 3)


def test_fuzzy_targets_keep_top_k_renormalised():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]).view(1, 4, 1, 1)
    t = ss.fuzzy_targets(p, top_k=2).view(-1)
    assert torch.allclose(t, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(ss.fuzzy_targets(p, top_k=10).view(-1), p.view(-1))


def test_certainty_is_one_when_sure_and_zero_when_uniform():
    p = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.full((4,), 0.25)]).view(2, 4, 1, 1)
    c = ss.certainty_map(p, "entropy").view(-1)
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(0.0, abs=1e-6)
    assert ss.certainty_map(p, "maxprob").view(-1).tolist() == pytest.approx([1.0, 0.25])


def test_hard_threshold_drops_unsure_pixels_and_fuzzy_keeps_them_weighted():
    p = torch.stack([torch.tensor([0.97, 0.01, 0.01, 0.01]), torch.tensor([0.6, 0.3, 0.05, 0.05])]).view(2, 4, 1, 1)
    _, w_hard = ss.pseudo_labels(p, ss.method_config("fixmatch"))
    assert w_hard.view(-1).tolist() == [1.0, 0.0]
    t, w = ss.pseudo_labels(p, ss.method_config("farcluss", rebalance=False))
    assert (w.view(-1) > 0).all() and w.view(-1)[0] > w.view(-1)[1]
    assert t[1, 1].item() > 0  # the runner-up class keeps its mass
    _, w_flat = ss.pseudo_labels(p, ss.method_config("farcluss", rebalance=False, uncertainty=False))
    assert w_flat.view(-1).tolist() == [1.0, 1.0]


def test_rebalancing_boosts_rare_pseudo_label_classes():
    tracker = ss.ClassFrequencyTracker(3, momentum=0.0, power=0.5, max_weight=10)
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1).view(1, 100, 1)
    tracker.update(F.one_hot(labels, 3).permute(0, 3, 1, 2).float())
    w = tracker.weights()
    assert w[2] > w[1] > w[0]
    assert float((tracker.frequencies * w).sum()) == pytest.approx(1.0, rel=1e-3)
    p = torch.tensor([[0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]).view(2, 3, 1, 1)
    _, weights = ss.pseudo_labels(p, ss.method_config("farcluss", uncertainty=False), w)
    assert weights.view(-1)[0] > weights.view(-1)[1]


def test_prototype_contrast_prefers_embeddings_near_their_prototype():
    protos = torch.eye(3, 4)
    labels = torch.tensor([0, 1, 2])
    w = torch.ones(3)
    near = ss.prototype_contrast(protos.clone(), labels, w, protos, 0.1)
    far = ss.prototype_contrast(protos[[1, 2, 0]].clone(), labels, w, protos, 0.1)
    assert near < far


def test_pairwise_contrast_prefers_clustered_classes():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=1)
    mixed = clustered[[0, 2, 1, 3]]
    w = torch.ones(4)
    assert ss.pairwise_contrast(clustered, labels, w, 0.1) < ss.pairwise_contrast(mixed, labels, w, 0.1)


def test_pairwise_contrast_memory_grows_quadratically_prototype_linearly():
    table = ss.measure_contrast_costs([256, 1024], repeats=1).set_index(["contrast", "pixels"])
    mem = table["saved_activation_mb"]
    assert mem["pairwise", 1024] / mem["pairwise", 256] > 8  # ~16x for 4x pixels
    assert mem["prototype", 1024] / mem["prototype", 256] < 5
    assert mem["prototype", 1024] < mem["pairwise", 1024]


def test_weak_augmentation_and_cutmix_move_images_and_masks_together():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 5, (6, 8, 8))
    images = masks[:, None].float().repeat(1, 3, 1, 1)
    xi, xm = ss.weak_augment(images, masks, g)
    assert torch.equal(xi[:, 0].long(), xm)
    boxes = ss.cutmix_boxes(6, 8, 8, 1.0, g)
    assert boxes.any(dim=(1, 2)).all()
    partner = torch.roll(torch.arange(6), 1)
    mi, mm = ss.apply_cutmix(xi, boxes, partner), ss.apply_cutmix(xm, boxes, partner)
    assert torch.equal(mi[:, 1].long(), mm)


def test_strong_augmentation_keeps_range_and_shape():
    x = torch.rand(4, 3, 16, 16)
    y = ss.strong_photometric(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)


def test_ablation_covers_each_part_removed_and_added():
    configs = ss.ablation_configs()
    for part in ss.PARTS:
        c = configs[f"without {part}"]
        assert getattr(c, part) is False and all(getattr(c, p) for p in ss.PARTS if p != part)
    assert not any(getattr(configs["hard threshold (no part)"], p) for p in ss.PARTS)
    assert configs["+ fuzzy"].fuzzy and not configs["+ fuzzy"].uncertainty


def test_bad_config_values_are_rejected():
    with pytest.raises(ParameterError, match="method"):
        ss.SemiSupConfig(method="mixmatch")
    with pytest.raises(ParameterError, match="certainty"):
        ss.SemiSupConfig(certainty="variance")


def test_ema_update_moves_teacher_towards_student():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    ss.ema_update(a, b, momentum=0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


@pytest.fixture(scope="module")
def tiny_batch():
    from labkit.data.scenes import SceneConfig, simulate_scenes

    s = simulate_scenes(8, seed=0, config=SceneConfig(size=32))
    return s.images, s.masks


def _tiny_model():
    torch.manual_seed(0)
    return ss.build_model(8, "resnet10t", encoder_depth=3, decoder_channels=16, embed_dim=8)


@pytest.mark.parametrize("method,overrides", [("supervised", {}), ("fixmatch", {}), ("farcluss", {}),
                                              ("farcluss", {"pairwise": True})])
def test_every_method_trains_and_updates_its_teacher(tiny_batch, method, overrides):
    images, masks = tiny_batch
    model = _tiny_model()
    config = ss.method_config(method, **overrides)
    teacher, history = ss.train_semisupervised(model, images[:4], masks[:4], images[4:], config, num_classes=8,
                                               iterations=2, batch_size=2, progress=False)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    if config.uses_unlabeled:
        assert "unsupervised" in history
    if config.uses_contrast:
        assert "contrast" in history and (history["contrast"] > 0).any()
    moved = [not torch.equal(t, s) for t, s in zip(teacher.parameters(), model.parameters())]
    assert any(moved)  # the teacher is an average, not the student itself
    pred = ss.predict(teacher, images[:2])
    assert pred.shape == (2, 32, 32) and pred.max() < 8


def test_supervised_training_lowers_the_loss(tiny_batch):
    images, masks = tiny_batch
    trainer = ss.TeacherStudentTrainer(_tiny_model(), 8, ss.method_config("supervised"), lr=3e-3)
    xl, yl = torch.from_numpy(images[:2]), torch.from_numpy(masks[:2])
    losses = [trainer.step(xl, yl)["loss"] for _ in range(12)]
    assert np.mean(losses[-3:]) < losses[0]


def test_semi_supervised_training_without_unlabeled_images_is_an_error(tiny_batch):
    images, masks = tiny_batch
    with pytest.raises(DataError, match="unlabeled set is empty"):
        ss.train_semisupervised(_tiny_model(), images[:2], masks[:2], images[:0], ss.method_config("farcluss"),
                                num_classes=8, iterations=1, batch_size=2, progress=False)


def test_sliding_window_prediction_matches_shape(tiny_batch):
    images, _ = tiny_batch
    big = np.concatenate([images[:1], images[1:2]], axis=-1)  # (1, 3, 32, 64)
    pred = ss.predict(_tiny_model().eval(), big, tile=32)
    assert pred.shape == (1, 32, 64)


def test_scores_include_boundary_miou():
    target = np.zeros((1, 4, 4), dtype=np.int64)
    target[:, :, 2:] = 1
    pred = target.copy()
    pred[:, :, 2] = 0  # wrong only on the boundary
    band = np.zeros_like(target, dtype=bool)
    band[:, :, 1:3] = True
    s = ss.score_predictions(pred, target, ["a", "b"], band=band)
    assert s["boundary_miou"] < s["miou"] < 1
