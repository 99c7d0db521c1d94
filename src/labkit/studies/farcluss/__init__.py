"""FARCLUSS semi-supervised segmentation study (notebook 05): fuzzy pseudo-labels, uncertainty weighting, class
rebalancing and prototype contrast against supervised-only and a hard-threshold teacher-student.

Reproduces Tarubinga, Kalafatovich and Lee, *FARCLUSS* (arXiv 2506.11142) over labkit: ``data`` (simulated scenes
or a local VOC / Cityscapes / own-folders copy), ``run`` (a grid of warm-ups, a grid of every arm x split x seed
from them, and the cost per iteration), ``tables``, ``figures``, ``claims`` and ``headline``.
"""

import importlib
import sys
import types

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "NAME": "data",
        "StudyData": "data",
        "data": "data",
        "ALL_LABELS": "data",
        "ARMS": "arms",
        "MAIN_METHODS": "arms",
        "FLOOR_ARM": "arms",
        "arm_config": "arms",
        "run_plan": "arms",
        "model_params": "arms",
        "build_model": "tasks",
        "arm_schedule": "tasks",
        "run": "experiment",
        "plan": "experiment",
        "measure_costs": "costs",
        "CostResults": "costs",
        "CONTRAST_SCALING_PIXELS": "costs",
        "claims": "claims",
        "declare_claims": "claims",
        "headline": "claims",
        "PAPER_STEP_PARAMS": "claims",
        "tables": "tables",
        "figures": "figures",
    },
)


def _function_of_its_module(name: str) -> property:
    """``data`` and ``claims`` are functions of the submodules of the same name. The import system binds a submodule
    to its name on the package when it loads it, so the face keeps these two names as properties that read the
    function and ignore that binding."""

    def get(module: types.ModuleType):
        return getattr(importlib.import_module(f"{module.__name__}.{name}"), name)

    def ignore(module: types.ModuleType, value) -> None:
        pass

    return property(get, ignore)


sys.modules[__name__].__class__ = type(
    "StudyFace", (types.ModuleType,), {n: _function_of_its_module(n) for n in ("data", "claims")}
)
