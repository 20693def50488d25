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

from core import checkpoint, runs
from tests.conftest import ROOT, finish_script, run_main, run_script, script_cmd, start_script


def train_cmd(data, out, epochs=2, *extra):
    return [sys.executable, os.path.join(ROOT, "p2_train.py"), "--data-path", str(data / "p2_data"), "--width", "16",
            "--pretrained", "none", "--epochs", str(epochs), "--batch-size", "2", "--workers", "0", "--device", "cpu",
            "--snapshot-epochs", "1", "--output-dir", str(out), *extra]


def log_epochs(run):
    with open(run / "log.csv") as f:
        return [line.split(",")[0] for line in f.read().splitlines()[1:]]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(synthetic_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    crop = ("--img-size", "256")  # cheaper training steps; validation (full tiles) keeps epoch 2 several times 0.3 s
    # The uninterrupted run trains beside the one that is killed (one thread each, two cores).
    full = start_script(*train_cmd(synthetic_data, tmp_path / "full", 2, *crop), cwd=ROOT)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(synthetic_data, cut, 2, *crop), env=env, stdout=subprocess.DEVNULL,
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
    resumed = subprocess.run(train_cmd(synthetic_data, cut, 2, *crop, "--resume", str(cut / "last.pt")), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    full = finish_script(full)
    assert full.returncode == 0, full.stderr
    a = checkpoint.load(str(tmp_path / "full" / "last.pt"), training=True)
    b = checkpoint.load(str(cut / "last.pt"), training=True)
    assert a["epoch"] == b["epoch"] == 2 and a["phase"] == b["phase"] and a["best_score"] == b["best_score"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert log_epochs(cut) == log_epochs(tmp_path / "full") == ["1", "2"]


def test_training_data_errors_listed_before_training(synthetic_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    train = data / "p2_data" / "train"
    (train / "0000_mask.png").unlink()  # image without mask
    shutil.copy(train / "0001_mask.png", train / "0099_mask.png")  # mask without image
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(train / "0002_mask.png")  # mask of another size
    (train / "0003_sat.jpg").write_bytes(b"")  # zero-byte image
    # In this process (run_main: a traceback a process would print fails the test); [2:] drops the
    # interpreter and the script from the command.
    code, _, err = run_main("p2_train", train_cmd(data, tmp_path / "run")[2:], capsys)
    assert code != 0 and "Traceback" not in err
    assert "0000_sat.jpg: has no mask" in err and "0099_mask.png: has no image" in err
    (train / "0000_sat.jpg").unlink()
    (train / "0099_mask.png").unlink()
    code, _, err = run_main("p2_train", train_cmd(data, tmp_path / "run")[2:], capsys)
    assert code != 0 and "Traceback" not in err
    assert "0002_mask.png: mask is 100x100" in err and "0003_sat.jpg: not a readable image" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_no_cache_truncated_image_found_mid_training_is_a_clear_error(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "p2_data", data / "p2_data")
    sat = data / "p2_data" / "train" / "0004_sat.jpg"
    sat.write_bytes(sat.read_bytes()[:3000])  # the header reads; decoding fails
    r = subprocess.run(train_cmd(data, tmp_path / "run", 1, "--no-cache"), capture_output=True, text=True)
    assert r.returncode == 1 and "0004_sat.jpg: not a readable image" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- scheduler signals, requeue, paths

def p1_cmd(data, *extra):
    return [sys.executable, os.path.join(ROOT, "p1_train.py"), "--data-path", str(data), "--width", "16",
            "--img-size", "32", "--batch-size", "25", "--lr-schedule", "none", "--device", "cpu", *extra]


def wait_for(path, proc, seconds=240):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), "the run ended before writing " + str(path)


def test_sigterm_to_the_job_stops_like_ctrl_c_and_says_how_to_resume(synthetic_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(synthetic_data, out, 50, "--img-size", "64", "--workers", "1"),
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(out / "log.csv", proc)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does at a time limit: every process of the job
    _, err = proc.communicate(timeout=120)
    saved = checkpoint.load(str(out / "last.pt"), "p2", training=True)["epoch"]
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert f"interrupted: stopped by SIGTERM; {out / 'last.pt'} holds epoch {saved}; continue with: python " in err
    assert f"--resume {out / 'last.pt'}" in err and err.count("interrupted") == 1 and "error" not in err


def test_sigkill_with_loader_workers_then_immediate_resume_is_not_refused(synthetic_data, tmp_path):
    out = tmp_path / "run"
    cmd = p1_cmd(synthetic_data / "p1_data", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"))
    proc = subprocess.Popen(cmd + ["--epochs", "30", "--workers", "2"], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(out / "last.pt", proc)
    time.sleep(0.5)  # the workers of the next epoch are running
    proc.kill()
    proc.wait()
    runs.lock_folder(str(out)).close()  # free at once, while the killed run's workers may still be alive
    saved = checkpoint.load(str(out / "last.pt"), "p1", training=True)["epoch"]
    r = subprocess.run(cmd + ["--resume", str(out / "last.pt"), "--epochs", str(saved + 1), "--workers", "0"],
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(str(out / "last.pt"), "p1", training=True)["epoch"] == saved + 1


def test_resume_from_inside_the_run_folder_keeps_the_runs_own_normalisation(synthetic_data, tmp_path):
    shutil.copytree(synthetic_data / "p1_data", tmp_path / "a")
    shutil.copytree(synthetic_data / "p1_data", tmp_path / "b")
    for path in (tmp_path / "b" / "train_50").iterdir():  # other data: every training image darker
        Image.fromarray(np.asarray(Image.open(path)) // 4).save(path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run(p1_cmd("a", "--output-dir", "run", "--epochs", "1", "--workers", "0"), cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = checkpoint.load(str(tmp_path / "run" / "last.pt"), "p1", training=True)["preprocess"]
    # cd runs/x && python ../../p1_train.py --resume last.pt: relative paths from inside the run folder
    r = subprocess.run([sys.executable, os.path.relpath(os.path.join(ROOT, "p1_train.py"), tmp_path / "run"),
                        "--resume", "last.pt", "--epochs", "2", "--data-path", "../b"], cwd=tmp_path / "run",
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = checkpoint.load(str(tmp_path / "run" / "last.pt"), "p1", training=True)
    assert after["epoch"] == 2 and after["preprocess"] == before
    assert log_epochs(tmp_path / "run") == ["1", "2"] and not (tmp_path / "run" / ".cache").exists()


def test_a_size_the_machine_cannot_hold_is_refused_before_allocating(synthetic_data, tmp_path, capsys):
    # In this process (run_main: a traceback a process would print fails the test); [2:]: the argv.
    code, _, err = run_main("p2_train", train_cmd(synthetic_data, tmp_path / "run", 1, "--img-size", "100000")[2:],
                            capsys)
    assert code == 1 and "Traceback" not in err, err
    assert "error: --batch-size 2 --width 16 on 100000x100000 inputs: one training step needs at least" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resumed_improved_run_keeps_its_normalisation_with_another_data_path(synthetic_data, fcn8s_run, tmp_path):
    shutil.copytree(synthetic_data / "p2_data", tmp_path / "b" / "p2_data")
    for path in (tmp_path / "b" / "p2_data" / "train").glob("*_sat.jpg"):  # other data: darker tiles
        Image.fromarray(np.asarray(Image.open(path)) // 4).save(path)
    out = tmp_path / "run"
    shutil.copytree(fcn8s_run, out)  # --recipe improved-ours: normalised by its training data's statistics
    before = checkpoint.load(str(out / "last.pt"), "p2", training=True)["preprocess"]
    r = run_script(*script_cmd("p2_train.py", "--resume", out / "last.pt", "--epochs", "3", "--data-path",
                               tmp_path / "b" / "p2_data", "--cache-dir", tmp_path / "cache"), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    after = checkpoint.load(str(out / "last.pt"), "p2", training=True)
    assert after["epoch"] == 3 and after["preprocess"] == before
