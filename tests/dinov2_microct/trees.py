"""Small fixture trees in the exact layouts the micro-CT loaders read: a manifest.yaml with every volume
format (TIFF stack, raw + pore-scale header, raw with shape/dtype/byte order in the manifest, MetaImage .mhd,
MATLAB .mat), and the Digital Rocks Portal layout of projects 317 and 151. Grey values come from the kit's
CT forward model of simulated rocks, so the study has real signal to learn on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import tifffile
import yaml

from labkit.data import microct

# manifest rock name -> simulated microstructure; manifest scanner name -> simulated scanner physics
ROCKS = {"berea": "well_sorted_sandstone", "estaillades": "vuggy_carbonate", "wacke": "poorly_sorted_sandstone"}
SCANNERS = {"zeiss_versa": "benchtop_80kv", "nikon_xth": "industrial_140kv", "tomcat": "synchrotron_25kev"}
SPLITS = {
    "train_rocks": ["berea", "estaillades"],
    "test_rock": "wacke",
    "train_scanners": ["zeiss_versa", "nikon_xth"],
    "test_scanner": "tomcat",
}
# the format each (rock, scanner) volume is written in: every format appears, for images and labels
FORMATS = {
    ("berea", "zeiss_versa"): "tiff",
    ("berea", "nikon_xth"): "raw_header",
    ("berea", "tomcat"): "raw_manifest",
    ("estaillades", "zeiss_versa"): "mhd",
    ("estaillades", "nikon_xth"): "mat",
    ("estaillades", "tomcat"): "tiff",
    ("wacke", "zeiss_versa"): "raw_manifest",
    ("wacke", "nikon_xth"): "mhd",
    ("wacke", "tomcat"): "raw_header",
}


def simulated_pair(rock: str, scanner: str, shape=(20, 60, 60), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint16 or uint8, phases uint8) of one simulated rock sample imaged by one scanner."""
    rng = np.random.default_rng(seed)
    mat = microct.simulate_rock(ROCKS[rock], shape, grain_scale=0.6, seed=rng)
    grey = microct.ct_forward(mat, SCANNERS[scanner], seed=rng)
    return grey, microct.material_phases(mat).astype(np.uint8)


def write_pore_scale_header(path: Path, shape_zyx, voxel: float = 2.0) -> None:
    nz, ny, nx = shape_zyx
    path.write_text(f"Nxyz\ndxX0\n{nx} {ny} {nz}\n{voxel} {voxel} {voxel}\n0 0 0\n\nComments:\n written by the tests\n")


def add_header_dtype(path: Path, dtype: str) -> None:
    path.write_text(path.read_text().replace("0 0 0\n", f"0 0 0\ndtype {dtype}\n", 1))


def write_mhd(path: Path, data_name: str, shape_zyx, dtype, big_endian: bool = False) -> None:
    nz, ny, nx = shape_zyx
    et = {"uint8": "MET_UCHAR", "uint16": "MET_USHORT"}[np.dtype(dtype).name]
    path.write_text(
        "ObjectType = Image\nNDims = 3\n"
        f"DimSize = {nx} {ny} {nz}\nElementType = {et}\nElementSpacing = 2.25 2.25 2.25\n"
        f"BinaryDataByteOrderMSB = {'True' if big_endian else 'False'}\nElementDataFile = {data_name}\n"
    )


def write_volume(folder: Path, stem: str, vol: np.ndarray, fmt: str) -> dict | str:
    """Write ``vol`` in ``fmt``; returns the manifest entry for it (a file name or a mapping)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "tiff":
        tifffile.imwrite(folder / f"{stem}.tif", vol, photometric="minisblack")
        return f"{folder.name}/{stem}.tif"
    if fmt == "raw_header":
        vol.tofile(folder / f"{stem}.raw")
        write_pore_scale_header(folder / f"{stem}.raw_header", vol.shape)
        if vol.dtype != np.uint8:  # the pore-scale header is uint8 unless it says otherwise
            add_header_dtype(folder / f"{stem}.raw_header", vol.dtype.name)
        return f"{folder.name}/{stem}.raw"
    if fmt == "raw_manifest":
        vol.astype(vol.dtype.newbyteorder(">")).tofile(folder / f"{stem}.raw")
        return {
            "file": f"{folder.name}/{stem}.raw",
            "shape": list(vol.shape),
            "dtype": vol.dtype.name,
            "byte_order": "big",
        }
    if fmt == "mhd":
        vol.tofile(folder / f"{stem}.img")
        write_mhd(folder / f"{stem}.mhd", f"{stem}.img", vol.shape, vol.dtype)
        return f"{folder.name}/{stem}.mhd"
    if fmt == "mat":
        scipy.io.savemat(folder / f"{stem}.mat", {"vol": vol})
        return {"file": f"{folder.name}/{stem}.mat", "variable": "vol"}
    raise ValueError(fmt)


def write_manifest_tree(root: Path, shape=(20, 60, 60)) -> tuple[Path, dict]:
    """A data_root with manifest.yaml listing 3 rocks x 3 scanners in every format. Returns the root and
    the written (grey, phases) per volume name."""
    root.mkdir(parents=True, exist_ok=True)
    volumes, written = [], {}
    for i, ((rock, scanner), fmt) in enumerate(FORMATS.items()):
        grey, phases = simulated_pair(rock, scanner, shape, seed=i)
        name = f"{rock}_{scanner}"
        written[name] = (grey, phases)
        volumes.append(
            {
                "name": name,
                "image": write_volume(root / rock, f"{scanner}_grey", grey, fmt),
                "labels": write_volume(root / rock, f"{scanner}_labels", phases, fmt),
                "rock": rock,
                "scanner": scanner,
                "voxel_size_um": 2.25,
            }
        )
    doc = {"phases": list(microct.PHASES), "splits": SPLITS, "volumes": volumes}
    (root / "manifest.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root, written


def edit_manifest(root: Path, fn) -> None:
    doc = yaml.safe_load((root / "manifest.yaml").read_text())
    fn(doc)
    (root / "manifest.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


DRP317 = {"Berea": "Berea", "Bentheimer": "Bentheimer", "Bandera Brown": "BanderaBrown", "Kirby": "Kirby"}


def write_drp_tree(root: Path, side: int = 24) -> Path:
    """Digital Rocks Portal layout: 317/<Sandstone>/<Prefix>_2d25um_{grayscale,grayscale_filtered,binary}.raw
    (headerless uint8 cubes, as published but side^3 instead of 1000^3; binary 0 pore / 255 grain) and
    151/<Sample>_raw.raw (uint16) with <Sample>_segmented.raw (values 0/128/255), each with a .raw_header."""
    for i, (folder, prefix) in enumerate(DRP317.items()):
        d = root / "317" / folder
        d.mkdir(parents=True)
        rng = np.random.default_rng(i)
        mat = microct.simulate_rock("well_sorted_sandstone", (side,) * 3, grain_scale=0.5, seed=rng)
        grey = microct.ct_forward(mat, "benchtop_80kv", seed=rng)  # uint8 (8-bit scanner)
        grey.tofile(d / f"{prefix}_2d25um_grayscale.raw")
        grey.tofile(d / f"{prefix}_2d25um_grayscale_filtered.raw")
        solid = (microct.material_phases(mat) != microct.PORE).astype(np.uint8) * 255
        solid.tofile(d / f"{prefix}_2d25um_binary.raw")
    d151 = root / "151"
    d151.mkdir(parents=True)
    for k in (1, 2, 3):
        rng = np.random.default_rng(10 + k)
        shape = (side, side + 4, side + 2)
        mat = microct.simulate_rock("vuggy_carbonate", shape, grain_scale=0.5, seed=rng)
        grey = microct.ct_forward(mat, "synchrotron_25kev", seed=rng)  # uint16
        grey.tofile(d151 / f"Sample{k}_raw.raw")
        write_pore_scale_header(d151 / f"Sample{k}_raw.raw_header", shape)
        add_header_dtype(d151 / f"Sample{k}_raw.raw_header", "uint16")
        seg = np.array([0, 255, 128], np.uint8)[microct.material_phases(mat)]
        seg.tofile(d151 / f"Sample{k}_segmented.raw")
        write_pore_scale_header(d151 / f"Sample{k}_segmented.raw_header", shape)
    return root
