"""Study 3: self-supervised pretraining for industrial inspection with few labels (notebook 03).

Pipeline, in the kit's order (data -> the grid's tasks -> claims -> tables -> figures):

1. **data** (:func:`make_data`): simulated surfaces, or a user's MVTec AD category / per-class folder
   (``data_source``, ``data_root``) split by a documented, seeded rule (:func:`split_inspection`): defect-free
   images for pretraining and the PatchCore memory bank, defect images between the labelled pool and the test
   set. Every ViT input is standardised with the statistics of the inspection images it is applied to.
2. **pretraining** (grid ``ssl_industrial-pretrain``, :func:`pretrain_task`): MAE and SimCLR on the unlabeled
   in-domain images, MAE on as many unrelated photographs; each records, on the same fixed batches (masks,
   views), its loss before the first step and after the last, the best learner-free predictor's loss and the
   ratio (``loss_ratio``), and its budget. An encoder whose ratio is not below ``trained_max_loss_ratio`` did
   not train (precondition "trained"): it is fine-tuned and shown, but no claim rests on it. The in-domain
   encoders become named checkpoints.
3. **fine-tuning** (grid ``ssl_industrial-finetune``, :func:`finetune_task`): init x label count x seed. Full
   fine-tuning trains every parameter (patch embedding, position embedding, every block, the decoder); the
   frozen probe trains only a linear head on the frozen encoder (every ViT init, the random-init one included:
   precondition "features learned"); a small CNN U-Net from scratch and an
   "all good" predictor (the floor) are rows of the same table. Label subsets of different seeds are
   disjoint where the pool allows (:func:`label_subset`).
4. **anomaly detection** (grid ``ssl_industrial-patchcore``, :func:`patchcore_task`): PatchCore with local
   neighbourhood aggregation, greedy coreset, max-patch image score; image/pixel AUROC and AUPRO.
5. **claims** (:func:`declare_claims`, :func:`claim_tables`), judged by :mod:`labkit.core.claims`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from labkit.core.claims import BUDGET_KEYS, Claim, Compare, Precondition, budget_record
from labkit.core.errors import DataError, ParameterError, WeightsUnavailableError
from labkit.core.grid import Grid, file_digest, grid_task
from labkit.core.metrics import aggregate_over_seeds
from labkit.data.surfaces import DEFECT_TYPES, SurfaceSimulator, unrelated_images

STUDY = "ssl_industrial"
CHECKPOINTS = {"mae": "ssl-mae-vit-tiny-industrial", "simclr": "ssl-simclr-vit-tiny-industrial"}
PRETRAINED = {"mae": ("mae", "in_domain"), "simclr": ("simclr", "in_domain"), "mae_unrelated": ("mae", "unrelated")}
VIT_INITS = ("scratch", "mae", "simclr", "mae_unrelated", "dinov2")
INIT_LABELS = {
    "scratch": "ViT from scratch (random init)",
    "mae": "MAE (in-domain)",
    "simclr": "SimCLR (in-domain)",
    "mae_unrelated": "MAE (unrelated photos)",
    "dinov2": "DINOv2 ViT-S/14 (hub)",
    "unet": "small CNN U-Net from scratch",
    "all_good": "'all good' (floor: no defect anywhere)",
}
COLOURS = {
    "scratch": "tab:grey",
    "mae": "tab:blue",
    "simclr": "tab:orange",
    "mae_unrelated": "tab:purple",
    "dinov2": "tab:green",
    "unet": "tab:brown",
    "all_good": "black",
}
MVTEC_HELP = (
    "MVTec AD (Bergmann et al., CVPR 2019), published at https://www.mvtec.com/company/research/datasets/"
    "mvtec-ad (CC BY-NC-SA 4.0). Give data_root = one category folder laid out as "
    "<category>/train/good/*.png, <category>/test/good/*.png, <category>/test/<defect>/*.png and "
    "<category>/ground_truth/<defect>/<name>_mask.png (e.g. .../mvtec_anomaly_detection/bottle)"
)
PER_CLASS_HELP = (
    "a per-class folder: data_root/<class>/Imgs/<name>.<jpg|png|bmp> with its mask beside it as "
    "<name>.png (a class named good/ok/normal needs no masks)"
)


# ======================================================================================
# 1. data
# ======================================================================================
def check_inputs(cfg) -> None:
    """Fail before any work: a real data source without ``data_root`` (naming the dataset, its layout and
    where it is published), a ``data_root`` or weights file that does not exist."""
    if cfg.data_source == "simulated":
        if cfg.data_root:
            raise ParameterError(
                f"data_root={cfg.data_root!r} is given but data_source is 'simulated'; "
                "set data_source to mvtec or per_class to read it"
            )
    else:
        layout = MVTEC_HELP if cfg.data_source == "mvtec" else PER_CLASS_HELP
        if not cfg.data_root:
            raise ParameterError(
                f"data_source={cfg.data_source!r} (preset {cfg.preset!r}) needs data_root: {layout}. "
                "Run e.g. `labkit reproduce ssl_industrial -p data_source mvtec -p data_root "
                "/data/mvtec_anomaly_detection/bottle`, or -p data_source simulated"
            )
        if not Path(cfg.data_root).is_dir():
            raise ParameterError(f"parameter data_root: folder {cfg.data_root} does not exist ({layout})")
    for name in ("encoder_weights", "dinov2_weights"):
        value = cfg[name]
        if value not in ("random", "pretrained") and not str(value).startswith("labkit:") and not Path(value).exists():
            raise ParameterError(
                f"parameter {name}: weights file {value} does not exist (give random, pretrained, "
                "labkit:<name> or an existing .safetensors/.pth file)"
            )
    if cfg.encoder_weights == "pretrained":
        raise ParameterError(
            "parameter encoder_weights: the study's ViT has no hub weights at its size; give random, "
            "labkit:<name> or a file"
        )


def regime_seeds(cfg) -> list[int]:
    """The seeds of the scratch-ViT regime runs (the label-limited precondition's): ``seeds`` first, then the
    extra ``regime_seeds``."""
    return list(dict.fromkeys([*cfg.seeds, *(cfg.get("regime_seeds") or [])]))


def _pool_size(cfg) -> int:
    """Simulated labelled pool: one block of the most labels per seed (regime seeds included), and 15 % more, as
    about half the draws are defective: no two seeds share an image."""
    return int(np.ceil(1.15 * max(cfg.label_counts) * len(regime_seeds(cfg))))


def split_inspection(inspection, cfg) -> dict:
    """The documented, seeded split of a real inspection folder (``docs/data/ssl_industrial.md``).

    Shuffled with ``data_seed``: the **defect** images go half to the labelled pool, half to the test set
    (test gets the odd one); the **defect-free** images give the test set as many as it has defect images,
    the pool as many as it has defect images (each at most a quarter of the defect-free images); the rest
    is the unlabeled pretraining set, whose first ``n_good`` images are also PatchCore's memory bank.
    Raises DataError when fewer than ``n_unlabeled`` defect-free images are left for pretraining.
    """
    rng = np.random.default_rng(1000 * cfg.data_seed + 7)
    labels = inspection.labels
    bad, good = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    if len(bad) < 2:
        raise DataError(
            f"{cfg.data_root}: {len(bad)} defect image(s) with masks; the study needs at least 2 "
            "(one for the labelled pool, one for the test set)"
        )
    n_pool_bad = len(bad) // 2
    pool_bad, test_bad = bad[:n_pool_bad], bad[n_pool_bad:]
    n_test_good = min(len(test_bad), len(good) // 4)
    n_pool_good = min(len(pool_bad), len(good) // 4)
    test_good, pool_good = good[:n_test_good], good[n_test_good : n_test_good + n_pool_good]
    rest = good[n_test_good + n_pool_good :]
    if len(rest) < cfg.n_unlabeled:
        raise DataError(
            f"{cfg.data_root}: {len(good)} defect-free images, of which {len(rest)} are left for "
            f"pretraining after the test set and the labelled pool take theirs, but n_unlabeled="
            f"{cfg.n_unlabeled} were asked for; lower n_unlabeled (-p n_unlabeled {len(rest)}) or add "
            "defect-free images"
        )
    unlabeled = rest[: cfg.n_unlabeled]
    return {
        "unlabeled": inspection.subset(unlabeled),
        "pool": inspection.subset(np.concatenate([pool_bad, pool_good])),
        "test": inspection.subset(np.concatenate([test_bad, test_good])),
        "good": inspection.subset(unlabeled[: cfg.n_good]),
    }


def make_data(cfg) -> dict:
    """The study's sets: ``unlabeled``, ``pool`` (labelled), ``test``, ``good`` (memory bank), ``unrelated``
    (photos, the claim-3 control), each with ``images`` (N, C, H, W) in [0, 1] (and ``masks``, ``defect_types``),
    saved once as an ``.npz`` that every grid task reads (``data["file"]``, ``data["digest"]``)."""
    check_inputs(cfg)
    base = 1000 * cfg.data_seed
    if cfg.data_source == "simulated":
        sim = SurfaceSimulator(size=cfg.img_size, channels=cfg.channels, defect_fraction=0.5)
        sets = {
            "unlabeled": sim.sample(cfg.n_unlabeled, seed=base + 1, defect_fraction=cfg.unlabeled_defect_fraction),
            "pool": sim.sample(_pool_size(cfg), seed=base + 2),
            "test": sim.sample(cfg.n_test, seed=base + 3),
            "good": sim.sample(cfg.n_good, seed=base + 4, defect_fraction=0.0),
        }
    else:
        from labkit.data.inspection_folders import GOOD_NAMES, load_mvtec_style, load_per_class

        common = dict(channels=cfg.channels, size=cfg.img_size, on_corrupt=cfg.on_corrupt)
        if cfg.data_source == "mvtec":
            inspection = load_mvtec_style(cfg.data_root, defect_types=cfg.defect_types, **common)
        else:
            classes = None if cfg.defect_types is None else list(cfg.defect_types) + list(GOOD_NAMES)
            inspection = load_per_class(cfg.data_root, classes=classes, **common)
        sets = split_inspection(inspection, cfg)
    out = {}
    for name, s in sets.items():
        out[name] = {
            "images": np.asarray(s.images, np.float32),
            "masks": np.asarray(s.masks, np.int64),
            "defect_types": np.asarray(s.defect_types, str),
        }
    out["unrelated"] = {
        "images": unrelated_images(
            len(out["unlabeled"]["images"]), size=cfg.img_size, channels=cfg.channels, seed=base + 5
        )
    }
    mean = out["unlabeled"]["images"].mean(axis=(0, 2, 3))
    std = out["unlabeled"]["images"].std(axis=(0, 2, 3)) + 1e-6
    arrays = {f"{k}_{f}": v for k, d in out.items() for f, v in d.items()}
    arrays.update(pixel_mean=mean.astype(np.float32), pixel_std=std.astype(np.float32))
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    from labkit.core.paths import cache_dir

    path = cache_dir(f"{STUDY}/data") / f"{digest.hexdigest()[:20]}.npz"
    if not path.exists():
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    out.update(file=str(path), digest=file_digest(path), source=cfg.data_source)
    return out


@functools.lru_cache(maxsize=4)
def _load(data_file: str) -> dict:
    with np.load(data_file, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def data_summary(data: dict) -> pd.DataFrame:
    rows = []
    for name in ("unlabeled", "pool", "test", "good"):
        s = data[name]
        types = s["defect_types"]
        row = {
            "set": name,
            "images": len(types),
            "defective": int((types != "good").sum()),
            "defect_pixel_%": round(100 * float(s["masks"].mean()), 2),
        }
        row.update({d: int((types == d).sum()) for d in sorted(set(types) - {"good"})})
        rows.append(row)
    rows.append({"set": "unrelated (photos)", "images": len(data["unrelated"]["images"])})
    return pd.DataFrame(rows).fillna(0)


def samples_figure(split: dict, per_type: int = 3):
    """Images with their masks outlined, one row per defect type (and good)."""
    types = split["defect_types"]
    kinds = ["good"] + [d for d in list(DEFECT_TYPES) + sorted(set(types)) if (types == d).any() and d != "good"]
    kinds = list(dict.fromkeys(kinds))
    fig, axes = plt.subplots(len(kinds), per_type, figsize=(2 * per_type, 2 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        idx = np.flatnonzero(types == kind)[:per_type]
        for c in range(per_type):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            img = split["images"][idx[c]]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            if split["masks"][idx[c]].any():
                ax.contour(split["masks"][idx[c]], levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(kind, fontsize=8)
    fig.suptitle("Test images: defect masks outlined in red")
    fig.tight_layout()
    return fig


def label_subset(defect_labels: np.ndarray, n: int, seed: int, block: int, data_seed: int = 0) -> np.ndarray:
    """``n`` pool indices for ``seed``, half defective where possible, taken from the seed's own block of a
    fixed, seeded order: seeds 0, 1, 2, ... draw disjoint subsets while the pool holds ``block`` images per seed
    (``block`` = the largest label count), and a seed's smaller subsets nest inside its larger ones."""
    labels = np.asarray(defect_labels)
    if n > len(labels):
        raise ParameterError(f"asked for {n} labelled images but the labelled pool holds {len(labels)}")
    rng = np.random.default_rng(10_000 + data_seed)
    bad, good = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    n_bad = min(len(bad), max(1, n // 2))
    n_good = min(len(good), n - n_bad)
    n_bad = n - n_good
    b_bad, b_good = max(1, block // 2), max(1, block - block // 2)
    pick_bad = bad[(seed * b_bad + np.arange(n_bad)) % len(bad)] if n_bad else np.array([], int)
    pick_good = good[(seed * b_good + np.arange(n_good)) % len(good)] if n_good else np.array([], int)
    return np.sort(np.concatenate([pick_bad, pick_good]).astype(int))


def subset_overlap(cfg, data) -> pd.DataFrame:
    """How many labelled images each pair of seeds shares at each label count (0 where the pool allows); the
    extra regime seeds count at the fewest and the most labels, where they run."""
    labels = (data["pool"]["defect_types"] != "good").astype(int)
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    rows = []
    for n in cfg.label_counts:
        seeds = regime_seeds(cfg) if n in (lo, hi) else list(cfg.seeds)
        subsets = {s: set(label_subset(labels, n, s, hi, cfg.data_seed)) for s in seeds}
        shared = [len(subsets[a] & subsets[b]) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
        rows.append(
            {
                "n_labels": n,
                "pool": len(labels),
                "seeds": len(seeds),
                "max_shared_between_seeds": max(shared, default=0),
            }
        )
    return pd.DataFrame(rows)


# ======================================================================================
# 2. pretraining (grid tasks)
# ======================================================================================
def _encoder_kwargs(cfg) -> dict:
    kw = {}
    if cfg.encoder_depth:
        kw["depth"] = int(cfg.encoder_depth)
    if cfg.encoder_width:
        kw.update(embed_dim=int(cfg.encoder_width), num_heads=max(1, int(cfg.encoder_width) // 32))
    return kw


def _new_vit(arch, img_size, patch_size, channels, encoder_kwargs, weights="random"):
    from labkit.models.backbones import create_backbone

    return create_backbone(
        arch,
        weights=weights,
        img_size=img_size,
        patch_size=patch_size,
        in_chans=channels,
        num_classes=0,
        **encoder_kwargs,
    )


@grid_task("ssl_industrial/pretrain")
def pretrain_task(
    method: str,
    source: str,
    data_file: str,
    arch: str,
    encoder_kwargs: dict,
    img_size: int,
    patch_size: int,
    epochs: int,
    batch_size: int,
    mask_ratio: float,
    norm_pix_loss: bool,
    seed: int,
    device: str = "cpu",
) -> dict:
    """One pretraining run (MAE or SimCLR on the in-domain or the unrelated images): encoder weights, loss
    history, and, on the same fixed batches (masks, views) before the first step and after the last, the
    network's loss (``initial_loss``, ``eval_loss``) and the best learner-free predictor's
    (``learner_free_loss``: MAE, each hidden patch filled with its image's visible mean or zeros, whichever is
    lower; SimCLR, the untrained network or a constant embedding, whichever is lower), their ratio
    (``loss_ratio``) and the run's ``budget``. ``epochs`` 0 scores the untrained network."""
    from labkit.core.device import resolve_device
    from labkit.methods.ssl import pretrain_mae, pretrain_simclr

    d = _load(data_file)
    images = d["unlabeled_images"] if source == "in_domain" else d["unrelated_images"]
    common = dict(
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        batch_size=min(batch_size, len(images)),
        epochs=epochs,
        seed=seed,
        progress=False,
        encoder_kwargs=encoder_kwargs,
        device=resolve_device(device, announce=False),
    )
    if method == "mae":
        enc, hist = pretrain_mae(
            images, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, decoder_dim=96, decoder_depth=1, **common
        )
    else:
        enc, hist = pretrain_simclr(images, **common)
    meta = enc.pretrain_meta
    return {
        "state": {k: v.detach().cpu().numpy() for k, v in enc.state_dict().items()},
        "loss": hist["loss"].to_numpy(float),
        "first_loss": float(hist["loss"].iloc[0]) if len(hist) else float("nan"),
        "final_loss": float(hist["loss"].iloc[-1]) if len(hist) else float("nan"),
        "trivial_loss": float(meta["trivial_loss"]),
        "initial_loss": float(meta["initial_loss"]),
        "eval_loss": float(meta["eval_loss"]),
        "learner_free_loss": float(meta["learner_free_loss"]),
        "learner_free_rule": str(meta["learner_free_rule"]),
        "loss_ratio": float(meta["loss_ratio"]),
        "seconds": float(meta["seconds"]),
        "images_per_s": float(hist["images_per_second"].median()) if len(hist) else float("nan"),
        "n_images": int(len(images)),
        "epochs_run": int(len(hist)),
        "steps": int(meta["steps"]),
        "budget": meta["budget"],
    }


def _pretrain_params(cfg, data, init) -> dict:
    method, source = PRETRAINED[init]
    return dict(
        method=method,
        source=source,
        data_file=data["file"],
        arch=cfg.arch,
        encoder_kwargs=_encoder_kwargs(cfg),
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        epochs=cfg.mae_epochs if method == "mae" else cfg.simclr_epochs,
        batch_size=cfg.pretrain_batch_size,
        mask_ratio=cfg.mask_ratio,
        norm_pix_loss=cfg.mae_norm_pix_loss,
        seed=cfg.seeds[0],
        device=cfg.device,
    )


def pretrain_all(cfg, data, progress: bool = True) -> dict:
    """Run the pretraining grid; save each encoder (in-domain ones as named labkit checkpoints) and return
    ``{init: {"record", "file", "digest"}}`` for the inits asked for."""
    from labkit.core.checkpoints import save_checkpoint
    from labkit.core.paths import cache_dir
    from labkit.models.registry import save_named_checkpoint

    names = [n for n in PRETRAINED if n in cfg.inits]
    grid = Grid(f"{STUDY}-pretrain", pretrain_task, inputs={"data": data["digest"]})
    for name in names:
        grid.add(**_pretrain_params(cfg, data, name))
    result = grid.run(executor=cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler, progress=progress)
    out = {}
    for name, rec in zip(names, result.records):
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rec["state"].items()}
        meta = {
            "arch": cfg.arch,
            "img_size": cfg.img_size,
            "patch_size": cfg.patch_size,
            "in_chans": cfg.channels,
            "method": PRETRAINED[name][0],
            "encoder_kwargs": json.dumps(_encoder_kwargs(cfg)),
            "pixel_mean": data_pixel_stats(data)[0],
            "pixel_std": data_pixel_stats(data)[1],
            "loss_ratio": rec["loss_ratio"],
            "data": f"{data['source']} inspection images, preset {cfg.preset}",
        }
        if name in CHECKPOINTS:
            path = save_named_checkpoint(CHECKPOINTS[name], state, meta)
        else:
            path = save_checkpoint(
                cache_dir(f"{STUDY}/encoders") / f"{name}-{grid.tasks[names.index(name)].fingerprint()}", state, meta
            )
        out[name] = {"record": rec, "file": str(path), "digest": file_digest(path)}
    return out


def data_pixel_stats(data) -> tuple[list[float], list[float]]:
    d = _load(data["file"])
    return d["pixel_mean"].astype(float).tolist(), d["pixel_std"].astype(float).tolist()


def trained_precondition(cfg, init: str) -> Precondition:
    """Precondition "trained" of a pretrained init: on the same fixed batches (masks, views), the network's
    loss after pretraining below ``trained_max_loss_ratio`` x the best learner-free predictor's."""
    bar = cfg.trained_max_loss_ratio
    method = PRETRAINED[init][0]
    baseline = (
        "each hidden patch filled with its image's visible mean (or zeros, whichever is lower), same masks"
        if method == "mae"
        else "the untrained network (same initial weights) on the same batches and views, or log(2N-1) if lower"
    )
    return Precondition.trained(
        "eval_loss",
        {"init": init},
        bar,
        table="pretraining",
        name=f"trained ({init})",
        learner_free="learner_free_loss",
        why=(
            f"{init} pretraining loss below {bar:g} x the best learner-free predictor's ({baseline}): an encoder "
            "that learned nothing scores a ratio near 1 (0 steps: at least 1), so it must remove at least "
            f"{1 - bar:.0%} of the loss that predictor leaves"
        ),
    )


def pretraining_frame(pretrained: dict) -> pd.DataFrame:
    """The ``pretraining`` claim table: per pretrained init its loss on the fixed evaluation batches after
    pretraining and before (the untrained network), the best learner-free predictor's and their ratio."""
    cols = ["init", "eval_loss", "initial_loss", "learner_free_loss", "learner_free_rule", "loss_ratio", "steps"]
    rows = [{"init": k, **{c: v["record"].get(c) for c in cols[1:]}} for k, v in pretrained.items()]
    return pd.DataFrame(rows, columns=cols)


def is_trained(cfg, init: str, pretrained: dict) -> tuple[bool, str]:
    """Whether ``init`` passed precondition "trained" (the claims' own rule) and, if not, why (actionable)."""
    verdict = trained_precondition(cfg, init).evaluate({"pretraining": pretraining_frame(pretrained)})
    if verdict["passed"]:
        return True, ""
    r = pretrained[init]["record"]
    knob = "mae_epochs" if PRETRAINED[init][0] == "mae" else "simclr_epochs"
    return False, (
        f"did not train: precondition 'trained ({init})' failed (after {r.get('steps', '?')} steps, loss "
        f"{r['eval_loss']:.4g} on fixed evaluation batches = {r['loss_ratio']:.3f} x the best learner-free "
        f"predictor's {r['learner_free_loss']:.4g} ({r['learner_free_rule']}), not below "
        f"{cfg.trained_max_loss_ratio:g}); pretrain longer ({knob}) or on more images"
    )


def pretraining_table(cfg, pretrained: dict) -> pd.DataFrame:
    """Per pretraining: its steps, its training losses, and on the same fixed batches the untrained network's
    loss (``initial_loss``), the trained one's (``eval_loss``) and the best learner-free predictor's, with the
    ratio precondition "trained" reads."""
    rows = []
    for name, p in pretrained.items():
        r = p["record"]
        trained, _ = is_trained(cfg, name, pretrained)
        rows.append(
            {
                "init": name,
                "method": PRETRAINED[name][0],
                "data": PRETRAINED[name][1],
                "images": r["n_images"],
                "epochs": r["epochs_run"],
                "steps": r.get("steps"),
                "first_loss": r["first_loss"],
                "final_loss": r["final_loss"],
                "initial_loss": r.get("initial_loss"),
                "eval_loss": r.get("eval_loss"),
                "learner_free_loss": r.get("learner_free_loss"),
                "learner_free_rule": r.get("learner_free_rule"),
                "trivial_loss": r["trivial_loss"],
                "loss_ratio": r["loss_ratio"],
                "trained": "yes" if trained else f"no: ratio not below {cfg.trained_max_loss_ratio:g}",
                "seconds": r["seconds"],
                "images_per_s": r["images_per_s"],
            }
        )
    return pd.DataFrame(rows)


def pretraining_figure(pretrained: dict):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, p in pretrained.items():
        r = p["record"]
        ax = axes[0] if PRETRAINED[name][0] == "mae" else axes[1]
        loss = np.asarray(r["loss"]) / r["learner_free_loss"]
        ax.plot(np.arange(1, len(loss) + 1), loss, marker="o", ms=3, label=INIT_LABELS[name], color=COLOURS[name])
        ax.plot([len(loss)], [r["loss_ratio"]], marker="*", ms=10, color=COLOURS[name], ls="none")
    axes[0].set(title="MAE: hidden-patch loss / learner-free predictor's", xlabel="epoch", ylabel="loss ratio")
    axes[1].set(title="SimCLR: NT-Xent / untrained network's", xlabel="epoch", ylabel="loss ratio")
    for ax in axes:
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ======================================================================================
# 3. fine-tuning (grid tasks)
# ======================================================================================
def resolve_inits(cfg, pretrained: dict) -> tuple[dict, pd.DataFrame]:
    """``{init: reason}`` for every init asked for that cannot be evaluated (weights unavailable, did not
    train: precondition "trained", :func:`is_trained`), and the initialisations table. An encoder that was
    pretrained but did not train is still fine-tuned and probed (its rows show what an untrained encoder
    scores); the claims resting on it are not evaluated with the reason."""
    unavailable, rows = {}, []
    for name in cfg.inits:
        reason = ""
        if name in PRETRAINED:
            if name not in pretrained:
                reason = "not pretrained in this run"
            else:
                reason = is_trained(cfg, name, pretrained)[1]
        elif name == "dinov2":
            try:
                dinov2_encoder(cfg.img_size, cfg.dinov2_weights, check_only=True)
            except WeightsUnavailableError as exc:
                reason = "weights unavailable: " + " ".join(str(exc).split())
        if reason:
            unavailable[name] = reason
        rows.append(
            {
                "init": name,
                "description": INIT_LABELS.get(name, name),
                "status": (
                    "evaluated"
                    if not reason
                    else "did not train: fine-tuned and shown, no claim rests on it"
                    if name in pretrained
                    else "not evaluated"
                ),
                "reason": reason,
            }
        )
    return unavailable, pd.DataFrame(rows)


def _dinov2_side(img_size: int) -> int:
    return max(14, int(np.ceil(img_size / 14)) * 14)


def dinov2_encoder(img_size: int, weights: str, check_only: bool = False):
    """DINOv2 ViT-S/14 at the 14-multiple side nearest above ``img_size`` (raises WeightsUnavailableError)."""
    import os

    from labkit.models.backbones import create_backbone, how_to_provide, resolve_pretrained_file

    if check_only and weights == "pretrained" and resolve_pretrained_file("dinov2_vits14", None) is None:
        if os.environ.get("HF_HUB_OFFLINE") or not _hub_reachable():
            raise WeightsUnavailableError(how_to_provide("dinov2_vits14"))
    enc = create_backbone("dinov2_vits14", weights=weights, img_size=_dinov2_side(img_size), num_classes=0)
    return enc


def _hub_reachable() -> bool:
    from labkit.models.backbones import hub_reachable

    return hub_reachable()


def _prepare(x: np.ndarray, init: str, mean, std, img_size: int) -> torch.Tensor:
    """The input of an init: inspection images standardised with the inspection set's own statistics (every
    ViT and the U-Net alike: no encoder sees images standardised with another set's statistics); DINOv2
    gets 3 channels at its side with ImageNet statistics, as it was trained."""
    import torch.nn.functional as F

    t = torch.from_numpy(np.asarray(x, np.float32))
    if init == "dinov2":
        if t.shape[1] == 1:
            t = t.repeat(1, 3, 1, 1)
        side = _dinov2_side(img_size)
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
        m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (t - m) / s
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (t - m) / s


def _build_encoder(
    init, encoder_file, arch, encoder_kwargs, img_size, patch_size, channels, encoder_weights, dinov2_weights
):
    from labkit.core.checkpoints import load_checkpoint, load_state_into

    if init == "dinov2":
        return dinov2_encoder(img_size, dinov2_weights)
    if init == "scratch":
        return _new_vit(arch, img_size, patch_size, channels, encoder_kwargs, weights=encoder_weights)
    enc = _new_vit(arch, img_size, patch_size, channels, encoder_kwargs)
    state, _ = load_checkpoint(encoder_file)
    load_state_into(enc, state, source=f"pretrained encoder {encoder_file}")
    return enc


@grid_task("ssl_industrial/finetune")
def finetune_task(
    init: str,
    protocol: str,
    n_labels: int,
    seed: int,
    block: int,
    data_file: str,
    data_seed: int,
    encoder_file: str | None,
    encoder_digest: str | None,
    arch: str,
    encoder_kwargs: dict,
    img_size: int,
    patch_size: int,
    channels: int,
    steps: int,
    batch_size: int,
    lr: float,
    encoder_lr_scale: float,
    seg_head: str,
    encoder_weights: str = "random",
    dinov2_weights: str = "pretrained",
    device: str = "cpu",
) -> dict:
    """One defect-segmentation run on ``n_labels`` labelled images of the pool, scored on the test set.

    ``init``: scratch / mae / simclr / mae_unrelated / dinov2 (a ViT), ``unet`` (a small CNN U-Net from
    scratch) or ``all_good`` (no defect anywhere: the floor, no training). ``protocol``: ``full`` (every
    parameter of the encoder, patch embedding included, and the decoder) or ``frozen`` (a linear head on the
    frozen encoder's patch tokens). Returns defect AP, defect F1, image AUROC, mIoU, trainable parameters.
    """
    from labkit.core.device import resolve_device
    from labkit.methods.defect_segmentation import (
        ViTSegmenter,
        count_trainable,
        defect_metrics,
        predict_defect_prob,
        small_unet,
        train_segmenter,
    )

    dev = resolve_device(device, announce=False)
    d = _load(data_file)
    pool_labels = (d["pool_defect_types"] != "good").astype(int)
    idx = label_subset(pool_labels, n_labels, seed, block, data_seed)
    test_masks = d["test_masks"]
    out = {"n_train": len(idx), "train_defective": int(pool_labels[idx].sum())}
    if init == "all_good":  # the floor: no training, so no budget
        prob = np.zeros(test_masks.shape, np.float32)
        return {**out, **defect_metrics(prob, test_masks), "trainable_params": 0, "seconds": 0.0}
    mean, std = d["pixel_mean"].tolist(), d["pixel_std"].tolist()
    x_train = _prepare(d["pool_images"][idx], init, mean, std, img_size)
    y_train = torch.from_numpy(d["pool_masks"][idx]).long()
    x_test = _prepare(d["test_images"], init, mean, std, img_size)
    train = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=dev)
    torch.manual_seed(seed)  # the model's initial weights: this run's seed, before anything is built
    if init == "unet":
        model = small_unet(x_train.shape[1])
        info = train_segmenter(model, x_train, y_train, **train)
        prob = predict_defect_prob(model, x_test, device=dev)
    else:
        enc = _build_encoder(
            init, encoder_file, arch, encoder_kwargs, img_size, patch_size, channels, encoder_weights, dinov2_weights
        )
        frozen = protocol == "frozen"
        model = ViTSegmenter(
            enc, out_size=int(test_masks.shape[-1]), head="linear" if frozen else seg_head, frozen=frozen
        ).to(dev)
        if frozen:  # the frozen encoder's features, once; only the head learns (no augmentation)
            with torch.inference_mode():
                f_train = torch.cat([model.features(x_train[i : i + 64].to(dev)) for i in range(0, len(x_train), 64)])
                f_test = torch.cat([model.features(x_test[i : i + 64].to(dev)) for i in range(0, len(x_test), 64)])
            info = train_segmenter(model, f_train.clone(), y_train, augment=False, forward=model.decode, **train)
            prob = predict_defect_prob(model.decode, f_test, device=dev)
        else:
            info = train_segmenter(model, x_train, y_train, encoder_lr_scale=encoder_lr_scale, **train)
            prob = predict_defect_prob(model, x_test, device=dev)
    trainable = count_trainable(model)
    scaled = init != "unet" and protocol == "full" and encoder_lr_scale != 1
    schedule = f"cosine over {steps} steps" + (f", encoder at {encoder_lr_scale:g} x lr" if scaled else "")
    return {
        **out,
        **defect_metrics(prob, test_masks),
        "trainable_params": trainable,
        "seconds": info["seconds"],
        "final_train_loss": info["final_loss"],
        # train_segmenter's batch: min(batch_size, labelled images)
        "budget": budget_record(info["steps"], min(batch_size, len(idx)), lr, schedule, trainable),
    }


def finetune_tasks(cfg, data, pretrained: dict, unavailable: dict) -> list[dict]:
    """The grid: every available init x label count x seed (full fine-tuning); the unrelated-photo MAE at the
    fewest labels (claim 3); frozen probes of every ViT init at the most labels (claim 2, and precondition
    "features learned": each pretrained encoder's probe against the random-init ViT's); the U-Net and the
    'all good' floor at every label count; and the scratch ViT at the fewest and the most labels over the
    extra ``regime_seeds`` (the label-limited precondition's runs, the same task as every other). An encoder
    that was pretrained but did not train is still run (its claims are not evaluated)."""
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    common = dict(
        block=hi,
        data_file=data["file"],
        data_seed=cfg.data_seed,
        arch=cfg.arch,
        encoder_kwargs=_encoder_kwargs(cfg),
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        channels=cfg.channels,
        steps=cfg.finetune_steps,
        batch_size=cfg.finetune_batch_size,
        lr=cfg.finetune_lr,
        encoder_lr_scale=cfg.encoder_lr_scale,
        seg_head=cfg.seg_head,
        encoder_weights=cfg.encoder_weights,
        dinov2_weights=cfg.dinov2_weights,
        device=cfg.device,
    )
    tasks = []
    for init in [*cfg.inits, "unet", "all_good"]:
        if init in unavailable and init not in pretrained:
            continue
        enc = pretrained.get(init, {})
        counts = [lo] if init == "mae_unrelated" else list(cfg.label_counts)
        for n in counts:
            seeds = regime_seeds(cfg) if init == "scratch" and n in (lo, hi) else list(cfg.seeds)
            for seed in seeds:
                tasks.append(
                    dict(
                        init=init,
                        protocol="full" if init in VIT_INITS else "-",
                        n_labels=n,
                        seed=seed,
                        encoder_file=enc.get("file"),
                        encoder_digest=enc.get("digest"),
                        **common,
                    )
                )
        if init in VIT_INITS and "frozen" in cfg.protocols:
            for seed in cfg.seeds:
                tasks.append(
                    dict(
                        init=init,
                        protocol="frozen",
                        n_labels=hi,
                        seed=seed,
                        encoder_file=enc.get("file"),
                        encoder_digest=enc.get("digest"),
                        **common,
                    )
                )
    return tasks


RUN_COLUMNS = [
    "init",
    "protocol",
    "n_labels",
    "seed",
    "defect_ap",
    "defect_f1",
    "image_auroc",
    "miou",
    "defect_iou",
    "trainable_params",
    "seconds",
    "final_train_loss",
    "n_train",
    "train_defective",
    # the run's budget (its record's "budget"; empty for the untrained floor)
    "steps",
    "batch_size",
    "lr",
    "schedule",
]


def finetune_all(
    cfg, data, pretrained: dict, unavailable: dict, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the fine-tuning grid; returns ``(runs, regime)``: ``runs`` holds every run over ``seeds`` (what the
    claims and the results table read), ``regime`` the scratch ViT at the fewest and the most labels over the
    regime seeds (``seeds`` plus ``regime_seeds``: what the label-limited precondition reads)."""
    grid = finetune_grid(cfg, data, pretrained, unavailable)
    result = grid.run(executor=cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler, progress=progress)
    frame = result.frame()
    budgets = [r.get("budget") or {} for r in result.records if r is not None]
    for key in BUDGET_KEYS:  # the budget columns replace the task's requested steps / batch_size / lr
        frame[key] = [b.get(key, np.nan) for b in budgets]
    frame = frame[[c for c in RUN_COLUMNS if c in frame.columns]]
    return _split_regime(cfg, frame)


def finetune_grid(cfg, data, pretrained: dict, unavailable: dict) -> Grid:
    """The fine-tuning grid (not run): one task per :func:`finetune_tasks` entry."""
    grid = Grid(f"{STUDY}-finetune", finetune_task, inputs={"data": data["digest"]})
    for params in finetune_tasks(cfg, data, pretrained, unavailable):
        grid.add(**params)
    return grid


def _split_regime(cfg, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    runs = frame[frame["seed"].isin(cfg.seeds)].reset_index(drop=True)
    regime = frame[
        (frame["init"] == "scratch") & (frame["protocol"] == "full") & frame["n_labels"].isin([lo, hi])
    ].reset_index(drop=True)
    return runs, regime


def results_table(runs: pd.DataFrame, unavailable: dict | None = None) -> pd.DataFrame:
    """One row per init x protocol x label count: mean and 95 % interval over seeds of defect AP, defect F1,
    image AUROC (the claims' metrics) and mIoU (secondary), with the 'all good' floor as the first row; an
    init that could not be evaluated gets a row saying why."""
    metrics = ["defect_ap", "defect_f1", "image_auroc", "miou"]
    summary = aggregate_over_seeds(runs, metrics, ["init", "protocol", "n_labels"])
    order = {k: i for i, k in enumerate(["all_good", "unet", *VIT_INITS])}
    summary = summary.sort_values(
        ["init", "protocol", "n_labels"], key=lambda c: c.map(order) if c.name == "init" else c
    ).reset_index(drop=True)
    floor = runs[runs["init"] == "all_good"].groupby("n_labels")["defect_ap"].mean()
    summary.insert(
        3,
        "defect_ap_above_floor",
        [m - floor.get(n, np.nan) for m, n in zip(summary["defect_ap_mean"], summary["n_labels"])],
    )
    summary.insert(0, "row", [INIT_LABELS.get(i, i) for i in summary["init"]])
    shown = set(runs["init"])
    extra = [
        {
            "row": INIT_LABELS.get(k, k),
            "init": k,
            "protocol": f"no claim rests on its rows: {v}" if k in shown else f"not evaluated: {v}",
        }
        for k, v in (unavailable or {}).items()
    ]
    return pd.concat([summary, pd.DataFrame(extra)], ignore_index=True) if extra else summary


def label_efficiency_figure(runs: pd.DataFrame):
    """Defect AP and defect F1 vs labelled images per init (full fine-tuning), 95 % bands over seeds."""
    df = runs[runs["protocol"].isin(["full", "-"])]
    summary = aggregate_over_seeds(df, ["defect_ap", "defect_f1"], ["init", "n_labels"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("defect_ap", "defect_f1")):
        for name, g in summary.groupby("init", sort=False):
            g = g.sort_values("n_labels")
            style = dict(marker="o", label=INIT_LABELS.get(name, name), color=COLOURS.get(name))
            if name == "all_good":
                style.update(ls="--", marker=None)
            ax.plot(g["n_labels"], g[f"{metric}_mean"], **style)
            low, high = g[f"{metric}_ci95_low"], g[f"{metric}_ci95_high"]
            if low.notna().all():
                ax.fill_between(g["n_labels"], low, high, alpha=0.15, color=COLOURS.get(name))
        ax.set(xscale="log", xlabel="labelled images", ylabel=metric, title=metric.replace("_", " "))
        ticks = sorted(df["n_labels"].unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels(ticks)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Label efficiency after full fine-tuning (bands: 95% CI over seeds; dashed: 'all good' floor)")
    fig.tight_layout()
    return fig


# ======================================================================================
# 4. anomaly detection without defect labels (grid tasks)
# ======================================================================================
@grid_task("ssl_industrial/patchcore")
def patchcore_task(
    init: str,
    data_file: str,
    encoder_file: str | None,
    encoder_digest: str | None,
    arch: str,
    encoder_kwargs: dict,
    img_size: int,
    patch_size: int,
    channels: int,
    coreset_ratio: float,
    neighbourhood: int,
    encoder_weights: str = "random",
    dinov2_weights: str = "pretrained",
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """PatchCore on one init's patch features: memory bank from defect-free images, scored on the test set."""
    from labkit.core.device import resolve_device
    from labkit.methods.anomaly import PatchCore, anomaly_aurocs, vit_patch_features

    dev = resolve_device(device, announce=False)
    d = _load(data_file)
    torch.manual_seed(seed)
    enc = (
        _build_encoder(
            init, encoder_file, arch, encoder_kwargs, img_size, patch_size, channels, encoder_weights, dinov2_weights
        )
        .to(dev)
        .eval()
    )
    mean, std = d["pixel_mean"].tolist(), d["pixel_std"].tolist()
    depth = len(enc.blocks)
    layers = (max(0, depth // 2 - 1), depth - 1)
    model = PatchCore(
        lambda im: vit_patch_features(enc, im.to(dev), layers=layers),
        coreset_ratio=coreset_ratio,
        seed=seed,
        neighbourhood=neighbourhood,
    )
    model.fit(_prepare(d["good_images"], init, mean, std, img_size).numpy())
    scores, maps = model.score(_prepare(d["test_images"], init, mean, std, img_size).numpy())
    if maps.shape[-1] != d["test_masks"].shape[-1]:
        import torch.nn.functional as F

        maps = F.interpolate(
            torch.from_numpy(maps)[:, None], size=d["test_masks"].shape[-2:], mode="bilinear", align_corners=False
        )[:, 0].numpy()
    labels = (d["test_defect_types"] != "good").astype(int)
    res = anomaly_aurocs(scores, maps, labels, d["test_masks"])
    return {
        "image_auroc": res["image_auroc"],
        "pixel_auroc": res["pixel_auroc"],
        "aupro": res["aupro"],
        "memory_bank": int(model.memory_bank_.shape[0]),
        "layers": list(layers),
    }


def anomaly_detection(cfg, data, pretrained: dict, unavailable: dict, progress: bool = True) -> pd.DataFrame:
    inits = [i for i in cfg.inits if i in VIT_INITS and (i not in unavailable or i in pretrained)]
    grid = Grid(f"{STUDY}-patchcore", patchcore_task, inputs={"data": data["digest"]})
    for init in inits:
        enc = pretrained.get(init, {})
        grid.add(
            init=init,
            data_file=data["file"],
            encoder_file=enc.get("file"),
            encoder_digest=enc.get("digest"),
            arch=cfg.arch,
            encoder_kwargs=_encoder_kwargs(cfg),
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            channels=cfg.channels,
            coreset_ratio=cfg.coreset_ratio,
            neighbourhood=cfg.patchcore_neighbourhood,
            encoder_weights=cfg.encoder_weights,
            dinov2_weights=cfg.dinov2_weights,
            seed=cfg.seeds[0],
            device=cfg.device,
        )
    result = grid.run(executor=cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler, progress=progress)
    frame = result.frame()
    if len(frame):
        frame = frame[["init", "image_auroc", "pixel_auroc", "aupro", "memory_bank"]]
        frame.insert(1, "row", [INIT_LABELS.get(i, i) for i in frame["init"]])
    return frame


# ======================================================================================
# 5. claims
# ======================================================================================
# Effects of interest (labkit.core.claims): the paper reports no effect size for these comparisons.
PRACTICAL_AP = 0.03
PRACTICAL_SOURCE = "a stated practical size: 3 points of defect average precision (the paper reports no effect size)"
#: Precondition "above the floor": the arms a claim says score well must beat the 'all good' row (predict no
#: defect: defect AP = the defect-pixel prevalence) by this much defect AP, paired over seeds, so arms that all
#: sit at the floor leave the claim not evaluated rather than "did not hold". Two points: below the practical
#: size of 3, above the seed-to-seed wobble of a predictor that only learned the prevalence. A baseline the
#: claim expects to be weak may sit at the floor (scratch with the fewest labels, which the published default
#: run put at 0.033 against a floor of 0.015; MAE's frozen probe; the unrelated-photo MAE): that is the regime
#: the claim is about, and "A beats B" stays a fair test while A is above the floor.
FLOOR_MARGIN = 0.02


def declare_claims(cfg, unavailable: dict | None = None, **context) -> list[Claim]:
    """The paper's claims in its order, each with its preconditions; ``unavailable``: ``{init: reason}`` for
    arms that cannot be evaluated (weights missing, did not train): claims resting on them are not evaluated
    with that reason. With no context every arm is assumed available.

    Preconditions: "label-limited" (claims 1, 4); "trained" against the best learner-free predictor and
    "features learned" (the pretrained encoder's frozen probe beats the random-init ViT's, paired over seeds)
    for every pretrained encoder a claim rests on (claims 1-3); "above the floor" for every arm the claim says
    scores well (:data:`FLOOR_MARGIN`; a baseline expected to be weak may sit at the floor); and "same budget"
    for every pair of compared trained arms (claim 3 also its two pretrainings)."""
    unavailable = dict(unavailable or {})
    for init in VIT_INITS:
        if init not in cfg.inits:
            unavailable.setdefault(init, f"'{init}' is not in inits at this run (-p inits ...)")
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    m = cfg.label_limited_margin

    def arm(init, n, protocol="full"):
        return {"init": init, "protocol": protocol, "n_labels": n}

    def blocked(*inits):
        reasons = [f"{i}: {unavailable[i]}" for i in inits if i in unavailable]
        return "; ".join(reasons) or None

    label_limited = Precondition.label_limited(
        "defect_ap", full=arm("scratch", hi), few=arm("scratch", lo), margin=m, table="regime"
    )

    def trained(init):
        return trained_precondition(cfg, init)

    def learned(init):
        return Precondition.features_learned(
            "defect_ap",
            pretrained=arm(init, hi, "frozen"),
            random=arm("scratch", hi, "frozen"),
            name=f"features learned ({init})",
        )

    def above(init, n, protocol="full"):
        return Precondition.above_floor(
            "defect_ap",
            arm=arm(init, n, protocol),
            floor={"init": "all_good", "protocol": "-", "n_labels": n},
            margin=FLOOR_MARGIN,
            label=f"{init} {protocol} at {n} labels",
        )

    def same_budget(a, b, stage="finetune"):
        a_where, b_where = {"stage": stage, **a}, {"stage": stage, **b}
        what = (
            f"{a['init']} vs {b['init']} pretraining"
            if stage == "pretrain"
            else f"{a['init']} vs {b['init']}, {a['protocol']} at {a['n_labels']} labels"
        )
        return Precondition.same_budget(a=a_where, b=b_where, label=what)

    claims = []
    for ssl in ("mae", "simclr"):
        claims.append(
            Claim(
                id=f"C1_label_efficiency_{ssl}",
                statement=(
                    "At small label counts, self-supervised pretraining then fine-tuning beats training from "
                    f"scratch on the same labels; the gap narrows as labels grow ({INIT_LABELS[ssl]})."
                ),
                compare=[
                    Compare(
                        "defect_ap",
                        a=arm(ssl, lo),
                        b=arm("scratch", lo),
                        label=f"defect AP at {lo} labels: {ssl} > scratch",
                        effect=PRACTICAL_AP,
                        effect_source=PRACTICAL_SOURCE,
                    ),
                    Compare(
                        "gap_ap",
                        a={"init": ssl, "n_labels": lo},
                        b={"init": ssl, "n_labels": hi},
                        table="gaps",
                        label=f"defect-AP gap over scratch: at {lo} labels > at {hi} labels",
                        effect=PRACTICAL_AP,
                        effect_source=PRACTICAL_SOURCE,
                    ),
                ],
                preconditions=[
                    label_limited,
                    trained(ssl),
                    learned(ssl),
                    above(ssl, lo),
                    above(ssl, hi),
                    above("scratch", hi),
                    same_budget(arm(ssl, lo), arm("scratch", lo)),
                    same_budget(arm(ssl, hi), arm("scratch", hi)),
                ],
                unavailable=blocked(ssl, "scratch"),
                note=f"full fine-tuning (every parameter) for {cfg.finetune_steps} steps; paired over seeds",
            )
        )
    claims.append(
        Claim(
            id="C2_probe_vs_finetune",
            statement=(
                "Masked-image-modelling features are weak under frozen probes but strong after fine-tuning, "
                "while contrastive features do well under probes too."
            ),
            compare=[
                Compare(
                    "defect_ap",
                    a=arm("simclr", hi, "frozen"),
                    b=arm("mae", hi, "frozen"),
                    label=f"frozen linear probe, defect AP at {hi} labels: SimCLR > MAE",
                    effect=PRACTICAL_AP,
                    effect_source=PRACTICAL_SOURCE,
                ),
                Compare(
                    "gain_ap",
                    a={"init": "mae"},
                    b={"init": "simclr"},
                    table="gains",
                    label=f"gain of full fine-tuning over the frozen probe at {hi} labels: MAE > SimCLR",
                    effect=PRACTICAL_AP,
                    effect_source=PRACTICAL_SOURCE,
                ),
            ],
            preconditions=[
                trained("mae"),
                trained("simclr"),
                learned("mae"),
                learned("simclr"),
                above("simclr", hi, "frozen"),
                above("mae", hi),
                above("simclr", hi),
                same_budget(arm("simclr", hi, "frozen"), arm("mae", hi, "frozen")),
                same_budget(arm("mae", hi), arm("simclr", hi)),
            ],
            unavailable=blocked("mae", "simclr", "scratch"),
            note="segmentation (defect AP) rather than image classification: one fine-tune gives both",
        )
    )
    claims.append(
        Claim(
            id="C3_in_domain",
            statement="Pretraining on in-domain unlabeled images beats pretraining on unrelated images of the same count.",
            compare=[
                Compare(
                    "defect_ap",
                    a=arm("mae", lo),
                    b=arm("mae_unrelated", lo),
                    label=f"defect AP at {lo} labels: MAE in-domain > MAE on unrelated photos",
                    effect=PRACTICAL_AP,
                    effect_source=PRACTICAL_SOURCE,
                )
            ],
            preconditions=[
                trained("mae"),
                trained("mae_unrelated"),
                learned("mae"),
                learned("mae_unrelated"),
                above("mae", lo),
                same_budget({"init": "mae"}, {"init": "mae_unrelated"}, stage="pretrain"),
                same_budget(arm("mae", lo), arm("mae_unrelated", lo)),
            ],
            unavailable=blocked("mae", "mae_unrelated", "scratch"),
            note="both encoders fine-tuned on inspection images standardised with the inspection set's statistics",
        )
    )
    claims.append(
        Claim(
            id="C4_foundation_model",
            statement="A general-purpose foundation model (DINOv2) fine-tuned on few labels beats training from scratch.",
            compare=[
                Compare(
                    "defect_ap",
                    a=arm("dinov2", lo),
                    b=arm("scratch", lo),
                    label=f"defect AP at {lo} labels: DINOv2 > scratch",
                    effect=PRACTICAL_AP,
                    effect_source=PRACTICAL_SOURCE,
                )
            ],
            preconditions=[
                label_limited,
                above("dinov2", lo),
                same_budget(arm("dinov2", lo), arm("scratch", lo)),
            ],
            unavailable=blocked("dinov2", "scratch"),
        )
    )
    return claims


BUDGET_TABLE_COLUMNS = ["stage", "init", "protocol", "n_labels", "seed", *BUDGET_KEYS]


def budgets_table(runs: pd.DataFrame, pretrained: dict | None = None) -> pd.DataFrame:
    """The ``budgets`` claim table: one row per trained run, ``stage`` pretrain (one per pretrained init, from
    its record's ``budget``) or finetune (init x protocol x label count x seed, from the runs' budget
    columns), with steps, batch_size, lr, schedule and trainable_params. A run without a budget has no row, so
    precondition "same budget" fails on it rather than comparing two blanks."""
    rows = []
    for name, p in (pretrained or {}).items():
        budget = p["record"].get("budget")
        if budget:
            rows.append({"stage": "pretrain", "init": name, "protocol": "-", **budget})
    if all(k in runs.columns for k in BUDGET_KEYS):
        trained = runs.dropna(subset=["steps"])
        for r in trained.to_dict("records"):
            rows.append({"stage": "finetune", **{k: r.get(k) for k in BUDGET_TABLE_COLUMNS if k != "stage"}})
    out = pd.DataFrame(rows, columns=BUDGET_TABLE_COLUMNS)
    whole = {"steps": "Int64", "batch_size": "Int64", "trainable_params": "Int64"}
    return out.astype(dict.fromkeys(whole, float)).astype(whole)


def claim_tables(results: dict) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on: ``runs`` (init x protocol x label count x seed, the 'all good'
    floor and the frozen probes included), ``regime`` (the scratch ViT at the fewest and the most labels over
    the regime seeds: the label-limited precondition's; without one given, the scratch rows of ``runs``),
    ``gaps`` (each init's defect AP minus scratch's, same seed and label count), ``gains`` (full fine-tuning
    minus the frozen probe, same seed, at the most labels), ``pretraining`` (per pretrained init: loss after
    pretraining and the best learner-free predictor's, on the same fixed batches) and ``budgets``
    (:func:`budgets_table`)."""
    runs = results["runs"]
    regime = results.get("regime")
    if regime is None:
        regime = runs[(runs["init"] == "scratch") & (runs["protocol"] == "full")]
    full = runs[runs["protocol"] == "full"]
    scratch = full[full["init"] == "scratch"].set_index(["n_labels", "seed"])["defect_ap"]
    gaps = []
    for _, r in full[full["init"] != "scratch"].iterrows():
        key = (r["n_labels"], r["seed"])
        if key in scratch.index:
            gaps.append(
                {
                    "init": r["init"],
                    "n_labels": r["n_labels"],
                    "seed": r["seed"],
                    "gap_ap": r["defect_ap"] - scratch[key],
                }
            )
    frozen = runs[runs["protocol"] == "frozen"]
    gains = []
    for _, r in frozen.iterrows():
        match = full[(full["init"] == r["init"]) & (full["n_labels"] == r["n_labels"]) & (full["seed"] == r["seed"])]
        if len(match):
            gains.append(
                {"init": r["init"], "seed": r["seed"], "gain_ap": float(match["defect_ap"].iloc[0]) - r["defect_ap"]}
            )
    pretrained = results.get("pretrained", {})
    return {
        "runs": runs,
        "regime": regime,
        "gaps": pd.DataFrame(gaps, columns=["init", "n_labels", "seed", "gap_ap"]),
        "gains": pd.DataFrame(gains, columns=["init", "seed", "gain_ap"]),
        "pretraining": pretraining_frame(pretrained),
        "budgets": budgets_table(runs, pretrained),
    }


def regime_table(cfg, runs: pd.DataFrame, regime: pd.DataFrame | None = None) -> pd.DataFrame:
    """The regime the claims are judged in: the floor, the scratch ViT (over the regime seeds: the rows the
    label-limited precondition reads) and the U-Net at the fewest and the most labels: defect AP means, the
    seeds they average over, and the gain with its paired 95 % interval against the stated margin."""
    from labkit.core.stats import paired_difference

    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    rows = []
    for init in ("all_good", "scratch", "unet"):
        table = regime if init == "scratch" and regime is not None and len(regime) else runs
        g = table[(table["init"] == init) & table["protocol"].isin(["full", "-"])]
        if not len(g):
            continue
        wide = g.pivot_table(index="seed", columns="n_labels", values="defect_ap")
        row = {"row": INIT_LABELS[init], "seeds": int(len(wide))}
        row[f"defect_ap_at_{lo}"] = wide[lo].mean() if lo in wide else np.nan
        row[f"defect_ap_at_{hi}"] = wide[hi].mean() if hi in wide else np.nan
        both = wide[[lo, hi]].dropna() if lo in wide and hi in wide else pd.DataFrame()
        diff = paired_difference(both[hi].to_numpy(float), both[lo].to_numpy(float)) if len(both) > 1 else {}
        row.update(
            gain=diff.get("mean_diff", np.nan),
            gain_ci95_low=diff.get("ci95_low", np.nan),
            gain_ci95_high=diff.get("ci95_high", np.nan),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    out["label_limited_margin"] = cfg.label_limited_margin
    return out


def regime_runs_table(cfg, regime: pd.DataFrame) -> pd.DataFrame:
    """Per regime seed: the scratch ViT's defect AP (and final training loss) at the fewest and the most labels,
    and the gain the label-limited precondition pairs."""
    lo, hi = min(cfg.label_counts), max(cfg.label_counts)
    values = [c for c in ("defect_ap", "final_train_loss") if c in regime.columns]
    wide = regime.pivot_table(index="seed", columns="n_labels", values=values)
    out = pd.DataFrame(index=wide.index)
    for n in (lo, hi):
        for v in values:
            if (v, n) in wide:
                out[f"{v}_at_{n}"] = wide[(v, n)]
    if ("defect_ap", lo) in wide and ("defect_ap", hi) in wide:
        out["gain"] = wide[("defect_ap", hi)] - wide[("defect_ap", lo)]
    out.insert(0, "in_seeds", ["yes" if s in cfg.seeds else "regime only" for s in out.index])
    return out.reset_index()


def headline_metrics(cfg, runs: pd.DataFrame, anomaly: pd.DataFrame | None = None) -> dict:
    lo = min(cfg.label_counts)
    out = {}
    for (init, protocol, n), g in runs.groupby(["init", "protocol", "n_labels"]):
        for metric in ("defect_ap", "defect_f1", "image_auroc", "miou"):
            out[f"{metric}/{init}/{protocol}/{n}"] = float(g[metric].mean())
    small = runs[(runs["n_labels"] == lo) & (runs["protocol"] == "full")].groupby("init")["defect_ap"].mean()
    out["defect_ap_few_labels_mae"] = float(small.get("mae", np.nan))
    out["defect_ap_few_labels_scratch"] = float(small.get("scratch", np.nan))
    if anomaly is not None:
        for _, r in anomaly.iterrows():
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                out[f"patchcore_{metric}/{r['init']}"] = float(r[metric])
    return out


# ---- plan: the preset's real budget (labkit plan)
#: The paper's settings (MAE: He et al. 2022; SimCLR: Chen et al. 2020) that the plan warns about when far off.
REFERENCE = {"mask_ratio": 0.75, "pretrain_batch_size": 256}


def plan(cfg) -> list:
    """The three grids' budgets from the same helpers the study runs (:func:`_pretrain_params`,
    :func:`finetune_tasks`); no data is read: the unrelated photos count as ``n_unlabeled``."""
    from collections import Counter

    from labkit.core.plan import GridPlan, TaskBudget, measure
    from labkit.methods.ssl import MaskedAutoencoder, SimCLR
    from labkit.methods.defect_segmentation import ViTSegmenter, small_unet

    c, s = cfg.channels, cfg.img_size
    vit = lambda: _new_vit(cfg.arch, s, cfg.patch_size, c, _encoder_kwargs(cfg))  # noqa: E731
    pre = []
    for init in [n for n in PRETRAINED if n in cfg.inits]:
        p = _pretrain_params(cfg, {"file": None}, init)
        n = cfg.n_unlabeled
        batch = min(p["batch_size"], n)
        spe = n // batch
        if p["method"] == "mae":
            build = lambda: MaskedAutoencoder(  # noqa: E731
                vit(), 96, 1, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.mae_norm_pix_loss
            )
        else:
            build = lambda: SimCLR(vit())  # noqa: E731
        flops, tr, tot = measure(("ssl", p["method"], s, c, cfg.arch, str(_encoder_kwargs(cfg))), build, [(2, c, s, s)])
        pre.append(
            TaskBudget(
                f"{init} ({p['method'].upper()})",
                1,
                n,
                f"{s} px x {c} ch",
                batch,
                p["epochs"] * spe,
                p["epochs"],
                spe,
                tr,
                tot,
                flops * batch,
                notes="the unrelated photos: as many as n_unlabeled" if init == "mae_unrelated" else "",
                params={
                    "batch": "pretrain_batch_size",
                    "data_items": "n_unlabeled",
                    "epochs": "mae_epochs" if p["method"] == "mae" else "simclr_epochs",
                },
                counts_epochs=True,
                warmup=max(1, p["epochs"] * spe // 10),
                requested_batch=p["batch_size"],
            )
        )
    tasks = finetune_tasks(cfg, {"file": None}, {}, {})
    kinds = Counter((t["init"], t["protocol"], t["n_labels"]) for t in tasks if t["init"] != "all_good")
    fine = []
    for (init, protocol, n_labels), count in kinds.items():
        frozen = protocol == "frozen"
        if init == "unet":
            build, side = (lambda: small_unet(c)), s
        else:
            side = _dinov2_side(s) if init == "dinov2" else s
            enc = (lambda: dinov2_encoder(s, "random")) if init == "dinov2" else vit
            build = lambda enc=enc, frozen=frozen: ViTSegmenter(  # noqa: E731
                enc(), out_size=s, head="linear" if frozen else cfg.seg_head, frozen=frozen
            )
        ch = 3 if init == "dinov2" else c
        flops, tr, tot = measure(
            ("ssl-ft", init, frozen, side, ch, str(_encoder_kwargs(cfg))), build, [(2, ch, side, side)]
        )
        batch = min(cfg.finetune_batch_size, n_labels)
        fine.append(
            TaskBudget(
                f"{init} {protocol} k={n_labels}",
                count,
                n_labels,
                f"{side} px x {ch} ch",
                batch,
                cfg.finetune_steps,
                cfg.finetune_steps / max(1, n_labels // batch),
                max(1, n_labels // batch),
                tr,
                tot,
                flops * batch,
                notes="frozen: features cached, the encoder's forward counted once per step (an upper bound)"
                if frozen
                else "",
                params={"batch": "finetune_batch_size", "data_items": "label_counts", "steps": "finetune_steps"},
                requested_batch=cfg.finetune_batch_size,
                full_batch_ok=True,
            )
        )
    inits = [i for i in cfg.inits if i in VIT_INITS]
    n_fwd = cfg.n_good + cfg.n_test
    patch = []
    for init in inits:
        side = _dinov2_side(s) if init == "dinov2" else s
        ch = 3 if init == "dinov2" else c
        build = (lambda: dinov2_encoder(s, "random")) if init == "dinov2" else vit
        flops, tr, tot = measure(
            ("ssl-pc", init, side, ch, str(_encoder_kwargs(cfg))), build, [(1, ch, side, side)], backward=False
        )
        patch.append(
            TaskBudget(
                f"{init} features",
                1,
                n_fwd,
                f"{side} px x {ch} ch",
                64,
                -(-n_fwd // 64),
                1,
                -(-n_fwd // 64),
                0,
                tot,
                flops * 64,
                notes="forward passes only (no optimiser): n_good + n_test images in batches of 64",
                full_batch_ok=True,
            )
        )
    return [
        GridPlan(STUDY, "pretrain", f"{len(pre)} pretrainings x 1 seed", pre),
        GridPlan(
            STUDY,
            "finetune",
            f"inits x label counts x seeds ({len(tasks)} tasks less the untrained floor)",
            fine,
            notes="'all_good' runs are the no-training floor: not counted",
        ),
        GridPlan(STUDY, "patchcore", f"{len(patch)} inits x 1 seed", patch),
    ]
