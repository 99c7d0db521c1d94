"""Real-volume data sources of the micro-CT study: a manifest.yaml with every format, the Digital Rocks Portal
layouts of projects 317 and 151, the split from the manifest, and each kind of bad input named before any work."""

import numpy as np
import pytest
import tifffile

import labkit
from labkit.core.errors import DataError, ParameterError
from labkit.data import microct, microct_volumes
from labkit.studies import dinov2_microct as study
from labkit.studies.dinov2_microct.data import check_data_source, make_data, splits
from tests.dinov2_microct import trees

SMOKE = dict(samples_per_rock=2, slices_per_sample=3, slice_step=4, slice_size=56)


@pytest.fixture
def tree(tmp_path):
    return trees.write_manifest_tree(tmp_path / "data")


def _cfg(root, source="volumes", **kw):
    return labkit.configure("dinov2_microct", "smoke", {"data_source": source, "data_root": str(root), **kw})


def test_every_format_in_the_manifest_reads_back_the_written_voxels(tree):
    root, written = tree
    cfg = _cfg(root)
    check_data_source(cfg)
    ds = make_data(cfg, seed=0)
    assert isinstance(ds, microct.MicroCTSlices)
    assert ds.rock_types == ("berea", "estaillades", "wacke")
    assert ds.scanners == ("zeiss_versa", "nikon_xth", "tomcat")
    # 9 volumes x 2 blocks x 3 slices, centre-cropped from 60 to 56 px
    assert ds.images.shape == ds.masks.shape == (54, 56, 56)
    assert ds.images.dtype == np.float32 and ds.masks.dtype == np.int64
    assert 0 <= ds.images.min() and ds.images.max() <= 1
    # depth 20 in 2 blocks of 10: slices 0, 4, 8 and 10, 14, 18; crop rows/columns 2..58
    take = [0, 4, 8, 10, 14, 18]
    for i, (name, (grey, phases)) in enumerate(written.items()):
        rows = slice(6 * i, 6 * i + 6)
        rock, scanner = name.split("_", 1)
        fmt = trees.FORMATS[(rock, scanner)]
        assert np.array_equal(ds.masks[rows], phases[take, 2:58, 2:58]), fmt
        assert np.allclose(ds.raw[rows], grey[take, 2:58, 2:58]), fmt
        assert list(ds.geometry[rows]) == [0, 0, 0, 1, 1, 1]
        assert ds.rock_types[ds.rock[rows][0]] == rock and ds.scanners[ds.scanner[rows][0]] == scanner
    assert {fmt for fmt in trees.FORMATS.values()} == {"tiff", "raw_header", "raw_manifest", "mhd", "mat"}


def test_the_split_comes_from_the_manifest(tree):
    root, _ = tree
    cfg = _cfg(root)
    ds = make_data(cfg, seed=0)
    sp = splits(cfg, ds)

    def names(idx, attr):
        table = ds.scanners if attr == "scanner" else ds.rock_types
        return {table[i] for i in getattr(ds, attr)[idx]}

    assert names(sp["seg_train"], "rock") == {"berea", "estaillades"}
    assert names(sp["seg_train"], "scanner") == {"zeiss_versa", "nikon_xth"}
    assert names(sp["ood_rock"], "rock") == {"wacke"}
    assert names(sp["ood_scanner"], "scanner") == {"tomcat"}
    assert names(sp["ood_scanner"], "rock") == {"berea", "estaillades"}
    assert set(ds.geometry[sp["in_distribution"]]) == {1} and set(ds.geometry[sp["seg_train"]]) == {0}
    # another split in the manifest moves the slices with it
    trees.edit_manifest(
        root,
        lambda d: d["splits"].update(
            train_rocks=["wacke", "berea"],
            test_rock="estaillades",
            test_scanner="nikon_xth",
            train_scanners=["zeiss_versa", "tomcat"],
        ),
    )
    ds = make_data(cfg, seed=0)
    sp = splits(cfg, ds)
    assert names(sp["ood_rock"], "rock") == {"estaillades"}
    assert names(sp["ood_scanner"], "scanner") == {"nikon_xth"}


def test_a_manifest_naming_a_missing_file(tree):
    root, _ = tree
    (root / "berea" / "zeiss_versa_labels.tif").unlink()
    with pytest.raises(
        DataError,
        match=r"manifest\.yaml: volume 0 \(berea_zeiss_versa\) labels: file .*zeiss_versa_labels\.tif does not exist",
    ):
        study.data(_cfg(root))  # before any work


def test_a_raw_volume_whose_size_disagrees_with_its_shape_and_dtype(tree):
    root, _ = tree
    # the manifest says uint32 for a uint16 raw volume, then a shape one column too wide
    trees.edit_manifest(root, lambda d: d["volumes"][2]["image"].update(dtype="uint32"))
    with pytest.raises(
        DataError,
        match=r"berea/tomcat_grey\.raw: file has 144000 bytes but shape \(20, 60, 60\) \(z, y, x\) of uint32 needs "
        r"288000 bytes",
    ):
        check_data_source(_cfg(root))
    trees.edit_manifest(root, lambda d: d["volumes"][2]["image"].update(dtype="uint16", shape=[20, 60, 61]))
    with pytest.raises(DataError, match=r"tomcat_grey\.raw: file has 144000 bytes but shape \(20, 60, 61\)"):
        check_data_source(_cfg(root))
    # a raw volume with its header: a truncated file is named too
    raw = root / "berea" / "nikon_xth_labels.raw"
    raw.write_bytes(raw.read_bytes()[:-10])
    trees.edit_manifest(root, lambda d: d["volumes"][2]["image"].update(shape=[20, 60, 60]))
    with pytest.raises(DataError, match=r"nikon_xth_labels\.raw: file has 71990 bytes but shape \(20, 60, 60\)"):
        check_data_source(_cfg(root))


def test_a_tiff_stack_whose_pages_differ_in_size(tmp_path, tree):
    pages = [np.zeros((10, 12), np.uint16), np.zeros((10, 12), np.uint16), np.zeros((9, 12), np.uint16)]
    with tifffile.TiffWriter(tmp_path / "ragged.tif") as tw:
        for p in pages:
            tw.write(p, photometric="minisblack")
    with pytest.raises(DataError, match=r"ragged\.tif: TIFF page 2 has shape \(9, 12\) but page 0 has \(10, 12\)"):
        microct.read_tiff_volume(tmp_path / "ragged.tif")  # tifffile.imread gives the first page, silently
    with pytest.raises(DataError, match=r"ragged\.tif: TIFF page 2"):
        microct.load_volume(tmp_path / "ragged.tif")
    root, written = tree
    grey = written["berea_zeiss_versa"][0]
    with tifffile.TiffWriter(root / "berea" / "zeiss_versa_grey.tif") as tw:
        for i, page in enumerate(grey):
            tw.write(page if i != 7 else page[:, :50], photometric="minisblack")
    with pytest.raises(DataError, match=r"zeiss_versa_grey\.tif: TIFF page 7 has shape \(60, 50\) but page 0"):
        check_data_source(_cfg(root))


def test_labels_outside_the_declared_phases(tree):
    root, written = tree
    phases = written["estaillades_tomcat"][1].copy()
    phases[3, 30, 30] = 7
    tifffile.imwrite(root / "estaillades" / "tomcat_labels.tif", phases, photometric="minisblack")
    with pytest.raises(
        DataError, match=r"tomcat_labels\.tif: label values \[7\] are outside the declared phases 0\.\.2"
    ):
        make_data(_cfg(root), seed=0)
    # fewer declared phases: the third phase is now outside them
    trees.edit_manifest(root, lambda d: d.update(phases=["pore", "solid"]))
    with pytest.raises(DataError, match=r"label values \[2\] are outside the declared phases 0\.\.1"):
        make_data(_cfg(root), seed=0)
    # a label map that misses a stored value names it
    trees.edit_manifest(root, lambda d: d.update(phases=["pore", "mineral", "microporous"]))
    trees.edit_manifest(root, lambda d: d["volumes"][4]["labels"].update(map={0: 0, 1: 1}))
    with pytest.raises(DataError, match=r"nikon_xth_labels\.mat: label values \[2\] are not in its map"):
        make_data(_cfg(root), seed=0)


def test_a_label_volume_whose_shape_differs_from_its_image(tree):
    root, written = tree
    phases = written["wacke_nikon_xth"][1][:, :, :59].copy()
    phases.tofile(root / "wacke" / "nikon_xth_labels.img")
    trees.write_mhd(root / "wacke" / "nikon_xth_labels.mhd", "nikon_xth_labels.img", phases.shape, np.uint8)
    with pytest.raises(
        DataError,
        match=r"nikon_xth_labels\.mhd: label volume shape \(20, 60, 59\) \(z, y, x\) differs from its image "
        r"nikon_xth_grey\.mhd \(20, 60, 60\)",
    ):
        study.data(_cfg(root))  # before any work


def test_a_rock_or_scanner_named_in_the_split_that_no_volume_has(tree):
    root, _ = tree
    trees.edit_manifest(root, lambda d: d["splits"].update(test_rock="ketton"))
    with pytest.raises(
        DataError,
        match=r"manifest\.yaml: splits\.test_rock names rock \['ketton'\], which no volume has "
        r"\(volumes have rocks \['berea', 'estaillades', 'wacke'\]\)",
    ):
        study.data(_cfg(root))
    trees.edit_manifest(root, lambda d: d["splits"].update(test_rock="wacke", train_scanners=["zeiss_versa", "micro"]))
    with pytest.raises(DataError, match=r"splits\.train_scanners names scanner \['micro'\], which no volume has"):
        check_data_source(_cfg(root))
    trees.edit_manifest(
        root, lambda d: d["splits"].update(train_scanners=["zeiss_versa", "nikon_xth"], test_rock="berea")
    )
    with pytest.raises(DataError, match=r"splits\.test_rock 'berea' is also a training rock"):
        check_data_source(_cfg(root))


def test_a_manifest_without_a_volume_for_some_rock_and_scanner(tree):
    root, _ = tree
    trees.edit_manifest(root, lambda d: d.update(volumes=d["volumes"][1:]))
    with pytest.raises(DataError, match=r"no volume for rock x scanner \[\('berea', 'zeiss_versa'\)\]"):
        check_data_source(_cfg(root))


def test_a_raw_volume_without_shape_or_header_and_an_unreadable_manifest(tree):
    root, _ = tree
    (root / "berea" / "nikon_xth_grey.raw_header").unlink()
    with pytest.raises(
        DataError, match=r"nikon_xth_grey\.raw: raw volume without shape and dtype: give them in the manifest"
    ):
        check_data_source(_cfg(root))
    (root / "manifest.yaml").write_text("volumes: [unclosed")
    with pytest.raises(DataError, match=r"manifest\.yaml: not valid YAML"):
        check_data_source(_cfg(root))
    (root / "manifest.yaml").unlink()
    with pytest.raises(DataError, match=r"no manifest\.yaml in data_root"):
        check_data_source(_cfg(root))


def test_volumes_too_small_for_the_slicing_parameters_are_named(tree):
    root, _ = tree
    with pytest.raises(DataError, match=r"zeiss_versa_grey\.tif: volume has 20 slices; 2 blocks .* need 26"):
        make_data(_cfg(root, slices_per_sample=4), seed=0)
    with pytest.raises(DataError, match=r"slices are 60 x 60 pixels, smaller than slice_size 64"):
        make_data(_cfg(root, slice_size=64), seed=0)


def test_the_digital_rocks_portal_layout(tmp_path):
    root = trees.write_drp_tree(tmp_path / "drp")
    m = microct_volumes.read_drp_layout(root)
    assert m.rocks == ("Berea", "BanderaBrown", "Bentheimer", "Kirby", "Sample1", "Sample2", "Sample3")
    assert m.scanners == ("DRP-317", "DRP-151")
    assert m.splits["train_rocks"] == ["Berea", "Bentheimer"] and m.splits["test_rock"] == "Kirby"
    ds = microct_volumes.load_slices(m, blocks=2, slices_per_block=2, step=3, size=20)
    assert ds.images.shape == (7 * 4, 20, 20)
    # 317: the headerless cube is read as (side,)*3 uint8, its grey values kept; binary 255 -> mineral (1)
    grey = np.fromfile(root / "317" / "Kirby" / "Kirby_2d25um_grayscale.raw", np.uint8).reshape(24, 24, 24)
    binary = np.fromfile(root / "317" / "Kirby" / "Kirby_2d25um_binary.raw", np.uint8).reshape(24, 24, 24)
    kirby = ds.rock == ds.rock_types.index("Kirby")
    assert np.array_equal(ds.raw[kirby], grey[[0, 3, 12, 15], 2:22, 2:22])
    assert np.array_equal(ds.masks[kirby], (binary[[0, 3, 12, 15], 2:22, 2:22] > 0).astype(int))
    # 151: the header gives (z, y, x) = (24, 28, 26) uint16; the sorted stored values 0/128/255 -> 0/1/2
    seg = np.fromfile(root / "151" / "Sample2_segmented.raw", np.uint8).reshape(24, 28, 26)
    s2 = ds.rock == ds.rock_types.index("Sample2")
    assert np.array_equal(ds.masks[s2], np.searchsorted([0, 128, 255], seg[[0, 3, 12, 15], 4:24, 3:23]))
    assert set(np.unique(ds.masks[ds.scanner == 1])) == {0, 1, 2}
    # the published size is what a headerless 317 file must have otherwise
    (root / "317" / "Berea" / "Berea_2d25um_binary.raw").write_bytes(b"\0" * 1001)
    with pytest.raises(DataError, match=r"Berea_2d25um_binary\.raw: file has 1001 bytes; a Digital Rocks Portal"):
        microct_volumes.read_drp_layout(root)


def test_the_digital_rocks_portal_layout_errors(tmp_path):
    root = trees.write_drp_tree(tmp_path / "drp")
    (root / "151" / "Sample3_segmented.raw").unlink()
    (root / "151" / "Sample3_segmented.raw_header").unlink()
    with pytest.raises(DataError, match=r"Sample3_raw\.raw: no segmented volume next to it"):
        microct_volumes.read_drp_layout(root)
    (root / "317" / "Kirby" / "Kirby_2d25um_binary.raw").unlink()
    with pytest.raises(DataError, match=r"Kirby: holds no Kirby_2d25um_binary\.raw"):
        microct_volumes.read_drp_layout(root)
    (root / "splits.yaml").write_text("test_rock: Leopard\n")
    (root / "317" / "Kirby" / "Kirby_2d25um_grayscale.raw").unlink()
    (root / "317" / "Kirby" / "Kirby_2d25um_grayscale_filtered.raw").unlink()
    (root / "317" / "Kirby").rmdir()
    (root / "151" / "Sample3_raw.raw").unlink()
    with pytest.raises(DataError, match=r"splits\.test_rock names rock \['Leopard'\], which no volume has"):
        microct_volumes.read_drp_layout(root)
    with pytest.raises(DataError, match=r"expected the folders 317/ .* and 151/"):
        microct_volumes.read_drp_layout(tmp_path)
    # through the study: the paper's data source reads this layout and stops on what is wrong, before any work
    with pytest.raises(DataError, match=r"splits\.test_rock names rock \['Leopard'\]"):
        study.data(_cfg(root, source="drp317_151"))


def test_the_paper_preset_without_data_root_names_the_dataset_and_its_layout():
    cfg = labkit.configure("dinov2_microct", "paper", {})
    assert cfg.data_source == "drp317_151" and cfg.data_root is None
    with pytest.raises(
        ParameterError,
        match=r"(?s)parameter 'data_root' is not set.*project 317.*digitalrocksportal\.org/projects/317.*project 151.*"
        r"digitalrocksportal\.org/projects/151"
        r".*317/<Sandstone>/<Prefix>_2d25um_grayscale\.raw.*151/<Sample>_raw\.raw",
    ):
        study.data(cfg)
    with pytest.raises(ParameterError, match=r"(?s)data_source is 'volumes'.*manifest\.yaml.*splits"):
        study.data(labkit.configure("dinov2_microct", "smoke", {"data_source": "volumes"}))


def test_a_shared_real_label_volume_through_a_manifest(tmp_path, shared_data):
    """The 3-phase carbonate label volume cropped from DRP project 151 (GPL-3.0 repository, read in place, never
    copied) with its .raw_header, listed in a manifest as labels; the grey images are the kit's CT model of it."""
    labels = shared_data / "rock_microct" / "contactangle_carbonate" / "Sample1_subvolume.raw"
    if not labels.is_file():
        pytest.skip("rock_microct samples absent")
    phases = microct.load_volume(labels)  # (126, 97, 105): brine 0, rock 1, oil 2
    root = tmp_path / "data"
    root.mkdir()
    vols = []
    for sc in ("lab", "sync"):
        mat = microct.materials_for_phases(phases, mineral="calcite", micro="micrite", pore="brine")
        grey = microct.ct_forward(mat, "benchtop_80kv" if sc == "lab" else "synchrotron_25kev", seed=0)
        tifffile.imwrite(root / f"{sc}.tif", grey, photometric="minisblack")
        for rock in ("a", "b", "c"):
            vols.append(
                {
                    "name": f"{rock}_{sc}",
                    "image": f"{sc}.tif",
                    "labels": str(labels),
                    "rock": rock,
                    "scanner": sc,
                    "voxel_size_um": 2.0,
                }
            )
    import yaml

    doc = {
        "phases": ["brine", "rock", "oil"],
        "volumes": vols,
        "splits": {"train_rocks": ["a", "b"], "test_rock": "c", "train_scanners": ["lab"], "test_scanner": "sync"},
    }
    (root / "manifest.yaml").write_text(yaml.safe_dump(doc))
    m = microct_volumes.read_manifest(root)
    ds = microct_volumes.load_slices(m, blocks=3, slices_per_block=2, step=5, size=96)
    assert ds.phases == ("brine", "rock", "oil") and ds.images.shape == (6 * 6, 96, 96)
    assert np.array_equal(ds.masks[:2], phases[[0, 5], 0:96, 4:100])
    counts = np.bincount(phases.ravel())
    assert counts.tolist() == [178142, 1042772, 62396]
