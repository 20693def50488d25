"""Problem 1 end to end on a small synthetic set: training (accuracy far above chance, figures,
the checkpoint split, resume), ``hw2_p1.sh`` / ``p1_test.py`` (labelled and unlabelled names,
paths with spaces, another cwd, a missing checkpoint) and ``p1_tsne.py``, as subprocesses
(``--help`` and the argument errors: ``main(argv)`` in this process, ``run_main``).

The session's ``p1_run`` (conftest: ``--width 4 --img-size 32``, 6 epochs) is the run the tests
read. Each script runs on one thread: on a shared 2-core machine two threads per process are
several times slower for these small convolutions.
"""
import os
import shutil
import sys

import pytest

from core import checkpoint
from core.fileio import read_csv
from tests.conftest import P1_EPOCHS, ROOT, run_main, run_script


def train(data, out, *extra, check=True):
    r = run_script(sys.executable, os.path.join(ROOT, "p1_train.py"), "--data-path", str(data), "--output-dir",
                   str(out), *extra, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_help_shows_defaults_and_says_the_recipe_is_ours(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # in this process, as wide as into a pipe
    code, out, _ = run_main("p1_train", ["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for flag in ("--data-path", "--img-size", "--crop-padding", "--color-jitter", "--resume", "--amp", "--compile",
                 "--overwrite", "--print-freq"):
        assert flag in text
    assert "(default: 224)" in text and "this repo's choice" in text


# --------------------------------------------------------------------------- training


def test_training_beats_chance_and_writes_outputs(p1_run):
    rows = read_csv(p1_run / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, P1_EPOCHS + 1))
    assert {"val_acc", "val_loss", "train_seconds", "val_seconds", "other_seconds"} <= set(rows[0])
    best = checkpoint.load(str(p1_run / "best.pt"), "p1")
    score = best["meta"]["val_acc"]
    assert score == pytest.approx(max(float(r["val_acc"]) for r in rows), abs=1e-6)
    # 6x chance, 12 standard deviations above it on 300 images (conftest: 0.15-0.22 over seeds 0-3).
    assert score > 0.12, f"best val accuracy {score} is not far above chance (0.02)"
    assert best["kind"] == "inference" and len(best["preprocess"]["mean"]) == 3
    assert best["model_kwargs"] == {"num_classes": 50, "width": 4, "img_size": 32}
    per_class = read_csv(p1_run / "per_class_acc.csv")
    assert len(per_class) == 50 and sum(int(r["correct"]) for r in per_class) == round(score * 300)
    for name in ("curves.png", "confusion_matrix.png", "last.pt", "args.json"):
        assert (p1_run / name).stat().st_size > 0


def test_resume_continues_from_saved_epoch(p1_run, p1_data, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(p1_run, out)
    train(p1_data, out, "--resume", str(out / "last.pt"), "--epochs", str(P1_EPOCHS + 1), "--no-cache")
    assert [int(r["epoch"]) for r in read_csv(out / "log.csv")] == list(range(1, P1_EPOCHS + 2))
    assert checkpoint.load(str(out / "last.pt"), "p1", training=True)["epoch"] == P1_EPOCHS + 1


@pytest.mark.parametrize("flags, message", [
    (["--data-path", "nowhere", "--width", "16", "--img-size", "32"], "nowhere/train_50: no such folder"),
    (["--batch-size", "1"], "--batch-size 1"),
    (["--img-size", "16"], "--img-size 16: img_size=16 is too small"),
    (["--label-smoothing", "1"], "--label-smoothing: expected a number in [0, 0.99]"),
    (["--img-size", "4000", "--device", "cpu"], "--img-size 4000 --batch-size 128 --width 1: one training step needs"),
    (["--img-size", "100000"], "--img-size 100000 --batch-size 128 --width 1: one training step needs"),
    (["--batch-size", "100000"], "--img-size 224 --batch-size 100000 --width 1: one training step needs"),
    (["--crop-padding", "100000"], "--crop-padding 100000: a 32x32 crop of an image padded by 32 or more"),
])
def test_training_errors_are_one_line(tmp_path, flags, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in this process (run_main: a traceback a process would print fails the test)
    code, _, err = run_main("p1_train", ["--data-path", str(tmp_path / "nowhere"), "--output-dir",
                                         str(tmp_path / "run"), "--no-cache", *flags], capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err


# --------------------------------------------------------------------------- inference


def check_predictions(csv_path, names):
    rows = read_csv(csv_path)
    assert list(rows[0]) == ["image_id", "label"]
    assert [r["image_id"] for r in rows] == sorted(names)
    assert all(0 <= int(r["label"]) < 50 for r in rows)
    return [int(r["label"]) for r in rows]


def test_hw2_p1_sh_labelled_and_unlabelled(p1_run, p1_data, tmp_path, capsys, monkeypatch):
    base = tmp_path / "a folder with spaces"
    labelled, unlabelled = base / "val images", base / "test images"
    shutil.copytree(p1_data / "val_50", labelled)
    unlabelled.mkdir()
    names = sorted(os.listdir(labelled))
    for i, name in enumerate(names):  # unlabelled names keep the labelled sorted order
        shutil.copy(labelled / name, unlabelled / f"img {i:04d}.png")
    ckpt = base / "my ckpt.pt"
    shutil.copy(p1_run / "best.pt", ckpt)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"P1_CKPT": str(ckpt)}

    r = run_script("bash", os.path.join(ROOT, "hw2_p1.sh"), str(labelled), str(base / "out" / "pred 1.csv"),
                   cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    preds = check_predictions(base / "out" / "pred 1.csv", names)
    score = checkpoint.load(str(ckpt), "p1")["meta"]["val_acc"]
    assert f"accuracy: {score:.6f}" in r.stdout

    r = run_script("bash", os.path.join(ROOT, "hw2_p1.sh"), str(unlabelled), str(base / "pred 2.csv"), cwd=elsewhere,
                   env=env)
    assert r.returncode == 0, r.stderr
    assert "accuracy" not in r.stdout
    assert check_predictions(base / "pred 2.csv", os.listdir(unlabelled)) == preds

    monkeypatch.chdir(elsewhere)  # p1_test.py --score-csv in this process (run_main)
    code, out, _ = run_main("p1_test", ["--score-csv", str(base / "out" / "pred 1.csv")], capsys)
    assert code == 0 and f"accuracy: {score:.6f}" in out
    code, _, err = run_main("p1_test", ["--score-csv", str(base / "pred 2.csv")], capsys)
    assert code != 0 and "carries no label" in err


def test_last_pt_grades_like_best_pt(p1_run, p1_data, tmp_path):
    """The grading scripts accept the training checkpoint too (same weights format)."""
    env = {"P1_CKPT": str(p1_run / "last.pt")}
    r = run_script("bash", os.path.join(ROOT, "hw2_p1.sh"), str(p1_data / "val_50"), str(tmp_path / "p.csv"),
                   cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert len(read_csv(tmp_path / "p.csv")) == len(os.listdir(p1_data / "val_50"))


def test_missing_checkpoint_is_a_clear_error(p1_data, tmp_path):
    r = run_script("bash", os.path.join(ROOT, "hw2_p1.sh"), str(p1_data / "val_50"), str(tmp_path / "pred.csv"),
                   cwd=tmp_path, env={"P1_CKPT": str(tmp_path / "missing.pt")})
    assert r.returncode != 0
    assert "missing.pt: checkpoint not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pred.csv").exists()
    r = run_script("bash", os.path.join(ROOT, "hw2_p1.sh"), str(p1_data / "val_50"), cwd=tmp_path)
    assert r.returncode != 0 and "usage" in r.stderr


# --------------------------------------------------------------------------- t-SNE


def test_tsne_writes_figure_and_every_coordinate(p1_run, p1_data, tmp_path):
    r = run_script(sys.executable, os.path.join(ROOT, "p1_tsne.py"), "--checkpoint", str(p1_run / "best.pt"),
                   "--images", str(p1_data / "val_50"), "--max-images", "60", "--output-dir", str(tmp_path / "tsne"),
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "tsne" / "tsne.csv")
    assert list(rows[0]) == ["image_id", "label", "x", "y"] and len(rows) == 60
    assert all(int(r["label"]) == int(r["image_id"].split("_")[0]) for r in rows)
    assert (tmp_path / "tsne" / "tsne.png").stat().st_size > 0
