"""Problem 1 inference: predict a label for every image of a folder and write the grading CSV.

    python p1_test.py --images hw2_data/p1_data/val_50 --output pred.csv     # prints accuracy too
    python p1_test.py --images test_dir --output pred.csv --checkpoint runs/p1/best.pt
    python p1_test.py --score-csv pred.csv    # accuracy of an existing CSV, labels from its image ids

The CSV has the header ``image_id,label`` and one row per image in sorted file-name order:
the file name (e.g. ``13_207.png``) and the predicted integer label. Names need not carry a
label; when every name does (``<label>_<index>.png``), or with ``--score``, the accuracy is
printed. The model is rebuilt from the checkpoint (model name, constructor arguments, input
size and normalisation are stored in it), by default ``$P1_CKPT`` or ``checkpoints/p1_best.pt``
next to this script.
"""
import argparse
import csv
import os

import torch

import engine
from datasets import DataError, P1Images, parse_label
from datasets.common import format_problems
from engine import CheckpointError
from metrics import ConfusionMatrix
from p1_train import model_inputs

REPO = os.path.dirname(os.path.abspath(__file__))


def default_checkpoint():
    return os.environ.get("P1_CKPT") or os.path.join(REPO, "checkpoints", "p1_best.pt")


def load_model(path, device):
    """(model in eval mode on ``device``, checkpoint dict) from a P1 checkpoint."""
    return engine.model_from_checkpoint(path, "p1", device)


@torch.inference_mode()
def predict(model, ckpt, images, device, batch_size, dtype=None):
    """Predicted labels (CPU int64) of uint8 N x 3 x 32 x 32 ``images``, in order."""
    norm = ckpt["normalize"]
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.pin_memory()
    preds = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size].to(device, non_blocking=True)
        x = model_inputs(batch, norm["mean"], norm["std"], ckpt["img_size"], channels_last)
        with engine.autocast(device, dtype):
            preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds)


def write_predictions(path, names, preds):
    engine.write_csv(path, ["image_id", "label"], zip(names, preds.tolist()))


def score(labels, preds, num_classes):
    """ConfusionMatrix of predictions against labels parsed from the file names."""
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.as_tensor(labels), torch.as_tensor(preds))
    return cm


def score_csv(path, num_classes):
    """ConfusionMatrix of an ``image_id,label`` CSV against the labels in its image ids."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not rows or not {"image_id", "label"} <= set(rows[0]):
        raise DataError(f"{path}: expected a header image_id,label and at least one row")
    labels, preds, problems = [], [], []
    for i, row in enumerate(rows, start=2):
        label = parse_label(row["image_id"], num_classes)
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
    total = int(cm.mat.sum())
    return f"accuracy: {cm.accuracy():.6f} ({int(cm.mat.diag().sum())}/{total})"


def main(args):
    try:
        if args.score_csv:
            print(report(score_csv(args.score_csv, args.num_classes)))
            return
        if not args.images or not args.output:
            raise SystemExit("error: --images and --output are required (or pass --score-csv CSV)")
        device = engine.resolve_device(args.device)
        model, ckpt = load_model(args.checkpoint, device)
        num_classes = ckpt["model_kwargs"]["num_classes"]
        data = P1Images(args.images, require_labels=False, num_classes=num_classes, progress=False)
        unlabelled = [n for n, y in zip(data.files, data.labels.tolist()) if y < 0]
        if args.score and unlabelled:
            raise SystemExit(f"error: --score: {len(unlabelled)} file name(s) carry no label, e.g. {unlabelled[0]}")
        preds = predict(model, ckpt, data.images, device, args.batch_size, engine.amp_dtype(device, args.amp))
        write_predictions(args.output, data.files, preds)
        print(f"wrote {len(preds)} predictions to {args.output}")
        if not unlabelled:
            print(report(score(data.labels, preds, num_classes)))
    except (DataError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # the output CSV cannot be written
        raise SystemExit(f"error: {args.output}: cannot write ({e})") from None


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=default_checkpoint(),
                   help="P1 checkpoint (default: $P1_CKPT, else checkpoints/p1_best.pt next to this script; "
                        "now %(default)s)")
    p.add_argument("--images", default=None, help="folder of images to classify")
    p.add_argument("--output", default=None, help="CSV to write (image_id,label)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="mixed-precision inference")
    p.add_argument("--score", action="store_true",
                   help="print the accuracy; an error if a file name carries no label")
    p.add_argument("--score-csv", default=None, metavar="CSV",
                   help="only score this existing image_id,label CSV against the labels in its image ids")
    p.add_argument("--num-classes", type=int, default=50,
                   help="number of classes for --score-csv (default: %(default)s)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
