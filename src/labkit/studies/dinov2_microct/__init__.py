"""DINOv2 probing of micro-CT rock images (Brondolo and Beaussant, arXiv 2407.18100), over labkit.

Data: simulated micro-CT of five rock types imaged by three scanners (:mod:`labkit.data.microct`).
Rock-type classification: kNN (cosine, temperature-weighted) and linear probes on class tokens.
Phase segmentation (pore / mineral / micro-porous), trained on two rocks and judged on held-out
samples of the same rocks (in distribution), on a third rock and on a third scanner (out of
distribution): linear and CNN heads on frozen patch tokens, kNN segmentation, LoRA fine-tuning,
classical pipelines (multi-Otsu, K-means, fuzzy C-means, random forest on a filter bank) and a
UNet from scratch.

Backbones (each a row, each judged the same way):

* ``dinov2``: DINOv2 with pretrained weights from :func:`labkit.models.backbones.create_backbone`;
  without weights every DINOv2 row and claim is "not evaluated: weights unavailable".
* ``random``: a ViT of architecture ``vit_arch`` randomly initialised (a control: what pretraining buys);
  ``microct_standin`` (the default) is the stand-in's own architecture.
* ``ssl``: labkit's stand-in for DINOv2, a small ViT pretrained by masked autoencoding on unlabeled
  simulated slices disjoint from every evaluation slice (:mod:`labkit.methods.microct_standin`),
  shipped as a checkpoint (``ssl_weights``); its analogue claims are judged only where it is "trained" (held-out
  masked-patch loss below 0.7 of the better learner-free predictor's: each hidden patch filled with the mean of
  its image's visible pixels, or the visible pixels interpolated by a Gaussian-weighted mean) and its "features
  learned" on what the claim measures, paired over seeds against the ``random`` ViT of the same architecture:
  its class-token kNN (claim 1, rock classification) or its frozen linear head on the held-out rock (the
  segmentation claims).
* ``resnet``: a pretrained ResNet with LoRA (the paper's weaker baseline); pretrained weights only.

Every ViT meets the slices on a ``token_grid`` x ``token_grid`` token grid (input side = grid x patch),
and every head row sits beside the per-token oracle of its grid (the ceiling of any per-token head).
Classification probes (kNN and linear) run on the class token, the mean-pooled patch tokens and their
concatenation, centred on the training mean; a grey-level histogram and a random-init ResNet's pooled
features are baseline rows.

The experiment is a grid (:mod:`labkit.core.grid`) of one task per seed x part: the baselines (classical
pipelines, UNet, classification baselines, token-grid ceilings), the ResNet + LoRA, and each ViT (all of its
rows, so its tokens are extracted once): :func:`tasks.seed_part_task`. Which rows can run is decided once before the
grid (:mod:`.experiment`); records are cached, a rerun computes only the missing tasks, and the tasks run serially,
on a local process pool or on Dask (parameters ``executor``, ``workers``, ``scheduler``).

Every gradient-trained row (frozen linear and CNN heads, LoRA rows, the UNet) records its budget (optimiser steps,
batch size, peak learning rate, schedule, trainable parameters; :func:`tables.budgets`), and claims that compare
trained arms (3, 4, 4b) need the same steps, batch size and schedule on both sides.

The package is the study shape of :mod:`labkit.studies.base`: ``data`` (checks, slices, splits), ``tasks`` (the grid's
task and what only it needs: ``backbones``, ``probes``), ``experiment`` (the grid gathered into
``Runs``), ``tables``, ``figures``, ``claims`` and ``plan``; the notebook reads ``study.data``, ``study.run``, one
table or figure per result and ``report.conclude``.
"""

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "plan": "plan",
    },
)
