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
* ``random``: the same ViT architecture randomly initialised (a control: what pretraining buys).
* ``ssl``: the same ViT pretrained by labkit (masked autoencoding, :mod:`labkit.methods.ssl`) on
  unlabeled simulated slices that are disjoint from every evaluation slice.
* ``resnet``: a pretrained ResNet with LoRA (the paper's weaker baseline); pretrained weights only.

The module returns DataFrames, dicts and figures; the notebook hands them to the Report.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from labkit.core.errors import DataError, LabkitError, ParameterError, WeightsUnavailableError
from labkit.core.metrics import ConfusionMatrix, aggregate_over_seeds
from labkit.core.seeding import seed_everything
from labkit.core.stats import paired_by_index
from labkit.data import microct
from labkit.data.microct import PHASES
from labkit.methods import baselines, probing
from labkit.models.vit_heads import (BackboneSegmenter, count_parameters, create_head,
                                     grid_input_size, patch_size_of)

STUDY = "dinov2_microct"
NUM_PHASES = len(PHASES)
BACKBONE_LABELS = {
    "dinov2": "DINOv2 (pretrained)",
    "random": "same ViT, random init (control)",
    "ssl": "labkit SSL ViT (MAE on simulated slices)",
}
CLASSICAL = ("multi-Otsu", "K-means", "fuzzy C-means", "random forest (filter bank)")
SPLITS = ("in_distribution", "ood_rock", "ood_scanner")
# Claim thresholds (stated in each claim's evidence)
NEAR_PERFECT_ACCURACY = 0.95
CLUSTER_SILHOUETTE = 0.25
LORA_LIFT = 0.05


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
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
    need(cfg.seg_test_rock in cfg.rock_types,
         f"parameter 'seg_test_rock' {cfg.seg_test_rock!r} is not in rock_types {cfg.rock_types}")
    need(cfg.seg_test_rock not in cfg.seg_train_rocks,
         f"parameter 'seg_test_rock' {cfg.seg_test_rock!r} is also a training rock (seg_train_rocks): "
         "the out-of-distribution split would not be out of distribution")
    extra = [s for s in cfg.seg_train_scanners if s not in cfg.scanners]
    need(not extra, f"parameter 'seg_train_scanners' names {extra}, which are not in scanners {cfg.scanners}")
    need(cfg.seg_test_scanner in cfg.scanners,
         f"parameter 'seg_test_scanner' {cfg.seg_test_scanner!r} is not in scanners {cfg.scanners}")
    need(cfg.seg_test_scanner not in cfg.seg_train_scanners,
         f"parameter 'seg_test_scanner' {cfg.seg_test_scanner!r} is also a training scanner (seg_train_scanners)")
    if cfg.resize_policy in ("pad", "error") and cfg.img_size is not None and cfg.img_size != cfg.slice_size:
        raise ParameterError(f"parameter 'img_size' {cfg.img_size} differs from slice_size {cfg.slice_size}, but "
                             f"resize_policy {cfg.resize_policy!r} does not resample; use resize_policy 'resize' "
                             "or img_size null")


def make_data(cfg, seed: int) -> microct.MicroCTSlices:
    """All rocks x all scanners, ``samples_per_rock`` rock samples each, cut into slices."""
    return microct.simulate_slices(tuple(cfg.rock_types), tuple(cfg.scanners), samples_per_rock=cfg.samples_per_rock,
                                   slices_per_sample=cfg.slices_per_sample, size=cfg.slice_size,
                                   slice_step=cfg.slice_step, grain_scale=cfg.grain_scale, seed=1000 + seed,
                                   progress=cfg.progress)


def splits(cfg, ds: microct.MicroCTSlices) -> dict[str, np.ndarray]:
    """Indices of every split. The last rock sample (geometry) of each rock is held out."""
    test_geom = [cfg.samples_per_rock - 1]
    train_geoms = list(range(cfg.samples_per_rock - 1))
    return {
        "cls_train": np.flatnonzero(ds.where(geometries=train_geoms)),
        "cls_test": np.flatnonzero(ds.where(geometries=test_geom)),
        "seg_train": np.flatnonzero(ds.where(rocks=cfg.seg_train_rocks, scanners=cfg.seg_train_scanners,
                                             geometries=train_geoms)),
        "in_distribution": np.flatnonzero(ds.where(rocks=cfg.seg_train_rocks, scanners=cfg.seg_train_scanners,
                                                   geometries=test_geom)),
        "ood_rock": np.flatnonzero(ds.where(rocks=[cfg.seg_test_rock], scanners=cfg.seg_train_scanners)),
        "ood_scanner": np.flatnonzero(ds.where(rocks=cfg.seg_train_rocks, scanners=[cfg.seg_test_scanner],
                                               geometries=test_geom)),
    }


def data_summary(cfg, ds: microct.MicroCTSlices) -> pd.DataFrame:
    sp = splits(cfg, ds)
    rows = []
    for name, idx in sp.items():
        sub = ds.subset(idx)
        frac = np.bincount(sub.masks.ravel(), minlength=NUM_PHASES) / max(sub.masks.size, 1)
        rows.append({"split": name, "slices": len(idx),
                     "rocks": ", ".join(sorted({ds.rock_types[r] for r in sub.rock})),
                     "scanners": ", ".join(sorted({ds.scanners[s] for s in sub.scanner})),
                     **{f"fraction/{p}": round(float(f), 3) for p, f in zip(PHASES, frac)}})
    return pd.DataFrame(rows)


def data_figure(ds: microct.MicroCTSlices):
    """One slice per rock type (columns) and scanner (rows), with its phase map (last row)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    nr, nc = len(ds.scanners) + 1, len(ds.rock_types)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc, 2.2 * nr), squeeze=False)
    cmap = ListedColormap(["#1f1f5f", "#e8d9a8", "#6aa84f"])
    for ri, rock in enumerate(ds.rock_types):
        for si, sc in enumerate(ds.scanners):
            idx = np.flatnonzero((ds.rock == ri) & (ds.scanner == si) & (ds.geometry == 0))
            ax = axes[si, ri]
            ax.imshow(ds.images[idx[0]], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{rock.replace('_', ' ')}" if si == 0 else "", fontsize=8)
            if ri == 0:
                ax.set_ylabel(sc, fontsize=8)
        axes[-1, ri].imshow(ds.masks[idx[0]], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
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

    @property
    def ok(self) -> bool:
        return self.model is not None


@functools.lru_cache(maxsize=None)
def arch_patch_size(name: str) -> int:
    """Patch side of a ViT architecture (from its timm name, else from a randomly built model)."""
    from labkit.models.backbones import create_backbone, timm_name

    m = re.search(r"patch(\d+)", timm_name(name))
    if m:
        return int(m.group(1))
    return patch_size_of(create_backbone(name, weights="random", num_classes=0))


def vit_input_size(cfg, arch: str | None = None) -> int:
    """The ViT's input side: ``img_size`` (or the slice side) fitted to the patch grid of ``arch``
    (default ``vit_arch``) by ``resize_policy``: the next multiple of the patch (``resize``,
    ``pad``) or a DataError (``error``)."""
    size = int(cfg.img_size or cfg.slice_size)
    patch = arch_patch_size(arch or cfg.vit_arch)
    try:
        return grid_input_size(size, patch, cfg.resize_policy)
    except DataError as exc:
        raise DataError(f"{'img_size' if cfg.img_size else 'slice_size'} {size}: {exc} "
                        f"(parameter resize_policy is 'error')") from exc


def _ssl_images(cfg) -> np.ndarray:
    """Unlabeled slices for self-supervised pretraining: simulated with their own seed, so no
    evaluation slice is ever seen."""
    ds = microct.simulate_slices(tuple(cfg.rock_types), tuple(cfg.scanners),
                                 samples_per_rock=max(1, cfg.ssl_samples_per_rock),
                                 slices_per_sample=cfg.slices_per_sample, size=cfg.slice_size,
                                 slice_step=cfg.slice_step, grain_scale=cfg.grain_scale, seed=987_654)
    return ds.images


def fold_input_standardisation(encoder: torch.nn.Module) -> None:
    """labkit's SSL pretraining standardises inputs with the pretraining set's per-channel
    mean/std (``encoder.pretrain_meta``); fold that affine map into the patch embedding so the
    encoder takes the same inputs as every other backbone here (exact: the embedding is linear)."""
    meta = getattr(encoder, "pretrain_meta", None) or {}
    if "pixel_mean" not in meta:
        return
    proj = encoder.patch_embed.proj
    mean = torch.tensor(meta["pixel_mean"], dtype=proj.weight.dtype).view(1, -1, 1, 1)
    std = torch.tensor(meta["pixel_std"], dtype=proj.weight.dtype).view(1, -1, 1, 1)
    with torch.no_grad():
        w = proj.weight / std
        shift = (w * mean).sum(dim=(1, 2, 3))
        proj.weight.copy_(w)
        if proj.bias is not None:
            proj.bias.sub_(shift)
    meta.pop("pixel_mean"), meta.pop("pixel_std")


def load_ssl_backbone(cfg, progress: bool = False) -> Backbone:
    """The ViT pretrained by labkit's masked autoencoder; cached on disk (safetensors) keyed by
    its settings, so reruns do not pretrain again."""
    from labkit.core.checkpoints import load_checkpoint, load_state_into, save_checkpoint
    from labkit.core.paths import cache_dir
    from labkit.models.backbones import create_backbone

    label = BACKBONE_LABELS["ssl"]
    try:
        from labkit.methods.ssl import pretrain_mae
    except ImportError as exc:
        return Backbone("ssl", label, None, "", f"not evaluated: labkit.methods.ssl.pretrain_mae is not "
                                                  f"available ({exc})")
    size = vit_input_size(cfg)
    settings = {"arch": cfg.vit_arch, "img_size": size, "epochs": cfg.ssl_epochs,
                "samples_per_rock": cfg.ssl_samples_per_rock, "slice_size": cfg.slice_size,
                "rocks": list(cfg.rock_types), "scanners": list(cfg.scanners), "grain_scale": cfg.grain_scale,
                "slices_per_sample": cfg.slices_per_sample, "slice_step": cfg.slice_step,
                "max_seconds": cfg.ssl_max_seconds, "fold": 1}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("ssl") / f"mae_{cfg.vit_arch}_{key}"
    weights_id = f"labkit-mae({key})"
    model = create_backbone(cfg.vit_arch, weights="random", img_size=size, num_classes=0)
    if path.with_suffix(".safetensors").is_file():
        state, _ = load_checkpoint(path)
        load_state_into(model, state, source=str(path))
        return Backbone("ssl", label, model, weights_id, "ok (cached)", cfg.vit_arch, size,
                        input_note(cfg, model, size))
    # The encoder must see exactly what the probes feed it: 3-channel, ImageNet-normalised slices.
    from labkit.models.vit_heads import prepare_input

    images = prepare_input(torch.from_numpy(_ssl_images(cfg)), size).numpy()
    kwargs = {"arch": cfg.vit_arch, "img_size": size, "epochs": cfg.ssl_epochs, "seed": 0,
              "progress": progress, "max_seconds": cfg.ssl_max_seconds, "batch_size": 32}
    accepted = inspect.signature(pretrain_mae).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        encoder, history = pretrain_mae(images, **kwargs)
    except (LabkitError, ValueError, TypeError, RuntimeError) as exc:
        return Backbone("ssl", label, None, "", f"not evaluated: pretrain_mae failed ({type(exc).__name__}: {exc})")
    fold_input_standardisation(encoder)
    try:
        load_state_into(model, encoder.state_dict(), source="pretrain_mae encoder", strict=False)
    except LabkitError as exc:
        return Backbone("ssl", label, None, "", f"not evaluated: the MAE encoder does not fit {cfg.vit_arch} ({exc})")
    save_checkpoint(path, model.state_dict(), {"study": STUDY, "settings": settings,
                                               "history": pd.DataFrame(history).to_dict("list")
                                               if history is not None else None})
    return Backbone("ssl", label, model, weights_id, "ok", cfg.vit_arch, size, input_note(cfg, model, size))


def _weights_reason(exc: Exception) -> str:
    """'not evaluated: weights unavailable (...)' with the first sentence of the factory's message."""
    first = str(exc).splitlines()[0].split(" Provide them")[0]
    return (f"not evaluated: weights unavailable ({first} Provide them in LABKIT_WEIGHTS_DIR, the Hugging Face "
            "cache or from the hub; random weights are never substituted)")


def load_backbones(cfg, seed: int, ssl_backbone: Backbone | None = None) -> list[Backbone]:
    """DINOv2 (pretrained or not evaluated), the random control (seeded), the SSL ViT; only the
    kinds named in ``backbones``."""
    from labkit.models.backbones import create_backbone

    out = []
    if "dinov2" in cfg.backbones:
        size = vit_input_size(cfg, cfg.dinov2_backbone)
        try:
            dino = create_backbone(cfg.dinov2_backbone, weights=cfg.dinov2_weights, img_size=size, num_classes=0)
            out.append(Backbone("dinov2", BACKBONE_LABELS["dinov2"], dino, f"{cfg.dinov2_weights}", "ok",
                                cfg.dinov2_backbone, size, input_note(cfg, dino, size)))
        except WeightsUnavailableError as exc:
            out.append(Backbone("dinov2", BACKBONE_LABELS["dinov2"], None, "",
                                _weights_reason(exc), cfg.dinov2_backbone))
    if "random" in cfg.backbones:
        size = vit_input_size(cfg)
        seed_everything(seed)
        ctrl = create_backbone(cfg.vit_arch, weights="random", img_size=size, num_classes=0)
        out.append(Backbone("random", BACKBONE_LABELS["random"], ctrl, f"random(seed={seed})", "ok", cfg.vit_arch,
                            size, input_note(cfg, ctrl, size)))
    if "ssl" in cfg.backbones:
        out.append(ssl_backbone if ssl_backbone is not None else
                   Backbone("ssl", BACKBONE_LABELS["ssl"], None, "", "not evaluated: not loaded"))
    return out


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
        return (f"slices of {cfg.slice_size} px are reflect-padded to {size} px ({grid}); the padding is not "
                f"trained on and predictions are cropped back to {cfg.slice_size} px")
    return (f"slices of {cfg.slice_size} px are resized bilinearly to {size} px ({grid}); predictions are "
            f"resized back to {cfg.slice_size} px")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------------------
def _scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    cm = ConfusionMatrix(NUM_PHASES).update(pred, target)
    return cm.scores(PHASES)


@dataclass
class SeedResult:
    classification: list[dict] = field(default_factory=list)
    segmentation: list[dict] = field(default_factory=list)
    embeddings: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, probing.Features] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: microct.MicroCTSlices | None = None
    backbones: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # kind -> input_note


def _seg_rows(out: SeedResult, seed, method, backbone, kind, trainable, seconds, preds: dict, ds, sp, example_idx):
    for split in SPLITS:
        s = _scores(preds[split], ds.masks[sp[split]])
        out.segmentation.append({"seed": seed, "method": method, "backbone": backbone, "kind": kind,
                                 "split": split, "trainable_params": trainable, "train_seconds": seconds,
                                 "status": "evaluated", "miou": s["miou"],
                                 **{f"iou/{p}": s[f"iou/{p}"] for p in PHASES}})
    key = f"{method} | {backbone}" if backbone else method
    out.examples[key] = preds["ood_rock"][example_idx]


def _not_evaluated(out: SeedResult, seed, method, backbone, kind, reason):
    for split in SPLITS:
        out.segmentation.append({"seed": seed, "method": method, "backbone": backbone, "kind": kind,
                                 "split": split, "trainable_params": np.nan, "train_seconds": np.nan,
                                 "status": reason, "miou": np.nan, **{f"iou/{p}": np.nan for p in PHASES}})


def _loader(images, masks, batch_size, seed, shuffle=True):
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32)),
                       torch.from_numpy(np.ascontiguousarray(masks, np.int64)))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def _train_segmenter(cfg, model, images, masks, *, batch_size, epochs, lr, seed, desc):
    """labkit's training loop, on the GPU when there is one (the loop moves batches to the model)."""
    from labkit.methods.training import fit

    return fit(model.to(_device()), _loader(images, masks, batch_size, seed), task="segmentation",
               num_classes=NUM_PHASES, epochs=epochs, lr=lr, scheduler="cosine", seed=seed,
               progress=cfg.progress, desc=desc)


def _predict(model, images, batch_size=16) -> np.ndarray:
    """Phase maps (N, H, W) of grey slices (N, H, W), batched, on the model's device."""
    from labkit.methods.training import predict_segmentation

    return predict_segmentation(model, images[:, None], batch_size)


def tsne_silhouette(cls_tokens: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE of class tokens and the silhouette of the rock labels in it."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    perplexity = float(min(30, max(2, (len(cls_tokens) - 1) // 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(cls_tokens)
    return emb, float(silhouette_score(emb, labels)) if len(np.unique(labels)) > 1 else float("nan")


def pca_indices(ds: microct.MicroCTSlices) -> np.ndarray:
    """One slice per rock type (first scanner, first sample): the slices of the patch-PCA figure."""
    return np.array([np.flatnonzero((ds.rock == r) & (ds.scanner == 0))[0] for r in range(len(ds.rock_types))])


def run_seed(cfg, seed: int, ssl_backbone: Backbone | None = None) -> SeedResult:
    """Everything for one seed: data, features, classification, segmentation."""
    check_config(cfg)
    out = SeedResult()
    ds = make_data(cfg, seed)
    out.data = ds
    sp = splits(cfg, ds)
    size = (cfg.slice_size, cfg.slice_size)
    seg_tr = ds.subset(sp["seg_train"])
    example_idx = np.array([0, len(sp["ood_rock"]) // 2])
    out.examples["image"] = ds.images[sp["ood_rock"]][example_idx]
    out.examples["truth"] = ds.masks[sp["ood_rock"]][example_idx]
    n_per_class = np.bincount(ds.rock[sp["cls_train"]]).min()
    device = _device()

    # --- classical baselines -------------------------------------------------------------------
    classical = [("multi-Otsu", baselines.ClusterSegmenter("otsu", NUM_PHASES, cfg.denoise_sigma, seed)),
                 ("K-means", baselines.ClusterSegmenter("kmeans", NUM_PHASES, cfg.denoise_sigma, seed)),
                 ("fuzzy C-means", baselines.ClusterSegmenter("fcm", NUM_PHASES, cfg.denoise_sigma, seed)),
                 ("random forest (filter bank)", baselines.FilterBankForest(n_estimators=cfg.rf_trees, seed=seed))]
    for name, est in classical:
        t0 = time.perf_counter()
        est.fit(seg_tr.images, seg_tr.masks)
        seconds = time.perf_counter() - t0
        preds = {s: est.predict(ds.images[sp[s]]) for s in SPLITS}
        _seg_rows(out, seed, name, "", "classical", np.nan, seconds, preds, ds, sp, example_idx)

    # --- UNet from scratch -----------------------------------------------------------------------
    seed_everything(seed)
    unet = baselines.create_unet(NUM_PHASES, in_channels=1)
    res = _train_segmenter(cfg, unet, seg_tr.images, seg_tr.masks, batch_size=cfg.unet_batch_size,
                           epochs=cfg.unet_epochs, lr=cfg.unet_lr, seed=seed, desc="UNet from scratch")
    preds = {s: _predict(res.model, ds.images[sp[s]]) for s in SPLITS}
    _seg_rows(out, seed, "UNet from scratch", "", "from scratch", count_parameters(unet), res.seconds, preds, ds, sp,
              example_idx)
    del unet, res

    # --- ResNet + LoRA (pretrained only) ------------------------------------------------------------
    _resnet_lora(cfg, seed, out, ds, sp, seg_tr, example_idx)

    # --- ViT backbones -------------------------------------------------------------------------------
    seg_index = np.concatenate([sp["seg_train"]] + [sp[s] for s in SPLITS])
    keep_patch = np.union1d(seg_index, pca_indices(ds))
    for bb in load_backbones(cfg, seed, ssl_backbone):
        out.backbones[bb.kind] = bb.status
        if not bb.ok:
            for split in ("knn", "linear"):
                out.classification.append({"seed": seed, "backbone": bb.label, "probe": split, "k": np.nan,
                                           "accuracy": np.nan, "status": bb.status})
            for m in ("linear head (frozen)", "CNN head (frozen)", "kNN segmentation (frozen)"):
                _not_evaluated(out, seed, m, bb.label, "frozen", bb.status)
            for h in cfg.lora_heads:
                _not_evaluated(out, seed, f"{h} head + LoRA", bb.label, "LoRA", bb.status)
            continue
        out.notes.append(f"{bb.label}: {bb.input}")
        out.inputs[bb.kind] = bb.input
        bb.model.to(device)
        feats = probing.extract_features(bb.model, ds.images, img_size=bb.img_size, backbone=bb.name,
                                         weights=bb.weights_id, batch_size=cfg.feature_batch_size,
                                         policy=cfg.resize_policy, progress=cfg.progress, patch_index=keep_patch)
        # keep only what the figures need (class tokens, the PCA slices' patch tokens)
        pca_idx = np.sort(pca_indices(ds))
        out.features[bb.kind] = probing.Features(feats.cls, feats.patch_of(pca_idx), feats.seconds,
                                                 feats.from_cache, feats.key, pca_idx)
        # classification
        tr, te = sp["cls_train"], sp["cls_test"]
        preds = probing.knn_predict(feats.cls[tr], ds.rock[tr], feats.cls[te], cfg.knn_ks,
                                    temperature=cfg.knn_temperature, num_classes=len(ds.rock_types))
        for k, p in preds.items():
            out.classification.append({"seed": seed, "backbone": bb.label, "probe": "knn", "k": k,
                                       "k_below_class_size": bool(k < n_per_class),
                                       "accuracy": float((p == ds.rock[te]).mean()), "status": "evaluated"})
        p = probing.linear_probe(feats.cls[tr], ds.rock[tr], feats.cls[te], seed=seed)
        out.classification.append({"seed": seed, "backbone": bb.label, "probe": "linear", "k": np.nan,
                                   "accuracy": float((p == ds.rock[te]).mean()), "status": "evaluated"})
        if "tsne" in cfg.embedders:
            emb, sil = tsne_silhouette(feats.cls, ds.rock, seed)
            out.embeddings[bb.kind] = {"tsne": emb, "silhouette": sil}
        # frozen segmentation heads; with reflect-padded inputs the masks are padded with an
        # ignored label and predictions cropped back to the slice
        padded = (bb.img_size, bb.img_size) if cfg.resize_policy == "pad" and bb.img_size != cfg.slice_size else None
        tr_masks = seg_tr.masks if padded is None else probing.pad_masks(seg_tr.masks, bb.img_size)
        tok_tr = feats.patch_of(sp["seg_train"])
        for head, name in (("linear", "linear head (frozen)"), ("cnn", "CNN head (frozen)")):
            hr = probing.train_token_head(tok_tr, tr_masks, kind=head, num_classes=NUM_PHASES,
                                          epochs=cfg.head_epochs, lr=cfg.head_lr, batch_size=cfg.batch_size,
                                          seed=seed, progress=cfg.progress)
            preds = {s: probing.predict_token_head(hr.model, feats.patch_of(sp[s]), size, padded_size=padded)
                     for s in SPLITS}
            _seg_rows(out, seed, name, bb.label, "frozen", hr.trainable_params, hr.seconds, preds, ds, sp,
                      example_idx)
        t0 = time.perf_counter()
        preds = {s: probing.knn_segment(tok_tr, tr_masks, feats.patch_of(sp[s]), size, num_classes=NUM_PHASES,
                                        k=cfg.knn_seg_k, temperature=cfg.knn_temperature,
                                        memory_size=cfg.knn_seg_memory, seed=seed, padded_size=padded)
                 for s in SPLITS}
        _seg_rows(out, seed, "kNN segmentation (frozen)", bb.label, "frozen", 0, time.perf_counter() - t0, preds,
                  ds, sp, example_idx)
        del feats, tok_tr
        # LoRA fine-tuning
        for head in cfg.lora_heads:
            name = f"{head} head + LoRA"
            if bb.kind not in cfg.lora_backbones:
                _not_evaluated(out, seed, name, bb.label, "LoRA", "not evaluated: LoRA not run for this backbone "
                               "in this preset (parameter lora_backbones)")
                continue
            model, r = _fit_lora(cfg, bb.model, head, seg_tr, seed, f"LoRA {head} {bb.kind}", img_size=bb.img_size)
            preds = {s: _predict(r.model, ds.images[sp[s]], cfg.batch_size) for s in SPLITS}
            _seg_rows(out, seed, name, bb.label, "LoRA", count_parameters(model), r.seconds, preds, ds, sp,
                      example_idx)
            del model, r
        bb.model.to("cpu")
    out.notes = sorted(set(out.notes))
    return out


def _fit_lora(cfg, backbone, head_kind, seg_tr, seed, desc, targets=None, img_size=None):
    from labkit.models.lora import apply_lora

    seed_everything(seed)
    tuned = apply_lora(copy.deepcopy(backbone), rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                       targets=targets or cfg.lora_targets)
    dim = getattr(backbone, "num_features", None) or backbone.embed_dim
    model = BackboneSegmenter(tuned, create_head(head_kind, dim, NUM_PHASES), img_size or vit_input_size(cfg),
                              cfg.resize_policy)
    r = _train_segmenter(cfg, model, seg_tr.images, seg_tr.masks, batch_size=cfg.lora_batch_size,
                         epochs=cfg.lora_epochs, lr=cfg.lora_lr, seed=seed, desc=desc)
    return model, r


def _resnet_lora(cfg, seed, out, ds, sp, seg_tr, example_idx):
    from labkit.models.backbones import create_backbone

    label = f"{cfg.resnet_backbone} (pretrained)"
    if not cfg.resnet_lora:
        _not_evaluated(out, seed, "linear head + LoRA", label, "LoRA", "not evaluated: disabled (resnet_lora)")
        return
    try:
        resnet = create_backbone(cfg.resnet_backbone, weights="pretrained", num_classes=0)
    except WeightsUnavailableError as exc:
        # LoRA on a random ResNet would measure nothing the paper claims: no silent substitute.
        _not_evaluated(out, seed, "linear head + LoRA", label, "LoRA",
                       _weights_reason(exc))
        return
    model, r = _fit_lora(cfg, resnet, "linear", seg_tr, seed, "LoRA resnet", targets="resnet-convs")
    preds = {s: _predict(r.model, ds.images[sp[s]], cfg.batch_size) for s in SPLITS}
    _seg_rows(out, seed, "linear head + LoRA", label, "LoRA", count_parameters(model), r.seconds, preds, ds, sp,
              example_idx)


# ---------------------------------------------------------------------------------------------------
# All seeds
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


def run(cfg) -> StudyResult:
    t0 = time.perf_counter()
    check_config(cfg)
    vit_input_size(cfg)  # an image side the patch grid cannot take fails here, before any work
    ssl_bb = load_ssl_backbone(cfg, cfg.progress) if "ssl" in cfg.backbones else None
    cls_rows, seg_rows, sil_rows, notes, first = [], [], [], [], None
    from tqdm.auto import tqdm

    for seed in tqdm(cfg.seeds, desc="seeds", disable=not cfg.progress):
        r = run_seed(cfg, seed, ssl_bb)
        cls_rows += r.classification
        seg_rows += r.segmentation
        notes += r.notes
        for kind, e in r.embeddings.items():
            sil_rows.append({"seed": seed, "backbone": BACKBONE_LABELS[kind], "tsne_silhouette": e["silhouette"]})
        if first is None:
            first = r
    return StudyResult(pd.DataFrame(cls_rows), pd.DataFrame(seg_rows), pd.DataFrame(sil_rows), first,
                       first.data, first.backbones, sorted(set(notes)), time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def backbone_table(res: StudyResult) -> pd.DataFrame:
    """Each ViT row: its status (or why it is not evaluated) and how slices meet its patch grid."""
    return pd.DataFrame([{"backbone": BACKBONE_LABELS[k], "status": v, "input": res.first.inputs.get(k, "")}
                         for k, v in res.backbones.items()])


def classification_table(res: StudyResult) -> pd.DataFrame:
    df = res.classification
    ok = df[df["status"] == "evaluated"].copy()
    ok["probe"] = np.where(ok["probe"] == "knn", "kNN k=" + ok["k"].fillna(0).astype(int).astype(str), "linear")
    agg = aggregate_over_seeds(ok, ["accuracy"], ["backbone", "probe"]) if len(ok) else pd.DataFrame()
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
            a = aggregate_over_seeds(sg.assign(_=0), ["miou"], ["_"]).iloc[0]
            row[f"{split}/miou"] = a["miou_mean"]
            row[f"{split}/miou_ci95"] = f"[{a['miou_ci95_low']:.3f}, {a['miou_ci95_high']:.3f}]" if a["n"] > 1 else ""
            if split == "ood_rock":
                for p in PHASES:
                    row[f"ood_rock/iou/{p}"] = sg[f"iou/{p}"].mean()
        row["n_seeds"] = og["seed"].nunique()
        rows.append(row)
    return pd.DataFrame(rows).round(3)


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
            emb, title = res.first.embeddings[kind]["tsne"], f"t-SNE (silhouette {res.first.embeddings[kind]['silhouette']:.2f})"
        elif method == "umap":
            import umap

            emb = umap.UMAP(n_neighbors=min(15, len(cls) - 1), random_state=seed, n_jobs=1,
                            metric="cosine").fit_transform(cls)
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


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------
def _per_seed(df: pd.DataFrame, method: str, backbone: str, split: str) -> pd.Series:
    sel = df[(df["method"] == method) & (df["backbone"] == backbone) & (df["split"] == split)
             & (df["status"] == "evaluated")]
    return sel.set_index("seed")["miou"]


def _paired(a: pd.Series, b: pd.Series) -> dict:
    d = paired_by_index(a, b)
    if d["n"] == 0:
        return {}
    return {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}


def _beats(d: dict) -> bool:
    """Better on average and on every seed."""
    return bool(d) and d["mean_diff"] > 0 and d["wins"] == d["n"]


def _status_of(res: StudyResult, kind: str) -> str:
    return res.backbones.get(kind, "not evaluated: backbone not in this preset")


def evaluate_claims(res: StudyResult, kind: str = "dinov2") -> list[dict]:
    """The paper's five claims for one backbone kind (``dinov2``: the paper's; ``ssl``: the
    same tests applied to labkit's SSL ViT as an analogue). Returns Report.claim kwargs."""
    label = BACKBONE_LABELS[kind]
    suffix = "" if kind == "dinov2" else f"__{kind}"
    prefix = "" if kind == "dinov2" else f"[analogue: {label} in place of DINOv2] "
    status = _status_of(res, kind)
    statements = {
        "c1_knn_rock_classification": "Frozen features classify rock types almost perfectly with a kNN probe "
                                      "(k in the grid) and t-SNE of the class tokens shows one cluster per rock.",
        "c2_linear_head_beats_classical": "For phase segmentation, a linear head on frozen patch tokens beats "
                                          "multi-Otsu, K-means, fuzzy C-means and a random forest on filter-bank "
                                          "features (third-rock test, mean IoU).",
        "c3_lora_lifts_heads": f"LoRA fine-tuning lifts the frozen heads a lot (by at least {LORA_LIFT} mean IoU; "
                               "paper: linear 0.67 -> 0.81, CNN 0.75 -> 0.82).",
        "c4_lora_beats_unet_and_resnet": "With LoRA the ViT beats a UNet trained from scratch with fewer trainable "
                                         "parameters, and beats a pretrained ResNet with LoRA.",
        "c5_holds_out_of_distribution": "These hold out of distribution: trained on two rocks and scanners, the "
                                        "ViT's best method (chosen in distribution) still beats the UNet and every "
                                        "classical pipeline on a third rock and on a third scanner.",
    }
    if not status.startswith("ok"):
        return [dict(id=cid + suffix, statement=prefix + st, status="not evaluated", evidence={}, reason=status)
                for cid, st in statements.items()]
    seg = res.segmentation
    claims = []

    # 1. classification
    cls = res.classification
    knn = cls[(cls["backbone"] == label) & (cls["probe"] == "knn") & (cls["status"] == "evaluated")]
    by_k = knn.groupby("k")["accuracy"].mean()
    usable = knn[knn["k_below_class_size"]].groupby("k")["accuracy"].mean()
    sil = res.silhouettes[res.silhouettes["backbone"] == label]["tsne_silhouette"] if len(res.silhouettes) else pd.Series(dtype=float)
    ev = {"knn_accuracy_by_k": {int(k): round(float(v), 4) for k, v in by_k.items()},
          "k_judged (k below the training slices per rock)": [int(k) for k in usable.index],
          "threshold_accuracy": NEAR_PERFECT_ACCURACY, "tsne_silhouette_mean": round(float(sil.mean()), 4) if len(sil) else None,
          "threshold_silhouette": CLUSTER_SILHOUETTE, "n_seeds": int(knn["seed"].nunique())}
    if len(usable) == 0:
        claims.append(dict(id="c1_knn_rock_classification" + suffix, statement=prefix + statements["c1_knn_rock_classification"],
                           status="not evaluated", evidence=ev, reason="no k of the grid is below the training slices per rock"))
    else:
        knn_ok = bool(usable.min() >= NEAR_PERFECT_ACCURACY)
        reason = (f"lowest mean kNN accuracy over the judged k: {usable.min():.3f} (needs >= {NEAR_PERFECT_ACCURACY}); "
                  f"t-SNE silhouette {(sil.mean() if len(sil) else float('nan')):.3f} (needs >= {CLUSTER_SILHOUETTE})")
        if len(sil) == 0:  # the t-SNE half of the claim was not run: it cannot hold on the kNN half alone
            status = "not evaluated" if knn_ok else "did not hold"
            reason += "; t-SNE not run (parameter embedders)"
        else:
            status = "held" if knn_ok and sil.mean() >= CLUSTER_SILHOUETTE else "did not hold"
        claims.append(dict(id="c1_knn_rock_classification" + suffix, statement=prefix + statements["c1_knn_rock_classification"],
                           status=status, evidence=ev, reason=reason))

    # 2. linear head vs classical (third rock)
    lin = _per_seed(seg, "linear head (frozen)", label, "ood_rock")
    comps = {c: _paired(lin, _per_seed(seg, c, "", "ood_rock")) for c in CLASSICAL}
    held = all(_beats(d) for d in comps.values())
    claims.append(dict(id="c2_linear_head_beats_classical" + suffix, statement=prefix + statements["c2_linear_head_beats_classical"],
                       status="held" if held else "did not hold",
                       evidence={"linear_head_miou": round(float(lin.mean()), 4), "vs": comps},
                       reason="linear head better on average and on every seed against all four" if held else
                       "the linear head loses to " + ", ".join(c for c, d in comps.items() if not _beats(d))))

    # 3. LoRA lift
    lifts, reasons = {}, []
    for head, frozen in (("linear", "linear head (frozen)"), ("cnn", "CNN head (frozen)")):
        tuned = _per_seed(seg, f"{head} head + LoRA", label, "ood_rock")
        if len(tuned):
            lifts[head] = _paired(tuned, _per_seed(seg, frozen, label, "ood_rock"))
    if not lifts:
        reason = seg[(seg["backbone"] == label) & (seg["kind"] == "LoRA")]["status"].iloc[0] \
            if len(seg[(seg["backbone"] == label) & (seg["kind"] == "LoRA")]) else "LoRA not run"
        claims.append(dict(id="c3_lora_lifts_heads" + suffix, statement=prefix + statements["c3_lora_lifts_heads"],
                           status="not evaluated", evidence={}, reason=reason))
    else:
        held = all(d["mean_diff"] >= LORA_LIFT and d["wins"] == d["n"] for d in lifts.values())
        claims.append(dict(id="c3_lora_lifts_heads" + suffix, statement=prefix + statements["c3_lora_lifts_heads"],
                           status="held" if held else "did not hold", evidence={"lift_vs_frozen": lifts,
                                                                                "threshold": LORA_LIFT},
                           reason="; ".join(f"{h}: {d['mean_diff']:+.3f} mean IoU, wins {d['wins']}/{d['n']}"
                                            for h, d in lifts.items()) + (" (heads not tuned: "
                           + ", ".join(h for h in ("linear", "cnn") if h not in lifts) + ")" if len(lifts) < 2 else "")))

    # 4. LoRA vs UNet (and ResNet + LoRA); the LoRA head is chosen on the in-distribution split,
    # never on the split it is judged on
    best_lora, best_name, best_id = None, None, None
    for head in ("linear", "cnn"):
        s = _per_seed(seg, f"{head} head + LoRA", label, "ood_rock")
        s_id = _per_seed(seg, f"{head} head + LoRA", label, "in_distribution").mean()
        if len(s) and (best_lora is None or s_id > best_id):
            best_lora, best_name, best_id = s, f"{head} head + LoRA", s_id
    if best_lora is None:
        claims.append(dict(id="c4_lora_beats_unet_and_resnet" + suffix, statement=prefix + statements["c4_lora_beats_unet_and_resnet"],
                           status="not evaluated", evidence={}, reason="no LoRA run for this backbone"))
    else:
        unet = _per_seed(seg, "UNet from scratch", "", "ood_rock")
        d_unet = _paired(best_lora, unet)
        params = seg[(seg["method"] == best_name) & (seg["backbone"] == label)]["trainable_params"].iloc[0]
        unet_params = seg[seg["method"] == "UNet from scratch"]["trainable_params"].iloc[0]
        resnet_rows = seg[(seg["kind"] == "LoRA") & seg["backbone"].str.contains("resnet", case=False)]
        resnet_ok = resnet_rows[resnet_rows["status"] == "evaluated"]
        ev = {"best_lora (chosen on in_distribution)": best_name, "vs_unet": d_unet, "trainable_params": int(params), "unet_params": int(unet_params)}
        ok = _beats(d_unet) and params < unet_params
        if len(resnet_ok):
            d_res = _paired(best_lora, resnet_ok[resnet_ok["split"] == "ood_rock"].set_index("seed")["miou"])
            ev["vs_resnet_lora"] = d_res
            ok = ok and _beats(d_res)
            claims.append(dict(id="c4_lora_beats_unet_and_resnet" + suffix, statement=prefix + statements["c4_lora_beats_unet_and_resnet"],
                               status="held" if ok else "did not hold", evidence=ev,
                               reason=f"vs UNet {d_unet['mean_diff']:+.3f} ({d_unet['wins']}/{d_unet['n']} seeds), "
                                      f"vs ResNet+LoRA {d_res['mean_diff']:+.3f}; params {int(params)} vs {int(unet_params)}"))
        else:
            reason = (f"vs UNet {d_unet['mean_diff']:+.3f} mean IoU ({d_unet['wins']}/{d_unet['n']} seeds), params "
                      f"{int(params)} vs {int(unet_params)}; ResNet+LoRA part "
                      f"{resnet_rows['status'].iloc[0] if len(resnet_rows) else 'not run'}")
            st = "did not hold" if not ok else "not evaluated"
            if ok:
                reason = "UNet part held, but " + reason
            claims.append(dict(id="c4_lora_beats_unet_and_resnet" + suffix, statement=prefix + statements["c4_lora_beats_unet_and_resnet"],
                               status=st, evidence=ev, reason=reason))

    # 5. out of distribution: the ViT method that is best in distribution (chosen there, not on the
    # test splits) vs the UNet and every classical pipeline, on both OOD splits
    vit_methods = seg[(seg["backbone"] == label) & (seg["status"] == "evaluated")]["method"].unique()
    id_means = {m: _per_seed(seg, m, label, "in_distribution").mean() for m in vit_methods}
    best = max(id_means, key=id_means.get)
    ev, all_ok = {"best_vit_method (chosen on in_distribution)": best}, True
    for split in ("ood_rock", "ood_scanner"):
        ours = _per_seed(seg, best, label, split)
        comps = {c: _paired(ours, _per_seed(seg, c, "", split)) for c in CLASSICAL + ("UNet from scratch",)}
        ev[split] = {"miou": round(float(ours.mean()), 4), "vs": comps}
        all_ok = all_ok and all(_beats(d) for d in comps.values())
    lost = [f"{s}: {c}" for s in ("ood_rock", "ood_scanner") for c, d in ev[s]["vs"].items() if not _beats(d)]
    claims.append(dict(id="c5_holds_out_of_distribution" + suffix, statement=prefix + statements["c5_holds_out_of_distribution"],
                       status="held" if all_ok else "did not hold", evidence=ev,
                       reason=(f"{best} beats all on both OOD splits" if all_ok
                               else f"{best} loses to " + "; ".join(lost))))
    return claims


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
        return float(rows["ood_rock/miou"].iloc[0]) if len(rows) and "ood_rock/miou" in rows and \
            pd.notna(rows["ood_rock/miou"].iloc[0]) else None
    out["ood_rock_miou_dinov2_linear"] = pick("linear head (frozen)", "dinov2")
    out["ood_rock_miou_random_vit_linear"] = pick("linear head (frozen)", "random")
    out["ood_rock_miou_ssl_vit_linear"] = pick("linear head (frozen)", "ssl")
    cls = res.classification
    for kind, lab in BACKBONE_LABELS.items():
        k = cls[(cls["backbone"] == lab) & (cls["probe"] == "knn") & (cls["status"] == "evaluated")]
        out[f"knn_accuracy_best_k/{kind}"] = float(k.groupby("k")["accuracy"].mean().max()) if len(k) else None
    return out


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
