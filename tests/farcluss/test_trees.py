"""Whole benchmark trees with split lists (VOC train_aug, Cityscapes, your own folders) and their bad inputs."""

import warnings

import numpy as np
import pytest
from PIL import Image

import labkit
from labkit.core.errors import DataError
from labkit.data import segmentation_folders as sf
from labkit.studies import farcluss as study
from labkit.studies.farcluss.data import labelled_indices
from labkit.studies.farcluss.experiment import train
from tests.farcluss import trees


def test_voc_train_aug_tree_reads_split_lists_labelled_first(tmp_path):
    tree = trees.write_voc_tree(tmp_path)
    data = sf.load_semisup_folder("voc", tmp_path, crop=16, splits=["1_4", "92"])
    # every image whole, as bytes, in a canvas of the largest (18x26 and 20x24 images), with its true size
    assert data.train_images.shape == (24, 3, 20, 26) and data.train_images.dtype == np.uint8
    assert data.class_names == sf.VOC_CLASSES and data.split_lists == tree["splits"]
    assert {tuple(s) for s in data.train_sizes} == {(18, 26), (20, 24)}
    for mask, (h, w) in zip(data.train_masks, data.train_sizes):
        assert (mask[h:] == 255).all() and (mask[:, w:] == 255).all() and (mask[:h, :w] != 255).any()
    assert sorted(data.train_ids) == sorted(tree["train"])
    # held-out images keep their size (padded to the largest; the padding is ignored)
    assert data.val_images.shape == (4, 3, 20, 26) and data.val_ids == tree["val"]
    assert (data.val_masks[0, 18:] == 255).all() and (data.val_masks[1, :, 24:] == 255).all()  # 18x26 and 20x24
    assert (data.val_masks[:, 0] == 255).all()  # the object borders the masks mark
    # the pool is cut to n_train with every labelled sample kept
    cut = sf.load_semisup_folder("voc", tmp_path, crop=16, n_train=4, splits=["1_4"])
    assert sorted(cut.train_ids) == sorted(tree["splits"]["1_4"])


def test_subsets_are_drawn_at_random_with_the_seed_not_cut_in_id_order(tmp_path):
    tree = trees.write_folder_tree(tmp_path, n_train=16)
    pool = sorted(tree["train"])
    first = sf.load_semisup_folder("folders", tmp_path, crop=16, n_train=6, n_val=2, splits=["1_4"])
    again = sf.load_semisup_folder("folders", tmp_path, crop=16, n_train=6, n_val=2, splits=["1_4"])
    other = sf.load_semisup_folder("folders", tmp_path, crop=16, n_train=6, n_val=2, splits=["1_4"], seed=1)
    assert first.train_ids == again.train_ids and len(first.train_ids) == 6
    assert set(tree["splits"]["1_4"]) <= set(first.train_ids) and set(tree["splits"]["1_4"]) <= set(other.train_ids)
    assert first.train_ids != pool[:6] or other.train_ids != pool[:6]
    assert first.train_ids != other.train_ids and len(first.val_ids) == 2


def test_images_smaller_than_the_crop_are_padded_with_ignore_and_said(tmp_path):
    trees.write_folder_tree(tmp_path)  # 18 x 18 images
    with pytest.warns(
        sf.ImageSizeWarning,
        match=r"16 of 16 training images are smaller than image_size 32 .*"
        r"padded with the ignore index 255",
    ):
        data = sf.load_semisup_folder("folders", tmp_path, crop=32)
    assert data.train_images.shape[-2:] == (32, 32) and (data.train_masks[:, 18:] == 255).all()
    assert any("smaller than image_size 32" in n for n in data.notes)


def test_a_crop_tiny_against_the_images_is_warned_naming_the_parameter_to_raise(tmp_path):
    trees.write_folder_tree(tmp_path, size=(64, 80))
    with pytest.warns(sf.ImageSizeWarning, match=r"image_size 8 is small against images of 64x80 .*raise image_size"):
        sf.load_semisup_folder("folders", tmp_path, crop=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sf.ImageSizeWarning)
        sf.load_semisup_folder("folders", tmp_path, crop=32)  # a crop of half the side: no warning


def test_cityscapes_tree_maps_label_ids_and_reads_unimatch_lists(tmp_path):
    tree = trees.write_cityscapes_tree(tmp_path)
    data = sf.load_semisup_folder("cityscapes", tmp_path, crop=16, splits=["1_4"])
    assert data.split_lists["1_4"] == tree["splits"]["1_4"]
    assert data.train_images.shape == (16, 3, 16, 32) and data.val_images.shape == (3, 3, 16, 32)  # whole images
    # label ids 7, 8, 11, 21, 23, 26 -> train ids 0, 1, 2, 8, 10, 13; 0 (unlabelled) -> ignored
    assert set(np.unique(data.train_masks)) <= {0, 1, 2, 8, 10, 13, 255}


@pytest.mark.parametrize("palette", [False, True], ids=["greyscale", "palette"])
def test_own_folders_with_classes_txt(tmp_path, palette):
    tree = trees.write_folder_tree(tmp_path, palette=palette)
    data = sf.load_semisup_folder("folders", tmp_path, crop=16, splits=["1_4"])
    assert data.class_names == ("background", "crop", "weed")
    assert sorted(data.train_ids) == tree["train"] and data.val_ids == tree["val"]
    assert set(np.unique(data.val_masks)) <= {0, 1, 2, 255} and (data.val_masks[:, -1, -1] == 255).all()
    # without split lists the pool is every image not held out; fractions are drawn per seed
    free = sf.load_semisup_folder("folders", tmp_path, crop=16)
    assert free.split_lists == {} and len(free.train_ids) == 16


def test_a_split_list_naming_a_missing_file_is_an_error(tmp_path):
    tree = trees.write_voc_tree(tmp_path)
    victim = tree["splits"]["1_4"][1]
    (tmp_path / "JPEGImages" / f"{victim}.jpg").unlink()
    with pytest.raises(DataError, match=f"missing file.*{victim}"):
        sf.load_semisup_folder("voc", tmp_path, crop=16, splits=["1_4"])


def test_a_split_list_naming_samples_outside_the_pool_is_an_error(tmp_path):
    trees.write_voc_tree(tmp_path)
    (tmp_path / "splits" / "1_4" / "labeled.txt").write_text("2012_999999\n")
    with pytest.raises(DataError, match=r"1_4/labeled\.txt names 1 sample\(s\) not in the training pool"):
        sf.load_semisup_folder("voc", tmp_path, crop=16, splits=["1_4"])


def test_a_missing_split_folder_is_an_error_listing_the_ones_found(tmp_path):
    trees.write_voc_tree(tmp_path)
    with pytest.raises(DataError, match=r"splits/1_16/labeled\.txt does not exist .*\['1_4', '92'\]"):
        sf.load_semisup_folder("voc", tmp_path, crop=16, splits=["1_16"])


def test_masks_with_ids_outside_the_class_list_are_an_error(tmp_path):
    tree = trees.write_folder_tree(tmp_path)
    bad = np.zeros((18, 18), dtype=np.uint8)
    bad[3, 3] = 7  # classes.txt names 3 classes
    Image.fromarray(bad, mode="L").save(tmp_path / "masks" / f"{tree['train'][5]}.png")
    with pytest.raises(
        DataError, match=rf"{tree['train'][5]}\.png holds ids \[7\] outside the 3 classes.*classes.txt names only 3"
    ):
        sf.load_semisup_folder("folders", tmp_path, crop=16)


def test_a_corrupt_cityscapes_mask_is_a_data_error_naming_the_file(tmp_path):
    tree = trees.write_cityscapes_tree(tmp_path)
    city, stem = tree["train"][2]
    path = tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=f"{stem}_gtFine_labelIds.png cannot be read"):
        sf.load_semisup_folder("cityscapes", tmp_path, crop=16)


def test_a_cityscapes_label_id_outside_the_table_is_an_error(tmp_path):
    tree = trees.write_cityscapes_tree(tmp_path)
    city, stem = tree["val"][0]
    Image.fromarray(np.full((16, 32), 40, dtype=np.uint8), mode="L").save(
        tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
    )
    with pytest.raises(DataError, match=r"labelIds\.png holds label ids \[40\] outside Cityscapes' 0\.\.33"):
        sf.load_semisup_folder("cityscapes", tmp_path, crop=16)


def test_class_list_problems_are_errors(tmp_path):
    trees.write_folder_tree(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"names \['a'\] more than once"):
        sf.load_semisup_folder("folders", tmp_path, crop=16)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt does not exist"):
        sf.load_semisup_folder("folders", tmp_path, crop=16)


def test_a_split_that_labels_every_image_leaves_no_unlabeled_set(tmp_path):
    tree = trees.write_folder_tree(tmp_path, n_train=6, splits=(("all6", 6),))
    (tmp_path / "splits" / "all6" / "labeled.txt").write_text("".join(f"{i}\n" for i in tree["train"]))
    cfg = labkit.configure(
        "farcluss",
        "smoke",
        {"data_source": "folders", "data_root": str(tmp_path), "splits": ["all6"], "image_size": 16},
    )
    data = study.data(cfg)
    with pytest.raises(DataError, match="the unlabeled set is empty"):
        labelled_indices(cfg, data, "all6", 0)


@pytest.mark.parametrize("source", ["voc", "cityscapes", "folders"])
def test_the_study_runs_on_each_tree_with_frequency_groups_and_sliding_windows(tmp_path, monkeypatch, source):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    writer = {
        "voc": trees.write_voc_tree,
        "cityscapes": trees.write_cityscapes_tree,
        "folders": trees.write_folder_tree,
    }[source]
    tree = writer(tmp_path / "data")
    cfg = labkit.configure(
        "farcluss",
        "smoke",
        {
            "data_source": source,
            "data_root": str(tmp_path / "data"),
            "splits": ["1_4"],
            "image_size": 16,
            "ablation": "none",
        },
    )
    data = study.data(cfg)
    assert data.tile == 16 and data.val.images.shape[-1] > 16  # held-out images are scored by sliding window
    assert set(data.groups.values()) <= {"head", "body", "tail"}
    assert data.groups[data.class_names[int(np.argmax(data.frequencies))]] == "head"
    runs = train(cfg, data, progress=False).every
    one = runs[(runs.split == "1_4") & (runs.arm == "farcluss")]
    assert one.n_labeled.tolist() == [len(tree["splits"]["1_4"])]
    assert set(runs.split) == {"1_4", study.ALL_LABELS}


def test_class_shares_groups_and_floor_come_from_the_whole_masks_not_a_centre_crop(tmp_path):
    tree = trees.write_folder_tree(tmp_path, size=(48, 48))
    for sid in tree["train"] + tree["val"]:
        mask = np.zeros((48, 48), dtype=np.uint8)  # background everywhere but a centre square of crop
        mask[16:32, 16:32] = 1
        Image.fromarray(mask, mode="L").save(tmp_path / "masks" / f"{sid}.png")
    cfg = labkit.configure(
        "farcluss",
        "smoke",
        {"data_source": "folders", "data_root": str(tmp_path), "splits": ["1_4"], "image_size": 16},
    )
    data = study.data(cfg)
    # a 16-px centre crop would be all "crop": the whole masks are 8/9 background
    assert data.frequencies[0] == pytest.approx(8 / 9) and data.frequencies[1] == pytest.approx(1 / 9)
    assert data.groups["background"] == "head" and data.floor_miou == pytest.approx(8 / 9 / 2)
