"""The grading path (hw2_p1.sh / hw2_p2.sh, p1_test.py / p2_test.py) against a tired user and a
broken disk: it never replaces a file it did not write, predicts every readable image when
some are not, names every bad file, and exits with one line, 1 or 130.

Scripts run as subprocesses, or in this process through ``main(argv)`` under ``cli.run`` (the
scripts' own exit convention; the script is loaded with ``runpy``, never imported), with
untrained width-16 models saved as inference checkpoints.
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from core import checkpoint, runtime
from core.fileio import WrittenFiles, file_id, read_csv
from core.inputs import to_float
from datasets import read_mask
from models import get_model
from tests.conftest import ROOT, default_sigint, run_main
from tests.test_sliding_window import png_header

PRE = {"mean": [0.5] * 3, "std": [0.25] * 3}


def save_checkpoint(path, problem, name, kwargs):
    torch.manual_seed(0)
    model = get_model(name, **kwargs)
    for m in model.modules():  # untrained but not constant: score layers start at zero
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, std=0.05)
    checkpoint.save(checkpoint.inference_state(problem, name, kwargs, model, PRE), str(path))
    return path


@pytest.fixture(scope="module")
def p2_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "p2.pt", "p2", "fcn8s", {"num_classes": 7, "width": 16})


@pytest.fixture(scope="module")
def p1_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "p1.pt", "p1", "classifier",
                           {"num_classes": 50, "width": 16, "img_size": 32})


def image(path, size=(64, 80), seed=0, mode=None):
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert(mode or "RGB").save(path, format="PNG" if str(path).endswith(".png") else "JPEG")
    return rgb


def p2(images, out, ckpt, capsys, *extra):
    return run_main("p2_test", ["--checkpoint", str(ckpt), "--images", str(images), "--output", str(out),
                              "--workers", "0", "--device", "cpu", *extra], capsys)


def p1(images, out, ckpt, capsys, *extra):
    return run_main("p1_test", ["--checkpoint", str(ckpt), "--images", str(images), "--output", str(out),
                              "--device", "cpu", *extra], capsys)


def hw2(script, a, b, cwd, env_key, ckpt, **kwargs):
    env = dict(os.environ, **{env_key: str(ckpt)})
    return subprocess.run(["bash", os.path.join(ROOT, script), str(a), str(b)], env=env, cwd=cwd,
                          capture_output=True, text=True, **kwargs)


def snapshot(folder, suffix=""):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))
            if (folder / n).is_file() and n.endswith(suffix)}


def bad_files(folder, suffix):
    """Every kind of unreadable image, named ``<kind><suffix>``."""
    good = folder / "good.png"
    image(good, (300, 200))
    data = good.read_bytes()
    (folder / f"random{suffix}").write_bytes(np.random.default_rng(1).bytes(5000))
    (folder / f"empty{suffix}").write_bytes(b"")
    (folder / f"bomb{suffix}").write_bytes(png_header(60000, 60000))
    (folder / f"huge{suffix}").write_bytes(png_header(20001, 20000))
    os.symlink(folder / "gone.jpg", folder / f"dangling{suffix}")
    (folder / f"cutpng{suffix}").write_bytes(data[:len(data) // 2])
    image(folder / "jpg.jpg", (300, 200))
    (folder / f"cutjpg{suffix}").write_bytes((folder / "jpg.jpg").read_bytes()[:2000])
    good.unlink()
    (folder / "jpg.jpg").unlink()
    return [f"{k}{suffix}" for k in ("random", "empty", "bomb", "huge", "dangling", "cutpng", "cutjpg")]


# ---------------------------------------------------------------- P2: the output folder


@pytest.fixture
def val(tmp_path):
    """An image folder holding ground truth beside the images, as the official validation set."""
    d = tmp_path / "validation"
    d.mkdir()
    for i in range(2):
        image(d / f"000{i}_sat.jpg", seed=i)
        Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(d / f"000{i}_mask.png")
    return d


def test_p2_refuses_to_write_into_the_image_folder(val, p2_ckpt, tmp_path, capsys):
    before = snapshot(val)
    os.symlink(val, tmp_path / "link")
    for out in (val, f"{val}/", val / ".." / "validation", tmp_path / "link"):
        code, _, err = p2(val, out, p2_ckpt, capsys, "--overwrite")
        assert code == 1 and "is the image folder" in err, err
    r = hw2("hw2_p2.sh", val, val, tmp_path, "P2_CKPT", p2_ckpt)
    assert r.returncode == 1 and "is the image folder" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(val) == before


def test_p2_never_replaces_a_mask_it_did_not_write(val, p2_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    gt = (val / "0000_mask.png").read_bytes()
    (out / "0000_mask.png").write_bytes(gt)
    (out / "notes.txt").write_text("mine")
    code, _, err = p2(val, out, p2_ckpt, capsys)
    assert code == 1 and "not written by this script" in err and "--overwrite" in err and "0000_mask.png" in err
    assert snapshot(out) == {"0000_mask.png": gt, "notes.txt": b"mine"}  # nothing written at all
    code, _, err = p2(val, out, p2_ckpt, capsys, "--overwrite")
    assert code == 0 and "1 other file(s) (e.g. notes.txt)" in err
    assert (out / "0000_mask.png").read_bytes() != gt and (out / "notes.txt").read_text() == "mine"


def test_p2_rerun_replaces_its_own_masks_and_nothing_else(val, p2_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert p2(val, out, p2_ckpt, capsys)[0] == 0
    assert sorted(os.listdir(out)) == [".p2_test.json", "0000_mask.png", "0001_mask.png"]
    first = snapshot(out, ".png")
    assert p2(val, out, p2_ckpt, capsys)[0] == 0  # the same command again
    assert snapshot(out, ".png") == first
    (out / "0001_mask.png").write_bytes((val / "0001_mask.png").read_bytes())  # replaced by someone else
    code, _, err = p2(val, out, p2_ckpt, capsys)
    assert code == 1 and "0001_mask.png" in err and "0000_mask.png" not in err
    assert (out / "0001_mask.png").read_bytes() == (val / "0001_mask.png").read_bytes()


def test_p2_masks_recorded_by_an_earlier_version_are_still_its_own(val, p2_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert p2(val, out, p2_ckpt, capsys)[0] == 0
    first = snapshot(out, ".png")
    # .p2_test.json as p2_test.py wrote it before core.fileio.WrittenFiles: "masks", not "files"
    old = {"written_by": "p2_test.py", "masks": {"0000_mask.png": file_id(out / "0000_mask.png"),
                                                  "0001_mask.png": None, "gone_mask.png": None}}
    (out / ".p2_test.json").write_text(json.dumps(old))
    code, _, err = p2(val, out, p2_ckpt, capsys)
    assert code == 0 and "not written by this script" not in err and "unreadable" not in err, err
    assert snapshot(out, ".png") == first
    record = json.loads((out / ".p2_test.json").read_text())
    assert record["written_by"] == "p2_test.py"
    assert sorted(record["files"]) == ["0000_mask.png", "0001_mask.png"]
    assert all(record["files"][n] == file_id(out / n) for n in record["files"])  # migrated to the one format


def test_written_files_hands_back_what_a_stopped_run_did_not_write(tmp_path):
    for name in ("ours", "theirs", "in_flight", "new"):
        (tmp_path / name).write_text("x")
    first = WrittenFiles(str(tmp_path), ".rec.json", "t.py")
    first.claim(["ours"])
    first.finish({"ours": file_id(tmp_path / "ours")})
    run = WrittenFiles(str(tmp_path), ".rec.json", "t.py")
    assert run.wrote("ours") and not run.wrote("theirs")
    run.claim(["ours", "theirs", "in_flight", "new", "missing"])  # --overwrite: theirs too
    assert all(WrittenFiles(str(tmp_path), ".rec.json", "t.py").wrote(n) for n in ("ours", "theirs", "in_flight"))
    os.remove(tmp_path / "new")
    (tmp_path / "new").write_text("y")  # written, as the record is made
    os.replace(tmp_path / "ours", tmp_path / "in_flight")  # a write that ended after the run stopped
    run.finish({"new": file_id(tmp_path / "new")})
    after = WrittenFiles(str(tmp_path), ".rec.json", "t.py")
    assert after.records == {"new": file_id(tmp_path / "new"), "in_flight": None}  # ours: gone; theirs: theirs
    assert after.wrote("in_flight") and not after.wrote("theirs")
    (tmp_path / ".rec.json").write_text("{not json")
    assert WrittenFiles(str(tmp_path), ".rec.json", "t.py").records == {}  # unreadable: owns nothing


def test_p2_output_not_writable_is_one_line(val, p2_ckpt, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file" / "out", "file/out"), (tmp_path / "file", "exists and is not a folder")):
        code, _, err = p2(val, out, p2_ckpt, capsys)
        assert code == 1 and message in err and err.count("error:") == 1, err


# ---------------------------------------------------------------- P2: images


def test_p2_predicts_every_readable_image_and_names_each_bad_one(p2_ckpt, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    bad = bad_files(images, "_sat.jpg")
    sizes = {"a": (512, 512), "tall": (600, 400), "dot": (1, 1)}
    for k, (name, size) in enumerate(sizes.items()):
        image(images / f"{name}_sat.jpg", size, seed=k)
    code, out, err = p2(images, tmp_path / "out", p2_ckpt, capsys)
    assert code == 1 and f"{len(bad)} image(s) could not be predicted" in err
    for name in bad:
        assert f"{name}: not a readable image" in err or f"{name}: 20001x20000 image refused" in err, name
    assert "wrote 3 mask(s)" in out
    for name, size in sizes.items():
        assert read_mask(str(tmp_path / "out" / f"{name}_mask.png")).shape == size


def test_p2_converts_odd_images_and_keeps_names(p2_ckpt, tmp_path, capsys):
    images = tmp_path / "in put ü"
    images.mkdir()
    image(images / "gray_sat.jpg", mode="L")
    image(images / "rgba_sat.png", mode="RGBA")
    os.rename(images / "rgba_sat.png", images / "rgba_sat.jpg")  # a PNG named .jpg is still decoded
    Image.fromarray(np.full((64, 80), 40000, np.uint16)).save(images / "deep.png")
    os.rename(images / "deep.png", images / "deep_sat.jpg")
    image(images / "spaced name ß_sat.jpg")
    code, _, err = p2(images, tmp_path / "out dir", p2_ckpt, capsys)
    assert code == 0, err
    written = sorted(n for n in os.listdir(tmp_path / "out dir") if n.endswith(".png"))
    assert written == sorted(["gray_mask.png", "rgba_mask.png", "deep_mask.png", "spaced name ß_mask.png"])
    assert all(read_mask(str(tmp_path / "out dir" / n)).shape == (64, 80) for n in written)


@pytest.mark.parametrize("setup", [lambda d: None, lambda d: (d / "notes.txt").write_text("x")])
def test_p2_empty_or_non_image_folder(p2_ckpt, tmp_path, capsys, setup):
    images = tmp_path / "images"
    images.mkdir()
    setup(images)
    code, _, err = p2(images, tmp_path / "out", p2_ckpt, capsys)
    assert code == 1 and "no <id>_sat.jpg images" in err and not (tmp_path / "out").exists()


def test_p2_wrong_checkpoint_kind(val, p1_ckpt, tmp_path, capsys):
    code, _, err = p2(val, tmp_path / "out", p1_ckpt, capsys)
    assert code == 1 and "p1.pt: is a p1 checkpoint" in err and not (tmp_path / "out").exists()


def test_p2_fp32_masks_are_the_models_own_prediction(p2_ckpt, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rgb = image(images / "0000_sat.png", (512, 512))
    os.rename(images / "0000_sat.png", images / "0000_sat.jpg")  # lossless, so the pixels are known
    model, _ = checkpoint.load_model(str(p2_ckpt), "p2", torch.device("cpu"))
    with torch.no_grad():
        ref = model(to_float(torch.from_numpy(rgb).permute(2, 0, 1)[None], PRE["mean"], PRE["std"])).argmax(1)[0]
    assert p2(images, tmp_path / "fp32", p2_ckpt, capsys, "--precision", "fp32")[0] == 0
    assert np.array_equal(read_mask(str(tmp_path / "fp32" / "0000_mask.png")), ref.numpy())
    assert p2(images, tmp_path / "bf16", p2_ckpt, capsys, "--precision", "bf16")[0] == 0
    assert (read_mask(str(tmp_path / "bf16" / "0000_mask.png")) == ref.numpy()).mean() > 0.9


def test_p2_auto_falls_back_to_fp32_with_one_note(p2_ckpt, tmp_path, capsys, monkeypatch):
    """An fp16-validated checkpoint on a CPU without fp16 arithmetic: fp32, said once (core/inference.py)."""
    state = checkpoint.load(str(p2_ckpt))
    fp16 = tmp_path / "fp16.pt"
    checkpoint.save({**state, "meta": {**state["meta"], "precision": "fp16"}}, str(fp16))
    images = tmp_path / "images"
    images.mkdir()
    image(images / "0000_sat.jpg", (64, 64))
    monkeypatch.setattr(runtime, "cpu_computes_fp16", lambda: False)
    code, _, err = p2(images, tmp_path / "auto", fp16, capsys)
    assert code == 0 and err.count("note:") == 1 and f"{fp16} was validated in fp16" in err, err
    assert "predicting in fp32" in err
    assert p2(images, tmp_path / "fp32", fp16, capsys, "--precision", "fp32")[0] == 0
    masks = [read_mask(str(tmp_path / d / "0000_mask.png")) for d in ("auto", "fp32")]
    assert np.array_equal(*masks)


@pytest.mark.parametrize("name, default", [("p1_test", "p1_best.pt"), ("p2_test", "p2_fcn8s_best.pt")])
def test_an_empty_checkpoint_variable_counts_as_unset(monkeypatch, p1_dir, tmp_path, capsys, name, default):
    monkeypatch.setenv(f"{name[:2].upper()}_CKPT", "")
    monkeypatch.setenv("HW2_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("HW2_MANIFEST", str(tmp_path / "manifest.json"))
    image(p1_dir / "0000_sat.jpg", (32, 32))
    code, _, err = run_main(name, ["--images", str(p1_dir), "--output", str(tmp_path / "out"), "--device", "cpu"],
                            capsys)
    assert code == 1 and f"{tmp_path / 'checkpoints' / default}: checkpoint not found" in err, err


# ---------------------------------------------------------------- P1


@pytest.fixture
def p1_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("0_0.png", "3_1.png", "nolabel.png"):
        image(d / name, (32, 32))
    return d


def test_p1_refuses_outputs_that_would_destroy_a_file(p1_dir, p1_ckpt, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "test_pred.csv" / "x" / "test_pred.csv").mkdir(parents=True)
    os.symlink(p1_dir / "0_0.png", tmp_path / "link.csv")
    before = snapshot(p1_dir)
    cases = {p1_dir / "0_0.png": "is one of the input images", tmp_path / "link.csv": "is one of the input images",
             tmp_path / "notes.txt": "exists and is not a .csv", tmp_path / "test_pred.csv" / "x": "is a folder",
             tmp_path / "new.png": "names an image file", tmp_path / "notes.txt" / "x.csv": "is not a folder"}
    for out, message in cases.items():
        code, _, err = p1(p1_dir, out, p1_ckpt, capsys)
        assert code == 1 and message in err and err.count("error:") == 1, (out, err)
    assert snapshot(p1_dir) == before and (tmp_path / "notes.txt").read_text() == "mine"
    r = hw2("hw2_p1.sh", p1_dir, p1_dir / "0_0.png", tmp_path, "P1_CKPT", p1_ckpt)
    assert r.returncode == 1 and "is one of the input images" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(p1_dir) == before
    for _ in range(2):  # a CSV inside the input folder is fine, and so is writing it again
        code, out, err = p1(p1_dir, p1_dir / "pred.csv", p1_ckpt, capsys)
        assert code == 0 and "wrote 3 prediction(s)" in out, err
    assert [r["image_id"] for r in read_csv(p1_dir / "pred.csv")] == ["0_0.png", "3_1.png", "nolabel.png"]


def test_p1_predicts_every_readable_image_and_names_each_bad_one(p1_dir, p1_ckpt, tmp_path, capsys):
    bad = bad_files(p1_dir, ".png")
    code, out, err = p1(p1_dir, tmp_path / "pred.csv", p1_ckpt, capsys)
    assert code == 1 and f"{len(bad)} image(s) could not be read" in err
    assert all(name in err for name in bad), err
    rows = read_csv(tmp_path / "pred.csv")
    assert [r["image_id"] for r in rows] == ["0_0.png", "3_1.png", "nolabel.png"]
    assert all(0 <= int(r["label"]) < 50 for r in rows)


def test_p1_output_folder_gets_test_pred_csv_as_the_course_calls_it(p1_dir, p1_ckpt, tmp_path, capsys, monkeypatch):
    """``mkdir -p out && bash hw2_1.sh <images> out``, then the same again; a new folder named with a
    trailing ``/``; a file named as a folder."""
    (tmp_path / "out").mkdir()
    r = hw2("hw2_1.sh", p1_dir, "out", tmp_path, "P1_CKPT", p1_ckpt)
    assert r.returncode == 0 and "wrote 3 prediction(s) to out/test_pred.csv" in r.stdout, r.stderr
    assert [r["image_id"] for r in read_csv(tmp_path / "out" / "test_pred.csv")] == ["0_0.png", "3_1.png", "nolabel.png"]
    monkeypatch.chdir(tmp_path)
    code, out, err = p1(p1_dir, "out", p1_ckpt, capsys)
    assert code == 0 and "to out/test_pred.csv" in out, err
    code, out, err = p1(p1_dir, "new dir/", p1_ckpt, capsys)
    assert code == 0 and "to new dir/test_pred.csv" in out and ".tmp" not in out + err, err
    assert len(read_csv(tmp_path / "new dir" / "test_pred.csv")) == 3
    (tmp_path / "file").write_text("mine")
    code, _, err = p1(p1_dir, "file/", p1_ckpt, capsys)
    assert code == 1 and err.count("\n") == 1 and "--output file/" in err and ".tmp" not in err, err
    assert (tmp_path / "file").read_text() == "mine"


def test_p1_never_replaces_a_csv_it_did_not_write(p1_dir, p1_ckpt, tmp_path, capsys):
    log = tmp_path / "runs" / "x" / "log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,train_loss\n1,0.5\n")
    gt = tmp_path / "gt" / "test_pred.csv"  # ground truth in the prediction format, in the output folder
    gt.parent.mkdir()
    gt.write_text("image_id,label\n0_0.png,0\n")
    r = hw2("hw2_p1.sh", p1_dir, log, tmp_path, "P1_CKPT", p1_ckpt)
    assert r.returncode == 1 and "log.csv: an existing CSV that p1_test.py did not write (header 'epoch,train_loss')" \
        in r.stderr and "Traceback" not in r.stderr, r.stderr
    code, _, err = p1(p1_dir, gt.parent, p1_ckpt, capsys)
    assert code == 1 and "did not write" in err and "--overwrite" in err
    assert log.read_text() == "epoch,train_loss\n1,0.5\n" and gt.read_text() == "image_id,label\n0_0.png,0\n"
    ours = tmp_path / "pred.csv"
    assert p1(p1_dir, ours, p1_ckpt, capsys)[0] == 0
    ours.write_bytes(b"\xef\xbb\xbf" + ours.read_bytes().replace(b"\n", b"\r\n"))  # re-saved by a spreadsheet
    code, _, err = p1(p1_dir, ours, p1_ckpt, capsys)
    assert code == 1 and "did not write" in err
    assert p1(p1_dir, gt.parent, p1_ckpt, capsys, "--overwrite")[0] == 0  # asked: replaced
    assert len(read_csv(gt)) == 3


# ---------------------------------------------------------------- the shell entry points


def test_hw2_scripts_take_dash_and_space_paths_from_any_cwd(p1_ckpt, p2_ckpt, tmp_path):
    (tmp_path / "-p2 in").mkdir()
    image(tmp_path / "-p2 in" / "0007_sat.jpg", (100, 120))
    r = hw2("hw2_p2.sh", "-p2 in", "-p2 out", tmp_path, "P2_CKPT", p2_ckpt)
    assert r.returncode == 0, r.stderr
    assert read_mask(str(tmp_path / "-p2 out" / "0007_mask.png")).shape == (100, 120)
    (tmp_path / "-p1 in").mkdir()
    image(tmp_path / "-p1 in" / "4_2.png", (32, 32))
    r = hw2("hw2_p1.sh", "-p1 in", "--pred.csv", tmp_path, "P1_CKPT", p1_ckpt, )
    assert r.returncode == 0, r.stderr
    assert [row["image_id"] for row in read_csv(tmp_path / "--pred.csv")] == ["4_2.png"]


def test_ctrl_c_during_grading_exits_130_and_a_rerun_finishes(p2_ckpt, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    image(images / "0000_sat.jpg", (512, 512))
    for i in range(1, 60):  # enough that the run is still going when the signal comes, even on a fast machine
        os.link(images / "0000_sat.jpg", images / f"{i:04d}_sat.jpg")
    out = tmp_path / "out"
    env = dict(os.environ, P2_CKPT=str(p2_ckpt))
    proc = subprocess.Popen(["bash", os.path.join(ROOT, "hw2_p2.sh"), str(images), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not (out / "0000_mask.png").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again" in err and "Traceback" not in err
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    written = len([n for n in os.listdir(out) if n.endswith(".png")])
    assert 0 < written < 60
    code, _, err = p2(images, out, p2_ckpt, capsys)
    assert code == 0, err
    assert len([n for n in os.listdir(out) if n.endswith(".png")]) == 60


def test_sigterm_during_grading_ends_as_ctrl_c_does(p2_ckpt, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    image(images / "0000_sat.jpg", (512, 512))
    for i in range(1, 60):
        os.link(images / "0000_sat.jpg", images / f"{i:04d}_sat.jpg")
    out = tmp_path / "out"
    env = dict(os.environ, P2_CKPT=str(p2_ckpt))  # --workers 2: the workers get the signal too
    proc = subprocess.Popen(["bash", os.path.join(ROOT, "hw2_p2.sh"), str(images), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "0000_mask.png").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does at a time limit: every process of the job
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: stopped by SIGTERM; " in err and "run the same command again" in err, err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    masks = [n for n in os.listdir(out) if n.endswith(".png")]
    assert 0 < len(masks) < 60
    record = WrittenFiles(str(out), ".p2_test.json", "p2_test.py")  # a rerun replaces them
    assert all(record.wrote(n) for n in masks)


def test_each_course_script_grades_its_own_model(p2_ckpt, tmp_path, capsys):
    """hw2_2.sh grades the FCN32s and hw2_2_best.sh the FCN8s default checkpoint, through a symbolic link
    too; a checkpoint of the other model is refused."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    save_checkpoint(ckpts / "p2_fcn32s_best.pt", "p2", "fcn32s", {"num_classes": 7, "width": 16})
    os.symlink(p2_ckpt, ckpts / "p2_fcn8s_best.pt")
    (tmp_path / "in").mkdir()
    image(tmp_path / "in" / "0000_sat.jpg", (64, 80))
    links = tmp_path / "bin"
    links.mkdir()
    env = {"HW2_CHECKPOINT_DIR": str(ckpts), "HW2_MANIFEST": str(tmp_path / "manifest.json"), "P2_CKPT": ""}
    masks = {}
    for script in ("hw2_2.sh", "hw2_2_best.sh"):
        os.symlink(os.path.join(ROOT, script), links / script)
        (tmp_path / script).mkdir()
        r = subprocess.run(["bash", str(links / script), "in", script], cwd=tmp_path, env={**os.environ, **env},
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        masks[script] = read_mask(str(tmp_path / script / "0000_mask.png"))
    assert not np.array_equal(masks["hw2_2.sh"], masks["hw2_2_best.sh"])  # two models, two predictions
    code, _, err = run_main("p2_test", ["--model", "fcn32s", "--checkpoint", str(p2_ckpt), "--images",
                                        str(tmp_path / "in"), "--output", str(tmp_path / "other"), "--workers", "0"],
                            capsys)
    assert code == 1 and "holds fcn8s, but fcn32s is to be graded" in err and err.count("\n") == 1, err
    assert not (tmp_path / "other").exists()
