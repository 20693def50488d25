"""The failure behaviour README.md promises: a crash loses at most the epoch in progress, and bad
input is refused (or converted) with every offending file named and a non-zero exit."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from datasets import read_mask
from models import get_model
from tests.conftest import ROOT

TRAIN_FLAGS = ["--model", "fcn32s", "--width", "16", "--pretrained", "none", "--img-size", "256", "--batch-size", "1",
               "--workers", "0", "--device", "cpu", "--lr", "1e-3", "--switch-sgd-at", "3", "--epochs", "3",
               "--snapshot-epochs", "", "--deterministic", "--no-cache"]


def train_cmd(data, out, *extra):
    return [sys.executable, os.path.join(ROOT, "p2_train.py"), "--data-path", str(data / "p2_data"),
            "--output-dir", str(out), *TRAIN_FLAGS, *extra]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(synthetic_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = subprocess.run(train_cmd(synthetic_data, tmp_path / "full"), env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(synthetic_data, cut), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside epoch 2 (6 steps of ~0.3 s or more)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = engine.load_checkpoint(str(cut / "last.pt"), "p2")
    assert last["epoch"] == 1, "the kill should land in epoch 2"
    assert not [n for n in os.listdir(cut) if ".tmp" in n]
    resumed = subprocess.run(train_cmd(synthetic_data, cut, "--resume", str(cut / "last.pt")), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = engine.load_checkpoint(str(tmp_path / "full" / "last.pt"))
    b = engine.load_checkpoint(str(cut / "last.pt"))
    assert a["epoch"] == b["epoch"] == 3 and a["phase"] == b["phase"] == 1
    assert a["score"] == b["score"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    with open(cut / "log.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1", "2", "3"]


# ---------------------------------------------------------------- grading inputs


@pytest.fixture(scope="module")
def p2_ckpt(tmp_path_factory):
    """An untrained width-16 FCN32s checkpoint: inference needs a model, not a good one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "p2.pt"
    engine.save_checkpoint({"problem": "p2", "model_name": "fcn32s", "model_kwargs": {"num_classes": 7, "width": 16},
                            "model": get_model("fcn32s", width=16).state_dict(),
                            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}, str(path))
    return path


def hw2_p2(images, out, ckpt):
    env = dict(os.environ, P2_CKPT=str(ckpt))
    return subprocess.run(["bash", os.path.join(ROOT, "hw2_p2.sh"), str(images), str(out)], env=env,
                          capture_output=True, text=True, cwd="/")


def test_grading_converts_odd_images_and_keeps_names(p2_ckpt, tmp_path):
    images = tmp_path / "in put ü"
    images.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(images / "gray_sat.jpg")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(images / "rgba_sat.jpg".replace(".jpg", ".png"))
    os.rename(images / "rgba_sat.png", images / "rgba_sat.jpg")  # a PNG named .jpg is still decoded
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(images / "deep_sat.jpg".replace(".jpg", ".png"))
    os.rename(images / "deep_sat.png", images / "deep_sat.jpg")
    Image.fromarray(rgb).save(images / "spaced name ß_sat.jpg")
    r = hw2_p2(images, tmp_path / "out dir", p2_ckpt)
    assert r.returncode == 0, r.stderr
    written = sorted(os.listdir(tmp_path / "out dir"))
    assert written == sorted(["gray_mask.png", "rgba_mask.png", "deep_mask.png", "spaced name ß_mask.png"])
    assert all(read_mask(str(tmp_path / "out dir" / n)).shape == (64, 80) for n in written)


def test_grading_refuses_broken_files_naming_each(p2_ckpt, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "good_sat.jpg")
    (images / "empty_sat.jpg").write_bytes(b"")
    (images / "junk_sat.jpg").write_bytes(b"this is no jpeg")
    r = hw2_p2(images, tmp_path / "out", p2_ckpt)
    assert r.returncode != 0
    assert "empty_sat.jpg" in r.stderr and "junk_sat.jpg" in r.stderr


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no <id>_sat.jpg images"),
    (lambda d: (d / "notes.txt").write_text("x"), "no <id>_sat.jpg images"),
])
def test_grading_empty_or_non_image_folder(p2_ckpt, tmp_path, setup, message):
    images = tmp_path / "images"
    images.mkdir()
    setup(images)
    r = hw2_p2(images, tmp_path / "out", p2_ckpt)
    assert r.returncode != 0 and message in r.stderr


def test_grading_output_not_writable_and_output_with_other_files(p2_ckpt, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a_sat.jpg")
    (tmp_path / "file").write_text("x")
    r = hw2_p2(images, tmp_path / "file" / "out", p2_ckpt)  # parent is a file: cannot be created
    assert r.returncode != 0 and "file/out" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "old_mask.png").write_bytes(b"")
    r = hw2_p2(images, out, p2_ckpt)
    assert r.returncode == 0 and "already holds 1 other file" in r.stderr
    assert sorted(os.listdir(out)) == ["a_mask.png", "old_mask.png"]


def test_grading_wrong_checkpoint_kind(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a_sat.jpg")
    p1 = tmp_path / "p1.pt"
    engine.save_checkpoint({"problem": "p1", "model_name": "classifier", "model_kwargs": {}, "model": {}}, str(p1))
    r = hw2_p2(images, tmp_path / "out", p1)
    assert r.returncode != 0 and "p1.pt: is a p1 checkpoint" in r.stderr


# ---------------------------------------------------------------- training inputs


def test_training_data_errors_listed_before_training(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    train = data / "p2_data" / "train"
    (train / "0000_mask.png").unlink()  # image without mask
    shutil.copy(train / "0001_mask.png", train / "0099_mask.png")  # mask without image
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(train / "0002_mask.png")  # mask of another size
    (train / "0003_sat.jpg").write_bytes(b"")  # zero-byte image
    r = subprocess.run(train_cmd(data, tmp_path / "run"), capture_output=True, text=True)
    assert r.returncode != 0
    assert "0000_sat.jpg: has no mask" in r.stderr and "0099_mask.png: has no image" in r.stderr
    (train / "0000_sat.jpg").unlink()
    (train / "0099_mask.png").unlink()
    r = subprocess.run(train_cmd(data, tmp_path / "run"), capture_output=True, text=True)
    assert r.returncode != 0
    assert "0002_mask.png: mask is 100x100" in r.stderr and "0003_sat.jpg: not a readable image" in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_no_cache_truncated_image_found_mid_training_is_a_clear_error(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    sat = data / "p2_data" / "train" / "0004_sat.jpg"
    sat.write_bytes(sat.read_bytes()[:3000])  # the header reads; decoding fails
    cmd = train_cmd(data, tmp_path / "run")
    cmd[cmd.index("--epochs") + 1] = "1"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 1 and "0004_sat.jpg: not a readable image" in r.stderr and "Traceback" not in r.stderr


def test_p1_grading_output_not_writable(tmp_path):
    import p1_test

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "3_0.png")
    ckpt = tmp_path / "p1.pt"
    torch.manual_seed(0)
    engine.save_checkpoint({"problem": "p1", "model_name": "classifier",
                            "model_kwargs": {"num_classes": 50, "width": 8, "img_size": 32},
                            "model": get_model("classifier", width=8, img_size=32).state_dict(),
                            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}, "img_size": 32}, str(ckpt))
    (tmp_path / "file").write_text("x")
    args = p1_test.get_args_parser().parse_args(["--checkpoint", str(ckpt), "--images", str(images), "--output",
                                                 str(tmp_path / "file" / "out.csv"), "--device", "cpu"])
    with pytest.raises(SystemExit, match="file/out.csv.*cannot write"):
        p1_test.main(args)
