"""SAR sea-ice segmentation: transfer learning versus randomly initialised weights.

Reproduces Karimzadeh and Pires de Lima (IGARSS 2023, arXiv 2310.17126) over labkit: a ResNet-18
truncated after its third residual stage (layer3, as in the group's public code) with a DeepLabV3 head
segments dual-polarisation SAR scenes into open water, young ice, first-year ice and multi-year ice. The
same network is trained from random weights and from a pretrained encoder, with everything else identical
(seed, decoder initialisation, tiles, batch order, schedule).

The study, in the kit's order:

1. **data** (``data.py``): ``data_source`` ``simulated`` (a year of East Greenland scenes per seed,
   several freeze and melt test scenes, each with its own weather) or real scenes from ``data_root``
   (``ai4arctic``, ``geotiff``, ``extremeearth``), whose scene list decides the splits.
2. **the grid** (``tasks.run_task``, ``experiment.run``): arm x seed x training-tile count, each task trains (or
   fits the pixel classifier) and scores every test scene whole; cached, resumable, on any executor. The arms
   and their weights: ``experiment``'s docstring.
3. **claims** (``claims.declare_claims``): the paper's three claims for each pretrained arm, with the
   preconditions that make them testable (the pretrained encoder learned features on its source task, as its
   producer recorded in the weights' sidecar, ``source_features``; both arms plateau; the baseline is
   data-limited). Each arm's frozen linear probe on SAR is a finding of the report, not a gate.
4. **tables** and 5. **figures**.
"""

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(__name__, {"ARMS": "arms"})
