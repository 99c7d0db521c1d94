"""Real micro-CT volumes as the slice sets of :mod:`labkit.data.microct`: your own volumes listed in a
``manifest.yaml``, and the Digital Rocks Portal layouts of projects 317 and 151.

A manifest lists, per volume, the grey image file (a TIFF stack, a raw volume with its shape, dtype and byte
order in the manifest or in a header next to it, a MetaImage ``.mhd``, a MATLAB ``.mat`` or a folder of
slices), its label volume (integer phases in the same formats), the rock type, the scanner or dataset and the
voxel size; and the split: two (or more) training rocks and a test rock, training scanners and a test scanner::

    phases: [pore, mineral, microporous]        # optional; label ids 0, 1, 2 in this order
    splits:
      train_rocks: [berea, estaillades]
      test_rock: bentheimer
      train_scanners: [zeiss_versa, nikon_xth]
      test_scanner: synchrotron_tomcat
    volumes:
      - name: berea_zeiss
        image: berea/zeiss_grey.tif
        labels: berea/zeiss_labels.tif
        rock: berea
        scanner: zeiss_versa
        voxel_size_um: 2.25
      - name: berea_nikon
        image: {file: berea/nikon_grey.raw, shape: [200, 400, 400], dtype: uint16, byte_order: little}
        labels: {file: berea/nikon_labels.raw, shape: [200, 400, 400], dtype: uint8, map: {0: 0, 255: 1}}
        ...

Every problem is a :class:`labkit.core.errors.DataError` naming the file and what is wrong, raised by
:func:`read_manifest` / :func:`check_manifest` from headers and file sizes alone (before any volume is read),
or by :func:`load_slices` for what needs the voxels (labels outside the declared phases).

Volumes become slices the way :func:`labkit.data.microct.simulate_slices` cuts simulated ones: each volume's
depth is divided into ``blocks`` contiguous blocks (the study's ``samples_per_rock``; the last block is held out
for testing, like the last simulated rock sample), ``slices_per_block`` slices ``step`` voxels apart are taken
from each block, centre-cropped to ``size`` x ``size`` and normalised per volume. Raw volumes are memory-mapped,
so a 1000^3 volume costs only the slices taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labkit.core.errors import DataError
from labkit.data import microct
from labkit.data.microct import PHASES, MicroCTSlices

MANIFEST_NAME = "manifest.yaml"
SPLIT_KEYS = ("train_rocks", "test_rock", "train_scanners", "test_scanner")
_BYTE_ORDERS = {"little": "<", "big": ">", "<": "<", ">": ">", "=": "=", "native": "="}

# Digital Rocks Portal project 317 ("Eleven Sandstones", Neumann et al.): one folder per sandstone, three raw
# volumes each (1000 x 1000 x 1000 uint8, 2.25 um voxels, no header shipped): <Prefix>_2d25um_grayscale.raw,
# <Prefix>_2d25um_grayscale_filtered.raw, <Prefix>_2d25um_binary.raw (0 pore, non-zero grain).
DRP317_FOLDERS = {
    "Berea": "Berea",
    "Bandera Brown": "BanderaBrown",
    "Bandera Gray": "BanderaGray",
    "Bentheimer": "Bentheimer",
    "Berea Sister Gray": "BSG",
    "Berea Upper Gray": "BUG",
    "Buff Berea": "BB",
    "CastleGate": "CastleGate",
    "Kirby": "Kirby",
    "Leopard": "Leopard",
    "Parker": "Parker",
}
DRP317_SHAPE = (1000, 1000, 1000)
DRP317_VOXEL_UM = 2.25
DRP317_DATASET = "DRP-317"
DRP151_DATASET = "DRP-151"
# The paper trained its segmenters on two sandstones and tested on a third without naming them; these
# defaults are the kit's choice (override with data_root/splits.yaml).
DRP_DEFAULT_SPLITS = {
    "train_rocks": ["Berea", "Bentheimer"],
    "test_rock": "Kirby",
    "train_scanners": [DRP317_DATASET],
    "test_scanner": DRP151_DATASET,
}


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumeFile:
    """One volume file and what is needed to read it."""

    path: Path
    shape: tuple[int, int, int] | None = None  # raw volumes without a header: (z, y, x)
    dtype: str | None = None
    byte_order: str | None = None
    variable: str | None = None  # .mat: the variable holding the volume
    value_map: dict[int, int] | None = None  # labels: stored value -> phase id

    @property
    def kind(self) -> str:
        if self.path.is_dir():
            return "folder"
        suf = self.path.suffix.lower()
        if suf in (".tif", ".tiff"):
            return "tiff"
        if suf == ".mat":
            return "mat"
        if suf == ".mhd":
            return "mhd"
        if suf in microct.RAW_SUFFIXES:
            return "raw"
        raise DataError(f"{self.path}: unknown volume format {suf!r} (tif, raw + shape/dtype or header, mhd, mat)")


@dataclass(frozen=True)
class VolumeEntry:
    name: str
    image: VolumeFile
    labels: VolumeFile
    rock: str
    scanner: str
    voxel_size_um: float | None = None


@dataclass
class Manifest:
    """The volumes of a real data source, their phases and the rock / scanner split."""

    source: Path  # the manifest file, or the data_root of a published layout
    volumes: list[VolumeEntry]
    phases: tuple[str, ...] = PHASES
    splits: dict = field(default_factory=dict)

    @property
    def rocks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.rock for v in self.volumes))

    @property
    def scanners(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.scanner for v in self.volumes))


def _file_entry(raw, base: Path, where: str, *, labels: bool) -> VolumeFile:
    if isinstance(raw, str):
        raw = {"file": raw}
    if not isinstance(raw, Mapping) or "file" not in raw:
        raise DataError(f"{where}: expected a file name or a mapping with 'file', got {raw!r}")
    known = {"file", "shape", "dtype", "byte_order", "variable"} | ({"map"} if labels else set())
    extra = sorted(set(raw) - known)
    if extra:
        raise DataError(f"{where}: unknown keys {extra} (known: {sorted(known)})")
    path = Path(str(raw["file"]))
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise DataError(f"{where}: file {path} does not exist")
    shape = raw.get("shape")
    if shape is not None:
        if not isinstance(shape, Sequence) or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise DataError(f"{where}: shape must be three positive integers [z, y, x], got {shape!r}")
        shape = tuple(int(s) for s in shape)
    dtype = raw.get("dtype")
    if dtype is not None:
        try:
            dtype = np.dtype(str(dtype)).name
        except TypeError as e:
            raise DataError(f"{where}: dtype {raw['dtype']!r} is not a numpy dtype ({e})") from e
    order = raw.get("byte_order")
    if order is not None:
        if str(order).lower() not in _BYTE_ORDERS:
            raise DataError(f"{where}: byte_order must be little or big, got {order!r}")
        order = _BYTE_ORDERS[str(order).lower()]
    value_map = raw.get("map")
    if value_map is not None:
        if not isinstance(value_map, Mapping) or not all(
            isinstance(k, int) and isinstance(v, int) for k, v in value_map.items()
        ):
            raise DataError(f"{where}: map must be {{stored value: phase id}} with integers, got {value_map!r}")
        value_map = {int(k): int(v) for k, v in value_map.items()}
    return VolumeFile(path, shape, dtype, order, raw.get("variable"), value_map)


def read_manifest(root: str | Path) -> Manifest:
    """Parse and check ``root/manifest.yaml`` (structure, files, split); see the module docstring."""
    import yaml

    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: no {MANIFEST_NAME} in data_root {root} (data_source 'volumes' lists the volumes there; "
            "see docs/data/dinov2_microct.md)"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(doc, Mapping) or not isinstance(doc.get("volumes"), list) or not doc["volumes"]:
        raise DataError(f"{path}: expected a mapping with a non-empty 'volumes' list")
    phases = doc.get("phases", list(PHASES))
    if not isinstance(phases, list) or not phases or not all(isinstance(p, str) for p in phases):
        raise DataError(f"{path}: 'phases' must be a list of phase names (label ids 0, 1, ...), got {phases!r}")
    volumes, names = [], set()
    for i, v in enumerate(doc["volumes"]):
        where = f"{path}: volume {i}" + (f" ({v.get('name')})" if isinstance(v, Mapping) and v.get("name") else "")
        if not isinstance(v, Mapping):
            raise DataError(f"{where}: expected a mapping, got {v!r}")
        missing = [k for k in ("image", "labels", "rock", "scanner") if k not in v]
        if missing:
            raise DataError(f"{where}: missing {missing} (each volume needs image, labels, rock, scanner)")
        name = str(v.get("name", f"volume_{i}"))
        if name in names:
            raise DataError(f"{where}: name {name!r} is used twice")
        names.add(name)
        voxel = v.get("voxel_size_um")
        if voxel is not None and (not isinstance(voxel, int | float) or voxel <= 0):
            raise DataError(f"{where}: voxel_size_um must be a positive number, got {voxel!r}")
        volumes.append(
            VolumeEntry(
                name,
                _file_entry(v["image"], root, f"{where} image", labels=False),
                _file_entry(v["labels"], root, f"{where} labels", labels=True),
                str(v["rock"]),
                str(v["scanner"]),
                None if voxel is None else float(voxel),
            )
        )
    manifest = Manifest(path, volumes, tuple(phases), dict(doc.get("splits") or {}))
    check_splits(manifest)
    return manifest


def check_splits(manifest: Manifest, *, full_grid: bool = True) -> None:
    """The split names rocks and scanners that some volume has; train and test differ; with ``full_grid``
    every rock has a volume from every scanner (the study images each rock with each scanner)."""
    where, sp = manifest.source, manifest.splits
    missing = [k for k in SPLIT_KEYS if k not in sp]
    if missing:
        raise DataError(
            f"{where}: 'splits' lacks {missing}; give train_rocks (list), test_rock, train_scanners (list) "
            "and test_scanner"
        )
    for key in ("train_rocks", "train_scanners"):
        if isinstance(sp[key], str) or not isinstance(sp[key], list) or not sp[key]:
            raise DataError(f"{where}: splits.{key} must be a non-empty list, got {sp[key]!r}")
    for key, known, what in (
        ("train_rocks", manifest.rocks, "rock"),
        ("test_rock", manifest.rocks, "rock"),
        ("train_scanners", manifest.scanners, "scanner"),
        ("test_scanner", manifest.scanners, "scanner"),
    ):
        named = sp[key] if isinstance(sp[key], list) else [sp[key]]
        absent = [str(n) for n in named if str(n) not in known]
        if absent:
            raise DataError(
                f"{where}: splits.{key} names {what} {absent}, which no volume has (volumes have {what}s {list(known)})"
            )
    if sp["test_rock"] in sp["train_rocks"]:
        raise DataError(f"{where}: splits.test_rock {sp['test_rock']!r} is also a training rock")
    if sp["test_scanner"] in sp["train_scanners"]:
        raise DataError(f"{where}: splits.test_scanner {sp['test_scanner']!r} is also a training scanner")
    if full_grid:
        have = {(v.rock, v.scanner) for v in manifest.volumes}
        gaps = [(r, s) for r in manifest.rocks for s in manifest.scanners if (r, s) not in have]
        if gaps:
            raise DataError(
                f"{where}: no volume for rock x scanner {gaps[:5]}; the study images every rock with every "
                "scanner (slices per rock and scanner, the out-of-distribution scanner split), so list one for each"
            )


# --------------------------------------------------------------------------------------------------
# Reading volumes lazily
# --------------------------------------------------------------------------------------------------
def _raw_layout(vf: VolumeFile) -> tuple[Path, tuple[int, int, int], np.dtype]:
    """(data file, shape, dtype with byte order) of a raw or .mhd volume; the file size must match."""
    return microct.raw_volume_layout(vf.path, vf.shape, vf.dtype, byte_order=vf.byte_order, given_by="the manifest")


def volume_shape(vf: VolumeFile) -> tuple[int, int, int]:
    """(Z, Y, X) of a volume file from its headers alone; a DataError names the file when it is inconsistent."""
    kind = vf.kind
    if kind in ("raw", "mhd"):
        return _raw_layout(vf)[1]
    if kind == "tiff":
        return microct.check_tiff_pages(vf.path)
    if kind == "mat":
        import scipy.io

        try:
            info = {name: shape for name, shape, _ in scipy.io.whosmat(vf.path)}
        except Exception as e:  # scipy raises many types for corrupt or v7.3 files
            raise DataError(f"{vf.path}: cannot read as a .mat file ({type(e).__name__}: {e})") from e
        three_d = [k for k, s in info.items() if len(s) == 3]
        var = vf.variable
        if var is None:
            if len(three_d) != 1:
                raise DataError(f"{vf.path}: found 3-D variables {three_d}; name one with 'variable' in the manifest")
            var = three_d[0]
        if var not in info:
            raise DataError(f"{vf.path}: no variable {var!r}; variables are {sorted(info)}")
        if len(info[var]) != 3:
            raise DataError(f"{vf.path}: variable {var!r} has shape {info[var]}, not a 3-D volume")
        return tuple(int(s) for s in info[var])
    return tuple(microct.read_slice_folder(vf.path).shape)


def open_volume(vf: VolumeFile):
    """The volume as an array indexable by slice; raw volumes are memory-mapped (read only)."""
    kind = vf.kind
    if kind in ("raw", "mhd"):
        path, shape, dt = _raw_layout(vf)
        return np.memmap(path, dtype=dt, mode="r", shape=shape)
    if kind == "tiff":
        return microct.read_tiff_volume(vf.path)
    if kind == "mat":
        return microct.read_mat_volume(vf.path, vf.variable)
    return microct.read_slice_folder(vf.path)


def check_manifest(manifest: Manifest) -> dict[str, tuple[int, int, int]]:
    """Every file readable from its headers, and each label volume the shape of its image. Returns the
    shape of each volume by name. Reads no voxels (so it runs before any work)."""
    shapes = {}
    for v in manifest.volumes:
        img = volume_shape(v.image)
        lab = volume_shape(v.labels)
        if img != lab:
            raise DataError(
                f"{v.labels.path}: label volume shape {lab} (z, y, x) differs from its image {v.image.path.name} "
                f"{img} (volume {v.name!r} in {manifest.source})"
            )
        shapes[v.name] = img
    return shapes


def check_slicing(
    manifest: Manifest, shapes: dict[str, tuple[int, int, int]], *, blocks: int, per_block: int, step: int, size: int
) -> None:
    """Before any work: every volume can supply ``blocks`` (``samples_per_rock``) blocks of ``per_block``
    (``slices_per_sample``) slices ``step`` (``slice_step``) apart, centre-cropped to ``size`` (``slice_size``). A
    DataError names the shallowest (narrowest) volume and the largest values of those parameters the data allow."""
    name = min(shapes, key=lambda k: shapes[k][0])
    depth = shapes[name][0]
    need = (per_block - 1) * step + 1
    if depth // blocks < need:
        path = next(v.image.path for v in manifest.volumes if v.name == name)
        options = []
        if depth // need >= 2:
            options.append(f"samples_per_rock {depth // need} (at slices_per_sample {per_block}, slice_step {step})")
        if depth // blocks >= 1:
            options.append(
                f"slices_per_sample {(depth // blocks - 1) // step + 1} (at samples_per_rock {blocks}, "
                f"slice_step {step})"
            )
        if per_block > 1 and (depth // blocks - 1) // (per_block - 1) >= 1:
            options.append(
                f"slice_step {(depth // blocks - 1) // (per_block - 1)} (at samples_per_rock {blocks}, "
                f"slices_per_sample {per_block})"
            )
        raise DataError(
            f"{path}: the shallowest volume ({name!r} in {manifest.source}) has {depth} slices; samples_per_rock "
            f"{blocks} blocks of slices_per_sample {per_block} slices slice_step {step} apart need "
            f"{blocks * need}. The data allow at most "
            + ("; or ".join(options) if options else "fewer blocks than the study needs (2)")
        )
    name = min(shapes, key=lambda k: min(shapes[k][1:]))
    side = min(shapes[name][1:])
    if side < size:
        path = next(v.image.path for v in manifest.volumes if v.name == name)
        raise DataError(
            f"{path}: the narrowest volume ({name!r} in {manifest.source}) has slices of {shapes[name][1]} x "
            f"{shapes[name][2]} pixels, smaller than slice_size {size}; the data allow at most slice_size {side}"
        )


def _block_indices(depth: int, blocks: int, per_block: int, step: int, where: Path) -> list[np.ndarray]:
    need = (per_block - 1) * step + 1
    length = depth // blocks
    if length < need:
        raise DataError(
            f"{where}: volume has {depth} slices; {blocks} blocks (samples_per_rock) of {per_block} slices "
            f"(slices_per_sample) {step} apart (slice_step) need {blocks * need}; lower those parameters"
        )
    return [b * length + np.arange(per_block) * step for b in range(blocks)]


def _crop(shape_yx: tuple[int, int], size: int, where: Path) -> tuple[slice, slice]:
    ny, nx = shape_yx
    if ny < size or nx < size:
        raise DataError(f"{where}: slices are {ny} x {nx} pixels, smaller than slice_size {size}; lower slice_size")
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    return slice(y0, y0 + size), slice(x0, x0 + size)


def label_values(labels, chunk_voxels: int = 1 << 24) -> np.ndarray:
    """The distinct values of a whole label volume, read a block of slices at a time (memory-mapped raw
    volumes are never loaded whole)."""
    if np.asarray(labels[:1]).dtype.kind not in "iub":
        return np.unique(np.asarray(labels[:1]))
    step = max(1, chunk_voxels // max(1, int(np.prod(labels.shape[1:]))))
    dtype = np.asarray(labels[:1]).dtype
    if dtype.kind in "ub" and dtype.itemsize <= 2:  # a histogram is ~10x faster than sorting
        counts = np.zeros(2 ** (8 * dtype.itemsize), np.int64)
        for z in range(0, labels.shape[0], step):
            counts += np.bincount(np.asarray(labels[z : z + step]).ravel().astype(np.intp), minlength=len(counts))
        return np.flatnonzero(counts).astype(dtype)
    seen = [np.unique(np.asarray(labels[z : z + step])) for z in range(0, labels.shape[0], step)]
    return np.unique(np.concatenate(seen))


_LABEL_VALUES: dict[tuple, np.ndarray] = {}  # label file (path, size, mtime, map) -> its phase ids: once per process


def mapped_label_values(vf: VolumeFile) -> np.ndarray:
    """The distinct phase ids of the whole label volume (its values through its ``map``), read once per process
    (not only the slices taken); a DataError names the file when a value is not an integer or not in its map."""
    st = vf.path.stat()
    key = (str(vf.path.resolve()), st.st_size, st.st_mtime_ns, vf.variable, tuple(sorted((vf.value_map or {}).items())))
    if key in _LABEL_VALUES:
        return _LABEL_VALUES[key]
    values = label_values(open_volume(vf))
    if values.dtype.kind not in "iub":
        raise DataError(f"{vf.path}: labels must be integers, got dtype {values.dtype}")
    if vf.value_map is not None:
        unmapped = [int(x) for x in values if int(x) not in vf.value_map]
        if unmapped:
            raise DataError(
                f"{vf.path}: label values {unmapped[:10]} are not in its map {vf.value_map} (outside the declared phases)"
            )
        values = np.unique([vf.value_map[int(x)] for x in values])
    _LABEL_VALUES[key] = np.asarray(values, np.int64)
    return _LABEL_VALUES[key]


def check_phases(manifest: Manifest) -> dict[str, np.ndarray]:
    """The manifest's ``phases`` match its label volumes: every label value (through its map) is a phase id
    0..len(phases)-1, and every declared phase occurs in some label volume (a phase that no volume holds would
    give the networks an output that can never be right and every table a column of nothing). Reads each label
    volume once (before any work); returns the phase ids of each volume by name. A DataError names the manifest,
    the phases and the values."""
    n = len(manifest.phases)
    found, seen = {}, set()
    for v in manifest.volumes:
        values = mapped_label_values(v.labels)
        outside = [int(x) for x in values if not 0 <= int(x) < n]
        if outside:
            raise DataError(
                f"{manifest.source}: volume {v.name!r} ({v.labels.path}) holds label values {outside[:10]} outside "
                f"the {n} declared phases {list(manifest.phases)} (ids 0..{n - 1}); its values are "
                f"{values.tolist()[:10]}: add the missing phases to 'phases' or map the values ('map' under labels)"
            )
        found[v.name] = values
        seen.update(int(x) for x in values)
    absent = [f"{i} ({p})" for i, p in enumerate(manifest.phases) if i not in seen]
    if absent:
        raise DataError(
            f"{manifest.source}: 'phases' lists {n} phases {list(manifest.phases)}, but no label volume holds "
            f"phase ids {absent}: the label volumes hold only the values {sorted(seen)}. List one phase per label "
            "value, in id order"
        )
    return found


def _check_label_volume(vf: VolumeFile, n_phases: int) -> None:
    """Every value of the whole label volume maps to a declared phase (not only the slices taken)."""
    microct.validate_phase_labels(mapped_label_values(vf), n_phases, name=str(vf.path), ignore_index=None)


def _labels_to_phases(labels: np.ndarray, vf: VolumeFile, n_phases: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise DataError(f"{vf.path}: labels must be integers, got dtype {labels.dtype}")
    if vf.value_map is not None:
        values = np.unique(labels)
        unmapped = [int(x) for x in values if int(x) not in vf.value_map]
        if unmapped:
            raise DataError(
                f"{vf.path}: label values {unmapped[:10]} are not in its map {vf.value_map} (outside the declared phases)"
            )
        lut = np.zeros(int(values.max()) + 1 if values.size else 1, np.int64)
        for k, val in vf.value_map.items():
            if 0 <= k < len(lut):
                lut[k] = val
        labels = lut[labels.astype(np.int64)]
    microct.validate_phase_labels(labels, n_phases, name=str(vf.path), ignore_index=None)
    return labels.astype(np.int64)


def load_slices(
    manifest: Manifest,
    *,
    blocks: int,
    slices_per_block: int,
    step: int,
    size: int,
    normalize: str = "percentile",
    progress: bool = False,
) -> MicroCTSlices:
    """Cut every volume of the manifest into slices (see the module docstring) as a :class:`MicroCTSlices`
    whose rocks and scanners are the manifest's and whose ``split_plan`` is its split."""
    shapes = check_manifest(manifest)
    rocks, scanners = manifest.rocks, manifest.scanners
    images, masks, raw, rock_idx, scan_idx, geom_idx = [], [], [], [], [], []
    it = manifest.volumes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="read volumes", leave=False)
    for v in it:
        shape = shapes[v.name]
        index = _block_indices(shape[0], blocks, slices_per_block, step, v.image.path)
        ys, xs = _crop(shape[1:], size, v.image.path)
        vol, lab = open_volume(v.image), open_volume(v.labels)
        _check_label_volume(v.labels, len(manifest.phases))
        take = np.concatenate(index)
        grey = np.asarray(vol[take][:, ys, xs])
        phases = _labels_to_phases(np.asarray(lab[take][:, ys, xs]), v.labels, len(manifest.phases))
        norm = microct.normalize_volume(grey, method=normalize, name=str(v.image.path))
        images.append(norm)
        masks.append(phases)
        raw.append(grey)
        rock_idx.append(np.full(len(take), rocks.index(v.rock)))
        scan_idx.append(np.full(len(take), scanners.index(v.scanner)))
        geom_idx.append(np.repeat(np.arange(blocks), slices_per_block))
    return MicroCTSlices(
        np.concatenate(images).astype(np.float32),
        np.concatenate(masks),
        np.concatenate(rock_idx),
        np.concatenate(scan_idx),
        np.concatenate(geom_idx),
        rocks,
        scanners,
        tuple(manifest.phases),
        np.concatenate([r.astype(np.float32) for r in raw]),
        {k: manifest.splits[k] for k in SPLIT_KEYS} if all(k in manifest.splits for k in SPLIT_KEYS) else None,
        str(manifest.source),
    )


# --------------------------------------------------------------------------------------------------
# Digital Rocks Portal layouts (projects 317 and 151)
# --------------------------------------------------------------------------------------------------
def _voxel_from_name(name: str) -> float | None:
    m = re.search(r"(\d+)d(\d+)um", name)
    return float(f"{m.group(1)}.{m.group(2)}") if m else None


def _drp317_volumes(folder: Path) -> list[VolumeEntry]:
    out = []
    for sub, prefix in DRP317_FOLDERS.items():
        d = folder / sub
        if not d.is_dir():
            continue
        grey = [d / f"{prefix}_2d25um_grayscale.raw", d / f"{prefix}_2d25um_grayscale_filtered.raw"]
        grey = [g for g in grey if g.is_file()]
        binary = d / f"{prefix}_2d25um_binary.raw"
        if not grey:
            raise DataError(f"{d}: holds no {prefix}_2d25um_grayscale.raw (nor _grayscale_filtered.raw)")
        if not binary.is_file():
            raise DataError(f"{d}: holds no {binary.name} (the segmented volume of {sub})")
        out.append(
            VolumeEntry(
                sub.replace(" ", ""),
                _drp317_file(grey[0]),
                _drp317_file(binary, value_map=None),
                prefix,
                DRP317_DATASET,
                DRP317_VOXEL_UM,
            )
        )
    return out


def _drp317_file(path: Path, value_map=None) -> VolumeFile:
    """Project 317 ships its raw volumes without headers: 1000^3 uint8. A header next to the file, or a cube
    of n^3 bytes (a crop of the published volume), is read as such."""
    if microct.find_raw_header(path) is not None:
        return VolumeFile(path, value_map=value_map)
    size = path.stat().st_size
    if size == int(np.prod(DRP317_SHAPE)):
        return VolumeFile(path, DRP317_SHAPE, "uint8", "<", value_map=value_map)
    n = round(size ** (1 / 3))
    for c in (n - 1, n, n + 1):
        if c > 0 and c**3 == size:
            return VolumeFile(path, (c, c, c), "uint8", "<", value_map=value_map)
    raise DataError(
        f"{path}: file has {size} bytes; a Digital Rocks Portal project 317 volume is {DRP317_SHAPE} uint8 "
        f"({int(np.prod(DRP317_SHAPE))} bytes). Put a header ({path.name}_header, {path.stem}.mhd) next to a "
        "cropped volume"
    )


def _drp151_volumes(folder: Path) -> list[VolumeEntry]:
    out = []
    greys = sorted(p for p in folder.rglob("*_raw.*") if p.suffix.lower() in (".raw", ".tif", ".tiff"))
    for g in greys:
        sample = g.name.split("_raw")[0]
        cands = sorted(
            p
            for p in g.parent.iterdir()
            if p.name.startswith(sample + "_")
            and p != g
            and re.search(r"seg|label|mask", p.name, re.I)
            and p.suffix.lower() in (".raw", ".tif", ".tiff")
        )
        if not cands:
            raise DataError(
                f"{g}: no segmented volume next to it (looked for {sample}_*seg*, *label*, *mask* .raw/.tif "
                f"in {g.parent})"
            )
        out.append(
            VolumeEntry(
                sample,
                VolumeFile(g),
                VolumeFile(cands[0]),
                sample,
                DRP151_DATASET,
                _voxel_from_name(g.name),
            )
        )
    return out


def _sorted_value_map(vf: VolumeFile) -> VolumeFile:
    """Project 151's phases come as the sorted distinct label values (mapped to 0, 1, 2 in that order, as the
    paper's code did); read from the label volume's first, middle and last slices."""
    vol = open_volume(VolumeFile(vf.path, vf.shape, vf.dtype, vf.byte_order, vf.variable))
    z = vol.shape[0]
    values = np.unique(np.asarray(vol[[0, z // 2, z - 1]]))
    if len(values) > len(PHASES):
        raise DataError(
            f"{vf.path}: label values {values.tolist()[:10]} are more than the {len(PHASES)} declared phases"
        )
    return VolumeFile(
        vf.path, vf.shape, vf.dtype, vf.byte_order, vf.variable, {int(v): i for i, v in enumerate(values)}
    )


def read_drp_layout(root: str | Path) -> Manifest:
    """The Digital Rocks Portal layout in ``root``: ``317/<Sandstone>/<Prefix>_2d25um_{grayscale,binary}.raw``
    and ``151/<Sample>_raw.raw`` with ``<Sample>_*seg*.raw`` (each 151 volume with a header next to it); see
    docs/data/dinov2_microct.md. The split comes from ``root/splits.yaml`` when present, else
    :data:`DRP_DEFAULT_SPLITS`."""
    import yaml

    root = Path(root)
    p317, p151 = root / "317", root / "151"
    if not p317.is_dir() or not p151.is_dir():
        raise DataError(
            f"{root}: expected the folders 317/ (Digital Rocks Portal project 317, one folder per sandstone) and "
            f"151/ (project 151, the carbonate samples); found {sorted(p.name for p in root.iterdir())}"
        )
    sand = _drp317_volumes(p317)
    if not sand:
        raise DataError(f"{p317}: holds none of the project 317 sandstone folders {list(DRP317_FOLDERS)}")
    carb = _drp151_volumes(p151)
    if not carb:
        raise DataError(f"{p151}: holds no <Sample>_raw.raw volume (project 151)")
    sand = [VolumeEntry(v.name, v.image, _binary_map(v.labels), v.rock, v.scanner, v.voxel_size_um) for v in sand]
    carb = [VolumeEntry(v.name, v.image, _sorted_value_map(v.labels), v.rock, v.scanner, v.voxel_size_um) for v in carb]
    splits = dict(DRP_DEFAULT_SPLITS)
    if (root / "splits.yaml").is_file():
        splits.update(yaml.safe_load((root / "splits.yaml").read_text()) or {})
    manifest = Manifest(root, sand + carb, PHASES, splits)
    check_splits(manifest, full_grid=False)
    return manifest


def _binary_map(vf: VolumeFile) -> VolumeFile:
    """Project 317's binary volumes: 0 pore, non-zero (1 or 255) grain -> phases 0 pore, 1 mineral."""
    shape = vf.shape or volume_shape(VolumeFile(vf.path))
    return VolumeFile(vf.path, shape, "uint8", "<", None, {0: 0, 1: 1, 255: 1})
