import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.masks import class_to_rgb
from metrics import ConfusionMatrix
from tests.conftest import ROOT


def naive_grader_miou(pred, labels):
    """The course grader's formula over stacked arrays, written independently of metrics.py."""
    ious = []
    for i in range(6):
        tp_fp = np.sum(pred == i)
        tp_fn = np.sum(labels == i)
        tp = np.sum((pred == i) * (labels == i))
        ious.append(tp / (tp_fp + tp_fn - tp))
    return sum(ious) / 6, ious


def test_matches_naive_grader_on_random_masks():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, (5, 40, 30))
    pred = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 7, labels.shape))
    cm = ConfusionMatrix(7)
    for g, p in zip(labels, pred):
        cm.update(g, p)
    miou, per_class, absent = cm.mean_iou()
    ref, ref_ious = naive_grader_miou(pred, labels)
    assert absent == []
    assert abs(miou - ref) < 1e-9
    for c in range(6):
        assert abs(per_class[c] - ref_ious[c]) < 1e-9


def test_hand_computed_tiny_case():
    gt = np.array([[0, 0, 1, 6]])
    pred = np.array([[0, 1, 1, 1]])
    cm = ConfusionMatrix(7)
    cm.update(gt, pred)
    miou, per_class, absent = cm.mean_iou()
    assert per_class[0] == 0.5  # TP 1, FN 1
    assert abs(per_class[1] - 1 / 3) < 1e-12  # TP 1, FP 2 (one of them on an unknown pixel)
    assert absent == [2, 3, 4, 5]
    assert abs(miou - (0.5 + 1 / 3) / 2) < 1e-12


def test_pooled_over_images_not_averaged():
    cm = ConfusionMatrix(7)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))  # image IoU 1
    cm.update(np.array([0]), np.array([1]))  # image IoU 0 for class 0
    assert cm.iou()[0] == 4 / 5


def test_absent_class_reported_not_nan():
    cm = ConfusionMatrix(7)
    cm.update(np.zeros(4, int), np.zeros(4, int))
    miou, per_class, absent = cm.mean_iou()
    assert miou == 1.0 and absent == [1, 2, 3, 4, 5] and math.isnan(per_class[3])
    assert "class #3 : absent" in cm.grader_report()


def test_ignore_index_and_accuracy():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2, 255, -1]), np.array([0, 1, 0, 2, 2]))
    assert int(cm.mat.sum()) == 3
    assert cm.accuracy() == pytest.approx(2 / 3)
    assert cm.per_class_accuracy().tolist() == [1.0, 1.0, 0.0]


def _write_masks(folder, masks):
    os.makedirs(folder, exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(class_to_rgb(m)).save(os.path.join(folder, f"{i:04d}_mask.png"))


def run_eval(gt, pred):
    return subprocess.run([sys.executable, "mean_iou_evaluate.py", "-g", str(gt), "-p", str(pred)], cwd=ROOT,
                          capture_output=True, text=True)


def test_cli_matches_naive_grader(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 7, (4, 32, 32))
    pred = np.where(rng.random(labels.shape) < 0.5, labels, rng.integers(0, 7, labels.shape))
    _write_masks(tmp_path / "gt", labels)
    _write_masks(tmp_path / "pred", pred)
    r = run_eval(tmp_path / "gt", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    ref, ref_ious = naive_grader_miou(pred, labels)
    for c in range(6):
        assert lines[c] == f"class #{c} : {ref_ious[c]:1.5f}"
    assert lines[-1] == f"mean_iou: {ref:f}"


def test_cli_pairs_by_name_and_reports_missing(tmp_path):
    m = np.zeros((1, 8, 8), int)
    _write_masks(tmp_path / "gt", np.concatenate([m, m]))
    _write_masks(tmp_path / "pred", m)
    r = run_eval(tmp_path / "gt", tmp_path / "pred")
    assert r.returncode != 0
    assert "0001_mask.png: missing" in r.stderr


def test_cli_size_mismatch_and_empty_folder(tmp_path):
    _write_masks(tmp_path / "gt", np.zeros((1, 8, 8), int))
    _write_masks(tmp_path / "pred", np.zeros((1, 4, 4), int))
    r = run_eval(tmp_path / "gt", tmp_path / "pred")
    assert r.returncode != 0 and "0000_mask.png" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_eval(tmp_path / "empty", tmp_path / "pred")
    assert r.returncode != 0 and "no .png masks" in r.stderr
