"""The ``geotiff`` data source on small trees in the exact layout (images/, labels_noisy/, labels_clean/, a
legend), written with rasterio: what is read, no-data handling, and every bad input named by its tile."""

import shutil

import numpy as np
import pytest
from rasterio.transform import from_origin

from labkit.core.errors import DataError
from labkit.data.geotiff_tree import load_geotiff_tree
from labkit.data.io import read_geotiff, write_geotiff
from labkit.studies import noisy_label_pretraining as study
from tests.noisy_label_pretraining.test_study import config
from tests.noisy_label_pretraining.trees import BANDS, write_tree

GEOTIFF = {
    "data_source": "geotiff",
    "tile": 32,
    "n_pretrain_tiles": 4,
    "n_val_tiles": 1,
    "n_test_tiles": 2,
    "k_values": [2, 4],
    "task_b_k": 2,
    "noise_models": ["boundary", "flips"],
    "noise_levels": [0.3, 1.0],
}


def geotiff(**values):
    """The tiny study on a GeoTIFF tree: TINY, GEOTIFF and ``values``."""
    return config(**{**GEOTIFF, **values})


@pytest.mark.parametrize("legend", ["json", "csv"])
def test_a_tree_in_the_published_layout_reads_back_with_its_legend_bands_and_nodata(tmp_path, legend):
    written = write_tree(tmp_path / "tree", legend=legend, nodata_step=16, ignored_label_pixels=7)
    tree = load_geotiff_tree(tmp_path / "tree", tile=32)
    assert tree["names"] == written["names"] and tree["bands"] == list(BANDS)  # band names from the descriptions
    assert tree["classes"] == list(written["classes"]) and tree["legend_values"] == [10, 20, 30, 40, 50, 80]
    for i in range(len(written["names"])):
        # label values 10..80 of the legend come back as class ids 0..5; the label no-data value as 255
        np.testing.assert_array_equal(tree["clean"][i], written["clean"][i])
        np.testing.assert_array_equal(tree["noisy"][i], written["noisy"][i])
        nan = np.isnan(written["images"][i])
        np.testing.assert_array_equal(np.isnan(tree["images"][i]), nan)  # -9999 (declared no-data) read as NaN
        np.testing.assert_allclose(tree["images"][i][~nan], written["images"][i][~nan])
    assert (tree["clean"][1] == 255).sum() == 7
    assert tree["nodata_pixels"] == 6 * 4 * 4  # 4 x 4 no-data pixels per 64 px tile


def test_make_data_masks_nodata_out_of_every_loss_and_counts_image_and_label_nodata(tmp_path):
    # one image no-data pixel at the corner of every 32 px chip; 7 clean-label no-data pixels in the second tile
    write_tree(tmp_path / "tree", nodata_step=32, ignored_label_pixels=7)
    # 6 tiles of 4 chips: 4 test, 4 validation, 4 fine-tuning chips; every other chip pretrains (all are used)
    data = study.make_data(geotiff(data_root=str(tmp_path / "tree"), n_pretrain_tiles=12))
    assert data.source == "geotiff" and data.bands == list(BANDS) and data.classes_b is None
    arrays = np.load(data.files[0]["path"])
    chips = 0
    for split in ("pretrain", "finetune", "val", "test"):
        x, a = arrays[f"x_{split}"], arrays[f"a_{split}"]
        assert x.shape[1:] == (6, 32, 32) and np.isfinite(x).all(), split
        assert (a[:, 0, 0] == 255).all() and (x[:, :, 0, 0] == 0).all(), split  # ignored (255), filled
        chips += len(x)
    assert chips == 24
    assert (arrays["a_pretrain_real"][:, 0, 0] == 255).all()  # the real noisy labels too
    summary = data.summary[0]
    assert summary["nodata_image_pixels"] == chips  # counted: one per chip of every split
    assert summary["nodata_label_pixels"] == 7  # the label files' own no-data, counted apart
    assert summary["nodata_noisy_label_pixels"] == 0
    assert summary["tiles"] == {"pretrain": 12, "finetune": 4, "val": 4, "test": 4}
    assert 0.05 < summary["pixel_noise_rate"]["real"] < 0.9
    table = study.tables.data_table(data)
    assert {"nodata_image_pixels", "nodata_label_pixels", "nodata_noisy_label_pixels"} <= set(table.columns)
    assert table.nodata_label_pixels.iloc[0] == 7


def _no_arrays_written(monkeypatch):
    """Fail if any prepared file is written: the checks must come before any work."""
    import importlib

    data_module = importlib.import_module("labkit.studies.noisy_label_pretraining.data")

    def refuse(*args, **kwargs):
        raise AssertionError("a prepared file was written before the split was checked")

    monkeypatch.setattr(data_module, "_save_arrays", refuse)


def test_more_pretraining_chips_than_the_data_allow_is_an_error_naming_the_largest_value(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "tree")["root"]  # 24 chips: 4 test, 4 validation, 16 locations left
    _no_arrays_written(monkeypatch)
    # 16 locations less the 4 fine-tuning chips leave 12: 13 is never silently cut to 12
    with pytest.raises(DataError, match=r"n_pretrain_tiles=13: the data allow at most 12 pretraining chips"):
        study.run(geotiff(data_root=str(root), n_pretrain_tiles=13, seeds=[0, 1, 2]), progress=False)
    # a fine-tuning k that leaves the pretraining pool too small names both parameters
    with pytest.raises(DataError, match=r"n_pretrain_tiles=4: the data allow at most 3 .*k_values / task_b_k"):
        study.run(geotiff(data_root=str(root), k_values=[2, 13]), progress=False)
    with pytest.raises(
        DataError, match=r"the largest fine-tuning k \(17, of k_values / task_b_k / sweep_k\) is larger"
    ):
        study.run(geotiff(data_root=str(root), k_values=[2, 17]), progress=False)
    # sweep_k reads the same pool: never fewer tiles than it asks for
    with pytest.raises(DataError, match=r"the largest fine-tuning k \(18, of k_values / task_b_k / sweep_k\)"):
        study.run(geotiff(data_root=str(root), sweep_k=18), progress=False)


def test_real_tiles_split_honestly_chips_disjoint_and_places_never_in_two_splits(tmp_path):
    # 8 tiles of 4 chips on 6 places: tiles 0-1 and 2-3 are two dates of one place each (same bounds)
    places = [0, 0, 1, 1, 2, 3, 4, 5]
    written = write_tree(tmp_path / "tree", n_tiles=8, places=places)
    place_of = dict(zip(written["names"], places))
    data = study.make_data(geotiff(data_root=str(written["root"]), n_pretrain_tiles=8, seeds=[0, 1, 2, 3, 4]))
    for seed, summary in data.summary.items():
        chips = summary["chips"]
        assert {k: len(v) for k, v in chips.items()} == summary["tiles"]
        assert summary["tiles"]["finetune"] == 4 and summary["tiles"]["pretrain"] == 8
        location = lambda c: (place_of[c.split("@")[0]], c.split("@")[1])  # noqa: E731
        place = lambda c: place_of[c.split("@")[0]]  # noqa: E731
        splits = list(chips)
        for i, a in enumerate(splits):
            for b in splits[i + 1 :]:
                assert not set(chips[a]) & set(chips[b]), (seed, a, b)  # no chip in two splits
                # no location (a place's window, any date) in two splits
                assert not {location(c) for c in chips[a]} & {location(c) for c in chips[b]}, (seed, a, b)
        for held_out in ("val", "test"):  # held-out places are whole: in no other split at all
            others = {place(c) for s in splits if s != held_out for c in chips[s]}
            assert not {place(c) for c in chips[held_out]} & others, (seed, held_out)
        # the k fine-tuning chips are k distinct locations (one date each)
        assert len({location(c) for c in chips["finetune"]}) == 4
        assert sorted(map(sorted, summary["same_place_tiles"])) == [
            ["s2_00.tif", "s2_01.tif"],
            ["s2_02.tif", "s2_03.tif"],
        ]
    assert (study.tables.data_table(data).tiles_sharing_bounds == 4).all()  # said in the report's data table
    # the fine-tuning arrays are those chips, not pretraining ones
    arrays = np.load(data.files[0]["path"])
    pre = {arrays["x_pretrain"][i].tobytes() for i in range(len(arrays["x_pretrain"]))}
    assert not any(arrays["x_finetune"][i].tobytes() in pre for i in range(len(arrays["x_finetune"])))


def _rewrite(path, array, **kw):
    _, meta = read_geotiff(path)
    kw.setdefault("transform", from_origin(*_origin(meta), 10.0, 10.0))
    kw.setdefault("crs", meta["crs"])
    path.unlink()
    write_geotiff(path, array, nodata=meta["nodata"], **kw)


def _origin(meta):
    t = meta["transform"]
    return t[2], t[5]


def _other_bands(root):
    image, _ = read_geotiff(root / "images" / "s2_03.tif", masked_nodata=False)
    _rewrite(root / "images" / "s2_03.tif", image[:5])


def _value_outside_legend(root):
    mask, _ = read_geotiff(root / "labels_clean" / "s2_02.tif", masked_nodata=False)
    mask[0, 3, 4] = 99
    _rewrite(root / "labels_clean" / "s2_02.tif", mask.astype(np.int16))


def _shape(root):
    mask, _ = read_geotiff(root / "labels_noisy" / "s2_01.tif", masked_nodata=False)
    _rewrite(root / "labels_noisy" / "s2_01.tif", mask[:, :, :60].astype(np.int16))


def _transform(root):
    mask, meta = read_geotiff(root / "labels_noisy" / "s2_01.tif", masked_nodata=False)
    x, y = _origin(meta)
    _rewrite(root / "labels_noisy" / "s2_01.tif", mask.astype(np.int16), transform=from_origin(x + 10, y, 10.0, 10.0))


def _crs(root):
    mask, _ = read_geotiff(root / "labels_clean" / "s2_04.tif", masked_nodata=False)
    _rewrite(root / "labels_clean" / "s2_04.tif", mask.astype(np.int16), crs="EPSG:32632")


@pytest.mark.parametrize(
    "damage, message",
    [
        (_other_bands, r"images/s2_03.tif: has 5 bands but s2_00.tif has 6"),
        (_value_outside_legend, r"labels_clean/s2_02.tif: label value\(s\) \[99\] are not in the legend \(10=cultiv"),
        (lambda r: (r / "labels_noisy" / "s2_04.tif").unlink(), r"images/s2_04.tif: no noisy mask .*labels_noisy"),
        (lambda r: (r / "labels_clean" / "s2_00.tif").unlink(), r"images/s2_00.tif: no clean mask"),
        (_shape, r"labels_noisy/s2_01.tif: on another grid than its image s2_01.tif \(shape differ"),
        (_transform, r"labels_noisy/s2_01.tif: on another grid than its image s2_01.tif \(transform differ"),
        (_crs, r"labels_clean/s2_04.tif: on another grid than its image s2_04.tif \(CRS differ"),
        (lambda r: (r / "legend.json").unlink(), r"no legend file \(legend.json or legend.csv\)"),
        (lambda r: (r / "legend.json").write_text('{"ten": "water"}'), r"legend.json: not a legend mapping"),
        (lambda r: shutil.rmtree(r / "labels_noisy"), r"missing folder labels_noisy/"),
    ],
)
def test_bad_trees_are_refused_before_any_work_naming_the_tile(tmp_path, damage, message):
    root = write_tree(tmp_path / "tree")["root"]
    damage(root)
    with pytest.raises(DataError, match=message):
        load_geotiff_tree(root, tile=32)
    with pytest.raises(DataError, match=message):  # the run stops in make_data, before any training
        study.run(geotiff(data_root=str(root)), progress=False)


def test_tiles_smaller_than_the_crop_are_named(tmp_path):
    root = write_tree(tmp_path / "tree", size=48)["root"]
    with pytest.raises(DataError, match=r"images/s2_00.tif: tile 48x48 is smaller than the crop tile=64"):
        load_geotiff_tree(root, tile=64)
    with pytest.raises(DataError, match=r"s2_00.tif: tile 48x48 is smaller than the crop tile=64"):
        study.make_data(geotiff(data_root=str(root), tile=64, encoder_depth=3))


def test_too_few_tiles_for_the_splits_says_what_to_lower(tmp_path):
    root = write_tree(tmp_path / "tree", n_tiles=2)["root"]
    with pytest.raises(DataError, match=r"no place \(tiles of one bounds\) is left for pretraining and fine-tuning"):
        study.make_data(geotiff(data_root=str(root)))


def test_the_model_takes_the_trees_band_count_and_refuses_another(tmp_path):
    root = write_tree(tmp_path / "tree")["root"]
    data = study.make_data(geotiff(data_root=str(root)))
    model = study.build_model(len(data.classes_a), "resnet10t", in_channels=len(data.bands), decoder_width=8, seed=0)
    assert study.model_in_channels(model) == 6
    with pytest.raises(DataError, match="s2 tiles: have 4 bands but the model takes 6"):
        study.check_bands(model, np.zeros((1, 4, 32, 32), np.float32), "s2 tiles")


def test_noldo_s12_reads_the_same_layout_once_placed(tmp_path):
    root = write_tree(tmp_path / "noldo")["root"]
    data = study.make_data(geotiff(data_source="noldo_s12", data_root=str(root)))
    assert data.source == "noldo_s12" and data.bands == list(BANDS) and len(data.classes_a) == 6
