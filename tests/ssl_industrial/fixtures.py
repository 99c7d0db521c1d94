"""Small inspection trees in the exact published layouts (MVTec AD category; per-class Imgs folders)."""

import numpy as np
from PIL import Image


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _part(rng, size, colour, defect=False):
    """A textured part (grey or colour) with a dark blob where ``defect``; returns (image, mask)."""
    h, w = size
    base = (128 + 40 * rng.standard_normal((h, w))).clip(0, 255)
    mask = np.zeros((h, w), np.uint8)
    if defect:
        y, x = rng.integers(4, h - 8), rng.integers(4, w - 8)
        mask[y : y + 5, x : x + 6] = 255
        base[mask > 0] = 20
    img = base.astype(np.uint8)
    if colour:
        img = np.stack([img, (img * 0.9).astype(np.uint8), (img * 0.8).astype(np.uint8)], -1)
    return img, mask


def write_mvtec_tree(
    root,
    n_train_good=24,
    n_test_good=4,
    defects=("scratch", "hole"),
    n_per_defect=4,
    size=(40, 30),
    colour=True,
    seed=0,
):
    """``root`` as one MVTec AD category: train/good, test/good, test/<defect>, ground_truth/<defect>/*_mask.png."""
    rng = np.random.default_rng(seed)
    for i in range(n_train_good):
        _save(root / "train" / "good" / f"{i:03d}.png", _part(rng, size, colour)[0])
    for i in range(n_test_good):
        _save(root / "test" / "good" / f"{i:03d}.png", _part(rng, size, colour)[0])
    for defect in defects:
        for i in range(n_per_defect):
            img, mask = _part(rng, size, colour, defect=True)
            _save(root / "test" / defect / f"{i:03d}.png", img)
            _save(root / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root


def write_per_class_tree(
    root,
    n_good=28,
    defects=("crack", "stain"),
    n_per_defect=4,
    size=(36, 44),
    colour=False,
    seed=1,
    good_name="good",
    good_masks=False,
):
    """``root/<class>/Imgs/<name>.jpg`` with its mask beside it as ``<name>.png``: the defect-free class
    (``good_name``) has none, or all-zero ones when ``good_masks`` (as plants publish them)."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        img, mask = _part(rng, size, colour)
        _save(root / good_name / "Imgs" / f"g{i:03d}.bmp", img)
        if good_masks:
            _save(root / good_name / "Imgs" / f"g{i:03d}.png", mask)
    for defect in defects:
        for i in range(n_per_defect):
            img, mask = _part(rng, size, colour, defect=True)
            _save(root / defect / "Imgs" / f"{defect}{i:03d}.bmp", img)
            _save(root / defect / "Imgs" / f"{defect}{i:03d}.png", mask)
    return root


def write_non_square_tree(
    root, n_good=24, n_per_defect=4, shapes=((30, 72), (60, 24)), defect_side=6, seed=2, defect_at=None
):
    """A per-class tree of non-square grey images (aspect 0.4 and 2.4, alternating): the defect-free class
    ``good`` and one defect class ``dent`` whose square ``defect_side`` px defects sit near the far end of the long
    side (a centre crop would miss them; a squash would flatten them; ``defect_at``: their top-left corner
    instead). Returns the root."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        h, w = shapes[i % len(shapes)]
        img = (128 + 30 * rng.standard_normal((h, w))).clip(0, 255).astype(np.uint8)
        _save(root / "good" / "Imgs" / f"g{i:03d}.bmp", img)
    for i in range(n_per_defect):
        h, w = shapes[i % len(shapes)]
        img = (128 + 30 * rng.standard_normal((h, w))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = (h // 2, w - defect_side - 2) if w > h else (h - defect_side - 2, w // 2)
        if defect_at is not None:
            y, x = defect_at
        mask[y : y + defect_side, x : x + defect_side] = 255
        img[mask > 0] = 10
        _save(root / "dent" / "Imgs" / f"d{i:03d}.bmp", img)
        _save(root / "dent" / "Imgs" / f"d{i:03d}.png", mask)
    return root
