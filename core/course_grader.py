"""The course grader's mIoU (DLCV hw2 ``mean_iou_evaluate.py``), kept as written there.

A reference, not a tool: tests check ``core.metrics.ConfusionMatrix`` against it and
``bench.py`` times it as the naive baseline. It reads a mask the grader's way (threshold at
128, ``code = 4R + 2G + B``) into a float64 class map and scores stacked maps with one
``np.sum`` per class; like the original it gives NaN for a class absent from both sides.
"""
import numpy as np


def read_mask_array(rgb):
    """The body of the grader's ``read_masks`` for one H x W x 3 uint8 RGB mask."""
    mask = (rgb >= 128).astype(int)
    mask = 4 * mask[:, :, 0] + 2 * mask[:, :, 1] + mask[:, :, 2]
    out = np.empty(mask.shape)
    out[mask == 3] = 0  # (Cyan: 011) Urban land
    out[mask == 6] = 1  # (Yellow: 110) Agriculture land
    out[mask == 5] = 2  # (Purple: 101) Rangeland
    out[mask == 2] = 3  # (Green: 010) Forest land
    out[mask == 1] = 4  # (Blue: 001) Water
    out[mask == 7] = 5  # (White: 111) Barren land
    out[mask == 0] = 6  # (Black: 000) Unknown
    out[mask == 4] = 6  # (Red: 100) Unknown
    return out


def mean_iou_score(pred, labels):
    """``(mean IoU over classes 0..5, [IoU of each class])`` of stacked class maps."""
    mean_iou, per_class = 0, []
    for i in range(6):
        tp_fp = np.sum(pred == i)
        tp_fn = np.sum(labels == i)
        tp = np.sum((pred == i) * (labels == i))
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp_fp + tp_fn - tp)
        mean_iou += iou / 6
        per_class.append(iou)
    return mean_iou, per_class
