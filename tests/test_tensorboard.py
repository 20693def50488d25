"""The epoch record's sinks (core/sinks.py) and the TensorBoard sink (core/tensorboard.py): the event
file read back equals log.csv, also after a resume; --overwrite removes only the event files; the
missing package is one line before any data is read. A P2 run's masks: tests/test_p2.py."""
import argparse
import os
import re
import sys

import numpy as np
import pytest
import torch

from core import cli, runs, sinks
from core.fileio import read_csv
from tests.conftest import HAS_TENSORBOARD, ROOT, run_script
from tests.factories import classifier, inference_ckpt, training_ckpt

# Only the missing-package test runs without it; `make test` installs it (requirements-optional.txt).
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="the optional tensorboard package is not installed")


def events(folder):
    """``({tag: [(step, value)]}, {tag: [(step, width, height)]})`` of the run ``folder``'s event files, as
    TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(folder, "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return ({t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]},
            {t: [(e.step, e.width, e.height) for e in acc.Images(t)] for t in acc.Tags()["images"]})


def assert_scalars_equal_log(folder):
    """Every numeric column of log.csv is a TensorBoard curve with one point per epoch, of the same value."""
    rows = read_csv(os.path.join(folder, "log.csv"))
    scalars, _ = events(folder)
    columns = [c for c in rows[0] if c not in ("epoch", "phase")]
    assert sorted(scalars) == sorted(columns)
    for c in columns:
        logged = [(int(r["epoch"]), float(r[c])) for r in rows]
        assert [s for s, _ in scalars[c]] == [s for s, _ in logged], c  # each epoch once, in order
        assert [v for _, v in scalars[c]] == pytest.approx([v for _, v in logged], rel=1e-6, nan_ok=True,
                                                           abs=0.0051 if c.endswith("_seconds") else 1e-6), c


def end_epoch(run, epoch, miou, images=None):
    model = classifier()
    run.begin("train")
    run.begin("val")
    run.begin("other")
    if images:
        run.add_images(images)
    run.end_epoch(inference_ckpt(model), {"lr": 1e-3 / epoch, "train_loss": 2.0 / epoch, "val_loss": 1.5,
                                          "val_miou": miou, "iou_water": float("nan")},
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lr_scheduler=None, scaler=None, phase="adam",
                  epoch=epoch, best_score=miou, is_best=True, train_images=4)


@needs_tensorboard
def test_event_file_equals_log_csv_and_a_resume_shows_each_epoch_once(tmp_path, capsys):
    folder = tmp_path / "run"
    args = argparse.Namespace(output_dir=str(folder), resume="", overwrite=False, data_path="", tensorboard=True)
    mask = np.zeros((8, 8, 3), np.uint8)
    with runs.Run(args, "p2_train.py") as run:
        for epoch in (1, 2):
            end_epoch(run, epoch, 0.25 * epoch, {"snapshots/0010": mask})
        run.finish()
    assert_scalars_equal_log(folder)
    assert events(folder)[1] == {"snapshots/0010": [(1, 8, 8), (2, 8, 8)]}
    line = "epoch 2: adam lr 0.0005 train_loss 1.0000 val_loss 1.5000 val_miou 0.5000 (best) ["
    assert line in capsys.readouterr().out

    # Resumed after epoch 1 (e.g. from a last.pt copied back): epoch 2 again, with other numbers.
    resumed = argparse.Namespace(**{**vars(args), "resume": str(folder / "last.pt")})
    with runs.Run(resumed, "p2_train.py", saved_epoch=1) as run:
        end_epoch(run, 2, 0.75)
        end_epoch(run, 3, 0.8)
        run.finish()
    assert [r["val_miou"] for r in read_csv(folder / "log.csv")] == ["0.250000", "0.750000", "0.800000"]
    assert_scalars_equal_log(folder)  # the first run's epoch 2 is gone from the curves too
    assert events(folder)[1] == {"snapshots/0010": [(1, 8, 8)]}


def test_a_run_that_stops_before_its_first_epoch_writes_no_event_file(tmp_path):
    args = argparse.Namespace(output_dir=str(tmp_path / "run"), resume="", overwrite=False, data_path="",
                              tensorboard=True)
    with runs.Run(args, "p1_train.py"):
        pass
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_overwrite_removes_the_event_files_and_keeps_a_users_file(tmp_path):
    for keep in (True, False):
        folder = tmp_path / f"run{keep}"
        (folder / "tensorboard").mkdir(parents=True)
        (folder / "last.pt").write_text("x")
        (folder / "tensorboard" / "events.out.tfevents.1796197993.vm.30108.0").write_text("x")
        (folder / "tensorboard" / "events.out.tfevents.1796198000.vm.30200.0").write_text("x")
        if keep:
            (folder / "tensorboard" / "notes.txt").write_text("mine")
        runs.prepare(argparse.Namespace(output_dir=str(folder), resume="", overwrite=True), "p1_train.py").close()
        assert sorted(os.listdir(folder)) == ([".lock", "tensorboard"] if keep else [".lock"])
        if keep:
            assert os.listdir(folder / "tensorboard") == ["notes.txt"]


@needs_tensorboard
def test_a_file_where_the_event_folder_goes_is_refused_before_the_run_starts(tmp_path):
    (tmp_path / "tensorboard").write_text("mine")
    with pytest.raises(cli.UserError, match="tensorboard: is not a folder"):
        sinks.check(argparse.Namespace(tensorboard=True, output_dir=str(tmp_path)))
    assert (tmp_path / "tensorboard").read_text() == "mine"


def test_tensorboard_may_be_turned_on_when_resuming():
    ckpt = training_ckpt(classifier(), tensorboard=False)
    runs.check_resume(argparse.Namespace(**{**ckpt["args"], "tensorboard": True}), ckpt, "last.pt")


def test_missing_package_is_one_line_before_any_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` does when it is not installed
    message = "--tensorboard needs the tensorboard package (pip install tensorboard)"
    with pytest.raises(cli.UserError, match=f"^{re.escape(message)}$"):
        sinks.check(argparse.Namespace(tensorboard=True, output_dir=str(tmp_path)))
    sinks.check(argparse.Namespace(tensorboard=False, output_dir=str(tmp_path)))

    # Through the script: the message, exit 1, and neither the data nor the run folder touched.
    code = ("import runpy, sys; sys.modules['tensorboard'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    r = run_script(sys.executable, "-c", code, os.path.join(ROOT, "p1_train.py"), "--data-path",
                   str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "run"), "--tensorboard", "--width", "16",
                   "--img-size", "32", "--workers", "0", cwd=ROOT)
    assert (r.returncode, r.stderr) == (1, f"error: {message}\n")
    assert not (tmp_path / "run").exists()
