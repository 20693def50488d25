"""Problem 1 inference: predict a label for every image of a folder and write the grading CSV.

    python p1_test.py --images hw2_data/p1_data/val_50 --output pred.csv     # prints accuracy too
    python p1_test.py --images test_dir --output out/      # out/test_pred.csv, as the course grades it
    python p1_test.py --images test_dir --output pred.csv --checkpoint runs/p1/best.pt
    python p1_test.py --score-csv pred.csv    # accuracy of an existing CSV, labels from its image ids
    bash hw2_1.sh <image dir> <output folder>  # the course's grading entry point (= hw2_p1.sh)

The CSV has the header ``image_id,label`` and one row per image in sorted file-name order:
the file name (e.g. ``13_207.png``) and the predicted integer label. Names need not carry a
label; when every name does (``<label>_<index>.png``), or with ``--score``, the accuracy is
printed. The model, its input size (``img_size``) and normalisation come from the checkpoint:
``--checkpoint``, by default ``$P1_CKPT`` (empty counts as unset), else
``checkpoints/p1_best.pt`` next to this script, downloaded when missing (``core/hub.py``).

``--output`` is a ``.csv`` path, or a folder that receives ``test_pred.csv`` (the course's
name): an existing folder, or a new one when the path ends in ``/`` or has no extension.
The output is refused when it is one of the input images, names an image file (``.png``,
``.jpg``...), is an existing file that is not a ``.csv``, or is an existing CSV that this
script did not write (a training ``log.csv``, ground truth...) unless ``--overwrite``:
``.p1_test.json`` beside the CSV records the CSVs it wrote, so the same command run again
replaces its own file. The CSV is written atomically. An image that cannot be read (empty,
truncated, not an image, a dangling link, larger than 20000x20000) is named and left out: the
CSV holds the rows of every other image, and the exit status is 1. Exit status: 0 success; 1
an error, one line naming the file or flag; 130 Ctrl-C.
"""
import argparse
import os
import sys

import torch

from core import cli
from core.checkpoint import CheckpointError
from core.fileio import WrittenFiles, file_id, read_csv, write_csv
from core.inference import load_for_inference
from core.metrics import ConfusionMatrix
from datasets import DataError, P1Images, parse_label
from datasets.common import IMAGE_EXTS, format_problems, list_dir

PRED_CSV = "test_pred.csv"  # the prediction file the course's grader reads from the output folder
MARKER = ".p1_test.json"  # beside a CSV: the CSVs this script wrote there (core.fileio.WrittenFiles)


def csv_path(output):
    """The CSV ``--output`` names: ``output`` itself, or ``output/test_pred.csv`` for a folder (an
    existing one, or a new one named with a trailing ``/`` or without an extension)."""
    if not output:
        raise cli.UserError("--output: empty path")
    new_folder = not os.path.lexists(output) and not os.path.splitext(os.path.basename(output.rstrip("/")))[1]
    if os.path.isdir(output) or output.endswith(("/", os.sep)) or new_folder:
        return os.path.join(output, PRED_CSV)
    return output


def check_output(output, path, images, overwrite):
    """UserError when writing the CSV ``path`` (for ``--output output``) could destroy an input, a
    non-CSV file or a CSV this script did not write; else the record of the CSVs written there."""
    shown = output if path == output else f"{output} ({path})"
    real = os.path.realpath(path)
    inputs = {os.path.realpath(os.path.join(images, n)) for n in list_dir(images)}
    if real in inputs and real.lower().endswith(IMAGE_EXTS):
        raise cli.UserError(f"--output {shown}: is one of the input images; write the CSV elsewhere")
    if os.path.isdir(path):
        raise cli.UserError(f"--output {shown}: is a folder")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise cli.UserError(f"--output {shown}: {parent} is not a folder")
    if path.lower().endswith(IMAGE_EXTS):
        raise cli.UserError(f"--output {shown}: names an image file; the output is a CSV (image_id,label) or a folder")
    if os.path.lexists(path) and not path.lower().endswith(".csv"):
        raise cli.UserError(f"--output {shown}: exists and is not a .csv file; refusing to overwrite it")
    written = WrittenFiles(parent, MARKER, "p1_test.py") if os.path.isdir(parent) else None
    if os.path.lexists(path) and not overwrite and not written.wrote(os.path.basename(path)):
        raise cli.UserError(f"--output {shown}: an existing CSV that p1_test.py did not write ({first_line(path)}); "
                            "choose another path, or pass --overwrite to replace it")
    return written


def first_line(path):
    try:
        with open(path, "rb") as f:
            head = f.readline(200).decode("utf-8", "replace").strip()
    except OSError as e:
        return f"unreadable: {e.strerror}"
    return f"header {head!r}" if head else "empty"


def score(labels, preds, num_classes):
    """ConfusionMatrix of predictions against labels parsed from the file names."""
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.as_tensor(labels), torch.as_tensor(preds))
    return cm


def score_csv(path, num_classes):
    """ConfusionMatrix of an ``image_id,label`` CSV against the labels in its image ids."""
    try:
        rows = read_csv(path)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not rows or not {"image_id", "label"} <= set(rows[0]):
        raise DataError(f"{path}: expected a header image_id,label and at least one row")
    labels, preds, problems = [], [], []
    for i, row in enumerate(rows, start=2):
        label = parse_label(row["image_id"] or "", num_classes)
        if label is None:
            problems.append(f"line {i}: image_id {row['image_id']!r} carries no label (expected <label>_<index>.png)")
        elif not (row["label"] or "").strip().isdigit() or int(row["label"]) >= num_classes:
            problems.append(f"line {i}: label {row['label']!r} is not an integer in 0..{num_classes - 1}")
        else:
            labels.append(label)
            preds.append(int(row["label"]))
    if problems:
        raise DataError(format_problems(f"{path}: cannot score {len(problems)} row(s):", problems))
    return score(labels, preds, num_classes)


def report(cm):
    return f"accuracy: {cm.accuracy():.6f} ({int(cm.mat.diag().sum())}/{int(cm.mat.sum())})"


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.score_csv:
        print(report(score_csv(args.score_csv, args.num_classes)))
        return 0
    if not args.images or not args.output:
        raise cli.UserError("--images and --output are required (or pass --score-csv CSV)")
    output = csv_path(args.output)
    written = check_output(args.output, output, args.images, args.overwrite)
    loaded = load_for_inference(args.checkpoint, "p1", args.device, args.precision)
    model, num_classes = loaded.model, loaded.ckpt["model_kwargs"]["num_classes"]
    data = P1Images(args.images, require_labels=False, num_classes=num_classes, progress=False,
                    skip_unreadable=True)
    unlabelled = [n for n, y in zip(data.files, data.labels.tolist()) if y < 0]
    if args.score and unlabelled:
        raise cli.UserError(f"--score: {len(unlabelled)} file name(s) carry no label, e.g. {unlabelled[0]}")
    preds = loaded.map_batches(lambda x: model(x).argmax(1), data.images, args.batch_size, model.img_size)
    if preds is None:  # every image unreadable
        preds = torch.zeros(0, dtype=torch.int64)
    name = os.path.basename(output)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        written = written or WrittenFiles(os.path.dirname(os.path.abspath(output)), MARKER, "p1_test.py")
        written.claim([name])
    except OSError as e:
        raise cli.UserError(f"--output {args.output}: cannot write there ({e.strerror or e})") from None
    write_csv(output, ["image_id", "label"], zip(data.files, preds.tolist()))
    written.finish({name: file_id(output)})
    print(f"wrote {len(preds)} prediction(s) to {output}")
    if data.files and not unlabelled:
        print(report(score(data.labels, preds, num_classes)))
    if data.unreadable:
        raise DataError(format_problems(f"{len(data.unreadable)} image(s) could not be read (left out of "
                                        f"{output}; every other image has its row):", data.unreadable))
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter, add_help=add_help,
                                parents=[cli.inference_parser("p1", 256, "images per batch")])
    p.add_argument("--images", default=None, help="folder of images to classify")
    p.add_argument("--output", default=None,
                   help=f"CSV to write (image_id,label), or a folder: <folder>/{PRED_CSV} (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV that this script did not write")
    p.add_argument("--score", action="store_true", help="print the accuracy; an error if a file name carries no label")
    p.add_argument("--score-csv", default=None, metavar="CSV",
                   help="only score this existing image_id,label CSV against the labels in its image ids")
    p.add_argument("--num-classes", type=cli.positive_int, default=50, help="number of classes for --score-csv")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError, CheckpointError)))
