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


def test_several_corrupt_files_give_one_warning_listing_them_all(tmp_path):
    import warnings

    root = _mvtec(tmp_path)
    (root / "train" / "good" / "bad1.png").write_bytes(b"not a png at all")
    (root / "test" / "good" / "bad2.png").write_bytes(b"\x89PNG truncated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_mvtec_style(root)
    corrupt = [w for w in caught if "bad1.png" in str(w.message) or "bad2.png" in str(w.message)]
    assert len(corrupt) == 1 and "bad1.png" in str(corrupt[0].message) and "bad2.png" in str(corrupt[0].message)
    assert len(s) == 6 and len(s.skipped) == 2


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


def test_masks_stored_as_zero_one_are_read_as_defects(tmp_path):
    root = _mvtec(tmp_path)
    mask = np.zeros((40, 30), np.uint8)
    mask[2:6, 3:9] = 1  # label-style mask: 0/1, not 0/255
    _save(root / "ground_truth" / "hole" / "000_mask.png", mask)
    s = load_mvtec_style(root, size=None)
    assert s.masks[s.defect_types == "hole"][0].sum() == 24


def test_empty_defect_mask_warns_with_its_file(tmp_path):
    root = _mvtec(tmp_path)
    faint = np.full((40, 30), 60, np.uint8)  # all below 0.5 x 255
    faint[0, 0] = 2
    _save(root / "ground_truth" / "hole" / "000_mask.png", faint)
    with pytest.warns(UserWarning, match=r"hole[/\\]000_mask.png"):
        s = load_mvtec_style(root, size=None)
    assert s.masks[s.defect_types == "hole"].sum() == 0


def test_corrupt_mask_is_an_error_naming_mask_and_image(tmp_path):
    root = _mvtec(tmp_path)
    (root / "ground_truth" / "scratch" / "000_mask.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"mask .*000_mask.png of image .*scratch[/\\]000.png is not readable"):
        load_mvtec_style(root)


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mvtec_style(tmp_path / "nowhere")
    with pytest.raises(DataError, match="does not exist"):
        load_per_class(tmp_path / "nowhere")
    only_train = tmp_path / "b"
    _save(only_train / "train" / "good" / "000.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="missing the 'test' folder"):
        load_mvtec_style(only_train)
    root = _mvtec(tmp_path / "a")
    _save(root / "train" / "scratch" / "000.png", np.zeros((40, 30), np.uint8))
    with pytest.raises(DataError, match=r"train[/\\]scratch: the train split .* only 'good'"):
        load_mvtec_style(root)


def test_bad_options_are_parameter_errors(tmp_path):
    from labkit.core.errors import ParameterError

    root = _mvtec(tmp_path)
    with pytest.raises(ParameterError, match="on_corrupt"):
        load_mvtec_style(root, on_corrupt="ignore")
    with pytest.raises(ParameterError, match="mask_threshold"):
        load_per_class(root, mask_threshold=1.5)
    with pytest.raises(ParameterError, match="channels"):
        load_mvtec_style(root, channels=2)
    with pytest.raises(ParameterError, match="splits"):
        load_mvtec_style(root, splits=("val",))


def test_mixed_sizes_without_resizing_is_an_error(tmp_path):
    root = _mvtec(tmp_path)
    _save(root / "train" / "good" / "big.png", np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(DataError, match="different sizes.*size="):
        load_mvtec_style(root, size=None)
    assert load_mvtec_style(root, size=32).images.shape == (7, 3, 32, 32)


def _per_class(root, rng):
    for cls in ("crack", "good"):
        for i in range(2):
            _save(root / cls / "Imgs" / f"{i}.jpg", rng.integers(0, 255, (24, 36, 3), dtype=np.uint8))
            if cls == "crack":
                mask = np.zeros((24, 36), np.uint8)
                mask[:4] = 255
                _save(root / cls / "Imgs" / f"{i}.png", mask)
    return root


def test_per_class_mask_size_mismatch_and_corrupt_images(tmp_path):
    root = _per_class(tmp_path, np.random.default_rng(2))
    (root / "good" / "Imgs" / "9.jpg").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=r"9.jpg"):
        s = load_per_class(root, size=None)
    assert len(s) == 4 and len(s.skipped) == 1
    with pytest.raises(DataError, match="9.jpg"):
        load_per_class(root, on_corrupt="error")
    _save(root / "crack" / "Imgs" / "0.png", np.zeros((12, 36), np.uint8))
    with pytest.raises(DataError, match=r"0.png is 12x36 but its image .*0.jpg is 24x36"):
        load_per_class(root, size=None)


def test_per_class_png_only_folder_uses_mask_suffix(tmp_path):
    rng = np.random.default_rng(3)
    _save(tmp_path / "stain" / "Imgs" / "a.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    _save(tmp_path / "stain" / "Imgs" / "a_mask.png", mask)
    s = load_per_class(tmp_path, channels=1, size=None)
    assert len(s) == 1 and s.defect_types[0] == "stain" and s.masks[0].sum() == 16
    _save(tmp_path / "stain" / "Imgs" / "b.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    with pytest.raises(DataError, match=r"b.png: image of defect class 'stain' has no mask"):
        load_per_class(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no 'Imgs' folder"):
        load_per_class(tmp_path)


def test_nan_pixels_in_a_float_tiff_are_rejected_naming_the_file(tmp_path):
    import tifffile

    root = _mvtec(tmp_path / "d")
    img = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(root / "train" / "good" / "nan.tif", img)
    with pytest.raises(DataError, match=r"nan\.tif: 1 NaN or infinite pixel"):
        load_mvtec_style(root)
