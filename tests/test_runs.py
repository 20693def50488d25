"""Run folders (core/runs.py): never clobbering a run, one writer at a time, stop signals, resume."""
import argparse
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from core import checkpoint, cli, runs, runtime
from tests.conftest import ROOT
from tests.factories import (
    classifier,
    inference_ckpt,
    training_ckpt,
)


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


EPOCH_4_LINE = "epoch 4: sgd lr 0.1 train_loss 1.0000 val_loss 0.7000 val_miou 0.5000 (best)"


def end_epoch(run, model, optimizer):
    """Epoch 4 of a p2_train.py run: a new best, whose line is ``EPOCH_4_LINE``."""
    run.begin("train")
    run.begin("val")
    run.begin("other")
    run.end_epoch(inference_ckpt(model), {"lr": 0.1, "train_loss": 1.0, "val_loss": 0.7, "val_miou": 0.5},
                  optimizer=optimizer, lr_scheduler=None, scaler=None, phase="sgd", epoch=4, best_score=0.5,
                  is_best=True, train_images=2)


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
        end_epoch(run, model, optimizer)
        raise AssertionError("the run went on")

    e = stop_run(tmp_path, body)
    assert isinstance(e, cli.Interrupted) and e.exit_code == 143 and "holds epoch 4" in str(e)
    assert EPOCH_4_LINE in capsys.readouterr().out  # the epoch's files were finished first
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
        end_epoch(run, model, optimizer)
        run.finish()

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
