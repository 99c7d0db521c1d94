"""FARCLUSS parts and the teacher-student step."""

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
    with pytest.raises(ParameterError, match="top_k"):
        ss.SemiSupConfig(top_k=0)
    with pytest.raises(ParameterError, match="ema_momentum"):
        ss.SemiSupConfig(ema_momentum=1.0)
    with pytest.raises(ParameterError, match="crop_min_scale"):
        ss.SemiSupConfig(crop_min_scale=0.0)
    with pytest.raises(ParameterError, match="unknown method"):
        ss.method_config("meanteacher")


def test_random_scale_crop_moves_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(6, 32, 32, dtype=torch.long)
    masks[:, :16, :16], masks[:, 16:, :16], masks[:, :16, 16:] = 1, 2, 3
    masks[:, 24:, 24:] = 255  # the ignore index survives nearest sampling
    images = F.one_hot(masks.clamp(max=4), 5).permute(0, 3, 1, 2).float()
    xi, xm = ss.random_scale_crop(images, masks, 0.5, g)
    assert xi.shape == images.shape and xm.shape == masks.shape and xm.dtype == masks.dtype
    assert set(torch.unique(xm).tolist()) <= {0, 1, 2, 3, 255} and (xm == 255).any()
    assert (xm != masks).float().mean() > 0.05  # it did zoom in
    # the bilinear image and the nearest mask agree everywhere but on a few boundary pixels
    assert (xi.argmax(dim=1) == xm.clamp(max=4)).float().mean() > 0.97
    # min_scale 1 is the identity and draws no random numbers
    state = g.get_state()
    same_i, same_m = ss.random_scale_crop(images, masks, 1.0, g)
    assert same_i is images and same_m is masks and torch.equal(g.get_state(), state)


def test_weak_augmentation_with_crop_keeps_images_and_masks_aligned():
    g = torch.Generator().manual_seed(2)
    masks = torch.zeros(4, 32, 32, dtype=torch.long)
    masks[:, :, 10:] = 1
    masks[:, 20:, :] = 2
    images = F.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    xi, xm = ss.weak_augment(images, masks, g, crop_min_scale=0.6)
    assert (xi.argmax(dim=1) == xm).float().mean() > 0.97


def _reference_contrast(trainer, emb, yl, t_emb, probs, targets, weights, n_l):
    """The first (slower) implementation of the contrast term, kept to pin down what it computes."""
    cfg = trainer.config

    def update(embeddings, labels):
        flat = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
        lab = labels.reshape(-1)
        valid = lab >= 0
        sums = torch.zeros_like(trainer.prototypes).index_add_(0, lab[valid], flat[valid])
        seen = torch.bincount(lab[valid], minlength=trainer.num_classes)[: trainer.num_classes] > 0
        means = F.normalize(sums, dim=1)
        m = cfg.prototype_momentum
        blended = F.normalize(m * trainer.prototypes + (1 - m) * means, dim=1)
        updated = torch.where(trainer.prototype_ready[:, None], blended, means)
        trainer.prototypes = torch.where(seen[:, None], updated, trainer.prototypes)
        trainer.prototype_ready = trainer.prototype_ready | seen

    size = emb.shape[-2:]
    lab_l = F.interpolate(yl[:, None].float(), size=size, mode="nearest")[:, 0].long()
    lab_l = torch.where(lab_l == 255, torch.full_like(lab_l, -1), lab_l)
    t_small = F.interpolate(targets, size=size, mode="area")
    w_small = F.interpolate(weights[:, None], size=size, mode="area")[:, 0]
    lab_u, conf_u = t_small.argmax(dim=1), t_small.max(dim=1).values
    with torch.no_grad():
        t_lab = F.interpolate(probs, size=size, mode="area")
        t_arg = t_lab.argmax(dim=1)
        t_arg = torch.where(
            ss.certainty_map(t_lab, cfg.certainty) >= cfg.prototype_confidence, t_arg, torch.full_like(t_arg, -1)
        )
        update(emb[:n_l].detach(), lab_l)
        update(t_emb, t_arg)
    labels = torch.cat([lab_l.reshape(-1), torch.where(conf_u > 0, lab_u, -1).reshape(-1)])
    pix_w = torch.cat([torch.ones(lab_l.numel()), w_small.reshape(-1)])
    flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    if cfg.prototype and not cfg.pairwise:
        ready = trainer.prototype_ready[labels.clamp_min(0)] & (labels >= 0)
        labels = torch.where(ready, labels, -1)
    idx = ss.sample_pixels(labels, pix_w, cfg.contrast_pixels, trainer.generator)
    e, lab, w = flat[idx], labels[idx], pix_w[idx]
    if cfg.pairwise:
        return ss.pairwise_contrast(e, lab, w, cfg.temperature)
    logits = e @ trainer.prototypes.t() / cfg.temperature
    loss = F.cross_entropy(logits, lab, reduction="none")
    return (loss * w).sum() / w.sum().clamp_min(1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"contrast_pixels": 100},
        {"pairwise": True, "prototype": False},
        {"fuzzy": False, "uncertainty": False, "certainty": "maxprob"},
    ],
)
def test_fast_contrast_computes_what_the_reference_computes(overrides):
    """Same loss, gradient, prototypes and readiness as the reference, step after step (classes appear late)."""
    import copy

    torch.manual_seed(0)
    config = ss.method_config("farcluss", **overrides)
    model = ss.build_model(8, "resnet10t", encoder_depth=3, decoder_channels=16, embed_dim=8)
    fast = ss.TeacherStudentTrainer(copy.deepcopy(model), 8, config, seed=3)
    ref = ss.TeacherStudentTrainer(copy.deepcopy(model), 8, config, seed=3)
    for it in range(4):
        emb = F.normalize(torch.randn(4, 8, 8, 8), dim=1)
        yl = torch.randint(0, 8, (2, 32, 32))
        yl[:, :3] = 255
        if it < 2:
            yl[yl == 5] = 1  # class 5 has no labelled pixel (and no ready prototype) at first
        t_emb = F.normalize(torch.randn(2, 8, 8, 8), dim=1)
        probs = torch.softmax(4 * torch.randn(2, 8, 32, 32), dim=1)
        targets, weights = ss.pseudo_labels(probs, config, None)
        e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
        l1 = fast._contrast(e1, yl, t_emb, probs, targets, weights, 2)
        l2 = _reference_contrast(ref, e2, yl, t_emb, probs, targets, weights, 2)
        l1.backward()
        l2.backward()
        assert torch.allclose(l1, l2, atol=1e-6, rtol=1e-5)
        assert torch.allclose(e1.grad, e2.grad, atol=1e-7)
        assert torch.allclose(fast.prototypes, ref.prototypes, atol=1e-6)
        assert torch.equal(fast.prototype_ready, ref.prototype_ready)
    assert bool(fast.prototype_ready[5])  # class 5 arrived in the later steps


def test_step_costs_measure_rounds_and_reject_unknown_names(tiny_batch):
    images, masks = tiny_batch
    xl, yl, xu = torch.from_numpy(images[:2]), torch.from_numpy(masks[:2]), torch.from_numpy(images[2:4])
    configs = {
        "supervised": ss.method_config("supervised"),
        "noc": ss.method_config("farcluss", prototype=False),
        "proto": ss.method_config("farcluss"),
    }
    table = ss.measure_step_costs(_tiny_model, configs, xl, yl, xu, 8, repeats=3, warmup=0, baselines={"proto": "noc"})
    assert list(table.method) == list(configs) and table.attrs["rounds_ms"].shape == (3, 3)
    row = table.set_index("method").loc["proto"]
    rounds = table.attrs["rounds_ms"]
    assert row["extra_ms"] == pytest.approx(float((rounds["proto"] - rounds["noc"]).median()))
    assert table.set_index("method").loc["supervised", "vs_reference"] == 1.0
    with pytest.raises(ParameterError, match="'pairwise' is not one of"):
        ss.measure_step_costs(_tiny_model, configs, xl, yl, xu, 8, repeats=1, baselines={"pairwise": "noc"})


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


@pytest.mark.parametrize(
    "method,overrides", [("supervised", {}), ("fixmatch", {}), ("farcluss", {}), ("farcluss", {"pairwise": True})]
)
def test_every_method_trains_and_updates_its_teacher(tiny_batch, method, overrides):
    images, masks = tiny_batch
    model = _tiny_model()
    config = ss.method_config(method, **overrides)
    teacher, history = ss.train_semisupervised(
        model, images[:4], masks[:4], images[4:], config, num_classes=8, iterations=2, batch_size=2, progress=False
    )
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
        ss.train_semisupervised(
            _tiny_model(),
            images[:2],
            masks[:2],
            images[:0],
            ss.method_config("farcluss"),
            num_classes=8,
            iterations=1,
            batch_size=2,
            progress=False,
        )


def test_sliding_window_prediction_tiles_the_large_image(tiny_batch):
    images, _ = tiny_batch
    big = np.concatenate([images[:1], images[1:2]], axis=-1)  # (1, 3, 32, 64)
    model = _tiny_model().eval()
    pred = ss.predict(model, big, tile=32)
    assert pred.shape == (1, 32, 64)
    # tiles start at x = 0, 24, 32: columns 0-23 are seen by the first tile only (= the left scene alone) and
    # columns 56-63 by the last tile only (= the right scene alone)
    left, right = ss.predict(model, images[:1]), ss.predict(model, images[1:2])
    np.testing.assert_array_equal(pred[..., :24], left[..., :24])
    np.testing.assert_array_equal(pred[..., 56:], right[..., 24:])


def test_scores_include_boundary_miou():
    target = np.zeros((1, 4, 4), dtype=np.int64)
    target[:, :, 2:] = 1
    pred = target.copy()
    pred[:, :, 2] = 0  # wrong only on the boundary
    band = np.zeros_like(target, dtype=bool)
    band[:, :, 1:3] = True
    s = ss.score_predictions(pred, target, ["a", "b"], band=band)
    assert s["boundary_miou"] < s["miou"] < 1


def test_embedding_normalisation_matches_f_normalize():
    x = torch.randn(3, 8, 5, 5, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    a, b = ss.l2_normalize_channels(x), F.normalize(y, dim=1)
    assert torch.allclose(a, b, atol=1e-6)
    (a * torch.arange(8.0).view(1, 8, 1, 1)).sum().backward()
    (b * torch.arange(8.0).view(1, 8, 1, 1)).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-5)
    _, emb = _tiny_model().forward_with_embedding(torch.rand(2, 3, 32, 32))
    assert torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)


# ----------------------------------------------------------------------------- input sides, crops, optimiser


def test_the_model_states_its_input_multiple_and_predictions_are_padded_to_it():
    import torch

    deeplab = ss.build_model(3, "resnet10t", "deeplabv3plus", 8, encoder_depth=5, decoder_channels=16)
    assert ss.input_multiple(deeplab) == 16
    deeplab.eval()
    with pytest.raises(RuntimeError):  # the negative control: 40 px is not a multiple of 16
        deeplab(torch.zeros(1, 3, 40, 40))
    pred = ss.predict(deeplab, np.zeros((2, 3, 40, 40), dtype=np.float32))
    assert pred.shape == (2, 40, 40)
    assert ss.predict(deeplab, np.zeros((1, 3, 40, 56), dtype=np.uint8), tile=32).shape == (1, 40, 56)
    assert ss.round_to_multiple(321, 16) == 320 and ss.round_to_multiple(8, 16) == 16


def test_random_crops_are_new_windows_of_each_whole_image_and_pad_small_ones_with_ignore():
    import torch

    images = torch.arange(2 * 3 * 20 * 30, dtype=torch.float32).reshape(2, 3, 20, 30)
    masks = torch.zeros(2, 20, 30, dtype=torch.long)
    masks[1, 6:, :] = 255  # image 1 is 6 x 10 in its canvas
    masks[1, :, 10:] = 255
    sizes = torch.tensor([[20, 30], [6, 10]])
    g = torch.Generator().manual_seed(0)
    windows = set()
    for _ in range(20):
        xi, xm = ss.random_crops(images, masks, sizes, 8, g)
        assert xi.shape == (2, 3, 8, 8) and xm.shape == (2, 8, 8)
        y, x = divmod(int(xi[0, 0, 0, 0]), 30)
        assert 0 <= y <= 12 and 0 <= x <= 22  # inside the true 20 x 30 extent
        windows.add((y, x))
        assert (xm[1, 6:] == 255).all() and (xm[1, :, :] != 255).sum() <= 6 * 8  # small image: padded with ignore
    assert len(windows) > 5  # a new window at every call, not one centre crop


def test_sgd_trains_the_encoder_at_lr_and_the_rest_at_head_lr_scale_times_it():
    model = ss.build_model(3, "resnet10t", "deeplabv3plus", 8, encoder_depth=3, decoder_channels=16)
    opt = ss.make_optimizer(model, "sgd", 1e-3, head_lr_scale=10)
    backbone, head = opt.param_groups
    encoder = {id(p) for p in model.segmenter.encoder.parameters()}
    assert {id(p) for p in backbone["params"]} == encoder and backbone["lr"] == 1e-3
    assert head["lr"] == pytest.approx(1e-2) and {id(p) for p in head["params"]}.isdisjoint(encoder)
    assert isinstance(opt, torch.optim.SGD) and backbone["momentum"] == 0.9 and backbone["weight_decay"] == 1e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with pytest.raises(ParameterError, match="optimizer must be one of"):
        ss.make_optimizer(model, "adam", 1e-3)
