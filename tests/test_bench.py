"""bench.py runs end to end (as a subprocess), and the paths it times against the naive ones
compute the same thing: the input pipeline gives the naive tensors, and the speed options
(channels_last, bf16) keep training numerically sane. Speed itself is bench.py's business."""
import argparse
import json
import sys

import pytest
import torch
from torch import nn

from benchmarks.naive import NaiveP1Images, NaiveP2Tiles, naive_p2_prepare
from benchmarks import grading
from benchmarks.row import IMAGENET
from benchmarks.summary import limit_line, print_rows
from core.engine import train_step
from core.inputs import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, make_prepare, to_float
from datasets import IGNORE_INDEX, P1Images, P2Tiles
from models import get_model
from tests.conftest import ROOT, run_script

CPU = torch.device("cpu")


def test_quick_run_writes_every_row(tmp_path):
    out = tmp_path / "b.json"
    proc = run_script(sys.executable, "bench.py", "--quick", "--json", str(out), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
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
    grading = {r["key"]: r for r in result["grading"]}
    assert {"grade_s_512", "grade_s_large", "grade_rss_ratio", "grade_257"} <= set(grading)
    for key in ("grade_s_512", "grade_s_large", "grade_257"):  # a time, or None below start-up jitter (never <= 0)
        assert all(grading[key][k] is None or grading[key][k] > 0 for k in ("naive", "ours")), grading[key]
    assert 0.5 < grading["grade_rss_ratio"]["ours"] < 2  # 4 large images against one: bounded memory
    limit = grading["grade_257"]  # the 257-tile projection against the course's 10-minute limit
    assert limit["target"] == limit["limit_s"] == 600 and limit["device"] == "cpu"
    for p, k in (("fp32", "naive"), ("bf16", "ours")):
        if limit[k] is None:
            assert limit["limit_ratio"][p] is None and f"{p} not measured" in proc.stdout
        else:
            assert limit["limit_ratio"][p] == pytest.approx(limit[k] / 600)
            assert limit["limit_margin_s"][p] == pytest.approx(600 - limit[k])
    assert limit["meets_target"] == (None if limit["naive"] is None else limit["naive"] <= 600)
    assert "course limit 600 s" in proc.stdout
    assert ("grade_257_cuda" in grading) == torch.cuda.is_available()  # a GPU row only where there is a GPU
    assert all(r.get("na") == "no CUDA" for r in result["gpu"])  # measured only on a GPU machine


def test_a_grading_time_below_start_up_jitter_is_not_measured_not_negative(tmp_path, monkeypatch, capsys):
    """s/image is (wall(N) - wall(1)) / (N - 1). Where N images took no longer than 1 (the processes'
    start-up jitter is larger than an image's cost) the rows hold None, the table says "-" and the
    257-tile projection "not measured", with no verdict: never a negative time that meets the limit."""
    monkeypatch.setattr(grading, "run_child", lambda cmd, log: (2.0 if "small1" in cmd[3] else 1.9, 700.0))
    args = argparse.Namespace(grade_images=2, grade_large=600, grade_width=64, seed=0)
    rows = {r["key"]: r for r in grading.bench_grading(args, str(tmp_path), torch.device("cpu"))}
    for key in ("grade_s_512", "grade_257"):
        assert rows[key]["naive"] is None and rows[key]["ours"] is None and rows[key]["meets_target"] is None
    limit = rows["grade_257"]
    assert limit["limit_ratio"] == limit["limit_margin_s"] == {"fp32": None, "bf16": None}
    print_rows([limit])
    assert capsys.readouterr().out.split()[-6:] == ["s", "-", "-", "-", "<=", "600"]
    assert "fp32 not measured" in limit_line(limit) and "bf16 not measured" in limit_line(limit)
    measured = dict(limit, naive=900.0, ours=300.0, limit_ratio={"fp32": 1.5, "bf16": 0.5},
                    limit_margin_s={"fp32": -300.0, "bf16": 300.0})
    assert "fp32 900 s = 1.50x the limit (over by 300 s); bf16 300 s = 0.50x the limit (margin 300 s)" in \
        limit_line(measured)


@pytest.fixture(scope="module")
def tiles(synthetic_data):
    return P2Tiles(str(synthetic_data / "p2_data" / "train"), progress=False)


def test_input_pipeline_gives_the_naive_tensors(tiles):
    """Ours (uint8 tiles, normalised on the device) against the naive paths bench.py times:
    torchvision's ToTensor + Normalize of the PIL image and the course grader's reading of the
    mask (input-pipeline row), per-item float32 normalisation on the CPU (P2 train-step row)."""
    naive_image, naive_mask = NaiveP2Tiles(tiles, train=False)[0]
    image, mask = tiles[0]
    x, y = make_prepare(CPU, IMAGENET)((image[None], mask[None]))
    torch.testing.assert_close(x[0], naive_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(to_float(image[None], IMAGENET_MEAN, IMAGENET_STD)[0], naive_image, rtol=0, atol=1e-5)
    assert torch.equal(y[0], naive_mask) and len(naive_mask.unique()) > 1
    step_x, step_y = naive_p2_prepare(CPU)([tiles[0], tiles[1]])
    torch.testing.assert_close(step_x[0], naive_image, rtol=0, atol=1e-5)
    assert step_x.dtype == torch.float32 and torch.equal(step_y[0], naive_mask)


def test_p1_naive_images_give_ours(synthetic_data):
    """The P1 row's naive dataset (PIL decode, torchvision flip, Resize, ToTensor, Normalize)
    gives our decoded image, normalised, as it is or flipped."""
    root = str(synthetic_data / "p1_data" / "train_50")
    ours = P1Images(root, progress=False)
    image, label = NaiveP1Images(root, ours.files, 32, CIFAR_MEAN, CIFAR_STD)[0]
    x = to_float(ours.images[:1], CIFAR_MEAN, CIFAR_STD)[0]
    assert label == ours.labels[0]
    assert any(torch.allclose(image, v, rtol=0, atol=1e-5) for v in (x, x.flip(-1)))


def fcn8s_losses(tiles, channels_last, dtype, steps=4):
    """Losses of ``steps`` SGD steps of FCN8s (width 64) on two tiles; dropout off so runs compare."""
    batch = tuple(torch.stack(t) for t in zip(tiles[0], tiles[1]))
    torch.manual_seed(0)
    model = get_model("fcn8s", width=64).to(memory_format=torch.channels_last if channels_last else
                                            torch.contiguous_format)
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    prepare = make_prepare(CPU, IMAGENET, channels_last=channels_last)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    losses = [train_step(model, criterion, optimizer, *prepare(batch), CPU, dtype) for _ in range(steps)]
    return torch.stack(losses).double()


def test_bf16_and_channels_last_keep_losses(tiles):
    ref = fcn8s_losses(tiles, channels_last=False, dtype=None)
    assert ref[-1] < 0.95 * ref[0], f"fp32 losses do not decrease: {ref.tolist()}"
    channels_last = fcn8s_losses(tiles, channels_last=True, dtype=None)
    torch.testing.assert_close(channels_last, ref, rtol=1e-4, atol=0)
    bf16 = fcn8s_losses(tiles, channels_last=True, dtype=torch.bfloat16)
    torch.testing.assert_close(bf16, ref, rtol=3e-2, atol=0)
