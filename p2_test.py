"""Problem 2 inference: write ``<id>_mask.png`` for every ``<id>_sat.jpg`` of a folder.

    python p2_test.py --images hw2_data/p2_data/validation --output runs/p2_pred
    python p2_test.py --checkpoint runs/p2_fcn8s/best.pt --images hw2_data/p2_data/validation \\
        --output runs/p2_pred --gt hw2_data/p2_data/validation      # also print the grader's mIoU
    bash hw2_p2.sh <image dir> <output dir>                         # the grading entry point

``--checkpoint`` defaults to ``$P2_CKPT``, else ``checkpoints/p2_best.pt`` next to this file. The
model (``model_name``, ``model_kwargs``) and its input normalisation come from the checkpoint.
Masks are RGB palette PNGs (``datasets.masks``) of the input's size; images of any size are
accepted, batched with others of the same size, in sorted id order. Each mask is written to a
temporary name and renamed, so an interrupted run leaves no truncated PNG. With ``--gt`` the
predictions are scored in memory with ``metrics.ConfusionMatrix``, exactly as
``mean_iou_evaluate.py`` scores the written files.
"""
import argparse
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import engine
from datasets import NUM_CLASSES, DataError, P2Tiles, read_mask
from datasets.masks import encode_png
from datasets.common import format_problems
from datasets.p2 import MASK_SUFFIX
from datasets.transforms import to_float
from metrics import ConfusionMatrix

ROOT = os.path.dirname(os.path.abspath(__file__))


class Images(Dataset):
    """``(uint8 3 x H x W image or None, index, error message)``: an image that fails to decode
    is reported with the others at the end instead of stopping the batch it is in."""

    def __init__(self, tiles):
        self.tiles = tiles

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, k):
        try:
            image, _ = self.tiles.load(k)
        except DataError as e:
            return None, k, str(e)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), k, ""


def collate(items):
    good = [item for item in items if item[0] is not None]
    images = torch.stack([item[0] for item in good]) if good else None
    return images, [item[1] for item in good], [item[2] for item in items if item[2]]


def same_size_batches(sizes, batch_size):
    """Index batches of at most ``batch_size`` images that share one size, in index order."""
    groups = {}
    for k, size in enumerate(sizes):
        groups.setdefault(size, []).append(k)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def load_model(path, device):
    """``(model in eval mode on device, normalize dict)`` rebuilt from a p2 checkpoint."""
    model, ckpt = engine.model_from_checkpoint(path, "p2", device)
    if "normalize" not in ckpt:
        raise engine.CheckpointError(f"{path}: has no 'normalize' entry (not written by p2_train.py)")
    return model, ckpt["normalize"]


def check_gt(gt_dir, ids):
    paths = [os.path.join(gt_dir, i + MASK_SUFFIX) for i in ids]
    missing = [f"{p}: missing" for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(format_problems(f"--gt {gt_dir}: {len(missing)} ground-truth mask(s) missing:", missing))
    return paths


@torch.inference_mode()
def predict_folder(model, normalize, tiles, out_dir, device, batch_size, workers, dtype, gt_paths=None):
    """Write every mask; return ``(written, errors, confusion matrix or None)``."""
    mean = torch.tensor(normalize["mean"], device=device)
    std = torch.tensor(normalize["std"], device=device)
    loader = DataLoader(Images(tiles), batch_sampler=same_size_batches(tiles.sizes, batch_size),
                        collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda")
    cm = ConfusionMatrix(NUM_CLASSES) if gt_paths else None
    written, errors = 0, []
    for images, indices, errs in tqdm(loader, desc="predict", unit="batch", file=sys.stderr):
        errors += errs
        if images is None:
            continue
        with engine.autocast(device, dtype):
            logits = model(to_float(images.to(device, non_blocking=True), mean, std))
        preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
        for k, pred in zip(indices, preds):
            engine.atomic_write_bytes(os.path.join(out_dir, tiles.ids[k] + MASK_SUFFIX), encode_png(pred))
            written += 1
            if cm is not None:
                gt = read_mask(gt_paths[k])
                if gt.shape != pred.shape:
                    errors.append(f"{gt_paths[k]}: ground truth is {gt.shape[1]}x{gt.shape[0]} but the image "
                                  f"is {pred.shape[1]}x{pred.shape[0]}")
                    continue
                cm.update(torch.from_numpy(gt), torch.from_numpy(pred))
    return written, errors, cm


def main(args):
    device = engine.resolve_device(args.device)
    try:
        model, normalize = load_model(args.checkpoint, device)
        tiles = P2Tiles(args.images, require_masks=False)
        gt_paths = check_gt(args.gt, tiles.ids) if args.gt else None
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise DataError(f"--output {args.output}: exists and is not a folder")
        os.makedirs(args.output, exist_ok=True)
        ours = {i + MASK_SUFFIX for i in tiles.ids}
        others = [n for n in os.listdir(args.output) if n not in ours]
        if others:
            print(f"warning: --output {args.output} already holds {len(others)} other file(s) (e.g. {others[0]}); "
                  "they are left alone, but mean_iou_evaluate.py will report any other *_mask.png as unpaired",
                  file=sys.stderr)
        written, errors, cm = predict_folder(model, normalize, tiles, args.output, device, args.batch_size,
                                             args.workers, engine.amp_dtype(device, args.amp), gt_paths)
    except (engine.CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # output folder cannot be created or written
        print(f"error: {e.filename or args.output}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {written} mask(s) to {args.output}")
    if cm is not None:
        print(cm.grader_report())
    if errors:
        print("error: " + format_problems(f"{len(errors)} image(s) could not be processed:", errors),
              file=sys.stderr)
        return 1
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_ckpt = os.environ.get("P2_CKPT", os.path.join(ROOT, "checkpoints", "p2_best.pt"))
    p.add_argument("--checkpoint", default=default_ckpt,
                   help="p2 checkpoint from p2_train.py (default: $P2_CKPT, else checkpoints/p2_best.pt; "
                        "now %(default)s)")
    p.add_argument("--images", required=True, help="folder of <id>_sat.jpg images")
    p.add_argument("--output", required=True, help="folder for the <id>_mask.png predictions (created if needed)")
    p.add_argument("--gt", default="", help="optional folder of <id>_mask.png ground truth: print the mIoU")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = cuda when available (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    return p


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
