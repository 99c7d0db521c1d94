"""The device parameter: auto falls back to the CPU and says so, cuda without a GPU is an error, and the
device-aware loop gives the same results on the CPU as before."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.core.device import autocast, grad_scaler, resolve_device
from labkit.core.errors import ParameterError
from labkit.core.metrics import ConfusionMatrix
from labkit.methods.training import evaluate, fit, predict_segmentation


def test_auto_falls_back_to_the_cpu_and_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert "no CUDA GPU found, running on the CPU" in capsys.readouterr().out
    with pytest.raises(ParameterError, match="'device' is 'cuda' but torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ParameterError, match="must be one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_precision_is_a_no_op_on_the_cpu():
    with autocast("cpu", "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    assert grad_scaler("cpu", "fp16") is None
    with pytest.raises(ParameterError):
        autocast("cpu", "int8")


def _toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=4)


def test_cpu_results_do_not_depend_on_the_precision_argument():
    results = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = nn.Conv2d(3, 2, 1)
        res = fit(model, _toy(), _toy(), epochs=2, lr=0.1, seed=0, progress=False, precision=precision)
        results.append((res.history.train_loss.tolist(), predict_segmentation(model, torch.randn(2, 3, 8, 8))))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_evaluate_scores_match_a_numpy_confusion_matrix():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, 1)
    loader = _toy()
    scores = evaluate(model, loader, num_classes=2)
    cm = ConfusionMatrix(2)
    for x, y in loader:
        cm.update(model(x).argmax(1).numpy(), y.numpy())
    assert scores["miou"] == pytest.approx(cm.miou())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_confusion_matrix_on_the_gpu_equals_the_cpu_one():
    pred = torch.randint(0, 3, (4, 16, 16))
    target = torch.randint(0, 3, (4, 16, 16))
    target[0, 0, :4] = 255
    gpu = ConfusionMatrix(3).update(pred.cuda(), target.cuda()).update(pred.cuda(), target.cuda())
    cpu = ConfusionMatrix(3).update(pred, target).update(pred, target)
    np.testing.assert_array_equal(gpu.matrix, cpu.matrix)
