"""Score predicted P2 masks against ground truth, as the course grader does.

    python3 mean_iou_evaluate.py -g hw2_data/p2_data/validation -p runs/p2_pred

Prints ``class #i : x.xxxxx`` for classes 0..5 and then ``mean_iou: x.xxxxxx``, the grader's
format and numbers: masks are read with the grader's thresholding (``datasets.masks``) and
IoU is counted over all pixels of all images together (``metrics.ConfusionMatrix``).
Differences from the course script, on purpose:
  * masks are paired by file name, not by sorted position; a name present on one side only
    is an error that lists the names;
  * a class absent from both ground truth and prediction is reported as absent and left out
    of the mean (the course script prints nan);
  * masks are streamed one pair at a time (memory does not grow with the folder);
  * masks of any size are accepted if both sides agree; a size mismatch is an error.
"""
import argparse
import os
import sys

from datasets.common import DataError, format_problems, list_dir
from datasets.masks import NUM_CLASSES
from datasets.p2 import read_mask
from metrics import ConfusionMatrix


def paired_masks(gt_dir, pred_dir, suffix=".png"):
    """Sorted names present in both folders; DataError naming every unpaired file."""
    gt = {n for n in list_dir(gt_dir) if n.endswith(suffix)}
    pred = {n for n in list_dir(pred_dir) if n.endswith(suffix)}
    if not gt:
        raise DataError(f"{gt_dir}: no {suffix} masks in this folder")
    problems = [f"{os.path.join(pred_dir, n)}: missing (present in ground truth)" for n in sorted(gt - pred)]
    problems += [f"{os.path.join(gt_dir, n)}: missing (present in predictions)" for n in sorted(pred - gt)]
    if problems:
        raise DataError(format_problems(f"{len(problems)} mask(s) cannot be paired by name:", problems))
    return sorted(gt)


def evaluate_folders(gt_dir, pred_dir):
    """Stream every pair of masks into one confusion matrix and return it."""
    cm = ConfusionMatrix(NUM_CLASSES)
    for name in paired_masks(gt_dir, pred_dir):
        gt = read_mask(os.path.join(gt_dir, name))
        pred = read_mask(os.path.join(pred_dir, name))
        if gt.shape != pred.shape:
            raise DataError(f"{os.path.join(pred_dir, name)}: prediction is {pred.shape[1]}x{pred.shape[0]} "
                            f"but the ground truth is {gt.shape[1]}x{gt.shape[0]}")
        cm.update(gt, pred)
    return cm


def main(args):
    try:
        cm = evaluate_folders(args.labels, args.pred)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(cm.grader_report())
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-g", "--labels", required=True, help="ground-truth folder of <id>_mask.png files")
    p.add_argument("-p", "--pred", required=True, help="prediction folder of <id>_mask.png files")
    return p


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
