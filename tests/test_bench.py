"""bench.py runs end to end, and its speed flags keep training numerically sane (not its speed)."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import bench
from datasets import IGNORE_INDEX, P2Tiles
from models import get_model
from p2_train import IMAGENET_MEAN, IMAGENET_STD
from p2_train import make_prepare as p2_make_prepare
from tests.conftest import ROOT


def test_quick_run_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {r["key"]: r for r in result["rows"]}
    assert list(rows) == ["input", "p2_step_fcn8s", "p2_step_fcn32s", "miou", "p1_step"]
    for r in result["rows"]:
        assert r["naive"] > 0 and r["ours"] > 0 and r["speedup"] > 0, r
        for v in r.get("variants", {}).values():
            assert v["images_per_s"] > 0 and v["gflops"] > 0, r
    assert rows["miou"]["agree"] is True and rows["miou"]["max_abs_diff"] <= 1e-9
    assert rows["input"]["same_output"] is True
    assert all(p["peak_gflops"] > 0 for p in result["peaks"].values())
    assert "speed-up" in proc.stdout and "agree to 1e-9: True" in proc.stdout


@pytest.fixture(scope="module")
def tile_batch(synthetic_data):
    tiles = P2Tiles(str(synthetic_data / "p2_data" / "train"), progress=False)
    items = [tiles[k] for k in range(2)]
    return torch.stack([i for i, _ in items]), torch.stack([m for _, m in items])


def fcn8s_losses(batch, channels_last, dtype, steps=4):
    """Losses of ``steps`` SGD steps of FCN8s (width 16) on one batch; dropout off so runs compare."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = get_model("fcn8s", width=16)
    model, _ = bench.variant(model, cpu, channels_last)
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prepare = p2_make_prepare(cpu, IMAGENET_MEAN, IMAGENET_STD, channels_last)
    losses = bench.train_steps(model, nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX), optimizer, lambda: batch,
                               prepare, cpu, dtype, steps)
    return torch.stack(losses).double()


def test_bf16_and_channels_last_keep_losses(tile_batch):
    ref = fcn8s_losses(tile_batch, channels_last=False, dtype=None)
    assert ref[-1] < 0.95 * ref[0], f"fp32 losses do not decrease: {ref.tolist()}"
    channels_last = fcn8s_losses(tile_batch, channels_last=True, dtype=None)
    torch.testing.assert_close(channels_last, ref, rtol=1e-4, atol=0)
    bf16 = fcn8s_losses(tile_batch, channels_last=True, dtype=torch.bfloat16)
    torch.testing.assert_close(bf16, ref, rtol=3e-2, atol=0)
