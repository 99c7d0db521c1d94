import numpy as np
import pytest
from PIL import Image

from labkit.core.errors import DataError
from labkit.data.inspection_folders import load_mvtec_style, load_per_class


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _mvtec(root, colour=True, size=(40, 30)):
    rng = np.random.default_rng(0)
    shape = size + ((3,) if colour else ())
    for i in range(3):
        _save(root / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
    _save(root / "test" / "good" / "000.png", rng.integers(0, 255, shape, dtype=np.uint8))
    for defect in ("scratch", "hole"):
        _save(root / "test" / defect / "000.png", rng.integers(0, 255, shape, dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[5:15, 5:12] = 255
        mask[20, 20] = 100  # below the 0.5 threshold: not a defect pixel
        _save(root / "ground_truth" / defect / "000_mask.png", mask)
    return root


@pytest.mark.parametrize("colour,channels", [(True, 3), (True, 1), (False, 1), (False, 3)])
def test_mvtec_layout_loads_grey_or_colour_and_binarises_masks(tmp_path, colour, channels):
    s = load_mvtec_style(_mvtec(tmp_path, colour), channels=channels, size=None)
    assert s.images.shape == (6, channels, 40, 30) and s.images.dtype == np.float32
    assert 0 <= s.images.min() and s.images.max() <= 1
    assert sorted(set(s.defect_types)) == ["good", "hole", "scratch"]
    assert list(s.splits).count("train") == 3
    defect = s.masks[s.defect_types == "scratch"][0]
    assert defect.sum() == 70 and defect[20, 20] == 0  # 10x7 block only
    assert s.masks[s.defect_types == "good"].sum() == 0


def test_mvtec_resizes_any_size(tmp_path):
    s = load_mvtec_style(_mvtec(tmp_path, size=(50, 70)), size=32)
    assert s.images.shape[-2:] == (32, 32) and s.masks.shape[-2:] == (32, 32)
    assert set(np.unique(s.masks)) == {0, 1}


def test_corrupt_files_warn_and_skip_or_raise(tmp_path):
    root = _mvtec(tmp_path)
    (root / "train" / "good" / "bad.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="bad.png"):
        s = load_mvtec_style(root)
    assert len(s) == 6 and any("bad.png" in x for x in s.skipped)
    with pytest.raises(DataError, match="bad.png"):
        load_mvtec_style(root, on_corrupt="error")


def test_defect_image_without_mask_is_an_error(tmp_path):
    root = _mvtec(tmp_path)
    (root / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"hole[/\\]000.png.*no mask"):
        load_mvtec_style(root)


def test_mask_size_mismatch_names_both_files(tmp_path):
    root = _mvtec(tmp_path)
    _save(root / "ground_truth" / "hole" / "000_mask.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="000_mask.png is 10x10 but its image"):
        load_mvtec_style(root)


def test_unknown_defect_folder_is_an_error(tmp_path):
    root = _mvtec(tmp_path)
    with pytest.raises(DataError, match="unknown defect folder 'hole'"):
        load_mvtec_style(root, defect_types=["scratch"])
    assert len(load_mvtec_style(root, defect_types=["scratch", "hole"])) == 6


def test_per_class_layout_with_masks_side_by_side(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("crack", "good"):
        for i in range(2):
            _save(tmp_path / cls / "Imgs" / f"{i}.jpg", rng.integers(0, 255, (24, 36, 3), dtype=np.uint8))
            if cls == "crack":
                mask = np.zeros((24, 36), np.uint8)
                mask[:4] = 255
                _save(tmp_path / cls / "Imgs" / f"{i}.png", mask)
    s = load_per_class(tmp_path, channels=1, size=None)
    assert s.images.shape == (4, 1, 24, 36)
    assert list(s.defect_types).count("crack") == 2 and list(s.labels).count(0) == 2
    assert s.masks[s.defect_types == "crack"].sum() == 2 * 4 * 36
    (tmp_path / "crack" / "Imgs" / "1.png").unlink()
    with pytest.raises(DataError, match=r"1.jpg: image of defect class 'crack' has no mask"):
        load_per_class(tmp_path)
    with pytest.raises(DataError, match="unknown class folder"):
        load_per_class(tmp_path, classes=["good"])
