"""Problem 2 end to end: p2_train.py (recipes, learning, resume across the Adam -> SGD switch,
class weights, figures, the run-folder rules, errors) and its checkpoint graded by hw2_p2.sh and
mean_iou_evaluate.py. Scripts run as subprocesses, except ``--help`` and the argument errors, which
run ``main(argv)`` in this process (``run_main``: no start-up to pay for a parse); every run is a
width-16 network without ImageNet weights on the session's synthetic tiles (6 train, 6 validation,
512x512), on the CPU.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core import checkpoint
from core.fileio import read_csv
from core.inputs import fixed_preprocess
from core.metrics import ConfusionMatrix
from datasets import NUM_CLASSES, P2Tiles, read_mask
from datasets.stats import channel_stats, median_frequency_weights
from tests.conftest import ROOT, default_sigint, run_main, run_script, run_scripts
from tests.test_tensorboard import assert_scalars_equal_log, events, needs_tensorboard


def train_argv(data, out, *extra, cache=None):
    return ["--data-path", str(data / "p2_data"), "--output-dir", str(out), "--cache-dir",
            str(cache or out.parent / "cache"), "--width", "16", "--pretrained", "none", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", *extra]


def train_cmd(data, out, *extra, cache=None):
    return [sys.executable, os.path.join(ROOT, "p2_train.py"), *train_argv(data, out, *extra, cache=cache)]


def train(data, out, *extra, cache=None, check=True):
    """Run p2_train.py; returns the CompletedProcess (stdout + stderr as text)."""
    r = subprocess.run(train_cmd(data, out, *extra, cache=cache), capture_output=True, text=True, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def train_in_process(data, out, capsys, *extra):
    """``train`` as ``main(argv)`` in this process, for a run refused before training: ``(code, stdout, stderr)``."""
    return run_main("p2_train", train_argv(data, out, *extra), capsys)


def help_defaults(capsys, *argv):
    """``{flag: default}`` as ``p2_train.py ... --help`` prints them (in this process, 80 columns as into a pipe)."""
    code, text, _ = run_main("p2_train", [*argv, "--help"], capsys)
    assert code == 0
    text = re.sub(r"\s+", " ", text)
    return dict(re.findall(r"(--[a-z-]+)(?: [A-Z_]+| \{[^}]*\})? .*?\(default: ([^)]*)\)", text))


def majority_baseline_miou(data):
    """mIoU of predicting the training set's most frequent class on every validation pixel."""
    train_set = P2Tiles(str(data / "p2_data" / "train"), progress=False)
    counts = sum(np.bincount(np.asarray(train_set.load(k)[1]).ravel(), minlength=NUM_CLASSES)
                 for k in range(len(train_set)))
    cm = ConfusionMatrix(NUM_CLASSES)
    val = P2Tiles(str(data / "p2_data" / "validation"), progress=False)
    for k in range(len(val)):
        gt = torch.from_numpy(np.asarray(val.load(k)[1]))
        cm.update(gt, torch.full_like(gt, int(counts.argmax())))
    return cm.mean_iou()[0]


# ---------------------------------------------------------------- recipes and arguments


def test_recipe_help_shows_the_recipes_values(capsys, monkeypatch):
    """Every value of every recipe is checked by parsing (tests/test_recipes.py); here ``--help``."""
    monkeypatch.setenv("COLUMNS", "80")
    base = help_defaults(capsys)
    assert (base["--model"], base["--loss"], base["--epochs"], base["--switch-sgd-at"], base["--snapshot-epochs"],
            base["--normalize"], base["--head-init"], base["--lr"]) == \
        ("fcn32s", "ce", "100", "0", "1,20,40", "raw", "pytorch", "0.001")
    improved = help_defaults(capsys, "--recipe", "improved")
    assert (improved["--model"], improved["--loss"], improved["--switch-sgd-at"], improved["--normalize"]) == \
        ("fcn8s", "focal", "71", "imagenet")
    best = help_defaults(capsys, "--recipe=best")
    assert (best["--augment"], best["--class-weights"], best["--lr-schedule"], best["--head-init"]) == \
        ("d4", "auto", "cosine", "fcn")


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["--lr", "-0.1"], "--lr: expected a number > 0"),
    (["--sgd-lr", "-1"], "--sgd-lr: expected a number > 0"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    (["--workers", "-1"], "--workers: expected an integer >= 0"),
    (["--width", "0"], "--width: expected a positive divisor of 64"),
    (["--width", "128"], "--width: expected a positive divisor of 64"),
    (["--class-weights", "1,2,3"], "7 comma-separated"),
    (["--batch-size", "1"], "--batch-size 1: BatchNorm"),
    (["--epochs", "10"], "--snapshot-epochs 1,20,40: epoch(s) 20,40 are after --epochs 10"),
    (["--recipe", "improved", "--img-size", "256"], "fcn8s trains on 512x512 inputs only"),
    (["--width", "16"], "--width 16 pass --pretrained none"),
    (["--class-weights", "nan,1,1,1,1,1,1"], "7 comma-separated finite"),
    (["--class-weights", "1,inf,1,1,1,1,1"], "7 comma-separated finite"),
    (["--img-size", "1"], "--img-size 1: crops smaller than 32x32"),
    (["--workers", "100000"], "--workers 100000: more loader processes than this machine's"),
    (["--recipe", "improved", "--focal-gamma", "1e6"], "--focal-gamma 1e+06: above 10 the focal weight"),
])
def test_argument_errors_are_one_line_before_any_data_is_read(tmp_path, flags, message, capsys):
    # In this process (run_main: an exception a process would print as a traceback fails the test).
    code, _, err = run_main("p2_train", ["--data-path", str(tmp_path / "nowhere"), "--output-dir",
                                         str(tmp_path / "run"), *flags], capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_pretrained_auto_without_cache_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code, _, err = run_main("p2_train", ["--data-path", str(tmp_path), "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 1 and re.search(r"--pretrained PATH.*--pretrained none", err)


# ---------------------------------------------------------------- training


def test_training_learns_and_best_pt_holds_only_inference(fcn8s_run, synthetic_data):
    rows = read_csv(fcn8s_run / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = max(float(r["val_miou"]) for r in rows)
    assert best > majority_baseline_miou(synthetic_data) + 0.05
    assert {"iou_urban", "iou_barren", "val_loss", "train_seconds", "val_seconds", "other_seconds"} <= set(rows[0])
    assert "iou_unknown" not in rows[0]
    ckpt = checkpoint.load(str(fcn8s_run / "best.pt"), "p2")
    assert ckpt["kind"] == "inference" and "optimizer" not in ckpt
    assert ckpt["model_name"] == "fcn8s" and ckpt["model_kwargs"] == {"num_classes": 7, "width": 16}
    assert ckpt["meta"]["val_miou"] == pytest.approx(best, abs=1e-6)
    train_set = P2Tiles(str(synthetic_data / "p2_data" / "train"), progress=False)
    mean, std = channel_stats(np.asarray(train_set.load(k)[0]) for k in range(len(train_set)))
    assert ckpt["preprocess"] == {"mean": mean, "std": std}
    weights = sum(v.numel() * v.element_size() for v in ckpt["model"].values())
    assert os.path.getsize(fcn8s_run / "best.pt") < 1.1 * weights < os.path.getsize(fcn8s_run / "last.pt")
    assert checkpoint.load(str(fcn8s_run / "last.pt"), "p2", training=True)["epoch"] == 2


def test_snapshots_and_figures(fcn8s_run):
    snaps = sorted(os.listdir(fcn8s_run / "snapshots"))
    assert snaps == [f"{i}_epoch{e}.png" for i in ("0010", "0097", "0107") for e in (1, 2)]
    mask = read_mask(str(fcn8s_run / "snapshots" / "0010_epoch2.png"))
    assert mask.shape == (512, 512) and mask.max() < NUM_CLASSES
    for name in ("epoch_masks.png", "epoch_masks_report.png", "curves.png", "per_class_iou.png"):
        assert (fcn8s_run / name).stat().st_size > 1000


def test_resume_and_switch_to_sgd_match_an_uninterrupted_run(synthetic_data, tmp_path):
    flags = ("--model", "fcn32s", "--img-size", "128", "--lr", "1e-3", "--switch-sgd-at", "2", "--sgd-lr", "0.01",
             "--normalize", "dataset", "--augment", "d4", "--snapshot-ids", "0010,9999", "--snapshot-epochs", "2",
             "--epochs", "2")
    # The uninterrupted run and the first epoch of the cut one side by side (one thread each, two cores).
    for r in run_scripts(train_cmd(synthetic_data, tmp_path / "full", *flags),
                         train_cmd(synthetic_data, tmp_path / "cut", *flags, "--epochs", "1", "--snapshot-epochs", "1"),
                         cwd=ROOT):
        assert r.returncode == 0, r.stderr[-3000:]
    # A resumed run takes its settings from the checkpoint; --epochs may grow (no schedule here).
    r = run_script(*train_cmd(synthetic_data, tmp_path / "cut", "--resume", str(tmp_path / "cut" / "last.pt"),
                              "--epochs", "2", "--snapshot-epochs", "2"), cwd=ROOT)  # one thread, as the others
    assert r.returncode == 0, r.stderr[-3000:]
    full, cut = read_csv(tmp_path / "full" / "log.csv"), read_csv(tmp_path / "cut" / "log.csv")
    assert [r["epoch"] for r in full] == [r["epoch"] for r in cut] == ["1", "2"]
    assert [r["phase"] for r in full] == [r["phase"] for r in cut] == ["adam", "sgd"]
    assert [r["lr"] for r in cut] == ["0.001", "0.01"]
    for a, b in zip(full, cut):  # the resumed run continues exactly (weights, RNG states)
        assert a["train_loss"] == b["train_loss"] and a["val_miou"] == b["val_miou"]
    ckpt = checkpoint.load(str(tmp_path / "cut" / "last.pt"), "p2", training=True)
    assert ckpt["epoch"] == 2 and ckpt["phase"] == "sgd" and "momentum" in ckpt["optimizer"]["param_groups"][0]
    assert sorted(os.listdir(tmp_path / "cut" / "snapshots")) == ["0010_epoch1.png", "0010_epoch2.png"]


def test_resume_refuses_a_changed_setting_and_records_nothing(synthetic_data, fcn8s_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fcn8s_run, run)
    before = (run / "args.json").read_text()
    code, _, err = train_in_process(synthetic_data, run, capsys, "--resume", str(run / "last.pt"), "--epochs", "3",
                                    "--lr", "0.1")
    assert code == 1 and "--lr 0.1 (the run has 0.001)" in err
    assert (run / "args.json").read_text() == before


@needs_tensorboard
def test_tensorboard_holds_the_log_and_the_snapshot_masks(fcn8s_run):
    assert_scalars_equal_log(fcn8s_run)
    _, images = events(fcn8s_run)
    assert images == {f"snapshots/{i}": [(1, 512, 512), (2, 512, 512)] for i in ("0010", "0097", "0107")}


def test_class_weights_auto_are_median_frequency_and_stored(synthetic_data, tmp_path):
    train(synthetic_data, tmp_path / "run", "--recipe", "best", "--epochs", "1", "--switch-sgd-at", "0",
          "--snapshot-epochs", "1", "--lr", "1e-3")
    ckpt = checkpoint.load(str(tmp_path / "run" / "best.pt"), "p2")
    train_set = P2Tiles(str(synthetic_data / "p2_data" / "train"), progress=False)
    pixels, present = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
    for k in range(len(train_set)):
        counts = np.bincount(np.asarray(train_set.load(k)[1]).ravel(), minlength=NUM_CLASSES)
        pixels += counts
        present += np.where(counts > 0, counts.sum(), 0)
    freq = pixels / present
    assert ckpt["meta"]["class_weights"] == pytest.approx(np.median(freq) / freq, rel=1e-5)
    assert ckpt["meta"]["class_weights"] == median_frequency_weights(pixels.astype(int), present.astype(int))


def test_same_command_twice_refuses_then_overwrite_starts_fresh(synthetic_data, fcn8s_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fcn8s_run, run)
    (run / "notes.txt").write_text("mine")
    flags = ("--recipe", "improved", "--epochs", "1", "--switch-sgd-at", "0", "--snapshot-epochs", "1")
    code, _, err = train_in_process(synthetic_data, run, capsys, *flags)
    assert code == 1 and "--resume" in err and "--overwrite" in err
    assert len(read_csv(run / "log.csv")) == 2  # untouched
    train(synthetic_data, run, *flags, "--overwrite")
    assert len(read_csv(run / "log.csv")) == 1 and (run / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(run / "snapshots")) == [f"{i}_epoch1.png" for i in ("0010", "0097", "0107")]


def test_non_finite_loss_at_epoch_1_says_nothing_was_saved(synthetic_data, tmp_path):
    r = train(synthetic_data, tmp_path / "run", "--recipe", "baseline-ours", "--optimizer", "sgd", "--lr", "1e6",
              "--img-size", "64",
              "--epochs", "1", "--snapshot-epochs", "1", "--print-freq", "1", check=False)
    assert r.returncode == 1 and "non-finite loss at epoch 1" in r.stderr
    assert "nothing was saved" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_data_error_exits_before_training(tmp_path, capsys):
    code, _, err = train_in_process(tmp_path, tmp_path / "run", capsys, "--epochs", "1", "--snapshot-epochs", "1")
    assert code == 1 and "no such folder" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_tiles_of_another_size_are_found_before_training(synthetic_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    from PIL import Image

    for suffix in ("_sat.jpg", "_mask.png"):
        path = data / "p2_data" / "validation" / f"0001{suffix}"
        Image.open(path).resize((256, 256), Image.NEAREST).save(path)
    code, out, err = train_in_process(data, tmp_path / "run", capsys, "--epochs", "1", "--snapshot-epochs", "1")
    assert code == 1 and "0001_sat.jpg: 256x256" in err and "epoch 1" not in out


# ---------------------------------------------------------------- inference and grading


def test_hw2_p2_sh_scored_by_mean_iou_evaluate_equals_the_logged_miou(fcn8s_run, synthetic_data, tmp_path, capsys):
    images = tmp_path / "in dir"
    images.mkdir()
    val = synthetic_data / "p2_data" / "validation"
    for name in os.listdir(val):
        if name.endswith("_sat.jpg"):
            shutil.copy(val / name, images / name)
    out = tmp_path / "out dir"
    env = {**os.environ, "P2_CKPT": str(fcn8s_run / "best.pt")}
    subprocess.run(["bash", os.path.join(ROOT, "hw2_p2.sh"), str(images), str(out)], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    expected = sorted(n.replace("_sat.jpg", "_mask.png") for n in os.listdir(images))
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == expected
    code, graded, _ = run_main("mean_iou_evaluate", ["-g", str(val), "-p", str(out)], capsys)  # in this process
    assert code == 0
    miou = float(graded.strip().splitlines()[-1].split(":")[1])
    best = max(float(r["val_miou"]) for r in read_csv(fcn8s_run / "log.csv"))
    assert miou == pytest.approx(best, abs=1e-4)


def test_raw_pixel_inputs_travel_with_the_checkpoint(tiny_runs):
    """The baseline (the author's FCN32s) feeds raw 0..255 pixels; grading rebuilds them from
    the checkpoint's preprocess, which gives the pixel values exactly. (The session's baseline
    run, which test_report.py reports on.)"""
    ckpt = checkpoint.load(str(tiny_runs / "p2_fcn32s" / "best.pt"), "p2")
    assert ckpt["preprocess"] == fixed_preprocess("raw") == {"mean": [0.0] * 3, "std": [1 / 255] * 3}
    assert ckpt["model_name"] == "fcn32s" and ckpt["meta"]["recipe"] == "baseline"
    assert ckpt["model_kwargs"] == {"num_classes": 7, "width": 16}  # the head init is no constructor setting to keep


def test_ctrl_c_during_training_says_what_was_saved_and_exits_130(synthetic_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "p2_train.py"), "--data-path", str(synthetic_data / "p2_data"),
           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--width", "16", "--pretrained", "none",
           "--batch-size", "2", "--workers", "1", "--img-size", "64", "--epochs", "50", "--snapshot-epochs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 240
    while not (out / "log.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted:" in err and "Traceback" not in err, err
    saved = checkpoint.load(str(out / "last.pt"), "p2", training=True)["epoch"]
    assert f"holds epoch {saved}" in err and f"--resume {out / 'last.pt'}" in err
    assert len(read_csv(out / "log.csv")) == saved
