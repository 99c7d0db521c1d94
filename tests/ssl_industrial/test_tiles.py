"""Real images of any aspect are never squashed: the short side is resized to img_size, the labelled pool takes
one crop per image (the one holding the defect), the other sets are tiled; masks that vanish are reported."""

import numpy as np
import pytest

import labkit
from labkit.runner import study_plan
from labkit.studies import ssl_industrial as study
from labkit.studies.ssl_industrial.data import crop_start, pretraining_inputs, tile_starts
from labkit.studies.ssl_industrial.tables import data_summary

from .fixtures import write_non_square_tree


def _over(root, **over):
    base = dict(data_source="per_class", data_root=str(root), n_unlabeled=16, n_good=4, img_size=16, patch_size=8)
    return {**base, **over}


def _cfg(root, **over):
    return labkit.configure("ssl_industrial", "smoke", _over(root, **over))


def test_tiles_cover_a_side_and_a_crop_holds_the_defect():
    assert tile_starts(16, 16) == [0] and tile_starts(38, 16) == [0, 11, 22] and tile_starts(32, 16) == [0, 16]
    mask = np.zeros((16, 40), int)
    mask[5:8, 33:37] = 1  # near the right end: a centre crop (12..28) would miss it
    y, x = crop_start(mask, 16, np.random.default_rng(0))
    assert y == 0 and mask[:, x : x + 16].sum() == mask.sum()


def test_non_square_images_are_tiled_and_cropped_not_squashed(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    root = write_non_square_tree(tmp_path / "plant")  # 30 x 72 and 60 x 24 images: aspect 2.4 and 0.4
    data = study.data(_cfg(root))
    for name in ("unlabeled", "pool", "test", "good"):
        assert data[name]["images"].shape[1:] == (1, 16, 16)
    # the labelled pool: one crop per image, and each defect image's crop holds its whole defect
    geometry = data["geometry"]
    assert len(data["pool"]["images"]) == geometry["pool"]["source_images"] == 4
    pool_bad = data["pool"]["masks"][data["pool"]["defect_types"] != "good"]
    assert len(pool_bad) == 2 and pool_bad.any(axis=(1, 2)).all() and geometry["pool_crops_cutting_defects"] == 0
    # not squashed: a square defect (6 x 6 px, short side 30 or 24 -> 16) stays about square in its crop
    for m in pool_bad:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert abs(len(rows) - len(cols)) <= 1
    # tiled: every image gives 3 tiles (long side 38 or 40 at a short side of 16), so every defect is in the test set
    assert geometry["test"]["inputs"] == 3 * geometry["test"]["source_images"]
    assert geometry["unlabeled"]["inputs"] == 3 * 16
    # labkit plan counts the same inputs from file names and image headers (no pixel read): the tiles, not n_unlabeled
    assert pretraining_inputs(_cfg(root)) == {"images": 16, "tiles": len(data["unlabeled"]["images"])}
    (pre, _, patchcore), _ = study_plan(
        "ssl_industrial", "smoke", {**_over(root), "pretrain_batch_size": 4, "inits": ["mae"]}
    )
    assert [b.data_items for b in pre.budgets] == [48] and "48 tiles of img_size 16" in pre.budgets[0].notes
    # and PatchCore's row counts the memory bank's and the test set's tiles the run feeds it, not images
    bank_and_test = len(data["good"]["images"]) + len(data["test"]["images"])
    assert bank_and_test > 4 + geometry["test"]["source_images"]
    assert [b.data_items for b in patchcore.budgets] == [bank_and_test]
    test = data["test"]
    assert (test["defect_types"] == "dent").sum() >= 2 and test["masks"][test["defect_types"] == "dent"].any(
        (1, 2)
    ).all()
    summary = data_summary(data).set_index("set")
    assert summary.loc["defect masks vanished in the resize", "images"] == 0
    assert summary.loc["pool", "source_images"] == 4


def test_masks_that_vanish_in_the_resize_are_reported_with_img_size(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    # one pixel at (1, 1): the nearest-neighbour resize to a short side of 16 samples rows and columns 0, 2, ...
    root = write_non_square_tree(tmp_path / "plant", defect_side=1, defect_at=(1, 1))
    with pytest.warns(UserWarning, match=r"4 defect mask\(s\) .* no defect pixel left after the resize to img_size=16"):
        with pytest.warns(UserWarning, match=r"median defect .* at img_size=16.*-p img_size"):
            data = study.data(_cfg(root))
    assert data_summary(data).set_index("set").loc["defect masks vanished in the resize", "images"] == 4
