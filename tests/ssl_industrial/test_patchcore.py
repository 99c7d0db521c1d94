"""PatchCore as published (Roth et al. 2022): the re-weighted image score of eq. 7, by hand, and its ranking."""

import numpy as np
import pytest
import torch

from labkit.core.errors import ParameterError
from labkit.methods.anomaly import PatchCore, reweighted_image_score


def _one_patch_features(values):
    """Images whose one patch has the 1-D feature ``values[i]`` (the image's first pixel)."""
    return lambda im: im[:, :1, :1, :1]


def _images(values):
    return np.asarray(values, np.float32).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("b", [2, 3])
def test_reweighted_score_follows_eq_7_on_a_hand_computed_case(b):
    bank = [0.0, 1.0, 3.0]
    pc = PatchCore(_one_patch_features(bank), coreset_ratio=1.0, neighbourhood=1, reweight_neighbours=b)
    pc.smoothing_sigma = 0.0
    scores, _ = pc.fit(_images(bank)).score(_images([5.0]))
    # m_test* = 5, m* = 3, s* = 2; N_b(m*) = {3, 1} (b = 2) or {3, 1, 0} (b = 3): distances from 5: 2, 4, 5
    denominator = np.exp(2) + np.exp(4) + (np.exp(5) if b == 3 else 0.0)
    expected = (1 - np.exp(2) / denominator) * 2
    assert np.isclose(scores[0], expected, rtol=1e-5)
    off = PatchCore(_one_patch_features(bank), coreset_ratio=1.0, neighbourhood=1, reweight_neighbours=1)
    assert np.isclose(off.fit(_images(bank)).score(_images([5.0]))[0][0], 2.0)  # 1: the plain max distance


def test_reweighting_lowers_a_patch_near_a_dense_bank_region_more_than_one_near_an_isolated_entry():
    # Both test patches are at distance 1 from their nearest entry (s* = 1), so the max score cannot tell them apart;
    # the one whose nearest entry is isolated (10, far from the cluster at 0) keeps more of its score.
    bank = torch.tensor([[0.0], [0.1], [-0.1], [0.2], [10.0]])
    test = torch.tensor([[-1.1], [11.0]])
    scores = reweighted_image_score(test, bank, torch.tensor([2, 4]), neighbours=3)
    assert scores[1] > scores[0]
    assert torch.allclose(reweighted_image_score(test, bank, torch.tensor([2, 4]), neighbours=1), torch.ones(2))


def test_a_planted_anomaly_ranks_first():
    rng = np.random.default_rng(0)
    good = rng.normal(0.5, 0.05, (16, 1, 16, 16)).astype(np.float32)
    test = rng.normal(0.5, 0.05, (8, 1, 16, 16)).astype(np.float32)
    test[5, 0, 4:8, 8:12] += 0.6
    pooled = lambda x: torch.nn.functional.avg_pool2d(x, 4)  # noqa: E731
    scores, _ = PatchCore(pooled, coreset_ratio=0.5, neighbourhood=3, reweight_neighbours=9).fit(good).score(test)
    assert int(np.argmax(scores)) == 5 and np.all(scores >= 0)


def test_reweight_neighbours_below_one_is_refused():
    with pytest.raises(ParameterError, match="reweight_neighbours"):
        PatchCore(lambda im: im, reweight_neighbours=0)
