"""The grid's tasks of the noisy-label study: module-level functions that run in worker processes.

Kept apart from the study's data loaders, claims, tables and figures so that editing those does not invalidate
the cached records (a task's fingerprint covers this module and the labkit modules it imports). Every task reads
its tiles from a prepared ``.npz`` file named by path and digest, and returns a record of numbers and arrays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from labkit.core.curves import late_gain
from labkit.core.grid import grid_task
from labkit.core.seeding import seed_everything
from labkit.data import label_noise
from labkit.methods.class_prior import clean_validation_losses, trivial_loss
from labkit.methods.linear_probe import LinearProbe
from labkit.methods.unet_training import (  # noqa: F401  (the U-Net and its training, re-exported for the study)
    IGNORE_INDEX,
    build_model,
    check_bands,
    decoder_channels,
    effective_batch,
    full_state,
    model_in_channels,
    score,
    train,
)
from labkit.studies.noisy_label_pretraining.data import TASK_A, TASK_B


def trainable_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


@lru_cache(maxsize=8)
def _load_arrays(path: str, digest: str) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _model_from(params: Mapping, num_classes: int, seed: int, depth: int | None = None):
    return build_model(
        num_classes,
        params["encoder"],
        params["in_channels"],
        params["decoder_width"],
        seed=seed,
        encoder_depth=depth or params["encoder_depth"],
    )


def _labels(arrays: dict, task: str, split: str) -> np.ndarray:
    return arrays[f"{'a' if task == TASK_A else 'b'}_{split}"]


@grid_task("noisy_label_pretraining/pretrain")
def pretrain_task(
    data: dict,
    seed: int,
    labels: str,
    order: int,
    model: dict,
    steps: int,
    batch_size: int,
    lr: float,
    device: str = "cpu",
    depth: int | None = None,
) -> dict:
    """Pretrain the seed's initial U-Net on the pretraining pool's ``labels`` (``clean``, ``sevX`` or ``real``),
    drawing batches in data order ``order`` (0; 1 for the null). Returns the weights, the final training loss over
    the trivial predictor's, the clean validation cross-entropy over that of the best class prior (of the training
    labels, of the same tiles' clean labels or uniform; ``clean_loss_ratio``: what the "trained" precondition reads), the clean test mIoU without fine-tuning and the
    run's ``budget``. ``steps=0`` trains nothing (the network keeps its initial weights): the negative control of
    the "trained" precondition."""
    from labkit.core.claims import budget_record  # here, not above: a grid worker imports no claims module

    arrays = _load_arrays(data["path"], data["digest"])
    y = arrays["a_pretrain" if labels == "clean" else f"a_pretrain_{labels}"]
    x = arrays["x_pretrain"]
    num_classes = int(model["num_classes"])
    net = _model_from(model, num_classes, 1000 * seed + 11, depth).to(device)
    epochs = min(10, int(steps))
    per_epoch = max(1, int(steps) // epochs) if epochs else 0
    started = time.time()
    final = float("nan")  # no training step, no training loss
    if epochs:
        result = train(
            net,
            x,
            y,
            num_classes,
            epochs,
            per_epoch,
            batch_size,
            lr,
            1000 * seed + 12 + 7 * int(order),
            desc=f"pretrain {labels} order {order}",
        )
        final = float(result.history.train_loss.iloc[-1])
    s = score(net, arrays["x_test"], arrays["a_test"], num_classes)
    trivial = trivial_loss(y, num_classes)
    # Noisy labels put a floor under the training loss (their own entropy given the image), so whether the network
    # learned the signal is read on the clean validation labels, which the noise never touched, against the best
    # learner-free predictor: the best of the class priors (training labels, the same tiles' clean labels, uniform).
    clean = clean_validation_losses(net, arrays, y, num_classes, arrays["a_pretrain"])
    state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    schedule = (
        f"cosine, stepped per epoch over {epochs} epochs of {per_epoch} steps (AdamW)"
        if epochs
        else "none: 0 steps, the initial weights (not pretrained)"
    )
    return {
        "state": state,
        "final_loss": final,
        "trivial_loss": trivial,
        "loss_ratio": final / trivial,
        **clean,
        "test_miou": float(s["miou"]),
        "pixel_noise_rate": label_noise.noise_rate(arrays["a_pretrain"], y),
        "steps": int(epochs * per_epoch),
        "budget": budget_record(
            epochs * per_epoch, effective_batch(batch_size, len(x)), lr, schedule, trainable_params(net)
        ),
        "seconds": time.time() - started,
    }


@grid_task("noisy_label_pretraining/finetune")
def finetune_task(
    data: dict,
    seed: int,
    task: str,
    init: str,
    k: int,
    weights: dict | None,
    model: dict,
    steps: int,
    eval_points: int,
    batch_size: int,
    lr: float,
    device: str = "cpu",
) -> dict:
    """Fine-tune one initialisation on the first ``k`` clean tiles of ``task`` for ``steps`` steps (batches of
    ``batch_size`` capped at ``k``, no tile twice in a batch), scoring the
    validation tiles before training and ``eval_points`` times along it (the best point's weights are kept, the
    starting weights included) and the test tiles at the end.

    ``weights``: ``{"path", "digest", "part"}`` (part ``encoder`` or ``full``) or None for random initialisation.
    Every run of a seed starts its decoder from the same random weights and draws the same batches.
    """
    from labkit.core.checkpoints import load_checkpoint
    from labkit.core.claims import budget_record  # here, not above: a grid worker imports no claims module

    arrays = _load_arrays(data["path"], data["digest"])
    num_classes = int(model["num_classes_b"] if task == TASK_B else model["num_classes"])
    net = _model_from(model, num_classes, 1000 * seed + 21)
    if weights is not None:
        state, _ = load_checkpoint(weights["path"])
        if weights["part"] == "full":
            net.load_state_dict(state)
        else:
            net.encoder.load_state_dict({n[len("encoder.") :]: v for n, v in state.items() if n.startswith("encoder.")})
    net = net.to(device)
    x, y = arrays["x_finetune"][:k], _labels(arrays, task, "finetune")[:k]
    started = time.time()
    # Model selection on the validation tiles may keep the weights fine-tuning started from: a pretrained network
    # that k tiles can only make worse stays as it was (early stopping at step 0), as a user would stop it.
    x_val, y_val = arrays["x_val"], _labels(arrays, task, "val")
    initial_val = float(score(net, x_val, y_val, num_classes)["miou"])
    initial_state = full_state(net)
    result = train(
        net,
        x,
        y,
        num_classes,
        eval_points,
        max(1, steps // eval_points),
        batch_size,
        lr,
        1000 * seed + 22,
        desc=f"{task} {init} k={k}",
        val=(x_val, y_val),
    )
    curve = result.history.val_miou.to_numpy(dtype=float)
    kept_initial = bool(initial_val > np.nanmax(curve))
    if kept_initial:
        net.load_state_dict(initial_state)
    s = score(net, arrays["x_test"], _labels(arrays, task, "test"), num_classes)
    per_point = max(1, steps // eval_points)
    schedule = (
        f"cosine, stepped per evaluation over {eval_points} evaluations of {per_point} steps (AdamW); the best "
        "validation point kept"
    )
    return {
        "miou": float(s["miou"]),
        "pixel_accuracy": float(s["pixel_accuracy"]),
        "curve": curve,
        "late_gain": late_gain(curve),
        "initial_val_miou": initial_val,
        "kept_initial": kept_initial,
        "best_point": 0 if kept_initial else int(result.best_epoch or 0),
        "steps": int(eval_points * per_point),
        "budget": budget_record(
            eval_points * per_point, effective_batch(batch_size, len(x)), lr, schedule, trainable_params(net)
        ),
        "seconds": time.time() - started,
    }


@grid_task("noisy_label_pretraining/probe")
def probe_task(
    data: dict,
    seed: int,
    init: str,
    k: int,
    weights: dict | None,
    model: dict,
    steps: int,
    batch_size: int,
    lr: float,
    device: str = "cpu",
    depth: int | None = None,
) -> dict:
    """Frozen linear probe of one encoder on task A: the seed's initial U-Net of :func:`finetune_task` (the random
    initialisation the study compares against; ``depth``: another encoder depth, the named checkpoint's full depth),
    its encoder replaced by the pretrained one (``weights``: ``{"path",
    "digest"}``) or kept as it is (``weights=None``: random init), frozen; only a :class:`LinearProbe` head trains,
    on the first ``k`` clean fine-tuning tiles for ``steps`` AdamW steps (constant learning rate, no model
    selection; the same head initialisation and batches for every init of a seed), then scores the test tiles.
    What the "features learned" precondition reads: a pretrained encoder whose frozen probe does not beat the
    random-init encoder's learned nothing the task can use."""
    from labkit.core.checkpoints import load_checkpoint
    from labkit.core.claims import budget_record  # here, not above: a grid worker imports no claims module

    arrays = _load_arrays(data["path"], data["digest"])
    num_classes = int(model["num_classes"])
    net = _model_from(model, num_classes, 1000 * seed + 21, depth)
    if weights is not None:
        state, _ = load_checkpoint(weights["path"])
        net.encoder.load_state_dict({n[len("encoder.") :]: v for n, v in state.items() if n.startswith("encoder.")})
    seed_everything(1000 * seed + 23)  # one head initialisation per seed, whatever the encoder
    probe = LinearProbe(net.encoder, num_classes).to(device)
    x, y = arrays["x_finetune"][:k], _labels(arrays, TASK_A, "finetune")[:k]
    started = time.time()
    result = train(
        probe, x, y, num_classes, 1, int(steps), batch_size, lr, 1000 * seed + 24, desc=f"probe {init}", scheduler=None
    )
    s = score(probe, arrays["x_test"], _labels(arrays, TASK_A, "test"), num_classes)
    schedule = f"constant learning rate over {int(steps)} steps (AdamW); frozen encoder, linear head only"
    return {
        "miou": float(s["miou"]),
        "pixel_accuracy": float(s["pixel_accuracy"]),
        "final_loss": float(result.history.train_loss.iloc[-1]),
        "steps": int(steps),
        "budget": budget_record(int(steps), effective_batch(batch_size, len(x)), lr, schedule, trainable_params(probe)),
        "seconds": time.time() - started,
    }


@grid_task("noisy_label_pretraining/qda")
def qda_task(data: dict, seed: int, task: str, k: int, num_classes: int, reg_param: float = 1e-3) -> dict:
    """Per-pixel quadratic discriminant analysis (scikit-learn) on the first ``k`` clean fine-tuning tiles, and the
    floor: the most frequent class of those tiles everywhere."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    from labkit.core.metrics import segmentation_scores

    arrays = _load_arrays(data["path"], data["digest"])
    started = time.time()
    x = arrays["x_finetune"][:k].transpose(0, 2, 3, 1).reshape(-1, arrays["x_finetune"].shape[1])
    y = _labels(arrays, task, "finetune")[:k].ravel()
    keep = y != IGNORE_INDEX
    present = np.unique(y[keep])
    counts = np.bincount(y[keep], minlength=int(present.max()) + 1)
    ok = np.isin(y, present[counts[present] > x.shape[1]]) & keep  # QDA needs more pixels than bands per class
    qda = QuadraticDiscriminantAnalysis(reg_param=reg_param).fit(x[ok], y[ok])
    xt = arrays["x_test"].transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    pred = qda.predict(xt).reshape(arrays["x_test"].shape[0], *arrays["x_test"].shape[2:])
    m = segmentation_scores(pred, _labels(arrays, task, "test"), num_classes, IGNORE_INDEX)
    # The floor: every test pixel given the most frequent class of the k tiles.
    majority = np.full_like(pred, int(np.argmax(np.bincount(y[keep], minlength=num_classes))))
    floor = segmentation_scores(majority, _labels(arrays, task, "test"), num_classes, IGNORE_INDEX)
    return {
        "miou": float(m["miou"]),
        "pixel_accuracy": float(m["pixel_accuracy"]),
        "majority_miou": float(floor["miou"]),
        "majority_pixel_accuracy": float(floor["pixel_accuracy"]),
        "seconds": time.time() - started,
    }
