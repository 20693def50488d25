"""Device, compile and RNG helpers (core/runtime.py)."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from core import runtime
from tests.factories import CPU


@pytest.fixture
def dynamo_reset(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", torch._dynamo.config.suppress_errors)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_failure_falls_back_to_eager(dynamo_reset):
    calls = []

    def broken_compiler(gm, inputs):
        calls.append(1)
        raise RuntimeError("no compiler")

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    compiled = runtime.maybe_compile(model, True, backend=broken_compiler)
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    assert calls, "the broken backend was never tried"
    assert runtime.maybe_compile(model, False) is model


def test_compile_enabled_and_amp_choices():
    assert runtime.compile_enabled("auto", CPU) is False
    assert runtime.compile_enabled("auto", torch.device("cuda", 0)) is True
    assert runtime.compile_enabled("on", CPU) is True and runtime.compile_enabled("off", CPU) is False
    assert runtime.amp_dtype(CPU, False) is None and runtime.amp_dtype(CPU, True) == torch.bfloat16
    assert runtime.make_scaler(CPU, torch.bfloat16) is None


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    runtime.seed_everything(7)
    state = runtime.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    first = (np.random.rand(), torch.rand(2), random.random())
    runtime.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (np.random.rand(), torch.rand(2), random.random())
    assert first[0] == again[0] and torch.equal(first[1], again[1]) and first[2] == again[2]
