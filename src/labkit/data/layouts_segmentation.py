"""What a local copy of each semi-supervised segmentation benchmark holds (the folders
:func:`labkit.data.segmentation_folders.load_semisup_folder` reads): the help text quoted when ``data_root`` is
missing or wrong (:func:`labkit.core.params.check_data_root`), with where each dataset is published."""

from __future__ import annotations

SEMISUP_LAYOUTS = {
    "voc": (
        "Pascal VOC 2012 train_aug (10,582 training images: VOC 2012 merged with SBD's masks) with the "
        "semi-supervised split lists. Expected layout under data_root:\n"
        "  JPEGImages/<id>.jpg\n"
        "  SegmentationClass/<id>.png        train_aug masks (SegmentationClassAug), palette or greyscale ids, "
        "255 = ignore\n"
        "  splits/val.txt                    the 1,449 validation ids\n"
        "  splits/1_16/labeled.txt ...       1_16, 1_8, 1_4, 1_2 (662 / 1323 / 2646 / 5291 ids; blended) and "
        "92, 183, 366, 732, 1464 (classic)\n"
        "  splits/<split>/unlabeled.txt      optional (default: the rest of splits/train_aug.txt or of the "
        "labelled+unlabeled ids)\n"
        "Published at: VOC 2012 http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ , SBD "
        "http://home.bharathh.info/pubs/codes/SBD/download.html (merged as SegmentationClassAug), split lists "
        "https://github.com/LiheYoung/UniMatch/tree/main/splits/pascal"
    ),
    "cityscapes": (
        "Cityscapes fine annotations (2,975 training, 500 validation images) with the semi-supervised split "
        "lists. Expected layout under data_root:\n"
        "  leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png\n"
        "  gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png\n"
        "  splits/1_16/labeled.txt ...       1_16, 1_8, 1_4, 1_2 (186 / 372 / 744 / 1488 images), lines "
        "'<image path> <mask path>' or names\n"
        "Published at: https://www.cityscapes-dataset.com/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip), "
        "split lists https://github.com/LiheYoung/UniMatch/tree/main/splits/cityscapes"
    ),
    "folders": (
        "your own images and masks. Expected layout under data_root:\n"
        "  classes.txt                       one class name per line, in id order\n"
        "  images/<id>.png|.jpg|.tif\n"
        "  masks/<id>.png                    palette or greyscale class ids, 255 = ignore\n"
        "  splits/val.txt                    held-out ids\n"
        "  splits/<split>/labeled.txt        optional labelled lists (else drawn per seed from the fractions)"
    ),
}


def semisup_layouts(docs: str | None = None) -> dict[str, str]:
    """:data:`SEMISUP_LAYOUTS`, each ending with a pointer to ``docs`` (a study's data page) when given."""
    return {k: f"{v} (see {docs})" if docs else v for k, v in SEMISUP_LAYOUTS.items()}
