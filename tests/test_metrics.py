"""core.metrics.ConfusionMatrix against the course grader's formula, and mean_iou_evaluate.py
(through ``main(argv)`` loaded with ``runpy``) against the course grader's own code."""
import math
import os
import runpy

import numpy as np
import pytest
from PIL import Image

from core import cli
from core.course_grader import mean_iou_score, read_mask_array
from core.metrics import ConfusionMatrix
from datasets import DataError
from datasets.masks import PALETTE, class_to_rgb
from tests.conftest import ROOT


def test_matches_course_grader_on_random_masks():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, (5, 40, 30))
    pred = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 7, labels.shape))
    cm = ConfusionMatrix(7)
    for g, p in zip(labels, pred):
        cm.update(g, p)
    miou, per_class, absent = cm.mean_iou()
    ref, ref_ious = mean_iou_score(pred, labels)
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


# ---------------------------------------------------------------- mean_iou_evaluate.py


def write_masks(folder, masks, mode="RGB"):
    os.makedirs(folder, exist_ok=True)
    for i, m in enumerate(masks):
        rgb = Image.fromarray(class_to_rgb(m))
        if mode == "P":
            rgb = Image.fromarray(m.astype(np.uint8), "L").convert("P")
            rgb.putpalette(PALETTE.flatten().tolist())
        elif mode != "RGB":
            rgb = rgb.convert(mode)
        rgb.save(os.path.join(folder, f"{i:04d}_mask.png"))


def evaluate(gt, pred, capsys):
    main = runpy.run_path(os.path.join(ROOT, "mean_iou_evaluate.py"), run_name="mean_iou_evaluate")["main"]
    code = cli.run(main, ["-g", str(gt), "-p", str(pred)], expected=(DataError,))
    out = capsys.readouterr()
    return code, out.out, out.err


def random_pair(tmp_path, seed, shape=(4, 32, 32)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, shape)
    pred = np.where(rng.random(labels.shape) < 0.5, labels, rng.integers(0, 7, labels.shape))
    write_masks(tmp_path / "gt", labels)
    write_masks(tmp_path / "pred", pred)
    return labels, pred


def test_cli_prints_the_course_graders_numbers(tmp_path, capsys):
    random_pair(tmp_path, 2)
    read = [[read_mask_array(np.asarray(Image.open(tmp_path / side / n))) for n in sorted(os.listdir(tmp_path / side))]
            for side in ("gt", "pred")]
    ref, ref_ious = mean_iou_score(np.stack(read[1]), np.stack(read[0]))
    code, out, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:6] == [f"class #{c} : {ref_ious[c]:1.5f}" for c in range(6)]
    assert lines[-1] == f"mean_iou: {ref:f}"


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_masks_the_grader_reads_are_read_the_same(tmp_path, capsys, mode):
    labels, pred = random_pair(tmp_path, 3)
    expected = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    write_masks(tmp_path / "pred", pred, mode)
    assert Image.open(tmp_path / "pred" / "0000_mask.png").mode == mode
    assert evaluate(tmp_path / "gt", tmp_path / "pred", capsys) == expected


@pytest.mark.parametrize("mode, message", [("L", "single-channel (grayscale or class-index)"), ("LA", "2-channel")])
def test_masks_the_grader_cannot_read_are_refused(tmp_path, capsys, mode, message):
    labels, pred = random_pair(tmp_path, 4)
    Image.fromarray(pred[1].astype(np.uint8)).convert(mode).save(tmp_path / "pred" / "0001_mask.png")
    code, out, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 1 and out == "" and "0001_mask.png: a " + message in err and "RGB" in err


def test_every_scored_class_absent_is_an_error_not_nan(tmp_path, capsys):
    unknown = np.full((2, 8, 8), 6)
    write_masks(tmp_path / "gt", unknown)
    write_masks(tmp_path / "pred", unknown)
    code, out, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 1 and "nan" not in out and "mean IoU is undefined" in err


def test_pairs_by_name_and_reports_missing(tmp_path, capsys):
    m = np.zeros((1, 8, 8), int)
    write_masks(tmp_path / "gt", np.concatenate([m, m]))
    write_masks(tmp_path / "pred", m)
    code, _, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 1 and "0001_mask.png: missing" in err


def test_size_mismatch_empty_same_and_broken(tmp_path, capsys):
    write_masks(tmp_path / "gt", np.zeros((1, 8, 8), int))
    write_masks(tmp_path / "pred", np.zeros((1, 4, 4), int))
    code, _, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 1 and "0000_mask.png: prediction is 4x4" in err
    (tmp_path / "empty").mkdir()
    code, _, err = evaluate(tmp_path / "empty", tmp_path / "pred", capsys)
    assert code == 1 and "no .png masks" in err
    code, _, err = evaluate(tmp_path / "gt", tmp_path / "gt", capsys)
    assert code == 1 and "are one folder" in err
    (tmp_path / "pred" / "0000_mask.png").write_bytes(b"")
    code, _, err = evaluate(tmp_path / "gt", tmp_path / "pred", capsys)
    assert code == 1 and "0000_mask.png: not a readable image (empty file)" in err
