"""Study 3: self-supervised pretraining for industrial inspection with few labels (notebook 03).

Pipeline, in the kit's order (data -> the grids' tasks -> claims -> tables -> figures):

1. **data** (:func:`data.data`): simulated surfaces, or a user's MVTec AD category / per-class folder
   (``data_source``, ``data_root``) split by a documented, seeded rule (:func:`data.split_inspection`): defect-free
   images for pretraining and the PatchCore memory bank, defect images between the labelled pool and the test
   set. Every ViT input is standardised with the statistics of the inspection images it is applied to.
2. **pretraining** (grid ``ssl_industrial-pretrain``, :func:`tasks.pretrain_task`): MAE and SimCLR on the unlabeled
   in-domain images, MAE on as many unrelated photographs; each records, on the same fixed batches (masks,
   views), its loss before the first step and after the last, the best learner-free predictor's loss and the
   ratio (``loss_ratio``), and its budget. An encoder whose ratio is not below ``trained_max_loss_ratio`` did
   not train (precondition "trained"): it is fine-tuned and shown, but no claim rests on it. The in-domain
   encoders become named checkpoints.
3. **fine-tuning** (grid ``ssl_industrial-finetune``, :func:`tasks.finetune_task`): init x label count x seed. Full
   fine-tuning trains every parameter (patch embedding, position embedding, every block, the decoder); the
   frozen probe trains only the same decoder (``seg_head``) on the frozen encoder, on the same augmented batches
   (every ViT init, the random-init one included:
   precondition "features learned"); a small CNN U-Net from scratch and an
   "all good" predictor (the floor) are rows of the same table. Label subsets of different seeds are
   disjoint where the pool allows (:func:`tasks.label_subset`).
4. **anomaly detection** (grid ``ssl_industrial-patchcore``, :func:`tasks.patchcore_task`): PatchCore with local
   neighbourhood aggregation, greedy coreset, nearest-neighbour distance, the re-weighted image score (eq. 7);
   image/pixel AUROC and AUPRO.
5. **claims** (:func:`claims.declare_claims`, on :func:`experiment.claim_tables`), judged by
   :mod:`labkit.core.claims`.

:func:`experiment.run` runs the three grids and gathers them into ``Runs``.
"""

from labkit.studies.base import lazy_face

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "plan": "plan",
        "REFERENCE": "plan",
    },
)
