"""Score predicted P2 masks against ground truth, as the course grader does.

    python3 mean_iou_evaluate.py -g hw2_data/p2_data/validation -p runs/p2_pred

Prints ``class #i : x.xxxxx`` for classes 0..5 and then ``mean_iou: x.xxxxxx``, the grader's
format and numbers. A mask is read as the grader reads it: ``imageio.v2.imread``, channels 0..2
thresholded at 128 (``datasets.masks.rgb_to_class``, the repo's one decoder); IoU is counted
over all pixels of all images together (``core.metrics.ConfusionMatrix``).

What the grader can read is read: RGB and RGBA PNGs (it indexes channels 0..2, so alpha is
ignored) and palette PNGs (imageio expands them to RGB). What would crash it is an error
naming the file: a single-channel PNG (grayscale or class indices: a 2-D array) or
gray + alpha (2 channels).

Differences from the course script, on purpose:
  * masks are paired by file name, not by sorted position; a name present on one side only
    is an error that lists the names; ``-g`` and ``-p`` naming one folder is an error; a ``-g``
    folder holding ``p2_test.py``'s record ``.p2_test.json`` (predictions) gets a warning;
  * macOS metadata from a zip (``._*`` files, ``__MACOSX/``) is never a mask: ignored with one
    warning; an entry named like a mask that is not a file (a folder, a FIFO) is an error
    naming it, checked before it is opened;
  * a class absent from both ground truth and prediction is reported as absent and left out
    of the mean (the course script prints nan); when every scored class (0..5) is absent the
    mean is undefined: an error, exit 1;
  * masks are streamed one pair at a time (memory does not grow with the folder);
  * masks of any size are accepted if both sides agree (the course script assumes
    512x512); a size mismatch is an error.
"""
import argparse
import math
import os
import sys

import imageio.v2 as imageio

from core import cli
from core.metrics import ConfusionMatrix
from datasets.common import READ_ERRORS, DataError, format_problems, image_size, list_dir
from datasets.masks import NUM_CLASSES, rgb_to_class


def read_grader_mask(path):
    """``H x W`` uint8 class map of a mask file read the course grader's way; DataError naming
    the file when it is unreadable or the grader could not read it."""
    image_size(path)  # the size guard, from the header only
    try:
        rgb = imageio.imread(path)
    except (*READ_ERRORS, RuntimeError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        kind = "single-channel (grayscale or class-index)" if rgb.ndim == 2 else f"{rgb.shape[-1]}-channel"
        raise DataError(f"{path}: a {kind} image of shape {rgb.shape}; the course grader reads masks as RGB "
                        "(H x W x 3, one colour per class) and cannot read this one: save RGB palette colours")
    return rgb_to_class(rgb)


def paired_masks(gt_dir, pred_dir, suffix=".png"):
    """Sorted names present in both folders; DataError naming every unpaired file."""
    if os.path.realpath(gt_dir) == os.path.realpath(pred_dir):
        raise DataError(f"-g {gt_dir} and -p {pred_dir} are one folder: every mask would be scored against itself")
    if os.path.isfile(os.path.join(gt_dir, ".p2_test.json")):
        print(f"warning: -g {gt_dir} holds .p2_test.json: its masks were written by p2_test.py (predictions, not "
              "ground truth)", file=sys.stderr)
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
        gt = read_grader_mask(os.path.join(gt_dir, name))
        pred = read_grader_mask(os.path.join(pred_dir, name))
        if gt.shape != pred.shape:
            raise DataError(f"{os.path.join(pred_dir, name)}: prediction is {pred.shape[1]}x{pred.shape[0]} "
                            f"but the ground truth is {gt.shape[1]}x{gt.shape[0]}")
        cm.update(gt, pred)
    return cm


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    cm = evaluate_folders(args.labels, args.pred)
    if math.isnan(cm.mean_iou()[0]):
        raise DataError(f"no scored class (0..5) occurs in -g {args.labels} or -p {args.pred}: every pixel is "
                        "class 6 (unknown), so the mean IoU is undefined")
    print(cm.grader_report())
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter, add_help=add_help)
    p.add_argument("-g", "--labels", required=True, help="ground-truth folder of <id>_mask.png files")
    p.add_argument("-p", "--pred", required=True, help="prediction folder of <id>_mask.png files")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError,)))
