"""The micro-CT slices: checks the spec cannot express, then simulated slices or real volumes (``data_source``),
cut per seed, and their splits (trained on two rocks and scanners; judged in distribution, on a third rock and on a
third scanner)."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from labkit.core.arms import Arm, arm_labels
from labkit.core.errors import ParameterError
from labkit.core.params import check_data_root
from labkit.data import microct
from labkit.data.layouts_microct import LAYOUTS
from labkit.data.microct import PHASES

NAME = "dinov2_microct"
#: The rows the claims compare: each ViT kind (``backbones``), the ResNet + LoRA, the UNet from scratch and the
#: classical pipelines; the random-init ViT is the control (a floor: what pretraining buys).
ARMS = (
    Arm("dinov2", "DINOv2 (pretrained)", "C0"),
    Arm("random", "ViT, random init (control)", "C7", reference=True),
    Arm("ssl", "labkit stand-in ViT (MAE, shipped)", "C1"),
    Arm("resnet", "ResNet + LoRA (pretrained)", "C2"),
    Arm("unet", "UNet from scratch", "C3"),
    Arm("classical", "classical pipelines", "C4"),
)
VIT_KINDS = ("dinov2", "random", "ssl")
BACKBONE_LABELS = {kind: label for kind, label in arm_labels(ARMS).items() if kind in VIT_KINDS}
NUM_PHASES = len(PHASES)
SPLITS = ("in_distribution", "ood_rock", "ood_scanner")


REAL_SOURCES = tuple(LAYOUTS)


def _real_manifest(cfg):
    """The manifest of a real data source (``volumes``: data_root/manifest.yaml; ``drp317_151``: the Digital
    Rocks Portal layout); DataError naming the file for anything wrong."""
    from labkit.data import microct_volumes

    if cfg.data_source == "volumes":
        return microct_volumes.read_manifest(cfg.data_root)
    return microct_volumes.read_drp_layout(cfg.data_root)


def check_data_source(cfg) -> None:
    """Before any work: a real data source needs an existing ``data_root`` holding a readable manifest (files
    present, raw sizes, TIFF pages, label shapes, split: each a DataError naming the file), volumes deep and wide
    enough for the slicing parameters (the error gives the largest values the data allow), and ``phases`` matching
    its label volumes' values (:func:`labkit.data.microct_volumes.check_phases`); simulated data take no
    ``data_root``."""
    if check_data_root(cfg, LAYOUTS) is None:
        return
    from labkit.data import microct_volumes

    manifest = _real_manifest(cfg)
    shapes = microct_volumes.check_manifest(manifest)
    check_slicing(manifest, shapes, cfg)
    microct_volumes.check_phases(manifest)


def check_slicing(manifest, shapes, cfg) -> None:
    """Whether every volume of ``manifest`` (its ``shapes``) supplies the slices the parameters ask for: an error
    naming the volume and the largest sizes the data allow (:func:`labkit.data.microct_volumes.check_slicing`)."""
    from labkit.data import microct_volumes

    microct_volumes.check_slicing(
        manifest,
        shapes,
        blocks=cfg.samples_per_rock,
        per_block=cfg.slices_per_sample,
        step=cfg.slice_step,
        size=cfg.slice_size,
    )


def phases_of(cfg) -> tuple[str, ...]:
    """The phase names the study segments: the manifest's ``phases`` for real volumes (every network gets one
    output per phase, every table and legend one column or entry), the simulator's otherwise."""
    if cfg.data_source in REAL_SOURCES and cfg.data_root:
        return tuple(_real_manifest(cfg).phases)
    return PHASES  # simulated, or a plan made without the data (the paper's three phases)


def check_weights(cfg) -> None:
    """Before any work (a weights file that does not exist is refused by the spec already)."""
    if cfg.resnet_weights == "random":
        raise ParameterError(
            "parameter 'resnet_weights' is 'random': the ResNet + LoRA row is the paper's "
            "pretrained ResNet; the random-init ResNet is its own baseline row"
        )


def check_config(cfg) -> None:
    """Checks across parameters that the spec cannot express; each error names the parameter."""

    def need(ok: bool, msg: str):
        if not ok:
            raise ParameterError(msg)

    need(len(set(cfg.rock_types)) == len(cfg.rock_types), f"parameter 'rock_types' repeats a rock: {cfg.rock_types}")
    need(len(set(cfg.scanners)) == len(cfg.scanners), f"parameter 'scanners' repeats a scanner: {cfg.scanners}")
    for name in ("seg_train_rocks",):
        extra = [r for r in cfg[name] if r not in cfg.rock_types]
        need(not extra, f"parameter '{name}' names {extra}, which are not in rock_types {cfg.rock_types}")
    need(
        cfg.seg_test_rock in cfg.rock_types,
        f"parameter 'seg_test_rock' {cfg.seg_test_rock!r} is not in rock_types {cfg.rock_types}",
    )
    need(
        cfg.seg_test_rock not in cfg.seg_train_rocks,
        f"parameter 'seg_test_rock' {cfg.seg_test_rock!r} is also a training rock (seg_train_rocks): "
        "the out-of-distribution split would not be out of distribution",
    )
    extra = [s for s in cfg.seg_train_scanners if s not in cfg.scanners]
    need(not extra, f"parameter 'seg_train_scanners' names {extra}, which are not in scanners {cfg.scanners}")
    need(
        cfg.seg_test_scanner in cfg.scanners,
        f"parameter 'seg_test_scanner' {cfg.seg_test_scanner!r} is not in scanners {cfg.scanners}",
    )
    need(
        cfg.seg_test_scanner not in cfg.seg_train_scanners,
        f"parameter 'seg_test_scanner' {cfg.seg_test_scanner!r} is also a training scanner (seg_train_scanners)",
    )
    need(
        cfg.lora_epochs <= cfg.head_epochs,
        f"parameter 'lora_epochs' {cfg.lora_epochs} is more than head_epochs {cfg.head_epochs}: a LoRA arm tunes its "
        "adapters in the last lora_epochs of the head_epochs passes every compared head gets (the same budget)",
    )
    if cfg.resize_policy in ("pad", "error") and cfg.img_size is not None and cfg.img_size != cfg.slice_size:
        raise ParameterError(
            f"parameter 'img_size' {cfg.img_size} differs from slice_size {cfg.slice_size}, but "
            f"resize_policy {cfg.resize_policy!r} does not resample; use resize_policy 'resize' "
            "or img_size null"
        )


def make_data(cfg, seed: int) -> microct.MicroCTSlices:
    """All rocks x all scanners, ``samples_per_rock`` rock samples each, cut into slices. Real volumes
    (data_source volumes or drp317_151) give the same structure: each volume's depth is cut into
    ``samples_per_rock`` blocks of ``slices_per_sample`` slices ``slice_step`` apart, centre-cropped to
    ``slice_size``; the rocks, scanners and split are the manifest's, and the slices are the same for every seed."""
    if cfg.data_source in REAL_SOURCES:
        from labkit.data import microct_volumes

        return microct_volumes.load_slices(
            _real_manifest(cfg),
            blocks=cfg.samples_per_rock,
            slices_per_block=cfg.slices_per_sample,
            step=cfg.slice_step,
            size=cfg.slice_size,
            progress=bool(cfg.get("progress")),
        )
    return microct.simulate_slices(
        tuple(cfg.rock_types),
        tuple(cfg.scanners),
        samples_per_rock=cfg.samples_per_rock,
        slices_per_sample=cfg.slices_per_sample,
        size=cfg.slice_size,
        slice_step=cfg.slice_step,
        grain_scale=cfg.grain_scale,
        seed=1000 + seed,
        progress=bool(cfg.get("progress")),
    )


# The parameters the slices depend on (every grid task reads them; see task_settings)
DATA_KEYS = (
    "data_source",
    "data_root",
    "rock_types",
    "scanners",
    "samples_per_rock",
    "slices_per_sample",
    "slice_step",
    "slice_size",
    "grain_scale",
    "seg_train_rocks",
    "seg_test_rock",
    "seg_train_scanners",
    "seg_test_scanner",
)


def plain(value):
    """A parameter value as JSON has it (tuples as lists)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def data_settings(cfg) -> dict[str, Any]:
    """The JSON-able data parameters (``data_root`` made absolute, so a worker elsewhere finds it)."""
    from pathlib import Path

    out = {k: plain(cfg[k]) for k in DATA_KEYS}
    if out["data_root"]:
        out["data_root"] = str(Path(out["data_root"]).expanduser().resolve())
    return out


@functools.lru_cache(maxsize=2)
def _cached_data(key: str) -> microct.MicroCTSlices:
    from labkit.core.params import Config

    settings = json.loads(key)
    seed = settings.pop("_seed")
    return make_data(Config(NAME, "data", settings), seed)


def seed_data(cfg, seed: int) -> microct.MicroCTSlices:
    """The slices of ``seed`` (real volumes: the same for every seed), kept for the next tasks of the same
    seed in this process (a seed's tasks share them; nothing changes them)."""
    settings = data_settings(cfg)
    settings["_seed"] = int(seed) if settings["data_source"] == "simulated" else 0
    return _cached_data(json.dumps(settings, sort_keys=True))


def data_inputs(cfg) -> dict[str, str]:
    """Digests of the real volumes the grid reads (part of every task's fingerprint). Simulated slices are a
    function of the data settings in every task's parameters and of the simulator's code, both in it already."""
    from pathlib import Path

    from labkit.core.grid import file_digest

    if cfg.data_source == "simulated":
        return {}
    return {"data_root": file_digest(Path(cfg.data_root).expanduser())}


def splits(cfg, ds: microct.MicroCTSlices) -> dict[str, np.ndarray]:
    """Indices of every split. The last rock sample (geometry) of each rock is held out."""
    test_geom = [cfg.samples_per_rock - 1]
    train_geoms = list(range(cfg.samples_per_rock - 1))
    plan = ds.split_plan or {}  # real volumes: the manifest's split; simulated: the parameters
    tr_rocks, te_rock = plan.get("train_rocks", cfg.seg_train_rocks), plan.get("test_rock", cfg.seg_test_rock)
    tr_sc, te_sc = plan.get("train_scanners", cfg.seg_train_scanners), plan.get("test_scanner", cfg.seg_test_scanner)
    return {
        "cls_train": np.flatnonzero(ds.where(geometries=train_geoms)),
        "cls_test": np.flatnonzero(ds.where(geometries=test_geom)),
        "seg_train": np.flatnonzero(ds.where(rocks=tr_rocks, scanners=tr_sc, geometries=train_geoms)),
        "in_distribution": np.flatnonzero(ds.where(rocks=tr_rocks, scanners=tr_sc, geometries=test_geom)),
        "ood_rock": np.flatnonzero(ds.where(rocks=[te_rock], scanners=tr_sc)),
        "ood_scanner": np.flatnonzero(ds.where(rocks=tr_rocks, scanners=[te_sc], geometries=test_geom)),
    }


def evaluated_splits(sp: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The evaluation splits that hold slices: on data with one scanner per rock (the Digital Rocks Portal
    layouts) no training rock is imaged on the test scanner, and ``ood_scanner`` is empty."""
    return tuple(s for s in SPLITS if len(sp[s]))


def pca_indices(ds: microct.MicroCTSlices) -> np.ndarray:
    """One slice per rock type (its first scanner, first sample): the slices of the patch-PCA figure. A rock
    need not have every scanner (the Digital Rocks Portal layout images each project with one)."""
    firsts = [np.flatnonzero(ds.rock == r) for r in range(len(ds.rock_types))]
    return np.array([idx[np.argmin(ds.scanner[idx])] for idx in firsts])


def data(cfg) -> microct.MicroCTSlices:
    """Check every parameter and input before any work (the data source and its files, the weights files, the
    parameters together, an image side the patch grid cannot take), then the first seed's slices (the figures'
    and the data table's; the grid's first tasks, run serially, reuse them)."""
    from labkit.studies.dinov2_microct.backbones import vit_input_size

    check_data_source(cfg)
    check_weights(cfg)
    check_config(cfg)
    vit_input_size(cfg)  # an image side the patch grid cannot take fails here, before any work
    return seed_data(cfg, cfg.seeds[0])
