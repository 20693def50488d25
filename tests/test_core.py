"""The shared machinery in core/ (and datasets.stats), one section per module: checkpoint format
and background writes, atomic files, the NaN guard and evaluation, compile fallback, run folders,
the command-line layer, dataset statistics, losses, batch preparation and optimizers."""
import argparse
import errno
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from core import checkpoint, cli, engine, fileio, runs, runtime
from core.checkpoint import CheckpointError
from core.losses import FocalLoss, build_criterion
from core.optim import build_optimizer, build_scheduler
from core.presets import augment, make_prepare, model_inputs, to_float
from datasets import IGNORE_INDEX, DataError, P2Tiles
from datasets import stats
from datasets.masks import class_to_rgb
from models import get_model
from tests.conftest import ROOT

CPU = torch.device("cpu")
KWARGS = {"num_classes": 50, "width": 16, "img_size": 32}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def classifier(seed=0):
    torch.manual_seed(seed)
    return get_model("classifier", **KWARGS)


def inference_ckpt(model, problem="p1", **meta):
    return checkpoint.inference_state(problem, "classifier", KWARGS, model, PREPROCESS, **{"epoch": 1, **meta})


def training_ckpt(model, optimizer=None, epoch=2, **args):
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved = {"lr": 0.1, "epochs": 4, "lr_schedule": "none", "device": "cpu", "workers": 0, "width": 16, **args}
    return checkpoint.training_state(inference_ckpt(model, epoch=epoch), optimizer=optimizer, lr_scheduler=None,
                                     scaler=None, phase="sgd", epoch=epoch, best_score=0.5, args=saved,
                                     rng=[runtime.rng_state()], world_size=1)


# --------------------------------------------------------------------------- checkpoint


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


# --------------------------------------------------------------------------- fileio


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    fileio.atomic_write_bytes(str(path), b"old contents\n")

    class HalfWritten:
        """A file that writes half the bytes, then hits a full disk."""

        def __init__(self, name, mode):
            self.f = open(name, mode)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    name = str(path)
    monkeypatch.setattr(fileio, "open", HalfWritten, raising=False)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write_bytes(name, b"new contents that never fully arrive\n" * 100)
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents\n"
    assert os.listdir(tmp_path) == ["log.csv"]

    def no_fsync(fd):  # the crash lands after every byte, before the rename
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="I/O error"):
        fileio.write_csv(name, ["epoch"], [[1], [2]])
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents\n" and os.listdir(tmp_path) == ["log.csv"]


def test_csv_log_keeps_rows_up_to_resume_epoch(tmp_path):
    path = str(tmp_path / "log.csv")
    log = fileio.CSVLog(path, ["epoch", "loss"])
    for e in (1, 2, 3):
        log.append({"epoch": e, "loss": 0.1 * e})
    resumed = fileio.CSVLog(path, ["epoch", "loss"], resume_epoch=2)
    resumed.append({"epoch": 3, "loss": 9})
    assert [(r["epoch"], r["loss"]) for r in fileio.read_csv(path)] == [("1", "0.1"), ("2", "0.2"), ("3", "9")]
    fresh = fileio.CSVLog(path, ["epoch", "loss"])  # a new run starts an empty log
    fresh.append({"epoch": 1, "loss": 5})
    assert len(fileio.read_csv(path)) == 1


# --------------------------------------------------------------------------- engine


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


# --------------------------------------------------------------------------- runtime


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


# --------------------------------------------------------------------------- runs


def run_args(folder, **kw):
    return argparse.Namespace(**{"output_dir": str(folder), "resume": "", "overwrite": False, **kw})


def test_prepare_refuses_a_run_folder_and_overwrite_removes_only_run_files(tmp_path):
    folder = tmp_path / "run"
    runs.prepare(run_args(folder), "p2_train.py").close()  # an empty or new folder is fine
    for name in ("last.pt", "best.pt", "log.csv", "args.json", "curves.png"):
        (folder / name).write_text("x")
    (folder / "snapshots" / "report").mkdir(parents=True)
    (folder / "snapshots" / "0010_epoch1.png").write_text("x")
    (folder / "snapshots" / "report" / "fig.png").write_text("mine")
    (folder / "snapshots" / "notes.txt").write_text("mine")
    (folder / "my notes.txt").write_text("keep me")
    with pytest.raises(cli.UserError) as e:
        runs.prepare(run_args(folder), "p2_train.py")
    for flag in ("--resume", "--overwrite", "--output-dir", "p2_train.py"):
        assert flag in str(e.value)
    assert (folder / "last.pt").exists()
    runs.prepare(run_args(folder, resume=str(folder / "last.pt")), "p2_train.py").close()  # resuming here is fine
    assert (folder / "last.pt").exists()
    runs.prepare(run_args(folder, overwrite=True), "p2_train.py").close()
    assert sorted(os.listdir(folder)) == [".lock", "my notes.txt", "snapshots"]
    assert sorted(os.listdir(folder / "snapshots")) == ["notes.txt", "report"]  # the user's files survive
    (tmp_path / "file").write_text("x")
    with pytest.raises(cli.UserError, match="exists and is not a folder"):
        runs.prepare(run_args(tmp_path / "file"), "p2_train.py")


def test_overwrite_of_a_p1_run_keeps_a_users_snapshots_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("last.pt", "best.pt", "log.csv", "args.json", "curves.png", "confusion_matrix.png"):
        (folder / name).write_text("x")
    (folder / "snapshots" / "report").mkdir(parents=True)
    (folder / "snapshots" / "report" / "fig.png").write_text("mine")
    (folder / "snapshots" / "0010_epoch1.png").write_text("mine too: P1 writes no snapshots")
    runs.prepare(run_args(folder, overwrite=True), "p1_train.py").close()
    assert sorted(os.listdir(folder)) == [".lock", "snapshots"]
    assert sorted(os.listdir(folder / "snapshots")) == ["0010_epoch1.png", "report"]


def test_a_folder_whose_run_finished_no_epoch_is_started_again(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "args.json").write_text("{}")  # stopped during epoch 1
    runs.prepare(run_args(folder), "p2_train.py").close()
    assert "finished no epoch; starting it again" in capsys.readouterr().err
    assert not (folder / "args.json").exists()
    (folder / "log.csv").write_text("epoch\n1\n")  # files of a run, but no last.pt to continue from
    with pytest.raises(cli.UserError) as e:
        runs.prepare(run_args(folder), "p2_train.py")
    assert "no last.pt" in str(e.value) and "--resume" not in str(e.value) and "--overwrite" in str(e.value)
    assert "the same command starts the run again" in runs.saved_note(str(folder), 0, "p2_train.py")


def test_output_dir_inside_the_data_folder_is_refused(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(cli.UserError, match="is inside --data-path"):
        runs.prepare(run_args(tmp_path / "data" / "run", data_path=str(tmp_path / "data")), "p2_train.py")
    assert not (tmp_path / "data" / "run").exists()
    runs.prepare(run_args(tmp_path / "run", data_path=str(tmp_path / "data")), "p2_train.py").close()


def test_second_lock_from_another_process_fails_at_once(tmp_path):
    holder = ("import sys, time\nfrom core.runs import lock_folder\nlock = lock_folder(sys.argv[1])\n"
              "print('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        t = time.perf_counter()
        with pytest.raises(cli.UserError, match="another run is writing into this folder"):
            runs.lock_folder(str(tmp_path))
        assert time.perf_counter() - t < 2
    finally:
        proc.kill()
        proc.wait()
    runs.lock_folder(str(tmp_path)).close()  # the kernel released the holder's lock


def test_lock_dies_with_its_process_not_with_its_forked_workers(tmp_path):
    # A run whose DataLoader workers (forked children) outlive a SIGKILL by seconds: the folder is free at once.
    holder = ("import os, sys, time\nfrom core.runs import lock_folder\nlock = lock_folder(sys.argv[1])\n"
              "if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\nprint('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        proc.kill()
        proc.wait()
        runs.lock_folder(str(tmp_path)).close()  # the forked child still runs, and holds no lock
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def stop_run(tmp_path, body):
    """Run ``body(run)`` inside a ``runs.Run`` on a fresh folder; returns the exception it ends with."""
    args = argparse.Namespace(output_dir=str(tmp_path / "run"), resume="", overwrite=False, data_path="")
    with pytest.raises((cli.Interrupted, cli.UserError)) as e:
        with runs.Run(args, "p2_train.py", saved_epoch=3) as run:
            body(run)
    return e.value


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT])
def test_scheduler_signals_stop_a_run_as_ctrl_c_does(tmp_path, signum):
    ignored_at_start = signal.getsignal(signum) == signal.SIG_IGN
    if ignored_at_start:
        # A shell starts background jobs (e.g. `make test &`) with SIGINT ignored, and a run keeps an
        # ignored signal ignored (tested below): give the signal its usual handler for this test.
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    before = signal.getsignal(signum)

    def body(run):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises here
        raise AssertionError("the signal did not stop the run")

    try:
        e = stop_run(tmp_path, body)
    finally:
        after = signal.getsignal(signum)
        if ignored_at_start:
            signal.signal(signum, signal.SIG_IGN)
    assert isinstance(e, cli.Interrupted) and e.exit_code == 128 + signum
    assert f"holds epoch 3; continue with: python p2_train.py --resume {tmp_path / 'run' / 'last.pt'}" in str(e)
    assert (f"stopped by {signal.Signals(signum).name}" in str(e)) == (signum != signal.SIGINT)
    assert after is before  # restored


def test_a_swallowed_stop_signal_stops_the_run_at_the_end_of_the_epoch(tmp_path, capsys):
    model = classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def body(run):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except runtime.StopSignal:
            pass  # swallowed by code that catches KeyboardInterrupt
        log = fileio.CSVLog(os.path.join(run.args.output_dir, "log.csv"), ["epoch"])
        run.save_epoch(inference_ckpt(model), log, {"epoch": 4}, time.perf_counter(), optimizer=optimizer,
                       lr_scheduler=None, scaler=None, phase="sgd", epoch=4, best_score=0.5, is_best=True,
                       line="epoch 4: val 0.5 (best)")
        raise AssertionError("the run went on")

    e = stop_run(tmp_path, body)
    assert isinstance(e, cli.Interrupted) and e.exit_code == 143 and "holds epoch 4" in str(e)
    assert "epoch 4: val 0.5 (best)" in capsys.readouterr().out  # the epoch's files were finished first
    assert checkpoint.load(str(tmp_path / "run" / "last.pt"), training=True)["epoch"] == 4


def test_a_stop_signal_that_lands_in_a_finalizer_is_delivered_again(tmp_path):
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here, inside __del__

    def body(run):
        Finalized()  # dropped at once: __del__ runs, and an exception raised in it would be lost
        time.sleep(10)

    t = time.perf_counter()
    e = stop_run(tmp_path, body)
    assert isinstance(e, cli.Interrupted) and e.exit_code == 143
    assert time.perf_counter() - t < 5, "the run went on after the signal"


def test_a_signal_the_job_ignores_stays_ignored(tmp_path):
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        args = argparse.Namespace(output_dir=str(tmp_path / "run"), resume="", overwrite=False, data_path="")
        with runs.Run(args, "p2_train.py"):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_full_disk_never_claims_a_best_pt_that_was_not_written(tmp_path, monkeypatch, capsys):
    model = classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("best.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    def body(run):
        monkeypatch.setattr(os, "replace", full_disk)
        log = fileio.CSVLog(os.path.join(run.args.output_dir, "log.csv"), ["epoch"])
        run.save_epoch(inference_ckpt(model), log, {"epoch": 1}, time.perf_counter(), optimizer=optimizer,
                       lr_scheduler=None, scaler=None, phase="sgd", epoch=4, best_score=0.5, is_best=True,
                       line="epoch 4: val 0.5 (best)")
        run.writer.wait()

    e = stop_run(tmp_path, body)
    monkeypatch.undo()
    best = tmp_path / "run" / "best.pt"
    assert isinstance(e, cli.UserError) and str(e).startswith(f"training stopped: {best}: no space left on the device")
    assert "holds epoch 3" in str(e)  # the epoch before: epoch 4's last.pt was not written either
    assert "(best)" not in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "run")) == [".lock"]


def test_check_resume_refuses_changed_settings():
    ckpt = training_ckpt(classifier(), epoch=2, epochs=4, lr=0.1, lr_schedule="none")
    same = argparse.Namespace(**ckpt["args"])
    runs.check_resume(same, ckpt, "last.pt")
    runs.check_resume(argparse.Namespace(**{**ckpt["args"], "device": "cuda", "workers": 8, "epochs": 9}), ckpt,
                      "last.pt")  # where and how fast, and more epochs without a schedule
    with pytest.raises(cli.UserError, match=r"--lr 0\.5 \(the run has 0\.1\)"):
        runs.check_resume(argparse.Namespace(**{**ckpt["args"], "lr": 0.5}), ckpt, "last.pt")
    with pytest.raises(cli.UserError, match="already finished epoch 2"):
        runs.check_resume(argparse.Namespace(**{**ckpt["args"], "epochs": 1}), ckpt, "last.pt")
    cosine = training_ckpt(classifier(), epoch=2, epochs=4, lr_schedule="cosine")
    with pytest.raises(cli.UserError, match="--lr-schedule cosine was planned for 4 epochs"):
        runs.check_resume(argparse.Namespace(**{**cosine["args"], "epochs": 6}), cosine, "last.pt")


# --------------------------------------------------------------------------- cli


@pytest.mark.parametrize("parse, good, bad", [
    (cli.positive_int, {"1": 1, "12": 12}, ["0", "-3", "1.5", "x", ""]),
    (cli.nonneg_int, {"0": 0, "7": 7}, ["-1", "nan"]),
    (cli.positive_float, {"1e-3": 1e-3, "2": 2.0}, ["0", "-1", "nan", "inf", "1e9", "x"]),
    (cli.nonneg_float, {"0": 0.0, "5e-4": 5e-4}, ["-1e-9", "nan", "1e7"]),
    (cli.fraction, {"0": 0.0, "1": 1.0, "0.9": 0.9}, ["1.01", "-0.1", "nan"]),
    (cli.open_fraction, {"0.1": 0.1}, ["0.995", "1"]),
    (cli.width, {"1": 1, "16": 16, "64": 64}, ["0", "3", "128", "-2", "x"]),
    (cli.int_list, {"1,20,40": [1, 20, 40], "": []}, ["0", "1,x", "-1"]),
])
def test_argument_types(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
            parse(text)


def test_bad_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.training_parser("x").parse_args(["--lr", "nan"])
    assert e.value.code == 2 and "expected a number > 0, got 'nan'" in capsys.readouterr().err


class FailingItem(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, k):
        raise DataError("x.jpg: not a readable image")


def exit_code_and_stderr(capsys, error, expected=(DataError,)):
    def main(argv):
        if isinstance(error, BaseException):
            raise error
        return error()

    code = cli.run(main, expected=expected)
    return code, capsys.readouterr().err


def test_run_exit_convention(capsys):
    assert exit_code_and_stderr(capsys, lambda: None) == (0, "")
    assert exit_code_and_stderr(capsys, cli.UserError("--epochs 3: too few")) == (1, "error: --epochs 3: too few\n")
    code, err = exit_code_and_stderr(capsys, KeyboardInterrupt())
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    code, err = exit_code_and_stderr(capsys, cli.Interrupted("runs/x/last.pt holds epoch 3"))
    assert code == 130 and "runs/x/last.pt holds epoch 3" in err
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/last.pt")
    assert exit_code_and_stderr(capsys, full) == (1, "error: runs/x/last.pt: no space left on the device\n")
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\ndatasets.common.DataError: x.jpg: not a readable image")
    assert exit_code_and_stderr(capsys, wrapped) == (1, "error: x.jpg: not a readable image\n")
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        exit_code_and_stderr(capsys, RuntimeError("bug"))


def test_run_reports_a_real_dataloader_worker_error_in_one_line(capsys):
    def load():
        next(iter(DataLoader(FailingItem(), num_workers=1)))

    assert exit_code_and_stderr(capsys, load) == (1, "error: x.jpg: not a readable image\n")


RECIPES = {"small": {"epochs": 3, "lr": 0.1}, "big": {"epochs": 50, "lr": 0.01}}


def recipe_parser():
    p = cli.RunParser(parents=[cli.training_parser("x")], recipes=RECIPES, formatter_class=cli.HelpFormatter)
    p.add_argument("--recipe", default="small", choices=list(RECIPES))
    return p


def test_run_parser_recipes_flags_and_resumed_defaults(capsys):
    args = recipe_parser().parse_args([])
    assert (args.recipe, args.epochs, args.lr) == ("small", 3, 0.1)
    args = recipe_parser().parse_args(["--recipe", "big"])
    assert (args.recipe, args.epochs, args.lr) == ("big", 50, 0.01)
    args = recipe_parser().parse_args(["--recipe", "big", "--lr", "0.5"])
    assert (args.epochs, args.lr) == (50, 0.5)
    parser = recipe_parser()
    parser.resumed = {"recipe": "big", "epochs": 7, "lr": 0.2}
    args = parser.parse_args(["--recipe", "small"])
    assert (args.recipe, args.epochs, args.lr) == ("small", 7, 0.2)  # the run's settings, not the recipe's
    assert parser.parse_args(["--epochs", "9"]).epochs == 9
    with pytest.raises(SystemExit):
        recipe_parser().parse_args(["--recipe", "big", "--help"])
    assert "total epochs (default: 50)" in " ".join(capsys.readouterr().out.split())


def test_parse_args_resumes_with_the_runs_settings_and_refuses_a_changed_flag(tmp_path):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    path = str(tmp_path / "last.pt")
    checkpoint.save(ckpt, path)
    (tmp_path / "best.pt").write_text("x")
    (tmp_path / "log.csv").write_text("epoch\n1\n")
    args, loaded = runs.parse_args(recipe_parser(), ["--resume", path, "--workers", "3"], "p1")
    assert (args.epochs, args.lr, args.workers) == (3, 0.1, 3) and loaded["epoch"] == ckpt["epoch"]
    assert args.output_dir == str(tmp_path)  # a resumed run continues in its own folder
    assert runs.parse_args(recipe_parser(), ["--lr", "0.3"], "p1")[1] is None  # no --resume: a new run
    with pytest.raises(cli.UserError, match="--lr 0.3"):
        runs.parse_args(recipe_parser(), ["--resume", path, "--lr", "0.3"], "p1")


def test_resume_continues_only_in_its_own_folder_with_its_best_pt(tmp_path, monkeypatch):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(ckpt, str(run / "last.pt"))
    (run / "best.pt").write_text("x")
    (run / "log.csv").write_text("epoch\n1\n")
    with pytest.raises(cli.UserError, match="--output-dir .*other: a resumed run continues in its own folder"):
        runs.parse_args(recipe_parser(), ["--resume", str(run / "last.pt"), "--output-dir", str(tmp_path / "other")],
                        "p1")
    assert runs.parse_args(recipe_parser(), ["--resume", str(run / "last.pt"), "--output-dir", str(run)], "p1")
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    shutil.copy(run / "last.pt", copied / "last.pt")
    with pytest.raises(cli.UserError, match="lacks the run's best.pt and log.csv"):
        runs.parse_args(recipe_parser(), ["--resume", str(copied / "last.pt")], "p1")
    monkeypatch.chdir(run)  # cd runs/x && python ../../p1_train.py --resume last.pt
    args, _ = runs.parse_args(recipe_parser(), ["--resume", "last.pt"], "p1")
    assert args.output_dir == "."


def test_args_json_records_each_command_device_and_versions_and_none_become_flags(tmp_path, monkeypatch):
    args = argparse.Namespace(output_dir=str(tmp_path), resume=None, lr=0.1)
    monkeypatch.setattr(sys, "argv", ["../p1_train.py", "--lr", "0.1", "--output-dir", "my run"])
    runs.write_args(args, "p1_train.py", torch.device("cpu"))
    first = json.loads((tmp_path / "args.json").read_text())
    assert first["lr"] == 0.1 and first["device_used"] == "cpu" and first["torch_version"] == torch.__version__
    assert first["python_version"] == platform.python_version()
    assert first["commands"] == [{"command": "../p1_train.py --lr 0.1 --output-dir 'my run'", "script": "p1_train.py",
                                  "started": first["started"], "device_used": "cpu", "world_size": 1,
                                  "torch_version": torch.__version__, "python_version": platform.python_version()}]
    # A resumed run keeps the command that started it and adds its own; the first start stays.
    monkeypatch.setattr(sys, "argv", ["p1_train.py", "--resume", "last.pt"])
    runs.write_args(argparse.Namespace(**{**vars(args), "resume": "last.pt"}), "p1_train.py", "cpu")
    resumed = json.loads((tmp_path / "args.json").read_text())
    assert [c["command"] for c in resumed["commands"]] == [first["commands"][0]["command"],
                                                           "p1_train.py --resume last.pt"]
    assert resumed["started"] == first["started"]
    # A new run in the folder (no --resume) starts its own list.
    runs.write_args(args, "p1_train.py", "cpu")
    assert len(json.loads((tmp_path / "args.json").read_text())["commands"]) == 1
    # What args.json records besides the flags is never read back as a flag on --resume.
    assert set(runs.RUN_RECORD) <= runs.NOT_RESTORED


# --------------------------------------------------------------------------- datasets.stats


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), rng.integers(0, 120, (2, 8, 8, 3), dtype=np.uint8)]
    mean, std = stats.channel_stats(chunks)
    pixels = np.concatenate([c.reshape(-1, 3) for c in chunks]).astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-6)


def write_tiles(folder, masks, seed=0):
    """``<id>_sat.jpg`` / ``<id>_mask.png`` pairs of random images with the given class maps."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i, mask in enumerate(masks):
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:04d}_sat.jpg")
        Image.fromarray(class_to_rgb(mask)).save(folder / f"{i:04d}_mask.png")


def test_split_statistics_are_exact_and_cached(tmp_path, monkeypatch):
    masks = [np.zeros((8, 8), int), np.zeros((8, 8), int)]
    masks[0][:2] = 3  # 16 forest pixels in tile 0; urban (0) in both; class 4 nowhere
    masks[1][:, :1] = 6
    write_tiles(tmp_path / "train", masks)
    tiles = P2Tiles(str(tmp_path / "train"))
    computed = []
    real = stats._compute
    monkeypatch.setattr(stats, "_compute", lambda *a: computed.append(1) or real(*a))

    first = stats.split_statistics(tiles, str(tmp_path / "cache"), progress=False)
    images = np.stack([tiles.load(k)[0] for k in range(len(tiles))]).reshape(-1, 3) / 255
    np.testing.assert_allclose(first["mean"], images.mean(0), atol=1e-6)
    np.testing.assert_allclose(first["std"], images.std(0), atol=1e-6)
    assert first["class_pixels"] == [48 + 56, 0, 0, 16, 0, 0, 8]
    assert first["class_present"] == [128, 0, 0, 64, 0, 0, 64]
    assert stats.split_statistics(tiles, str(tmp_path / "cache"), progress=False) == first
    assert len(computed) == 1  # the second call read the cache
    later = time.time_ns() + 10 ** 9
    os.utime(tmp_path / "train" / "0001_mask.png", ns=(later, later))
    assert stats.split_statistics(P2Tiles(str(tmp_path / "train")), str(tmp_path / "cache"), progress=False) == first
    assert len(computed) == 2  # a touched file recomputes


def test_median_frequency_weights_by_hand():
    # f = pixels / pixels of the tiles where the class appears = [0.1, 0.5, -, 0.2]; median 0.2
    assert stats.median_frequency_weights([10, 20, 0, 40], [100, 40, 0, 200]) == [2.0, 0.4, 0.0, 1.0]
    assert stats.median_frequency_weights([0, 0], [0, 0]) == [1.0, 1.0]


# --------------------------------------------------------------------------- losses


def logits_and_target():
    torch.manual_seed(0)
    return torch.randn(2, 7, 5, 6), torch.randint(0, 7, (2, 5, 6))


def test_focal_gamma0_is_cross_entropy():
    logits, target = logits_and_target()
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))


def test_focal_skips_ignored_pixels_and_down_weights_easy_ones():
    logits, target = logits_and_target()
    masked = target.clone()
    masked[:, :2] = IGNORE_INDEX
    log_pt = F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    per_pixel = -(1 - log_pt.exp()) ** 2 * log_pt
    focal = FocalLoss(gamma=2, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(focal(logits, masked), per_pixel[masked != IGNORE_INDEX].mean())
    assert focal(logits, target) < F.cross_entropy(logits, target)
    assert focal(logits, torch.full_like(target, IGNORE_INDEX)) == 0  # all ignored: 0, not NaN


def test_focal_class_weights_match_weighted_cross_entropy():
    logits, target = logits_and_target()
    target[0, 0] = IGNORE_INDEX
    weight = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weight), ignore_index=IGNORE_INDEX)
    focal = build_criterion("focal", weight, gamma=0, ignore_index=IGNORE_INDEX)
    assert isinstance(focal, FocalLoss)
    torch.testing.assert_close(focal(logits, target), expected)
    ce = build_criterion("ce", weight, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(ce(logits, target), expected)
    smooth = build_criterion("ce", label_smoothing=0.1)
    torch.testing.assert_close(smooth(logits, target.clamp(max=6)),
                               F.cross_entropy(logits, target.clamp(max=6), label_smoothing=0.1))


# --------------------------------------------------------------------------- presets


def test_to_float_normalises():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = to_float(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert y.dtype == torch.float32 and torch.allclose(y, torch.ones_like(y))
    z = to_float(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), (0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    torch.testing.assert_close(z.flatten(), torch.tensor([-1.0, -0.5, 0.0]))


def test_augment_identity_when_off():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    assert augment(images) is images
    assert torch.equal(augment(images, hflip=False, crop_padding=0, color_jitter=0.0), images)


def test_augment_shapes_dtypes_and_content():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, hflip=True, crop_padding=4, color_jitter=0.4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = augment(images, hflip=True)
    for a, b in zip(images, flipped):
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
    assert any(not torch.equal(a, b) for a, b in zip(images, flipped))
    padded = F.pad(images, (2, 2, 2, 2))
    cropped = augment(images, crop_padding=2)
    for p, c in zip(padded, cropped):  # every crop is one 32x32 window of the padded image
        assert any(torch.equal(p[:, y:y + 32, x:x + 32], c) for y in range(5) for x in range(5))
    assert not torch.equal(augment(images, color_jitter=0.5), images)


def test_augment_follows_the_global_rng():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(5)
    a = augment(images, hflip=True, crop_padding=4, color_jitter=0.3)
    torch.manual_seed(5)
    assert torch.equal(a, augment(images, hflip=True, crop_padding=4, color_jitter=0.3))


def test_prepare_upsamples_and_normalises():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    prepare = make_prepare(CPU, {"mean": [0.5] * 3, "std": [0.25] * 3}, 48, False,
                           {"hflip": True, "crop_padding": 0, "color_jitter": 0.0})
    x, y = prepare((images, torch.arange(4, dtype=torch.uint8)))
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0)) and y.dtype == torch.int64 and torch.equal(y, torch.arange(4))
    masks = torch.randint(0, 7, (2, 16, 16), dtype=torch.uint8)
    x, y = make_prepare(CPU, PREPROCESS)((torch.zeros(2, 3, 16, 16, dtype=torch.uint8), masks))
    assert x.shape == (2, 3, 16, 16) and torch.equal(y, masks.long())  # no img_size: kept as is


def test_model_inputs_resize_equals_normalise_after_resize():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(PREPROCESS["mean"]), torch.tensor(PREPROCESS["std"])
    x = model_inputs(images, mean, std, 64, channels_last=True)
    assert x.shape == (2, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(images.float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (resized - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- optim


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
