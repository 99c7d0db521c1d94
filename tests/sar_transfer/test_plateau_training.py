"""The paper's schedule (methods.plateau_training): reduce-on-plateau and early stopping on validation mIoU."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.methods import plateau_training as pt


def _loaders(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(TensorDataset(x, y), batch_size=8)


def test_a_flat_validation_curve_cuts_the_rate_after_its_patience_and_stops_after_its_own():
    train, val = _loaders()
    model = nn.Conv2d(3, 2, 1)
    # lr 0: the score never improves after epoch 1 (negative control for both rules)
    fit = pt.fit_on_plateau(model, train, val, num_classes=2, max_epochs=50, lr=0.0, lr_patience=2, stop_patience=12)
    assert fit.stopped_early and fit.epochs == 13 and fit.best_epoch == 1  # 12 epochs without a gain after epoch 1
    fit = pt.fit_on_plateau(
        nn.Conv2d(3, 2, 1), train, val, num_classes=2, max_epochs=50, lr=1e-3, lr_patience=2, stop_patience=3
    )
    assert fit.epochs >= pt.MIN_EPOCHS  # never before the authors' minimum


def test_the_rate_is_cut_tenfold_on_a_plateau_and_kept_constant_without_patience():
    train, val = _loaders()
    fit = pt.fit_on_plateau(
        nn.Conv2d(3, 2, 1), train, val, num_classes=2, max_epochs=12, lr=1e-6, lr_patience=1, stop_patience=None
    )
    assert fit.epochs == 12 and not fit.stopped_early
    assert fit.lr[0] == 1e-6 and fit.lr.min() < 1e-6 and np.isclose(fit.lr[fit.lr < 1e-6].max(), 1e-7)
    fit = pt.fit_on_plateau(
        nn.Conv2d(3, 2, 1), train, val, num_classes=2, max_epochs=6, lr=1e-3, lr_patience=None, stop_patience=None
    )
    assert (fit.lr == 1e-3).all() and fit.epochs == 6 and len(fit.val_miou) == 6


def test_the_same_seed_gives_the_same_run():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Conv2d(3, 2, 1)
        train, val = _loaders()
        runs.append(pt.fit_on_plateau(model, train, val, num_classes=2, max_epochs=4, lr=1e-2, seed=3).val_miou)
    np.testing.assert_array_equal(*runs)
