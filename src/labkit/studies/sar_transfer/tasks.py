"""SAR sea-ice study, its grid task: one arm x seed x training-tile count trains the truncated ResNet-18 with a
DeepLabV3 head (or fits a reference pixel classifier, or an arm's frozen linear probe) and scores every test
scene whole.

The arms differ only in the encoder's initial weights: every network is built from the task's seed before its
encoder weights are replaced, and the same generator seed gives every arm the same batches in the same order.
This module is the grid's cache key: it imports nothing above it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit.core.errors import WeightsUnavailableError
from labkit.core.grid import grid_task
from labkit.core.metrics import ConfusionMatrix
from labkit.core.seeding import seed_everything
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES, IGNORE_INDEX
from labkit.methods.convergence import late_gain
from labkit.methods.frozen_probe import FrozenProbe, state_digest, train_probe

from .data import (
    ENCODER_DEPTH,
    IN_CHANNELS,
    NUM_CLASSES,
    OUTPUT_STRIDE,
    REFERENCE_ARMS,
    SarData,
    make_data,
    training_tiles,
    validation_tiles,
)

# ---- the network -------------------------------------------------------------------------------------


def create_model(
    num_classes: int = NUM_CLASSES,
    in_channels: int = IN_CHANNELS,
    weights: str = "random",
    decoder_channels: int = 256,
    weights_path=None,
):
    """ResNet-18 truncated after its third residual stage with a DeepLabV3 head, from the foundation's factory.

    As the group's public code (torchvision ``resnet18`` through ``IntermediateLayerGetter`` with
    ``return_layers={"layer3": "out"}`` and ``DeepLabHead(256, classes)``): the encoder keeps the stem,
    layer1, layer2 and layer3 (smp ``encoder_depth=4``, 256 channels at stride 16, no dilation); layer4 is
    dropped. The head is ASPP (rates 12, 24, 36 and image pooling; width ``decoder_channels``, 256 in
    torchvision's DeepLabHead), a 3x3 convolution and a 1x1 classifier, upsampled x16 to the input size.
    """
    from labkit.models.segmentation import create_segmenter

    return create_segmenter(
        "deeplabv3",
        encoder="resnet18",
        encoder_depth=ENCODER_DEPTH,
        in_channels=in_channels,
        num_classes=num_classes,
        weights=weights,
        decoder_channels=decoder_channels,
        encoder_output_stride=OUTPUT_STRIDE,
        weights_path=weights_path,
    )


def build_model(
    arm: str, seed: int, encoder_path: str | None = None, decoder_channels: int = 256, num_classes: int = NUM_CLASSES
) -> nn.Module:
    """The segmenter for one arm (``num_classes``: the data's); the decoder and head start identical across arms
    because the model is built from the same seed before the encoder weights are replaced."""
    from labkit.core.checkpoints import load_checkpoint

    seed_everything(seed)
    model = create_model(num_classes=num_classes, weights="random", decoder_channels=decoder_channels)
    if arm != "random":
        if encoder_path is None:
            raise WeightsUnavailableError(f"arm '{arm}' has no encoder weights")
        state, _ = load_checkpoint(encoder_path)
        model.encoder.load_state_dict(state, strict=True)
    return model


# ---- evaluation --------------------------------------------------------------------------------------


def scene_scores(cm: ConfusionMatrix, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, float]:
    """Per-class IoU/F1 and mIoU over the classes present in the scene's chart (a class absent from the
    reference, e.g. young ice in July, would otherwise count as IoU 0 for any false alarm)."""
    scores = cm.scores(class_names)
    present = cm.matrix.sum(axis=1) > 0
    iou, f1 = cm.iou(), cm.f1()
    scores["miou"] = float(np.nanmean(iou[present])) if present.any() else float("nan")
    scores["mean_f1"] = float(np.nanmean(f1[present])) if present.any() else float("nan")
    scores["classes_present"] = int(present.sum())
    scores.update({f"present/{name}": bool(flag) for name, flag in zip(class_names, present)})
    return scores


def predict_scene(
    model: nn.Module,
    scene: sar.SarScene,
    normalizer: sar.BandNormalizer,
    tile: int,
    overlap: float,
    batch_size: int = 8,
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """Class map of a whole scene by sliding-window inference; no-data and land pixels -> IGNORE_INDEX.
    Memory: one batch of tiles plus the scene's class probabilities (never whole-scene feature maps)."""
    from labkit.methods.inference import sliding_window_predict

    probs = sliding_window_predict(
        model, normalizer.transform_scene(scene), num_classes, tile=tile, overlap=overlap, batch_size=batch_size
    )
    pred = probs.argmax(0).astype(np.int64)
    pred[~scene.valid] = IGNORE_INDEX
    return pred


def _score_scenes(data: SarData, predict, keep_maps: bool) -> dict[str, Any]:
    rows, confusion, maps = [], {}, {}
    for scene in data.test_scenes:
        pred = predict(scene)
        pred[~scene.valid] = IGNORE_INDEX
        cm = ConfusionMatrix(data.num_classes, IGNORE_INDEX).update(
            np.where(pred == IGNORE_INDEX, 0, pred), scene.labels
        )
        rows.append(
            {
                "scene": scene.name,
                "season": scene.season,
                "month": scene.month,
                "wind_speed": float(scene.meta.get("wind_speed", float("nan"))),
                "air_temperature": float(scene.meta.get("air_temperature", float("nan"))),
                **scene_scores(cm, data.class_names),
            }
        )
        confusion[scene.name] = cm.matrix.astype(np.int64)
        if keep_maps:
            maps[scene.name] = pred.astype(np.uint8)
    return {
        "scenes": rows,
        "confusion": confusion,
        "maps": maps,
        "class_names": list(data.class_names),
        "band_names": list(data.band_names),
    }


def pixel_features(image: np.ndarray) -> np.ndarray:
    """(H*W, 8) per-pixel features of a normalised (C, H, W) network input: its two polarisations (co-pol,
    cross-pol), their 5x5 and 11x11 local means, their difference and its 5x5 local mean (an affine map of dB, so
    trees see the dB values)."""
    from scipy import ndimage

    hh, hv = image[0].astype(np.float32), image[1].astype(np.float32)
    feats = [hh, hv]
    for size in (5, 11):
        feats += [ndimage.uniform_filter(hh, size, mode="reflect"), ndimage.uniform_filter(hv, size, mode="reflect")]
    diff = hh - hv
    feats += [diff, ndimage.uniform_filter(diff, 5, mode="reflect")]
    return np.stack(feats, axis=-1).reshape(-1, len(feats))


# ---- the grid task: one per arm x seed x training-tile count ---------------------------------------


@grid_task("sar_transfer/run")
def run_task(
    arm: str,
    seed: int,
    n_tiles: int,
    data: Mapping,
    train: Mapping,
    encoder: Mapping | None = None,
    keep_maps: bool = False,
    probe: Mapping | None = None,
) -> dict[str, Any]:
    """One grid task: train ``arm`` (or fit a reference classifier) on ``n_tiles`` tiles of ``seed``'s data,
    then score every test scene whole. Returns a record: the learning curve, per-scene scores, confusion
    matrices (and the predicted maps when ``keep_maps``). With ``probe`` (``{"steps", "lr"}``) the task is
    the arm's frozen linear probe instead (:func:`_probe_task`; its record has ``probe: True``)."""
    started, cpu = time.perf_counter(), time.process_time()
    d = make_data(data, seed)
    images, masks, coverage = training_tiles(d, data, seed, n_tiles, coverage=True)
    if probe is not None:
        out = _probe_task(arm, seed, d, data, train, images, masks, encoder, probe)
    elif arm in REFERENCE_ARMS:
        out = _reference_task(arm, seed, d, images, masks, keep_maps)
    else:
        out = _network_task(arm, seed, d, data, train, images, masks, encoder, keep_maps)
    out.update(
        arm=arm,
        seed=int(seed),
        n_tiles=int(n_tiles),
        coverage=coverage,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu,
    )
    return out


def _reference_task(arm, seed, d, images, masks, keep_maps):
    labelled = masks != IGNORE_INDEX
    if arm == "majority":
        majority = int(np.bincount(masks[labelled].ravel(), minlength=d.num_classes).argmax())
        return _score_scenes(d, lambda scene: np.full(scene.shape, majority, np.int64), keep_maps) | {
            "majority_class": d.class_names[majority]
        }
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.concatenate([pixel_features(img)[lab.ravel()] for img, lab in zip(images, labelled)])
    y = np.concatenate([m[lab] for m, lab in zip(masks, labelled)])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    if len(y) > 40_000:
        keep = rng.choice(len(y), 40_000, replace=False)
        x, y = x[keep], y[keep]
    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=int(seed)).fit(x, y)

    def predict(scene):
        return clf.predict(pixel_features(d.normalizer.transform_scene(scene))).reshape(scene.shape).astype(np.int64)

    return _score_scenes(d, predict, keep_maps) | {"train_pixels": int(len(y))}


def _network_task(arm, seed, d, data, train, images, masks, encoder, keep_maps):
    """Train ``arm``'s network on the schedule of the parameters (``epochs``, ``lr_patience``, ``early_stopping``:
    the paper's reduce-on-plateau and early stopping on validation mIoU at ``paper``), validating after every
    epoch on the fixed validation subset; the best validation epoch is scored on every test scene."""
    from torch.utils.data import DataLoader, TensorDataset

    from labkit.core.claims import budget_record  # here: a grid worker imports no claims machinery
    from labkit.core.device import resolve_device
    from labkit.methods.plateau_training import describe_schedule, fit_on_plateau

    device = resolve_device(train["device"], announce=False)
    val_x, val_y = validation_tiles(d, data, seed)
    model = build_model(arm, seed, (encoder or {}).get("path"), train["decoder_channels"], d.num_classes).to(device)
    batch = train["batch_size"]
    steps_per_epoch = math.ceil(len(images) / batch)
    # The same generator seed gives every arm the same batches in the same order.
    order = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(
        TensorDataset(torch.from_numpy(images), torch.from_numpy(masks)),
        batch_size=batch,
        shuffle=True,
        generator=order,
    )
    val_loader = DataLoader(TensorDataset(torch.from_numpy(val_x), torch.from_numpy(val_y)), batch_size=64)
    result = fit_on_plateau(
        model,
        loader,
        val_loader,
        num_classes=d.num_classes,
        max_epochs=train["epochs"],
        lr=train["lr"],
        lr_patience=train["lr_patience"],
        stop_patience=train["early_stopping"],
        ignore_index=IGNORE_INDEX,
        seed=int(seed),
    )
    curve = result.val_miou
    model = result.model.eval()
    # The budget is what every arm is granted: the same epochs, steps, batch and stopping rule; the steps a run
    # actually took (it may stop early) are in ``epochs`` and ``steps_taken``.
    budget = budget_record(
        train["epochs"] * steps_per_epoch,
        min(batch, len(images)),
        train["lr"],
        describe_schedule(train["epochs"], train["lr"], train["lr_patience"], train["early_stopping"], steps_per_epoch),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    out = _score_scenes(
        d,
        lambda scene: predict_scene(
            model, scene, d.normalizer, data["tile"], train["overlap"], num_classes=d.num_classes
        ),
        keep_maps,
    )
    out.update(
        val_miou=curve,
        train_loss=result.train_loss,
        lr_history=result.lr,
        epochs=int(result.epochs),
        steps_per_epoch=int(steps_per_epoch),
        steps_taken=int(result.epochs * steps_per_epoch),
        stopped_early=bool(result.stopped_early),
        best_epoch=int(result.best_epoch),
        best_val_miou=float(np.nanmax(curve)),
        late_gain=late_gain(curve),
        val_tiles=int(len(val_x)),
        device=str(device),
        budget=budget,
    )
    return out


# ---- the "features learned" control: a frozen linear probe per arm -----------------------------------

PROBE_STEPS = 60  # optimiser steps of every arm's probe (the same for all arms and presets)
PROBE_LR = 1e-2  # Adam on the readout alone (about a thousand weights): a linear probe's usual rate


def _probe_task(arm, seed, d, data, train, images, masks, encoder, probe) -> dict[str, Any]:
    """The "features learned" control of one arm and seed: :func:`build_model`'s network for ``arm`` with its
    encoder frozen at its initial (pretrained or random) weights and only a linear per-pixel readout trained
    (:class:`FrozenProbe`: a 1x1 convolution on layer3's standardised features, logits upsampled x16) on the
    training tiles the arm's network trains on in :func:`run_task`, for ``probe["steps"]`` steps (equal for every arm), then
    scored on every test scene whole as the grid scores (mIoU per scene; the claim table averages them)."""
    from labkit.core.claims import budget_record
    from labkit.core.device import resolve_device

    device = resolve_device(train["device"], announce=False)
    network = build_model(arm, seed, (encoder or {}).get("path"), train["decoder_channels"], d.num_classes)
    model = FrozenProbe(network.encoder, d.num_classes).to(device)
    before = state_digest(model.encoder)
    batch = min(train["batch_size"], len(images))
    losses = train_probe(model, images, masks, probe["steps"], probe["lr"], batch, seed, IGNORE_INDEX)
    model.eval()
    out = _score_scenes(
        d,
        lambda scene: predict_scene(
            model, scene, d.normalizer, data["tile"], train["overlap"], num_classes=d.num_classes
        ),
        False,
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out.update(
        probe=True,
        train_loss=np.asarray(losses, float),
        encoder_digest_before=before,
        encoder_digest_after=state_digest(model.encoder),
        readout="1x1 conv on layer3's standardised features, logits bilinearly upsampled x16",
        budget=budget_record(
            len(losses),
            batch,
            probe["lr"],
            f"constant lr (Adam, no decay) over {len(losses)} steps on the frozen encoder's features; last step kept",
            trainable,
        ),
    )
    return out
