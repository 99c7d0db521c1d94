import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.methods.inference import sliding_window_predict
from labkit.methods.training import epochs_to_fraction, evaluate, fit, predict_segmentation


def _toy_segmentation(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g)
    y = (x[:, 0] > 0.5).long()
    return TensorDataset(x, y)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def test_fit_learns_restores_best_and_records_history():
    data = _toy_segmentation()
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    result = fit(
        _model(),
        loader,
        DataLoader(data, batch_size=8),
        num_classes=2,
        epochs=6,
        lr=0.05,
        seed=0,
        progress=False,
        scheduler="cosine",
    )
    assert list(result.history.columns[:3]) == ["epoch", "train_loss", "lr"]
    assert result.history["val_miou"].max() == pytest.approx(result.best_score)
    assert result.best_score > 0.8
    assert evaluate(result.model, DataLoader(data, batch_size=8), num_classes=2)["miou"] == pytest.approx(
        result.best_score
    )


def test_fit_is_deterministic_under_a_seed():
    data = _toy_segmentation()
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
        runs.append(fit(_model(), loader, None, num_classes=2, epochs=2, seed=7, progress=False).history["train_loss"])
    pd.testing.assert_series_equal(runs[0], runs[1])


def test_early_stopping_and_classification():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    result = fit(
        nn.Linear(5, 2),
        loader,
        loader,
        task="classification",
        num_classes=2,
        epochs=50,
        lr=0.0,
        patience=2,
        progress=False,
        seed=0,
    )
    assert result.stopped_early and len(result.history) == 4  # best at 1, then 3 epochs without gain
    assert "val_accuracy" in result.history


def test_interrupted_fit_resumes_from_its_last_epoch(tmp_path):
    data = _toy_segmentation()

    def loader():
        return DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))

    full = fit(_model(), loader(), loader(), num_classes=2, epochs=4, seed=1, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(
            _model(),
            loader(),
            loader(),
            num_classes=2,
            epochs=4,
            seed=1,
            progress=False,
            checkpoint_dir=tmp_path,
            on_epoch_end=stop_after_two,
        )
    resumed = fit(
        _model(), loader(), loader(), num_classes=2, epochs=4, seed=1, progress=False, checkpoint_dir=tmp_path
    )
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed.history["train_loss"], full.history["train_loss"], rtol=1e-5)


def test_epochs_to_fraction():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "val_miou": [0.2, 0.5, 0.58, 0.6]})
    assert epochs_to_fraction(history, "val_miou", 0.95) == 3
    assert epochs_to_fraction(history, "val_miou", 0.5) == 2
    assert epochs_to_fraction(pd.DataFrame({"epoch": [1], "val_miou": [np.nan]}), "val_miou") is None


def test_sliding_window_matches_whole_image_prediction_for_a_local_model():
    model = _model().eval()
    image = torch.rand(1, 50, 70)
    probs = sliding_window_predict(model, image.numpy(), num_classes=2, tile=32, overlap=0.5, batch_size=3)
    assert probs.shape == (2, 50, 70)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    whole = predict_segmentation(model, image[None])[0]
    # Tiles see less context at their borders; with a 3x3 receptive field only a thin seam may differ.
    assert (probs.argmax(0) == whole).mean() > 0.99
    with pytest.raises(ValueError, match="NaN"):
        sliding_window_predict(model, np.full((1, 8, 8), np.nan, np.float32), 2, tile=8)
    small = sliding_window_predict(model, np.zeros((1, 10, 12), np.float32), 2, tile=32)
    assert small.shape == (2, 10, 12)


def test_model_device_is_where_the_parameters_live():
    from labkit.methods.training import model_device

    assert model_device(torch.nn.Conv2d(1, 2, 1)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    assert model_device(torch.nn.Conv2d(1, 2, 1, device="meta")) == torch.device("meta")
