"""Real inspection folders as plants publish them: a defect-free folder under its own name, all-zero masks,
defects too small for img_size, and what trains."""

import warnings

import numpy as np
import pytest
import torch

import labkit
from labkit.core.errors import DataError, ParameterError
from labkit.studies import ssl_industrial as study

from .fixtures import write_mvtec_tree, write_per_class_tree


def _cfg(root, **over):
    base = dict(data_source="per_class", data_root=str(root), n_unlabeled=16, n_good=8)
    return labkit.configure("ssl_industrial", "smoke", {**base, **over})


def test_a_plants_own_defect_free_folder_name_is_read_as_defect_free_with_good_class(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = write_per_class_tree(tmp_path / "plant", good_name="Normal_parts", good_masks=True)
    with pytest.raises(DataError, match=r"0 defect-free images.*good_class") as err:
        _cfg(root)  # at configure time, from the folder names: before any pixel is read
    assert "n_unlabeled" not in str(err.value)  # the remedy is naming the folder, not fewer pretraining images
    assert "Normal_parts" in str(err.value)  # the folders it read as defect classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "probably defect-free" warning once it is named
        data = study.data(_cfg(root, good_class="Normal_parts"))
    assert (data["unlabeled"]["defect_types"] == "good").all() and data["geometry"]["unlabeled"]["source_images"] == 16
    types = set(data["pool"]["defect_types"]) | set(data["test"]["defect_types"])
    assert types == {"good", "crack", "stain"}  # the defect classes are the folder names


def test_good_class_naming_a_missing_folder_or_another_layout_is_an_error(tmp_path):
    root = write_per_class_tree(tmp_path / "plant")
    with pytest.raises(DataError, match=r"good_class: no class folder 'OK_parts'.*\['crack', 'good', 'stain'\]"):
        study.data(_cfg(root, good_class="OK_parts"))
    mvtec = write_mvtec_tree(tmp_path / "mvtec")
    with pytest.raises(ParameterError, match="good_class.*per_class"):
        study.data(_cfg(mvtec, data_source="mvtec", good_class="good"))


def test_a_defect_folder_whose_masks_are_all_empty_is_reported_as_probably_defect_free(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = write_per_class_tree(tmp_path / "plant")
    write_per_class_tree(tmp_path / "other", n_good=3, defects=(), good_name="spare", good_masks=True)
    (tmp_path / "other" / "spare").rename(root / "spare")
    with pytest.warns(
        UserWarning, match=r"defect class folder 'spare'.*all 3 of its masks are empty.*-p good_class spare"
    ):
        study.data(_cfg(root))


def test_a_median_defect_under_a_few_pixels_at_img_size_warns_naming_img_size(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = write_per_class_tree(tmp_path / "plant")  # 5 x 6 px defects in 36 x 44 images: 1.9 % of the image
    # the short side 36 -> 16 (aspect kept: 16 x 20), so the median defect covers 1.9 % of 320 pixels
    with pytest.warns(
        UserWarning, match=r"median defect covers 1.89 % .*6.1 pixel\(s\) .* at img_size=16.*-p img_size 24"
    ):
        study.data(_cfg(root, img_size=16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.data(_cfg(root, img_size=32))  # 19 pixels: no warning


def test_every_parameter_of_the_unet_receives_gradients():
    from labkit.methods.defect_segmentation import count_trainable, small_unet, train_segmenter

    torch.manual_seed(0)
    unet = small_unet(1)
    x, y = torch.randn(4, 1, 32, 32), (torch.rand(4, 32, 32) > 0.9).long()
    info = train_segmenter(unet, x, y, steps=1, batch_size=4, lr=1e-3, seed=0)
    # segmentation-models-pytorch's unused ResNet stages (10.5 M parameters at depth 3) are gone: what requires
    # gradients is what receives them
    assert info["trained_params"] == count_trainable(unet)
    assert np.isclose(info["trained_params"] / 1e6, 0.88, atol=0.05)
