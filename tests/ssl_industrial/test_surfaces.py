import numpy as np
import pytest

from labkit.core.errors import ParameterError
from labkit.data.surfaces import (
    DEFECT_TYPES,
    MATERIAL_DEFECTS,
    MATERIALS,
    SurfaceSimulator,
    simulate_surfaces,
    unrelated_images,
)


def test_shapes_ranges_and_masks_follow_defect_types():
    s = simulate_surfaces(60, size=32, seed=1)
    assert s.images.shape == (60, 1, 32, 32) and s.images.dtype == np.float32
    assert s.masks.shape == (60, 32, 32) and s.masks.dtype == np.int64
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    good = s.defect_types == "good"
    assert good.any() and (~good).any()
    assert not s.masks[good].any(), "defect-free images must have empty masks"
    assert all(s.masks[i].any() for i in np.flatnonzero(~good)), "every defect needs mask pixels"
    for m, d in zip(s.materials, s.defect_types):
        assert m in MATERIALS
        assert d == "good" or d in MATERIAL_DEFECTS[m]
    np.testing.assert_array_equal(s.labels, (~good).astype(int))


def test_seeded_draws_repeat_and_differ():
    a, b, c = (simulate_surfaces(4, size=32, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)


@pytest.mark.parametrize("defect", ["scratch", "crack", "blowhole", "edge_break"])
def test_defects_darken_the_surface_inside_their_mask(defect):
    # Same texture, pose and noise draw with and without the defect: grooves, cracks, cavities and
    # chips are darker than the intact surface, so the mean inside the mask must drop.
    sim = SurfaceSimulator(size=48, lighting=0.0, read_noise=0.0, photon_gain=1e9, max_rotation=0)
    drops = []
    for seed in range(6):
        with_defect = sim.sample_one(np.random.default_rng(seed), material="casting", defect=defect)
        clean = sim.sample_one(np.random.default_rng(seed), material="casting", defect="good")
        mask = with_defect[1]
        assert mask.any()
        drops.append(clean[0][0][mask].mean() - with_defect[0][0][mask].mean())
    assert np.mean(drops) > 0.02


def test_colour_and_skimage_textures():
    sim = SurfaceSimulator(size=32, channels=3, materials=("brick", "gravel", "grass"))
    s = sim.sample(6, seed=0)
    assert s.images.shape == (6, 3, 32, 32)
    assert set(s.materials) <= {"brick", "gravel", "grass"}
    assert s.images.std() > 0.02


def test_all_good_draw_and_bad_parameters():
    s = SurfaceSimulator(size=32).sample(10, seed=0, defect_fraction=0.0)
    assert (s.defect_types == "good").all() and s.masks.sum() == 0
    with pytest.raises(ParameterError, match="unknown material"):
        SurfaceSimulator(materials=("steel_wool",))
    with pytest.raises(ParameterError, match="unknown defect"):
        SurfaceSimulator(defect_types=("dent",))
    with pytest.raises(ParameterError, match="channels"):
        SurfaceSimulator(channels=2)
    assert set(DEFECT_TYPES) == {"scratch", "crack", "blowhole", "edge_break", "stain"}


def test_unrelated_images_are_photographs_of_the_right_shape():
    u = unrelated_images(5, size=24, channels=1, seed=0)
    assert u.shape == (5, 1, 24, 24) and u.dtype == np.float32
    assert 0 <= u.min() and u.max() <= 1 and u.std() > 0.01
    np.testing.assert_array_equal(u, unrelated_images(5, size=24, channels=1, seed=0))
