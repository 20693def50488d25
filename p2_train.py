"""Problem 2 training: semantic segmentation of satellite tiles (7 classes) with FCN32s / FCN8s.

The seed's two runs on the official data (one GPU; outputs in runs/p2_fcn32s, runs/p2_fcn8s):

    python p2_train.py --recipe baseline --data-path hw2_data/p2_data --amp
    python p2_train.py --recipe improved --data-path hw2_data/p2_data --amp
    python p2_train.py --recipe improved --data-path hw2_data/p2_data --amp --resume runs/p2_fcn8s/last.pt
    torchrun --nproc_per_node 4 p2_train.py --recipe improved --data-path hw2_data/p2_data --batch-size 2 --sync-bn

CPU runs on the synthetic stand-in data (width 16, no ImageNet weights; ``make demo``; measured
about 3.5 minutes each on 2 busy cores, validation mIoU 0.48 and 0.66):

    python -m datasets.synthetic --out data/synthetic
    python p2_train.py --data-path data/synthetic/p2_data --width 16 --pretrained none --epochs 8 \
        --lr 1e-3 --batch-size 4 --snapshot-epochs 1,4,8 --output-dir runs/demo/p2_fcn32s
    python p2_train.py --recipe improved --data-path data/synthetic/p2_data --width 16 --pretrained none \
        --epochs 6 --lr 1e-3 --switch-sgd-at 5 --sgd-lr 1e-2 --batch-size 4 --snapshot-epochs 1,3,6 \
        --output-dir runs/demo/p2_fcn8s

Recipes (``--recipe``; a flag given on the command line always wins over its recipe's value):

  baseline  The seed's FCN32s run: cross entropy, 40 epochs, masks of validation ids 0010, 0097 and
            0107 shown after epochs 1, 20 and 40. The seed does not name its optimizer or learning
            rate; we use Adam at 1e-4 (a common rate for fine-tuning an ImageNet VGG16), ImageNet
            input normalisation and full 512x512 tiles.
  improved  The seed's FCN8s run: BN-VGG16 backbone (vgg16_bn weights), "extra normalisation" of the
            input images, focal loss instead of cross entropy, Adam then SGD from epoch 70 of 100.
            We read the extra normalisation as per-channel mean/std of the training tiles
            (``--normalize dataset``, stored in the checkpoint), use focal gamma 2 (the focal-loss
            paper's value), Adam at 1e-4 and then SGD at 1e-3 with momentum 0.9 (the seed gives no
            rates). The seed labels this model's figure with the baseline's epochs 1/20/40; for a
            100-epoch run we show 1, 50 and 100 (early / middle / final).

Each epoch writes to ``--output-dir``: ``log.csv`` (phase, lr, train_loss, val_miou and one
``iou_<class>`` column per scored class), ``last.pt``, ``best.pt`` (best validation mIoU, counted
as the course grader counts it), ``snapshots/<id>_epoch<E>.png`` at the snapshot epochs and
``epoch_masks.png`` (rows: ids; columns: image, ground truth, each snapshot epoch); at the end
``curves.png`` and ``per_class_iou.png``. ``p2_test.py --checkpoint <run>/best.pt`` rebuilds the
model and its input normalisation from the checkpoint alone.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import engine
import plots
import pretrained
from datasets import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, DataError, P2Tiles, class_to_rgb, read_rgb
from datasets.masks import encode_png
from datasets.transforms import get_transform as joint_transform
from datasets.transforms import to_float
from metrics import SCORED_CLASSES
from models import MODELS, copy_params_from_vgg16, get_model

# torchvision's ImageNet statistics (the normalisation its pretrained VGG16 weights expect).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Values each --recipe sets (see the module docstring); flags given on the command line win.
RECIPES = {
    "baseline": dict(model="fcn32s", loss="ce", epochs=40, optimizer="adam", lr=1e-4, switch_sgd_at=0,
                     normalize="imagenet", snapshot_epochs="1,20,40"),
    "improved": dict(model="fcn8s", loss="focal", epochs=100, optimizer="adam", lr=1e-4, switch_sgd_at=70,
                     normalize="dataset", snapshot_epochs="1,50,100"),
}


# --------------------------------------------------------------------------- data


def get_dataset(root, split, transform, cache_dir):
    return P2Tiles(os.path.join(root, split), transform=transform, cache_dir=cache_dir,
                   progress=engine.is_main_process())


def get_transform(train, img_size):
    """Flips, 90-degree turns and an optional random crop, all on uint8 (normalisation runs on
    the device in ``make_prepare``)."""
    return joint_transform(train, crop_size=img_size or None)


def dataset_mean_std(dataset):
    """Per-channel mean and std (in 0..1 units) over every pixel of ``dataset``'s images."""
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for k in range(len(dataset)):
        pixels = np.asarray(dataset.load(k)[0], dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(0)
        total_sq += np.square(pixels).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0)).clip(min=1e-6)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def make_prepare(device, mean, std, channels_last):
    """``(uint8 images, uint8 masks) -> (normalised float images, int64 masks)`` on ``device``."""
    mean = torch.tensor(mean, device=device)
    std = torch.tensor(std, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def prepare(batch):
        images, masks = batch
        images = to_float(images.to(device, non_blocking=True), mean, std).contiguous(memory_format=memory_format)
        return images, masks.to(device, non_blocking=True).long()

    return prepare


# --------------------------------------------------------------------------- loss


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, https://arxiv.org/abs/1708.02002): ``-(1 - p_t)^gamma log p_t``.

    Averaged like ``nn.CrossEntropyLoss``: pixels labelled ``ignore_index`` are skipped and, with
    class ``weight``, the sum is divided by the summed weights of the counted pixels; so
    ``gamma = 0`` gives exactly the cross entropy.
    """

    def __init__(self, gamma=2.0, weight=None, ignore_index=IGNORE_INDEX):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        log_p = F.log_softmax(logits.float(), dim=1)  # float32 even under autocast
        valid = target != self.ignore_index
        target = target.where(valid, 0)
        log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -(1 - log_pt.exp()).clamp(min=0).pow(self.gamma) * log_pt
        w = valid.float() if self.weight is None else self.weight[target] * valid
        return (loss * w).sum() / w.sum().clamp(min=1e-12)


def criterion(args):
    # The unknown class (6) is trained like any other class: the grader does not score class 6,
    # but every pixel predicted as class c on an unknown pixel is a false positive for c, so the
    # model must learn to say "unknown" there. Only 255 (padding from crops) is ignored.
    weight = torch.tensor(args.class_weights) if args.class_weights else None
    if args.loss == "focal":
        return FocalLoss(args.focal_gamma, weight, IGNORE_INDEX)
    return nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------- optimisation


def _scheduler(optimizer, schedule, epochs):
    """Stepped once per epoch over a phase of ``epochs`` epochs; None for a constant lr."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if schedule == "step":  # x0.1 after two thirds of the phase
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(2 * epochs // 3, 1), gamma=0.1)
    return None


def build_phases(args):
    """``engine.Phase`` list: ``--optimizer`` from epoch 1, then SGD from ``--switch-sgd-at``."""
    starts = [(args.optimizer, 1, args.lr)]
    if args.switch_sgd_at:
        starts.append(("sgd", args.switch_sgd_at, args.sgd_lr))
    phases = []
    for i, (name, start, lr) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else args.epochs + 1

        def build(params, name=name, lr=lr, epochs=end - start):
            if name == "sgd":
                optimizer = torch.optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
            else:
                optimizer = torch.optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
            return optimizer, _scheduler(optimizer, args.lr_schedule, epochs)

        phases.append(engine.Phase(name, start, build))
    return phases


def check_args(args):
    if args.switch_sgd_at and args.optimizer != "adam":
        raise SystemExit("error: --switch-sgd-at switches from Adam to SGD; it needs --optimizer adam")
    if args.switch_sgd_at == 1:
        raise SystemExit("error: --switch-sgd-at 1 would skip Adam entirely; use --optimizer sgd instead")
    if args.switch_sgd_at > args.epochs:
        engine.log(f"warning: --switch-sgd-at {args.switch_sgd_at} is after --epochs {args.epochs}: "
                   "the SGD phase will not run")
    if args.width != 1 and args.pretrained.lower() != "none":
        raise SystemExit(f"error: ImageNet VGG16 weights only fit the full-width model; with --width "
                         f"{args.width} pass --pretrained none")
    if args.img_size and args.model == "fcn8s" and args.img_size % 512:
        engine.log(f"note: fcn8s pads inputs to a multiple of 512, so --img-size {args.img_size} crops "
                   "cost as much as 512 crops")


def backbone_state_dict(args):
    """The ImageNet VGG16(-BN) state dict ``--pretrained`` names (None for ``none`` or a resumed
    run, which takes every weight from its checkpoint); SystemExit with a hint when absent."""
    if args.resume or args.pretrained.lower() == "none":
        return None
    try:
        return pretrained.load_vgg_state_dict(args.pretrained, MODELS[args.model].vgg_variant)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: --pretrained {args.pretrained}: {e}")


# --------------------------------------------------------------------------- snapshots and figures


def snapshot_indices(val_set, ids):
    """Indices in ``val_set`` of the requested ids; ids it lacks are skipped with a warning."""
    missing = [i for i in ids if i not in val_set.ids]
    if missing:
        engine.log(f"warning: snapshot id(s) {', '.join(missing)} not in {val_set.root}; skipped")
    return [val_set.ids.index(i) for i in ids if i in val_set.ids]


@torch.inference_mode()
def save_snapshots(model, val_set, indices, epoch, folder, prepare, device, dtype):
    """Write the predicted masks of ``indices`` as ``<folder>/<id>_epoch<E>.png``."""
    model.eval()
    for k in indices:
        image, mask = val_set[k]
        inputs, _ = prepare((image[None], mask[None]))
        with engine.autocast(device, dtype):
            pred = model(inputs).argmax(1)[0]
        path = os.path.join(folder, f"{val_set.ids[k]}_epoch{epoch}.png")
        engine.atomic_write_bytes(path, encode_png(pred.cpu().numpy()))


def draw_epoch_masks(val_set, indices, folder, epochs, out_png):
    """The seed's figure: one row per id; image, ground truth, then the masks of ``epochs``."""
    rows = []
    for k in indices:
        image, mask = val_set.load(k)
        snaps = [os.path.join(folder, f"{val_set.ids[k]}_epoch{e}.png") for e in epochs]
        rows.append((val_set.ids[k], [np.asarray(image), class_to_rgb(mask)] +
                     [read_rgb(p) if os.path.exists(p) else None for p in snaps]))
    plots.plot_mask_grid(rows, ["image", "ground truth"] + [f"epoch {e}" for e in epochs], out_png)


def draw_curves(out_dir):
    log_csv = os.path.join(out_dir, "log.csv")
    if os.path.exists(log_csv):
        plots.plot_curves(log_csv, os.path.join(out_dir, "curves.png"), "val_miou")
        plots.plot_per_class_iou(log_csv, os.path.join(out_dir, "per_class_iou.png"), "val_miou")


def score_fn(cm):
    """Validation mIoU over classes 0..5 as the grader counts it, plus one column per class."""
    miou, per_class, _ = cm.mean_iou(SCORED_CLASSES)
    columns = {"val_miou": f"{miou:.6f}"}
    columns.update({f"iou_{CLASS_NAMES[c]}": f"{v:.6f}" for c, v in per_class.items()})
    return miou, columns


# --------------------------------------------------------------------------- main


def main(args):
    check_args(args)
    args.output_dir = args.output_dir or os.path.join("runs", f"p2_{args.model}")
    backbone = backbone_state_dict(args)
    device = engine.setup_run(args)
    model_kwargs = {"num_classes": NUM_CLASSES, "width": args.width}
    model = get_model(args.model, **model_kwargs)
    if backbone is not None:
        copied = copy_params_from_vgg16(model, backbone)
        engine.log(f"initialised {len(copied)} backbone tensors from {args.pretrained} ({model.vgg_variant})")

    cache_dir = None if args.no_cache else args.cache_dir
    try:
        train_set = get_dataset(args.data_path, "train", get_transform(True, args.img_size), cache_dir)
        val_set = get_dataset(args.data_path, "validation", get_transform(False, 0), cache_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if len(train_set) < args.batch_size * engine.get_world_size():
        print(f"error: {train_set.root} has {len(train_set)} tiles, fewer than one batch "
              f"({args.batch_size} x {engine.get_world_size()} processes); lower --batch-size", file=sys.stderr)
        return 1
    if args.normalize == "dataset":
        mean, std = dataset_mean_std(train_set)
        engine.log(f"training-tile statistics: mean {mean}, std {std}")
    else:
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)

    train_loader = engine.make_loader(train_set, args.batch_size, True, args.workers, device, args.seed)
    val_loader = engine.make_loader(val_set, args.batch_size, False, args.workers, device)
    prepare = make_prepare(device, mean, std, args.channels_last)

    model, model_without_ddp = engine.wrap_model(model, device, args.channels_last, args.sync_bn)
    loss_fn = criterion(args).to(device)
    dtype = engine.amp_dtype(device, args.amp)

    snapshot_dir = os.path.join(args.output_dir, "snapshots")
    indices = snapshot_indices(val_set, args.snapshot_ids)

    def on_epoch_end(epoch, net):
        if epoch in args.snapshot_epochs and indices:
            save_snapshots(net, val_set, indices, epoch, snapshot_dir, prepare, device, dtype)
            shown = sorted(e for e in set(args.snapshot_epochs) if e <= epoch)
            draw_epoch_masks(val_set, indices, snapshot_dir, shown, os.path.join(args.output_dir, "epoch_masks.png"))

    engine.log(f"{args.model} (width {args.width}): {sum(p.numel() for p in model.parameters()):,} parameters; "
               f"{len(train_set)} train / {len(val_set)} val tiles; {args.loss} loss; device {device}")
    status = 0
    try:
        best, _ = engine.fit(args, problem="p2", model=model, model_without_ddp=model_without_ddp,
                             model_kwargs=model_kwargs, criterion=loss_fn, phases=build_phases(args),
                             train_loader=train_loader, val_loader=val_loader, prepare_train=prepare,
                             prepare_eval=prepare, num_classes=NUM_CLASSES, score_fn=score_fn, device=device,
                             dtype=dtype, extra_ckpt={"normalize": {"mean": mean, "std": std}},
                             on_epoch_end=on_epoch_end)
        engine.log(f"best val mIoU {best:.4f}: {os.path.join(args.output_dir, 'best.pt')}")
    except engine.NonFiniteLossError as e:
        print(f"error: training stopped, {e}; {os.path.join(args.output_dir, 'last.pt')} holds the last "
              "finished epoch (lower --lr, or drop --amp)", file=sys.stderr)
        status = 1
    except engine.CheckpointError as e:
        print(f"error: --resume: {e}", file=sys.stderr)
        status = 1
    except DataError as e:  # with --no-cache a file that passed the header check can fail to decode
        print(f"error: {e}; {os.path.join(args.output_dir, 'last.pt')} holds the last finished epoch",
              file=sys.stderr)
        status = 1
    if engine.is_main_process():
        draw_curves(args.output_dir)
    engine.cleanup_distributed()
    return status


# --------------------------------------------------------------------------- command line


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag's help; the module docstring printed as written."""


def int_list(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def id_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def class_weights(text):
    """``""`` -> None; else exactly NUM_CLASSES non-negative numbers."""
    if not text:
        return None
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != NUM_CLASSES or min(weights) < 0 or sum(weights) == 0:
        raise argparse.ArgumentTypeError(f"expected {NUM_CLASSES} comma-separated non-negative numbers "
                                         f"({', '.join(CLASS_NAMES)}), got {text!r}")
    return weights


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=HelpFormatter)
    p.add_argument("--recipe", default="baseline", choices=list(RECIPES),
                   help="the seed's settings; " + "; ".join(
                       f"{name}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
                       for name, values in RECIPES.items()) + " (flags given explicitly win)")
    p.add_argument("--data-path", default="data/synthetic/p2_data", help="folder holding train/ and validation/")
    p.add_argument("--model", choices=["fcn32s", "fcn8s"], help="network (set by --recipe)")
    p.add_argument("--width", type=int, default=1, help="channel divisor (1 = the seed's network; 16 for CPU tests)")
    p.add_argument("--pretrained", default="auto",
                   help="ImageNet VGG16 (fcn32s) / VGG16-BN (fcn8s) backbone weights: 'auto' (torchvision's "
                        "cache, never downloaded), a .pth path, or 'none' (from scratch; required with --width > 1)")
    p.add_argument("--loss", choices=["ce", "focal"], help="cross entropy or focal loss (set by --recipe)")
    p.add_argument("--focal-gamma", type=float, default=2.0, help="focal loss exponent (0 = cross entropy)")
    p.add_argument("--class-weights", type=class_weights, default="",
                   help=f"optional {NUM_CLASSES} comma-separated loss weights ({', '.join(CLASS_NAMES)})")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="optimizer from epoch 1 (set by --recipe)")
    p.add_argument("--lr", type=float, help="learning rate of --optimizer (set by --recipe)")
    p.add_argument("--sgd-lr", type=float, default=1e-3, help="learning rate after --switch-sgd-at")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay (both optimizers)")
    p.add_argument("--switch-sgd-at", type=int, metavar="EPOCH",
                   help="train with Adam until this epoch, then SGD (0 = never; set by --recipe)")
    p.add_argument("--lr-schedule", choices=["none", "cosine", "step"], default="none",
                   help="per-epoch schedule within each optimizer phase (step: x0.1 after 2/3 of the phase)")
    p.add_argument("--epochs", type=int, help="total epochs (set by --recipe)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per step and process")
    p.add_argument("--img-size", type=int, default=0,
                   help="random crop side for training (0 = full tiles; validation always uses full tiles)")
    p.add_argument("--normalize", choices=["imagenet", "dataset"],
                   help="input mean/std: ImageNet's, or the training tiles' own (set by --recipe)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs on GPU)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda when available")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes")
    p.add_argument("--cache-dir", default=".cache/decoded", help="decoded-tile cache (uint8 memmaps)")
    p.add_argument("--no-cache", action="store_true", help="decode every image on every epoch instead")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--resume", default="", help="checkpoint (last.pt) to continue from")
    p.add_argument("--output-dir", default="", help="run folder (empty = runs/p2_<model>)")
    p.add_argument("--snapshot-ids", type=id_list, default="0010,0097,0107",
                   help="validation ids of the epoch-mask figure")
    p.add_argument("--snapshot-epochs", type=int_list, help="epochs whose masks the figure shows (set by --recipe)")
    p.set_defaults(**RECIPES["baseline"])
    return p


def parse_args(argv=None):
    """Parse ``argv``; ``--recipe`` sets the flags it names unless they are given explicitly."""
    parser = get_args_parser()
    parser.set_defaults(**RECIPES[parser.parse_known_args(argv)[0].recipe])
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
