"""The grid's task: one part of one seed's experiment (``seed_part_task``), on that seed's slices, and the rows it
records. Pure and module-level: it imports nothing above it, and its code (with the modules it imports) is the
grid's cache key."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit.core.grid import grid_task
from labkit.core.metrics import ConfusionMatrix
from labkit.core.seeding import seed_everything
from labkit.methods import baselines, probing
from labkit.methods.array_segmentation import fit_budget, fit_segmenter, predict_grey, token_oracle
from labkit.models.vit_heads import BackboneSegmenter, count_parameters, create_head, patch_size_of
from labkit.studies.dinov2_microct.backbones import Backbone, build_backbone, torch_device
from labkit.studies.dinov2_microct.data import (
    BACKBONE_LABELS,
    NAME,
    SPLITS,
    evaluated_splits,
    pca_indices,
    seed_data,
    splits,
)
from labkit.studies.dinov2_microct.probes import classification_baselines, probe_rows, tsne_silhouette

CEILING_GRIDS = (8, 12, 16, 24, 32, 48)
ORACLE = "per-token oracle"


def _scores(pred: np.ndarray, target: np.ndarray, phases: tuple[str, ...]) -> dict[str, float]:
    """IoU of each phase and their mean over the phases present in ``target``, so every method is scored on the
    same set of phases, the data's: a phase absent from the split (a sandstone without micro-porosity) counts for
    no method (its IoU is NaN for all), and predicting it costs a method through the present phases' IoU."""
    cm = ConfusionMatrix(len(phases)).update(pred, target)
    s = cm.scores(phases)
    present = cm.support > 0
    iou = cm.iou()
    for i, p in enumerate(phases):
        if not present[i]:
            s[f"iou/{p}"] = float("nan")
    s["miou"] = float(np.nanmean(iou[present])) if present.any() else float("nan")
    return s


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


def _seg_rows(
    out: SeedResult, seed, method, backbone, kind, trainable, seconds, preds: dict, ds, sp, example_idx, budget=None
):
    """One row per split it predicted; a trained arm's rows carry its ``budget``."""
    for split in preds:
        s = _scores(preds[split], ds.masks[sp[split]], ds.phases)
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
                **{f"iou/{p}": s[f"iou/{p}"] for p in ds.phases},
                **({"budget": dict(budget)} if budget is not None else {}),
            }
        )
    key = f"{method} | {backbone}" if backbone else method
    out.examples[key] = preds["ood_rock"][example_idx]


def _not_evaluated(out: SeedResult, seed, method, backbone, kind, reason, phases):
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
                **{f"iou/{p}": np.nan for p in phases},
            }
        )


def ceiling_rows(cfg, seed, ds, sp, grids=CEILING_GRIDS) -> list[dict]:
    """The per-token oracle's mean IoU per token grid and split (the grid-ceiling figure)."""
    rows = []
    for g in grids:
        for split in evaluated_splits(sp):
            masks = ds.masks[sp[split]]
            s = _scores(token_oracle(masks, g, len(ds.phases)), masks, ds.phases)
            rows.append({"seed": seed, "grid": g, "split": split, "miou": s["miou"]})
    return rows


@grid_task("dinov2_microct/seed_part")
def seed_part_task(part: str, seed: int, settings: dict, weights: dict | None = None, keep: bool = False) -> dict:
    """One grid task: one part of ``seed``'s experiment, on that seed's slices.

    ``part``: ``baselines`` (the classical pipelines and the UNet from scratch; the grey-level histogram
    and random-ResNet classification rows; the per-token oracle on every token grid), ``resnet`` (the
    pretrained ResNet + LoRA) or a ViT kind (``dinov2``, ``random``, ``ssl``: the per-token oracle of its
    grid, kNN and linear probes, t-SNE, frozen heads, kNN segmentation, LoRA). ``settings``: the resolved
    parameters the part reads (:func:`experiment.task_settings`); ``weights``: the weights it loads and their digest
    (:func:`experiment.resolve_arms`); ``keep``: also return the figures' arrays (the first seed's). Returns the
    record of :meth:`SeedResult.record`: rows of the classification, segmentation and ceiling tables."""
    from labkit.core.params import Config

    cfg = Config(NAME, "grid task", {**settings, "progress": False})
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
    n = len(ds.phases)  # one output / cluster per phase of the data
    classical = [
        ("multi-Otsu", baselines.ClusterSegmenter("otsu", n, cfg.denoise_sigma, seed)),
        ("K-means", baselines.ClusterSegmenter("kmeans", n, cfg.denoise_sigma, seed)),
        ("fuzzy C-means", baselines.ClusterSegmenter("fcm", n, cfg.denoise_sigma, seed)),
        ("random forest (filter bank)", baselines.FilterBankForest(n_estimators=cfg.rf_trees, seed=seed)),
    ]
    for name, est in classical:
        t0 = time.perf_counter()
        est.fit(seg_tr.images, seg_tr.masks)
        seconds = time.perf_counter() - t0
        preds = {s: est.predict(ds.images[sp[s]]) for s in evaluated_splits(sp)}
        _seg_rows(out, seed, name, "", "classical", np.nan, seconds, preds, ds, sp, example_idx)

    seed_everything(seed)
    unet = baselines.create_unet(n, in_channels=1)
    res = _fit(cfg, unet, seg_tr, cfg.unet_batch_size, cfg.unet_epochs, cfg.unet_lr, seed, "UNet from scratch")
    preds = {s: predict_grey(res.model, ds.images[sp[s]]) for s in evaluated_splits(sp)}
    trainable = count_parameters(unet)
    budget = fit_budget(len(seg_tr.images), cfg.unet_batch_size, cfg.unet_epochs, cfg.unet_lr, trainable)
    _seg_rows(
        out, seed, "UNet from scratch", "", "from scratch", trainable, res.seconds, preds, ds, sp, example_idx, budget
    )

    out.classification += classification_baselines(cfg, seed, ds, sp["cls_train"], sp["cls_test"], _per_class(ds, sp))
    out.ceilings = ceiling_rows(cfg, seed, ds, sp)


def _fit(cfg, model, seg_tr, batch_size, epochs, lr, seed, desc):
    """labkit's training loop on the task's device (on the GPU when there is one)."""
    return fit_segmenter(
        model,
        seg_tr.images,
        seg_tr.masks,
        num_classes=len(seg_tr.phases),
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        device=torch_device(cfg),
        progress=cfg.progress,
        desc=desc,
    )


def train_arm(cfg, backbone, head_kind, seg_tr, tokens, token_masks, seed, *, lora, img_size, targets=None):
    """One frozen or LoRA arm at the budget every compared arm shares: ``head_epochs`` passes over the segmentation
    training slices in batches of ``batch_size``, AdamW on one cosine (:mod:`labkit.methods.probe_then_finetune`).
    The head first learns on the frozen ``tokens`` (a linear probe); with ``lora`` the backbone (copied) gets LoRA
    adapters on ``targets`` (default ``lora_targets``) that join the head for the last ``lora_epochs`` passes (at
    ``lora_lr``), else the head keeps learning on the tokens. Returns (the model to predict with: a
    :class:`TokenHead` on tokens or the tuned :class:`BackboneSegmenter` on images, trainable parameters, seconds,
    budget)."""
    from labkit.methods.probe_then_finetune import probe_then_finetune
    from labkit.models.lora import apply_lora
    from labkit.models.vit_heads import TokenHead

    seed_everything(seed)
    head = create_head(head_kind, tokens.shape[1], len(seg_tr.phases))  # the same initial head in both arms
    model = None
    if lora:
        tuned = apply_lora(
            copy.deepcopy(backbone), rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=targets or cfg.lora_targets
        )
        model = BackboneSegmenter(tuned, head, img_size, cfg.resize_policy)
    token_head = TokenHead(head)
    seconds = probe_then_finetune(
        token_head,
        tokens,
        token_masks,
        epochs=cfg.head_epochs,
        finetune_epochs=cfg.lora_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.head_lr,
        finetune_lr=cfg.lora_lr,
        seed=seed,
        model=model,
        images=seg_tr.images,
        masks=seg_tr.masks,
        device=torch_device(cfg),
    )
    trained = model if lora else token_head
    trainable = count_parameters(trained)
    return trained, trainable, seconds, fit_budget(len(tokens), cfg.batch_size, cfg.head_epochs, cfg.head_lr, trainable)


def frozen_tokens(cfg, backbone, images: np.ndarray, img_size: int) -> np.ndarray:
    """The frozen backbone's patch tokens (a CNN: its last feature map) of ``images`` at ``img_size``."""
    import torch

    from labkit.models.vit_heads import backbone_tokens, prepare_input

    device = torch_device(cfg)
    backbone.to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), cfg.feature_batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + cfg.feature_batch_size, None], np.float32))
            out.append(backbone_tokens(backbone, prepare_input(x.to(device), img_size, cfg.resize_policy))[1].cpu())
    return torch.cat(out).numpy()


def _token_masks(cfg, masks: np.ndarray, img_size: int) -> np.ndarray:
    """Training masks as the token heads see them: padded with an ignored label where the input is padded."""
    return probing.pad_masks(masks, img_size) if cfg.resize_policy == "pad" and img_size != cfg.slice_size else masks


def _vit_rows(cfg, bb: Backbone, seed, ds, sp, out: SeedResult, keep: bool) -> None:
    """Every row of one ViT: the per-token oracle of its grid; kNN and linear probes on the class token, the
    mean patch token and both (centred); t-SNE; linear and CNN heads and kNN segmentation on frozen patch
    tokens; LoRA fine-tuning (where ``lora``). With ``keep`` the figures' tokens are kept."""
    out.notes.append(f"{bb.label}: {bb.input}")
    out.inputs[bb.kind] = bb.input
    _token_grid_oracle(cfg, bb, seed, ds, sp, out)
    bb.model.to(torch_device(cfg))
    feats = _features(cfg, bb, ds, sp, out, keep)
    _probes(cfg, bb, seed, ds, sp, out, feats)
    _frozen_heads(cfg, bb, seed, ds, sp, out, feats)
    _lora_heads(cfg, bb, seed, ds, sp, out, feats)


def _token_grid_oracle(cfg, bb: Backbone, seed, ds, sp, out: SeedResult) -> None:
    """The per-token oracle of the ViT's token grid (the ceiling of its heads)."""
    grid = bb.img_size // patch_size_of(bb.model)
    out.grids[bb.label] = int(grid)
    preds = {
        s: token_oracle(ds.masks[sp[s]], grid, len(ds.phases), bb.img_size if cfg.resize_policy == "pad" else None)
        for s in evaluated_splits(sp)
    }
    _seg_rows(out, seed, ORACLE, bb.label, "oracle", 0, 0.0, preds, ds, sp, _example_index(sp))


def _features(cfg, bb: Backbone, ds, sp, out: SeedResult, keep: bool) -> probing.Features:
    """Class tokens of every slice and patch tokens of the segmentation and PCA slices; with ``keep`` only what
    the figures need is kept in the record (class tokens, the PCA slices' patch tokens)."""
    seg_index = np.concatenate([sp["seg_train"]] + [sp[s] for s in evaluated_splits(sp)])
    feats = probing.extract_features(
        bb.model,
        ds.images,
        img_size=bb.img_size,
        backbone=bb.name,
        weights=bb.weights_id,
        batch_size=cfg.feature_batch_size,
        policy=cfg.resize_policy,
        progress=cfg.progress,
        patch_index=np.union1d(seg_index, pca_indices(ds)),
    )
    if keep:
        pca_idx = np.sort(pca_indices(ds))
        out.features[bb.kind] = probing.Features(
            feats.cls, feats.patch_of(pca_idx), feats.seconds, feats.from_cache, feats.key, pca_idx
        )
    return feats


def _probes(cfg, bb: Backbone, seed, ds, sp, out: SeedResult, feats: probing.Features) -> None:
    """Classification: class token, mean patch token and both, centred on the training mean; and the t-SNE."""
    tr, te = sp["cls_train"], sp["cls_test"]
    out.classification += probe_rows(
        cfg, seed, bb.label, {"cls": feats.cls, "mean": feats.mean}, ds.rock, tr, te, _per_class(ds, sp)
    )
    if cfg.tsne:
        emb, sil = tsne_silhouette(feats.cls - feats.cls[tr].mean(0), ds.rock, seed)
        out.embeddings[bb.kind] = {"tsne": emb, "silhouette": sil}


def _frozen_heads(cfg, bb: Backbone, seed, ds, sp, out: SeedResult, feats: probing.Features) -> None:
    """Linear and CNN heads and kNN segmentation on frozen patch tokens; with reflect-padded inputs the masks are
    padded with an ignored label and predictions cropped back to the slice."""
    size = (cfg.slice_size, cfg.slice_size)
    example_idx = _example_index(sp)
    seg_tr = ds.subset(sp["seg_train"])
    padded = (bb.img_size, bb.img_size) if cfg.resize_policy == "pad" and bb.img_size != cfg.slice_size else None
    tr_masks = _token_masks(cfg, seg_tr.masks, bb.img_size)
    tok_tr = feats.patch_of(sp["seg_train"])
    for head, name in (("linear", "linear head (frozen)"), ("cnn", "CNN head (frozen)")):
        model, trainable, seconds, budget = train_arm(
            cfg, bb.model, head, seg_tr, tok_tr, tr_masks, seed, lora=False, img_size=bb.img_size
        )
        preds = {
            s: probing.predict_token_head(model, feats.patch_of(sp[s]), size, padded_size=padded)
            for s in evaluated_splits(sp)
        }
        _seg_rows(out, seed, name, bb.label, "frozen", trainable, seconds, preds, ds, sp, example_idx, budget)
    t0 = time.perf_counter()
    preds = {
        s: probing.knn_segment(
            tok_tr,
            tr_masks,
            feats.patch_of(sp[s]),
            size,
            num_classes=len(ds.phases),
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


def _lora_heads(cfg, bb: Backbone, seed, ds, sp, out: SeedResult, feats: probing.Features) -> None:
    """Each head of ``lora_heads`` probed on the frozen tokens, then fine-tuned with LoRA, at the frozen head's budget
    (:func:`train_arm`; where ``lora``, else rows saying why)."""
    seg_tr = ds.subset(sp["seg_train"])
    tok_tr, tr_masks = feats.patch_of(sp["seg_train"]), _token_masks(cfg, seg_tr.masks, bb.img_size)
    for head in cfg.lora_heads:
        name = f"{head} head + LoRA"
        if not cfg.lora:
            reason = "not evaluated: LoRA not run for this backbone in this preset (parameter lora_backbones)"
            _not_evaluated(out, seed, name, bb.label, "LoRA", reason, ds.phases)
            continue
        model, trainable, seconds, budget = train_arm(
            cfg, bb.model, head, seg_tr, tok_tr, tr_masks, seed, lora=True, img_size=bb.img_size
        )
        preds = {s: predict_grey(model, ds.images[sp[s]], cfg.batch_size) for s in evaluated_splits(sp)}
        _seg_rows(out, seed, name, bb.label, "LoRA", trainable, seconds, preds, ds, sp, _example_index(sp), budget)
        del model


def _unavailable_vit(out: SeedResult, seed, label: str, status: str, lora_heads, phases) -> None:
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
        _not_evaluated(out, seed, m, label, "frozen", status, phases)
    for h in lora_heads:
        _not_evaluated(out, seed, f"{h} head + LoRA", label, "LoRA", status, phases)


def unavailable_record(cfg, part: str, seed: int, status: str, phases: tuple[str, ...]) -> dict:
    """The record of a part whose arm could not run: its rows (one IoU column per phase of the data), each saying
    why."""
    out = SeedResult()
    if part == "resnet":
        _not_evaluated(out, seed, "linear head + LoRA", resnet_lora_label(cfg), "LoRA", status, phases)
    else:
        _unavailable_vit(out, seed, BACKBONE_LABELS[part], status, cfg.lora_heads, phases)
    return out.record(part, seed, keep=False)


def resnet_lora_label(cfg) -> str:
    return f"{cfg.resnet_backbone} (pretrained)"


def _resnet_lora(cfg, seed, out: SeedResult, ds, sp, weights: dict) -> None:
    """The pretrained ResNet + LoRA with a linear head, at the ViTs' input side (``input_size``) and their LoRA arms'
    budget: probed on its frozen last feature map, then fine-tuned with LoRA on its convolutions (:func:`train_arm`)."""
    from labkit.models.backbones import create_backbone

    seg_tr = ds.subset(sp["seg_train"])
    resnet = create_backbone(cfg.resnet_backbone, weights=weights["weights"], num_classes=0)
    tokens = frozen_tokens(cfg, resnet, seg_tr.images, cfg.input_size)
    model, trainable, seconds, budget = train_arm(
        cfg,
        resnet,
        "linear",
        seg_tr,
        tokens,
        _token_masks(cfg, seg_tr.masks, cfg.input_size),
        seed,
        lora=True,
        img_size=cfg.input_size,
        targets="resnet-convs",
    )
    preds = {s: predict_grey(model, ds.images[sp[s]], cfg.batch_size) for s in evaluated_splits(sp)}
    label = resnet_lora_label(cfg)
    _seg_rows(
        out, seed, "linear head + LoRA", label, "LoRA", trainable, seconds, preds, ds, sp, _example_index(sp), budget
    )
