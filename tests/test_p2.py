"""Tests for Problem 2: focal loss, p2_train.py (learning, resume, Adam -> SGD, figures, errors),
p2_test.py and hw2_p2.sh scored end to end by mean_iou_evaluate.py.

Every run is a width-16 network without ImageNet weights on the session's synthetic tiles
(6 train, 6 validation, 512x512), on the CPU, so the whole file takes about a minute.
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

import p2_test
import p2_train
from datasets import NUM_CLASSES, P2Tiles, read_mask
from mean_iou_evaluate import evaluate_folders
from metrics import ConfusionMatrix
from models import copy_params_from_vgg16, get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_args(data, out, cache, *extra):
    return p2_train.parse_args(["--data-path", str(data / "p2_data"), "--output-dir", str(out), "--cache-dir",
                                str(cache), "--width", "16", "--pretrained", "none", "--batch-size", "2",
                                "--workers", "0", "--device", "cpu", *extra])


def read_log(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def majority_baseline_miou(data):
    """mIoU of predicting the training set's most frequent class on every validation pixel."""
    train = P2Tiles(str(data / "p2_data" / "train"), progress=False)
    counts = sum(np.bincount(np.asarray(train.load(k)[1]).ravel(), minlength=NUM_CLASSES) for k in range(len(train)))
    cm = ConfusionMatrix(NUM_CLASSES)
    val = P2Tiles(str(data / "p2_data" / "validation"), progress=False)
    for k in range(len(val)):
        gt = torch.from_numpy(np.asarray(val.load(k)[1]))
        cm.update(gt, torch.full_like(gt, int(counts.argmax())))
    return cm.mean_iou()[0]


@pytest.fixture(scope="module")
def fcn8s_run(synthetic_data, tmp_path_factory):
    """A 2-epoch FCN8s run (Adam 1e-3, full tiles, focal loss) with snapshots at epochs 1 and 2."""
    out = tmp_path_factory.mktemp("p2") / "fcn8s run"
    args = run_args(synthetic_data, out, out.parent / "cache", "--model", "fcn8s", "--loss", "focal",
                    "--epochs", "2", "--lr", "1e-3", "--snapshot-epochs", "1,2")
    assert p2_train.main(args) == 0
    return out


# ---------------------------------------------------------------- focal loss


def test_focal_gamma0_is_cross_entropy():
    logits, target = torch.randn(2, 7, 5, 6), torch.randint(0, 7, (2, 5, 6))
    assert torch.allclose(p2_train.FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target), atol=1e-6)


def test_focal_ignores_255_and_down_weights_easy_pixels():
    logits, target = torch.randn(2, 7, 5, 6), torch.randint(0, 7, (2, 5, 6))
    masked = target.clone()
    masked[:, :2] = 255
    keep = masked != 255
    per_pixel = -(1 - F.softmax(logits, 1).gather(1, target[:, None])[:, 0]) ** 2 * \
        F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    assert torch.allclose(p2_train.FocalLoss(gamma=2)(logits, masked), per_pixel[keep].mean(), atol=1e-6)
    assert p2_train.FocalLoss(gamma=2)(logits, target) < F.cross_entropy(logits, target)
    assert p2_train.FocalLoss()(logits, torch.full_like(target, 255)) == 0  # all ignored: 0, not NaN


def test_focal_class_weights_match_weighted_cross_entropy():
    logits, target = torch.randn(2, 7, 5, 6), torch.randint(0, 7, (2, 5, 6))
    target[0, 0] = 255
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.0])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(p2_train.FocalLoss(0, weight)(logits, target), expected, atol=1e-6)


# ---------------------------------------------------------------- command line


def test_recipes_set_defaults_and_explicit_flags_win():
    base = p2_train.parse_args([])
    assert (base.model, base.loss, base.epochs, base.switch_sgd_at, base.snapshot_epochs) == \
        ("fcn32s", "ce", 40, 0, [1, 20, 40])
    improved = p2_train.parse_args(["--recipe", "improved"])
    assert (improved.model, improved.loss, improved.epochs, improved.switch_sgd_at, improved.normalize) == \
        ("fcn8s", "focal", 100, 70, "dataset")
    mixed = p2_train.parse_args(["--epochs", "5", "--recipe", "improved", "--loss", "ce"])
    assert (mixed.model, mixed.epochs, mixed.loss) == ("fcn8s", 5, "ce")


def test_bad_class_weights_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        p2_train.parse_args(["--class-weights", "1,2,3"])
    assert e.value.code == 2 and "7 comma-separated" in capsys.readouterr().err
    assert p2_train.parse_args(["--class-weights", "1,1,1,1,1,1,0"]).class_weights == [1, 1, 1, 1, 1, 1, 0]


# ---------------------------------------------------------------- training


def test_training_learns(fcn8s_run, synthetic_data):
    rows = read_log(fcn8s_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = max(float(r["val_miou"]) for r in rows)
    assert best > majority_baseline_miou(synthetic_data) + 0.05
    assert {"iou_urban", "iou_barren"} <= set(rows[0]) and "iou_unknown" not in rows[0]
    ckpt = torch.load(fcn8s_run / "best.pt", weights_only=True)
    assert ckpt["model_name"] == "fcn8s" and ckpt["model_kwargs"] == {"num_classes": 7, "width": 16}
    assert ckpt["score"] == pytest.approx(best, abs=1e-6)
    assert ckpt["normalize"] == {"mean": list(p2_train.IMAGENET_MEAN), "std": list(p2_train.IMAGENET_STD)}


def test_snapshots_and_figures(fcn8s_run):
    snaps = sorted(os.listdir(fcn8s_run / "snapshots"))
    assert snaps == [f"{i}_epoch{e}.png" for i in ("0010", "0097", "0107") for e in (1, 2)]
    mask = read_mask(str(fcn8s_run / "snapshots" / "0010_epoch2.png"))
    assert mask.shape == (512, 512) and mask.max() < NUM_CLASSES
    for name in ("epoch_masks.png", "curves.png", "per_class_iou.png"):
        assert (fcn8s_run / name).stat().st_size > 1000


def test_resume_and_switch_to_sgd_match_an_uninterrupted_run(synthetic_data, tmp_path):
    flags = ("--model", "fcn32s", "--img-size", "128", "--lr", "1e-3", "--switch-sgd-at", "2", "--sgd-lr", "0.01",
             "--normalize", "dataset", "--snapshot-ids", "0010,9999", "--snapshot-epochs", "2")
    cache = tmp_path / "cache"
    assert p2_train.main(run_args(synthetic_data, tmp_path / "full", cache, *flags, "--epochs", "2")) == 0
    assert p2_train.main(run_args(synthetic_data, tmp_path / "cut", cache, *flags, "--epochs", "1")) == 0
    resumed = run_args(synthetic_data, tmp_path / "cut", cache, *flags, "--epochs", "2",
                       "--resume", str(tmp_path / "cut" / "last.pt"))
    assert p2_train.main(resumed) == 0

    full, cut = read_log(tmp_path / "full"), read_log(tmp_path / "cut")
    assert [r["epoch"] for r in full] == [r["epoch"] for r in cut] == ["1", "2"]
    assert [r["phase"] for r in full] == [r["phase"] for r in cut] == ["adam", "sgd"]
    assert [r["lr"] for r in cut] == ["0.001", "0.01"]
    for a, b in zip(full, cut):  # the resumed run continues exactly (weights, RNG states)
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
        assert float(a["val_miou"]) == pytest.approx(float(b["val_miou"]), abs=1e-4)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["phase"] == 1 and "momentum" in ckpt["optimizer"]["param_groups"][0]
    train = P2Tiles(str(synthetic_data / "p2_data" / "train"), progress=False)
    pixels = np.stack([np.asarray(train.load(k)[0]) for k in range(len(train))]).reshape(-1, 3) / 255.0
    assert ckpt["normalize"]["mean"] == pytest.approx(pixels.mean(0), abs=1e-5)
    assert ckpt["normalize"]["std"] == pytest.approx(pixels.std(0), abs=1e-5)
    assert sorted(os.listdir(tmp_path / "cut" / "snapshots")) == ["0010_epoch2.png"]  # 9999 skipped


class NaNAfter(torch.nn.Module):
    """Cross entropy for the first ``steps`` calls, NaN after them."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.calls = steps, 0

    def forward(self, logits, target):
        self.calls += 1
        loss = F.cross_entropy(logits, target, ignore_index=255)
        return loss if self.calls <= self.steps else loss * float("nan")


def test_non_finite_loss_stops_with_last_epoch_kept(synthetic_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(p2_train, "criterion", lambda args: NaNAfter(3))  # 6 tiles / batch 2: epoch 1 is fine
    args = run_args(synthetic_data, tmp_path / "run", tmp_path / "cache", "--img-size", "128", "--epochs", "2",
                    "--snapshot-epochs", "")
    assert p2_train.main(args) == 1
    assert "epoch 2, step 0" in capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1


def test_data_error_exits_before_training(tmp_path, capsys):
    args = run_args(tmp_path, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    assert p2_train.main(args) == 1
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------- pretrained weights


def test_pretrained_auto_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    args = p2_train.parse_args(["--data-path", str(tmp_path), "--output-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=r"--pretrained PATH.*--pretrained none"):
        p2_train.main(args)
    with pytest.raises(SystemExit, match="--width 16 pass --pretrained none"):
        p2_train.main(p2_train.parse_args(["--width", "16"]))


def test_pretrained_from_file_loads(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=generator) for k, s in shapes.items()}
    torch.save(state, tmp_path / "vgg16.pth")
    with torch.device("meta"):
        model = get_model("fcn32s")
    model.to_empty(device="cpu")
    backbone = p2_train.backbone_state_dict(p2_train.parse_args(["--pretrained", str(tmp_path / "vgg16.pth")]))
    assert len(copy_params_from_vgg16(model, backbone)) == 2 * 13 + 4
    assert torch.equal(model.features5[0].weight, state["features.0.weight"])
    assert torch.equal(model.fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7))


# ---------------------------------------------------------------- inference and grading


def test_hw2_p2_sh_scored_by_mean_iou_evaluate(fcn8s_run, synthetic_data, tmp_path):
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
    assert sorted(os.listdir(out)) == expected
    graded = subprocess.run([sys.executable, os.path.join(ROOT, "mean_iou_evaluate.py"), "-g", str(val), "-p",
                             str(out)], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    miou = float(graded.strip().splitlines()[-1].split(":")[1])
    best = max(float(r["val_miou"]) for r in read_log(fcn8s_run))
    assert miou == pytest.approx(best, abs=1e-4)


def test_p2_test_scores_in_memory_like_the_grader(fcn8s_run, synthetic_data, tmp_path, capsys):
    val = synthetic_data / "p2_data" / "validation"
    args = p2_test.get_args_parser().parse_args(["--checkpoint", str(fcn8s_run / "best.pt"), "--images", str(val),
                                                 "--output", str(tmp_path / "pred"), "--gt", str(val),
                                                 "--workers", "0", "--batch-size", "4"])
    assert p2_test.main(args) == 0
    printed = capsys.readouterr().out
    assert evaluate_folders(str(val), str(tmp_path / "pred")).grader_report() in printed


def test_p2_test_masks_match_any_input_size(fcn8s_run, synthetic_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    src = synthetic_data / "p2_data" / "validation" / "0000_sat.jpg"
    shutil.copy(src, images / "0000_sat.jpg")
    Image.open(src).resize((448, 320)).save(images / "0001_sat.jpg")
    args = p2_test.get_args_parser().parse_args(["--checkpoint", str(fcn8s_run / "best.pt"), "--images", str(images),
                                                 "--output", str(tmp_path / "out"), "--workers", "0"])
    assert p2_test.main(args) == 0
    assert read_mask(str(tmp_path / "out" / "0000_mask.png")).shape == (512, 512)
    assert read_mask(str(tmp_path / "out" / "0001_mask.png")).shape == (320, 448)


def test_p2_test_errors_name_the_file(fcn8s_run, synthetic_data, tmp_path, capsys):
    def run(checkpoint, images):
        args = p2_test.get_args_parser().parse_args(["--checkpoint", str(checkpoint), "--images", str(images),
                                                     "--output", str(tmp_path / "out"), "--workers", "0"])
        return p2_test.main(args), capsys.readouterr().err

    ckpt = fcn8s_run / "best.pt"
    rc, err = run(tmp_path / "missing.pt", synthetic_data / "p2_data" / "validation")
    assert rc == 1 and "missing.pt: checkpoint not found" in err
    (tmp_path / "empty").mkdir()
    rc, err = run(ckpt, tmp_path / "empty")
    assert rc == 1 and "no <id>_sat.jpg images" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    src = synthetic_data / "p2_data" / "validation" / "0000_sat.jpg"
    shutil.copy(src, bad / "0000_sat.jpg")
    (bad / "0001_sat.jpg").write_bytes(src.read_bytes()[:2000])  # truncated: header reads, decoding fails
    rc, err = run(ckpt, bad)
    assert rc == 1 and "0001_sat.jpg: not a readable image" in err
    assert os.listdir(tmp_path / "out") == ["0000_mask.png"]  # the good image is still written


def test_hw2_p2_sh_usage():
    result = subprocess.run(["bash", os.path.join(ROOT, "hw2_p2.sh"), "only-one"], capture_output=True, text=True)
    assert result.returncode != 0 and "usage" in result.stderr
