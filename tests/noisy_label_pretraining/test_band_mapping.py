"""ImageNet's R, G, B filters mapped to a band set by band name (labkit.models.band_mapping), and the study's
checks: a band set without red, green and blue names stops an ``imagenet`` run before any work, naming the bands and
the parameter to set; the row is labelled with the mapping."""

import numpy as np
import pytest
import torch

from labkit.core.errors import ParameterError
from labkit.models.band_mapping import BandMappingError, describe_mapping, map_rgb_filters, rgb_band_indices
from labkit.studies import noisy_label_pretraining as study
from tests.noisy_label_pretraining.test_geotiff_tree import geotiff
from tests.noisy_label_pretraining.test_study import config
from tests.noisy_label_pretraining.trees import write_tree

RGB = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))


def _close(a, b):
    return np.allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_nir_r_g_b_gets_each_colour_its_own_filter_and_nir_their_mean():
    w = map_rgb_filters(RGB, ["B08", "B04", "B03", "B02"])
    assert w.shape == (8, 4, 3, 3)
    # not timm's positional rule (R, G, B, R on NIR, R, G, B): red on B04, green on B03, blue on B02
    assert _close(w[:, 1], RGB[:, 0] * 0.75) and _close(w[:, 2], RGB[:, 1] * 0.75) and _close(w[:, 3], RGB[:, 2] * 0.75)
    assert _close(w[:, 0], RGB.mean(1) * 0.75)
    assert describe_mapping(["B08", "B04", "B03", "B02"]) == "R->B04, G->B03, B->B02; B08 from the mean of R, G, B"


@pytest.mark.parametrize(
    "bands, rgb_at",
    [
        (["nir", "Blue", "green", "RED"], (3, 2, 1)),  # plain names, any case and order
        (["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"], (3, 2, 1)),  # B4/B3/B2
        ([f"B{i:02d}" for i in range(1, 13)], (3, 2, 1)),  # Sentinel-2's 12 named bands
        (["R", "G", "B", "NIR"], (0, 1, 2)),
    ],
)
def test_any_named_band_set_maps_by_name(bands, rgb_at):
    assert tuple(rgb_band_indices(bands).values()) == rgb_at
    w = map_rgb_filters(RGB, bands)
    scale = 3.0 / len(bands)
    for colour, i in enumerate(rgb_at):
        assert _close(w[:, i], RGB[:, colour] * scale)
    others = [i for i in range(len(bands)) if i not in rgb_at]
    assert all(_close(w[:, i], RGB.mean(1) * scale) for i in others)


def test_unnamed_or_ambiguous_bands_are_refused_naming_them_and_an_explicit_choice_maps_them():
    with pytest.raises(BandMappingError, match=r"no band of \['band 1', 'band 2', 'band 3', 'band 4'\]"):
        rgb_band_indices(["band 1", "band 2", "band 3", "band 4"])
    with pytest.raises(BandMappingError, match=r"bands \['B4', 'red'\] are all named as the R band"):
        rgb_band_indices(["B4", "red", "B3", "B2"])
    assert rgb_band_indices(["band 1", "band 2", "band 3", "band 4"], ["band 3", "band 2", "band 1"]) == {
        "R": 2,
        "G": 1,
        "B": 0,
    }
    with pytest.raises(BandMappingError, match=r"band\(s\) \['band 9'\] are not among"):
        rgb_band_indices(["band 1", "band 2", "band 3"], ["band 9", "band 2", "band 1"])


UNNAMED = ("band 1", "band 2", "band 3", "band 4", "band 5", "band 6")


def test_a_tree_without_rgb_names_stops_an_imagenet_run_before_any_work_naming_bands_and_parameter(tmp_path):
    root = write_tree(tmp_path / "tree", bands=UNNAMED)["root"]
    with pytest.raises(ParameterError) as err:
        study.run(geotiff(data_root=str(root)), progress=False)
    text = str(err.value)
    assert "['band 1', 'band 2'" in text and "parameter 'rgb_bands'" in text and "inits" in text
    # the parameter maps them; without the imagenet row nothing needs mapping
    data = study.make_data(geotiff(data_root=str(root), rgb_bands=["band 3", "band 2", "band 1"]))
    assert data.bands == list(UNNAMED)
    study.make_data(geotiff(data_root=str(root), inits=["random", "noisy_full"]))
    with pytest.raises(ParameterError, match=r"rgb_bands=\['B04', 'B03', 'B02'\]"):
        study.make_data(geotiff(data_root=str(root), rgb_bands=["B04", "B03", "B02"]))


def test_simulated_bands_without_rgb_are_refused_with_imagenet():
    with pytest.raises(ParameterError, match=r"no band of \['B08', 'B11', 'B12'\] is named as the R band"):
        study.validate_settings(config(bands=["B08", "B11", "B12"]))
    study.validate_settings(config(bands=["B08", "B11", "B12"], inits=["random", "noisy_full"]))


def test_the_imagenet_row_is_labelled_with_its_mapping():
    from labkit.studies.noisy_label_pretraining import setup

    cfg = config()
    data = study.make_data(cfg)
    s = setup.settings(cfg, data)
    assert s["imagenet_bands"] == "R->B04, G->B03, B->B02; B08 from the mean of R, G, B"
    assert setup.init_label(s, "imagenet").endswith("bands R->B04, G->B03, B->B02; B08 from the mean of R, G, B")
    assert setup.init_label(s, "random") == setup.INIT_LABELS["random"]
