"""The paper preset on the paper's data: its slicing fits the published Digital Rocks Portal volumes (1,000 slices of
1,000 x 1,000 px, the 560-px centre crop of the paper), a volume that cannot supply it is refused before any work with
the largest sizes the data allow, and ``labkit plan`` prices it."""

from pathlib import Path

import pytest

import labkit
from labkit.core.errors import DataError
from labkit.data import microct_volumes
from labkit.studies import dinov2_microct as study
from labkit.studies.dinov2_microct.data import check_data_source
from labkit.studies.dinov2_microct.data import check_slicing as _check
from tests.dinov2_microct import trees


def _manifest(depth: int, side: int = 1000):
    entry = microct_volumes.VolumeEntry(
        "Berea", microct_volumes.VolumeFile(Path("317/Berea/Berea_2d25um_grayscale.raw")), None, "Berea", "DRP-317"
    )
    return microct_volumes.Manifest(Path("data_root"), [entry]), {"Berea": (depth, side, side)}


def test_the_paper_slicing_fits_the_published_volumes_and_crops_560_px():
    cfg = labkit.configure("dinov2_microct", "paper", {"data_root": None})
    assert cfg.slice_size == 560 and cfg.img_size == 560
    _check(*_manifest(1000), cfg)  # project 317: 11 blocks of 25 slices 2 apart, 539 of the 1,000 slices
    _check(*_manifest(601, side=976), cfg)  # project 151's Sample2 (976 x 1014 x 601 voxels), the shallowest


def test_a_volume_too_shallow_or_narrow_names_the_largest_sizes_the_data_allow():
    before = labkit.configure("dinov2_microct", "paper", {"data_root": None, "slice_step": 4})  # the old preset
    with pytest.raises(DataError) as err:
        _check(*_manifest(1000), before)
    msg = str(err.value)
    assert "Berea_2d25um_grayscale.raw" in msg and "has 1000 slices" in msg and "need 1067" in msg
    assert "samples_per_rock 10 (at slices_per_sample 25, slice_step 4)" in msg
    assert "slices_per_sample 23 (at samples_per_rock 11, slice_step 4)" in msg
    assert "slice_step 3 (at samples_per_rock 11, slices_per_sample 25)" in msg
    cfg = labkit.configure("dinov2_microct", "paper", {"data_root": None})
    with pytest.raises(DataError, match=r"smaller than slice_size 560; the data allow at most slice_size 500"):
        _check(*_manifest(1000, side=500), cfg)


def test_the_paper_preset_on_the_drp_fixture_tree_stops_before_any_work(tmp_path, monkeypatch):
    root = trees.write_drp_tree(tmp_path / "drp", side=32)
    cfg = labkit.configure("dinov2_microct", "paper", {"data_root": str(root)})
    monkeypatch.setattr(microct_volumes, "load_slices", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(DataError, match=r"has 32 slices.*allow at most slices_per_sample 1 \(at samples_per_rock 11"):
        check_data_source(cfg)


def test_plan_prices_the_paper_preset_at_the_paper_crop():
    cfg = labkit.configure("dinov2_microct", "paper", {"data_root": None})
    (grid,) = study.plan(cfg)
    rows = {t.name: t for t in grid.budgets}
    assert "560 px (slices of 560)" in rows["dinov2 ViT + LoRA linear"].input_size
    assert rows["UNet from scratch"].steps == rows["dinov2 ViT + LoRA linear"].steps * 2  # head_epochs 40, lora 20
