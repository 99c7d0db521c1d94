"""Scene simulator, split lists and the VOC / Cityscapes folder loaders (on tiny trees written here)."""

import numpy as np
import pytest
from PIL import Image

import labkit
from labkit.core.errors import DataError, ParameterError
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


# ----------------------------------------------------------------------------- more bad input


def test_bad_fractions_and_empty_id_lists_are_errors(scenes):
    from labkit.core.errors import ParameterError

    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(ParameterError, match="labelled fraction"):
            sc.sample_labeled_split(scenes.ids, fraction, seed=0)
    with pytest.raises(DataError, match="empty id list"):
        sc.sample_labeled_split([], 0.5, seed=0)


def test_missing_split_list_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sc.read_split_list(tmp_path / "labeled.txt")
    with pytest.raises(DataError, match="does not exist"):
        sf.VOCSegmentationFolder(tmp_path, tmp_path / "labeled.txt")


def test_voc_rgb_mask_with_a_foreign_colour_is_an_error(tmp_path):
    ids, masks = _voc_tree(tmp_path, n=1)
    rgb = sf.voc_palette()[masks[0]]
    rgb[1, 1] = (1, 2, 3)  # no VOC class has this colour
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / f"{ids[0]}.png")
    with pytest.raises(DataError, match=r"RGB colours \[\(1, 2, 3\)\] are not VOC class colours"):
        sf.VOCSegmentationFolder(tmp_path, "train")[0]


def test_voc_mask_in_an_unsupported_mode_is_an_error(tmp_path):
    ids, masks = _voc_tree(tmp_path, n=1)
    Image.fromarray(masks[0].astype(np.float32), mode="F").save(tmp_path / "SegmentationClass" / f"{ids[0]}.tiff")
    (tmp_path / "SegmentationClass" / f"{ids[0]}.tiff").rename(tmp_path / "SegmentationClass" / f"{ids[0]}.png")
    with pytest.raises(DataError, match="PIL mode F"):
        sf.VOCSegmentationFolder(tmp_path, "train")[0]


def test_image_and_mask_of_different_sizes_is_an_error(tmp_path):
    ids, masks = _voc_tree(tmp_path, n=1, size=(10, 12))
    sf.write_palette_png(tmp_path / "SegmentationClass" / f"{ids[0]}.png", masks[0][:8])
    with pytest.raises(DataError, match=rf"sample {ids[0]}: image .* is \(10, 12\) but mask .* is \(8, 12\)"):
        sf.VOCSegmentationFolder(tmp_path, "train")[0]


def test_unreadable_image_is_an_error(tmp_path):
    ids, _ = _voc_tree(tmp_path, n=1)
    (tmp_path / "JPEGImages" / f"{ids[0]}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot be read"):
        sf.VOCSegmentationFolder(tmp_path, "train")[0]


def test_empty_split_list_and_missing_root_are_errors(tmp_path):
    _voc_tree(tmp_path, n=1)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match="lists no samples"):
        sf.VOCSegmentationFolder(tmp_path, "val")
    with pytest.raises(DataError, match="is not a folder"):
        sf.VOCSegmentationFolder(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="is not a folder"):
        sf.CityscapesFolder(tmp_path / "nowhere", "train")


def test_samples_of_different_sizes_need_a_crop_to_stack(tmp_path):
    ids, _ = _voc_tree(tmp_path, n=2, size=(10, 12))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "JPEGImages" / f"{ids[1]}.jpg")
    sf.write_palette_png(tmp_path / "SegmentationClass" / f"{ids[1]}.png", np.zeros((6, 6), dtype=np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        sf.VOCSegmentationFolder(tmp_path, "train").to_arrays()
    x, y, _ = sf.VOCSegmentationFolder(tmp_path, "train", crop=8).to_arrays()
    assert x.shape == (2, 3, 8, 8) and (y[1, 6:, :] == 255).all()  # padding is ignored


def test_split_naming_ids_outside_the_dataset_is_an_error(tmp_path):
    ids, _ = _voc_tree(tmp_path, n=2)
    ds = sf.VOCSegmentationFolder(tmp_path, "train")
    sf.check_split_against_folder(ids[:1], ds)
    with pytest.raises(DataError, match=r"split names 1 id\(s\) not in .*train.txt"):
        sf.check_split_against_folder([ids[0], "2012_999999"], ds)


def test_cityscapes_reads_unimatch_split_lists(tmp_path):
    label_ids = np.array([[7, 8], [26, 0]])
    stem = _cityscapes_tree(tmp_path, label_ids)
    split = tmp_path / "labeled.txt"
    split.write_text(
        f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png gtFine/train/aachen/{stem}_gtFine_labelTrainIds.png\n"
    )
    ds = sf.CityscapesFolder(tmp_path, split)
    assert ds.ids == [stem]
    np.testing.assert_array_equal(ds[0][1].numpy(), [[0, 1], [13, 255]])


def test_cityscapes_bad_split_list_line_and_split_folder_are_errors(tmp_path):
    stem = _cityscapes_tree(tmp_path, np.array([[7, 8]]))
    split = tmp_path / "labeled.txt"
    split.write_text(f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png\n")
    with pytest.raises(DataError, match="needs '<image> <mask>'"):
        sf.CityscapesFolder(tmp_path, split)
    with pytest.raises(DataError, match="split folder .*val does not exist"):
        sf.CityscapesFolder(tmp_path, "val")


def test_prepared_arrays_are_written_once_under_their_content_digest(tmp_path):
    from labkit.data import prepared_arrays as pa

    x, y = np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(3, dtype=np.uint8)
    path, digest = pa.write_prepared_arrays(tmp_path, {"x": x, "y": y, "names": np.array(["a"])}, digest_of=("x", "y"))
    assert path == str(tmp_path / f"{digest}.npz") and digest == pa.array_digest(x, y)
    written = (tmp_path / f"{digest}.npz").stat().st_mtime_ns
    # the same content (the digest leaves the names out) is not written again
    assert pa.write_prepared_arrays(tmp_path, {"x": x, "y": y, "names": np.array(["b"])}, ("x", "y")) == (path, digest)
    assert (tmp_path / f"{digest}.npz").stat().st_mtime_ns == written
    loaded = pa.load_prepared_arrays(path)
    np.testing.assert_array_equal(loaded["x"], x)
    assert loaded["names"].tolist() == ["a"]
    assert pa.array_digest(x.astype(np.float64), y) != digest  # the dtype and shape count, not only the values
    assert pa.array_digest(x.reshape(4, 3), y) != digest
    state_path, state_digest = pa.write_state_file(tmp_path / "states", {"b": y, "a": x})
    assert state_digest == pa.array_digest(x, y) and state_path.endswith(f"{state_digest}.safetensors")


def test_a_finer_scene_resolution_keeps_the_class_shares_and_enlarges_the_objects():
    from scipy import ndimage

    coarse = sc.simulate_scenes(24, seed=5, config=sc.SceneConfig(size=32, resolution=1.0))
    fine = sc.simulate_scenes(24, seed=5, config=sc.SceneConfig(size=64, resolution=2.0))
    f_coarse = sc.class_frequencies(coarse.masks, len(sc.SCENE_CLASSES))
    f_fine = sc.class_frequencies(fine.masks, len(sc.SCENE_CLASSES))
    vehicle = sc.SCENE_CLASSES.index("vehicle")
    assert 0 < f_fine[vehicle] < 0.02 and 0.5 < f_fine[vehicle] / f_coarse[vehicle] < 2  # still a tail, same share
    assert np.abs(f_fine - f_coarse).max() < 0.06

    def median_area(masks):
        areas = []
        for m in masks:
            lab, n = ndimage.label(m == vehicle)
            areas += list(np.bincount(lab.ravel())[1:])
        return np.median(areas)

    assert median_area(fine.masks) >= 3 * median_area(coarse.masks)  # about 4x the pixels: 2x finer sampling
    with pytest.raises(ParameterError, match="resolution"):
        sc.SceneConfig(resolution=0)


def test_a_scene_smaller_than_the_crop_is_refused_at_configure_time():
    with pytest.raises(ParameterError, match="scene_size 16 is smaller than image_size 32"):
        labkit.configure("farcluss", "smoke", {"scene_size": 16, "image_size": 32})


def _pool(shares_per_image):
    """A pool whose image i is all class 0 except ``shares_per_image[i]`` pixels of class 1 (of 100)."""
    from types import SimpleNamespace

    masks = np.zeros((len(shares_per_image), 10, 10), dtype=np.int64)
    for i, n in enumerate(shares_per_image):
        masks[i].flat[:n] = 1
    ids = [f"img{i:03d}" for i in range(len(masks))]
    train = SimpleNamespace(ids=ids, masks=masks)
    return SimpleNamespace(train=train, frequencies=sc.class_frequencies(masks, 2), num_classes=2)


def test_a_covering_draw_redraws_a_split_that_starves_a_class_and_keeps_one_that_covers_it():
    from labkit.studies.farcluss.data import covering_draw

    # class 1 lives in 4 of 40 images: most plain draws of 4 miss it (a negative control: min_share 0 keeps them)
    data = _pool([50 if i % 10 == 0 else 0 for i in range(40)])
    pool = data.frequencies[1]
    plain = {s: covering_draw(data, 0.1, s, 0.0) for s in range(20)}
    starved = [s for s, chosen in plain.items() if sc.class_frequencies(data.train.masks[chosen], 2)[1] < pool / 2]
    assert starved, "no plain draw starves class 1"
    for seed in starved[:3]:
        chosen = covering_draw(data, 0.1, seed, 0.5)
        assert len(chosen) == 4
        assert sc.class_frequencies(data.train.masks[chosen], 2)[1] >= pool / 2
        assert covering_draw(data, 0.1, seed, 0.5) == chosen  # seeded
    # a class spread evenly: every plain draw covers it and is kept as it was
    even = _pool([30] * 40)
    assert covering_draw(even, 0.1, 3, 0.5) == covering_draw(even, 0.1, 3, 0.0)


def test_a_covering_draw_that_cannot_be_met_keeps_the_best_draw_with_a_warning():
    from labkit.studies.farcluss.data import covering_draw

    data = _pool([100] + [0] * 39)
    data.frequencies[:] = [0.0, 1.0]  # a pool share of class 1 that no split of 4 images can reach
    with pytest.warns(sc.SplitCoverageWarning, match="split_min_share"):
        chosen = covering_draw(data, 0.1, 0, 0.5)
    assert 0 in chosen  # the best draw holds the one image with class 1
