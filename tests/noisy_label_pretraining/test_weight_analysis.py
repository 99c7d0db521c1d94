"""Layer-wise weight statistics and CKA."""

import numpy as np
import pytest
import torch

from labkit.methods import weight_analysis as wa


def _state(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.conv.weight": torch.randn(64, 3, 3, 3, generator=g) * scale,
        "encoder.bn.weight": torch.ones(64),
        "decoder.block.weight": torch.randn(16, 64, 3, 3, generator=g) * scale,
        "segmentation_head.0.weight": torch.randn(4, 16, 1, 1, generator=g),
    }


def test_layers_in_forward_order_by_part():
    layers = wa.weight_layers(_state(0))
    assert layers["name"].tolist() == ["encoder.conv.weight", "decoder.block.weight", "segmentation_head.0.weight"]
    assert layers["part"].tolist() == ["encoder", "decoder", "decoder"]


def test_kl_is_zero_for_identical_and_grows_with_difference():
    a = _state(0)
    same = wa.layerwise_kl(a, a)
    assert np.allclose(same["kl"], 0)
    b = {**a, "decoder.block.weight": a["decoder.block.weight"] * 3}
    df = wa.layerwise_kl(a, b).set_index("name")
    assert df.loc["decoder.block.weight", "kl"] > 0.1
    assert df.loc["encoder.conv.weight", "kl"] == pytest.approx(0)


def test_kl_divergence_known_value():
    assert wa.kl_divergence([0.5, 0.5], [0.25, 0.75], eps=0) == pytest.approx(
        0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75)
    )


def test_shape_mismatch_is_an_error():
    b = _state(1)
    b["decoder.block.weight"] = torch.randn(8, 64, 3, 3)
    with pytest.raises(ValueError, match="decoder.block.weight: shapes differ"):
        wa.layerwise_kl(_state(0), b)


def test_linear_cka_invariances():
    x = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(1)))
    assert wa.linear_cka(x, x) == pytest.approx(1.0)
    assert wa.linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-6)
    assert wa.linear_cka(x, torch.randn(200, 10)) < 0.3


def test_plot_runs():
    import matplotlib

    matplotlib.use("Agg")
    df = wa.layerwise_kl(_state(0), _state(1))
    assert wa.plot_layerwise_kl(df) is not None
    assert wa.plot_weight_histograms(_state(0), _state(1), ["encoder.conv.weight"]) is not None


def test_layerwise_divergence_does_not_scale_with_layer_size():
    """Two independent draws of the same distribution: the histogram KL of whole layers falls with layer size
    (the finite-sample floor), the equal-size-subsample measure does not."""
    g = torch.Generator().manual_seed(0)
    sizes = {
        "encoder.big.weight": (256, 256, 3, 3),
        "encoder.mid.weight": (64, 32, 3, 3),
        "decoder.small.weight": (8, 8, 3, 3),
    }
    a = {n: torch.randn(*s, generator=g) for n, s in sizes.items()}
    b = {n: torch.randn(*s, generator=g) for n, s in sizes.items()}
    init = {n: torch.randn(*s, generator=g) for n, s in sizes.items()}
    raw = wa.layerwise_kl(a, b).set_index("name").kl
    assert raw["decoder.small.weight"] > 20 * raw["encoder.big.weight"]  # the old measure's size artefact
    fair = wa.layerwise_divergence(a, b, init, sample=512, bins=16, draws=16, seed=0).set_index("name")
    assert (fair["sample"] == 512).all()  # the same number of weights from every layer
    ratio = fair.value.max() / fair.value.min()
    assert ratio < 3.0, fair.value.to_dict()  # one realisation each; the whole-layer KL differs 20-fold
    # a real change (the decoder layer scaled by 2) stands far above that common floor
    changed = (
        wa.layerwise_divergence(
            a, {**b, "decoder.small.weight": b["decoder.small.weight"] * 2}, init, sample=512, bins=16, draws=16, seed=0
        )
        .set_index("name")
        .value
    )
    assert changed["decoder.small.weight"] > 5 * fair.value.max()
    assert np.allclose(wa.layerwise_divergence(a, a, init, seed=0).value, 0)
    with pytest.raises(ValueError, match="decoder.small.weight"):
        wa.layerwise_divergence(a, {k: v for k, v in b.items() if k != "decoder.small.weight"}, init)
