"""Problem 1 end to end on a small synthetic set: on-device augmentation, training (accuracy far
above chance, figures, resume), ``p1_test.py`` / ``hw2_p1.sh`` (labelled and unlabelled names,
paths with spaces, another cwd, a missing checkpoint) and ``p1_tsne.py``.

One module-scoped run trains ``--width 4 --img-size 32`` for 12 epochs (about 40 s on one CPU
thread); the other tests reuse its checkpoints. Torch is held to one thread: on a shared 2-core
machine two threads per process are several times slower for these small convolutions.
"""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine
import p1_test
import p1_train
import p1_tsne
from datasets.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 12


def train_args(data, out, epochs, *extra):
    """The tiny recipe: best val accuracy 0.28-0.41 over seeds 0-3 on this set (chance is 0.02)."""
    return p1_train.get_args_parser().parse_args(
        ["--data-path", str(data), "--output-dir", str(out), "--epochs", str(epochs), "--width", "4",
         "--img-size", "32", "--batch-size", "25", "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0",
         "--lr-schedule", "none", "--workers", "0", *extra])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def p1_data(tmp_path_factory):
    """20 train / 6 val images per class (the synthetic defaults), P2 part kept tiny."""
    out = tmp_path_factory.mktemp("p1") / "data"
    generate(str(out), seed=0, p1_train_per_class=20, p1_val_per_class=6, p2_train=0, p2_val=0, p2_size=32)
    return out / "p1_data"


@pytest.fixture(scope="module")
def trained(p1_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("p1") / "run"
    p1_train.main(train_args(p1_data, out, EPOCHS, "--cache-dir", str(tmp_path_factory.mktemp("cache"))))
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def run_script(*cmd, cwd, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------- augmentation


def test_augment_identity_when_off():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = p1_train.augment(images, hflip=False, crop_padding=0, color_jitter=0.0)
    assert out.dtype == torch.uint8 and torch.equal(out, images)


def test_augment_shapes_dtypes_and_content():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = p1_train.augment(images, hflip=True, crop_padding=4, color_jitter=0.4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = p1_train.augment(images, hflip=True)
    for a, b in zip(images, flipped):
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
    assert any(not torch.equal(a, b) for a, b in zip(images, flipped))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    cropped = p1_train.augment(images, crop_padding=2)
    for p, c in zip(padded, cropped):  # every crop is one 32x32 window of the padded image
        assert any(torch.equal(p[:, y:y + 32, x:x + 32], c) for y in range(5) for x in range(5))
    jittered = p1_train.augment(images, color_jitter=0.5)
    assert not torch.equal(jittered, images)


def test_prepare_upsamples_and_normalises():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    prepare = p1_train.make_prepare(torch.device("cpu"), {"mean": [0.5] * 3, "std": [0.25] * 3}, 48, False,
                                    {"hflip": True, "crop_padding": 0, "color_jitter": 0.0})
    x, y = prepare((images, torch.arange(4)))
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0)) and torch.equal(y, torch.arange(4))


def test_channel_stats_match_direct_computation():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = p1_train.channel_stats(images)
    per_channel = (images.double() / 255).transpose(0, 1).flatten(1)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), per_channel.mean(1), atol=1e-6)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), per_channel.std(1, unbiased=False), atol=1e-6)


def test_help_lists_flags():
    text = p1_train.get_args_parser().format_help()
    for flag in ("--data-path", "--img-size", "--crop-padding", "--color-jitter", "--resume", "--amp"):
        assert flag in text
    assert "--score-csv" in p1_test.get_args_parser().format_help()
    assert "--perplexity" in p1_tsne.get_args_parser().format_help()


# --------------------------------------------------------------------------- training


def test_training_beats_chance_and_writes_outputs(trained):
    rows = read_csv(trained / "log.csv")
    assert "val_acc" in rows[0]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, EPOCHS + 1))
    best = engine.load_checkpoint(str(trained / "best.pt"), "p1")
    assert best["score"] > 0.2, f"best val accuracy {best['score']} is not far above chance (0.02)"
    assert best["img_size"] == 32 and len(best["normalize"]["mean"]) == 3
    assert best["model_kwargs"] == {"num_classes": 50, "width": 4, "img_size": 32}
    per_class = read_csv(trained / "per_class_acc.csv")
    assert per_class[0] == ["class", "correct", "total", "accuracy"] and len(per_class) == 51
    assert sum(int(r[1]) for r in per_class[1:]) == round(best["score"] * 300)
    for name in ("curves.png", "confusion_matrix.png", "last.pt", "args.json"):
        assert (trained / name).stat().st_size > 0


def test_resume_continues_from_saved_epoch(trained, p1_data, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    p1_train.main(train_args(p1_data, out, EPOCHS + 1, "--no-cache", "--resume", str(out / "last.pt")))
    assert [int(r[0]) for r in read_csv(out / "log.csv")[1:]] == list(range(1, EPOCHS + 2))
    assert engine.load_checkpoint(str(out / "last.pt"), "p1")["epoch"] == EPOCHS + 1


def test_training_reports_bad_data(tmp_path):
    args = p1_train.get_args_parser().parse_args(
        ["--data-path", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "run"), "--no-cache"])
    with pytest.raises(SystemExit, match="error: .*nowhere.*no such folder"):
        p1_train.main(args)


# --------------------------------------------------------------------------- inference


def test_p1_test_accuracy_equals_checkpoint(trained, p1_data, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    p1_test.main(p1_test.get_args_parser().parse_args(
        ["--checkpoint", str(trained / "best.pt"), "--images", str(p1_data / "val_50"), "--output", str(out)]))
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("accuracy:")][0]
    best = engine.load_checkpoint(str(trained / "best.pt"), "p1")
    assert float(line.split()[1]) == pytest.approx(best["score"], abs=1e-6)
    p1_test.main(p1_test.get_args_parser().parse_args(["--score-csv", str(out)]))
    assert capsys.readouterr().out.strip() == line


def check_predictions(csv_path, names):
    rows = read_csv(csv_path)
    assert rows[0] == ["image_id", "label"]
    assert [r[0] for r in rows[1:]] == sorted(names)
    assert all(0 <= int(r[1]) < 50 for r in rows[1:])
    return [int(r[1]) for r in rows[1:]]


def test_hw2_p1_sh_labelled_and_unlabelled(trained, p1_data, tmp_path):
    base = tmp_path / "a folder with spaces"
    labelled, unlabelled = base / "val images", base / "test images"
    shutil.copytree(p1_data / "val_50", labelled)
    unlabelled.mkdir()
    names = sorted(os.listdir(labelled))
    for i, name in enumerate(names):  # unlabelled names keep the labelled sorted order
        shutil.copy(labelled / name, unlabelled / f"img {i:04d}.png")
    ckpt = base / "my ckpt.pt"
    shutil.copy(trained / "best.pt", ckpt)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"P1_CKPT": str(ckpt)}

    r = run_script("bash", str(ROOT / "hw2_p1.sh"), str(labelled), str(base / "out" / "pred 1.csv"), cwd=elsewhere,
                   env=env)
    assert r.returncode == 0, r.stderr
    preds = check_predictions(base / "out" / "pred 1.csv", names)
    best = engine.load_checkpoint(str(ckpt), "p1")
    assert f"accuracy: {best['score']:.6f}" in r.stdout

    r = run_script("bash", str(ROOT / "hw2_p1.sh"), str(unlabelled), str(base / "pred 2.csv"), cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    assert "accuracy" not in r.stdout
    assert check_predictions(base / "pred 2.csv", os.listdir(unlabelled)) == preds

    r = run_script(sys.executable, str(ROOT / "p1_test.py"), "--score-csv", str(base / "pred 2.csv"), cwd=elsewhere)
    assert r.returncode != 0 and "carries no label" in r.stderr


def test_missing_checkpoint_is_a_clear_error(p1_data, tmp_path):
    r = run_script("bash", str(ROOT / "hw2_p1.sh"), str(p1_data / "val_50"), str(tmp_path / "pred.csv"),
                   cwd=tmp_path, env={"P1_CKPT": str(tmp_path / "missing.pt")})
    assert r.returncode != 0
    assert "missing.pt: checkpoint not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pred.csv").exists()
    r = run_script("bash", str(ROOT / "hw2_p1.sh"), str(p1_data / "val_50"), cwd=tmp_path)
    assert r.returncode != 0 and "usage" in r.stderr


# --------------------------------------------------------------------------- t-SNE


def test_tsne_writes_figure_and_every_coordinate(trained, p1_data, tmp_path):
    p1_tsne.main(p1_tsne.get_args_parser().parse_args(
        ["--checkpoint", str(trained / "best.pt"), "--images", str(p1_data / "val_50"), "--max-images", "60",
         "--output-dir", str(tmp_path / "tsne")]))
    rows = read_csv(tmp_path / "tsne" / "tsne.csv")
    assert rows[0] == ["image_id", "label", "x", "y"] and len(rows) == 61
    assert all(int(r[1]) == int(r[0].split("_")[0]) for r in rows[1:])
    assert (tmp_path / "tsne" / "tsne.png").stat().st_size > 0


def test_tsne_on_two_unlabelled_images(trained, p1_data, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for i, name in enumerate(sorted(os.listdir(p1_data / "val_50"))[:2]):
        shutil.copy(p1_data / "val_50" / name, tiny / f"x{i}.png")
    p1_tsne.main(p1_tsne.get_args_parser().parse_args(
        ["--checkpoint", str(trained / "best.pt"), "--images", str(tiny), "--output-dir", str(tmp_path / "out")]))
    rows = read_csv(tmp_path / "out" / "tsne.csv")
    assert [r[:2] for r in rows[1:]] == [["x0.png", "-1"], ["x1.png", "-1"]]
    assert (tmp_path / "out" / "tsne.png").exists()
