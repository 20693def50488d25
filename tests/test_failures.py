"""The failure behaviour README.md promises for training: a crash loses at most the epoch in
progress, and bad training data is refused before training with every offending file named.
(The grading path's failures are in test_grading.py.) ``p2_train.py`` runs as a subprocess."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from core import checkpoint
from tests.conftest import ROOT


def train_cmd(data, out, epochs=2, *extra):
    return [sys.executable, os.path.join(ROOT, "p2_train.py"), "--data-path", str(data / "p2_data"), "--width", "16",
            "--pretrained", "none", "--epochs", str(epochs), "--batch-size", "2", "--workers", "0", "--device", "cpu",
            "--snapshot-epochs", "1", "--output-dir", str(out), *extra]


def log_epochs(run):
    with open(run / "log.csv") as f:
        return [line.split(",")[0] for line in f.read().splitlines()[1:]]


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
    time.sleep(0.3)  # inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = checkpoint.load(str(cut / "last.pt"), "p2", training=True)
    assert last["epoch"] == 1, "the kill should land in epoch 2"
    assert not [n for n in os.listdir(cut) if ".tmp" in n]
    resumed = subprocess.run(train_cmd(synthetic_data, cut, 2, "--resume", str(cut / "last.pt")), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.load(str(tmp_path / "full" / "last.pt"), training=True)
    b = checkpoint.load(str(cut / "last.pt"), training=True)
    assert a["epoch"] == b["epoch"] == 2 and a["phase"] == b["phase"] and a["best_score"] == b["best_score"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert log_epochs(cut) == log_epochs(tmp_path / "full") == ["1", "2"]


def test_training_data_errors_listed_before_training(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    train = data / "p2_data" / "train"
    (train / "0000_mask.png").unlink()  # image without mask
    shutil.copy(train / "0001_mask.png", train / "0099_mask.png")  # mask without image
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(train / "0002_mask.png")  # mask of another size
    (train / "0003_sat.jpg").write_bytes(b"")  # zero-byte image
    r = subprocess.run(train_cmd(data, tmp_path / "run"), capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "0000_sat.jpg: has no mask" in r.stderr and "0099_mask.png: has no image" in r.stderr
    (train / "0000_sat.jpg").unlink()
    (train / "0099_mask.png").unlink()
    r = subprocess.run(train_cmd(data, tmp_path / "run"), capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "0002_mask.png: mask is 100x100" in r.stderr and "0003_sat.jpg: not a readable image" in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_no_cache_truncated_image_found_mid_training_is_a_clear_error(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    sat = data / "p2_data" / "train" / "0004_sat.jpg"
    sat.write_bytes(sat.read_bytes()[:3000])  # the header reads; decoding fails
    r = subprocess.run(train_cmd(data, tmp_path / "run", 1, "--no-cache"), capture_output=True, text=True)
    assert r.returncode == 1 and "0004_sat.jpg: not a readable image" in r.stderr and "Traceback" not in r.stderr
