"""The study's arms: the encoder initialisations it compares and its reference rows, with their labels and colours.

Apart from ``data.py`` so that the grid tasks (whose code is their cache key) never read a label or a colour.
"""

from __future__ import annotations

from labkit.core.arms import Arm, arm_colours, arm_labels

from .data import CHECKPOINT_NAME

ARMS = (
    Arm("random", "random initialisation", "#555555"),
    Arm("imagenet", "ImageNet-pretrained encoder (the paper's arm)", "#1b9e77"),
    Arm(
        "cross_sensor",
        "cross-sensor transfer: an encoder pretrained on another sensor (by default labkit checkpoint "
        f"'{CHECKPOINT_NAME}'; the run describes it from the checkpoint's sidecar)",
        "#d95f02",
    ),
    Arm(
        "gbm",
        "gradient-boosting pixel classifier on the two polarisations and their local means (reference)",
        "#7570b3",
        reference=True,
    ),
    Arm("majority", "majority class of the training tiles (floor)", "#bbbbbb", reference=True),
)
ARM_LABELS = arm_labels(ARMS)
ARM_COLOURS = arm_colours(ARMS)
