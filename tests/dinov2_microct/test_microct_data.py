"""Simulator, CT forward model and loaders of labkit.data.microct."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from labkit.core.errors import DataError
from labkit.data import microct as m


def _phases(rock, seed, shape=(12, 64, 64)):
    return m.material_phases(m.simulate_rock(rock, shape, seed=seed))


def test_rocks_share_phase_fractions_and_mineralogy():
    """Every rock type draws its porosity and micro-porosity from the same ranges and hits them exactly, with the
    same materials per phase: a phase's grey level is the scanner's, not the rock's."""
    for rock in m.ROCK_TYPES:
        rng = np.random.default_rng(1)
        mat = m.simulate_rock(rock, (12, 64, 64), seed=rng)
        phases = m.material_phases(mat)
        frac = np.bincount(phases.ravel(), minlength=3) / phases.size
        lo = [m.PHASE_FRACTION_RANGES["pore"][0], 0.0, m.PHASE_FRACTION_RANGES["microporous"][0]]
        hi = [m.PHASE_FRACTION_RANGES["pore"][1], 1.0, m.PHASE_FRACTION_RANGES["microporous"][1]]
        assert np.all(frac >= np.array(lo) - 1e-3) and np.all(frac <= np.array(hi) + 1e-3), (rock, frac)
        used = {m.MATERIALS[i].name for i in np.unique(mat)}
        assert used == {"air", "quartz", "feldspar", "clay"}, (rock, used)


def test_same_fractions_give_same_grey_histograms_but_textures_differ():
    """Rocks drawn with the same phase fractions: their grey histograms match within the scanner's noise (the
    histogram distance between rocks is of the order of that between two samples of one rock), while their
    textures differ (the two-point autocorrelation of the pore phase: its range and its anisotropy)."""

    fr = dict(m.PHASE_FRACTIONS)
    hists, corr, aniso = {}, {}, {}
    for rock, build in m._PHASE_BUILDERS.items():
        for s in (0, 1):
            rng = np.random.default_rng(s)
            ph = build(rng, (8, 64, 64), 1.0, fr)
            frac = np.bincount(ph.ravel(), minlength=3) / ph.size
            assert np.allclose(frac, [fr["pore"], fr["mineral"], fr["microporous"]], atol=2e-3), (rock, frac)
            grey = m.ct_forward(m._to_materials(rng, ph, 1.0), "benchtop_80kv", seed=s).astype(float)
            hists[rock, s] = np.histogram(grey, 32, (0, 255), density=True)[0]
            if s == 0:
                pore = (ph == m.PORE).astype(float)[4] - fr["pore"]
                ac = np.fft.ifft2(np.abs(np.fft.fft2(pore)) ** 2).real
                corr[rock] = float(ac[0, 3] / ac[0, 0])
                aniso[rock] = float(ac[0, 3] / ac[0, 0]) / max(float(ac[3, 0] / ac[0, 0]), 1e-3)
    within = np.mean([np.abs(hists[r, 0] - hists[r, 1]).sum() for r in m.ROCK_TYPES])
    between = np.mean([np.abs(hists[a, 0] - hists[b, 1]).sum() for a in m.ROCK_TYPES for b in m.ROCK_TYPES if a != b])
    assert between < 3 * within + 0.02, (between, within)
    # textures: the vugs and the big ooid pores correlate over longer distances than the shale's thin pores
    assert max(corr.values()) - min(corr.values()) > 0.15, corr
    # and the shale's bedding: its pores correlate further along the bedding (x) than across it (y)
    assert aniso["laminated_shale"] > 1.5 * max(v for r, v in aniso.items() if r != "laminated_shale"), aniso


def test_simulation_is_seeded():
    a = m.simulate_rock("vuggy_carbonate", (8, 40, 40), seed=3)
    b = m.simulate_rock("vuggy_carbonate", (8, 40, 40), seed=3)
    c = m.simulate_rock("vuggy_carbonate", (8, 40, 40), seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_attenuation_contrast_depends_on_energy():
    calcite, quartz = m.MATERIALS[m.MATERIAL_INDEX["calcite"]], m.MATERIALS[m.MATERIAL_INDEX["quartz"]]
    low = calcite.attenuation(25) / quartz.attenuation(25)
    high = calcite.attenuation(68) / quartz.attenuation(68)
    assert low > high > 1.0  # photoelectric contrast fades at higher energy


def test_forward_model_orders_phases_and_scanners_differ():
    mat = m.simulate_rock("well_sorted_sandstone", (10, 64, 64), seed=0)
    ph = m.material_phases(mat)
    grey = {s: m.ct_forward(mat, s, seed=0).astype(float) for s in m.SCANNERS}
    for g in grey.values():
        means = [g[ph == p].mean() for p in (m.PORE, m.MICRO, m.MINERAL)]
        assert means[0] < means[1] < means[2]
    assert grey["benchtop_80kv"].max() <= 255
    # noise: the synchrotron is the cleanest inside the mineral phase
    inner = ph == m.MINERAL
    assert (
        grey["synchrotron_25kev"][inner].std() / grey["synchrotron_25kev"][inner].mean()
        < grey["industrial_140kv"][inner].std() / grey["industrial_140kv"][inner].mean()
    )


def test_ring_artifacts_and_cupping_show_in_a_uniform_sample():
    uniform = np.full((3, 64, 64), m.MATERIAL_INDEX["quartz"], np.uint8)
    noiseless = m.Scanner("t", 40.0, 0.5, 0.0, 0.0, 0.05, 5, 0.2, 16)
    g = m.ct_forward(uniform, noiseless, seed=0, fov_offset=(0, 0)).astype(float)[1]
    centre, corner = g[28:36, 28:36].mean(), g[:4, :4].mean()
    assert centre < corner  # cupping: the axis looks less dense
    flat = m.Scanner("t", 40.0, 0.5, 0.0, 0.0, 0.0, 0, 0.0, 16)
    g0 = m.ct_forward(uniform, flat, seed=0, fov_offset=(0, 0)).astype(float)[1]
    assert g0.std() < 1e-6 * g0.mean() + 1 and g.std() > 10 * (g0.std() + 1)


def test_simulate_slices_metadata_and_selection():
    ds = m.simulate_slices(
        ("oolitic_limestone", "laminated_shale"),
        ("benchtop_80kv", "synchrotron_25kev"),
        samples_per_rock=2,
        slices_per_sample=3,
        size=32,
        seed=0,
    )
    assert ds.images.shape == (2 * 2 * 2 * 3, 32, 32) and ds.masks.shape == ds.images.shape
    assert ds.images.dtype == np.float32 and 0 <= ds.images.min() and ds.images.max() <= 1
    sub = ds.select(rocks=["laminated_shale"], scanners=["synchrotron_25kev"], geometries=[1])
    assert len(sub) == 3 and set(sub.rock) == {1} and set(sub.scanner) == {1}
    # same geometry, two scanners: same masks, different grey values
    a = ds.select(rocks=["oolitic_limestone"], scanners=["benchtop_80kv"], geometries=[0])
    b = ds.select(rocks=["oolitic_limestone"], scanners=["synchrotron_25kev"], geometries=[0])
    assert np.array_equal(a.masks, b.masks) and not np.allclose(a.images, b.images)


def test_normalize_volume():
    v = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    n = m.normalize_volume(v, "minmax")
    assert n.min() == 0 and n.max() == 1
    z = m.normalize_volume(v, "zscore")
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    with pytest.raises(DataError, match="constant"):
        m.normalize_volume(np.ones((2, 3, 3)), name="flat.tif")


def test_slice_volume_and_bad_labels():
    vol = np.random.rand(6, 8, 9)
    lab = np.random.randint(0, 3, (6, 8, 9))
    im, lb = m.slice_volume(vol, lab, axis=2, step=2, n_phases=3)
    assert im.shape == (5, 6, 8) and np.array_equal(lb[1], lab[:, :, 2])
    with pytest.raises(DataError, match=r"rock\.tif labels: label values \[7\] are outside the declared phases"):
        m.slice_volume(vol, np.where(lab == 2, 7, lab), n_phases=3, name="rock.tif")
    with pytest.raises(DataError, match=r"rock\.tif: mask shape \(6, 8, 8\) differs from image shape \(6, 8, 9\)"):
        m.slice_volume(vol, lab[:, :, :-1], name="rock.tif")
    with pytest.raises(DataError, match="must be integers"):
        m.validate_phase_labels(lab.astype(float), 3, name="rock.tif")


def test_raw_volume_with_pore_scale_header(tmp_path):
    vol = np.random.default_rng(0).integers(0, 3, (4, 5, 6)).astype(np.uint8)
    path = tmp_path / "sample.raw"
    vol.tofile(path)
    (tmp_path / "sample.raw_header").write_text("Nxyz\ndxX0\n6 5 4\n2 2 2\n0 0 0\n\nComments:\n blah 1 2 3\n")
    assert np.array_equal(m.read_raw_volume(path), vol)
    assert np.array_equal(m.load_volume(path), vol)


def test_raw_volume_shape_dtype_mismatch_errors(tmp_path):
    vol = np.zeros((4, 5, 6), np.uint16)
    path = tmp_path / "v.raw"
    vol.tofile(path)
    assert m.read_raw_volume(path, (4, 5, 6), "uint16").shape == (4, 5, 6)
    with pytest.raises(DataError, match=r"v\.raw.*bytes"):
        m.read_raw_volume(path, (4, 5, 6), "uint8")
    (tmp_path / "v.json").write_text(json.dumps({"shape": [4, 5, 7], "dtype": "uint16"}))
    with pytest.raises(DataError, match=r"v\.raw: shape \(4, 5, 6\) given but the header v\.json says \(4, 5, 7\)"):
        m.read_raw_volume(path, (4, 5, 6), "uint16")  # disagrees with its header
    with pytest.raises(DataError, match=r"v\.raw: file has 240 bytes but shape \(4, 5, 7\).*needs 280 bytes"):
        m.read_raw_volume(path)  # header shape does not fit the file
    (tmp_path / "v.json").write_text(json.dumps({"shape": [4, 5, 6], "dtype": "uint16"}))
    with pytest.raises(DataError, match=r"v\.raw: dtype uint8 given but the header v\.json says uint16"):
        m.read_raw_volume(path, dtype="uint8")
    (tmp_path / "v.json").write_text(json.dumps({"shape": [4, 5, 6], "dtype": "float32"}))
    with pytest.raises(DataError, match=r"v\.raw: file has 240 bytes .* float32 needs 480 bytes"):
        m.read_raw_volume(path)  # header dtype does not fit the file
    bare = tmp_path / "bare.raw"
    vol.tofile(bare)
    with pytest.raises(DataError, match="no shape"):
        m.read_raw_volume(bare)


def test_metaimage_big_endian(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=">i2").reshape(2, 3, 4)
    vol.tofile(tmp_path / "v.raw")
    (tmp_path / "v.mhd").write_text(
        "NDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nBinaryDataByteOrderMSB = True\nElementDataFile = v.raw\n"
    )
    out = m.load_volume(tmp_path / "v.mhd")
    assert out.shape == (2, 3, 4) and np.array_equal(out, vol.astype(np.int16))


def test_mat_volume(tmp_path):
    import scipy.io

    vol = np.random.randint(0, 2, (5, 6, 7)).astype(np.int8)
    scipy.io.savemat(tmp_path / "a.mat", {"A": vol, "note": np.zeros(3)})
    assert np.array_equal(m.read_mat_volume(tmp_path / "a.mat"), vol)
    scipy.io.savemat(tmp_path / "two.mat", {"A": vol, "B": vol})
    with pytest.raises(DataError, match="pass variable"):
        m.read_mat_volume(tmp_path / "two.mat")
    with pytest.raises(DataError, match="no variable"):
        m.read_mat_volume(tmp_path / "a.mat", "C")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="bad.mat"):
        m.read_mat_volume(tmp_path / "bad.mat")


def test_tiff_stack_and_slice_folder(tmp_path):
    vol = (np.random.rand(3, 10, 12) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", vol, photometric="minisblack")
    assert np.array_equal(m.load_volume(tmp_path / "stack.tif"), vol)
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in (0, 1, 10, 2):  # natural order: 0, 1, 2, 10
        Image.fromarray(np.full((10, 12), i, np.uint8)).save(folder / f"s_{i}.png")
    Image.fromarray(np.full((10, 12, 3), 3, np.uint8)).convert("RGB").save(folder / "s_3.jpg", quality=100)
    stack = m.load_volume(folder)
    assert stack.shape == (5, 10, 12) and list(stack[:, 0, 0]) == [0, 1, 2, 3, 10]
    Image.fromarray(vol[0]).save(tmp_path / "sixteen.png")
    s16 = m.read_slice(tmp_path / "sixteen.png")
    assert s16.dtype == np.uint16 and np.array_equal(s16, vol[0])
    Image.fromarray(np.zeros((9, 12), np.uint8)).save(folder / "s_99.png")
    with pytest.raises(DataError, match=r"s_99\.png.*differs"):
        m.load_volume(folder)


def test_empty_folder_errors(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=f"{tmp_path.name}: folder holds no slice images"):
        m.read_slice_folder(tmp_path)
    with pytest.raises(DataError, match="no slice images"):
        m.load_volume(tmp_path)  # the dispatcher reaches the same check


def test_labelled_slices_from_files_and_their_errors(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65535, (4, 10, 12)).astype(np.uint16)
    labels = rng.integers(0, 3, (4, 10, 12)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rock.tif", grey, photometric="minisblack")
    labels.tofile(tmp_path / "rock_labels.raw")
    (tmp_path / "rock_labels.json").write_text(json.dumps({"shape": [4, 10, 12], "dtype": "uint8"}))
    images, masks = m.load_labelled_slices(tmp_path / "rock.tif", tmp_path / "rock_labels.raw", axis=1, step=3)
    assert images.shape == masks.shape == (4, 4, 12) and images.dtype == np.float32 and masks.dtype == np.int64
    assert np.array_equal(masks[1], labels[:, 3]) and 0 <= images.min() and images.max() <= 1
    # labels outside the declared phases: the label file is named
    np.where(labels == 2, 5, labels).astype(np.uint8).tofile(tmp_path / "bad_labels.raw")
    (tmp_path / "bad_labels.json").write_text(json.dumps({"shape": [4, 10, 12], "dtype": "uint8"}))
    with pytest.raises(DataError, match=r"bad_labels\.raw: label values \[5\] are outside the declared phases 0\.\.2"):
        m.load_labelled_slices(tmp_path / "rock.tif", tmp_path / "bad_labels.raw")
    # a mask whose size differs from its image
    tifffile.imwrite(tmp_path / "small_labels.tif", labels[:, :9], photometric="minisblack")
    with pytest.raises(
        DataError,
        match=r"small_labels\.tif: label volume shape \(4, 9, 12\).*differs from "
        r"the image volume rock\.tif \(4, 10, 12\)",
    ):
        m.load_labelled_slices(tmp_path / "rock.tif", tmp_path / "small_labels.tif")
    # a constant image volume cannot be normalised
    tifffile.imwrite(tmp_path / "flat.tif", np.full((4, 10, 12), 7, np.uint16), photometric="minisblack")
    with pytest.raises(DataError, match=r"flat\.tif: constant volume"):
        m.load_labelled_slices(tmp_path / "flat.tif", tmp_path / "rock_labels.raw")
    with pytest.raises(DataError, match=r"missing\.tif: file not found"):
        m.load_labelled_slices(tmp_path / "missing.tif", tmp_path / "rock_labels.raw")


def test_shared_berea_and_carbonate(shared_data):
    root = shared_data / "rock_microct"
    berea_path = root / "deepore_berea" / "Sample_large.mat"
    carb_path = root / "contactangle_carbonate" / "Sample1_subvolume.raw"
    if not berea_path.is_file() or not carb_path.is_file():
        pytest.skip("rock_microct samples absent")
    berea = m.load_berea_phase_map(berea_path)
    assert berea.shape == (300, 300, 300) and abs(1 - berea.mean() - 0.211) < 0.01
    carb = m.load_volume(carb_path)  # shape from Sample1_subvolume.raw_header
    assert carb.shape == (126, 97, 105)
    assert np.array_equal(np.bincount(carb.ravel()), [178142, 1042772, 62396])
    grey = m.ct_forward(m.materials_for_phases(berea[:5, :64, :64]), "benchtop_80kv", seed=0)
    assert grey.shape == (5, 64, 64)
    png = m.read_slice(root / "neural_rock_typing_deeprocksr" / "sandstone.png")
    assert png.ndim == 2 and png.shape == (500, 500)
