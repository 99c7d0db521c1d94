"""Scene simulator, split lists and the VOC / Cityscapes folder loaders (on tiny trees written here)."""

import numpy as np
import pytest
from PIL import Image

from labkit.core.errors import DataError
from labkit.data import scenes as sc
from labkit.data import segmentation_folders as sf


@pytest.fixture(scope="module")
def scenes():
    return sc.simulate_scenes(40, seed=3, config=sc.SceneConfig(size=48))


def test_simulator_is_seeded_and_long_tailed(scenes):
    again = sc.simulate_scenes(40, seed=3, config=sc.SceneConfig(size=48))
    np.testing.assert_array_equal(scenes.masks, again.masks)
    np.testing.assert_allclose(scenes.images, again.images)
    other = sc.simulate_scenes(40, seed=4, config=sc.SceneConfig(size=48))
    assert not np.array_equal(scenes.masks, other.masks)
    assert scenes.images.shape == (40, 3, 48, 48) and scenes.images.dtype == np.float32
    assert 0 <= scenes.images.min() and scenes.images.max() <= 1
    freq = sc.class_frequencies(scenes.masks, scenes.num_classes)
    assert freq.sum() == pytest.approx(1.0)
    groups = sc.frequency_groups(freq, scenes.class_names)
    # Parcels dominate, 2x3-pixel vehicles are a small tail: the long tail comes from the geometry.
    assert groups["soil"] == "head" and groups["grass"] == "head"
    assert groups["vehicle"] == "tail"
    assert freq[scenes.class_names.index("vehicle")] < 0.02


def test_look_alike_classes_are_closer_than_distinct_ones(scenes):
    def mean_colour(name):
        c = scenes.class_names.index(name)
        sel = scenes.masks == c
        return scenes.images.transpose(1, 0, 2, 3)[:, sel].mean(axis=1)

    grass, wood, water = mean_colour("grass"), mean_colour("woodland"), mean_colour("water")
    assert np.linalg.norm(grass - wood) < np.linalg.norm(grass - water)


def test_boundary_band_marks_edges_only():
    mask = np.zeros((1, 8, 8), dtype=np.int64)
    mask[0, :, 4:] = 1
    band = sc.boundary_band(mask, width=1)
    assert band[0, :, 3:5].all() and not band[0, :, :3].any() and not band[0, :, 5:].any()


def test_split_lists_round_trip(tmp_path, scenes):
    labeled, unlabeled = sc.sample_labeled_split(scenes.ids, 1 / 8, seed=0)
    assert len(labeled) == 5 and len(unlabeled) == 35 and not set(labeled) & set(unlabeled)
    assert sc.sample_labeled_split(scenes.ids, 1 / 8, seed=0) == (labeled, unlabeled)
    assert sc.sample_labeled_split(scenes.ids, 1 / 8, seed=1)[0] != labeled
    d = sc.write_split_lists(tmp_path / sc.fraction_name(1 / 8) / "seed0", labeled, unlabeled)
    assert d.name == "seed0" and d.parent.name == "1_8"
    assert sc.read_split_list(d / "labeled.txt", scenes.ids) == labeled


def test_split_list_naming_unknown_ids_is_an_error(tmp_path, scenes):
    (tmp_path / "labeled.txt").write_text("scene_00001\nnot_a_scene\n")
    with pytest.raises(DataError, match="labeled.txt.*unknown"):
        sc.read_split_list(tmp_path / "labeled.txt", scenes.ids)


def test_empty_unlabeled_set_is_an_error(scenes):
    with pytest.raises(DataError, match="unlabeled set empty"):
        sc.sample_labeled_split(scenes.ids[:4], 1.0, seed=0)


def test_split_missing_a_class_is_warned():
    masks = np.zeros((2, 4, 4), dtype=np.int64)
    masks[0, 0, 0] = 2
    with pytest.warns(sc.SplitCoverageWarning, match=r"\['b'\]"):
        missing = sc.missing_classes(masks, 3, ["a", "b", "c"])
    assert missing == ["b"]


# ----------------------------------------------------------------------------- VOC


def _voc_tree(root, n=3, size=(10, 12)):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(n)]
    rng = np.random.default_rng(0)
    masks = []
    for sid in ids:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{sid}.jpg")
        mask = rng.integers(0, 21, size).astype(np.uint8)
        mask[0, :] = 255  # object border
        sf.write_palette_png(root / "SegmentationClass" / f"{sid}.png", mask)
        masks.append(mask)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return ids, masks


def test_voc_loader_reads_palette_masks_and_ignore(tmp_path):
    ids, masks = _voc_tree(tmp_path)
    ds = sf.VOCSegmentationFolder(tmp_path, "train")
    assert ds.ids == ids and ds.num_classes == 21
    image, mask = ds[1]
    assert image.shape == (3, 10, 12) and image.dtype.is_floating_point
    np.testing.assert_array_equal(mask.numpy(), masks[1])
    assert (mask[0] == 255).all()
    x, y, got_ids = sf.VOCSegmentationFolder(tmp_path, "train", crop=8).to_arrays()
    assert x.shape == (3, 3, 8, 8) and y.shape == (3, 8, 8) and got_ids == ids


def test_voc_loader_reads_unimatch_split_lists_and_rgb_masks(tmp_path):
    ids, masks = _voc_tree(tmp_path, n=2)
    rgb = sf.voc_palette()[masks[0]]
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / f"{ids[0]}.png")
    split = tmp_path / "labeled.txt"
    split.write_text(f"JPEGImages/{ids[0]}.jpg SegmentationClass/{ids[0]}.png\n")
    ds = sf.VOCSegmentationFolder(tmp_path, split)
    np.testing.assert_array_equal(ds[0][1].numpy(), masks[0])


def test_voc_split_naming_missing_file_is_an_error(tmp_path):
    ids, _ = _voc_tree(tmp_path, n=2)
    (tmp_path / "JPEGImages" / f"{ids[1]}.jpg").unlink()
    with pytest.raises(DataError, match=f"train.txt names 1 missing file.*{ids[1]}"):
        sf.VOCSegmentationFolder(tmp_path, "train")


def test_voc_mask_with_ids_outside_classes_is_an_error(tmp_path):
    ids, masks = _voc_tree(tmp_path, n=1)
    bad = masks[0].copy()
    bad[2, 2] = 40
    sf.write_palette_png(tmp_path / "SegmentationClass" / f"{ids[0]}.png", bad)
    ds = sf.VOCSegmentationFolder(tmp_path, "train")
    with pytest.raises(DataError, match=rf"{ids[0]}\.png holds ids \[40\]"):
        ds[0]


# ----------------------------------------------------------------------------- Cityscapes


def _cityscapes_tree(root, label_ids):
    img_dir = root / "leftImg8bit" / "train" / "aachen"
    gt_dir = root / "gtFine" / "train" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    stem = "aachen_000000_000019"
    Image.fromarray(np.zeros((*label_ids.shape, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(label_ids.astype(np.uint8), mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    return stem


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    label_ids = np.array([[7, 8, 26, 0], [23, 33, 4, 24]])
    stem = _cityscapes_tree(tmp_path, label_ids)
    ds = sf.CityscapesFolder(tmp_path, "train")
    assert ds.ids == [stem] and ds.num_classes == 19
    _, mask = ds[0]
    np.testing.assert_array_equal(mask.numpy(), [[0, 1, 13, 255], [10, 18, 255, 11]])


def test_cityscapes_label_id_out_of_range_is_an_error(tmp_path):
    _cityscapes_tree(tmp_path, np.array([[7, 50]]))
    with pytest.raises(DataError, match=r"labelIds\.png holds label ids \[50\]"):
        sf.CityscapesFolder(tmp_path, "train")[0]


def test_cityscapes_missing_mask_is_an_error(tmp_path):
    stem = _cityscapes_tree(tmp_path, np.array([[7, 8]]))
    (tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="missing file"):
        sf.CityscapesFolder(tmp_path, "train")
