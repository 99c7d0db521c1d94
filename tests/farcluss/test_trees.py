"""Whole benchmark trees with split lists (VOC train_aug, Cityscapes, your own folders) and their bad inputs."""

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
    assert data.train_images.shape == (24, 3, 16, 16) and data.class_names == sf.VOC_CLASSES
    assert data.split_lists == tree["splits"]
    labelled = list(dict.fromkeys(tree["splits"]["1_4"] + tree["splits"]["92"]))
    assert data.train_ids[: len(labelled)] == labelled and sorted(data.train_ids) == sorted(tree["train"])
    # held-out images keep their size (padded to the largest; the padding is ignored)
    assert data.val_images.shape == (4, 3, 20, 26) and data.val_ids == tree["val"]
    assert (data.val_masks[0, 18:] == 255).all() and (data.val_masks[1, :, 24:] == 255).all()  # 18x26 and 20x24
    assert (data.val_masks[:, 0] == 255).all()  # the object borders the masks mark
    # the pool is cut to n_train with every labelled sample kept
    cut = sf.load_semisup_folder("voc", tmp_path, crop=16, n_train=4, splits=["1_4"])
    assert cut.train_ids == tree["splits"]["1_4"]


def test_cityscapes_tree_maps_label_ids_and_reads_unimatch_lists(tmp_path):
    tree = trees.write_cityscapes_tree(tmp_path)
    data = sf.load_semisup_folder("cityscapes", tmp_path, crop=16, splits=["1_4"])
    assert data.split_lists["1_4"] == tree["splits"]["1_4"]
    assert data.train_images.shape == (16, 3, 16, 16) and data.val_images.shape == (3, 3, 16, 32)
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
    with pytest.raises(DataError, match=rf"{tree['train'][5]}\.png holds ids \[7\] outside the 3 classes"):
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
