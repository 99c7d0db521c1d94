"""Study 3's grid tasks (pure, module-level; their code is the grid cache key): pretraining (MAE, SimCLR),
defect-segmentation fine-tuning and PatchCore, and what only they need (the data file, the label subsets, the
encoders and their inputs). Imports nothing above it in the study."""

from __future__ import annotations

import numpy as np
import torch

from labkit.core.errors import ParameterError
from labkit.core.grid import grid_task
from labkit.data.prepared_arrays import load_prepared_arrays


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


def shared_between_seeds(defect_labels, n: int, seeds, block: int, data_seed: int = 0) -> int:
    """The most labelled images two of ``seeds`` share at ``n`` labels (0 while the pool allows disjoint subsets)."""
    subsets = [set(label_subset(defect_labels, n, s, block, data_seed)) for s in seeds]
    return max((len(a & b) for i, a in enumerate(subsets) for b in subsets[i + 1 :]), default=0)


def check_pretraining_batch(n_images: int, batch_size: int) -> None:
    """A pretraining batch must fit the unlabeled set (never clipped silently: a clipped batch made every epoch
    one optimiser step)."""
    if batch_size > n_images:
        raise ParameterError(
            f"parameter pretrain_batch_size = {batch_size} is larger than the unlabeled set's {n_images} images "
            f"(n_unlabeled = {n_images}); lower pretrain_batch_size (a fraction of n_unlabeled) or raise n_unlabeled"
        )


def pretraining_epochs(steps: int, n_images: int, batch_size: int) -> int:
    """The whole epochs that run at least ``steps`` optimiser steps on ``n_images`` in batches of ``batch_size``
    (the last partial batch of an epoch dropped): ``ceil(steps / (n_images // batch_size))``."""
    check_pretraining_batch(n_images, batch_size)
    per_epoch = n_images // batch_size
    return -(-int(steps) // per_epoch)


def new_vit(arch, img_size, patch_size, channels, encoder_kwargs, weights="random"):
    """The study's ViT encoder (no head) at its image, patch and channel counts."""
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
    steps: int,
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
    (``loss_ratio``) and the run's ``budget``. ``steps``: optimiser steps asked for; the epochs are
    :func:`pretraining_epochs` (whole epochs, so the steps run, recorded, are at least ``steps``); 0 scores the
    untrained network."""
    from labkit.core.device import resolve_device
    from labkit.methods.ssl import pretrain_mae, pretrain_simclr

    d = load_prepared_arrays(data_file)
    images = d["unlabeled_images"] if source == "in_domain" else d["unrelated_images"]
    epochs = pretraining_epochs(steps, len(images), batch_size)
    common = dict(
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        batch_size=batch_size,
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
        "steps_asked": int(steps),
        "steps": int(meta["steps"]),
        "budget": meta["budget"],
    }


#: The foundation-model arm's backbone (``dinov2_weights``).
DINOV2 = "dinov2_vits14"


def dinov2_side(img_size: int) -> int:
    return max(14, int(np.ceil(img_size / 14)) * 14)


def dinov2_encoder(img_size: int, weights: str):
    """DINOv2 ViT-S/14 at the 14-multiple side nearest above ``img_size`` (raises WeightsUnavailableError; the
    experiment resolves ``dinov2_weights`` once before any task, :func:`labkit.models.weights.resolve_weights`)."""
    from labkit.models.backbones import create_backbone

    return create_backbone(DINOV2, weights=weights, img_size=dinov2_side(img_size), num_classes=0)


def _prepare(x: np.ndarray, init: str, mean, std, img_size: int) -> torch.Tensor:
    """The input of an init: inspection images standardised with the inspection set's own statistics (every
    ViT and the U-Net alike: no encoder sees images standardised with another set's statistics); DINOv2
    gets 3 channels at its side with ImageNet statistics, as it was trained."""
    import torch.nn.functional as F

    t = torch.from_numpy(np.asarray(x, np.float32))
    if init == "dinov2":
        if t.shape[1] == 1:
            t = t.repeat(1, 3, 1, 1)
        side = dinov2_side(img_size)
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
        return new_vit(arch, img_size, patch_size, channels, encoder_kwargs, weights=encoder_weights)
    enc = new_vit(arch, img_size, patch_size, channels, encoder_kwargs)
    state, _ = load_checkpoint(encoder_file)
    load_state_into(enc, state, source=f"pretrained encoder {encoder_file}")
    return enc


def _fit_vit(model, x_train, y_train, x_test, encoder_lr_scale: float, train: dict):
    """Train a ViT segmenter and predict the test set: full fine-tuning (the encoder at ``encoder_lr_scale`` x lr),
    or, when frozen, the frozen encoder's features computed once per image and augmentation view and only the
    same decoder learning, on the same augmented batches as full fine-tuning with the same seed (so C2's gain
    isolates fine-tuning the encoder). Returns ``(info, defect probabilities)``."""
    from labkit.methods.defect_segmentation import predict_defect_prob, train_segmenter, view_features

    dev = train["device"]
    if model.frozen:
        views = view_features(model.features, x_train, device=dev).clone()
        with torch.inference_mode():
            f_test = torch.cat([model.features(x_test[i : i + 64].to(dev)) for i in range(0, len(x_test), 64)])
        info = train_segmenter(model, views[0], y_train, views=views, forward=model.decode, **train)
        return info, predict_defect_prob(model.decode, f_test, device=dev)
    info = train_segmenter(model, x_train, y_train, encoder_lr_scale=encoder_lr_scale, **train)
    return info, predict_defect_prob(model, x_test, device=dev)


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
    parameter of the encoder, patch embedding included, and the decoder) or ``frozen`` (the frozen encoder's
    patch tokens under the same decoder, ``seg_head``, on the same augmented batches). Returns defect AP,
    defect F1, image AUROC, mIoU, the decoder and its parameters, the parameters that receive gradients
    (``trainable_params``: what trains) and those that merely require them (``requires_grad_params``).
    """
    from labkit.core.claims import budget_record
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
    d = load_prepared_arrays(data_file)
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
        model = ViTSegmenter(enc, out_size=int(test_masks.shape[-1]), head=seg_head, frozen=protocol == "frozen")
        info, prob = _fit_vit(model.to(dev), x_train, y_train, x_test, encoder_lr_scale, train)
        out.update(decoder=seg_head, decoder_params=count_trainable(model.head))
    trainable = info["trained_params"]  # what trains: the parameters that receive gradients
    out["requires_grad_params"] = count_trainable(model)
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
    reweight_neighbours: int = 1,
    encoder_weights: str = "random",
    dinov2_weights: str = "pretrained",
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """PatchCore as published (Roth et al. 2022) on one init's patch features: locally aware patch features
    (``neighbourhood``), a greedy coreset of the defect-free images' patches (``coreset_ratio``), nearest-neighbour
    distances, and the re-weighted image score (eq. 7, ``reweight_neighbours``); scored on the test set."""
    from labkit.core.device import resolve_device
    from labkit.methods.anomaly import PatchCore, anomaly_aurocs, vit_patch_features

    dev = resolve_device(device, announce=False)
    d = load_prepared_arrays(data_file)
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
        reweight_neighbours=reweight_neighbours,
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
        "reweight_neighbours": int(reweight_neighbours),
        "layers": list(layers),
    }
