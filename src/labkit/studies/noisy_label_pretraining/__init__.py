"""Task-specific pretraining with noisy labels for remote-sensing segmentation.

Reproduces the design of Liu, Albrecht, Wang and Zhu (IGARSS 2024, arXiv 2402.16164) over labkit, in the kit's
study shape (``labkit.studies.base``):

- :mod:`.data`: simulated multispectral land-cover tiles or the user's GeoTIFF tiles (``data_source=geotiff``),
  split per seed into a pretraining pool (noisy labels), a fine-tuning pool, validation and test tiles (clean);
- :mod:`.tasks`: the grid tasks (pretraining, fine-tuning, frozen linear probes, the QDA reference);
- :mod:`.setup`: the settings and what every grid shares;
- :mod:`.experiment`: the grids, the layer-wise measure with its null, gathered into ``Runs``; the arms' own
  noisy-pretrained encoder (the first seed's) saved as the labkit checkpoint ``noisy-pretrained-unet-r18`` (consumed by the SAR study;
  its recipe is :mod:`labkit.methods.noisy_label_encoder`);
- :mod:`.tables`, :mod:`.figures`: the report's results;
- :mod:`.claims`: the paper's four claims with the preconditions that make them testable;
- :mod:`.summary`: the headline metrics and the closing note.

Every name is imported on first use, so that a grid worker importing :mod:`.tasks` imports no plotting.
"""

from __future__ import annotations

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "plan": "plan",
        "STUDY": "data",
        "REFERENCE_ROWS": "data",
        "make_data": "data",
        "validate_settings": "data",
        "steps_for_k": "data",
        "real_patch": "data",
        "DEFAULT_NOISE": "data",
        "FEWEST_TILES_ONLY": "setup",
        "PROBE_STEPS": "setup",
        "PROBE_LR": "setup",
        "imagenet_encoder_state": "weights",
        "closing_note": "summary",
        "headline": "summary",
        "TRAINED_MAX_RATIO": "claims",
        "build_model": "tasks",
        "decoder_channels": "tasks",
        "model_in_channels": "tasks",
        "check_bands": "tasks",
        "train": "tasks",
        "score": "tasks",
        "late_gain": "tasks",
    },
)
