"""Simulator, calibration and real-format loaders of labkit.data.landcover."""

import numpy as np
import pytest

from labkit.core.errors import DataError
from labkit.data import landcover
from labkit.data.io import write_geotiff


def test_simulator_shapes_dtypes_and_legends():
    tiles = landcover.LandscapeSimulator(48).sample(5, seed=3)
    assert tiles.images.shape == (5, 4, 48, 48) and tiles.images.dtype == np.float32
    assert tiles.fine_labels.max() < len(landcover.FINE_CLASSES)
    assert np.isfinite(tiles.images).all() and (tiles.images >= 0).all()
    for task in landcover.TASKS:
        names, _ = landcover.task_legend(task)
        labels = tiles.labels(task)
        assert labels.shape == (5, 48, 48) and labels.max() < len(names)
    # roads and buildings merge into "artificial" in lulc but stay apart in structure
    lulc, structure = tiles.labels("lulc"), tiles.labels("structure")
    road = tiles.fine_labels == landcover.FINE_CLASSES.index("road")
    assert (lulc[road] == 5).all() and (structure[road] == 3).all()


def test_simulator_is_repeatable_and_prefix_stable():
    sim = landcover.LandscapeSimulator(32)
    a, b = sim.sample(4, seed=1), sim.sample(6, seed=1)
    np.testing.assert_array_equal(a.images, b.images[:4])
    assert not np.array_equal(sim.sample(2, seed=2).images, a.images[:2])


def test_class_spectra_follow_calibration_without_haze():
    sim = landcover.LandscapeSimulator(64, haze=0.0, illumination=0.0, psf_sigma=0.0, sensor_noise=0.0)
    tiles = sim.sample(12, seed=0)
    nir = tiles.images[:, 0]
    for name in ("forest", "grassland", "water"):
        mask = tiles.fine_labels == landcover.FINE_CLASSES.index(name)
        assert mask.sum() >= 50, f"seed 0 draws too little {name} to check"
        expected = landcover.CLASS_SPECTRA_MEAN[name][landcover.S2_BANDS.index("B08")]
        assert abs(nir[mask].mean() - expected) < 0.25 * expected + 0.01, name
    # water is far darker than forest in the near infrared, as measured
    water = tiles.fine_labels == landcover.FINE_CLASSES.index("water")
    forest = tiles.fine_labels == landcover.FINE_CLASSES.index("forest")
    assert nir[water].mean() < 0.6 * nir[forest].mean()


def test_haze_brightens_blue_relatively_more_than_nir():
    clear = landcover.LandscapeSimulator(32, haze=0.0).sample(6, seed=4)
    hazy = landcover.LandscapeSimulator(32, haze=1.0).sample(6, seed=4)
    blue, nir = landcover.NIRRGB.index("B02"), landcover.NIRRGB.index("B08")
    gain = {b: hazy.images[:, i].mean() / clear.images[:, i].mean() for b, i in (("blue", blue), ("nir", nir))}
    # additive haze (measured spectrum) on a dark blue and a bright NIR surface: blue gains far more, relatively
    assert gain["blue"] > 1.2 and gain["blue"] > gain["nir"] + 0.2


def test_all_13_bands_and_bad_band_names():
    tiles = landcover.LandscapeSimulator(32, bands=landcover.S2_BANDS).sample(1, seed=0)
    assert tiles.images.shape[1] == 13
    with pytest.raises(ValueError, match="unknown Sentinel-2 bands"):
        landcover.LandscapeSimulator(32, bands=("B08", "B99"))
    with pytest.raises(DataError, match="NDVI needs band B04"):
        landcover.ndvi(tiles.images[:, :2], ("B08", "B02"))


def test_calibration_constants_match_shared_data(shared_data):
    if not (shared_data / "remote_sensing").is_dir():
        pytest.skip("remote_sensing sample absent")
    calibration = landcover.calibrate_class_spectra(shared_data)
    for name, mean in calibration["mean"].items():
        np.testing.assert_allclose(mean, landcover.CLASS_SPECTRA_MEAN[name], atol=1e-4)
        np.testing.assert_allclose(calibration["std"][name], landcover.CLASS_SPECTRA_STD[name], atol=1e-4)
    np.testing.assert_allclose(calibration["haze"], landcover.HAZE_SPECTRUM, atol=1e-4)
    assert calibration["gain_cv"] == pytest.approx(landcover.SCENE_GAIN_CV, abs=1e-4)
    np.testing.assert_allclose(calibration["correlation"], landcover.BAND_CORRELATION, atol=0.011)
    assert calibration["pixels"] == landcover.CALIBRATION_PIXELS


def test_calibration_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="REFERENCE_SCENES.npy"):
        landcover.calibrate_class_spectra(tmp_path)


def test_load_geotiff_tile_with_nodata_and_mask(tmp_path):
    image = np.random.default_rng(0).random((5, 20, 24)).astype(np.float32)
    image[:, 0, 0] = -9999
    write_geotiff(tmp_path / "tile.tif", image, nodata=-9999)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:, :] = 3
    write_geotiff(tmp_path / "mask.tif", mask)
    loaded, loaded_mask, meta = landcover.load_tile(tmp_path / "tile.tif", tmp_path / "mask.tif")
    assert loaded.shape == (5, 20, 24) and np.isnan(loaded[:, 0, 0]).all()
    np.testing.assert_array_equal(loaded_mask, mask)
    images, masks, counts = landcover.prepare_tiles(loaded[None], loaded_mask[None], 5, 6, names=["tile.tif"])
    assert counts == {"tiles": 1, "tiles_with_nodata": 1, "nodata_pixels": 1}
    assert masks[0, 0, 0] == 255 and np.isfinite(images).all()


def test_load_numpy_tiles(tmp_path):
    image = np.ones((3, 8, 8), np.float32)
    np.save(tmp_path / "a.npy", image)
    np.save(tmp_path / "a_mask.npy", np.full((8, 8), 2, np.int16))
    loaded, mask, _ = landcover.load_tile(tmp_path / "a.npy", tmp_path / "a_mask.npy")
    assert loaded.shape == (3, 8, 8) and (mask == 2).all()
    np.save(tmp_path / "b.npy", image.transpose(1, 2, 0))
    assert landcover.load_tile(tmp_path / "b.npy", channels_last=True)[0].shape == (3, 8, 8)
    np.save(tmp_path / "single.npy", np.ones((8, 6), np.uint16))  # one band, either layout
    assert landcover.load_tile(tmp_path / "single.npy", channels_last=True)[0].shape == (1, 8, 6)
    assert landcover.load_tile(tmp_path / "single.npy")[0].shape == (1, 8, 6)
    np.savez(tmp_path / "c.npz", image=image, mask=np.zeros((8, 8)))
    loaded, mask, _ = landcover.load_tile(tmp_path / "c.npz")
    assert mask.dtype == np.int64 and (mask == 0).all()


def test_load_real_sentinel2_geotiff_with_undeclared_mask_nodata(shared_data):
    """Sen1Floods11's 13-band S2 chip: its hand label marks no data by -1 without declaring it."""
    chip = shared_data / "sea_ice" / "sen1floods11_sar_water_proxy"
    if not (chip / "Spain_7370579_S2Hand.tif").exists():
        pytest.skip("Sen1Floods11 chip absent")
    image, mask, meta = landcover.load_tile(chip / "Spain_7370579_S2Hand.tif", chip / "Spain_7370579_LabelHand.tif")
    assert image.shape == (13, 512, 512) and meta["count"] == 13
    with pytest.raises(DataError, match=r"LabelHand.tif: mask has class id\(s\) \[-1\] outside the legend"):
        landcover.prepare_tiles(image[None], mask[None], 13, 2, names=[str(chip / "Spain_7370579_LabelHand.tif")])
    _, mask, _ = landcover.load_tile(
        chip / "Spain_7370579_S2Hand.tif", chip / "Spain_7370579_LabelHand.tif", mask_nodata=-1
    )
    assert (mask == 255).sum() == 99 and (mask == 1).sum() == 70035  # the label's own counts
    images, masks, counts = landcover.prepare_tiles(image[None], mask[None], 13, 2, crop=256)
    assert images.shape == (1, 13, 256, 256) and counts["tiles"] == 1


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.tif: file does not exist"):
        landcover.load_tile(tmp_path / "missing.tif")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="x.png: unsupported tile format"):
        landcover.load_tile(tmp_path / "x.png")
    np.savez(tmp_path / "d.npz", pixels=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="d.npz: .npz tile needs an 'image'"):
        landcover.load_tile(tmp_path / "d.npz")
    np.save(tmp_path / "e.npy", np.zeros((2, 4, 4), np.float32))
    np.save(tmp_path / "e_mask.npy", np.zeros((5, 5)))
    with pytest.raises(DataError, match="e_mask.npy: mask size"):
        landcover.load_tile(tmp_path / "e.npy", tmp_path / "e_mask.npy")
    np.save(tmp_path / "f_mask.npy", np.full((4, 4), 0.5))
    with pytest.raises(DataError, match="f_mask.npy: mask holds non-integer"):
        landcover.load_tile(tmp_path / "e.npy", tmp_path / "f_mask.npy")
    np.save(tmp_path / "g.npy", np.zeros((2, 2, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"g.npy: a tile must be \(C, H, W\)"):
        landcover.load_tile(tmp_path / "g.npy")
    np.save(tmp_path / "h.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match="h.npy: tile values must be numbers"):
        landcover.load_tile(tmp_path / "h.npy")
    (tmp_path / "i.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="i.npy: not a readable NumPy file"):
        landcover.load_tile(tmp_path / "i.npy")
    with pytest.raises(DataError, match="j_mask.npy: file does not exist"):
        landcover.load_tile(tmp_path / "e.npy", tmp_path / "j_mask.npy")
    np.save(tmp_path / "k_mask.npy", np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"k_mask.npy: a mask must be \(H, W\)"):
        landcover.load_tile(tmp_path / "e.npy", tmp_path / "k_mask.npy")


def test_prepare_tiles_errors_name_the_tile():
    images = np.zeros((2, 4, 16, 16), np.float32)
    masks = np.zeros((2, 16, 16), np.int64)
    with pytest.raises(DataError, match="north.tif: has 4 bands but the model takes 3"):
        landcover.prepare_tiles(images, masks, 3, 6, names=["north.tif", "south.tif"])
    bad = masks.copy()
    bad[1, 3, 3] = 9
    with pytest.raises(DataError, match=r"south.tif: mask has class id\(s\) \[9\] outside the legend"):
        landcover.prepare_tiles(images, bad, 4, 6, names=["north.tif", "south.tif"])
    with pytest.raises(DataError, match="tile 0: tile 16x16 is smaller than the crop 32"):
        landcover.prepare_tiles(images, masks, 4, 6, crop=32)
    negative = masks.copy()
    negative[0, 0, 0] = -1
    with pytest.raises(DataError, match=r"north.tif: mask has class id\(s\) \[-1\]"):
        landcover.prepare_tiles(images, negative, 4, 6, names=["north.tif", "south.tif"])
    with pytest.raises(DataError, match=r"south.tif: mask size \(8, 8\) differs from tile size \(16, 16\)"):
        landcover.prepare_tiles(images, [masks[0], masks[1, :8, :8]], 4, 6, names=["north.tif", "south.tif"])
    out, _, _ = landcover.prepare_tiles(images, masks, 4, 6, crop=8)
    assert out.shape == (2, 4, 8, 8)


def test_eolearn_patch(shared_data):
    root = shared_data / "remote_sensing" / "eolearn_testeopatch_slovenia"
    if not root.is_dir():
        pytest.skip("eo-learn patch absent")
    image, mask, meta = landcover.load_eolearn_patch(root)
    assert image.shape == (4, 101, 100) and mask.shape == (101, 100)
    assert (mask == 255).sum() == 155  # the MANIFEST's no-data count
    assert (mask == 3).sum() == 7601  # forest
    with pytest.raises(DataError, match="scene 9 out of range"):
        landcover.load_eolearn_patch(root, scene=9)
