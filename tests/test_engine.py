"""engine.fit and its files: exact resume, NaN guard, atomic checkpoints and safe loading."""
import argparse
import csv
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import engine


def _args(out, epochs, resume=""):
    return argparse.Namespace(output_dir=str(out), epochs=epochs, resume=resume, model="mlp", seed=0)


def _run(out, epochs, resume="", criterion=None, switch_at=3):
    """A small MLP with dropout on random data, Adam then SGD from ``switch_at``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(40, 8, generator=g), torch.randint(0, 3, (40,), generator=g))
    loader = DataLoader(data, batch_size=8, shuffle=True)
    phases = [engine.Phase("adam", 1, lambda p: (torch.optim.Adam(p, 1e-2), None)),
              engine.Phase("sgd", switch_at, lambda p: (torch.optim.SGD(p, 1e-2, momentum=0.9), None))]
    best, cols = engine.fit(
        _args(out, epochs, resume), problem="p1", model=model, model_without_ddp=model, model_kwargs={},
        criterion=criterion or nn.CrossEntropyLoss(), phases=phases, train_loader=loader,
        val_loader=DataLoader(data, batch_size=16), prepare_train=tuple, prepare_eval=tuple, num_classes=3,
        score_fn=lambda cm: (cm.accuracy(), {"val_acc": f"{cm.accuracy():.4f}"}), device=torch.device("cpu"))
    return model


def test_resume_equals_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "full", 4)
    _run(tmp_path / "part", 2)
    resumed = _run(tmp_path / "part", 4, resume=str(tmp_path / "part" / "last.pt"))
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with open(tmp_path / "part" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["phase"] for r in rows] == ["adam", "adam", "sgd", "sgd"]
    ckpt = engine.load_checkpoint(str(tmp_path / "part" / "last.pt"), "p1")
    assert ckpt["epoch"] == 4 and ckpt["phase"] == 1 and "momentum_buffer" in str(ckpt["optimizer"])


class NaNAtEpoch2(nn.CrossEntropyLoss):
    calls = 0

    def forward(self, logits, target):
        NaNAtEpoch2.calls += 1
        loss = super().forward(logits, target)
        return loss * float("nan") if NaNAtEpoch2.calls > 7 else loss  # 5 steps per epoch


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(engine.NonFiniteLossError, match="epoch 2, step 2"):
        _run(tmp_path, 3, criterion=NaNAtEpoch2())
    assert engine.load_checkpoint(str(tmp_path / "last.pt"))["epoch"] == 1


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    engine.save_checkpoint({"model": {}, "model_name": "a"}, str(path))

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # the crash lands after the bytes, before the rename
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint({"model": {"w": torch.ones(3)}, "model_name": "b"}, str(path))
    monkeypatch.undo()
    assert engine.load_checkpoint(str(path))["model_name"] == "a"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_load_checkpoint_errors_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    engine.save_checkpoint({"model": {}, "model_name": "fcn8s", "problem": "p2"}, str(good))
    with pytest.raises(engine.CheckpointError, match="missing.pt: checkpoint not found"):
        engine.load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(engine.CheckpointError, match="trunc.pt: not a readable checkpoint"):
        engine.load_checkpoint(str(tmp_path / "trunc.pt"))
    with pytest.raises(engine.CheckpointError, match="good.pt: is a p2 checkpoint"):
        engine.load_checkpoint(str(good), "p1")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(engine.CheckpointError, match="other.pt: not a checkpoint of this repo"):
        engine.load_checkpoint(str(tmp_path / "other.pt"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil(), "model_name": "x"}, tmp_path / "evil.pt")
    with pytest.raises(engine.CheckpointError, match="evil.pt"):
        engine.load_checkpoint(str(tmp_path / "evil.pt"))


def test_csv_log_keeps_rows_up_to_resume_epoch(tmp_path):
    log = engine.CSVLog(str(tmp_path / "log.csv"), ["epoch", "loss"])
    for e in (1, 2, 3):
        log.append({"epoch": e, "loss": 0.1 * e})
    resumed = engine.CSVLog(str(tmp_path / "log.csv"), ["epoch", "loss"], resume_epoch=2)
    resumed.append({"epoch": 3, "loss": 9})
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "0.1"), ("2", "0.2"), ("3", "9")]
