"""Problem 2 training: semantic segmentation of satellite tiles (7 classes) with FCN32s / FCN8s.

The report's runs on the official data (one GPU; outputs in runs/p2_fcn32s, runs/p2_fcn8s):

    python p2_train.py --recipe baseline --data-path hw2_data/p2_data --amp
    python p2_train.py --recipe improved --data-path hw2_data/p2_data --amp
    python p2_train.py --resume runs/p2_fcn8s/last.pt --data-path hw2_data/p2_data      # after a crash
    torchrun --nproc_per_node 4 p2_train.py --recipe improved --data-path hw2_data/p2_data --batch-size 2

The report's ablations and our own recipes, same data and epochs:

    python p2_train.py --recipe improved-ce   --data-path hw2_data/p2_data --amp   # cross entropy, not focal
    python p2_train.py --recipe improved-adam --data-path hw2_data/p2_data --amp   # Adam only, no switch to SGD
    python p2_train.py --recipe best          --data-path hw2_data/p2_data --amp   # ours: see below

CPU runs on the synthetic stand-in data: ``make demo`` (commands and measured results in the
README).

Recipes (``--recipe``; a flag given on the command line always wins over its recipe's value;
``--help`` after ``--recipe NAME`` shows that recipe's values as the defaults). ``baseline`` and
``improved`` are the seed author's runs: the report's text, and the author's public code
(GitHub Andychen3558/DLCV2020, hw2/) for what the report leaves open. The README's recipe table
gives the source of every value.

  baseline       FCN32s (VGG16 backbone) on raw 0..255 pixels (no scaling, no mean/std), cross
                 entropy, Adam 1e-3 for all 100 epochs, batch 8; fc6/fc7, score and upsampling
                 layers with PyTorch's default initialisation; masks of validation ids 0010,
                 0097 and 0107 after epochs 1, 20 and 40 (the report's figure).
  improved       FCN8s (VGG16-BN backbone) on ImageNet mean/std inputs (the report's "extra
                 normalisation"), focal loss gamma 2, Adam 1e-3 for epochs 1-70 then SGD 1e-3
                 momentum 0.9 from epoch 71 (the report's "70 / 100"), otherwise as baseline.
  improved-ce    ``improved`` with cross entropy (the report: focal loss adds about 0.01 mIoU).
  improved-adam  ``improved`` with Adam for all 100 epochs (the report: 0.677 -> 0.681 with SGD).
  baseline-ours  Ours before the author's code was public: FCN32s, 40 epochs, Adam 1e-4,
                 ImageNet mean/std, FCN-style initialisation (fc6/fc7 from VGG's classifier,
                 bilinear upsampling, zero score layers).
  improved-ours  Ours likewise: FCN8s, the training tiles' own mean/std, focal gamma 2, Adam
                 1e-4, SGD 1e-3 from epoch 70 of 100, FCN-style initialisation.
  best           Ours, aiming past the report: ``improved-ours`` plus D4 augmentation (flips and
                 90-degree turns: aerial tiles have no "up"), median-frequency class weights
                 from the training masks (the rare classes weigh more) and a cosine schedule in
                 each optimizer phase.

Each epoch writes to ``--output-dir``: a row of ``log.csv`` (phase, lr, train/val loss, val mIoU
and per-class IoU counted as the course grader counts them, seconds of training / validation /
other work), ``last.pt`` (the full training state, for ``--resume``) and, when the validation
mIoU improves, ``best.pt`` (only what inference needs). Snapshot epochs save the masks of the
snapshot ids; at the end ``epoch_masks.png`` (and the report's 3x3 layout,
``epoch_masks_report.png``), ``curves.png`` and ``per_class_iou.png`` are drawn.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch

from core import checkpoint, cli, distributed, engine, plots, runs, runtime
from core.checkpoint import CheckpointError
from core.fileio import atomic_write_bytes
from core.inputs import fixed_preprocess, make_prepare
from core.losses import build_criterion
from core.metrics import SCORED_CLASSES
from core.optim import check_switch, phase_at
from core.pretrained import load_backbone_state_dict
from core.sliding_window import sliding_logits
from datasets import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, DataError, P2Tiles, read_rgb, rgb_to_class
from datasets.augment import P2_POLICIES, get_transform
from datasets.masks import CLASS_COLORS, class_to_rgb, encode_png
from datasets.stats import median_frequency_weights, split_statistics
from models import MODELS, get_model, model_names
from models.fcn import HEAD_INITS

# The seed author's runs (GitHub Andychen3558/DLCV2020, hw2/), as the report describes them: see the
# docstring and the README's recipe table for the source of each value.
_AUTHOR = dict(epochs=100, batch_size=8, optimizer="adam", lr=1e-3, sgd_lr=1e-3, momentum=0.9, weight_decay=0.0,
               lr_schedule="none", augment="none", class_weights="none", focal_gamma=2.0, head_init="pytorch",
               snapshot_epochs=[1, 20, 40])
_IMPROVED = dict(_AUTHOR, model="fcn8s", loss="focal", switch_sgd_at=71, normalize="imagenet")
# Ours, before the author's code was public: the report's words with our guesses for what it leaves open.
_IMPROVED_OURS = dict(_IMPROVED, lr=1e-4, switch_sgd_at=70, normalize="dataset", head_init="fcn")
RECIPES = {
    "baseline": dict(_AUTHOR, model="fcn32s", loss="ce", switch_sgd_at=0, normalize="raw"),
    "improved": _IMPROVED,
    "improved-ce": dict(_IMPROVED, loss="ce"),
    "improved-adam": dict(_IMPROVED, switch_sgd_at=0),
    "baseline-ours": dict(_IMPROVED_OURS, model="fcn32s", loss="ce", epochs=40, switch_sgd_at=0, normalize="imagenet"),
    "improved-ours": _IMPROVED_OURS,
    "best": dict(_IMPROVED_OURS, augment="d4", class_weights="auto", lr_schedule="cosine"),
}
# Ours: the smallest --img-size crop (one cell of the stride-32 score map), the largest --focal-gamma (the
# focal-loss paper, Lin et al. 2017, tries 0-5; beyond 10 the weight of a pixel at p = 0.5 is below 1e-3).
MIN_CROP, MAX_FOCAL_GAMMA = 32, 10


# --------------------------------------------------------------------------- data


def get_datasets(args):
    """(train, validation) ``P2Tiles``; every file and size is checked before training starts."""
    cache_dir = None if args.no_cache else args.cache_dir
    progress = distributed.is_main_process()
    train = P2Tiles(os.path.join(args.data_path, "train"), get_transform(True, args.img_size or None, args.augment),
                    cache_dir=cache_dir, progress=progress)
    val = P2Tiles(os.path.join(args.data_path, "validation"), get_transform(False), cache_dir=cache_dir,
                  progress=progress)
    for split in (train, val):
        sizes = sorted(set(split.sizes))
        if len(sizes) > 1 and not (split is train and args.img_size):
            odd = [f"{p}: {w}x{h}" for p, (w, h) in zip(split.image_paths, split.sizes) if (w, h) != split.sizes[0]]
            raise DataError(f"{split.root}: tiles of {len(sizes)} sizes (first tile {split.sizes[0][0]}x"
                            f"{split.sizes[0][1]}; e.g. {odd[0]}); use tiles of one size"
                            + (" or --img-size crops" if split is train else ""))
    if not args.img_size:  # whole tiles are the model's inputs (check_args checks a crop side)
        entry = MODELS[args.model]
        try:
            for side in sorted(set(train.sizes[0])):
                entry.check_input_size(side)
        except ValueError as e:
            fixed = entry.input_size
            raise DataError(f"{train.root}: {e}; " + (f"use {fixed}x{fixed} tiles or --img-size {fixed}" if fixed
                                                      else "use tiles it takes or --img-size crops")) from None
    if len(train) < args.batch_size * distributed.get_world_size():
        raise DataError(f"{train.root}: {len(train)} tiles cannot fill one batch of {args.batch_size} x "
                        f"{distributed.get_world_size()} process(es); lower --batch-size")
    return train, val


def preprocess_and_weights(args, train_set):
    """Input normalisation and loss class weights, from the recipe or the training split."""
    need_stats = args.normalize == "dataset" or args.class_weights == "auto"
    stats = split_statistics(train_set, None if args.no_cache else args.cache_dir,
                             distributed.is_main_process()) if need_stats else None
    if args.normalize == "dataset":
        preprocess = {"mean": stats["mean"], "std": stats["std"]}
        distributed.log(f"training-tile statistics: mean {stats['mean']}, std {stats['std']}")
    else:
        preprocess = fixed_preprocess(args.normalize)
    weights = args.class_weights
    if weights == "auto":
        weights = median_frequency_weights(stats["class_pixels"], stats["class_present"])
        distributed.log("class weights (median frequency): " +
                        ", ".join(f"{n} {w:.3f}" for n, w in zip(CLASS_NAMES, weights)))
    return preprocess, (None if weights == "none" else weights)


# --------------------------------------------------------------------------- model and optimisation


def backbone_state_dict(args):
    """The backbone state dict ``--pretrained`` names, read by ``--model``'s registered loader (ImageNet
    VGG16 / VGG16-BN for the FCNs); None for ``none`` or a resumed run."""
    if args.resume or args.pretrained.lower() == "none":
        return None
    backbone = MODELS[args.model].backbone
    if backbone is None:
        raise cli.UserError(f"--pretrained {args.pretrained}: {args.model} has no pretrained backbone; "
                            "pass --pretrained none")
    if args.width != 1:
        raise cli.UserError(f"--pretrained {args.pretrained}: {backbone.description} weights fit only --width 1; "
                            f"with --width {args.width} pass --pretrained none")
    try:
        return load_backbone_state_dict(args.pretrained, backbone.name)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UserError(f"--pretrained {args.pretrained}: {e}") from None


# --------------------------------------------------------------------------- snapshots and figures


def snapshot_path(folder, image_id, epoch):
    return os.path.join(folder, "snapshots", f"{image_id}_epoch{epoch}.png")


@torch.inference_mode()
def save_snapshots(model, val_set, indices, epoch, folder, prepare, device, dtype):
    """Write the predicted masks of ``indices`` as ``snapshots/<id>_epoch<E>.png``; returns their
    colour masks by tag (``snapshots/<id>``) for the run's sinks."""
    model.eval()
    masks = {}
    for k in indices:
        image, mask = val_set[k]
        inputs, _ = prepare((image[None], mask[None]))
        with runtime.autocast(device, dtype):
            pred = sliding_logits(model, inputs).argmax(1)[0].cpu().numpy()
        atomic_write_bytes(snapshot_path(folder, val_set.ids[k], epoch), encode_png(pred))
        masks[f"snapshots/{val_set.ids[k]}"] = class_to_rgb(pred)
    return masks


def draw_figures(args, val_set, indices):
    """Every figure of the run, from its files (``log.csv``, ``snapshots/``)."""
    out = args.output_dir
    name = f"{args.model} ({args.recipe} recipe, run {os.path.basename(os.path.abspath(out))})"
    log_csv = os.path.join(out, "log.csv")
    if not os.path.exists(log_csv):
        return
    plots.plot_curves(log_csv, os.path.join(out, "curves.png"), "val_miou", name)
    plots.plot_per_class_iou(log_csv, os.path.join(out, "per_class_iou.png"), name, CLASS_COLORS)
    if not indices or not args.snapshot_epochs:
        return
    rows = []
    for k in indices:
        image, mask = val_set.load(k)
        snaps = [snapshot_path(out, val_set.ids[k], e) for e in args.snapshot_epochs]
        rows.append((val_set.ids[k], np.asarray(image), class_to_rgb(mask),
                     [class_to_rgb(rgb_to_class(read_rgb(p))) if os.path.exists(p) else None for p in snaps]))
    plots.plot_epoch_masks(rows, args.snapshot_epochs, os.path.join(out, "epoch_masks.png"), name, CLASS_COLORS,
                           last_epoch=args.epochs)
    plots.plot_epoch_masks(rows, args.snapshot_epochs, os.path.join(out, "epoch_masks_report.png"), name,
                           CLASS_COLORS, layout="report", last_epoch=args.epochs)


def snapshot_indices(val_set, ids):
    """Indices in ``val_set`` of the requested ids; ids it lacks are skipped with a warning."""
    missing = [i for i in ids if i not in val_set.ids]
    if missing:
        distributed.log(f"warning: snapshot id(s) {', '.join(missing)} not in {val_set.root}; skipped")
    return [val_set.ids.index(i) for i in ids if i in val_set.ids]


# --------------------------------------------------------------------------- main


def main(argv=None):
    args, resume = runs.parse(get_args_parser(), argv, "p2", RECIPES)  # resume: the --resume checkpoint or None
    check_args(args)
    backbone = backbone_state_dict(args)
    distributed.init_distributed_mode(args)
    device = runtime.resolve_device(args.device, args.local_rank)
    runtime.seed_everything(args.seed + args.rank, args.deterministic)
    with runs.Run(args, "p2_train.py", resume["epoch"] if resume is not None else 0) as run:
        train_set, val_set = get_datasets(args)
        if resume is None:
            preprocess, class_weights = preprocess_and_weights(args, train_set)
        else:  # a resumed run keeps its own input normalisation and loss weights, whatever --data-path now holds
            preprocess, class_weights = resume["preprocess"], resume["meta"]["class_weights"]
        side = args.img_size or train_set.sizes[0][0]
        runtime.check_memory(lambda: get_model(args.model, num_classes=NUM_CLASSES, width=args.width), (3, side, side),
                             args.batch_size, args.device, args.amp,
                             f"--batch-size {args.batch_size} --width {args.width} on {side}x{side} inputs")
        if distributed.is_main_process():
            runs.write_args(args, "p2_train.py", device)

        model_kwargs = {"num_classes": NUM_CLASSES, "width": args.width}
        # The initialisation is no constructor setting to keep (not in model_kwargs); runs started
        # before --head-init existed (resumed, so their weights replace it) used fcn.
        head_init = args.head_init or "fcn"
        model = get_model(args.model, head_init=head_init, **model_kwargs)
        if backbone is not None:
            loader = MODELS[args.model].backbone
            copied = loader.copy_into(model, backbone, copy_fc=head_init == "fcn")
            distributed.log(f"initialised {len(copied)} backbone tensors from {args.pretrained} ({loader.description})")
        model, model_without_ddp = distributed.wrap_model(model, device, args.channels_last, args.sync_bn)
        model = runtime.maybe_compile(model, runtime.compile_enabled(args.compile, device))
        criterion = build_criterion(args.loss, class_weights, args.focal_gamma, IGNORE_INDEX).to(device)
        dtype = runtime.amp_dtype(device, args.amp)
        scaler = runtime.make_scaler(device, dtype)
        train_loader = distributed.make_loader(train_set, args.batch_size, True, args.workers, device, args.seed)
        val_loader = distributed.make_loader(val_set, args.batch_size, False, args.workers, device)
        prepare = make_prepare(device, preprocess, channels_last=args.channels_last)
        indices = snapshot_indices(val_set, args.snapshot_ids)

        def validation_forward(net, inputs):  # tiles of another size than the model's go by windows
            return sliding_logits(net, inputs, batch_size=args.batch_size)

        start_epoch, best, phase, optimizer, scheduler = runs.start_training(args, model, model_without_ddp, scaler,
                                                                             resume, "mIoU")
        n_params = sum(p.numel() for p in model_without_ddp.parameters())
        distributed.log(f"{args.model} (width {args.width}): {n_params:,} parameters; "
                        f"{len(train_set)} train / {len(val_set)} val tiles; {args.loss} loss; device {device}")
        distributed.log(f"inputs {args.normalize}; head init {head_init}; {args.optimizer} lr {args.lr:g}"
                        + (f", SGD lr {args.sgd_lr:g} momentum {args.momentum:g} from epoch {args.switch_sgd_at}"
                           if args.switch_sgd_at else ""))

        for epoch in range(start_epoch, args.epochs + 1):
            if phase_at(args, epoch) != phase:
                phase, optimizer, scheduler = runs.switch_phase(args, model, epoch)
            distributed.set_epoch(train_loader, epoch)
            lr = optimizer.param_groups[0]["lr"]
            run.begin("train")
            train = engine.train_one_epoch(model, criterion, optimizer, train_loader, device, epoch, prepare, dtype,
                                           scaler, args.print_freq)
            if scheduler is not None:
                scheduler.step()
            run.begin("val")
            cm, val_loss = engine.evaluate(model, val_loader, device, NUM_CLASSES, prepare, dtype, criterion,
                                           forward=validation_forward)
            miou, per_class, _ = cm.mean_iou(SCORED_CLASSES)
            run.begin("other")
            is_best, best = miou > best, max(miou, best)
            inference = checkpoint.inference_state("p2", args.model, model_kwargs, model_without_ddp, preprocess,
                                                   epoch=epoch, val_miou=miou, recipe=args.recipe,
                                                   precision=runtime.precision_name(dtype), class_weights=class_weights)
            if distributed.is_main_process() and epoch in args.snapshot_epochs:
                run.add_images(save_snapshots(model_without_ddp, val_set, indices, epoch, args.output_dir, prepare,
                                              device, dtype))
            numbers = {"lr": lr, "train_loss": train["loss"], "val_loss": val_loss, "val_miou": miou,
                       **{f"iou_{CLASS_NAMES[c]}": v for c, v in per_class.items()}}
            run.end_epoch(inference, numbers, optimizer=optimizer, lr_scheduler=scheduler, scaler=scaler, phase=phase,
                          epoch=epoch, best_score=best, is_best=is_best, train_images=train["images"])
            distributed.barrier()
        run.finish()
        if distributed.is_main_process():
            draw_figures(args, val_set, indices)
            print(f"best val mIoU {best:.4f}: {os.path.join(args.output_dir, 'best.pt')}")
    return 0


# --------------------------------------------------------------------------- command line


def class_weights(text):
    """``none``, ``auto`` or exactly NUM_CLASSES non-negative numbers."""
    if text in ("none", "auto"):
        return text
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != NUM_CLASSES or not all(map(math.isfinite, weights)) or min(weights) < 0 or sum(weights) == 0:
        raise argparse.ArgumentTypeError(f"expected none, auto or {NUM_CLASSES} comma-separated finite "
                                         f"non-negative numbers ({', '.join(CLASS_NAMES)}), got {text!r}")
    return weights


def check_args(args):
    """Every combination of flags that cannot run, found before any data is read."""
    if args.batch_size < 2:
        raise cli.UserError("--batch-size 1: BatchNorm cannot train on batches of one; use 2 or more")
    check_switch(args)
    late = [e for e in args.snapshot_epochs if e > args.epochs]
    if late:
        raise cli.UserError(f"--snapshot-epochs {','.join(map(str, args.snapshot_epochs))}: epoch(s) "
                            f"{','.join(map(str, late))} are after --epochs {args.epochs}; pass --snapshot-epochs")
    if args.img_size:
        try:
            MODELS[args.model].check_input_size(args.img_size)
        except ValueError as e:
            raise cli.UserError(f"--img-size {args.img_size}: {e}") from None
    if 0 < args.img_size < MIN_CROP:
        raise cli.UserError(f"--img-size {args.img_size}: crops smaller than {MIN_CROP}x{MIN_CROP} (one cell of "
                            f"{args.model}'s stride-32 score map) teach it nothing; use {MIN_CROP} or more, or 0")
    if args.loss == "focal" and args.focal_gamma > MAX_FOCAL_GAMMA:
        raise cli.UserError(f"--focal-gamma {args.focal_gamma:g}: above {MAX_FOCAL_GAMMA} the focal weight "
                            "(1 - p)^gamma all but zeroes every pixel's loss and nothing trains; the focal-loss "
                            "paper uses 0-5")
    distributed.check_sync_bn(args)
    runtime.check_workers(args.workers)
    args.output_dir = args.output_dir or (os.path.dirname(args.resume) if args.resume else f"runs/p2_{args.model}")


def get_args_parser(add_help=True):
    parent = cli.training_parser(__doc__)
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=cli.HelpFormatter,
                                parents=[parent], allow_abbrev=False)  # runs.parse reads --recipe/--resume itself
    p.add_argument("--recipe", default="baseline", choices=list(RECIPES), help="a named run (see above)")
    p.add_argument("--data-path", default="data/synthetic/p2_data", help="folder holding train/ and validation/")
    p.add_argument("--model", choices=model_names("p2"), help="network (models/__init__.py registers them)")
    p.add_argument("--pretrained", default="auto",
                   help=" / ".join(f"{MODELS[n].backbone.description} ({n})" for n in model_names("p2")
                                   if MODELS[n].backbone) +
                        " backbone weights: 'auto' (torchvision's cache, never downloaded), a .pth path, or 'none' "
                        "(from scratch; required with --width > 1 and for a model without a backbone)")
    p.add_argument("--loss", choices=["ce", "focal"], help="cross entropy or focal loss")
    p.add_argument("--focal-gamma", type=cli.nonneg_float, default=2.0, help="focal loss exponent (0 = cross entropy)")
    p.add_argument("--class-weights", type=class_weights,
                   help=f"loss weights: none, auto (median-frequency balancing of the training masks) or "
                        f"{NUM_CLASSES} comma-separated numbers ({', '.join(CLASS_NAMES)})")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="optimizer from epoch 1")
    p.add_argument("--augment", choices=list(P2_POLICIES),
                   help="training augmentation: none, flips (horizontal + vertical) or d4 (flips + 90-degree turns)")
    p.add_argument("--img-size", type=cli.nonneg_int, default=0,
                   help="random crop side for training (0 = full tiles; " +
                        "; ".join(f"{n} needs {MODELS[n].input_size}" for n in model_names("p2")
                                  if MODELS[n].input_size) + ")")
    p.add_argument("--normalize", choices=["raw", "imagenet", "dataset"],
                   help="model inputs: raw 0..255 pixel values, or 0..1 minus mean over std with ImageNet's or the "
                        "training tiles' own mean/std; saved in the checkpoint, so grading feeds the same")
    p.add_argument("--head-init", choices=list(HEAD_INITS),
                   help="pytorch: every layer not copied from ImageNet (fc6/fc7, score, upsampling) keeps PyTorch's "
                        "default initialisation (the seed author's code); fcn: fc6/fc7 from VGG's classifier, zero "
                        "score layers, bilinear upsampling, kaiming convs (ours)")
    p.add_argument("--snapshot-ids", type=cli.str_list, default="0010,0097,0107",
                   help="validation ids of the epoch-mask figure")
    p.add_argument("--snapshot-epochs", type=cli.int_list, help="epochs whose masks the figure shows")
    p.set_defaults(batch_size=8)
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError, CheckpointError)))
