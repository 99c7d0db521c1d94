"""Configure-time checks (the spec's ``config_checks``): every entry point refuses contradicting parameters and a
real folder too small for them before any work, from file names alone (no pixel read)."""

import pytest

import labkit
from labkit.core.errors import DataError, ParameterError
from labkit.runner import study_plan

from .fixtures import write_mvtec_tree, write_per_class_tree


def test_a_pretraining_batch_larger_than_the_unlabeled_set_is_refused_at_configure_time_naming_both():
    with pytest.raises(ParameterError, match=r"pretrain_batch_size = 385 is larger than n_unlabeled = 384"):
        labkit.configure("ssl_industrial", "default", {"pretrain_batch_size": 385})
    assert labkit.configure("ssl_industrial", "default", {"pretrain_batch_size": 384}).pretrain_batch_size == 384
    with pytest.raises(ParameterError, match=r"pretrain_batch_size = 40 is larger than n_unlabeled = 32"):
        study_plan("ssl_industrial", "smoke", {"pretrain_batch_size": 40})  # labkit plan: the same check


def test_a_real_folder_is_counted_by_name_at_configure_time_without_reading_a_pixel(tmp_path, monkeypatch):
    import labkit.data.io as io

    def no_pixels(path):
        raise AssertionError(f"configure read {path}")

    monkeypatch.setattr(io, "read_image", no_pixels)
    mvtec = write_mvtec_tree(tmp_path / "mvtec", n_train_good=24)  # 28 defect-free, 8 defect: 20 left
    base = dict(data_source="mvtec", data_root=str(mvtec), pretrain_batch_size=8)
    assert labkit.configure("ssl_industrial", "smoke", {**base, "n_unlabeled": 20}).n_unlabeled == 20
    with pytest.raises(DataError, match=r"28 defect-free images, of which 20 .* n_unlabeled=21"):
        labkit.configure("ssl_industrial", "smoke", {**base, "n_unlabeled": 21})
    plant = write_per_class_tree(tmp_path / "plant", good_name="Normal_parts")
    over = dict(data_source="per_class", data_root=str(plant), n_unlabeled=16, pretrain_batch_size=8)
    with pytest.raises(DataError, match=r"0 defect-free images.*\['Normal_parts', 'crack', 'stain'\].*good_class"):
        labkit.configure("ssl_industrial", "smoke", over)
    with pytest.raises(DataError, match=r"good_class: no class folder 'OK'"):
        labkit.configure("ssl_industrial", "smoke", {**over, "good_class": "OK"})
    assert labkit.configure("ssl_industrial", "smoke", {**over, "good_class": "Normal_parts"}).good_class


def test_a_real_source_without_its_folder_still_plans():
    # labkit plan needs no data: the paper preset (MVTec, data_root unset) configures; its data step names the layout
    assert labkit.configure("ssl_industrial", "paper").data_root is None
