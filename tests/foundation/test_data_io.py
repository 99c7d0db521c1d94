import numpy as np
import pytest
from PIL import Image

from labkit.core.errors import DataError
from labkit.data.datasets import ArraySegmentationDataset, random_flip_rotate, validate_segmentation_arrays
from labkit.data.io import read_geotiff, read_image, read_tiff_stack, to_grey, write_geotiff


def test_geotiff_roundtrip_with_nodata_as_nan(tmp_path):
    data = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    data[1, 0, 0] = -9999
    write_geotiff(tmp_path / "t.tif", data, nodata=-9999, band_names=["VV", "VH"])
    array, meta = read_geotiff(tmp_path / "t.tif")
    assert array.shape == (2, 4, 5) and np.isnan(array[1, 0, 0]) and array[0, 1, 1] == data[0, 1, 1]
    assert meta["band_names"] == ["VV", "VH"] and meta["crs"] == "EPSG:32633"


def test_images_keep_their_bit_depth(tmp_path):
    Image.fromarray(np.full((3, 4), 40000, np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "b.jpg")
    assert read_image(tmp_path / "a.png").dtype == np.uint16
    rgb = read_image(tmp_path / "b.jpg")
    assert rgb.shape == (3, 4, 3) and to_grey(rgb).shape == (3, 4)


def test_tiff_stacks(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 5, 6), np.uint16), photometric="minisblack")
    assert read_tiff_stack(tmp_path / "s.tif").shape == (3, 5, 6)


@pytest.mark.parametrize("reader", [read_image, read_geotiff, read_tiff_stack])
def test_bad_files_name_the_file(tmp_path, reader):
    with pytest.raises(DataError, match="missing.tif: file does not exist"):
        reader(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.tif: not a readable"):
        reader(bad)


def test_segmentation_arrays_are_validated_naming_the_sample():
    images, masks = np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 4, 4), np.int64)
    masks[1, 0, 0] = 7
    with pytest.raises(DataError, match=r"tile_b has label id\(s\) \[7\] outside the legend \[0, 3\)"):
        validate_segmentation_arrays(images, masks, 3, names=["tile_a", "tile_b"])
    masks[1, 0, 0] = 255
    validate_segmentation_arrays(images, masks, 3)  # the ignore index is allowed
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="sample 0 has NaN"):
        validate_segmentation_arrays(images, masks, 3)
    with pytest.raises(DataError, match="image size"):
        validate_segmentation_arrays(np.zeros((1, 1, 4, 4)), np.zeros((1, 5, 4)), 2)
    with pytest.raises(DataError, match="empty"):
        validate_segmentation_arrays(np.zeros((0, 1, 4, 4)), np.zeros((0, 4, 4)), 2)


def test_dataset_and_joint_augmentation_stay_aligned():
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    ds = ArraySegmentationDataset(image, (image[:, 0] > 7).astype(np.int64), 2, transform=random_flip_rotate)
    for _ in range(8):
        x, y = ds[0]
        assert ((x[0] > 7).long() == y).all()


def test_a_tiff_stack_whose_pages_differ_in_size_is_an_error_naming_the_sizes(tmp_path):
    import tifffile

    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(3):
            tif.write(np.zeros((16, 16), np.uint8))
        tif.write(np.zeros((20, 20), np.uint8))
    with pytest.raises(
        DataError, match=r"mixed.tif: the TIFF's 4 pages differ in size \(16x16 \(3 pages\), 20x20 \(1 pages\)\)"
    ):
        read_tiff_stack(path)
