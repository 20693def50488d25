"""The training and evaluation loops (core/engine.py): the NaN guard and evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core import engine
from tests.factories import CPU


def tiny_task(n=40, batch_size=4):
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    data = TensorDataset(torch.randn(n, 8), torch.randint(0, 3, (n,)))
    return model, DataLoader(data, batch_size=batch_size), torch.optim.SGD(model.parameters(), lr=0.1)


class NaNFrom(nn.CrossEntropyLoss):
    """Cross entropy that turns NaN from call ``bad`` (0-based) on."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, logits, target):
        loss = super().forward(logits, target)
        self.calls += 1
        return loss * float("nan") if self.calls > self.bad else loss


@pytest.mark.parametrize("bad, print_freq, calls", [
    (4, 1000, 10),  # print_freq beyond the epoch: found at its end
    (6, 3, 9),  # found at the next log line (step 9), not at the end
])
def test_non_finite_loss_names_epoch_and_first_bad_step(bad, print_freq, calls):
    model, loader, optimizer = tiny_task()
    criterion = NaNFrom(bad)
    with pytest.raises(engine.NonFiniteLossError, match=f"epoch 3, step {bad}$"):
        engine.train_one_epoch(model, criterion, optimizer, loader, CPU, 3, tuple, print_freq=print_freq)
    assert criterion.calls == calls


def test_nan_guard_does_not_synchronise_every_step(monkeypatch):
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _real=real, _name=name: calls.append(_name) or _real(self, *a))
    counts = []
    for n in (40, 80):  # 10 and 20 steps
        model, loader, optimizer = tiny_task(n)
        calls.clear()
        out = engine.train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, loader, CPU, 1, tuple, print_freq=1000)
        assert out["images"] == n and np.isfinite(out["loss"])
        counts.append(len(calls))
    monkeypatch.undo()
    assert counts[0] == counts[1] <= 4, counts  # a few reads per epoch, none per step


def test_evaluate_returns_whole_split_matrix_and_mean_loss():
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 5), torch.randint(0, 5, (7,))
    loader = DataLoader(TensorDataset(logits, labels), batch_size=3)  # 3 + 3 + 1: a mean of batch means differs
    cm, loss = engine.evaluate(nn.Identity(), loader, CPU, 5, tuple, criterion=nn.CrossEntropyLoss())
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(labels, logits.argmax(1)):
        expected[t, p] += 1
    assert torch.equal(cm.mat, expected)
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    _, no_loss = engine.evaluate(nn.Identity(), loader, CPU, 5, tuple)
    assert np.isnan(no_loss)
    negated, _ = engine.evaluate(nn.Identity(), loader, CPU, 5, tuple, forward=lambda m, x: -x)
    assert torch.equal(negated.mat.sum(1), expected.sum(1)) and not torch.equal(negated.mat, expected)
