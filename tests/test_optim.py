"""Optimizers and schedules (core/optim.py)."""

import pytest
import torch
from torch import nn

from core.optim import build_optimizer, build_scheduler


def test_optimizers_and_schedules():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer("sgd", params, 0.1, momentum=0.8, weight_decay=1e-4)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.8
    assert type(build_optimizer("adam", params, 1e-3, weight_decay=1e-4)) is torch.optim.Adam
    assert type(build_optimizer("adamw", params, 1e-3, weight_decay=1e-2)) is torch.optim.AdamW
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", params, 1e-3)
    assert build_scheduler("none", sgd, 10) is None

    def lrs(name, epochs, **kw):
        opt = build_optimizer("sgd", [nn.Parameter(torch.zeros(1))], 1.0)
        sched = build_scheduler(name, opt, epochs, **kw)
        out = []
        for _ in range(epochs):
            out.append(round(opt.param_groups[0]["lr"], 6))
            opt.step()
            sched.step()
        return out, opt.param_groups[0]["lr"]

    assert lrs("step", 6)[0] == [1, 1, 1, 1, 0.1, 0.1]  # once, after two thirds
    assert lrs("step", 6, step_size=2, gamma=0.5)[0] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine, final = lrs("cosine", 4)
    assert cosine[0] == 1 and cosine == sorted(cosine, reverse=True) and final == pytest.approx(0, abs=1e-12)
