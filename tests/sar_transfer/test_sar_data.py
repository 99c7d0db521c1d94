"""The SAR sea-ice simulator, unit conversions, checks and real-format readers."""

import numpy as np
import pytest

from labkit.core.errors import DataError
from labkit.data import sar
from labkit.data.sar import FYI, IGNORE_INDEX, MYI, WATER


@pytest.fixture(scope="module")
def jan():
    return sar.simulate_scene(1, size=128, seed=3, no_data_corner=True)


@pytest.fixture(scope="module")
def jul():
    return sar.simulate_scene(7, size=128, seed=3)


def test_scene_shapes_legend_and_masks(jan):
    assert jan.sar.shape == (2, 128, 128) and jan.sar.dtype == np.float32
    assert jan.labels.dtype == np.int64
    assert set(np.unique(jan.labels)) <= {0, 1, 2, 3, IGNORE_INDEX}
    assert (jan.labels[jan.land] == IGNORE_INDEX).all() and jan.land.any()
    nodata = ~np.isfinite(jan.sar).all(0)
    assert nodata.any(), "the no-data corner is missing"
    assert (jan.labels[nodata] == IGNORE_INDEX).all()
    assert np.isfinite(jan.sar[:, jan.valid]).all()
    assert jan.season == "freeze"
    # the incidence angle runs across the swath from near to far range
    assert jan.incidence[0, 0] == pytest.approx(18.9, abs=0.01) and jan.incidence[0, -1] == pytest.approx(
        47.0, abs=0.01
    )


def test_simulation_is_repeatable_and_seeded():
    a = sar.simulate_scene(4, size=64, seed=1)
    b = sar.simulate_scene(4, size=64, seed=1)
    c = sar.simulate_scene(4, size=64, seed=2)
    np.testing.assert_array_equal(a.sar, b.sar)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_season_physics():
    assert sar.melt_fraction(1) < 0.01 and sar.melt_fraction(7) > 0.9
    assert sar.ice_edge(3) > sar.ice_edge(9)
    jan = sar.simulate_scene(1, size=160, seed=5, wind_speed=6.0)
    jul = sar.simulate_scene(7, size=160, seed=5, wind_speed=6.0)

    def median(scene, cls, band=0):
        return float(np.nanmedian(scene.sar[band][(scene.surface == cls) & scene.valid]))

    # wet snow collapses the multi-year / first-year contrast in HH and HV
    for band in (0, 1):
        freeze_contrast = median(jan, MYI, band) - median(jan, FYI, band)
        melt_contrast = median(jul, MYI, band) - median(jul, FYI, band)
        assert freeze_contrast > 3.0 and melt_contrast < freeze_contrast - 2.0
    # at the same wind, open water is brighter in the melt season (no grease-ice damping)
    assert median(jul, WATER) > median(jan, WATER) + 2.0
    # no new ice forms in the melt season
    assert not (jul.labels == sar.YOUNG).any()


def test_incidence_angle_slope_of_first_year_ice():
    scene = sar.simulate_scene(2, size=192, seed=0, looks=50.0)
    sel = (scene.surface == FYI) & scene.valid
    slope = np.polyfit(scene.incidence[sel], scene.sar[0][sel], 1)[0]
    assert -0.4 < slope < -0.08


def test_hv_noise_floor_and_subswath_banding():
    scene = sar.simulate_scene(1, size=200, seed=2, wind_speed=2.0)
    water = (scene.surface == WATER) & scene.valid
    median_hv = float(np.median(scene.sar[1][water]))
    # calm water in HV sits at the noise floor, as the real chip's cross-pol water does
    assert abs(median_hv - sar.REAL_CHIP_STATS["VH_water_median_db"]) < 2.0
    # the residual noise differs between the five sub-swaths (banding)
    columns = np.array_split(np.arange(200), sar.EW_SUBSWATHS)
    means = [np.nanmedian(np.where(water, scene.sar[1], np.nan)[:, c]) for c in columns]
    means = [m for m in means if np.isfinite(m)]
    assert np.ptp(means) > 0.5


def _uniform_first_year_ice(shape=(96, 240)):
    return np.full(shape, FYI), np.zeros(shape, np.int32)


def test_azimuth_scalloping_is_periodic_along_azimuth_per_subswath():
    surface, polygon = _uniform_first_year_ice()
    with_scallop, _ = sar.simulate_backscatter(surface, polygon, 1, np.random.default_rng(4), scalloping_db=0.4)
    without, _ = sar.simulate_backscatter(surface, polygon, 1, np.random.default_rng(4), scalloping_db=0.0)
    ripple = (with_scallop - without).astype(np.float64)  # the same draws otherwise: the ripple alone
    np.testing.assert_allclose(ripple[0], ripple[1], atol=1e-3)  # an antenna pattern: both polarisations
    ripple = ripple[0]
    assert np.abs(ripple).max() == pytest.approx(0.4, abs=0.02)
    bands = np.array_split(np.arange(surface.shape[1]), sar.EW_SUBSWATHS)
    profiles = [ripple[:, cols].mean(1) for cols in bands]
    for cols, prof in zip(bands, profiles):
        np.testing.assert_allclose(
            ripple[:, cols], np.repeat(prof[:, None], len(cols), 1), atol=1e-3
        )  # constant along range
        spectrum = np.abs(np.fft.rfft(prof))
        assert np.argmax(spectrum[1:]) + 1 == 6  # six scalloping periods over the 96 azimuth lines
    assert max(np.abs(profiles[0] - p).max() for p in profiles[1:]) > 0.1  # phase differs between sub-swaths


def test_speckle_follows_the_number_of_looks():
    surface, polygon = _uniform_first_year_ice()
    enl = {}
    for looks in (1.0, 16.0):
        db, _ = sar.simulate_backscatter(surface, polygon, 1, np.random.default_rng(0), looks=looks, scalloping_db=0.0)
        enl[looks] = sar.enl_from_db_std(sar.local_db_std(db[0], np.ones(surface.shape, bool)))
    # single-look speckle: texture lowers the apparent ENL, the additive noise floor (-25 dB in HH too, 9 dB
    # under first-year ice) raises it a little
    assert enl[1.0] < 1.7
    assert enl[16.0] > 6.0 and enl[16.0] > 5 * enl[1.0]


def test_speckle_looks_recovered_from_db_statistics():
    rng = np.random.default_rng(0)
    for looks in (1.0, 3.0, 10.0):
        db = 10 * np.log10(rng.gamma(looks, 1 / looks, 200_000))
        assert sar.enl_from_db_std(db.std()) == pytest.approx(looks, rel=0.08)


def test_db_linear_round_trip_and_invalid_values():
    db = np.array([-25.0, -10.0, 0.0, 5.0], np.float32)
    np.testing.assert_allclose(sar.to_db(sar.to_linear(db)), db, atol=1e-4)
    out = sar.to_db(np.array([0.0, -1.0, np.nan, 0.01]))
    assert np.isnan(out[:3]).all() and out[3] == pytest.approx(-20.0)


def test_db_range_check_names_the_band(jan):
    mixed = jan.sar.copy()
    mixed[1] = sar.to_linear(mixed[1])  # HV left in linear units
    with pytest.raises(DataError, match="band HV .*linear"):
        sar.check_db_range(mixed, ("HH", "HV"), "mixed.nc")
    with pytest.raises(DataError, match="band HH .*normalised"):
        sar.check_db_range(np.clip(jan.sar / 40.0, -1, 1), ("HH", "HV"), "norm.nc")
    with pytest.raises(DataError, match="band HH .*physical range"):
        sar.check_db_range(jan.sar + 80.0, ("HH", "HV"), "bad.nc")
    with pytest.raises(DataError, match="no valid"):
        sar.check_db_range(np.full((2, 4, 4), np.nan), ("HH", "HV"), "empty.nc")
    sar.check_db_range(jan.sar, ("HH", "HV"), "fine")  # real dB passes


def test_validate_scene_rejects_bad_charts_and_missing_polarisation(jan):
    bad = sar.SarScene(
        sar=jan.sar.copy(), labels=jan.labels.copy(), land=jan.land, incidence=jan.incidence, name="chart_with_code_7"
    )
    bad.labels[5, 5] = 7
    with pytest.raises(DataError, match="chart_with_code_7.*7.*outside the legend"):
        sar.validate_scene(bad)
    one_band = sar.SarScene(
        sar=jan.sar[:1].copy(),
        labels=jan.labels,
        land=jan.land,
        incidence=jan.incidence,
        name="hh_only",
        band_names=("HH",),
    )
    with pytest.raises(DataError, match="hh_only.*polarisation is missing"):
        sar.validate_scene(one_band)
    holes = sar.SarScene(
        sar=jan.sar.copy(), labels=jan.labels.copy(), land=jan.land, incidence=jan.incidence, name="holes"
    )
    holes.sar[1, 40:50, 60:70] = np.nan
    out = sar.validate_scene(holes)
    assert (out.labels[40:50, 60:70] == IGNORE_INDEX).all()


def test_band_normalizer_masks_nan_and_land(jan, jul):
    norm = sar.BandNormalizer().fit([jan, jul])
    valid = np.concatenate([sar.network_input(s)[:, s.valid] for s in (jan, jul)], axis=1)
    np.testing.assert_allclose(norm.mean_, valid.mean(1), rtol=1e-5)
    assert len(norm.mean_) == 3  # co-pol, cross-pol, incidence angle: the authors' three inputs
    out = norm.transform_scene(jan)
    assert out.shape == (3, *jan.shape) and np.isfinite(out).all() and out.dtype == np.float32
    assert abs(out[:, jan.valid].mean()) < 0.5
    with pytest.raises(RuntimeError, match="not fitted"):
        sar.BandNormalizer().transform_scene(jan)
    with pytest.raises(ValueError, match="2 channels given, fitted on 3"):
        norm.transform(jan.sar)


def test_authors_standardisation_is_their_published_statistics(jan):
    s = sar.AUTHORS_STANDARDISATION
    norm = sar.BandNormalizer.fixed(s["mean"], s["std"], "authors")
    x = norm.transform_scene(jan)
    v = jan.valid
    np.testing.assert_allclose(x[0][v], (jan.sar[0][v] - s["mean"][0]) / s["std"][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x[2][v], (jan.incidence[v] - s["mean"][2]) / s["std"][2], rtol=1e-4, atol=1e-4)


def test_tiles_and_scenes_smaller_than_the_tile(jan, jul):
    norm = sar.BandNormalizer().fit([jan, jul])
    x, y = sar.sample_tiles([jan, jul], norm, 32, 6, np.random.default_rng(0), rows=(0, 0.75))
    assert x.shape == (6, 3, 32, 32) and y.shape == (6, 32, 32) and np.isfinite(x).all()
    vx, vy = sar.grid_tiles([jan], norm, 32, rows=(0.75, 1.0))
    assert vx.shape[1:] == (3, 32, 32) and len(vx) == len(vy) >= 1
    small = sar.simulate_scene(3, size=40, seed=0, name="tiny_scene")
    with pytest.raises(DataError, match="tiny_scene.*smaller than the tile 64"):
        sar.sample_tiles([small], norm, 64, 2, np.random.default_rng(0))


# ---- AI4Arctic-style netCDF ------------------------------------------------------------------------


def test_netcdf_round_trip(tmp_path, jan):
    path = sar.write_ai4arctic_netcdf(tmp_path / "20180115T080000_dmi_prep.nc", jan)
    scene = sar.read_ai4arctic_netcdf(path)
    valid = jan.valid
    np.testing.assert_allclose(scene.sar[:, valid], jan.sar[:, valid], atol=1e-5)
    np.testing.assert_array_equal(scene.land, jan.land)
    np.testing.assert_array_equal(scene.labels, jan.labels)
    assert scene.month == 1 and scene.meta["SIC"] is not None
    assert np.isnan(scene.sar[:, ~np.isfinite(jan.sar).all(0)]).all()


def test_netcdf_linear_units_are_converted(tmp_path, jul):
    path = sar.write_ai4arctic_netcdf(tmp_path / "linear.nc", jul, units="linear")
    scene = sar.read_ai4arctic_netcdf(path)
    np.testing.assert_allclose(scene.sar[:, jul.valid], jul.sar[:, jul.valid], atol=1e-3)


def test_netcdf_sar_fill_value_is_masked_not_propagated(tmp_path, jul):
    import xarray as xr

    path = sar.write_ai4arctic_netcdf(tmp_path / "full.nc", jul)
    ds = xr.load_dataset(path, mask_and_scale=False)
    hh = ds["nersc_sar_primary"].values.copy()
    hh[10:20, 30:40] = -9999.0  # the file's fill value, declared in _FillValue
    ds["nersc_sar_primary"] = (
        ds["nersc_sar_primary"].dims,
        hh,
        {**ds["nersc_sar_primary"].attrs, "_FillValue": np.float32(-9999.0)},
    )
    ds.to_netcdf(tmp_path / "filled.nc", encoding={"nersc_sar_primary": {"_FillValue": None}})
    scene = sar.read_ai4arctic_netcdf(tmp_path / "filled.nc")
    assert np.isnan(scene.sar[0, 10:20, 30:40]).all() and np.isfinite(scene.sar[1, 10:20, 30:40]).all()
    assert (scene.labels[10:20, 30:40] == IGNORE_INDEX).all()
    assert not scene.valid[10:20, 30:40].any()
    assert np.isfinite(sar.BandNormalizer().fit([scene]).transform_scene(scene)).all()


def test_netcdf_bad_inputs_name_file_and_problem(tmp_path, jul):
    import xarray as xr

    path = sar.write_ai4arctic_netcdf(tmp_path / "full.nc", jul)
    ds = xr.load_dataset(path, mask_and_scale=False)
    ds.drop_vars("nersc_sar_secondary").to_netcdf(tmp_path / "no_hv.nc")
    with pytest.raises(DataError, match="no_hv.nc.*polarisation HV is missing"):
        sar.read_ai4arctic_netcdf(tmp_path / "no_hv.nc")
    bad = ds.copy()
    sod = bad["SOD"].values.copy()
    sod[0, :3] = 9
    bad["SOD"] = (bad["SOD"].dims, sod, bad["SOD"].attrs)
    bad.to_netcdf(tmp_path / "bad_sod.nc")
    with pytest.raises(DataError, match="bad_sod.nc.*code\\(s\\) \\[9\\] outside the legend"):
        sar.read_ai4arctic_netcdf(tmp_path / "bad_sod.nc")
    lin = ds.copy()
    lin["nersc_sar_secondary"] = (
        lin["nersc_sar_secondary"].dims,
        sar.to_linear(lin["nersc_sar_secondary"].values),
        lin["nersc_sar_secondary"].attrs,
    )  # says dB, holds linear values
    lin.to_netcdf(tmp_path / "mislabelled.nc")
    with pytest.raises(DataError, match="mislabelled.nc: band HV looks linear"):
        sar.read_ai4arctic_netcdf(tmp_path / "mislabelled.nc")
    with pytest.raises(DataError, match="does not exist"):
        sar.read_ai4arctic_netcdf(tmp_path / "absent.nc")


# ---- GeoTIFF ---------------------------------------------------------------------------------------


def test_geotiff_scene_reader(tmp_path, jul):
    from labkit.data.io import write_geotiff

    sar_path = write_geotiff(tmp_path / "s1.tif", jul.sar[::-1].copy(), band_names=["HV", "HH"])  # order swapped
    labels = np.where(jul.labels == IGNORE_INDEX, -1, jul.labels).astype(np.int16)
    label_path = write_geotiff(tmp_path / "labels.tif", labels)
    scene = sar.read_geotiff_scene(sar_path, label_path, label_nodata=(-1,))
    assert scene.band_names == ("HH", "HV")
    np.testing.assert_allclose(scene.sar[:, jul.valid], jul.sar[:, jul.valid])  # reordered to co-pol first
    np.testing.assert_array_equal(scene.labels[jul.valid], jul.labels[jul.valid])

    write_geotiff(tmp_path / "hh_only.tif", jul.sar[:1].copy(), band_names=["HH"])
    with pytest.raises(DataError, match="hh_only.tif.*polarisation is missing"):
        sar.read_geotiff_scene(tmp_path / "hh_only.tif")
    write_geotiff(tmp_path / "hh_vv.tif", jul.sar.copy(), band_names=["HH", "VV"])
    with pytest.raises(DataError, match="hh_vv.tif.*polarisation is missing"):
        sar.read_geotiff_scene(tmp_path / "hh_vv.tif")
    labels[0, 0] = 12
    write_geotiff(tmp_path / "bad_labels.tif", labels)
    with pytest.raises(DataError, match="bad_labels.tif.*\\[12\\] outside the legend"):
        sar.read_geotiff_scene(sar_path, tmp_path / "bad_labels.tif", label_nodata=(-1,))


def test_geotiff_units_no_data_and_linear_mixups(tmp_path, jul):
    from labkit.data.io import write_geotiff

    linear = np.nan_to_num(sar.to_linear(jul.sar), nan=-9999.0)
    linear[:, :6, :6] = -9999.0
    write_geotiff(tmp_path / "linear.tif", linear, nodata=-9999.0, band_names=["HH", "HV"])
    scene = sar.read_geotiff_scene(tmp_path / "linear.tif", units="linear")
    np.testing.assert_allclose(scene.sar[:, jul.valid[:, :]][:, 40:], jul.sar[:, jul.valid][:, 40:], atol=1e-3)
    assert np.isnan(scene.sar[:, :6, :6]).all()  # the file's no-data value is masked, not read as backscatter
    with pytest.raises(DataError, match="linear.tif: band HH looks linear"):
        sar.read_geotiff_scene(tmp_path / "linear.tif")  # linear values read as dB


def test_real_chip_matches_stored_constants(shared_data):
    folder = shared_data / "sea_ice" / "sen1floods11_sar_water_proxy"
    if not (folder / "Spain_7370579_S1Hand.tif").is_file():
        pytest.skip("the Sen1Floods11 chip is not in shared/data/sea_ice")
    scene = sar.read_geotiff_scene(
        folder / "Spain_7370579_S1Hand.tif",
        folder / "Spain_7370579_LabelHand.tif",
        label_map={1: 0, 0: 1},
        label_nodata=(-1,),
        class_names=("water", "not_water"),
    )
    assert scene.band_names == ("VV", "VH") and (scene.labels == IGNORE_INDEX).sum() == 99
    live = sar.real_chip_statistics(folder)
    for key, value in sar.REAL_CHIP_STATS.items():
        assert live[key] == pytest.approx(value, abs=0.02), key


def test_simulated_statistics_against_the_real_chip():
    scenes = [sar.simulate_scene(m, size=128, seed=0) for m in (1, 7)]
    table = sar.calibration_table(scenes, folder="/nonexistent")
    row = table.set_index("quantity")
    cross = row.loc["cross-pol over water, median dB (noise-floor limited)"]
    assert abs(cross["simulated freeze scenes"] - cross["reference (stored)"]) < 2.0
    enl = row.loc["co-pol speckle ENL over water (texture included)"]
    # speckle as heavy as the real chip's (within a factor of 1.6: noise near the floor smooths a little)
    assert (
        sar.REAL_CHIP_STATS["VV_water_enl"] / 1.6
        < enl["simulated melt scenes"]
        < sar.REAL_CHIP_STATS["VV_water_enl"] * 1.6
    )
    assert np.isnan(cross["reference (recomputed from shared chip)"])
    means = row.loc["co-pol mean dB"]
    assert abs(means["simulated year"] - means["reference (stored)"]) < sar.AI4ARCTIC_MEAN_STD_DB["HH"][1]


# ---- simulator: noise floors, texture, weather -----------------------------------------------------


def test_both_channels_share_the_sentinel1_ew_noise_floor(monkeypatch):
    assert sar.NOISE_FLOOR_DB["HH"] == sar.NOISE_FLOOR_DB["HV"] == -25.0
    assert "-22" in sar.NOISE_FLOOR_SOURCE and "User Guide" in sar.NOISE_FLOOR_SOURCE
    monkeypatch.setattr(sar, "WATER_HH_A", -70.0)  # water far below the floor: what is measured is noise
    surface = np.full((64, 200), WATER)
    db, physics = sar.simulate_backscatter(
        surface, np.zeros(surface.shape, np.int32), 1, np.random.default_rng(0), wind_speed=1.0, scalloping_db=0.0
    )
    for band, floor in enumerate((sar.HH_NOISE_FLOOR_DB, sar.HV_NOISE_FLOOR_DB)):
        assert abs(float(np.median(db[band])) - floor) < 1.5
    # the same range profile in both channels (one antenna): sub-swath medians move together
    cols = np.array_split(np.arange(200), sar.EW_SUBSWATHS)
    hh = [np.median(db[0][:, c]) for c in cols]
    hv = [np.median(db[1][:, c]) for c in cols]
    assert np.corrcoef(hh, hv)[0, 1] > 0.9 and np.ptp(hh) > 0.5
    assert physics["noise_floor_db"] == [-25.0, -25.0]


def test_texture_differs_by_class_and_polarisation():
    surface = np.zeros((128, 128), np.int64)
    surface[:, 64:] = MYI
    surface[:, :64] = FYI
    tex = sar.texture_fields(surface, np.random.default_rng(0))
    myi, fyi = surface == MYI, surface == FYI
    # multi-year ice: volume scattering, more texture in HV than HH; first-year ice smoother than multi-year
    assert tex[1][myi].std() > 1.3 * tex[0][myi].std()
    assert tex[1][myi].std() > 2.0 * tex[1][fyi].std()
    # HH and HV textures are related but not one field
    r = np.corrcoef(tex[0][myi], tex[1][myi])[0, 1]
    assert 0.4 < r < 0.9

    # correlation lengths differ by class: neighbouring pixels of multi-year ice are more alike
    def lag1(a):
        return np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]

    assert lag1(tex[0][:, 70:]) > lag1(tex[0][:, :58])
    wet = sar.texture_fields(surface, np.random.default_rng(0), melt=1.0)
    assert wet[0][myi].std() < tex[0][myi].std()  # wet snow damps texture


def test_every_scene_draws_its_own_weather():
    a = sar.simulate_scene(7, size=64, seed=(0, 1))
    b = sar.simulate_scene(7, size=64, seed=(0, 2))
    assert a.meta["wind_speed"] != b.meta["wind_speed"]
    assert a.meta["temperature_offset"] != b.meta["temperature_offset"]
    warm = sar.simulate_scene(7, size=64, seed=0, temperature_offset=3.0)
    cold = sar.simulate_scene(7, size=64, seed=0, temperature_offset=-6.0)
    assert warm.meta["melt_fraction"] > 0.95 > 0.5 > cold.meta["melt_fraction"]


# ---- bad input named by file -----------------------------------------------------------------------


def test_netcdf_raster_on_another_grid_names_the_file_and_variable(tmp_path, jul):
    import xarray as xr

    path = sar.write_ai4arctic_netcdf(tmp_path / "full.nc", jul)
    ds = xr.load_dataset(path, mask_and_scale=False)
    for var in ("nersc_sar_secondary", "SIC"):
        bad = ds.drop_vars(var)
        values = ds[var].values[::2, ::2]  # a coarser grid
        bad[var] = (("y2", "x2"), values, ds[var].attrs)
        target = tmp_path / f"grid_{var}.nc"
        bad.to_netcdf(target)
        with pytest.raises(DataError, match=f"grid_{var}.nc: variable '{var}' is on a different grid from HH"):
            sar.read_ai4arctic_netcdf(target)


def test_geotiff_with_three_unnamed_bands_needs_names(tmp_path, jul):
    from labkit.data.io import write_geotiff

    stack = np.concatenate([np.nan_to_num(jul.sar, nan=-30.0), jul.incidence[None]]).astype(np.float32)
    write_geotiff(tmp_path / "three.tif", stack)
    with pytest.raises(DataError, match="three.tif: 3 bands without names.*sar_bands"):
        sar.read_geotiff_scene(tmp_path / "three.tif")
    scene = sar.read_geotiff_scene(tmp_path / "three.tif", band_names=["HH", "HV", "incidence"])
    np.testing.assert_allclose(scene.sar[:, jul.valid], jul.sar[:, jul.valid])
    np.testing.assert_allclose(scene.incidence, jul.incidence)  # the band named incidence is the third input
    with pytest.raises(DataError, match="three.tif: has 3 unnamed band\\(s\\) but parameter 'sar_bands' names 2"):
        sar.read_geotiff_scene(tmp_path / "three.tif", band_names=["HH", "HV"])


# ---- folders of real scenes: one tree per layout, in the published layout -------------------------------


def _scenes(size=96):
    return [
        (sar.simulate_scene(m, size=size, seed=k), season, split)
        for m, season, split, k in [
            (3, "freeze", "train", 0),
            (11, "freeze", "train", 1),
            (1, "freeze", "test", 2),
            (7, "melt", "test", 3),
        ]
    ]


@pytest.mark.parametrize("layout", ["ai4arctic", "geotiff", "extremeearth"])
def test_scene_tree_round_trip(tmp_path, layout):
    triples = _scenes()
    sar.write_scene_tree(tmp_path, triples, layout)
    entries = sar.read_scene_list(tmp_path, layout)
    assert [e.split for e in entries] == ["train", "train", "test", "test"]
    for entry, (orig, season, split) in zip(entries, triples):
        scene = sar.load_scene(entry, layout, root=tmp_path)
        assert scene.season == season and scene.meta["split"] == split and scene.month == orig.month
        np.testing.assert_allclose(scene.sar[:, orig.valid], orig.sar[:, orig.valid], atol=1e-4)
        np.testing.assert_array_equal(scene.labels[orig.valid], orig.labels[orig.valid])
        if layout != "geotiff":  # the geotiff layout has no land mask: land is a no-data label
            np.testing.assert_array_equal(scene.land, orig.land)


def test_extremeearth_tree_without_a_scene_list_uses_the_papers_split(tmp_path):
    triples = [(sar.simulate_scene(m, size=64, seed=m), "freeze", "train") for m in (1, 3, 7, 9)]
    sar.write_scene_tree(tmp_path, triples, "extremeearth", scene_list=False)
    entries = {e.month: e for e in sar.read_scene_list(tmp_path, "extremeearth")}
    assert entries[1].split == "test" and entries[1].season == "freeze"
    assert entries[7].split == "test" and entries[7].season == "melt"
    assert entries[3].split == "train" and entries[9].season == "transition"


def test_extremeearth_chart_codes_outside_the_legend_name_the_file(tmp_path):
    from labkit.data.io import read_geotiff, write_geotiff

    sar.write_scene_tree(tmp_path, _scenes(64), "extremeearth")
    label = sorted((tmp_path / "labels_rasterized").glob("*.tif"))[0]
    codes, _ = read_geotiff(label, masked_nodata=False)
    codes = codes[0].astype(np.int16)
    codes[0, :4] = 42
    write_geotiff(label, codes, nodata=-9999)
    entry = next(e for e in sar.read_scene_list(tmp_path, "extremeearth") if e.label == label)
    with pytest.raises(DataError, match=f"{label.name}.*\\[42\\] outside the legend"):
        sar.load_scene(entry, "extremeearth")


def test_scene_list_errors_name_the_list_and_the_row(tmp_path):
    import pandas as pd

    sar.write_scene_tree(tmp_path, _scenes(64), "geotiff")
    listing = tmp_path / sar.SCENE_LIST
    good = pd.read_csv(listing)

    def broken(**change):
        table = good.copy()
        for col, (row, value) in change.items():
            table.loc[row, col] = value
        table.to_csv(listing, index=False)

    broken(file=(1, "sar/absent.tif"))
    with pytest.raises(DataError, match="scenes.csv row 3: scene file .*absent.tif does not exist"):
        sar.read_scene_list(tmp_path, "geotiff")
    broken(season=(0, "summer"))
    with pytest.raises(DataError, match="row 2: season 'summer' is not one of"):
        sar.read_scene_list(tmp_path, "geotiff")
    broken(season=(3, "freeze"))  # the melt test scene relabelled: no melt test scene is left
    with pytest.raises(DataError, match="no test scene of the melt season"):
        sar.read_scene_list(tmp_path, "geotiff")
    good.drop(columns="split").to_csv(listing, index=False)
    with pytest.raises(DataError, match="missing column\\(s\\) \\['split'\\]"):
        sar.read_scene_list(tmp_path, "geotiff")
    good.to_csv(listing, index=False)
    (tmp_path / "labels" / "20180117t020000.tif").unlink()
    with pytest.raises(DataError, match="label raster .*20180117t020000.tif does not exist"):
        sar.read_scene_list(tmp_path, "geotiff")
    listing.unlink()
    with pytest.raises(DataError, match="no scene list"):
        sar.read_scene_list(tmp_path, "geotiff")


# ---- the user's classes and polarisations (issue 31): a legend file, any two polarisations ----------------


def _water_mask_tree(root, legend='{"0": "land", "1": "water"}', bands=("VV", "VH"), incidence=False):
    """A Sentinel-1 IW-like VV/VH tree with a 0/1 water mask (0 land, 1 water) and its legend, as published
    (Sen1Floods11's LabelHand: 1 water, 0 not water)."""
    import pandas as pd

    from labkit.data.io import write_geotiff

    (root / "sar").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for i, (season, split) in enumerate([("freeze", "train"), ("melt", "train"), ("freeze", "test"), ("melt", "test")]):
        scene = sar.simulate_scene(1 if season == "freeze" else 7, size=64, seed=i)
        water = (scene.labels == sar.WATER).astype(np.uint8)  # 1 water, 0 everything else
        water[scene.labels == IGNORE_INDEX] = 255
        stack = np.nan_to_num(scene.sar, nan=-9999.0)
        names = list(bands)
        if incidence:
            stack, names = np.concatenate([stack, scene.incidence[None]]), [*names, "incidence"]
        write_geotiff(root / "sar" / f"s{i}.tif", stack.astype(np.float32), nodata=-9999.0, band_names=names)
        write_geotiff(root / "labels" / f"s{i}.tif", water)
        rows.append(
            {
                "file": f"sar/s{i}.tif",
                "date": f"2019-0{1 if season == 'freeze' else 7}-1{i}",
                "season": season,
                "split": split,
            }
        )
    pd.DataFrame(rows).to_csv(root / "scenes.csv", index=False)
    if legend is not None:
        (root / "legend.json").write_text(legend)
    return root


def test_a_water_mask_loads_with_its_legends_names_not_the_sea_ice_legend(tmp_path):
    root = _water_mask_tree(tmp_path)
    entry = sar.read_scene_list(root, "geotiff")[0]
    scene = sar.load_scene(entry, "geotiff", root=root)
    assert scene.class_names == ("land", "water") and scene.band_names == ("VV", "VH")
    raw = sar.read_geotiff_scene(entry.file, entry.label, label_nodata=(255,))  # the fixed legend would say...
    assert raw.class_names[:2] == ("open_water", "young_ice")  # ...open water / young ice: what must not happen
    water = scene.labels == 1
    assert water.any() and (scene.labels[water] == 1).all()
    np.testing.assert_array_equal(scene.labels, raw.labels)  # same ids (0, 1), now named as the data names them


def test_a_geotiff_folder_without_a_legend_is_an_error_naming_the_legend_file(tmp_path):
    root = _water_mask_tree(tmp_path, legend=None)
    with pytest.raises(DataError, match="no legend file \\(legend.json or legend.csv\\)"):
        sar.read_scene_list(root, "geotiff")


def test_a_legend_missing_a_label_value_names_the_label_file_legend_and_value(tmp_path):
    root = _water_mask_tree(tmp_path, legend='{"0": "land", "2": "water"}')
    entry = sar.read_scene_list(root, "geotiff")[0]
    with pytest.raises(DataError, match="s0.tif: label value\\(s\\) \\[1\\].*not in the legend .*legend.json"):
        sar.load_scene(entry, "geotiff", root=root)


def test_sar_bands_pick_two_polarisations_by_name_and_a_missing_band_names_file_and_band(tmp_path):
    root = _water_mask_tree(tmp_path, bands=("VV", "VH"), incidence=True)
    entry = sar.read_scene_list(root, "geotiff")[0]
    scene = sar.load_scene(entry, "geotiff", ["VV", "VH", "incidence"], root=root)
    assert scene.band_names == ("VV", "VH") and np.isfinite(scene.incidence).all()
    scene = sar.load_scene(entry, "geotiff", None, root=root)  # the file's own names
    assert scene.band_names == ("VV", "VH") and np.isfinite(scene.incidence).all()
    with pytest.raises(DataError, match="s0.tif: has no band HH, HV \\(its bands: VV, VH, INCIDENCE\\).*sar_bands"):
        sar.load_scene(entry, "geotiff", ["HH", "HV"], root=root)
    with pytest.raises(DataError, match="must name two polarisations"):
        sar.load_scene(entry, "geotiff", ["VV", "incidence"], root=root)


def test_a_scene_without_an_incidence_band_gets_the_documented_substitute(tmp_path):
    root = _water_mask_tree(tmp_path)
    entry = sar.read_scene_list(root, "geotiff")[0]
    scene = sar.load_scene(entry, "geotiff", root=root)
    assert np.isnan(scene.incidence).all()
    with pytest.warns(UserWarning, match="s0.tif: no incidence-angle band.*34 degrees"):
        sar.fill_missing_incidence(scene, str(entry.file))
    assert scene.meta["incidence"] == "substitute" and (scene.incidence == sar.REFERENCE_INCIDENCE).all()
    x = sar.BandNormalizer().fit([scene]).transform_scene(scene)
    assert np.allclose(x[2], 0.0)  # a constant channel: no information, and no blow-up from a zero spread
