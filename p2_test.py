"""Problem 2 inference: write ``<id>_mask.png`` for every ``<id>_sat.jpg`` of a folder.

    python p2_test.py --images hw2_data/p2_data/validation --output runs/p2_pred
    python p2_test.py --images hw2_data/p2_data/validation --output runs/p2_pred \\
        --gt hw2_data/p2_data/validation          # also print the grader's mIoU, scored in memory
    python p2_test.py --images scenes --output scenes_pred --overlap 0.5   # e.g. 2448x2448 originals
    bash hw2_2.sh <image dir> <output dir>        # the course's entry points: baseline FCN32s,
    bash hw2_2_best.sh <image dir> <output dir>   # improved FCN8s (= hw2_p2.sh)

The model, its constructor arguments and its input normalisation come from the checkpoint:
``--checkpoint``, by default ``$P2_CKPT`` (empty counts as unset), else the default checkpoint
of ``--model`` next to this file (``checkpoints/p2_fcn8s_best.pt``, or
``checkpoints/p2_fcn32s_best.pt`` with ``--model fcn32s``), downloaded when missing
(``core/hub.py``). With ``--model``, a checkpoint holding another model is refused. Images of any size up to 20000x20000 are
predicted by ``core.sliding_window`` in windows of the model's input size (a 512x512 tile is
one window: exactly the model's own prediction). Masks are RGB palette PNGs of the input's
size (``datasets.masks``). Images are decoded in ``--workers`` processes and masks encoded and
written in a thread, beside the model. ``--precision auto`` predicts in exactly the precision
the checkpoint was validated in during training, so the masks score what the training log says
(fp32, with a note, on a device without arithmetic for it: ``core/inference.py``);
``--precision bf16`` runs bf16 autocast with channels_last, faster on a CPU with bf16
arithmetic (the README's Performance section measures both).

Images are ``<id>_sat.jpg``, also ``.jpeg`` and in any letter case (``<id>_sat.JPG``); two
images of one id are refused. macOS metadata from a zip (``._*``, ``__MACOSX/``) is ignored with
one warning. ``--gt`` is never the output folder (the masks would score 1.0 against
themselves). ``--window`` is at most 20000, and a window that cannot fit in the device's free
memory is refused before anything is allocated; ``--batch-size`` is lowered, with a warning,
to what fits (``check_window``).

The output folder is never the image folder (compared after resolving links), and a file
this script did not write is never replaced: ``.p2_test.json`` in the output folder lists the
masks it wrote (name, size, mtime, inode; ``core.fileio.WrittenFiles``, which also reads the record
of earlier versions), so running a command again replaces its own masks, while
any other existing ``<id>_mask.png`` (e.g. ground truth) is refused unless ``--overwrite``.
Other files are left alone, with a warning. Each PNG is written to a temporary name and
renamed, so an interrupted run leaves no truncated mask.

A mask that cannot be written (its name over the file-name limit, a folder in its place) is
named and the others are still written, exit 1. A full, read-only or failing disk stops the
run with one line naming the mask and how many were written; running the same command
again, once there is space, finishes (the masks already written are this script's own).

An image that cannot be read (empty, truncated, not an image, a dangling link, a folder, FIFO
or socket named like an image, larger than 20000x20000) is named and skipped: every other mask
is still written, and the exit status is 1. Exit status: 0 every mask written; 1 an error,
one line naming the file or flag; 130 Ctrl-C; 128 + N a scheduler's stop signal N (143 for
SIGTERM), which stops grading as Ctrl-C does: the mask in flight is finished and recorded.
"""
import argparse
import errno
import os
import signal
import sys
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core import cli, hub
from core.checkpoint import CheckpointError
from core.fileio import AsyncWriter, WrittenFiles, atomic_write_bytes, file_id, is_temporary, remove_orphans
from core.inference import load_for_inference
from core.metrics import ConfusionMatrix
from core.runtime import StopSignals, ignore_stop_signals
from core.sliding_window import WEIGHTINGS, available_bytes, native_window, predict_masks, window_bytes
from datasets import NUM_CLASSES, DataError, list_pairs, read_mask, read_rgb
from datasets.common import MAX_SIDE, format_problems, list_dir
from datasets.masks import encode_png
from datasets.p2 import MASK_SUFFIX

MARKER = ".p2_test.json"
# A write that fails with one of these fails for every later mask too: stop. Any other error
# (a name too long for the file system, a folder where the mask goes) costs that mask only.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


class Images(Dataset):
    """``(k, uint8 3 x H x W image or None, error message)``: an image that cannot be read is
    reported, not raised, so that the other images still run."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        try:
            return k, torch.from_numpy(read_rgb(self.paths[k])).permute(2, 0, 1), ""
        except DataError as e:
            return k, None, str(e)


def readable(loader, errors):
    """The ``(k, image)`` items of ``loader`` that decoded; the others' messages go to ``errors``."""
    for k, image, error in loader:
        if image is None:
            errors.append(error)
        else:
            yield k, image


def output_folder(folder, images, names, overwrite):
    """The ``WrittenFiles`` record of the output folder (see the docstring), once it is checked:
    UserError for the image folder, a file, or a mask there this script did not write (unless
    ``overwrite``); warnings for the other files it holds."""
    if os.path.realpath(folder) == os.path.realpath(images):
        raise cli.UserError(f"--output {folder}: is the image folder {images}; the masks would be written "
                            "beside the images (where ground-truth <id>_mask.png may live): choose another folder")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise cli.UserError(f"--output {folder}: exists and is not a folder")
    os.makedirs(folder, exist_ok=True)
    record = WrittenFiles(folder, MARKER, "p2_test.py")
    foreign = [n for n in names if os.path.lexists(os.path.join(folder, n)) and not record.wrote(n)]
    if foreign and not overwrite:
        raise cli.UserError(format_problems(
            f"--output {folder}: {len(foreign)} mask(s) there were not written by this script (ground truth?); "
            "pass --overwrite to replace them, or choose another folder:",
            [os.path.join(folder, n) for n in foreign]))
    listed = list_dir(folder)
    temporary = remove_orphans(folder, [n for n in listed if is_temporary(n)])  # a killed run's, an hour on
    if temporary:
        print(f"warning: --output {folder} holds {len(temporary)} temporary file(s) of a run that was killed or "
              f"is running (e.g. {temporary[0]}); they are removed by a run an hour from now", file=sys.stderr)
    others = sorted(set(listed) - set(names) - {MARKER} - {n for n in listed if is_temporary(n)})
    if others:
        print(f"warning: --output {folder} already holds {len(others)} other file(s) (e.g. {others[0]}); they are "
              "left alone, but mean_iou_evaluate.py reports any other .png there as unpaired", file=sys.stderr)
    return record


def write_mask(folder, name, classes, written, errors, gt_path=None, cm=None):
    """Encode and write one mask (atomically), record it, and score it against ``gt_path``.
    A failure that concerns this mask only goes to ``errors``; a full or read-only disk raises."""
    path = os.path.join(folder, name)
    try:
        atomic_write_bytes(path, encode_png(classes))
    except OSError as e:
        if e.errno in DISK_ERRORS:
            raise
        errors.append(f"cannot write {cli.error_message(e)}")
        return
    written[name] = file_id(path)
    if cm is not None:
        try:
            gt = read_mask(gt_path)
        except DataError as e:
            errors.append(str(e))
            return
        if gt.shape != classes.shape:
            errors.append(f"{gt_path}: ground truth is {gt.shape[1]}x{gt.shape[0]} but the image is "
                          f"{classes.shape[1]}x{classes.shape[0]}")
        else:
            cm.update(torch.from_numpy(gt), torch.from_numpy(classes))


def check_gt_folder(gt_dir, output):
    """UserError when ``--gt`` is the output folder: the masks would be scored against themselves."""
    if os.path.realpath(gt_dir) == os.path.realpath(output):
        raise cli.UserError(f"--gt {gt_dir} is the output folder {output}: the predictions would be scored against "
                            "themselves (mean_iou 1.0); give the folder of the ground-truth <id>_mask.png files")
    if os.path.isfile(os.path.join(gt_dir, MARKER)):
        print(f"warning: --gt {gt_dir} holds {MARKER}: its masks were written by p2_test.py (predictions, not "
              "ground truth)", file=sys.stderr)


def check_window(window, model, batch_size, device):
    """The number of windows per forward pass: ``batch_size``, or fewer when that many cannot
    fit in the device's free memory (a warning says so). UserError for a window larger than
    any image read or one that cannot fit alone, before anything is allocated.

    ``window_bytes`` is a lower bound (measured peaks on the CPU: 1.2-2.1x it), so one window
    is refused only when it surely cannot fit, and a batch is kept within half the free memory.
    """
    if window > MAX_SIDE:
        raise cli.UserError(f"--window {window}: at most {MAX_SIDE} (the largest image side read); larger images "
                            "are predicted window by window anyway")
    per_window, free = window_bytes(model, window), available_bytes(device)
    if free is None or 2 * per_window * batch_size <= free:
        return batch_size
    gib = 2 ** 30
    if per_window > free:
        raise cli.UserError(f"--window {window}: one window needs at least {per_window / gib:.1f} GiB, more than "
                            f"the {free / gib:.1f} GiB free on {device}; use a smaller --window (512 is the "
                            "training tile)")
    fits = max(1, free // (2 * per_window))
    print(f"warning: --batch-size {batch_size}: {batch_size} windows of {window}x{window} need about "
          f"{2 * per_window * batch_size / gib:.1f} GiB, more than the {free / gib:.1f} GiB free on {device}; "
          f"using {fits}", file=sys.stderr)
    return fits


def check_gt(gt_dir, ids):
    paths = [os.path.join(gt_dir, i + MASK_SUFFIX) for i in ids]
    missing = [f"{p}: missing" for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(format_problems(f"--gt {gt_dir}: {len(missing)} ground-truth mask(s) missing:", missing))
    return paths


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    for flag, value in (("--images", args.images), ("--output", args.output)):
        if not value:
            raise cli.UserError(f"{flag}: empty path")
    if args.gt:
        check_gt_folder(args.gt, args.output)
    pairs = list_pairs(args.images, require_masks=False)
    ids = list(pairs)
    gt_paths = check_gt(args.gt, ids) if args.gt else [None] * len(ids)
    loaded = load_for_inference(args.checkpoint, "p2", args.device, args.precision, args.model)
    model, device = loaded.model, loaded.device
    try:
        window = native_window(model, args.window)
    except ValueError as e:
        raise cli.UserError(f"--window: {e}") from None
    batch_size = check_window(window, model, args.batch_size, device)
    names = [i + MASK_SUFFIX for i in ids]
    record = output_folder(args.output, args.images, names, args.overwrite)
    try:
        record.claim(names)
    except OSError as e:
        raise cli.UserError(f"--output {args.output}: cannot write into this folder ({e.strerror or e})") from None

    paths = [os.path.join(args.images, pairs[i]) for i in ids]
    loader = DataLoader(Images(paths), batch_size=None, num_workers=args.workers,
                        prefetch_factor=1 if args.workers else None, pin_memory=device.type == "cuda",
                        worker_init_fn=ignore_stop_signals if args.workers else None)
    cm = ConfusionMatrix(NUM_CLASSES) if args.gt else None
    errors, written, stopped, full = [], {}, None, None
    masks = predict_masks(model, readable(loader, errors), mean=loaded.preprocess["mean"],
                          std=loaded.preprocess["std"], window=window, overlap=args.overlap,
                          weighting=args.weighting, batch_size=batch_size, device=device, dtype=loaded.dtype,
                          channels_last=loaded.channels_last)
    writer = AsyncWriter("mask-writer")  # one mask is encoded and written while the next image is predicted
    with StopSignals() as signals:  # SIGTERM (a scheduler's) stops grading as Ctrl-C does
        try:
            for k, classes in tqdm(masks, total=len(ids), desc="predict", unit="image", file=sys.stderr,
                                   disable=None):
                writer.submit([partial(write_mask, args.output, names[k], classes, written, errors, gt_paths[k], cm)])
            writer.wait()  # re-raises a failed write (e.g. a full disk)
        except KeyboardInterrupt:
            stopped = signals.signum or signal.SIGINT
        except OSError as e:
            if e.errno not in DISK_ERRORS:
                raise
            full = e  # every later mask would fail too
        finally:
            signals.hold()  # a second signal waits for the write in flight and the record
            try:
                writer.close()  # the write in flight ends before the record is made
            except OSError:
                pass  # a write that failed while stopping: its mask is not recorded as written
            try:
                record.finish(written)
            except OSError as e:  # claim() recorded every name first: the masks still count as this script's
                print(f"warning: {cli.error_message(e)} (the record of the masks written)", file=sys.stderr)
    if full is not None:
        raise cli.UserError(f"{cli.error_message(full)}; {len(written)} of {len(ids)} mask(s) were written to "
                            f"{args.output}; free some space and run the same command again")
    if stopped is not None:
        by = "" if stopped == signal.SIGINT else f"stopped by {signal.Signals(stopped).name}; "
        raise cli.Interrupted(f"{by}{len(written)} of {len(ids)} mask(s) written to {args.output}; "
                              "run the same command again to write them all", exit_code=128 + stopped)
    print(f"wrote {len(written)} mask(s) to {args.output}")
    if cm is not None:
        print(cm.grader_report())
    if errors:
        raise DataError(format_problems(f"{len(errors)} image(s) could not be predicted or their mask written "
                                        "(every other mask was written):", errors))
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter, add_help=add_help,
                                parents=[cli.inference_parser("p2", 8, "windows per forward pass")])
    p.add_argument("--model", default=None,
                   choices=hub.graded_models("p2"),
                   help="the model to grade: its default checkpoint when no --checkpoint / $P2_CKPT is given "
                        "(None: fcn8s), and a checkpoint holding another model is refused")
    p.add_argument("--images", required=True, help="folder of <id>_sat.jpg images")
    p.add_argument("--output", required=True, help="folder for the <id>_mask.png predictions (created if needed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing <id>_mask.png files that this script did not write")
    p.add_argument("--gt", default="", help="folder of <id>_mask.png ground truth: also print the grader's mIoU")
    p.add_argument("--window", type=cli.positive_int, default=None,
                   help="sliding-window side, at most 20000; None: the model's input size (FCN8s takes only 512), "
                        "else 512. A window that cannot fit in free memory is refused")
    p.add_argument("--overlap", type=cli.open_fraction, default=0.25,
                   help="least overlap of neighbouring windows, a fraction of the window (images larger than it)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="gaussian", help="blending of overlapping windows")
    p.add_argument("--workers", type=cli.nonneg_int, default=2, help="image-decoding processes (0: decode in this one)")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError, CheckpointError)))
