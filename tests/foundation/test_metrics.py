import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from labkit.core.metrics import ConfusionMatrix, aggregate_over_seeds, classification_scores, segmentation_scores
from labkit.core.stats import paired_by_index, paired_difference


def test_scores_match_scikit_learn_with_ignore_index():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 32, 32))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, size=target.shape))
    target[:, :4] = 255
    scores = segmentation_scores(
        torch.as_tensor(pred), torch.as_tensor(target), 4, ignore_index=255, class_names=list("abcd")
    )
    keep = target != 255
    t, p = target[keep], pred[keep]
    np.testing.assert_allclose([scores[f"iou/{c}"] for c in "abcd"], jaccard_score(t, p, average=None))
    np.testing.assert_allclose(scores["miou"], jaccard_score(t, p, average="macro"))
    np.testing.assert_allclose([scores[f"f1/{c}"] for c in "abcd"], f1_score(t, p, average=None))
    np.testing.assert_allclose(scores["pixel_accuracy"], accuracy_score(t, p))


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(3).update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    iou = cm.iou()
    assert np.isnan(iou[2]) and iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5)
    assert cm.miou() == pytest.approx(0.5)


def test_out_of_range_ids_and_shape_mismatch_are_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="class id 3 outside"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3, int), np.zeros(4, int))


def test_classification_scores():
    scores = classification_scores([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx(f1_score([0, 1, 2, 2], [0, 1, 1, 2], average="macro"))


def test_aggregate_over_seeds_gives_mean_std_and_t_interval():
    df = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "miou": [0.5, 0.6, 0.7, 0.2, 0.2, 0.2]})
    out = aggregate_over_seeds(df, "miou", "method").set_index("method")
    assert out.loc["a", "miou_mean"] == pytest.approx(0.6)
    assert out.loc["a", "miou_std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2)
    assert out.loc["a", "miou_ci95_low"] == pytest.approx(0.6 - half)
    assert out.loc["b", "miou_ci95_high"] == pytest.approx(0.2)
    assert out.loc["a", "n"] == 3


def test_paired_difference():
    out = paired_difference([0.8, 0.7, 0.9], [0.6, 0.7, 0.5])
    assert out["mean_diff"] == pytest.approx(0.2) and out["wins"] == 2 and out["n"] == 3
    assert out["ci95_low"] < 0.2 < out["ci95_high"]


def test_paired_by_index_pairs_only_the_shared_seeds():
    a = pd.Series([0.8, 0.7, 0.9, 0.1], index=[2, 0, 1, 7])  # seed 7 has no partner
    b = pd.Series([0.5, 0.6, 0.7], index=[1, 0, 2])
    out = paired_by_index(a, b)
    assert out["n"] == 3 and out["mean_diff"] == pytest.approx(((0.8 - 0.7) + (0.7 - 0.6) + (0.9 - 0.5)) / 3)
    assert out["wins"] == 3
    none = paired_by_index(a, pd.Series([0.5], index=[9]))
    assert none["n"] == 0 and np.isnan(none["mean_diff"])
