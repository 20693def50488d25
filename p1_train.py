"""Problem 1: train the seed's VGG-style ``Classifier`` on the 50-class 32x32 images.

Real data (``hw2_data/p1_data/{train_50,val_50}``), one GPU, the seed's network (width 1, the
32x32 images upsampled to 224x224 on the GPU):

    python p1_train.py --recipe report --data-path hw2_data/p1_data --amp --channels-last   # the author's run
    python p1_train.py --data-path hw2_data/p1_data --amp --channels-last                   # ours (--recipe ours)
    mkdir -p checkpoints && cp runs/p1/best.pt checkpoints/p1_best.pt    # what hw2_p1.sh loads
    python p1_train.py --resume runs/p1/last.pt --data-path hw2_data/p1_data                 # after a crash
    torchrun --nproc_per_node 4 p1_train.py --data-path hw2_data/p1_data --batch-size 32 --amp

The report gives the architecture and its accuracy (0.7808) but no training settings. Recipes
(``--recipe``; a flag given on the command line always wins; ``--help`` after ``--recipe NAME``
shows that recipe's values as the defaults):

  ours      (the default) this repo's choice: SGD 0.05 with momentum, cosine schedule over 60
            epochs, batch 128, weight decay 5e-4, label smoothing 0.1, inputs normalised by
            train_50's own mean/std; horizontal flips, padded random crops and colour jitter
            0.2 (fixed order). It stays the default so that existing commands and the README's
            measured results keep their meaning.
  report    the seed author's settings (GitHub Andychen3558/DLCV2020, hw2/): 32 -> 224 upsampling,
            inputs in 0..1 without mean/std; horizontal flip, RandomRotation(15),
            RandomPerspective() (p 0.5, distortion 0.5), RandomAffine(15) (a rotation), colour
            jitter 0.5-1.5 (torchvision's random order); cross entropy; Adam 1e-3, batch 32, 150
            epochs, SGD 1e-4 momentum 0.9 from epoch 101; best.pt by val accuracy.

All augmentation runs batched on the device (``datasets.augment``; each recipe's augmentation is the
policy of its name there); the author's three geometric transforms are one bilinear resampling
there instead of a chain of resamplings (README). Without ``--lr`` the learning rate follows
``--optimizer`` (SGD 0.05, Adam / AdamW 1e-3); the run prints the one it uses. A CPU run on the
synthetic data is part of ``make demo`` (command and measured accuracy in the README).

``--output-dir`` receives ``args.json``, ``log.csv`` (one row per epoch), ``last.pt`` (full
training state, for ``--resume``), ``best.pt`` (highest val_50 accuracy; the weights and
preprocessing only), and at the end ``curves.png``, ``confusion_matrix.png`` and
``per_class_acc.csv`` computed from ``best.pt``.
"""
import argparse
import os
import sys

from core import checkpoint, cli, distributed, engine, plots, runs, runtime
from core.checkpoint import CheckpointError
from core.fileio import write_csv
from core.inputs import fixed_preprocess, make_prepare
from core.losses import build_criterion
from core.optim import DEFAULT_LR, check_switch, phase_at
from datasets import DataError, P1Images
from datasets.augment import P1_POLICIES, PERSPECTIVE_DISTORTION, P1Augment
from datasets.p1 import IMAGE_SIZE, NUM_CLASSES
from datasets.stats import channel_stats
from models import MODELS, get_model, model_names

# Each recipe's augmentation flags take the values of the augmentation policy of its name (datasets/augment.py).
RECIPES = {
    "ours": dict(epochs=60, batch_size=128, optimizer="sgd", lr=None, switch_sgd_at=0, sgd_lr=None, weight_decay=5e-4,
                 lr_schedule="cosine", label_smoothing=0.1, img_size=224, normalize="dataset", **P1_POLICIES["ours"]),
    "report": dict(epochs=150, batch_size=32, optimizer="adam", lr=None, switch_sgd_at=101, sgd_lr=1e-4,
                   weight_decay=0.0, lr_schedule="none", label_smoothing=0.0, img_size=224, normalize="unit",
                   **P1_POLICIES["report"]),
}


def get_datasets(args):
    """(train_50, val_50) decoded into memory; rank 0 fills the cache before the others read it."""
    cache_dir = None if args.no_cache else args.cache_dir
    if not distributed.is_main_process():
        distributed.barrier()
    progress = distributed.is_main_process()
    train = P1Images(os.path.join(args.data_path, "train_50"), cache_dir=cache_dir, progress=progress)
    val = P1Images(os.path.join(args.data_path, "val_50"), cache_dir=cache_dir, progress=progress)
    if distributed.is_main_process():
        distributed.barrier()
    if len(train) < args.batch_size * distributed.get_world_size():
        raise DataError(f"{train.root}: {len(train)} images cannot fill one batch of {args.batch_size} x "
                        f"{distributed.get_world_size()} process(es); lower --batch-size")
    return train, val


def get_preprocess(args, train_set):
    if args.normalize == "dataset":
        mean, std = channel_stats([train_set.images.permute(0, 2, 3, 1).numpy()])
        return {"mean": mean, "std": std}
    return fixed_preprocess(args.normalize)


def write_per_class_csv(cm, path):
    mat = cm.mat.cpu()
    accs = cm.per_class_accuracy().tolist()
    rows = [[c, int(mat[c, c]), int(mat[c].sum()), f"{acc:.6f}"] for c, acc in enumerate(accs)]
    write_csv(path, ["class", "correct", "total", "accuracy"], rows)


def main(argv=None):
    args, resume = runs.parse(get_args_parser(), argv, "p1", RECIPES)  # resume: the --resume checkpoint or None
    lr_given = args.lr is not None
    check_args(args)
    distributed.init_distributed_mode(args)
    device = runtime.resolve_device(args.device, args.local_rank)
    runtime.seed_everything(args.seed + args.rank, args.deterministic)
    with runs.Run(args, "p1_train.py", resume["epoch"] if resume is not None else 0) as run:
        train_set, val_set = get_datasets(args)
        # A resumed run keeps its own input normalisation, whatever --data-path now holds.
        preprocess = resume["preprocess"] if resume is not None else get_preprocess(args, train_set)
        if distributed.is_main_process():
            runs.write_args(args, "p1_train.py", device)
        distributed.log(f"train {len(train_set)} images, val {len(val_set)}; normalize {preprocess}; device {device}")

        model_kwargs = {"num_classes": NUM_CLASSES, "width": args.width, "img_size": args.img_size}
        model, model_without_ddp = distributed.wrap_model(get_model(args.model, **model_kwargs), device,
                                                          args.channels_last, args.sync_bn)
        model = runtime.maybe_compile(model, runtime.compile_enabled(args.compile, device))
        criterion = build_criterion("ce", label_smoothing=args.label_smoothing)
        dtype = runtime.amp_dtype(device, args.amp)
        scaler = runtime.make_scaler(device, dtype)
        train_loader = distributed.make_loader(train_set, args.batch_size, True, args.workers, device, args.seed)
        val_loader = distributed.make_loader(val_set, args.batch_size, False, args.workers, device)
        aug = {"hflip": args.hflip, "crop_padding": args.crop_padding, "color_jitter": args.color_jitter,
               "jitter_order": args.jitter_order or "fixed", "rotation": args.rotation or 0.0,
               "perspective": args.perspective or 0.0, "affine": args.affine or 0.0}
        prepare_train = make_prepare(device, preprocess, args.img_size, args.channels_last,
                                     P1Augment(args.img_size, **aug))
        prepare_eval = make_prepare(device, preprocess, args.img_size, args.channels_last)

        start_epoch, best, phase, optimizer, scheduler = runs.start_training(args, model, model_without_ddp, scaler,
                                                                             resume, "accuracy")
        distributed.log(f"optimizer {args.optimizer}, lr {args.lr:g}" + ("" if lr_given else " (its default)")
                        + (f"; SGD at lr {args.sgd_lr:g}, momentum {args.momentum:g} from epoch {args.switch_sgd_at}"
                           if args.switch_sgd_at else ""))

        for epoch in range(start_epoch, args.epochs + 1):
            if phase_at(args, epoch) != phase:
                phase, optimizer, scheduler = runs.switch_phase(args, model, epoch)
            distributed.set_epoch(train_loader, epoch)
            lr = optimizer.param_groups[0]["lr"]
            run.begin("train")
            train = engine.train_one_epoch(model, criterion, optimizer, train_loader, device, epoch, prepare_train,
                                           dtype, scaler, args.print_freq)
            if scheduler is not None:
                scheduler.step()
            run.begin("val")
            cm, val_loss = engine.evaluate(model, val_loader, device, NUM_CLASSES, prepare_eval, dtype, criterion)
            acc = cm.accuracy()
            run.begin("other")
            is_best, best = acc > best, max(acc, best)
            inference = checkpoint.inference_state("p1", args.model, model_kwargs, model_without_ddp, preprocess,
                                                   epoch=epoch, val_acc=acc, precision=runtime.precision_name(dtype))
            numbers = {"lr": lr, "train_loss": train["loss"], "val_loss": val_loss, "val_acc": acc}
            run.end_epoch(inference, numbers, optimizer=optimizer, lr_scheduler=scheduler, scaler=scaler, phase=phase,
                          epoch=epoch, best_score=best, is_best=is_best, train_images=train["images"])
            distributed.barrier()
        run.finish()
        distributed.barrier()  # best.pt is on disk before any process reads it

        # Figures and per-class accuracy of the best epoch's weights.
        best_ckpt = checkpoint.load(os.path.join(args.output_dir, "best.pt"), "p1")
        model_without_ddp.load_state_dict(best_ckpt["model"])
        cm, _ = engine.evaluate(model, val_loader, device, NUM_CLASSES, prepare_eval, dtype)
        if distributed.is_main_process():
            out, name = args.output_dir, f"P1 classifier (run {os.path.basename(os.path.abspath(args.output_dir))})"
            write_per_class_csv(cm, os.path.join(out, "per_class_acc.csv"))
            plots.plot_confusion_matrix(cm.mat.cpu().numpy(), os.path.join(out, "confusion_matrix.png"),
                                        f"{name}: val_50, epoch {best_ckpt['meta']['epoch']}, "
                                        f"accuracy {cm.accuracy():.4f}")
            plots.plot_curves(os.path.join(out, "log.csv"), os.path.join(out, "curves.png"), "val_acc", name)
            print(f"best val_acc {cm.accuracy():.4f} at epoch {best_ckpt['meta']['epoch']}: "
                  f"{os.path.join(out, 'best.pt')}")
    return 0


def check_args(args):
    """Every combination of flags that cannot run, found before any data is read."""
    if args.batch_size < 2:
        raise cli.UserError("--batch-size 1: the classifier's BatchNorm1d cannot train on batches of one; "
                            "use 2 or more")

    def build():
        return get_model(args.model, num_classes=NUM_CLASSES, width=args.width, img_size=args.img_size)

    check_switch(args)
    if args.switch_sgd_at and args.sgd_lr is None:
        raise cli.UserError(f"--switch-sgd-at {args.switch_sgd_at}: give the SGD phase's --sgd-lr")
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    try:
        MODELS[args.model].check_input_size(args.img_size)
    except ValueError as e:
        raise cli.UserError(f"--img-size {args.img_size}: {e}") from None
    if args.crop_padding >= IMAGE_SIZE:
        raise cli.UserError(f"--crop-padding {args.crop_padding}: a {IMAGE_SIZE}x{IMAGE_SIZE} crop of an image padded "
                            f"by {IMAGE_SIZE} or more can hold no pixel of it; use less than {IMAGE_SIZE} (4: ours)")
    distributed.check_sync_bn(args)
    runtime.check_workers(args.workers)
    runtime.check_memory(build, (3, args.img_size, args.img_size), args.batch_size, args.device, args.amp,
                         f"--img-size {args.img_size} --batch-size {args.batch_size} --width {args.width}")
    args.output_dir = args.output_dir or (os.path.dirname(args.resume) if args.resume else "runs/p1")


def get_args_parser(add_help=True):
    parent = cli.training_parser(__doc__)
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=cli.HelpFormatter,
                                parents=[parent], allow_abbrev=False)  # runs.parse reads --recipe/--resume itself
    p.add_argument("--recipe", default="ours", choices=list(RECIPES), help="a named run (see above)")
    p.add_argument("--data-path", default="data/synthetic/p1_data", help="folder holding train_50/ and val_50/")
    p.add_argument("--model", default="classifier", choices=model_names("p1"), help="registered model name")
    p.add_argument("--img-size", type=cli.positive_int,
                   help="model input side; the 32x32 images are upsampled to it on the device (224: the seed's)")
    p.add_argument("--normalize", choices=["dataset", "cifar", "unit"],
                   help="model inputs: 0..1 minus mean over std, computed from train_50 or CIFAR-10's; or unit: "
                        "0..1 without mean/std")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimizer (from epoch 1)")
    p.add_argument("--label-smoothing", type=cli.open_fraction, help="cross-entropy label smoothing")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="augment: random horizontal flip")
    p.add_argument("--crop-padding", type=cli.nonneg_int,
                   help="augment: random crop of the 32x32 image zero-padded by this many pixels (0 = off)")
    p.add_argument("--rotation", type=cli.nonneg_float,
                   help="augment: random rotation by up to this many degrees (torchvision RandomRotation; 0 = off)")
    p.add_argument("--perspective", type=cli.fraction,
                   help="augment: probability of a random perspective warp (torchvision RandomPerspective, "
                        f"distortion {PERSPECTIVE_DISTORTION}; 0 = off)")
    p.add_argument("--affine", type=cli.nonneg_float,
                   help="augment: a second random rotation by up to this many degrees, after the perspective warp "
                        "(torchvision RandomAffine(degrees) without translation, scale or shear; 0 = off)")
    p.add_argument("--color-jitter", type=cli.fraction,
                   help="augment: brightness/contrast/saturation factors drawn from [1 - this, 1 + this] (0 = off)")
    p.add_argument("--jitter-order", choices=["fixed", "random"],
                   help="order of the colour-jitter steps: brightness, contrast, saturation; or random per image "
                        "(torchvision's ColorJitter)")
    p.set_defaults(workers=2)
    for action in p._actions:  # the shared --lr help, with P1's rule for an --lr not given
        if action.dest == "lr":
            action.help = ("learning rate of --optimizer (not given: " +
                           ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError, CheckpointError)))
