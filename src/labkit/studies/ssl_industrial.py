"""Study: self-supervised pretraining for industrial inspection with few labels (notebook 03).

Pipeline: simulate unlabeled surfaces, a labelled pool and a test set -> pretrain a ViT-Tiny by
masked autoencoding (MAE) and by SimCLR on the unlabeled in-domain images, and by MAE on the same
number of unrelated photographs -> fine-tune each initialisation (scratch, MAE, SimCLR, MAE on
unrelated images, DINOv2 when its weights can be had) on 'n' labelled images for defect
segmentation, over label counts and seeds -> fine-tuning protocols compared at one label count
(frozen encoder with a linear head or a small decoder, partial, full and LoRA fine-tuning) ->
frozen linear/kNN probes vs fine-tuning for defect/no-defect classification -> a PatchCore anomaly
detector that needs no defect labels.

Pretraining runs once per method (seed ``seeds[0]``); each seed draws its own labelled subset and
fine-tuning order, so the claims are judged over label-subset x fine-tuning randomness.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit.core.errors import WeightsUnavailableError
from labkit.core.metrics import aggregate_over_seeds
from labkit.core.stats import paired_by_index, paired_difference
from labkit.data.surfaces import DEFECT_TYPES, SurfaceSimulator, unrelated_images
from labkit.methods.anomaly import PatchCore, anomaly_aurocs, vit_patch_features
from labkit.methods.probing import KNNProbe, linear_probe
from labkit.methods.ssl import checkpoint_meta, pretrain_mae, pretrain_simclr, standardise
from labkit.methods.ssl_industrial_finetune import (finetune_classification, finetune_segmentation,
                                                    mean_max_pool, trunk_tokens)

STUDY = "ssl_industrial"
CHECKPOINTS = {"mae": "ssl-mae-vit-tiny-industrial", "simclr": "ssl-simclr-vit-tiny-industrial"}
INIT_LABELS = {"scratch": "scratch (random init)", "mae": "MAE (in-domain)", "simclr": "SimCLR (in-domain)",
               "mae_unrelated": "MAE (unrelated photos)", "dinov2": "DINOv2 ViT-S/14 (hub)"}
COLOURS = {"scratch": "tab:grey", "mae": "tab:blue", "simclr": "tab:orange", "mae_unrelated": "tab:purple",
           "dinov2": "tab:green"}


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def make_data(cfg) -> dict:
    """Unlabeled surfaces (mostly good, as off a line), a labelled pool, a test set, defect-free
    images for the anomaly detector's memory bank, and the unrelated-photo control set."""
    sim = SurfaceSimulator(size=cfg.img_size, channels=cfg.channels, defect_fraction=0.5)
    base = 1000 * cfg.data_seed
    return {
        "unlabeled": sim.sample(cfg.n_unlabeled, seed=base + 1, defect_fraction=cfg.unlabeled_defect_fraction),
        "pool": sim.sample(int(1.25 * max(max(cfg.label_counts), cfg.probe_labels, cfg.protocol_labels)),
                           seed=base + 2),
        "test": sim.sample(cfg.n_test, seed=base + 3),
        "good": sim.sample(cfg.n_good, seed=base + 4, defect_fraction=0.0),
        "unrelated": unrelated_images(cfg.n_unlabeled, size=cfg.img_size, channels=cfg.channels, seed=base + 5),
    }


def data_summary(data: dict) -> pd.DataFrame:
    rows = []
    for name in ("unlabeled", "pool", "test", "good"):
        s = data[name]
        row = {"set": name, "images": len(s), "defective": int(s.labels.sum()),
               "defect_pixel_%": round(100 * float(s.masks.mean()), 2)}
        row.update({d: int((s.defect_types == d).sum()) for d in DEFECT_TYPES})
        rows.append(row)
    rows.append({"set": "unrelated (photos)", "images": len(data["unrelated"])})
    return pd.DataFrame(rows)


def samples_figure(surfaces, per_type: int = 3):
    """Images with their masks outlined, one row per defect type (and good)."""
    kinds = ["good"] + [d for d in DEFECT_TYPES if (surfaces.defect_types == d).any()]
    fig, axes = plt.subplots(len(kinds), per_type, figsize=(2 * per_type, 2 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        idx = np.flatnonzero(surfaces.defect_types == kind)[:per_type]
        for c in range(per_type):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            i = idx[c]
            img = surfaces.images[i]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            if surfaces.masks[i].any():
                ax.contour(surfaces.masks[i], levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{kind}\n{surfaces.materials[i]}", fontsize=8)
    fig.suptitle("Simulated surfaces: defect masks outlined in red")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# pretraining
# --------------------------------------------------------------------------------------
def pretrain_all(cfg, data, save_checkpoints: bool = True, progress: bool = True) -> dict:
    """MAE and SimCLR on the in-domain unlabeled images, MAE on the unrelated photos (same count).

    Returns ``{name: {"encoder", "history", "module"}}``; saves the in-domain encoders as named
    labkit checkpoints (see ``produces:`` in the preset) when ``save_checkpoints``.
    """
    from labkit.models.registry import save_named_checkpoint

    common = dict(arch=cfg.arch, img_size=cfg.img_size, patch_size=cfg.patch_size, batch_size=cfg.pretrain_batch_size,
                  seed=cfg.seeds[0], progress=progress, return_module=True)
    out = {}
    jobs = [("mae", data["unlabeled"].images, "mae"), ("simclr", data["unlabeled"].images, "simclr"),
            ("mae_unrelated", data["unrelated"], "mae")]
    for name, images, method in jobs:
        if name not in cfg.inits:
            continue
        if method == "mae":
            enc, hist, module = pretrain_mae(images, epochs=cfg.mae_epochs, mask_ratio=cfg.mask_ratio, **common)
        else:
            enc, hist, module = pretrain_simclr(images, epochs=cfg.simclr_epochs, **common)
        hist.insert(0, "init", name)
        out[name] = {"encoder": enc, "history": hist, "module": module}
        if save_checkpoints and name in CHECKPOINTS:
            meta = checkpoint_meta(enc, data=f"labkit simulated industrial surfaces ({len(images)} unlabeled, "
                                             f"{cfg.channels} channel(s), {cfg.img_size} px), preset {cfg.preset}")
            meta["preset"] = cfg.preset
            out[name]["checkpoint"] = str(save_named_checkpoint(CHECKPOINTS[name], enc, meta))
    return out


def pretraining_table(pretrained: dict) -> pd.DataFrame:
    rows = []
    for name, p in pretrained.items():
        h, meta = p["history"], p["encoder"].pretrain_meta
        rows.append({"init": name, "method": meta["method"], "images": meta["n_images"], "epochs": meta["epochs"],
                     "first_loss": h["loss"].iloc[0], "last_loss": h["loss"].iloc[-1], "seconds": meta["seconds"],
                     "images_per_s": float(h["images_per_second"].median()), "checkpoint": p.get("checkpoint", "")})
    return pd.DataFrame(rows)


def pretraining_figure(pretrained: dict):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, p in pretrained.items():
        h = p["history"]
        ax = axes[0] if p["encoder"].pretrain_meta["method"] == "mae" else axes[1]
        ax.plot(h["epoch"], h["loss"], marker="o", ms=3, label=INIT_LABELS[name], color=COLOURS[name])
    axes[0].set(title="MAE: masked-patch reconstruction loss", xlabel="epoch", ylabel="MSE (normalised pixels)")
    axes[1].set(title="SimCLR: NT-Xent loss", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reconstruction_figure(pretrained: dict, images: np.ndarray, n: int = 6):
    """Input, masked input (``mask_ratio`` of the patches hidden) and MAE reconstruction for a few held-out images."""
    p = pretrained["mae"]
    meta = p["encoder"].pretrain_meta
    x = standardise(torch.from_numpy(images[:n]), meta["pixel_mean"], meta["pixel_std"])
    recon, masked = p["module"].reconstruct(x, seed=0)
    visible = f"visible {100 * (1 - p['module'].mask_ratio):.0f}%"
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n, 5.6), squeeze=False)
    for i in range(n):
        for r, (arr, title) in enumerate([(x, "input"), (masked, visible), (recon, "reconstruction (hidden patches "
                                                                                  "at their true mean/contrast)")]):
            axes[r, i].imshow(arr[i].mean(0).numpy(), cmap="gray", vmin=-2.5, vmax=2.5)
            axes[r, i].axis("off")
            if i == 0:
                axes[r, i].set_title(title, fontsize=9, loc="left")
    fig.suptitle("Masked autoencoder on held-out surfaces (standardised grey levels)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# initialisations
# --------------------------------------------------------------------------------------
def initialisations(cfg, data, pretrained: dict) -> tuple[dict, pd.DataFrame]:
    """``{init: (encoder, prepare)}`` where ``prepare(images) -> encoder input``, and a table of the
    initialisations with the reason for any that could not be had."""
    from labkit.models.backbones import create_backbone
    from labkit.models.vit_heads import prepare_input

    inits, rows = {}, []
    mean = data["unlabeled"].images.mean(axis=(0, 2, 3)).tolist()
    std = (data["unlabeled"].images.std(axis=(0, 2, 3)) + 1e-6).tolist()
    for name in cfg.inits:
        row = {"init": name, "description": INIT_LABELS.get(name, name), "status": "evaluated", "reason": ""}
        if name == "scratch":
            torch.manual_seed(cfg.seeds[0])
            enc = create_backbone(cfg.arch, weights="random", img_size=cfg.img_size, patch_size=cfg.patch_size,
                                  in_chans=cfg.channels, num_classes=0)
            inits[name] = (enc.eval(), lambda im, m=mean, s=std: standardise(torch.as_tensor(im), m, s))
        elif name in pretrained:
            enc = pretrained[name]["encoder"]
            meta = enc.pretrain_meta
            inits[name] = (enc.eval(), lambda im, m=meta["pixel_mean"], s=meta["pixel_std"]:
                           standardise(torch.as_tensor(im), m, s))
        elif name == "dinov2":
            side = max(14, int(round(cfg.img_size / 14)) * 14)
            try:
                enc = create_backbone("dinov2_vits14", weights="pretrained", img_size=side, num_classes=0)
                inits[name] = (enc.eval(), lambda im, s=side: prepare_input(torch.as_tensor(im), s))
            except WeightsUnavailableError as exc:
                row.update(status="not evaluated", reason=f"weights unavailable ({str(exc).splitlines()[0]})")
        else:
            row.update(status="not evaluated", reason="not pretrained in this run")
        rows.append(row)
    return inits, pd.DataFrame(rows)


def _labelled_subset(pool, n: int, seed: int) -> np.ndarray:
    """``n`` pool indices, half defective where possible (a plant labels some of each)."""
    rng = np.random.default_rng(10_000 + seed)
    bad, good = np.flatnonzero(pool.labels == 1), np.flatnonzero(pool.labels == 0)
    if n > len(pool):
        raise ValueError(f"asked for {n} labelled images but the labelled pool holds {len(pool)}")
    n_bad = min(len(bad), max(1, n // 2))
    n_good = min(len(good), n - n_bad)
    n_bad = n - n_good  # a pool short of good images gives more defective ones, and vice versa
    pick = np.concatenate([rng.choice(bad, n_bad, replace=False), rng.choice(good, n_good, replace=False)])
    return np.sort(pick)


# --------------------------------------------------------------------------------------
# label efficiency (segmentation) and probes vs fine-tuning (classification)
# --------------------------------------------------------------------------------------
def _tokens(inits, data, blocks: int) -> dict:
    out = {}
    for name, (enc, prepare) in inits.items():
        out[name] = {split: trunk_tokens(enc, prepare(data[split].images), blocks) for split in ("pool", "test")}
    return out


def label_efficiency(cfg, data, inits: dict, progress: bool = True) -> pd.DataFrame:
    """Defect segmentation after fine-tuning each initialisation on ``n`` labels, per seed."""
    rows = []
    tokens = _tokens(inits, data, cfg.trainable_blocks)
    # The unrelated-images control only matters where labels are scarce (claim 3): smallest count only.
    jobs = [(name, n, seed) for n in cfg.label_counts for seed in cfg.seeds for name in inits
            if name != "mae_unrelated" or n == min(cfg.label_counts)]
    for name, n, seed in tqdm(jobs, desc="label-efficiency sweep", disable=not progress):
        enc, _ = inits[name]
        idx = _labelled_subset(data["pool"], n, seed)
        res = finetune_segmentation(enc, tokens[name]["pool"][idx], data["pool"].masks[idx], tokens[name]["test"],
                                    data["test"].masks, trainable_blocks=cfg.trainable_blocks, head=cfg.seg_head,
                                    steps=cfg.finetune_steps, batch_size=cfg.finetune_batch_size, lr=cfg.finetune_lr,
                                    seed=seed, encoder_lr_scale=cfg.encoder_lr_scale)
        rows.append({"init": name, "n_labels": n, "seed": seed, **{k: v for k, v in res.items() if k != "model"}})
    return pd.DataFrame(rows)


def label_efficiency_summary(df: pd.DataFrame) -> pd.DataFrame:
    metrics = [m for m in ("miou", "defect_f1", "defect_iou", "defect_ap") if m in df.columns]
    return aggregate_over_seeds(df, metrics, ["init", "n_labels"])


def label_efficiency_figure(df: pd.DataFrame):
    """Mean IoU and defect F1 vs labels per initialisation, with 95% bands over seeds."""
    summary = label_efficiency_summary(df)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, title in [(axes[0], "miou", "mean IoU (good, defect)"), (axes[1], "defect_f1", "defect F1 (Dice)")]:
        for name, g in summary.groupby("init", sort=False):
            g = g.sort_values("n_labels")
            ax.plot(g["n_labels"], g[f"{metric}_mean"], marker="o", label=INIT_LABELS.get(name, name),
                    color=COLOURS.get(name))
            low, high = g[f"{metric}_ci95_low"], g[f"{metric}_ci95_high"]
            if low.notna().all():
                ax.fill_between(g["n_labels"], low, high, alpha=0.15, color=COLOURS.get(name))
        ax.set(xscale="log", xlabel="labelled images", ylabel=metric, title=title)
        ax.set_xticks(sorted(df["n_labels"].unique()))
        ax.set_xticklabels(sorted(df["n_labels"].unique()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Label efficiency: defect segmentation after fine-tuning (bands: 95% CI over seeds)")
    fig.tight_layout()
    return fig


# Segmentation fine-tuning protocols: (label, trainable blocks ("k": cfg.trainable_blocks, "all": every
# block), head, LoRA).
PROTOCOLS = {
    "frozen_linear": ("frozen encoder + linear head", 0, "linear", False),
    "frozen_decoder": ("frozen encoder + small decoder", 0, "conv", False),
    "partial": ("top-k blocks + small decoder", "k", "conv", False),
    "full": ("every block + small decoder", "all", "conv", False),
    "lora": ("LoRA on every block + small decoder", "all", "conv", True),
}


def _protocol_blocks(cfg, proto: str, depth: int) -> int:
    blocks = PROTOCOLS[proto][1]
    return depth if blocks == "all" else min(cfg.trainable_blocks, depth) if blocks == "k" else int(blocks)


def finetune_protocols(cfg, data, inits: dict, progress: bool = True,
                       label_eff: pd.DataFrame | None = None) -> pd.DataFrame:
    """Defect segmentation with ``protocol_labels`` labels under each protocol of ``cfg.protocols``,
    per initialisation (the unrelated-photos control is left out: it answers claim 3 only) and seed.

    Every protocol takes the same optimiser steps and batch size; LoRA's adapters and head learn at
    ``lora_lr`` (the adapters start at zero), the others at ``finetune_lr`` (tuned blocks at
    ``finetune_lr * encoder_lr_scale``). The patch embedding stays as initialised in all of them.
    ``label_eff``: the label-efficiency runs; where they already hold the ``partial`` protocol's runs
    (same label count, ``seg_head == "conv"``) those are reused instead of trained again.
    """
    n = cfg.protocol_labels
    if n > len(data["pool"]):
        raise ValueError(f"protocol_labels={n} but the labelled pool holds {len(data['pool'])}")
    rows = []
    names = [name for name in inits if name != "mae_unrelated"]
    jobs = [(name, proto) for name in names for proto in cfg.protocols]
    reusable = (label_eff is not None and len(label_eff) and cfg.seg_head == "conv"
                and "trainable_params" in label_eff.columns)
    cache: dict = {}
    for name, proto in tqdm(jobs, desc="fine-tuning protocols", disable=not progress):
        enc, prepare = inits[name]
        blocks = _protocol_blocks(cfg, proto, len(enc.blocks))
        label, _, head, lora = PROTOCOLS[proto]
        if proto == "partial" and reusable:
            done = label_eff[(label_eff["init"] == name) & (label_eff["n_labels"] == n)
                             & label_eff["seed"].isin(cfg.seeds)]
            if len(done) == len(cfg.seeds):
                for _, r in done.iterrows():
                    rows.append({"init": name, "protocol": proto, "description": label, "tuned_blocks": blocks,
                                 **{k: r[k] for k in ("seed", "n_labels", "miou", "defect_iou", "defect_f1",
                                                      "defect_ap", "pixel_accuracy", "trainable_params", "seconds")
                                    if k in r}})
                continue
        if (name, blocks) not in cache:  # trunk tokens depend on the initialisation and the frozen depth only
            cache = {k: v for k, v in cache.items() if k[0] == name}
            cache[name, blocks] = (trunk_tokens(enc, prepare(data["pool"].images), blocks),
                                   trunk_tokens(enc, prepare(data["test"].images), blocks))
        pool_tokens, test_tokens = cache[name, blocks]
        for seed in cfg.seeds:
            idx = _labelled_subset(data["pool"], n, seed)
            res = finetune_segmentation(enc, pool_tokens[idx], data["pool"].masks[idx], test_tokens,
                                        data["test"].masks, trainable_blocks=blocks, head=head,
                                        steps=cfg.finetune_steps, batch_size=cfg.finetune_batch_size,
                                        lr=cfg.lora_lr if lora else cfg.finetune_lr, seed=seed,
                                        lora_rank=cfg.lora_rank if lora else 0,
                                        encoder_lr_scale=1.0 if lora else cfg.encoder_lr_scale)
            rows.append({"init": name, "protocol": proto, "description": label, "tuned_blocks": blocks,
                         "seed": seed, "n_labels": n, **{k: v for k, v in res.items() if k != "model"}})
    return pd.DataFrame(rows)


def _not_evaluated_rows(table: pd.DataFrame, init_table: pd.DataFrame | None) -> pd.DataFrame:
    """Append a row per initialisation that could not be evaluated, every cell saying why."""
    if init_table is None:
        return table
    extra = []
    for _, r in init_table[init_table["status"] != "evaluated"].iterrows():
        if r["init"] in set(table["init"]):
            continue
        why = "weights unavailable" if "weights unavailable" in r["reason"] else r["reason"]
        extra.append({"init": r["init"], **{c: f"not evaluated: {why}" for c in table.columns if c != "init"}})
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True) if extra else table


def protocol_table(df: pd.DataFrame, init_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Initialisations x protocols: 'mIoU mean ± std (defect F1, defect pixel AP means)' over seeds;
    column headers carry the trainable parameter count."""
    g = df.groupby(["init", "protocol"], sort=False).agg(
        miou=("miou", "mean"), miou_sd=("miou", "std"), f1=("defect_f1", "mean"),
        ap=("defect_ap", "mean"), params=("trainable_params", "median")).reset_index()
    g["cell"] = [f"{m:.3f} ± {sd:.3f} (F1 {f:.3f}, AP {a:.3f})" if np.isfinite(sd) else
                 f"{m:.3f} (F1 {f:.3f}, AP {a:.3f})" for m, sd, f, a in zip(g["miou"], g["miou_sd"], g["f1"], g["ap"])]
    out = g.pivot(index="init", columns="protocol", values="cell").reindex(list(dict.fromkeys(df["init"])))
    protos = [p for p in PROTOCOLS if p in out.columns]
    params = g.groupby("protocol")["params"].median()
    out = out[protos].rename(columns={p: f"{p} ({params[p] / 1e3:.0f}k trainable)" for p in protos})
    return _not_evaluated_rows(out.reset_index().rename_axis(columns=None), init_table)


@torch.inference_mode()
def _pooled(enc, prepare, images, batch_size: int = 128) -> np.ndarray:
    """Frozen image features for the probes: mean and max of the final patch tokens."""
    x = prepare(images)
    prefix = int(getattr(enc, "num_prefix_tokens", 1))
    return torch.cat([mean_max_pool(enc.forward_features(x[i:i + batch_size])[:, prefix:])
                      for i in range(0, len(x), batch_size)]).numpy()


def probes_vs_finetune(cfg, data, inits: dict, progress: bool = True) -> pd.DataFrame:
    """Defect/no-defect classification with ``probe_labels`` labels: frozen linear and kNN probes on
    the mean and max patch tokens, and fine-tuning (same trainable blocks as the segmentation sweep)."""
    from sklearn.metrics import balanced_accuracy_score

    n = cfg.probe_labels
    rows = []
    tokens = _tokens(inits, data, cfg.trainable_blocks)
    y_test = data["test"].labels
    for name in tqdm(list(inits), desc="probes and fine-tuning", disable=not progress):
        enc, prepare = inits[name]
        f_pool, f_test = _pooled(enc, prepare, data["pool"].images), _pooled(enc, prepare, data["test"].images)
        for seed in cfg.seeds:
            idx = _labelled_subset(data["pool"], n, seed)
            y = data["pool"].labels[idx]
            pred_lin = linear_probe(f_pool[idx], y, f_test, seed=seed)
            pred_knn = KNNProbe(k=min(cfg.knn_k, len(idx))).fit(f_pool[idx], y).predict(f_test)
            ft = finetune_classification(enc, tokens[name]["pool"][idx], y, tokens[name]["test"], y_test,
                                         trainable_blocks=cfg.trainable_blocks, steps=cfg.finetune_steps,
                                         batch_size=cfg.finetune_batch_size, lr=cfg.finetune_lr, seed=seed,
                                         encoder_lr_scale=cfg.encoder_lr_scale)
            for protocol, bacc in [("linear probe", balanced_accuracy_score(y_test, pred_lin)),
                                   ("kNN probe", balanced_accuracy_score(y_test, pred_knn)),
                                   ("fine-tune", ft["balanced_accuracy"])]:
                rows.append({"init": name, "protocol": protocol, "seed": seed, "n_labels": n,
                             "balanced_accuracy": float(bacc)})
    return pd.DataFrame(rows)


def probe_table(df: pd.DataFrame, init_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean balanced accuracy (and std over seeds): initialisations x protocols (with a 'not
    evaluated' row per initialisation in ``init_table`` that could not be had)."""
    g = df.groupby(["init", "protocol"], sort=False)["balanced_accuracy"].agg(["mean", "std"]).reset_index()
    g["cell"] = [f"{m:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{m:.3f}" for m, sd in zip(g["mean"], g["std"])]
    out = g.pivot(index="init", columns="protocol", values="cell").reindex(list(dict.fromkeys(df["init"])))
    cols = [c for c in ("linear probe", "kNN probe", "fine-tune") if c in out.columns]
    return _not_evaluated_rows(out[cols].reset_index().rename_axis(columns=None), init_table)


# --------------------------------------------------------------------------------------
# anomaly detection (no defect labels)
# --------------------------------------------------------------------------------------
def anomaly_detection(cfg, data, inits: dict, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """PatchCore over each initialisation's patch features: image and pixel AUROC on the test set."""
    rows, curves = [], {}
    test = data["test"]
    for name in tqdm(list(inits), desc="PatchCore", disable=not progress):
        enc, prepare = inits[name]
        t0 = time.time()
        model = PatchCore(lambda im, e=enc: vit_patch_features(e, im), coreset_ratio=cfg.coreset_ratio,
                          seed=cfg.seeds[0])
        model.fit(prepare(data["good"].images).numpy())
        scores, maps = model.score(prepare(test.images).numpy())
        res = anomaly_aurocs(scores, maps, test.labels, test.masks)
        curves[name] = res["image_roc"]
        rows.append({"init": name, "image_auroc": res["image_auroc"], "pixel_auroc": res["pixel_auroc"],
                     "memory_bank": int(model.memory_bank_.shape[0]), "seconds": time.time() - t0})
    return pd.DataFrame(rows), curves


def roc_figure(curves: dict):
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, roc in curves.items():
        if roc is not None:
            ax.plot(roc[0], roc[1], label=INIT_LABELS.get(name, name), color=COLOURS.get(name))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
           title="PatchCore image-level ROC (no defect labels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------
def _paired(df, a, b, metric, **where):
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return paired_by_index(sel[sel["init"] == a].set_index("seed")[metric],
                           sel[sel["init"] == b].set_index("seed")[metric])


def _few_seeds(cfg) -> str | None:
    if len(cfg.seeds) < 3:
        return f"only {len(cfg.seeds)} seed(s) at preset '{cfg.preset}'; claims are judged over >= 3 seeds"
    return None


def claim_label_efficiency(cfg, le: pd.DataFrame) -> dict:
    statement = ("At small label counts, self-supervised pretraining then fine-tuning beats training from "
                 "scratch on the same labels; the gap narrows as labels grow.")
    reason = _few_seeds(cfg)
    if reason or "scratch" not in set(le["init"]) or len(cfg.label_counts) < 2:
        return dict(id="C1_label_efficiency", statement=statement, status="not evaluated",
                    reason=reason or "needs scratch and >= 2 label counts")
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    evidence, verdicts = {}, []
    for ssl in [m for m in ("mae", "simclr") if m in set(le["init"])]:
        small = _paired(le, ssl, "scratch", "miou", n_labels=lo)
        large = _paired(le, ssl, "scratch", "miou", n_labels=hi)
        beats = small["ci95_low"] > 0
        narrows = large["mean_diff"] < small["mean_diff"]
        evidence[ssl] = {f"miou_gap_at_{lo}": small, f"miou_gap_at_{hi}": large, "beats_at_small": bool(beats),
                         "gap_narrows": bool(narrows)}
        if "defect_ap" in le.columns:  # threshold-free companion (evidence only; the verdict is on mIoU)
            evidence[ssl][f"defect_ap_gap_at_{lo}"] = _paired(le, ssl, "scratch", "defect_ap", n_labels=lo)
            evidence[ssl][f"defect_ap_gap_at_{hi}"] = _paired(le, ssl, "scratch", "defect_ap", n_labels=hi)
        verdicts.append(beats and narrows)
    status = "held" if any(verdicts) else "did not hold"
    reason = (f"mIoU of SSL-pretrained minus scratch, paired over seeds {list(cfg.seeds)}; 'beats' = 95% CI "
              f"above 0 at {lo} labels; 'narrows' = mean gap at {hi} labels smaller than at {lo}; held if it "
              f"holds for MAE or SimCLR (pretraining: one run per method)")
    return dict(id="C1_label_efficiency", statement=statement, status=status, evidence=evidence, reason=reason)


def claim_probe_vs_finetune(cfg, probes: pd.DataFrame) -> dict:
    statement = ("Masked-image-modelling features are weak under frozen linear or kNN probes but strong after "
                 "fine-tuning, while contrastive features do well under probes too.")
    reason = _few_seeds(cfg)
    if reason or not {"mae", "simclr"} <= set(probes["init"]):
        return dict(id="C2_probe_vs_finetune", statement=statement, status="not evaluated",
                    reason=reason or "needs both MAE and SimCLR")
    m = probes.pivot_table(index=["init", "seed"], columns="protocol", values="balanced_accuracy")
    mae, sim = m.loc["mae"], m.loc["simclr"]
    lin = paired_difference(sim["linear probe"], mae["linear probe"])
    knn = paired_difference(sim["kNN probe"], mae["kNN probe"])
    gain = paired_difference(mae["fine-tune"] - mae["linear probe"], sim["fine-tune"] - sim["linear probe"])
    ft = paired_difference(mae["fine-tune"], sim["fine-tune"])
    probes_favour_simclr = lin["ci95_low"] > 0 and knn["ci95_low"] > 0
    mae_gains_more = gain["ci95_low"] > 0
    status = "held" if probes_favour_simclr and mae_gains_more else "did not hold"
    means = m.groupby(level=0).mean()
    evidence = {"simclr_minus_mae_linear": lin, "simclr_minus_mae_knn": knn,
                "mae_gain_minus_simclr_gain(finetune-linear)": gain, "mae_minus_simclr_finetune": ft,
                "simclr_beats_mae_under_both_probes": bool(probes_favour_simclr),
                "mae_gains_more_from_finetuning": bool(mae_gains_more),
                "means": means.round(4).to_dict(orient="index")}
    reason = (f"defect/no-defect balanced accuracy with {cfg.probe_labels} labels, paired over seeds "
              f"{list(cfg.seeds)}; held if SimCLR beats MAE under both the linear and the kNN probe and MAE gains "
              f"more from fine-tuning ({cfg.trainable_blocks} top blocks tuned) over its linear probe than SimCLR "
              "does, each with its 95% CI above 0")
    near_chance = float((means.loc[["mae", "simclr"]] - 0.5).abs().to_numpy().max())
    if near_chance < 0.1:
        reason += (f"; note: every MAE/SimCLR protocol is within {near_chance:.2f} of chance (0.5), so the "
                   "features carry little defect information at this preset and the comparison says little")
    return dict(id="C2_probe_vs_finetune", statement=statement, status=status, evidence=evidence, reason=reason)


def claim_in_domain(cfg, le: pd.DataFrame, probes: pd.DataFrame | None = None) -> dict:
    statement = "Pretraining on in-domain unlabeled images beats pretraining on unrelated images of the same count."
    reason = _few_seeds(cfg)
    if reason or not {"mae", "mae_unrelated"} <= set(le["init"]):
        return dict(id="C3_in_domain", statement=statement, status="not evaluated",
                    reason=reason or "needs MAE on in-domain and on unrelated images")
    lo = min(cfg.label_counts)
    seg = _paired(le, "mae", "mae_unrelated", "miou", n_labels=lo)
    f1 = _paired(le, "mae", "mae_unrelated", "defect_f1", n_labels=lo)
    evidence = {f"miou_gap_at_{lo}": seg, f"defect_f1_gap_at_{lo}": f1}
    if "defect_ap" in le.columns:
        evidence[f"defect_ap_gap_at_{lo}"] = _paired(le, "mae", "mae_unrelated", "defect_ap", n_labels=lo)
    if probes is not None and {"mae", "mae_unrelated"} <= set(probes["init"]):
        p = probes[probes["protocol"] == "fine-tune"]
        evidence["classification_finetune_gap"] = _paired(p, "mae", "mae_unrelated", "balanced_accuracy")
    status = "held" if seg["ci95_low"] > 0 else "did not hold"
    reason = (f"MAE on {cfg.n_unlabeled} in-domain surfaces vs MAE on {cfg.n_unlabeled} unrelated photographs "
              f"(same epochs); segmentation mIoU at {lo} labels, paired over seeds; held if the 95% CI is above 0")
    return dict(id="C3_in_domain", statement=statement, status=status, evidence=evidence, reason=reason)


def claims_from_results(cfg, le: pd.DataFrame, probes: pd.DataFrame) -> list[dict]:
    return [claim_label_efficiency(cfg, le), claim_probe_vs_finetune(cfg, probes), claim_in_domain(cfg, le, probes)]


def headline_metrics(cfg, le: pd.DataFrame, probes: pd.DataFrame, anomaly: pd.DataFrame,
                     protocols: pd.DataFrame | None = None) -> dict:
    lo = min(cfg.label_counts)
    small = le[le["n_labels"] == lo].groupby("init")["miou"].mean()
    out = {f"miou_at_{lo}_labels/{k}": float(v) for k, v in small.items()}
    if "defect_ap" in le.columns:
        ap = le[le["n_labels"] == lo].groupby("init")["defect_ap"].mean()
        out.update({f"defect_ap_at_{lo}_labels/{k}": float(v) for k, v in ap.items()})
    out["miou_few_labels_mae"] = float(small.get("mae", np.nan))
    out["miou_few_labels_scratch"] = float(small.get("scratch", np.nan))
    for (init, protocol), v in probes.groupby(["init", "protocol"])["balanced_accuracy"].mean().items():
        out[f"balanced_accuracy/{protocol}/{init}"] = float(v)
    if protocols is not None and len(protocols):
        for (init, proto), v in protocols.groupby(["init", "protocol"])["miou"].mean().items():
            out[f"miou_at_{cfg.protocol_labels}_labels/{proto}/{init}"] = float(v)
    for _, r in anomaly.iterrows():
        out[f"patchcore_image_auroc/{r['init']}"] = float(r["image_auroc"])
        out[f"patchcore_pixel_auroc/{r['init']}"] = float(r["pixel_auroc"])
    return out
