"""FARCLUSS semi-supervised segmentation study (notebook 05): fuzzy pseudo-labels, uncertainty weighting, class
rebalancing and prototype contrast against supervised-only and a hard-threshold teacher-student.

Reproduces Tarubinga, Kalafatovich and Lee, *FARCLUSS* (arXiv 2506.11142) over labkit: ``data`` (simulated scenes
or a local VOC / Cityscapes / own-folders copy), ``run`` (a grid of warm-ups, a grid of every arm x split x seed
from them, and the cost per iteration), ``tables``, ``figures``, ``claims`` and ``headline``.
"""

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "StudyData": "data",
        "ALL_LABELS": "data",
        "ARMS": "arms",
        "MAIN_METHODS": "arms",
        "FLOOR_ARM": "arms",
        "arm_config": "arms",
        "run_plan": "arms",
        "model_params": "arms",
        "build_model": "tasks",
        "arm_schedule": "tasks",
        "measure_costs": "costs",
        "CostResults": "costs",
        "CONTRAST_SCALING_PIXELS": "costs",
        "PAPER_STEP_PARAMS": "claims",
    },
)
