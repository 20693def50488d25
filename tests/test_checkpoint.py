"""The checkpoint format (core/checkpoint.py): its two kinds, refusals naming the file, the background
writer of a run's epoch files."""
import errno
import os
import time

import pytest
import torch

from core import checkpoint, cli, fileio
from core.checkpoint import CheckpointError
from tests.factories import (
    CPU,
    KWARGS,
    PREPROCESS,
    classifier,
    inference_ckpt,
    training_ckpt,
)


def test_inference_and_training_kinds(tmp_path):
    model = classifier()
    checkpoint.save(inference_ckpt(model, val_acc=0.25), str(tmp_path / "best.pt"))
    checkpoint.save(training_ckpt(model), str(tmp_path / "last.pt"))
    best = checkpoint.load(str(tmp_path / "best.pt"), "p1")
    assert best["kind"] == "inference" and best["meta"] == {"epoch": 1, "val_acc": 0.25}
    assert not set(checkpoint.TRAINING_KEYS) & set(best)
    last = checkpoint.load(str(tmp_path / "last.pt"), "p1", training=True)
    assert last["kind"] == "training" and last["epoch"] == 2 and last["args"]["lr"] == 0.1
    assert last["optimizer"]["param_groups"][0]["momentum"] == 0.9 and last["rng"][0]["torch"].dtype == torch.uint8
    assert checkpoint.inference_part(last).keys() == best.keys()
    with pytest.raises(CheckpointError, match=r"best\.pt: holds only the weights .*resume from the run's last\.pt"):
        checkpoint.load(str(tmp_path / "best.pt"), "p1", training=True)
    with pytest.raises(CheckpointError, match=r"last\.pt: is a p1 checkpoint \(classifier\), but a p2"):
        checkpoint.load(str(tmp_path / "last.pt"), "p2")


def test_unusable_checkpoints_are_refused_naming_the_file(tmp_path):
    state = inference_ckpt(classifier())
    good = tmp_path / "good.pt"
    checkpoint.save(state, str(good))
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        checkpoint.load(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="no checkpoint given"):
        checkpoint.load("")
    checkpoint.save({**state, "version": checkpoint.VERSION - 1}, str(tmp_path / "v1.pt"))
    with pytest.raises(CheckpointError, match=rf"v1\.pt: checkpoint format version {checkpoint.VERSION - 1}, "
                                              rf"this code reads version {checkpoint.VERSION}"):
        checkpoint.load(str(tmp_path / "v1.pt"))
    old = {k: v for k, v in state.items() if k not in ("format", "version", "kind")}  # before versioning
    checkpoint.save(old, str(tmp_path / "old.pt"))
    with pytest.raises(CheckpointError, match=r"old\.pt: written by an older version .*unversioned"):
        checkpoint.load(str(tmp_path / "old.pt"))
    checkpoint.save({k: v for k, v in state.items() if k != "preprocess"}, str(tmp_path / "damaged.pt"))
    with pytest.raises(CheckpointError, match=r"damaged\.pt: damaged checkpoint, missing preprocess"):
        checkpoint.load(str(tmp_path / "damaged.pt"))
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"trunc\.pt: not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "trunc.pt"))
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a checkpoint of this repo"):
        checkpoint.load(str(tmp_path / "foreign.pt"))


class Evil:
    """Unpickling this would run a shell command (the reason for ``weights_only``)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({**inference_ckpt(classifier()), "meta": Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_load_model_rebuilds_from_the_checkpoint(tmp_path):
    model = classifier(seed=3).eval()
    path = str(tmp_path / "last.pt")
    checkpoint.save(training_ckpt(model), path)
    rebuilt, ckpt = checkpoint.load_model(path, "p1", CPU)
    assert not rebuilt.training and ckpt["model_kwargs"] == KWARGS and ckpt["preprocess"] == PREPROCESS
    assert "model" not in ckpt and "optimizer" not in ckpt  # the weights live in the model only
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    wrong = {**checkpoint.load(path), "model_kwargs": {**KWARGS, "width": 8}}
    with pytest.raises(CheckpointError, match=r"other\.pt: cannot rebuild classifier"):
        checkpoint.build_model(wrong, "other.pt")


def test_to_cpu_snapshot_is_independent_of_later_updates():
    model = classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    live = training_ckpt(model, optimizer)
    snap = checkpoint.to_cpu(live)
    before = {k: v.clone() for k, v in live["model"].items()}
    momentum = [s["momentum_buffer"].clone() for s in live["optimizer"]["state"].values()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    name = next(iter(dict(model.named_parameters())))
    assert not torch.equal(live["model"][name], before[name])  # the live state dict follows the model...
    for k, v in before.items():  # ...the snapshot does not
        assert torch.equal(snap["model"][k], v), k
    for s, m in zip(snap["optimizer"]["state"].values(), momentum):
        assert torch.equal(s["momentum_buffer"], m)


def test_async_writer_runs_jobs_in_order_and_reraises():
    writer, done = fileio.AsyncWriter(), []

    def slow(tag):
        time.sleep(0.05)
        done.append(tag)

    writer.submit([lambda: slow("a1"), lambda: done.append("a2")])
    writer.submit([lambda: done.append("b1")])  # waits for the first list
    writer.wait()
    assert done == ["a1", "a2", "b1"]

    def fail():
        raise OSError(errno.EIO, "I/O error")

    writer.submit([fail, lambda: done.append("after")])
    with pytest.raises(OSError, match="I/O error"):
        writer.wait()
    assert done[-1] == "b1"  # the job after the failing one never ran
    writer.wait()  # the error is reported once
    writer.submit([lambda: done.append("c")])
    writer.wait()
    assert done[-1] == "c"


@pytest.mark.parametrize("full", ["best.pt", "last.pt"])
def test_full_disk_keeps_previous_last_pt_and_holds_back_the_log_row(tmp_path, monkeypatch, full):
    folder = str(tmp_path)
    log = fileio.CSVLog(os.path.join(folder, "log.csv"), ["epoch"])
    writer = fileio.AsyncWriter()
    model = classifier()
    checkpoint.submit_epoch(writer, folder, checkpoint.to_cpu(training_ckpt(model, epoch=1)), True,
                            then=[lambda: log.append({"epoch": 1})])
    writer.wait()
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith(full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    checkpoint.submit_epoch(writer, folder, checkpoint.to_cpu(training_ckpt(model, epoch=2)), True,
                            then=[lambda: log.append({"epoch": 2})])
    with pytest.raises(OSError) as e:
        writer.wait()
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == os.path.join(folder, full)  # the file, not a temp
    assert cli.error_message(e.value) == f"{os.path.join(folder, full)}: no space left on the device"
    assert checkpoint.load(os.path.join(folder, "last.pt"), training=True)["epoch"] == 1
    # best.pt is written first: last.pt never holds an epoch whose best.pt is missing (a resume finds it).
    assert checkpoint.load(os.path.join(folder, "best.pt"))["meta"]["epoch"] == (1 if full == "best.pt" else 2)
    assert [r["epoch"] for r in fileio.read_csv(os.path.join(folder, "log.csv"))] == ["1"]
    assert sorted(os.listdir(folder)) == ["best.pt", "last.pt", "log.csv"]  # no temporary file left
