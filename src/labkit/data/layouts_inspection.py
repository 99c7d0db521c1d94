"""What an industrial-inspection folder holds, per ``data_source`` (the layouts :mod:`labkit.data.inspection_folders`
reads), as the text quoted when a ``data_root`` is missing or wrong (:func:`labkit.core.params.check_data_root`)."""

from __future__ import annotations

MVTEC_LAYOUT = (
    "one MVTec AD category folder (Bergmann et al., CVPR 2019; published at https://www.mvtec.com/company/research/"
    "datasets/mvtec-ad, CC BY-NC-SA 4.0), e.g. .../mvtec_anomaly_detection/bottle, laid out as "
    "<category>/train/good/*.png, <category>/test/good/*.png, <category>/test/<defect>/*.png and "
    "<category>/ground_truth/<defect>/<name>_mask.png"
)
PER_CLASS_LAYOUT = (
    "a per-class folder: data_root/<class>/Imgs/<name>.<jpg|png|bmp> with its mask beside it as <name>.png "
    "(a class named good/ok/normal needs no masks)"
)
#: ``data_source`` -> what its ``data_root`` holds.
INSPECTION_LAYOUTS = {"mvtec": MVTEC_LAYOUT, "per_class": PER_CLASS_LAYOUT}
