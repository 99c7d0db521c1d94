"""DINOv2 probing of micro-CT rock images (Brondolo and Beaussant, arXiv 2407.18100), over labkit.

Data: simulated micro-CT of five rock types imaged by three scanners (:mod:`labkit.data.microct`).
Rock-type classification: kNN (cosine, temperature-weighted) and linear probes on class tokens.
Phase segmentation (pore / mineral / micro-porous), trained on two rocks and judged on held-out
samples of the same rocks (in distribution), on a third rock and on a third scanner (out of
distribution): linear and CNN heads on frozen patch tokens, kNN segmentation, LoRA fine-tuning,
classical pipelines (multi-Otsu, K-means, fuzzy C-means, random forest on a filter bank) and a
UNet from scratch.

Backbones (each a row, each judged the same way):

* ``dinov2``: DINOv2 with pretrained weights from :func:`labkit.models.backbones.create_backbone`;
  without weights every DINOv2 row and claim is "not evaluated: weights unavailable".
* ``random``: a ViT of architecture ``vit_arch`` randomly initialised (a control: what pretraining buys);
  ``microct_standin`` (the default) is the stand-in's own architecture.
* ``ssl``: labkit's stand-in for DINOv2, a small ViT pretrained by masked autoencoding on unlabeled
  simulated slices disjoint from every evaluation slice (:mod:`labkit.methods.microct_standin`),
  shipped as a checkpoint (``ssl_weights``); its analogue claims are judged only where it is "trained" (held-out
  MAE loss below 0.7 of the learner-free predictor's: each hidden patch filled with the mean of its image's visible
  pixels) and its "features learned" (its frozen linear head beats the ``random`` ViT of the same architecture on
  the held-out rock, paired over seeds).
* ``resnet``: a pretrained ResNet with LoRA (the paper's weaker baseline); pretrained weights only.

Every ViT meets the slices on a ``token_grid`` x ``token_grid`` token grid (input side = grid x patch),
and every head row sits beside the per-token oracle of its grid (the ceiling of any per-token head).
Classification probes (kNN and linear) run on the class token, the mean-pooled patch tokens and their
concatenation, centred on the training mean; a grey-level histogram and a random-init ResNet's pooled
features are baseline rows.

The experiment is a grid (:mod:`labkit.core.grid`) of one task per seed x part: the baselines (classical
pipelines, UNet, classification baselines, token-grid ceilings), the ResNet + LoRA, and each ViT (all of its
rows, so its tokens are extracted once). Which rows can run is decided once before the grid; records are
cached, a rerun computes only the missing tasks, and the tasks run serially, on a local process pool or on
Dask (parameters ``executor``, ``workers``, ``scheduler``).

Every gradient-trained row (frozen linear and CNN heads, LoRA rows, the UNet) records its budget (optimiser steps,
batch size, peak learning rate, schedule, trainable parameters; :func:`budgets_table`), and claims that compare
trained arms (3, 4, 4b) need the same steps, batch size and schedule on both sides.

The module returns DataFrames, dicts and figures; the notebook hands them to the Report.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from labkit.core.claims import BUDGET_KEYS, Check, Claim, Compare, Precondition, budget_record
from labkit.core.errors import DataError, ParameterError, WeightsUnavailableError
from labkit.core.grid import grid_task
from labkit.core.metrics import ConfusionMatrix, aggregate_over_seeds
from labkit.core.seeding import seed_everything
from labkit.data import microct
from labkit.data.microct import PHASES
from labkit.methods import baselines, probing
from labkit.models.vit_heads import BackboneSegmenter, count_parameters, create_head, grid_input_size, patch_size_of

STUDY = "dinov2_microct"
NUM_PHASES = len(PHASES)
BACKBONE_LABELS = {
    "dinov2": "DINOv2 (pretrained)",
    "random": "ViT, random init (control)",
    "ssl": "labkit stand-in ViT (MAE, shipped)",
}
# the random control's default architecture: the stand-in's (labkit.methods.microct_standin.ARCH)
STANDIN_ARCH = "microct_standin"
# classification baseline rows (features without a ViT)
HISTOGRAM = "grey-level histogram (32 bins)"
HISTOGRAM_BINS = 32
FEATURES = ("cls", "mean", "cls+mean")
FEATURE_LABELS = {"cls": "class token", "mean": "mean patch token", "cls+mean": "class + mean patch token"}
CEILING_GRIDS = (8, 12, 16, 24, 32, 48)
CLASSICAL = ("multi-Otsu", "K-means", "fuzzy C-means", "random forest (filter bank)")
SPLITS = ("in_distribution", "ood_rock", "ood_scanner")
# Claim thresholds (stated in each claim's evidence)
NEAR_PERFECT_ACCURACY = 0.95
CLUSTER_SILHOUETTE = 0.25
LORA_LIFT = 0.05
# Effects of interest (labkit.core.claims): the smallest difference that matters, from the paper where it says
PRACTICAL_MIOU = 0.02  # 2 mIoU points: where the paper gives no number for a comparison
PAPER_LORA_LIFT = {"linear": 0.81 - 0.67, "cnn": 0.82 - 0.75}  # the paper's frozen -> LoRA lifts
PAPER_LORA_OVER_UNET = 0.81 - 0.77  # the paper's LoRA linear head vs its UNet
THRESHOLD_SOURCE = "a threshold claim: refuted when the interval lies wholly below the threshold"
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper gives no number for this comparison)"


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
PAPER_DATA = (
    "the paper's data: Digital Rocks Portal project 317 ('Eleven Sandstones', Neumann et al., grey-scale and "
    "binary-segmented micro-CT volumes of eleven sandstones, of which the paper used ten; "
    "https://www.digitalrocksportal.org/projects/317) for rock-type classification and binary segmentation, and "
    "project 151 (three-phase segmented carbonate samples; https://www.digitalrocksportal.org/projects/151) for "
    "multi-class segmentation"
)
PAPER_LAYOUT = (
    "data_root/\n"
    "  317/<Sandstone>/<Prefix>_2d25um_grayscale.raw and <Prefix>_2d25um_binary.raw   (as published: 1000^3 "
    "uint8, e.g. 317/Bandera Brown/BanderaBrown_2d25um_grayscale.raw)\n"
    "  151/<Sample>_raw.raw (+ <Sample>_raw.raw_header or .mhd) with <Sample>_segmented.raw (+ header)\n"
    "  splits.yaml        optional: train_rocks, test_rock, train_scanners, test_scanner\n"
    "or any layout listed in data_root/manifest.yaml (data_source volumes; see docs/data/dinov2_microct.md)"
)
REAL_SOURCES = ("volumes", "drp317_151")


def _real_manifest(cfg):
    """The manifest of a real data source (``volumes``: data_root/manifest.yaml; ``drp317_151``: the Digital
    Rocks Portal layout); DataError naming the file for anything wrong."""
    from labkit.data import microct_volumes

    if cfg.data_source == "volumes":
        return microct_volumes.read_manifest(cfg.data_root)
    return microct_volumes.read_drp_layout(cfg.data_root)


def check_data_source(cfg) -> None:
    """Before any work: real data sources need ``data_root``, which must exist and hold a readable manifest
    (files present, raw sizes, TIFF pages, label shapes, split: each a DataError naming the file)."""
    source, root = cfg.data_source, cfg.data_root
    if source == "simulated":
        if root is not None:
            raise ParameterError(
                f"parameter 'data_root' is {root!r} but data_source is 'simulated'; set "
                "data_source to 'volumes' (a manifest.yaml in data_root) or drop data_root"
            )
        return
    if root is None:
        what = (
            PAPER_DATA
            if source == "drp317_151"
            else (
                "your own volumes, listed in data_root/manifest.yaml (grey image file, label volume, rock, scanner, "
                "voxel size per volume)"
            )
        )
        raise ParameterError(
            f"parameter 'data_root' is not set but data_source is {source!r}, which reads {what}. Download it and "
            f"pass its folder, e.g. `labkit reproduce dinov2_microct -p data_source {source} -p data_root /path`. "
            f"Expected layout:\n{PAPER_LAYOUT if source == 'drp317_151' else MANIFEST_LAYOUT}"
        )
    from pathlib import Path

    if not Path(root).is_dir():
        raise ParameterError(f"parameter 'data_root' {root!r} does not exist or is not a folder")
    from labkit.data import microct_volumes

    manifest = _real_manifest(cfg)
    if len(manifest.phases) > NUM_PHASES:
        raise DataError(
            f"{manifest.source}: declares {len(manifest.phases)} phases {list(manifest.phases)}; this study "
            f"segments at most {NUM_PHASES}"
        )
    microct_volumes.check_manifest(manifest)


def check_weights(cfg) -> None:
    """Before any work: a weights parameter that names a file must name one that exists."""
    from pathlib import Path

    for name in ("dinov2_weights", "resnet_weights", "ssl_weights"):
        value = cfg[name]
        if value in ("pretrained", "random") or str(value).startswith("labkit:"):
            continue
        if not Path(value).is_file():
            raise ParameterError(
                f"parameter '{name}' is {value!r}, which is neither pretrained, random, "
                "labkit:<name> nor an existing file"
            )
    if cfg.resnet_weights == "random":
        raise ParameterError(
            "parameter 'resnet_weights' is 'random': the ResNet + LoRA row is the paper's "
            "pretrained ResNet; the random-init ResNet is its own baseline row"
        )


MANIFEST_LAYOUT = (
    "data_root/\n"
    "  manifest.yaml      splits: {train_rocks, test_rock, train_scanners, test_scanner}; "
    "volumes: [{name, image, labels, rock, scanner, voxel_size_um}, ...]\n"
    "  <image files>      TIFF stack (.tif), raw (.raw + .raw_header, or shape/dtype/byte order in the "
    "manifest), .mhd (+ .raw) or .mat\n"
    "  <label files>      the same formats, integer phases 0 pore, 1 mineral, 2 micro-porous"
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


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def data_settings(cfg) -> dict[str, Any]:
    """The JSON-able data parameters (``data_root`` made absolute, so a worker elsewhere finds it)."""
    from pathlib import Path

    out = {k: _plain(cfg[k]) for k in DATA_KEYS}
    if out["data_root"]:
        out["data_root"] = str(Path(out["data_root"]).expanduser().resolve())
    return out


@functools.lru_cache(maxsize=2)
def _cached_data(key: str) -> microct.MicroCTSlices:
    from labkit.core.params import Config

    settings = json.loads(key)
    seed = settings.pop("_seed")
    return make_data(Config(STUDY, "data", settings), seed)


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


def data_summary(cfg, ds: microct.MicroCTSlices) -> pd.DataFrame:
    sp = splits(cfg, ds)
    rows = []
    for name, idx in sp.items():
        sub = ds.subset(idx)
        frac = np.bincount(sub.masks.ravel(), minlength=NUM_PHASES) / max(sub.masks.size, 1)
        rows.append(
            {
                "split": name,
                "slices": len(idx),
                "rocks": ", ".join(sorted({ds.rock_types[r] for r in sub.rock})),
                "scanners": ", ".join(sorted({ds.scanners[s] for s in sub.scanner})),
                **{f"fraction/{p}": round(float(f), 3) for p, f in zip(PHASES, frac)},
            }
        )
    return pd.DataFrame(rows)


def data_figure(ds: microct.MicroCTSlices):
    """One slice per rock type (columns) and scanner (rows), with its phase map (last row)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    nr, nc = len(ds.scanners) + 1, len(ds.rock_types)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc, 2.2 * nr), squeeze=False)
    cmap = ListedColormap(["#1f1f5f", "#e8d9a8", "#6aa84f"])
    for ri, rock in enumerate(ds.rock_types):
        shown = None
        for si, sc in enumerate(ds.scanners):
            idx = np.flatnonzero((ds.rock == ri) & (ds.scanner == si) & (ds.geometry == 0))
            ax = axes[si, ri]
            if len(idx):  # real layouts image each rock on one scanner: the other cells stay empty
                ax.imshow(ds.images[idx[0]], cmap="gray", vmin=0, vmax=1)
                shown = idx[0] if shown is None else shown
            else:
                ax.text(0.5, 0.5, "not imaged", ha="center", va="center", fontsize=7, color="#777777")
            ax.set_title(f"{rock.replace('_', ' ')}" if si == 0 else "", fontsize=8)
            if ri == 0:
                ax.set_ylabel(sc, fontsize=8)
        if shown is not None:
            axes[-1, ri].imshow(ds.masks[shown], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        if ri == 0:
            axes[-1, 0].set_ylabel("phases", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(NUM_PHASES)]
    fig.legend(handles, PHASES, loc="lower center", ncol=NUM_PHASES, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------
@dataclass
class Backbone:
    kind: str
    label: str
    model: torch.nn.Module | None
    weights_id: str
    status: str  # "ok" or the reason it is not evaluated
    name: str = ""
    img_size: int = 0  # input side fed to the model (fitted to its patch grid)
    input: str = ""  # how slices meet the patch grid (see input_note)
    pretraining: dict = field(default_factory=dict)  # the stand-in's training record (loss, trivial loss, steps)
    file: str = ""  # the checkpoint file a grid task loads (the stand-in)
    digest: str = ""  # its digest (part of the tasks' fingerprint)

    @property
    def ok(self) -> bool:
        return self.model is not None


@functools.cache
def arch_patch_size(name: str) -> int:
    """Patch side of a ViT architecture (from its timm name, else from a randomly built model)."""
    if name == STANDIN_ARCH:
        from labkit.methods.microct_standin import ARCH

        return int(ARCH["patch_size"])
    from labkit.models.backbones import create_backbone, timm_name

    m = re.search(r"patch(\d+)", timm_name(name))
    if m:
        return int(m.group(1))
    return patch_size_of(create_backbone(name, weights="random", num_classes=0))


def vit_input_size(cfg, arch: str | None = None) -> int:
    """The ViT's input side. With ``token_grid`` set: ``token_grid`` x the patch of ``arch`` (default
    ``vit_arch``), so every ViT gets the same token grid whatever its patch. Else ``img_size`` (or the
    slice side) fitted to the patch grid by ``resize_policy``: the next multiple of the patch
    (``resize``, ``pad``) or a DataError (``error``)."""
    patch = arch_patch_size(arch or cfg.vit_arch)
    if cfg.get("token_grid"):
        return int(cfg.token_grid) * patch
    size = int(cfg.img_size or cfg.slice_size)
    try:
        return grid_input_size(size, patch, cfg.resize_policy)
    except DataError as exc:
        raise DataError(
            f"{'img_size' if cfg.img_size else 'slice_size'} {size}: {exc} (parameter resize_policy is 'error')"
        ) from exc


def build_random_vit(cfg, seed: int, size: int) -> torch.nn.Module:
    """The random-init control of architecture ``vit_arch`` (``microct_standin``: the stand-in's)."""
    from labkit.models.backbones import create_backbone

    seed_everything(seed)
    if cfg.vit_arch == STANDIN_ARCH:
        from labkit.methods.microct_standin import build_vit

        return build_vit(size)
    return create_backbone(cfg.vit_arch, weights="random", img_size=size, num_classes=0)


def load_ssl_backbone(cfg, progress: bool = False) -> Backbone:
    """labkit's stand-in for DINOv2 (:mod:`labkit.methods.microct_standin`), from ``ssl_weights``:
    ``labkit:microct_standin_vit`` (the checkpoint shipped with the kit) or a file the same command
    wrote. Its training record (loss, trivial predictor's loss, steps, curve) comes from the sidecar
    and decides the "trained" precondition."""
    from pathlib import Path

    from labkit.core.grid import file_digest
    from labkit.methods import microct_standin

    label = BACKBONE_LABELS["ssl"]
    value = str(cfg.ssl_weights)
    if value == f"labkit:{microct_standin.NAME}":
        path = microct_standin.SHIPPED.with_suffix(".safetensors")
    elif value.startswith("labkit:") or value in ("random", "pretrained"):
        return Backbone(
            "ssl",
            label,
            None,
            "",
            f"not evaluated: parameter 'ssl_weights' is {value!r}; use labkit:{microct_standin.NAME} or a file "
            "written by `python -m labkit.methods.microct_standin`",
        )
    else:
        path = Path(value)
    if not path.is_file():
        return Backbone(
            "ssl",
            label,
            None,
            "",
            f"not evaluated: the stand-in checkpoint {path} is missing; make it with "
            f"`python -m labkit.methods.microct_standin --out {path.with_suffix('')}`",
        )
    size = vit_input_size(cfg, STANDIN_ARCH)
    model, record = microct_standin.load(path, img_size=size)
    digest = file_digest(path)
    record = _with_learner_free_loss(digest, json.dumps(record, sort_keys=True, default=str))
    return Backbone(
        "ssl",
        label,
        model,
        f"{microct_standin.NAME}({digest[:16]})",
        "ok",
        STANDIN_ARCH,
        size,
        input_note(cfg, model, size),
        pretraining=record,
        file=str(path.resolve()),
        digest=digest,
    )


@functools.lru_cache(maxsize=4)
def _with_learner_free_loss(digest: str, record: str) -> dict:
    """The checkpoint's record with the learner-free loss of its held-out check (computed once per file)."""
    from labkit.methods import microct_standin

    return microct_standin.with_learner_free_loss(json.loads(record))


def pretraining_curve(res) -> pd.DataFrame:
    """The stand-in's training curve from its sidecar: step, running training loss."""
    rec = (res.pretraining or {}).get("ssl") or {}
    return pd.DataFrame(rec.get("curve") or [], columns=["step", "loss", "seconds"])


def pretraining_table(res) -> pd.DataFrame:
    """The stand-in's "trained" record: steps, held-out loss, the image-mean predictor's loss and their ratio,
    the learner-free predictor's loss (each hidden patch filled with the mean of its image's visible pixels,
    on the same held-out crops and masks) and the ratio "trained" is judged on."""
    rows = []
    for kind, rec in (res.pretraining or {}).items():
        ratio = rec.get("learner_free_ratio")
        rows.append(
            {
                "backbone": BACKBONE_LABELS.get(kind, kind),
                "steps": rec.get("steps"),
                "heldout_loss": rec.get("final_loss"),
                "trivial_loss": rec.get("trivial_loss"),
                "loss_ratio": rec.get("loss_ratio"),
                "learner_free_loss": rec.get("learner_free_loss"),
                "learner_free_ratio": ratio,
                "trained_threshold": TRAINED_RATIO,
                "trained": bool(ratio is not None and np.isfinite(ratio) and ratio < TRAINED_RATIO),
                "mask_ratio": rec.get("mask_ratio"),
                "trivial_predictor": rec.get("trivial_predictor"),
                "learner_free_predictor": LEARNER_FREE_PREDICTOR,
            }
        )
    return pd.DataFrame(rows)


def _weights_reason(exc: Exception) -> str:
    """'not evaluated: weights unavailable (...)' with the first sentence of the factory's message."""
    first = str(exc).splitlines()[0].split(" Provide them")[0]
    return (
        f"not evaluated: weights unavailable ({first} Provide them in LABKIT_WEIGHTS_DIR, the Hugging Face "
        "cache or from the hub; random weights are never substituted)"
    )


def weights_source(name: str, weights: str) -> dict:
    """Where a pretrained row's weights come from, decided once before the grid: ``{"status": "ok",
    "weights": value, "digest": ...}`` (the digest of the file read, part of its tasks' fingerprint, so new
    weights rerun them) or ``{"status": reason}`` (a reason a user can act on)."""
    from pathlib import Path

    from labkit.core.grid import file_digest
    from labkit.models.backbones import create_backbone, resolve_pretrained_file

    if weights == "random":
        return {"status": "ok", "weights": weights, "digest": "random"}
    if weights.startswith("labkit:"):
        from labkit.models.registry import named_checkpoint_path

        return {"status": "ok", "weights": weights, "digest": file_digest(named_checkpoint_path(weights[7:]))}
    if weights != "pretrained":
        path = Path(weights).expanduser().resolve()
        return {"status": "ok", "weights": str(path), "digest": file_digest(path)}
    file = resolve_pretrained_file(name)
    if file is None:  # only the hub has them: fetch them once, here, into its cache (or say why not)
        try:
            create_backbone(name, weights="pretrained", num_classes=0)
        except WeightsUnavailableError as exc:
            return {"status": _weights_reason(exc)}
        file = resolve_pretrained_file(name)
    return {"status": "ok", "weights": weights, "digest": file_digest(file) if file else "hub"}


def resolve_arms(cfg) -> dict[str, dict]:
    """Which rows can run, decided once before the grid, so a task only computes: each ViT kind of
    ``backbones`` (``dinov2``: its weights; ``random``; ``ssl``: the stand-in's checkpoint, its path and
    digest, and its training record) and ``resnet`` (the pretrained ResNet + LoRA row). Each is
    ``{"status": "ok", ...}`` or ``{"status": the reason it is not evaluated}``."""
    arms = {}
    if "dinov2" in cfg.backbones:
        arms["dinov2"] = weights_source(cfg.dinov2_backbone, cfg.dinov2_weights)
    if "random" in cfg.backbones:
        arms["random"] = {"status": "ok"}
    if "ssl" in cfg.backbones:
        bb = load_ssl_backbone(cfg)
        arms["ssl"] = {"status": bb.status, "path": bb.file, "digest": bb.digest, "pretraining": bb.pretraining}
    arms["resnet"] = (
        weights_source(cfg.resnet_backbone, cfg.resnet_weights)
        if cfg.resnet_lora
        else {"status": "not evaluated: disabled (resnet_lora)"}
    )
    return arms


def build_backbone(cfg, kind: str, seed: int, weights: dict | None = None) -> Backbone:
    """The ViT of a grid task: DINOv2 from its resolved ``weights``, the random control (seeded), or the
    stand-in from its checkpoint (``weights["path"]``)."""
    if kind == "dinov2":
        from labkit.models.backbones import create_backbone

        size = vit_input_size(cfg, cfg.dinov2_backbone)
        model = create_backbone(cfg.dinov2_backbone, weights=weights["weights"], img_size=size, num_classes=0)
        note = input_note(cfg, model, size)
        return Backbone(
            kind, BACKBONE_LABELS[kind], model, str(weights["weights"]), "ok", cfg.dinov2_backbone, size, note
        )
    if kind == "random":
        size = vit_input_size(cfg)
        model = build_random_vit(cfg, seed, size)
        note = input_note(cfg, model, size)
        return Backbone(kind, BACKBONE_LABELS[kind], model, f"random(seed={seed})", "ok", cfg.vit_arch, size, note)
    from labkit.methods import microct_standin

    size = vit_input_size(cfg, STANDIN_ARCH)
    model, _ = microct_standin.load(weights["path"], img_size=size)
    weights_id = f"{microct_standin.NAME}({weights['digest'][:16]})"
    return Backbone(
        kind, BACKBONE_LABELS[kind], model, weights_id, "ok", STANDIN_ARCH, size, input_note(cfg, model, size)
    )


def input_note(cfg, model: torch.nn.Module, size: int | None = None) -> str:
    """How slices meet the backbone's patch grid (said in the report's backbone table)."""
    patch = patch_size_of(model)
    size = int(size or vit_input_size(cfg))
    if size % patch:
        raise DataError(f"input side {size} is not a multiple of the patch size {patch}")
    grid = f"{size // patch}x{size // patch} tokens of {patch} px"
    if cfg.slice_size == size:
        return f"slices of {cfg.slice_size} px fit the patch grid ({grid})"
    if cfg.resize_policy == "pad":
        return (
            f"slices of {cfg.slice_size} px are reflect-padded to {size} px ({grid}); the padding is not "
            f"trained on and predictions are cropped back to {cfg.slice_size} px"
        )
    return (
        f"slices of {cfg.slice_size} px are resized bilinearly to {size} px ({grid}); predictions are "
        f"resized back to {cfg.slice_size} px"
    )


def _device(cfg=None) -> torch.device:
    from labkit.core.device import resolve_device

    return resolve_device(cfg.device if cfg is not None else "auto", announce=False)


# ---------------------------------------------------------------------------------------------------
# The grid's task: one part of one seed's experiment
# ---------------------------------------------------------------------------------------------------
def _scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    cm = ConfusionMatrix(NUM_PHASES).update(pred, target)
    return cm.scores(PHASES)


@dataclass
class SeedResult:
    """A task's rows (and the figures' material), then, gathered from the first seed's records, what the
    figures draw: example masks, class and patch tokens, t-SNE embeddings."""

    classification: list[dict] = field(default_factory=list)
    segmentation: list[dict] = field(default_factory=list)
    embeddings: dict[str, Any] = field(default_factory=dict)  # kind -> {"tsne": (N, 2), "silhouette": float}
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, probing.Features] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backbones: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # kind -> input_note
    ceilings: list[dict] = field(default_factory=list)  # per-token oracle mIoU per token grid and split
    grids: dict[str, int] = field(default_factory=dict)  # backbone label -> token grid side

    def record(self, part: str, seed: int, keep: bool) -> dict[str, Any]:
        """The grid record: numbers, strings, lists and dicts; with ``keep`` the figures' arrays too."""
        out = {
            "part": part,
            "seed": int(seed),
            "classification": self.classification,
            "segmentation": self.segmentation,
            "ceilings": self.ceilings,
            "notes": sorted(set(self.notes)),
            "inputs": self.inputs,
            "grids": self.grids,
            "silhouettes": {k: e["silhouette"] for k, e in self.embeddings.items()},
        }
        if keep:
            out["examples"] = {k: v if k == "image" else v.astype(np.int8) for k, v in self.examples.items()}
            out["tsne"] = {k: e["tsne"] for k, e in self.embeddings.items()}
            out["features"] = {
                k: {"cls": f.cls, "patch": f.patch, "patch_index": f.patch_index, "seconds": f.seconds, "key": f.key}
                for k, f in self.features.items()
            }
        return out

    def add(self, record: dict[str, Any]) -> None:
        """Take in one record of the first seed (in the rows' order: baselines, ResNet, each ViT)."""
        self.examples.update(record.get("examples", {}))
        self.inputs.update(record.get("inputs", {}))
        self.grids.update(record.get("grids", {}))
        for kind, f in record.get("features", {}).items():
            self.features[kind] = probing.Features(
                f["cls"], f["patch"], f["seconds"], True, f["key"], np.asarray(f["patch_index"])
            )
        for kind, sil in record.get("silhouettes", {}).items():
            self.embeddings[kind] = {"tsne": record.get("tsne", {}).get(kind), "silhouette": sil}


def train_budget(n_train: int, batch_size: int, epochs: int, lr: float, trainable: int) -> dict[str, Any]:
    """A trained arm's budget (:func:`labkit.core.claims.budget_record`) as labkit's ``fit`` runs it: AdamW,
    ``epochs`` passes over ``n_train`` slices in batches of ``batch_size`` (the last one short), the learning
    rate annealed by a cosine stepped once per epoch."""
    per_epoch = math.ceil(n_train / batch_size)
    steps = per_epoch * int(epochs)
    schedule = f"AdamW, cosine stepped per epoch over {int(epochs)} epochs of {per_epoch} steps ({steps} steps)"
    return budget_record(steps, min(int(batch_size), int(n_train)), lr, schedule, int(trainable))


def _seg_rows(
    out: SeedResult, seed, method, backbone, kind, trainable, seconds, preds: dict, ds, sp, example_idx, budget=None
):
    """One row per split it predicted; a trained arm's rows carry its ``budget``."""
    for split in preds:
        s = _scores(preds[split], ds.masks[sp[split]])
        out.segmentation.append(
            {
                "seed": seed,
                "method": method,
                "backbone": backbone,
                "kind": kind,
                "split": split,
                "trainable_params": trainable,
                "train_seconds": seconds,
                "status": "evaluated",
                "miou": s["miou"],
                **{f"iou/{p}": s[f"iou/{p}"] for p in PHASES},
                **({"budget": dict(budget)} if budget is not None else {}),
            }
        )
    key = f"{method} | {backbone}" if backbone else method
    out.examples[key] = preds["ood_rock"][example_idx]


def _not_evaluated(out: SeedResult, seed, method, backbone, kind, reason):
    for split in SPLITS:
        out.segmentation.append(
            {
                "seed": seed,
                "method": method,
                "backbone": backbone,
                "kind": kind,
                "split": split,
                "trainable_params": np.nan,
                "train_seconds": np.nan,
                "status": reason,
                "miou": np.nan,
                **{f"iou/{p}": np.nan for p in PHASES},
            }
        )


def _loader(images, masks, batch_size, seed, shuffle=True):
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32)),
        torch.from_numpy(np.ascontiguousarray(masks, np.int64)),
    )
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def _train_segmenter(cfg, model, images, masks, *, batch_size, epochs, lr, seed, desc):
    """labkit's training loop, on the GPU when there is one (the loop moves batches to the model)."""
    from labkit.methods.training import fit

    return fit(
        model.to(_device(cfg)),
        _loader(images, masks, batch_size, seed),
        task="segmentation",
        num_classes=NUM_PHASES,
        epochs=epochs,
        lr=lr,
        scheduler="cosine",
        seed=seed,
        progress=cfg.progress,
        desc=desc,
    )


def _predict(model, images, batch_size=16) -> np.ndarray:
    """Phase maps (N, H, W) of grey slices (N, H, W), batched, on the model's device."""
    from labkit.methods.training import predict_segmentation

    return predict_segmentation(model, images[:, None], batch_size)


def token_oracle(masks: np.ndarray, grid: int, padded_size: int | None = None) -> np.ndarray:
    """The ceiling of any per-token head on a ``grid`` x ``grid`` token grid: each token is given the
    exact phase fractions of the pixels it covers, which are upsampled bilinearly (as the heads' scores
    are) and the argmax taken per pixel. ``masks`` (N, H, W) -> phase maps (N, H, W). With
    ``padded_size`` the slices sit in the top-left of a reflect-padded input of that side."""
    import torch.nn.functional as F

    m = torch.from_numpy(np.asarray(masks, np.int64))
    n, h, w = m.shape
    onehot = F.one_hot(m, NUM_PHASES).permute(0, 3, 1, 2).float()
    if padded_size:
        onehot = F.pad(onehot, (0, padded_size - w, 0, padded_size - h), mode="replicate")
    frac = F.adaptive_avg_pool2d(onehot, grid)
    size = (padded_size, padded_size) if padded_size else (h, w)
    up = F.interpolate(frac, size=size, mode="bilinear", align_corners=False)[:, :, :h, :w]
    return up.argmax(1).numpy().astype(np.int64)


def tsne_silhouette(cls_tokens: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE of class tokens and the silhouette of the rock labels in it."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    perplexity = float(min(30, max(2, (len(cls_tokens) - 1) // 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(cls_tokens)
    return emb, float(silhouette_score(emb, labels)) if len(np.unique(labels)) > 1 else float("nan")


def pca_indices(ds: microct.MicroCTSlices) -> np.ndarray:
    """One slice per rock type (its first scanner, first sample): the slices of the patch-PCA figure. A rock
    need not have every scanner (the Digital Rocks Portal layout images each project with one)."""
    firsts = [np.flatnonzero(ds.rock == r) for r in range(len(ds.rock_types))]
    return np.array([idx[np.argmin(ds.scanner[idx])] for idx in firsts])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centred_views(views: dict[str, np.ndarray], train_index) -> dict[str, np.ndarray]:
    """Each feature view centred on its training mean (so a near-constant token cannot decide a cosine
    kNN: rounding noise around a common direction is not a neighbour ranking); with both ``cls`` and
    ``mean``, their concatenation (each part centred and scaled to unit length, so both weigh alike)."""
    out = {}
    for name, x in views.items():
        x = np.asarray(x, np.float64)
        out[name] = (x - x[train_index].mean(0)).astype(np.float32)
    if "cls" in out and "mean" in out:
        out["cls+mean"] = np.concatenate([_unit(out["cls"]), _unit(out["mean"])], 1).astype(np.float32)
    return out


def grey_histograms(images: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Per-slice grey-level histogram (density over [0, 1]): the simple classical baseline feature."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.stack([np.histogram(np.clip(a, 0, 1), edges, density=True)[0] for a in images]).astype(np.float32)


def probe_rows(cfg, seed, label, views: dict[str, np.ndarray], labels, tr, te, n_per_class) -> list[dict]:
    """kNN (every k of knn_ks) and linear probes on each centred feature view."""
    rows = []
    for feature, x in centred_views(views, tr).items():
        preds = probing.knn_predict(
            x[tr], labels[tr], x[te], cfg.knn_ks, temperature=cfg.knn_temperature, num_classes=int(labels.max()) + 1
        )
        for k, p in preds.items():
            rows.append(
                {
                    "seed": seed,
                    "backbone": label,
                    "probe": "knn",
                    "feature": feature,
                    "k": k,
                    "k_below_class_size": bool(k < n_per_class),
                    "accuracy": float((p == labels[te]).mean()),
                    "status": "evaluated",
                }
            )
        p = probing.linear_probe(x[tr], labels[tr], x[te], seed=seed)
        rows.append(
            {
                "seed": seed,
                "backbone": label,
                "probe": "linear",
                "feature": feature,
                "k": np.nan,
                "accuracy": float((p == labels[te]).mean()),
                "status": "evaluated",
            }
        )
    return rows


def resnet_baseline_label(cfg) -> str:
    return f"{cfg.resnet_backbone}, random init (pooled features)"


def classification_baselines(cfg, seed, ds, tr, te, n_per_class) -> list[dict]:
    """The baseline rows of the classification table: a grey-level histogram and a random-init
    ResNet's global-average-pooled features, probed the same way as the ViTs."""
    from labkit.models.backbones import create_backbone

    rows = probe_rows(cfg, seed, HISTOGRAM, {"histogram": grey_histograms(ds.images)}, ds.rock, tr, te, n_per_class)
    seed_everything(seed)
    resnet = create_backbone(cfg.resnet_backbone, weights="random", num_classes=0).to(_device(cfg))
    feats = probing.extract_features(
        resnet,
        ds.images,
        img_size=cfg.slice_size,
        backbone=cfg.resnet_backbone,
        weights=f"random(seed={seed})",
        batch_size=cfg.feature_batch_size,
        progress=cfg.progress,
        patch_index=np.zeros(0, np.int64),
    )
    rows += probe_rows(cfg, seed, resnet_baseline_label(cfg), {"pooled": feats.cls}, ds.rock, tr, te, n_per_class)
    return rows


def ceiling_rows(cfg, seed, ds, sp, grids=CEILING_GRIDS) -> list[dict]:
    """The per-token oracle's mean IoU per token grid and split (the grid-ceiling figure)."""
    rows = []
    for g in grids:
        for split in evaluated_splits(sp):
            s = _scores(token_oracle(ds.masks[sp[split]], g), ds.masks[sp[split]])
            rows.append({"seed": seed, "grid": g, "split": split, "miou": s["miou"]})
    return rows


TASK = "labkit.studies.dinov2_microct:seed_part_task"
VIT_KINDS = ("dinov2", "random", "ssl")
# The parameters each part reads besides the data's (see task_settings): a changed one reruns only its tasks
PROBE_KEYS = ("knn_ks", "knn_temperature", "feature_batch_size")
LORA_KEYS = ("batch_size", "lora_rank", "lora_alpha", "lora_epochs", "lora_lr", "lora_batch_size", "resize_policy")
PART_KEYS = {
    "baselines": PROBE_KEYS
    + ("denoise_sigma", "rf_trees", "unet_epochs", "unet_batch_size", "unet_lr", "resnet_backbone"),
    "resnet": LORA_KEYS + ("resnet_backbone",),
    "vit": PROBE_KEYS
    + LORA_KEYS
    + ("img_size", "token_grid", "head_epochs", "head_lr", "knn_seg_k", "knn_seg_memory", "lora_heads", "lora_targets"),
    "dinov2": ("dinov2_backbone",),
    "random": ("vit_arch",),
    "ssl": (),
}


@grid_task("dinov2_microct/seed_part")
def seed_part_task(part: str, seed: int, settings: dict, weights: dict | None = None, keep: bool = False) -> dict:
    """One grid task: one part of ``seed``'s experiment, on that seed's slices.

    ``part``: ``baselines`` (the classical pipelines and the UNet from scratch; the grey-level histogram
    and random-ResNet classification rows; the per-token oracle on every token grid), ``resnet`` (the
    pretrained ResNet + LoRA) or a ViT kind (``dinov2``, ``random``, ``ssl``: the per-token oracle of its
    grid, kNN and linear probes, t-SNE, frozen heads, kNN segmentation, LoRA). ``settings``: the resolved
    parameters the part reads (:func:`task_settings`); ``weights``: the weights it loads and their digest
    (:func:`resolve_arms`); ``keep``: also return the figures' arrays (the first seed's). Returns the
    record of :meth:`SeedResult.record`: rows of the classification, segmentation and ceiling tables."""
    from labkit.core.params import Config

    cfg = Config(STUDY, "grid task", {**settings, "progress": False})
    ds = seed_data(cfg, seed)
    sp = splits(cfg, ds)
    out = SeedResult()
    if part == "baselines":
        _baselines(cfg, seed, ds, sp, out)
    elif part == "resnet":
        _resnet_lora(cfg, seed, out, ds, sp, weights)
    else:
        _vit_rows(cfg, build_backbone(cfg, part, seed, weights), seed, ds, sp, out, keep)
    return out.record(part, seed, keep)


def _example_index(sp) -> np.ndarray:
    """The two out-of-distribution slices of the example-mask figure."""
    return np.array([0, len(sp["ood_rock"]) // 2])


def _per_class(ds, sp) -> int:
    """Training slices of the rarest rock (a kNN with k at or above it must vote across rocks)."""
    return int(np.bincount(ds.rock[sp["cls_train"]]).min())


def _baselines(cfg, seed, ds, sp, out: SeedResult) -> None:
    """The rows without a ViT: classical pipelines and the UNet from scratch (segmentation), the grey-level
    histogram and the random-init ResNet (classification), and the per-token oracle of every token grid."""
    seg_tr = ds.subset(sp["seg_train"])
    example_idx = _example_index(sp)
    out.examples["image"] = ds.images[sp["ood_rock"]][example_idx]
    out.examples["truth"] = ds.masks[sp["ood_rock"]][example_idx]
    classical = [
        ("multi-Otsu", baselines.ClusterSegmenter("otsu", NUM_PHASES, cfg.denoise_sigma, seed)),
        ("K-means", baselines.ClusterSegmenter("kmeans", NUM_PHASES, cfg.denoise_sigma, seed)),
        ("fuzzy C-means", baselines.ClusterSegmenter("fcm", NUM_PHASES, cfg.denoise_sigma, seed)),
        ("random forest (filter bank)", baselines.FilterBankForest(n_estimators=cfg.rf_trees, seed=seed)),
    ]
    for name, est in classical:
        t0 = time.perf_counter()
        est.fit(seg_tr.images, seg_tr.masks)
        seconds = time.perf_counter() - t0
        preds = {s: est.predict(ds.images[sp[s]]) for s in evaluated_splits(sp)}
        _seg_rows(out, seed, name, "", "classical", np.nan, seconds, preds, ds, sp, example_idx)

    seed_everything(seed)
    unet = baselines.create_unet(NUM_PHASES, in_channels=1)
    res = _train_segmenter(
        cfg,
        unet,
        seg_tr.images,
        seg_tr.masks,
        batch_size=cfg.unet_batch_size,
        epochs=cfg.unet_epochs,
        lr=cfg.unet_lr,
        seed=seed,
        desc="UNet from scratch",
    )
    preds = {s: _predict(res.model, ds.images[sp[s]]) for s in evaluated_splits(sp)}
    trainable = count_parameters(unet)
    budget = train_budget(len(seg_tr.images), cfg.unet_batch_size, cfg.unet_epochs, cfg.unet_lr, trainable)
    _seg_rows(
        out, seed, "UNet from scratch", "", "from scratch", trainable, res.seconds, preds, ds, sp, example_idx, budget
    )

    out.classification += classification_baselines(cfg, seed, ds, sp["cls_train"], sp["cls_test"], _per_class(ds, sp))
    out.ceilings = ceiling_rows(cfg, seed, ds, sp)


def _vit_rows(cfg, bb: Backbone, seed, ds, sp, out: SeedResult, keep: bool) -> None:
    """Every row of one ViT: the per-token oracle of its grid; kNN and linear probes on the class token, the
    mean patch token and both (centred); t-SNE; linear and CNN heads and kNN segmentation on frozen patch
    tokens; LoRA fine-tuning (where ``lora``). With ``keep`` the figures' tokens are kept."""
    size = (cfg.slice_size, cfg.slice_size)
    seg_tr = ds.subset(sp["seg_train"])
    example_idx = _example_index(sp)
    seg_index = np.concatenate([sp["seg_train"]] + [sp[s] for s in evaluated_splits(sp)])
    keep_patch = np.union1d(seg_index, pca_indices(ds))
    out.notes.append(f"{bb.label}: {bb.input}")
    out.inputs[bb.kind] = bb.input
    grid = bb.img_size // patch_size_of(bb.model)
    out.grids[bb.label] = int(grid)
    preds = {
        s: token_oracle(ds.masks[sp[s]], grid, bb.img_size if cfg.resize_policy == "pad" else None)
        for s in evaluated_splits(sp)
    }
    _seg_rows(out, seed, ORACLE, bb.label, "oracle", 0, 0.0, preds, ds, sp, example_idx)
    bb.model.to(_device(cfg))
    feats = probing.extract_features(
        bb.model,
        ds.images,
        img_size=bb.img_size,
        backbone=bb.name,
        weights=bb.weights_id,
        batch_size=cfg.feature_batch_size,
        policy=cfg.resize_policy,
        progress=cfg.progress,
        patch_index=keep_patch,
    )
    if keep:  # only what the figures need (class tokens, the PCA slices' patch tokens)
        pca_idx = np.sort(pca_indices(ds))
        out.features[bb.kind] = probing.Features(
            feats.cls, feats.patch_of(pca_idx), feats.seconds, feats.from_cache, feats.key, pca_idx
        )
    # classification: class token, mean patch token and both, centred on the training mean
    tr, te = sp["cls_train"], sp["cls_test"]
    out.classification += probe_rows(
        cfg, seed, bb.label, {"cls": feats.cls, "mean": feats.mean}, ds.rock, tr, te, _per_class(ds, sp)
    )
    if cfg.tsne:
        emb, sil = tsne_silhouette(feats.cls - feats.cls[tr].mean(0), ds.rock, seed)
        out.embeddings[bb.kind] = {"tsne": emb, "silhouette": sil}
    # frozen segmentation heads; with reflect-padded inputs the masks are padded with an
    # ignored label and predictions cropped back to the slice
    padded = (bb.img_size, bb.img_size) if cfg.resize_policy == "pad" and bb.img_size != cfg.slice_size else None
    tr_masks = seg_tr.masks if padded is None else probing.pad_masks(seg_tr.masks, bb.img_size)
    tok_tr = feats.patch_of(sp["seg_train"])
    for head, name in (("linear", "linear head (frozen)"), ("cnn", "CNN head (frozen)")):
        hr = probing.train_token_head(
            tok_tr,
            tr_masks,
            kind=head,
            num_classes=NUM_PHASES,
            epochs=cfg.head_epochs,
            lr=cfg.head_lr,
            batch_size=cfg.batch_size,
            seed=seed,
            progress=cfg.progress,
        )
        preds = {
            s: probing.predict_token_head(hr.model, feats.patch_of(sp[s]), size, padded_size=padded)
            for s in evaluated_splits(sp)
        }
        budget = train_budget(len(tok_tr), cfg.batch_size, cfg.head_epochs, cfg.head_lr, hr.trainable_params)
        _seg_rows(
            out, seed, name, bb.label, "frozen", hr.trainable_params, hr.seconds, preds, ds, sp, example_idx, budget
        )
    t0 = time.perf_counter()
    preds = {
        s: probing.knn_segment(
            tok_tr,
            tr_masks,
            feats.patch_of(sp[s]),
            size,
            num_classes=NUM_PHASES,
            k=cfg.knn_seg_k,
            temperature=cfg.knn_temperature,
            memory_size=cfg.knn_seg_memory,
            seed=seed,
            padded_size=padded,
        )
        for s in evaluated_splits(sp)
    }
    seconds = time.perf_counter() - t0
    _seg_rows(out, seed, "kNN segmentation (frozen)", bb.label, "frozen", 0, seconds, preds, ds, sp, example_idx)
    del feats, tok_tr
    for head in cfg.lora_heads:
        name = f"{head} head + LoRA"
        if not cfg.lora:
            reason = "not evaluated: LoRA not run for this backbone in this preset (parameter lora_backbones)"
            _not_evaluated(out, seed, name, bb.label, "LoRA", reason)
            continue
        model, r = _fit_lora(cfg, bb.model, head, seg_tr, seed, f"LoRA {head} {bb.kind}", img_size=bb.img_size)
        preds = {s: _predict(r.model, ds.images[sp[s]], cfg.batch_size) for s in evaluated_splits(sp)}
        trainable = count_parameters(model)
        budget = train_budget(len(seg_tr.images), cfg.lora_batch_size, cfg.lora_epochs, cfg.lora_lr, trainable)
        _seg_rows(out, seed, name, bb.label, "LoRA", trainable, r.seconds, preds, ds, sp, example_idx, budget)
        del model, r


def _unavailable_vit(out: SeedResult, seed, label: str, status: str, lora_heads) -> None:
    """The rows of a ViT that could not run, each saying why."""
    for probe in ("knn", "linear"):
        out.classification.append(
            {
                "seed": seed,
                "backbone": label,
                "probe": probe,
                "feature": "all",
                "k": np.nan,
                "accuracy": np.nan,
                "status": status,
            }
        )
    for m in ("linear head (frozen)", "CNN head (frozen)", "kNN segmentation (frozen)"):
        _not_evaluated(out, seed, m, label, "frozen", status)
    for h in lora_heads:
        _not_evaluated(out, seed, f"{h} head + LoRA", label, "LoRA", status)


def _fit_lora(cfg, backbone, head_kind, seg_tr, seed, desc, targets=None, img_size=None):
    from labkit.models.lora import apply_lora

    seed_everything(seed)
    tuned = apply_lora(
        copy.deepcopy(backbone), rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=targets or cfg.lora_targets
    )
    dim = getattr(backbone, "num_features", None) or backbone.embed_dim
    model = BackboneSegmenter(
        tuned, create_head(head_kind, dim, NUM_PHASES), img_size or vit_input_size(cfg), cfg.resize_policy
    )
    r = _train_segmenter(
        cfg,
        model,
        seg_tr.images,
        seg_tr.masks,
        batch_size=cfg.lora_batch_size,
        epochs=cfg.lora_epochs,
        lr=cfg.lora_lr,
        seed=seed,
        desc=desc,
    )
    return model, r


def resnet_lora_label(cfg) -> str:
    return f"{cfg.resnet_backbone} (pretrained)"


def _resnet_lora(cfg, seed, out: SeedResult, ds, sp, weights: dict) -> None:
    """The pretrained ResNet + LoRA with a linear head, at the ViTs' input side (``input_size``)."""
    from labkit.models.backbones import create_backbone

    seg_tr = ds.subset(sp["seg_train"])
    resnet = create_backbone(cfg.resnet_backbone, weights=weights["weights"], num_classes=0)
    model, r = _fit_lora(
        cfg, resnet, "linear", seg_tr, seed, "LoRA resnet", targets="resnet-convs", img_size=cfg.input_size
    )
    preds = {s: _predict(r.model, ds.images[sp[s]], cfg.batch_size) for s in evaluated_splits(sp)}
    label, trainable = resnet_lora_label(cfg), count_parameters(model)
    budget = train_budget(len(seg_tr.images), cfg.lora_batch_size, cfg.lora_epochs, cfg.lora_lr, trainable)
    _seg_rows(
        out, seed, "linear head + LoRA", label, "LoRA", trainable, r.seconds, preds, ds, sp, _example_index(sp), budget
    )


# ---------------------------------------------------------------------------------------------------
# The grid: every seed x part, gathered into the study's tables
# ---------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    classification: pd.DataFrame
    segmentation: pd.DataFrame
    silhouettes: pd.DataFrame
    first: SeedResult  # the first seed's features, embeddings and example masks (for figures)
    first_data: microct.MicroCTSlices
    backbones: dict[str, str]  # kind -> status
    notes: list[str]
    seconds: float
    pretraining: dict = field(default_factory=dict)  # kind -> the stand-in's training record
    ceilings: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed, grid, split, miou
    grids: dict = field(default_factory=dict)  # backbone label -> token grid side
    cached: int = 0  # grid tasks read from the cache
    computed: int = 0  # grid tasks computed in this run
    budgets: pd.DataFrame = field(default_factory=pd.DataFrame)  # each trained arm's budget per seed


def parts(cfg) -> list[str]:
    """Each seed's parts, in the order of the tables' rows: baselines, ResNet + LoRA, each ViT."""
    return ["baselines", "resnet", *[k for k in VIT_KINDS if k in cfg.backbones]]


def task_settings(cfg, part: str) -> dict[str, Any]:
    """The JSON-able parameters one part reads: the data's, the part's own (:data:`PART_KEYS`) and the device
    (resolved here, once); a ViT also gets ``lora`` (its kind is in ``lora_backbones``) and ``tsne``."""
    keys = PART_KEYS[part] if part in ("baselines", "resnet") else PART_KEYS["vit"] + PART_KEYS[part]
    out = {**data_settings(cfg), **{k: _plain(cfg[k]) for k in keys}, "device": str(_device(cfg))}
    if part in VIT_KINDS:
        out.update(lora=part in cfg.lora_backbones, tsne="tsne" in cfg.embedders)
    if part == "resnet":
        out["input_size"] = vit_input_size(cfg)
    return out


def _task_weights(part: str, arm: dict) -> dict | None:
    if part == "ssl":
        return {"path": arm["path"], "digest": arm["digest"]}
    if part in ("dinov2", "resnet"):
        return {"weights": arm["weights"], "digest": arm["digest"]}
    return None


def build_grid(cfg, arms: dict[str, dict] | None = None):
    """One task per seed x part whose arm can run (:func:`resolve_arms`); the first seed's tasks keep the
    figures' arrays. Parts are split so that each task is a few tens of seconds at ``default`` and two
    workers stay busy; a ViT's probes, heads and LoRA share one task so its tokens are extracted once."""
    from labkit.core.grid import Grid

    arms = resolve_arms(cfg) if arms is None else arms
    grid = Grid(STUDY, TASK, inputs=data_inputs(cfg))
    first = cfg.seeds[0]
    for seed in cfg.seeds:
        for part in parts(cfg):
            arm = arms.get(part, {"status": "ok"})
            if arm["status"] != "ok":
                continue
            weights = _task_weights(part, arm)
            grid.add(part=part, seed=int(seed), settings=task_settings(cfg, part), weights=weights, keep=seed == first)
    return grid


def run(cfg, progress: bool = True, **run_kwargs) -> StudyResult:
    """Check every parameter and input before any work, decide which rows can run, run the grid with
    ``cfg.executor`` (``workers``, ``scheduler``; ``run_kwargs`` override them, e.g. ``threads``; records
    are cached and a rerun computes only what is missing) and gather the records into the tables."""
    t0 = time.perf_counter()
    check_data_source(cfg)
    check_weights(cfg)
    check_config(cfg)
    vit_input_size(cfg)  # an image side the patch grid cannot take fails here, before any work
    arms = resolve_arms(cfg)
    first_data = seed_data(cfg, cfg.seeds[0])  # the figures' slices (and the first tasks', run serially)
    options = {"executor": cfg.executor, "workers": cfg.workers, "scheduler": cfg.scheduler, **run_kwargs}
    result = build_grid(cfg, arms).run(progress=progress, **options)
    records = {(r["seed"], r["part"]): r for r in result.records if r is not None}
    cls_rows, seg_rows, sil_rows, notes, ceil, budgets = [], [], [], [], [], {}
    first = SeedResult(backbones={k: arms[k]["status"] for k in VIT_KINDS if k in arms})
    for seed in cfg.seeds:
        for part in parts(cfg):
            record = records.get((seed, part)) or _unavailable_record(cfg, part, seed, arms[part]["status"])
            cls_rows += record["classification"]
            for row in record["segmentation"]:
                row = dict(row)
                budget = row.pop("budget", None)
                if budget is not None:  # one budget per arm and seed (its rows of every split carry it)
                    key = (row["method"], row["backbone"], row["kind"], row["seed"])
                    budgets[key] = dict(zip(("method", "backbone", "kind", "seed"), key), **budget)
                seg_rows.append(row)
            ceil += record["ceilings"]
            notes += record["notes"]
            for kind, sil in record["silhouettes"].items():
                sil_rows.append({"seed": seed, "backbone": BACKBONE_LABELS[kind], "tsne_silhouette": sil})
            if seed == cfg.seeds[0]:
                first.add(record)
    ssl = arms.get("ssl", {})
    return StudyResult(
        pd.DataFrame(cls_rows),
        pd.DataFrame(seg_rows),
        pd.DataFrame(sil_rows),
        first,
        first_data,
        first.backbones,
        sorted(set(notes)),
        time.perf_counter() - t0,
        {"ssl": ssl["pretraining"]} if ssl.get("pretraining") else {},
        pd.DataFrame(ceil),
        dict(first.grids),
        result.cached,
        result.computed,
        pd.DataFrame(list(budgets.values()), columns=["method", "backbone", "kind", "seed", *BUDGET_KEYS]),
    )


def _unavailable_record(cfg, part: str, seed: int, status: str) -> dict:
    """The record of a part whose arm could not run: its rows, each saying why."""
    out = SeedResult()
    if part == "resnet":
        _not_evaluated(out, seed, "linear head + LoRA", resnet_lora_label(cfg), "LoRA", status)
    else:
        _unavailable_vit(out, seed, BACKBONE_LABELS[part], status, cfg.lora_heads)
    return out.record(part, seed, keep=False)


# ---------------------------------------------------------------------------------------------------
# Claims: declared as data (labkit.core.claims), judged by the kit's one judge
# ---------------------------------------------------------------------------------------------------
STATEMENTS = {
    "c1_knn_rock_classification": "Frozen features classify rock types almost perfectly with a kNN probe "
    "(k in the grid) and t-SNE of the class tokens shows one cluster per rock.",
    "c2_linear_head_beats_classical": "For phase segmentation, a linear head on frozen patch tokens beats "
    "multi-Otsu, K-means, fuzzy C-means and a random forest on filter-bank "
    "features (third-rock test, mean IoU).",
    "c3_lora_lifts_heads": f"LoRA fine-tuning lifts the frozen heads a lot (by at least {LORA_LIFT} mean IoU; "
    "paper: linear 0.67 -> 0.81, CNN 0.75 -> 0.82).",
    "c4_lora_beats_unet": "With LoRA the ViT beats a UNet trained from scratch, with fewer trainable parameters.",
    "c4b_lora_beats_resnet_lora": "With LoRA the ViT beats a pretrained ResNet with LoRA.",
    "c5_holds_out_of_distribution": "These hold out of distribution: trained on two rocks and scanners, the "
    "ViT's best method (chosen in distribution) still beats the UNet and every "
    "classical pipeline on a third rock and on a third scanner.",
}
FROZEN_OF = {"linear": "linear head (frozen)", "cnn": "CNN head (frozen)"}
ORACLE = "per-token oracle"
BEST_CLASSICAL = "best classical pipeline"
BEST_BASELINE = "best of UNet and classical pipelines"
DEFAULT_CHOICE = "linear head (frozen)"
# The stand-in "trained" precondition: final held-out MAE loss below this fraction of the learner-free predictor's
TRAINED_RATIO = 0.7
LEARNER_FREE_PREDICTOR = "every hidden patch filled with the mean of its image's visible pixels (per channel)"
# The stand-in "features learned" precondition: its frozen linear head against the same architecture's at random
# init, on the held-out rock (the random row is the stand-in's architecture only with vit_arch microct_standin)
FEATURES_LEARNED_METHOD = "linear head (frozen)"
TRAINED_HEADS = tuple(FROZEN_OF.values())  # frozen rows with a training budget (kNN segmentation has none)


def is_trained_arm(row) -> bool:
    """Whether a segmentation row is a gradient-trained arm, whose record carries its ``budget``: the frozen
    linear and CNN heads, every LoRA row and the UNet (not the classical pipelines, the random forest, kNN
    segmentation or the per-token oracle)."""
    return row["kind"] in ("LoRA", "from scratch") or (row["kind"] == "frozen" and row["method"] in TRAINED_HEADS)


def judged_ks(cfg, train_slices_per_rock: int | None = None) -> list[int]:
    """The k of the kNN grid that a claim is judged on: those below the training slices per rock (a
    larger k must take most neighbours from other rocks)."""
    if train_slices_per_rock is None:
        train_slices_per_rock = (cfg.samples_per_rock - 1) * cfg.slices_per_sample * len(cfg.scanners)
    return [int(k) for k in cfg.knn_ks if k < train_slices_per_rock]


def _seg(method: str, arm: str, split: str = "ood_rock") -> dict:
    return {"method": method, "arm": arm, "split": split}


def _resolvable(kind: str, split: str, baseline: str, margin: float = 0.0) -> Precondition:
    base = (
        _seg(baseline, "classical" if baseline == BEST_CLASSICAL else "baseline", split)
        if baseline in (BEST_CLASSICAL, BEST_BASELINE)
        else _seg(baseline, kind, split)
    )
    return Precondition(
        f"resolvable ({split})",
        Compare("miou", a=_seg(ORACLE, kind, split), b=base, margin=margin, table="segmentation"),
        why=f"the per-token oracle of this token grid (each token labelled with its true phase "
        f"fractions) scores above {baseline}{f' + {margin:g}' if margin else ''} on {split}: "
        "the grid allows a per-token head to win",
    )


def analogue_preconditions(kind: str) -> list[Precondition]:
    """What an analogue claim (the stand-in in place of DINOv2) rests on: the stand-in *trained* (its held-out
    MAE loss below :data:`TRAINED_RATIO` of the learner-free predictor's, each hidden patch filled with the mean
    of its image's visible pixels, on the same held-out crops and masks) and its *features learned* (its frozen
    linear head beats the same architecture's at random init on the held-out rock, paired over seeds)."""
    return [
        Precondition.trained(
            "final_loss",
            {"arm": kind},
            TRAINED_RATIO,
            learner_free="learner_free_loss",
            why=f"the stand-in's held-out MAE loss is below {TRAINED_RATIO:g} x the loss of {LEARNER_FREE_PREDICTOR}, "
            "on the same held-out crops and masks",
        ),
        Precondition.features_learned(
            "miou",
            pretrained=_seg(FEATURES_LEARNED_METHOD, kind),
            random=_seg(FEATURES_LEARNED_METHOD, "random"),
            table="segmentation",
        ),
    ]


def no_random_control(cfg) -> str | None:
    """Why the analogue claims cannot be judged (their "features learned" control is missing), or None."""
    if "random" not in cfg.backbones:
        return (
            "not evaluated: the 'features learned' control (a random-init ViT of the stand-in's architecture) was "
            "not run; add random to parameter backbones (with vit_arch microct_standin)"
        )
    if cfg.vit_arch != STANDIN_ARCH:
        return (
            f"not evaluated: the 'features learned' control must be the stand-in's architecture, but the random row "
            f"is {cfg.vit_arch!r}; set parameter vit_arch to {STANDIN_ARCH}"
        )
    return None


def declare_claims(
    cfg,
    unavailable: dict[str, str] | None = None,
    chosen: dict[str, dict[str, str]] | None = None,
    ks: list[int] | None = None,
) -> list[Claim]:
    """The paper's claims for DINOv2, then the same tests on labkit's stand-in ViT (an analogue).

    Context (all optional; with none, every arm is assumed available):

    - ``unavailable``: ``{arm: reason}`` for arms that could not run (``dinov2``, ``ssl``, ``resnet``,
      ``lora:<kind>``, ``tsne``), reasons a user can act on;
    - ``chosen``: ``{kind: {"lora": method, "best": method}}``, the methods picked on the
      in-distribution split (:func:`claim_context`), never on the split they are judged on;
    - ``ks``: the k judged for claim 1 (default: :func:`judged_ks`).
    """
    unavailable = dict(unavailable or {})
    chosen = dict(chosen or {})
    ks = judged_ks(cfg) if ks is None else list(ks)
    kinds = [k for k in ("dinov2", "ssl") if k in cfg.backbones] or ["dinov2"]
    claims = []
    for kind in kinds:
        suffix = "" if kind == "dinov2" else f"__{kind}"
        prefix = "" if kind == "dinov2" else f"[analogue: {BACKBONE_LABELS[kind]} in place of DINOv2] "
        pre = [] if kind == "dinov2" else analogue_preconditions(kind)
        blocked = unavailable.get(kind) or (None if kind == "dinov2" else no_random_control(cfg))
        pick = chosen.get(kind, {})
        lora_heads = list(cfg.lora_heads)
        lora_choice = pick.get("lora", f"{lora_heads[0]} head + LoRA" if lora_heads else "linear head + LoRA")
        best = pick.get("best", DEFAULT_CHOICE)
        no_lora = unavailable.get(f"lora:{kind}") or (
            None
            if kind in cfg.lora_backbones and lora_heads
            else "not evaluated: LoRA was not run for this backbone in this preset; add it to parameter lora_backbones "
            "(and a head to lora_heads), or run the paper preset"
        )

        def claim(
            cid, compare, preconditions, why_not=None, note="", suffix=suffix, prefix=prefix, pre=pre, blocked=blocked
        ):
            claims.append(
                Claim(
                    cid + suffix,
                    prefix + STATEMENTS[cid],
                    compare,
                    pre + preconditions,
                    unavailable=blocked or why_not,
                    note=note,
                )
            )

        # 1. kNN classification near perfect at every judged k, and one t-SNE cluster per rock
        c1 = [
            Compare(
                "accuracy",
                a={"arm": kind, "probe": "knn", "feature": "cls", "k": k},
                b=NEAR_PERFECT_ACCURACY,
                table="classification",
                label=f"kNN accuracy (k={k}) > {NEAR_PERFECT_ACCURACY}",
                effect=0.0,
                effect_source=THRESHOLD_SOURCE,
            )
            for k in ks
        ]
        c1.append(
            Compare(
                "tsne_silhouette",
                a={"arm": kind},
                b=CLUSTER_SILHOUETTE,
                table="embeddings",
                label=f"t-SNE silhouette of the rocks > {CLUSTER_SILHOUETTE}",
                effect=0.0,
                effect_source=THRESHOLD_SOURCE,
            )
        )
        claim(
            "c1_knn_rock_classification",
            c1,
            [],
            why_not=(
                None
                if ks
                else "not evaluated: no k of parameter knn_ks is below the training slices per rock; add a smaller k"
            )
            or unavailable.get("tsne"),
            note="judged at k = " + ", ".join(map(str, ks)) + " (below the training slices per rock)",
        )
        # 2. linear head vs every classical pipeline, third rock
        claim(
            "c2_linear_head_beats_classical",
            [
                Compare(
                    "miou",
                    a=_seg("linear head (frozen)", kind),
                    b=_seg(c, "classical"),
                    table="segmentation",
                    label=f"linear head > {c} (ood_rock)",
                    effect=PRACTICAL_MIOU,
                    effect_source=PRACTICAL_SOURCE,
                )
                for c in CLASSICAL
            ],
            [_resolvable(kind, "ood_rock", BEST_CLASSICAL)],
        )
        # 3. LoRA lifts each frozen head by at least LORA_LIFT
        claim(
            "c3_lora_lifts_heads",
            [
                Compare(
                    "miou",
                    a=_seg(f"{h} head + LoRA", kind),
                    b=_seg(FROZEN_OF[h], kind),
                    margin=LORA_LIFT,
                    table="segmentation",
                    label=f"{h} head: LoRA - frozen > {LORA_LIFT} (ood_rock)",
                    effect=PAPER_LORA_LIFT.get(h, PAPER_LORA_LIFT["linear"]),
                    effect_source=f"the paper's lift of the {h if h in PAPER_LORA_LIFT else 'linear'} head with LoRA "
                    f"(+{PAPER_LORA_LIFT.get(h, PAPER_LORA_LIFT['linear']):.2f} mIoU)",
                )
                for h in (lora_heads or ["linear"])
            ],
            [_resolvable(kind, "ood_rock", FROZEN_OF[(lora_heads or ["linear"])[0]], LORA_LIFT)]
            + [
                Precondition.same_budget(
                    a={"method": f"{h} head + LoRA", "arm": kind},
                    b={"method": FROZEN_OF[h], "arm": kind},
                    label=f"the {h} head with LoRA and the frozen {h} head",
                )
                for h in (lora_heads or ["linear"])
            ],
            why_not=no_lora,
            note="the lift is LoRA's only if the head trained with LoRA and the frozen head it is compared with had "
            "the same optimiser steps, batch size and schedule",
        )
        # 4. LoRA (head chosen in distribution) vs the UNet, with fewer trainable parameters
        claim(
            "c4_lora_beats_unet",
            [
                Compare(
                    "miou",
                    a=_seg(lora_choice, kind),
                    b=_seg("UNet from scratch", "unet"),
                    table="segmentation",
                    label=f"{lora_choice} > UNet from scratch (ood_rock)",
                    effect=PAPER_LORA_OVER_UNET,
                    effect_source="the paper's LoRA linear head over its UNet (0.81 vs 0.77 mIoU)",
                )
            ],
            [
                Precondition(
                    "fewer trainable parameters",
                    Check("param_ratio_vs_unet", {"method": lora_choice, "arm": kind}, "<", 1.0, table="params"),
                    why="the paper's comparison: the LoRA model trains fewer parameters than the UNet",
                ),
                Precondition.same_budget(
                    a={"method": lora_choice, "arm": kind},
                    b={"method": "UNet from scratch", "arm": "unet"},
                    label=f"{lora_choice} and the UNet from scratch (the claim is about fewer trainable parameters, "
                    "not fewer steps: steps, batch size and schedule must match)",
                ),
            ],
            why_not=no_lora,
            note=f"LoRA head chosen on the in-distribution split: {lora_choice}; the claim is about trainable "
            "parameters, so both train with the same steps, batch size and schedule",
        )
        claim(
            "c4b_lora_beats_resnet_lora",
            [
                Compare(
                    "miou",
                    a=_seg(lora_choice, kind),
                    b=_seg("linear head + LoRA", "resnet"),
                    table="segmentation",
                    label=f"{lora_choice} > ResNet + LoRA (ood_rock)",
                    effect=PRACTICAL_MIOU,
                    effect_source=PRACTICAL_SOURCE,
                )
            ],
            [
                Precondition.same_budget(
                    a={"method": lora_choice, "arm": kind},
                    b={"method": "linear head + LoRA", "arm": "resnet"},
                    label=f"{lora_choice} and the ResNet + LoRA",
                )
            ],
            why_not=no_lora or unavailable.get("resnet"),
        )
        # 5. the ViT's best method (chosen in distribution) vs the UNet and every classical pipeline, OOD
        c5 = [
            Compare(
                "miou",
                a=_seg(best, kind, split),
                b=_seg(m, arm, split),
                table="segmentation",
                label=f"{best} > {m} ({split})",
                effect=PRACTICAL_MIOU,
                effect_source=PRACTICAL_SOURCE,
            )
            for split in ("ood_rock", "ood_scanner")
            for m, arm in [(c, "classical") for c in CLASSICAL] + [("UNet from scratch", "unet")]
        ]
        claim(
            "c5_holds_out_of_distribution",
            c5,
            [_resolvable(kind, s, BEST_BASELINE) for s in ("ood_rock", "ood_scanner")],
            why_not=unavailable.get("ood_scanner"),
            note=f"method chosen on the in-distribution split: {best}",
        )
    return claims


def _arm(row) -> str:
    if row["kind"] == "classical":
        return "classical"
    if row["method"] == "UNet from scratch":
        return "unet"
    inverse = {v: k for k, v in BACKBONE_LABELS.items()}
    if row["backbone"] in inverse:
        return inverse[row["backbone"]]
    return "resnet" if "resnet" in str(row["backbone"]).lower() else str(row["backbone"])


def claim_tables(res: StudyResult) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on (one row per arm x condition x seed):
    ``segmentation`` (method, arm, split, seed, miou; with the per-token oracle and the best classical /
    baseline rows), ``classification`` (arm, probe, feature, k, seed, accuracy), ``embeddings`` (arm,
    seed, tsne_silhouette), ``pretraining`` (arm, final_loss, learner_free_loss, loss_ratio, ...), ``params``
    (method, arm, param_ratio_vs_unet) and ``budgets`` (method, arm, seed, steps, batch_size, lr, schedule,
    trainable_params)."""
    seg = res.segmentation
    seg = (
        seg[seg["status"] == "evaluated"].copy()
        if len(seg)
        else pd.DataFrame(columns=["method", "backbone", "kind", "split", "seed", "miou", "trainable_params", "status"])
    )
    seg["arm"] = [_arm(r) for _, r in seg.iterrows()] if len(seg) else []
    extra = []
    for (seed, split), g in seg.groupby(["seed", "split"]):
        cl = g[g["arm"] == "classical"]["miou"]
        base = g[g["arm"].isin(["classical", "unet"])]["miou"]
        if len(cl):
            extra.append(
                {"method": BEST_CLASSICAL, "arm": "classical", "split": split, "seed": seed, "miou": float(cl.max())}
            )
        if len(base):
            extra.append(
                {"method": BEST_BASELINE, "arm": "baseline", "split": split, "seed": seed, "miou": float(base.max())}
            )
    cols = ["method", "arm", "split", "seed", "miou"]
    segmentation = pd.concat([seg[cols], pd.DataFrame(extra, columns=cols)], ignore_index=True)
    cls = res.classification
    classification = pd.DataFrame(columns=["arm", "probe", "feature", "k", "seed", "accuracy"])
    if len(cls):
        ok = cls[cls["status"] == "evaluated"].copy()
        inverse = {v: k for k, v in BACKBONE_LABELS.items()}
        ok["arm"] = ok["backbone"].map(lambda b: inverse.get(b, b))
        if "feature" not in ok:
            ok["feature"] = "cls"
        classification = ok[["arm", "probe", "feature", "k", "seed", "accuracy"]].reset_index(drop=True)
    sil = res.silhouettes
    embeddings = pd.DataFrame(columns=["arm", "seed", "tsne_silhouette"])
    if len(sil):
        inverse = {v: k for k, v in BACKBONE_LABELS.items()}
        embeddings = sil.assign(arm=sil["backbone"].map(lambda b: inverse.get(b, b)))[
            ["arm", "seed", "tsne_silhouette"]
        ]
    pretraining = pd.DataFrame(
        [{"arm": k, **v} for k, v in res.pretraining.items()],
        columns=["arm", "loss_ratio", "final_loss", "trivial_loss", "steps", "learner_free_loss", "learner_free_ratio"],
    )
    params = pd.DataFrame(columns=["method", "arm", "param_ratio_vs_unet"])
    if len(seg):
        unet = seg[seg["arm"] == "unet"]["trainable_params"]
        if len(unet):
            p = seg[seg["trainable_params"].notna()].drop_duplicates(["method", "arm"])
            params = p.assign(param_ratio_vs_unet=p["trainable_params"] / float(unet.iloc[0]))[
                ["method", "arm", "param_ratio_vs_unet"]
            ].reset_index(drop=True)
    return {
        "segmentation": segmentation,
        "classification": classification,
        "embeddings": embeddings,
        "pretraining": pretraining,
        "params": params,
        "budgets": budget_rows(res),
    }


def budget_rows(res: StudyResult) -> pd.DataFrame:
    """Each trained arm's budget per seed: method, arm, seed, steps, batch_size, lr, schedule, trainable_params
    (the ``same budget`` preconditions read it)."""
    b = getattr(res, "budgets", None)
    cols = ["method", "arm", "seed", *BUDGET_KEYS]
    if b is None or not len(b):
        return pd.DataFrame(columns=cols)
    return b.assign(arm=[_arm(r) for _, r in b.iterrows()])[cols].reset_index(drop=True)


def claim_context(cfg, res: StudyResult) -> dict:
    """What :func:`declare_claims` needs to know from a run: the arms that could not run (with reasons a
    user can act on) and the methods chosen on the in-distribution split."""
    unavailable = {k: v for k, v in res.backbones.items() if not str(v).startswith("ok")}
    seg = res.segmentation
    resnet = seg[(seg["kind"] == "LoRA") & seg["backbone"].str.contains("resnet", case=False)] if len(seg) else seg
    if len(resnet) and not (resnet["status"] == "evaluated").any():
        unavailable["resnet"] = resnet["status"].iloc[0]
    if len(seg) and not (seg["split"] == "ood_scanner").any():
        unavailable["ood_scanner"] = (
            "not evaluated: the data have no slices of a training rock on the test scanner (each rock imaged on one "
            "scanner, as in the Digital Rocks Portal layouts), so the out-of-distribution-scanner half cannot be "
            "judged; list a second scanner for the training rocks in the manifest"
        )
    if "tsne" not in cfg.embedders:
        unavailable["tsne"] = "not evaluated: the t-SNE half of the claim was not run; add tsne to parameter embedders"
    chosen = {}
    for kind in ("dinov2", "ssl"):
        ours = (
            seg[
                (seg["backbone"] == BACKBONE_LABELS[kind])
                & (seg["status"] == "evaluated")
                & (seg["split"] == "in_distribution")
            ]
            if len(seg)
            else seg
        )
        if not len(ours):
            continue
        means = ours.groupby("method")["miou"].mean()
        pick = {"best": str(means.idxmax())}
        lora = means[[m for m in means.index if m.endswith("+ LoRA")]]
        if len(lora):
            pick["lora"] = str(lora.idxmax())
        chosen[kind] = pick
    ks = None
    if len(res.classification) and "k_below_class_size" in res.classification:
        c = res.classification
        ks = sorted(
            int(k)
            for k in c[(c["probe"] == "knn") & c["k_below_class_size"].fillna(False).astype(bool)]["k"]
            .dropna()
            .unique()
        )
    return {"unavailable": unavailable, "chosen": chosen, "ks": ks}


def headline_metrics(res: StudyResult) -> dict:
    seg = segmentation_table(res)
    out = {"seconds": round(res.seconds, 1)}
    for _, r in seg.iterrows():
        if r["status"] != "evaluated":
            continue
        key = f"{r['method']}|{r['backbone']}".strip("|")
        out[f"ood_rock_miou/{key}"] = r["ood_rock/miou"]

    def pick(method, kind):
        rows = seg[(seg["method"] == method) & (seg["backbone"] == BACKBONE_LABELS[kind])]
        return (
            float(rows["ood_rock/miou"].iloc[0])
            if len(rows) and "ood_rock/miou" in rows and pd.notna(rows["ood_rock/miou"].iloc[0])
            else None
        )

    out["ood_rock_miou_dinov2_linear"] = pick("linear head (frozen)", "dinov2")
    out["ood_rock_miou_random_vit_linear"] = pick("linear head (frozen)", "random")
    out["ood_rock_miou_ssl_vit_linear"] = pick("linear head (frozen)", "ssl")
    cls = res.classification
    for kind, lab in BACKBONE_LABELS.items():
        k = cls[(cls["backbone"] == lab) & (cls["probe"] == "knn") & (cls["status"] == "evaluated")]
        out[f"knn_accuracy_best_k/{kind}"] = float(k.groupby("k")["accuracy"].mean().max()) if len(k) else None
    return out


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def backbone_table(res: StudyResult) -> pd.DataFrame:
    """Each ViT row: its status (or why it is not evaluated) and how slices meet its patch grid."""
    return pd.DataFrame(
        [
            {"backbone": BACKBONE_LABELS[k], "status": v, "input": res.first.inputs.get(k, "")}
            for k, v in res.backbones.items()
        ]
    )


def classification_table(res: StudyResult) -> pd.DataFrame:
    df = res.classification
    ok = df[df["status"] == "evaluated"].copy()
    ok["probe"] = np.where(ok["probe"] == "knn", "kNN k=" + ok["k"].fillna(0).astype(int).astype(str), "linear")
    if "feature" not in ok:
        ok["feature"] = "cls"
    ok["feature"] = ok["feature"].map(lambda f: FEATURE_LABELS.get(f, f))
    agg = aggregate_over_seeds(ok, ["accuracy"], ["backbone", "feature", "probe"]) if len(ok) else pd.DataFrame()
    missing = df[df["status"] != "evaluated"].drop_duplicates("backbone")[["backbone", "status"]]
    if len(missing):
        missing = missing.assign(probe="all")
        agg = pd.concat([agg, missing], ignore_index=True)
    return agg.round(3)


def segmentation_table(res: StudyResult) -> pd.DataFrame:
    """Mean over seeds (and 95% CI of the mean IoU) per method and split, wide over splits."""
    df = res.segmentation
    ok = df[df["status"] == "evaluated"]
    rows = []
    keys = ["method", "backbone", "kind"]
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        og = ok.merge(pd.DataFrame([row]), on=keys)
        if len(og) == 0:
            row["status"] = g["status"].iloc[0]
            rows.append(row)
            continue
        row["status"] = "evaluated"
        row["trainable_params"] = og["trainable_params"].iloc[0]
        row["train_seconds"] = og.groupby("seed")["train_seconds"].first().mean()
        for split in SPLITS:
            sg = og[og["split"] == split]
            if not len(sg):  # a split the data cannot supply (one scanner per rock): no score, no interval
                row[f"{split}/miou"], row[f"{split}/miou_ci95"] = np.nan, ""
                continue
            a = aggregate_over_seeds(sg.assign(_=0), ["miou"], ["_"]).iloc[0]
            row[f"{split}/miou"] = a["miou_mean"]
            row[f"{split}/miou_ci95"] = f"[{a['miou_ci95_low']:.3f}, {a['miou_ci95_high']:.3f}]" if a["n"] > 1 else ""
            if split == "ood_rock":
                for p in PHASES:
                    row[f"ood_rock/iou/{p}"] = sg[f"iou/{p}"].mean()
        row["n_seeds"] = og["seed"].nunique()
        rows.append(row)
    table = pd.DataFrame(rows)
    # the per-token oracle of the same backbone's token grid beside every head row (its ceiling)
    if len(table) and "ood_rock/miou" in table:
        oracle = table[table["kind"] == "oracle"].set_index("backbone")["ood_rock/miou"]
        heads = table["kind"].isin(["frozen", "LoRA"])
        table.loc[heads, "ood_rock/token_ceiling"] = table.loc[heads, "backbone"].map(oracle)
    return table.round(3)


def budgets_table(res: StudyResult) -> pd.DataFrame:
    """Every trained arm's training budget (optimiser steps, batch size, peak learning rate, schedule, trainable
    parameters), one row per arm (with the seeds it ran; the budget is the same for every seed). Rows without
    gradient training (the classical pipelines, the random forest, kNN segmentation) have none."""
    b = getattr(res, "budgets", None)
    if b is None or not len(b):
        return pd.DataFrame(columns=["method", "backbone", *BUDGET_KEYS, "n_seeds"])
    keys = ["method", "backbone", *BUDGET_KEYS]
    return b.groupby(keys, sort=False, dropna=False)["seed"].nunique().rename("n_seeds").reset_index()


def ceiling_table(res: StudyResult) -> pd.DataFrame:
    """Per-token oracle mean IoU per token grid (mean over seeds), one column per split."""
    c = res.ceilings
    if c is None or not len(c):
        return pd.DataFrame(columns=["grid", *SPLITS])
    t = c.groupby(["grid", "split"])["miou"].mean().unstack("split").reset_index()
    t.insert(1, "tokens", [f"{g}x{g}" for g in t["grid"]])
    return t[["grid", "tokens", *[s for s in SPLITS if s in t]]].round(3)


def ceiling_figure(res: StudyResult, split: str = "ood_rock"):
    """The grid ceiling: the per-token oracle's mean IoU against the token grid side on ``split``, with
    the classical pipelines, the UNet and each ViT's frozen heads (at their grid) as marks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    c = res.ceilings
    if c is not None and len(c):
        g = c[c["split"] == split].groupby("grid")["miou"].agg(["mean", "min", "max"]).reset_index()
        ax.plot(g["grid"], g["mean"], "k-o", label="per-token oracle (ceiling)")
        ax.fill_between(g["grid"], g["min"], g["max"], color="k", alpha=0.1)
    seg = res.segmentation
    ok = seg[(seg["status"] == "evaluated") & (seg["split"] == split)] if len(seg) else seg
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    flat = ok[ok["kind"].isin(["classical", "from scratch"])].groupby("method")["miou"].mean()
    for i, (m, v) in enumerate(flat.sort_values().items()):
        ax.axhline(v, ls="--", lw=1, color=colours[i % len(colours)], label=f"{m} ({v:.2f})")
    grids = {k: v for k, v in res.grids.items()} if getattr(res, "grids", None) else {}
    heads = ok[ok["kind"].isin(["frozen", "LoRA"])]
    markers = iter("s^vDP*X")
    for (backbone, method), v in heads.groupby(["backbone", "method"])["miou"].mean().items():
        grid = grids.get(backbone)
        if grid:
            ax.plot([grid], [v], next(markers, "o"), ms=7, label=f"{method} | {backbone} ({v:.2f})")
    ax.set_xlabel("token grid side (tokens per slice side)")
    ax.set_ylabel(f"mean IoU ({split})")
    ax.set_title("What a per-token head can reach on each token grid")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def pretraining_figure(res: StudyResult):
    """The stand-in's MAE training curve (running training loss) and its held-out ratio to the trivial
    predictor, with the "trained" threshold."""
    import matplotlib.pyplot as plt

    curve = pretraining_curve(res)
    rec = (res.pretraining or {}).get("ssl") or {}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if len(curve):
        a1.plot(curve["step"], curve["loss"], "-", label="training loss (hidden patches)")
        if rec.get("trivial_loss"):
            a1.axhline(rec["trivial_loss"], color="k", ls="--", label="trivial predictor (held out)")
        a1.set_xlabel("optimiser step")
        a1.set_ylabel("MSE")
        a1.legend(fontsize=8)
        full = pd.DataFrame(rec.get("curve") or [])
        if "heldout_ratio" in full:
            h = full.dropna(subset=["heldout_ratio"])
            a2.plot(h["step"], h["heldout_ratio"], "o-", label="held-out loss / trivial")
        a2.axhline(TRAINED_RATIO, color="r", ls="--", label=f"'trained' threshold {TRAINED_RATIO}")
        a2.set_xlabel("optimiser step")
        a2.set_ylabel("ratio")
        a2.legend(fontsize=8)
    fig.suptitle(f"stand-in MAE pretraining: final held-out ratio {rec.get('loss_ratio', float('nan')):.3f}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------
def pca_figure(res: StudyResult, n_per_rock: int = 1):
    """Top: one slice per rock; below: the first three principal components of its patch
    tokens as RGB, one row per backbone (PCA fitted on those slices' tokens)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    ds = res.first_data
    idx = pca_indices(ds)
    kinds = list(res.first.features)
    fig, axes = plt.subplots(1 + len(kinds), len(idx), figsize=(2.1 * len(idx), 2.1 * (1 + len(kinds))), squeeze=False)
    for j, i in enumerate(idx):
        axes[0, j].imshow(ds.images[i], cmap="gray")
        axes[0, j].set_title(ds.rock_types[ds.rock[i]].replace("_", " "), fontsize=8)
    for r, kind in enumerate(kinds, 1):
        tok = res.first.features[kind].patch_of(idx)  # (n, D, h, w)
        n, d, h, w = tok.shape
        flat = tok.transpose(0, 2, 3, 1).reshape(-1, d)
        comp = PCA(3, random_state=0).fit_transform(flat)
        comp = (comp - comp.min(0)) / (np.ptp(comp, 0) + 1e-8)
        comp = comp.reshape(n, h, w, 3)
        for j in range(n):
            axes[r, j].imshow(comp[j], interpolation="nearest")
        axes[r, 0].set_ylabel(BACKBONE_LABELS[kind].split(" (")[0], fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def embedding_figure(res: StudyResult, method: str = "tsne", seed: int = 0):
    """Class tokens of every slice (first seed) in 2-D, coloured by rock type, one panel per backbone."""
    import matplotlib.pyplot as plt

    ds = res.first_data
    kinds = list(res.first.features)
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.2 * max(1, len(kinds)), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        cls = res.first.features[kind].cls
        if method == "tsne" and kind in res.first.embeddings:
            emb, title = (
                res.first.embeddings[kind]["tsne"],
                f"t-SNE (silhouette {res.first.embeddings[kind]['silhouette']:.2f})",
            )
        elif method == "umap":
            import umap

            emb = umap.UMAP(
                n_neighbors=min(15, len(cls) - 1), random_state=seed, n_jobs=1, metric="cosine"
            ).fit_transform(cls)
            title = "UMAP"
        else:
            from sklearn.decomposition import PCA

            emb, title = PCA(2, random_state=seed).fit_transform(cls), "PCA"
        for r, rock in enumerate(ds.rock_types):
            m = ds.rock == r
            ax.scatter(emb[m, 0], emb[m, 1], s=8, label=rock.replace("_", " "))
        ax.set_title(f"{BACKBONE_LABELS[kind]}\n{title}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def examples_figure(res: StudyResult, max_methods: int | None = None):
    """Out-of-distribution (third rock) slices: image, truth and each evaluated method's phases
    (all of them unless ``max_methods`` is given)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    ex = res.first.examples
    methods = [k for k in ex if k not in ("image", "truth")][:max_methods]
    cols = ["image", "truth"] + methods
    n = len(ex["image"])
    cmap = ListedColormap(["#1f1f5f", "#e8d9a8", "#6aa84f"])
    fig, axes = plt.subplots(n, len(cols), figsize=(1.7 * len(cols), 1.9 * n), squeeze=False)
    for i in range(n):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            if c == "image":
                ax.imshow(ex[c][i], cmap="gray")
            else:
                ax.imshow(ex[c][i], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            if i == 0:
                ax.set_title(c.replace(" | ", "\n").replace("(", "\n("), fontsize=6)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def real_geometry_figure(size: int = 112, seed: int = 0):
    """A real segmented Berea sandstone (DeePore repository, MIT; originally Imperial College) used as
    the phase map of the CT forward model, imaged by every scanner. None when the file is absent
    (it is never shipped with the kit)."""
    import matplotlib.pyplot as plt

    berea = microct.load_berea_phase_map()
    if berea is None:
        return None
    phases = berea[:5, :size, :size]
    mats = microct.materials_for_phases(phases)
    fig, axes = plt.subplots(1, len(microct.SCANNERS) + 1, figsize=(2.3 * (len(microct.SCANNERS) + 1), 2.6))
    for ax, name in zip(axes, microct.SCANNERS):
        grey = microct.ct_forward(mats, name, seed=seed)[2]
        ax.imshow(microct.normalize_volume(grey), cmap="gray")
        ax.set_title(name, fontsize=8)
    axes[-1].imshow(phases[2], cmap="gray_r", interpolation="nearest")
    axes[-1].set_title("Berea phase map\n(black = solid)", fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


# ---- plan: the preset's real budget (labkit plan)
def plan(cfg) -> list:
    """The grid of :func:`build_grid` (every arm assumed available): per seed, the U-Net from scratch, the ResNet
    + LoRA and each ViT's LoRA heads (``_fit_lora``); the segmentation training slices counted from the
    parameters (real volumes: from the data). Frozen heads on cached tokens and the probes are not counted."""
    import math

    from labkit.core.plan import GridPlan, TaskBudget, measure
    from labkit.models.backbones import create_backbone
    from labkit.models.lora import apply_lora

    n_seg = len(cfg.seg_train_rocks) * len(cfg.seg_train_scanners) * (cfg.samples_per_rock - 1) * cfg.slices_per_sample
    seeds, out = len(cfg.seeds), []

    def lora(name, make, targets, head, size, key):
        def build():
            tuned = apply_lora(make(), rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=targets)
            dim = getattr(tuned, "num_features", None) or tuned.embed_dim
            return BackboneSegmenter(tuned, create_head(head, dim, NUM_PHASES), size, cfg.resize_policy)

        return budget(name, build, size, cfg.lora_batch_size, cfg.lora_epochs, ("lora", key, head, size), "lora")

    def budget(name, build, size, batch, epochs, key, prefix):
        flops, tr, tot = measure(
            key + (cfg.lora_rank, cfg.lora_targets), build, [(2, 1, cfg.slice_size, cfg.slice_size)]
        )
        spe = math.ceil(n_seg / batch)
        return TaskBudget(
            name,
            seeds,
            n_seg,
            f"{size} px (slices of {cfg.slice_size})",
            min(batch, n_seg),
            spe * epochs,
            epochs,
            spe,
            tr,
            tot,
            flops * min(batch, n_seg),
            counts_epochs=True,
            requested_batch=batch,
            params={
                "batch": f"{prefix}_batch_size",
                "data_items": "samples_per_rock/slices_per_sample",
                "epochs": f"{prefix}_epochs",
            },
        )

    out.append(
        budget(
            "UNet from scratch",
            lambda: baselines.create_unet(NUM_PHASES, in_channels=1),
            cfg.slice_size,
            cfg.unet_batch_size,
            cfg.unet_epochs,
            ("unet", cfg.slice_size),
            "unet",
        )
    )
    size = vit_input_size(cfg)
    out.append(
        lora(
            "ResNet + LoRA linear",
            lambda: create_backbone(cfg.resnet_backbone, weights="random", num_classes=0),
            "resnet-convs",
            "linear",
            size,
            cfg.resnet_backbone,
        )
    )
    arch = {"dinov2": cfg.dinov2_backbone, "ssl": STANDIN_ARCH, "random": cfg.vit_arch}
    for kind in [k for k in VIT_KINDS if k in cfg.backbones and k in cfg.lora_backbones]:
        side = vit_input_size(cfg, arch[kind])
        if arch[kind] == STANDIN_ARCH:
            from labkit.methods.microct_standin import build_vit

            make = lambda side=side: build_vit(side)  # noqa: E731
        else:
            make = lambda side=side, a=arch[kind]: create_backbone(a, weights="random", img_size=side, num_classes=0)  # noqa: E731
        for head in cfg.lora_heads:
            out.append(lora(f"{kind} ViT + LoRA {head}", make, cfg.lora_targets, head, side, arch[kind]))
    note = "slices counted from the parameters" + (
        "" if cfg.data_source == "simulated" else " (real volumes: from data)"
    )
    return [
        GridPlan(
            STUDY,
            "grid",
            f"{len(parts(cfg))} parts x {seeds} seeds",
            out,
            notes=note + "; frozen heads and probes on cached tokens not counted",
        )
    ]
