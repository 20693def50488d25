"""Problem 1: train the seed's VGG-style ``Classifier`` on the 50-class 32x32 images.

Real data (``hw2_data/p1_data/{train_50,val_50}``), one GPU, the seed's network (width 1,
images upsampled to 224x224 on the GPU):

    python p1_train.py --data-path hw2_data/p1_data --epochs 60 --batch-size 128 \\
        --optimizer sgd --lr 0.05 --weight-decay 5e-4 --lr-schedule cosine --label-smoothing 0.1 \\
        --hflip --crop-padding 4 --color-jitter 0.2 --amp --channels-last --output-dir runs/p1
    cp runs/p1/best.pt checkpoints/p1_best.pt      # what hw2_p1.sh / p1_test.py load

Several GPUs (``--batch-size`` is per process):

    torchrun --nproc_per_node=4 p1_train.py --data-path hw2_data/p1_data --batch-size 32 ... (as above)

Resume an interrupted run (same flags, the checkpoint restores optimizer, scheduler and RNGs):

    python p1_train.py ... --resume runs/p1/last.pt

Quick CPU run on the synthetic data (``python -m datasets.synthetic --out data/synthetic``):

    python p1_train.py --data-path data/synthetic/p1_data --width 4 --img-size 32 --epochs 30 \\
        --batch-size 25 --optimizer adam --workers 0 --output-dir runs/demo/p1     # ~1 min on 2 cores, val_acc ~0.6

``--output-dir`` receives ``args.json``, ``log.csv`` (one row per epoch, with ``val_acc``),
``last.pt``, ``best.pt`` (highest val_50 accuracy), and at the end ``curves.png``,
``confusion_matrix.png`` and ``per_class_acc.csv`` computed from ``best.pt``.
"""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import engine
from datasets import DataError, P1Images
from datasets.p1 import NUM_CLASSES
from datasets.transforms import to_float
from engine import CheckpointError, NonFiniteLossError, Phase, log
from models import get_model
from p1_plots import plot_confusion_matrix
from plots import plot_curves

# CIFAR-10 training-set channel statistics, the usual constants for 32x32 natural photos.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}


def get_dataset(args):
    """(train_50, val_50) decoded into memory; rank 0 fills the cache before the others read it."""
    cache_dir = None if args.no_cache else args.cache_dir
    if engine.is_dist() and not engine.is_main_process():
        dist.barrier()
    progress = engine.is_main_process()
    train = P1Images(os.path.join(args.data_path, "train_50"), cache_dir=cache_dir, progress=progress)
    val = P1Images(os.path.join(args.data_path, "val_50"), cache_dir=cache_dir, progress=progress)
    if engine.is_dist() and engine.is_main_process():
        dist.barrier()
    return train, val


def channel_stats(images):
    """Exact per-channel mean and std (in [0, 1] units) of uint8 N x C x H x W images, via histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(images.shape[1]):
        p = torch.bincount(images[:, c].flatten(), minlength=256).double()
        p /= p.sum()
        m = (p * values).sum()
        mean.append(round(m.item(), 6))
        std.append(round((p * (values - m) ** 2).sum().sqrt().item(), 6))
    return mean, std


def jitter_colors(images, strength):
    """Brightness, contrast and saturation, each scaled by a per-image factor from
    ``[1 - strength, 1 + strength]`` (torchvision ColorJitter's ranges, in a fixed order)."""
    n = images.shape[0]
    x = images.float() / 255

    def factor():
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - strength), 1 + strength)

    def gray(t):
        return (t * torch.tensor(LUMA, device=t.device).view(1, 3, 1, 1)).sum(1, keepdim=True)

    x = (x * factor()).clamp_(0, 1)
    mean = gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp_(0, 1)
    g = gray(x)
    x = ((x - g) * factor() + g).clamp_(0, 1)
    return (x * 255).round_().to(torch.uint8)


def augment(images, hflip=False, crop_padding=0, color_jitter=0.0):
    """Random horizontal flip, crop with zero padding and colour jitter of a uint8
    N x 3 x H x W batch, batched on its device with per-image random draws from that device's
    global RNG (saved in checkpoints). Returns uint8 N x 3 x H x W; the input itself when all
    options are off."""
    n, c, h, w = images.shape
    dev = images.device
    if hflip:
        flip = torch.rand(n, device=dev) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(images, (p, p, p, p))  # N x C x (H+2p) x (W+2p)
        top = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        left = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        rows = (top + torch.arange(h, device=dev)).view(n, 1, h, 1)
        cols = (left + torch.arange(w, device=dev)).view(n, 1, 1, w)
        images = padded[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
                        rows, cols]  # N x C x H x W
    if color_jitter > 0:
        images = jitter_colors(images, color_jitter)
    return images


def model_inputs(images, mean, std, img_size, channels_last=False):
    """uint8 N x 3 x h x w (on the device) -> normalised float N x 3 x img_size x img_size.

    Normalising before the bilinear upsampling equals normalising after it (bilinear weights
    sum to 1 and the normalisation is per-channel affine), and keeps the upsampling in float.
    """
    x = to_float(images, mean, std)
    if tuple(x.shape[-2:]) != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_prepare(device, normalize, img_size, channels_last, aug=None):
    """``prepare(batch) -> (inputs, targets)`` for engine.fit: to the device, augment (train), upsample, normalise."""

    def prepare(batch):
        images, targets = batch
        images = images.to(device, non_blocking=True)
        if aug:
            images = augment(images, **aug)
        x = model_inputs(images, normalize["mean"], normalize["std"], img_size, channels_last)
        return x, targets.to(device, non_blocking=True)

    return prepare


def make_phase_builder(args):
    """``build(params) -> (optimizer, scheduler)`` for the single training phase."""

    def build(params):
        if args.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
        if args.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
        elif args.lr_schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
        else:
            scheduler = None
        return optimizer, scheduler

    return build


def score_fn(cm):
    acc = cm.accuracy()
    return acc, {"val_acc": f"{acc:.6f}"}


def write_per_class_csv(cm, path):
    mat = cm.mat.cpu()
    accs = cm.per_class_accuracy().tolist()
    rows = [[c, int(mat[c, c]), int(mat[c].sum()), f"{acc:.6f}"] for c, acc in enumerate(accs)]
    engine.write_csv(path, ["class", "correct", "total", "accuracy"], rows)


def main(args):
    try:
        if args.lr is None:
            args.lr = DEFAULT_LR[args.optimizer]
        device = engine.setup_run(args)
        train_set, val_set = get_dataset(args)
        if len(train_set) < args.batch_size * engine.get_world_size():
            raise SystemExit(f"error: {len(train_set)} training images cannot fill one batch of {args.batch_size} "
                             f"per process x {engine.get_world_size()} process(es); lower --batch-size")
        if args.normalize == "dataset":
            mean, std = channel_stats(train_set.images)
        else:
            mean, std = list(CIFAR_MEAN), list(CIFAR_STD)
        normalize = {"mean": mean, "std": std}
        log(f"train {len(train_set)} images, val {len(val_set)}; normalize {normalize}; device {device}")

        model_kwargs = {"num_classes": NUM_CLASSES, "width": args.width, "img_size": args.img_size}
        try:
            model = get_model(args.model, **model_kwargs)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        model, model_without_ddp = engine.wrap_model(model, device, args.channels_last, args.sync_bn)

        train_loader = engine.make_loader(train_set, args.batch_size, True, args.workers, device, args.seed)
        val_loader = engine.make_loader(val_set, args.batch_size, False, args.workers, device)
        aug = {"hflip": args.hflip, "crop_padding": args.crop_padding, "color_jitter": args.color_jitter}
        prepare_train = make_prepare(device, normalize, args.img_size, args.channels_last, aug)
        prepare_eval = make_prepare(device, normalize, args.img_size, args.channels_last)
        dtype = engine.amp_dtype(device, args.amp)

        engine.fit(args, problem="p1", model=model, model_without_ddp=model_without_ddp, model_kwargs=model_kwargs,
                   criterion=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
                   phases=[Phase(args.optimizer, 1, make_phase_builder(args))], train_loader=train_loader,
                   val_loader=val_loader, prepare_train=prepare_train, prepare_eval=prepare_eval,
                   num_classes=NUM_CLASSES, score_fn=score_fn, device=device, dtype=dtype,
                   extra_ckpt={"normalize": normalize, "img_size": args.img_size})

        best_path = os.path.join(args.output_dir, "best.pt")
        best = engine.load_checkpoint(best_path, "p1")
        model_without_ddp.load_state_dict(best["model"])
        cm = engine.evaluate(model, val_loader, device, NUM_CLASSES, prepare_eval, dtype)
        if engine.is_main_process():
            out = args.output_dir
            write_per_class_csv(cm, os.path.join(out, "per_class_acc.csv"))
            plot_confusion_matrix(cm.mat.cpu().numpy(), os.path.join(out, "confusion_matrix.png"),
                                  title=f"val_50 confusion matrix, epoch {best['epoch']} "
                                        f"(accuracy {cm.accuracy():.4f})")
            plot_curves(os.path.join(out, "log.csv"), os.path.join(out, "curves.png"), "val_acc")
            log(f"best val_acc {cm.accuracy():.4f} at epoch {best['epoch']}: {best_path}")
    except NonFiniteLossError as e:
        last = os.path.join(args.output_dir, "last.pt")
        kept = f"{last} keeps the last completed epoch" if os.path.exists(last) else "no epoch completed"
        raise SystemExit(f"error: {e} ({kept}; try a lower --lr, or run without --amp)") from None
    except (DataError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        engine.cleanup_distributed()


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default="data/synthetic/p1_data",
                   help="folder holding train_50/ and val_50/ (default: %(default)s)")
    p.add_argument("--model", default="classifier", choices=["classifier"],
                   help="registered model name (default: %(default)s)")
    p.add_argument("--width", type=int, default=1,
                   help="channel divisor: 1 = the seed's network, 8 for quick CPU runs (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=224,
                   help="model input side; the 32x32 images are upsampled to it on the device "
                        "(default: %(default)s, the seed's)")
    p.add_argument("--normalize", default="dataset", choices=["dataset", "cifar"],
                   help="per-channel mean/std: computed from train_50, or CIFAR-10's (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=60, help="number of epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch, per process (default: %(default)s)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="sgd (momentum) or adam (AdamW, decoupled weight decay) (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default: %(default)s)")
    p.add_argument("--lr-schedule", default="cosine", choices=["none", "cosine", "step"],
                   help="per-epoch schedule: cosine to 0 over --epochs, or step (default: %(default)s)")
    p.add_argument("--lr-step-size", type=int, default=30,
                   help="epochs between decays with --lr-schedule step (default: %(default)s)")
    p.add_argument("--lr-gamma", type=float, default=0.1,
                   help="decay factor with --lr-schedule step (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="cross-entropy label smoothing (default: %(default)s)")
    p.add_argument("--hflip", action="store_true", help="augment: random horizontal flip")
    p.add_argument("--crop-padding", type=int, default=0,
                   help="augment: random crop of the 32x32 image zero-padded by this many pixels, 0 = off "
                        "(default: %(default)s)")
    p.add_argument("--color-jitter", type=float, default=0.0,
                   help="augment: brightness/contrast/saturation jitter strength, 0 = off (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs on GPU)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun (CUDA)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="data-loader worker processes (default: %(default)s)")
    p.add_argument("--cache-dir", default=".cache/decoded",
                   help="folder for the decoded-image cache (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="decode the PNGs on every run, no cache")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--resume", default="", help="checkpoint to resume from, e.g. runs/p1/last.pt")
    p.add_argument("--output-dir", default="runs/p1",
                   help="folder for logs, checkpoints and figures (default: %(default)s)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
