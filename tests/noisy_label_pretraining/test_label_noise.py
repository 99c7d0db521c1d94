"""Label-noise models: identity at severity 0, growth with severity, their specific geometry."""

import numpy as np
import pytest

from labkit.data import label_noise as ln
from labkit.data.landcover import LandscapeSimulator


@pytest.fixture(scope="module")
def tiles():
    return LandscapeSimulator(64).sample(16, seed=7)


GEOMETRIC = ["boundary", "misregistration", "flips", "omission", "coarse"]


@pytest.mark.parametrize("name", GEOMETRIC)
def test_identity_at_zero_and_more_noise_at_higher_severity(tiles, name):
    clean = tiles.labels()
    np.testing.assert_array_equal(ln.apply_noise(ln.make_noise(name, 0.0, 6), clean), clean)
    low = ln.noise_rate(clean, ln.apply_noise(ln.make_noise(name, 0.2, 6), clean, seed=1))
    high = ln.noise_rate(clean, ln.apply_noise(ln.make_noise(name, 1.0, 6), clean, seed=1))
    assert 0 < high and low < high


def test_misregistration_is_a_shift():
    labels = np.zeros((20, 20), np.int64)
    labels[5:10, 5:10] = 1
    out = ln.Misregistration(severity=1.0, max_shift=3)(labels, np.random.default_rng(0))
    assert out.sum() == 25  # same object, moved (it stays inside the tile)
    assert not np.array_equal(out, labels)


def test_coarse_labels_are_constant_in_blocks():
    labels = np.random.default_rng(0).integers(0, 4, (32, 32))
    out = ln.CoarseLabels(severity=1.0, max_factor=8)(labels, np.random.default_rng(0))
    blocks = out.reshape(4, 8, 4, 8)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_omission_removes_small_objects_only():
    labels = np.zeros((40, 40), np.int64)
    labels[2:4, 2:4] = 1  # 4 px object
    labels[10:30, 10:30] = 2  # 400 px object
    out = ln.SmallObjectOmission(severity=1.0, max_area=50)(labels, np.random.default_rng(0))
    assert (out == 1).sum() == 0 and (out == 2).sum() == 400


def test_flips_keep_object_shapes():
    labels = np.zeros((20, 20), np.int64)
    labels[:, 10:] = 1
    out = ln.ObjectClassFlips(severity=1.0, max_rate=1.0, num_classes=3)(labels, np.random.default_rng(0))
    assert (out[:, :10] != 0).all() and (out[:, 10:] != 1).all()
    assert len(np.unique(out[:, :10])) == 1 and len(np.unique(out[:, 10:])) == 1


def test_ignore_pixels_stay_ignored(tiles):
    clean = tiles.labels()[:4].copy()
    clean[:, :5, :5] = 255
    noisy = ln.apply_noise(ln.make_noise(GEOMETRIC, 1.0, 6), clean, seed=2)
    assert (noisy[:, :5, :5] == 255).all()
    assert noisy[clean != 255].max() < 6


def test_sensor_rule_uses_height_and_ndvi(tiles):
    clean = tiles.labels()
    model = ln.SensorRuleLabels(severity=0.0)
    noisy = ln.apply_noise(model, clean, height=tiles.height, ndvi=tiles.ndvi())
    forest = clean == 3
    # canopy is tall and green: the rule finds most forest; flat roads are invisible to it
    assert (noisy[forest] == 3).mean() > 0.8
    road = tiles.fine_labels == 5
    if road.any():
        assert (noisy[road] == 5).mean() < 0.5
    with pytest.raises(ValueError, match="needs the other sensor"):
        model(clean[0], np.random.default_rng(0))


def test_apply_noise_is_repeatable_and_compose_applies_all(tiles):
    clean = tiles.labels()
    model = ln.make_noise(GEOMETRIC, 0.5, 6)
    np.testing.assert_array_equal(ln.apply_noise(model, clean, seed=3), ln.apply_noise(model, clean, seed=3))
    assert len(model.models) == 5 and model.severity == 0.5
    with pytest.raises(ValueError, match="severity must be within"):
        ln.BoundaryNoise(severity=1.5)
    with pytest.raises(ValueError, match="unknown noise models"):
        ln.make_noise("smudge", 0.5)


def test_boundary_noise_only_moves_labels_near_boundaries(tiles):
    from scipy import ndimage

    clean = tiles.labels()[0]
    noisy = ln.BoundaryNoise(severity=1.0, max_radius=3)(clean, np.random.default_rng(5))
    changed = noisy != clean
    assert changed.any()
    edges = np.zeros_like(changed)
    edges[:, 1:] |= clean[:, 1:] != clean[:, :-1]
    edges[:, :-1] |= clean[:, 1:] != clean[:, :-1]
    edges[1:] |= clean[1:] != clean[:-1]
    edges[:-1] |= clean[1:] != clean[:-1]
    # a dilation by radius r reaches at most r pixels (chessboard) from the nearest class edge
    distance = ndimage.distance_transform_cdt(~edges, metric="chessboard")
    assert distance[changed].max() <= 3


def test_flips_follow_the_confusion_matrix():
    labels = np.zeros((30, 30), np.int64)
    labels[:, 15:] = 1
    confusion = np.array([[0, 0, 1.0], [0, 0, 1.0], [1.0, 1.0, 0]])  # 0 and 1 are only ever mistaken for 2
    out = ln.ObjectClassFlips(severity=1.0, max_rate=1.0, num_classes=3, confusion=confusion)(
        labels, np.random.default_rng(0)
    )
    assert (out == 2).all()


def test_compose_is_the_models_in_order(tiles):
    clean = tiles.labels()[1]
    parts = [ln.CoarseLabels(severity=0.5), ln.Misregistration(severity=1.0)]
    composed = ln.Compose(parts)(clean, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    by_hand = parts[1](parts[0](clean, rng), rng)
    np.testing.assert_array_equal(composed, by_hand)
    assert ln.noise_rate(clean, composed) > ln.noise_rate(clean, parts[0](clean, np.random.default_rng(9)))
