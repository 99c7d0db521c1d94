"""The best learner-free predictor of supervised segmentation (a class prior at every pixel) and the validation
losses that say whether a network learned more than it: what a "trained" precondition reads."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from labkit.methods.unet_training import IGNORE_INDEX, score


def trivial_loss(labels: np.ndarray, num_classes: int) -> float:
    """Cross-entropy of the best constant predictor (the class frequencies) on ``labels`` (255 ignored)."""
    y = np.asarray(labels).ravel()
    y = y[y != IGNORE_INDEX]
    if not len(y):
        return float("nan")
    p = np.bincount(y, minlength=num_classes) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class frequencies of training ``labels`` (255 ignored), add-one smoothed so that a class the training labels
    never show costs a finite loss: what a learner that never looks at the image predicts at every pixel."""
    y = np.asarray(labels).ravel()
    y = y[y != IGNORE_INDEX]
    counts = np.bincount(y, minlength=num_classes)[:num_classes].astype(np.float64)
    return (counts + 1.0) / (counts.sum() + num_classes)


class ClassPrior(torch.nn.Module):
    """The best learner-free predictor of supervised training: the training labels' class prior at every pixel
    (a 1x1 convolution with zero weights and the log prior as its bias), scored by the same code as a network."""

    def __init__(self, prior: np.ndarray, in_channels: int):
        super().__init__()
        self.head = torch.nn.Conv2d(int(in_channels), len(prior), 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.as_tensor(np.log(prior), dtype=torch.float32))

    def forward(self, x):
        return self.head(x)


def clean_validation_losses(
    net, arrays: Mapping, train_labels: np.ndarray, num_classes: int, clean_labels: np.ndarray | None = None
) -> dict:
    """What the "trained" precondition reads: the clean validation cross-entropy of ``net`` and of the best
    learner-free predictor (``clean_val_prior_loss``), and their ratio ``clean_loss_ratio``.

    The learner-free predictor is a class prior at every pixel, the best on the clean validation tiles of: that of
    the training labels (``train_labels``, noisy or clean; its loss is ``clean_val_train_prior_loss``), that of the
    same tiles' clean labels (``clean_labels``) and the uniform one. Noisy labels can have a prior far worse than
    uniform on the clean tiles (measured at smoke: 3.4 nats against ln 7 = 1.95), a bar so low that an untrained
    network passed it. Also recorded: the entropy of the validation labels themselves (``clean_val_trivial_loss``,
    the constant that knows the validation frequencies, a lower bound on every constant's loss)."""
    x_val, y_val = arrays["x_val"], arrays["a_val"]
    loss = float(score(net, x_val, y_val, num_classes)["loss"])
    bands = np.asarray(x_val).shape[1]
    priors = [class_prior(train_labels, num_classes), np.full(num_classes, 1.0 / num_classes)]
    priors += [] if clean_labels is None else [class_prior(clean_labels, num_classes)]
    prior_losses = [float(score(ClassPrior(p, bands), x_val, y_val, num_classes)["loss"]) for p in priors]
    return {
        "clean_val_loss": loss,
        "clean_val_prior_loss": min(prior_losses),
        "clean_val_train_prior_loss": prior_losses[0],
        "clean_val_trivial_loss": trivial_loss(y_val, num_classes),
        "clean_loss_ratio": loss / min(prior_losses),
    }
