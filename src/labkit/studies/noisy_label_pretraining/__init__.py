"""Task-specific pretraining with noisy labels for remote-sensing segmentation.

Reproduces the design of Liu, Albrecht, Wang and Zhu (IGARSS 2024, arXiv 2402.16164) over labkit, in the kit's
study shape (``labkit.studies.base``):

- :mod:`.data`: simulated multispectral land-cover tiles or the user's GeoTIFF tiles (``data_source=geotiff``),
  split per seed into a pretraining pool (noisy labels), a fine-tuning pool, validation and test tiles (clean);
- :mod:`.tasks`: the grid tasks (pretraining, fine-tuning, frozen linear probes, the QDA reference);
- :mod:`.experiment`: the grids, the layer-wise measure with its null, gathered into ``Runs``; the first seed's
  noisy-pretrained encoder saved as the labkit checkpoint ``noisy-pretrained-unet-r18`` (consumed by the SAR study;
  its recipe is :mod:`labkit.methods.noisy_label_encoder`);
- :mod:`.tables`, :mod:`.figures`: the report's results;
- :mod:`.claims`: the paper's four claims with the preconditions that make them testable.

Every name is imported on first use, so that a grid worker importing :mod:`.tasks` imports no plotting.
"""

from __future__ import annotations

import importlib
import sys
import types

from labkit.studies.base import lazy_face

#: Face functions named like the submodule that defines each: the import system sets a package's attribute to every
#: submodule it loads, which would replace them, so the face keeps them (``_Face``) and resolves them itself.
_FUNCTIONS = ("data", "claims", "plan")

_lazy, __dir__ = lazy_face(
    __name__,
    {
        # the face
        "NAME": "data",
        "ARMS": "data",
        "data": "data",
        "run": "experiment",
        "claims": "claims",
        "headline": "claims",
        "tables": "tables",
        "figures": "figures",
        "plan": "plan",
        "declare_claims": "claims",
        # what the tests, the benchmarks and the checkpoint registry use
        "STUDY": "data",
        "REFERENCE_ROWS": "data",
        "make_data": "data",
        "validate_settings": "data",
        "steps_for_k": "data",
        "real_patch": "data",
        "DEFAULT_NOISE": "data",
        "FEWEST_TILES_ONLY": "experiment",
        "PROBE_STEPS": "experiment",
        "PROBE_LR": "experiment",
        "imagenet_encoder_state": "weights",
        "closing_note": "claims",
        "TRAINED_MAX_RATIO": "claims",
        "build_model": "tasks",
        "decoder_channels": "tasks",
        "model_in_channels": "tasks",
        "check_bands": "tasks",
        "train": "tasks",
        "score": "tasks",
        "late_gain": "tasks",
        # the named checkpoint and its recipe (labkit.methods.noisy_label_encoder), by the path its spec declares
        "CHECKPOINT_NAME": "experiment",
        "produce_pretrained_encoder": "experiment",
    },
)


def __getattr__(name: str):
    """A face name, imported on first use (``lazy_face``); ``data``, ``claims`` and ``plan``: the functions."""
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{name}"), name)
    return _lazy(name)


class _Face(types.ModuleType):
    """This package's module type: loading the submodule ``data``, ``claims`` or ``plan`` leaves the face's
    function of that name in place. The modules stay reachable as ``from labkit.studies.noisy_label_pretraining.data
    import ...`` and through ``importlib.import_module``; an attribute path (``...noisy_label_pretraining.data.X``,
    ``import ... .data as m``) reaches the function."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules; the face's name keeps the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
