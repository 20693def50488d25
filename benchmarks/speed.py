"""What "naive" is, row by row (the way course code for this homework typically reads; same
batch size, same number of DataLoader workers, same augmentation as ours):

  input pipeline  A Dataset that per item opens the JPEG and the PNG with PIL, flips/rotates the
                  PIL images, applies torchvision ``ToTensor`` + ``Normalize`` (float32 on the CPU)
                  and decodes the RGB mask with the course grader's ``read_masks`` body (threshold
                  at 128, ``code = 4R + 2G + B``, one boolean assignment per code into a float64
                  array, then ``.long()``). Ours: ``P2Tiles`` reading the decoded uint8 memmap
                  cache, uint8 joint transforms, default collate, then ``core.inputs.make_prepare``
                  on the batch (``to_float`` on the device, counted). The one-time cache build
                  is timed separately.
  P2 train step   fp32, NCHW, each item normalised to float32 on the CPU and then stacked.
                  Ours: the uint8 batch goes to the device, ``core.inputs.make_prepare`` normalises
                  it there in channels_last, model in channels_last; fp32 and AMP (bf16 on the
                  CPU, ``core.runtime.amp_dtype`` on CUDA) are both timed and the faster is "ours".
                  Data loading is excluded from both (that is the input-pipeline row). FLOPs of
                  forward + backward come from ``torch.utils.flop_counter.FlopCounterMode``,
                  and the peak from a large matmul / conv timed in the same run.
  mIoU            The course grader's ``mean_iou_score`` (for each class: ``np.sum`` over the
                  stacked float64 arrays its ``read_masks`` returns) against our streaming
                  ``core.metrics.ConfusionMatrix`` (one ``update`` per mask); mask decoding is
                  excluded from both. Both must agree to 1e-9.
  P1 train step   Per item: PIL decode of the PNG, torchvision ``RandomHorizontalFlip``,
                  ``Resize(img_size)``, ``ToTensor``, ``Normalize``; fp32 NCHW step. Ours: the
                  images decoded once into memory (``P1Images``), ``core.inputs.make_prepare``
                  (batched flip, normalise, bilinear upsampling on the device, channels_last);
                  fp32 and AMP timed as for P2. Data loading is included in both.
  cuda_fcn8s      (speed, CUDA only) FCN8s width 1 at 512x512, AMP, channels_last, eager, fed by
                  the real loader (``P2Tiles`` cache, ``--cuda-workers``, persistent) through
                  ``core.engine.train_one_epoch``: an untimed epoch of ``--cuda-steps``, then the
                  timed one: images/s and the share of it spent in the loader's ``next()``.
                  No naive; absolute target.
"""
import copy
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.images import dihedral
from benchmarks.naive import NaiveP1Images, NaiveP2Tiles, naive_loader_prepare, naive_p2_prepare
from benchmarks.row import IMAGENET, TILE_SIZE, row
from benchmarks.steps import Variant, loop_epoch, ours_variants, pick_ours, time_variants
from benchmarks.timing import count_flops, dtype_name, measure_peaks, median_seconds
from core.course_grader import mean_iou_score
from core.inputs import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, make_prepare, to_float
from core.metrics import ConfusionMatrix
from core.runtime import amp_dtype
from datasets import IGNORE_INDEX, NUM_CLASSES, P1Images, P2Tiles
from datasets.augment import P1Augment, get_transform
from datasets.synthetic import generate
from models import get_model

TARGETS = {"input": 10.0, "p2_step": 1.5, "miou": 10.0}
CUDA_TARGET_IMG_S = 150.0  # FCN8s width 1, 512x512, AMP, one H100


def bench_pipeline(args, root, cache_dir, device):
    t = time.perf_counter()
    P2Tiles(root, cache_dir=cache_dir, progress=False)
    build_s = time.perf_counter() - t
    ours_set = P2Tiles(root, transform=get_transform(True, augment="d4"), cache_dir=cache_dir, progress=False)
    naive_set = NaiveP2Tiles(ours_set, train=True)

    # Same output: without augmentation the two paths give the same tensors.
    plain = P2Tiles(root, cache_dir=cache_dir, progress=False)
    x_naive, y_naive = NaiveP2Tiles(plain, train=False)[0]
    x_ours, y_ours = plain[0]
    same = bool(torch.allclose(to_float(x_ours[None], IMAGENET_MEAN, IMAGENET_STD)[0], x_naive, atol=1e-5)
                and torch.equal(y_ours.long(), y_naive))

    def loader(dataset):
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                          pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

    naive_loader, ours_loader = loader(naive_set), loader(ours_set)
    naive_prepare = naive_loader_prepare(device)
    ours_prepare = make_prepare(device, IMAGENET)  # to_float + long

    def run_naive():
        for batch in naive_loader:
            naive_prepare(batch)

    def run_ours():
        for batch in ours_loader:
            ours_prepare(batch)

    n = len(ours_set)
    naive = n / median_seconds(run_naive, args.warmup, args.repeats, device)
    ours = n / median_seconds(run_ours, args.warmup, args.repeats, device)
    return row("input", f"input pipeline {TILE_SIZE}x{TILE_SIZE}", "img/s", naive, ours, TARGETS["input"],
               cache_build_s=build_s, tiles=n, workers=args.workers, batch_size=args.batch_size, same_output=same)


def bench_p2_step(model_name, args, root, cache_dir, device, peaks):
    torch.manual_seed(args.seed)
    tiles = P2Tiles(root, cache_dir=cache_dir, progress=False)
    bs, s = args.batch_size, args.img_size
    images = torch.from_numpy(np.array(tiles.images[:bs, :s, :s])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.array(tiles.masks[:bs, :s, :s]))
    items = list(zip(images.unbind(0), masks.unbind(0)))
    model = get_model(model_name, num_classes=NUM_CLASSES, width=args.width)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    naive_prepare = naive_p2_prepare(device)
    x, y = naive_prepare(items)
    flops = count_flops(copy.deepcopy(model).to(device).train(), x, y, criterion) / bs
    variants = {"naive": Variant(False, None, lambda: items, naive_prepare),
                **ours_variants(device, lambda: (images, masks),
                                make_prepare(device, IMAGENET, channels_last=True))}
    stats = time_variants(model, criterion, variants, bs, args.steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return row(f"p2_step_{model_name}", f"P2 train step {model_name} w{args.width} {s}x{s}", "img/s",
               stats["naive"]["images_per_s"], ours, TARGETS["p2_step"], ours_variant=chosen, variants=stats,
               gflop_per_image=flops / 1e9, batch_size=bs)


def bench_miou(args, root, cache_dir):
    tiles = P2Tiles(root, cache_dir=cache_dir, progress=False)
    rng = np.random.default_rng(args.seed)
    n = args.miou_masks
    gts, preds = [], []
    for i in range(n):
        gt = np.array(dihedral(np.asarray(tiles.masks[i % len(tiles)]), (i // len(tiles)) % 8), order="C")
        # A plausible prediction: borders off by a few pixels, plus scattered wrong pixels.
        pred = np.roll(gt, tuple(rng.integers(-6, 7, 2)), axis=(0, 1))
        noise = rng.random(gt.shape) < 0.1
        pred[noise] = rng.integers(0, NUM_CLASSES, int(noise.sum()))
        gts.append(gt)
        preds.append(pred)
    # The grader's read_masks returns float64 N x H x W stacks.
    gt_stack, pred_stack = np.stack(gts).astype(np.float64), np.stack(preds).astype(np.float64)
    result = {}

    def run_naive():
        result["naive"] = mean_iou_score(pred_stack, gt_stack)

    def run_ours():
        cm = ConfusionMatrix(NUM_CLASSES)
        for gt, pred in zip(gts, preds):
            cm.update(gt, pred)
        miou, per_class, _ = cm.mean_iou()
        result["ours"] = miou, [per_class[c] for c in range(6)]

    cpu = torch.device("cpu")
    naive_ms = 1e3 * median_seconds(run_naive, args.warmup, args.repeats, cpu) / n
    ours_ms = 1e3 * median_seconds(run_ours, args.warmup, args.repeats, cpu) / n
    diff = max(abs(a - b) for a, b in zip([result["naive"][0]] + result["naive"][1],
                                          [result["ours"][0]] + result["ours"][1]))
    return row("miou", f"mIoU of {n} masks {TILE_SIZE}x{TILE_SIZE}", "ms/mask", naive_ms, ours_ms, TARGETS["miou"],
               higher_is_better=False, miou_naive=float(result["naive"][0]), miou_ours=result["ours"][0],
               max_abs_diff=float(diff), agree=bool(diff <= 1e-9))


def bench_p1_step(args, root, device, peaks):
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    data = P1Images(root, progress=False)
    decode_s = time.perf_counter() - t
    mean, std = CIFAR_MEAN, CIFAR_STD
    bs, s = args.p1_batch_size, args.p1_img_size
    model = get_model("classifier", num_classes=50, width=args.p1_width, img_size=s)
    criterion = nn.CrossEntropyLoss()

    def cycle(loader):
        it = iter(loader)

        def next_batch():
            nonlocal it
            try:
                return next(it)
            except StopIteration:
                it = iter(loader)
                return next(it)

        return next_batch

    def loader(dataset):
        return DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=args.workers,
                          pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

    naive_batch = cycle(loader(NaiveP1Images(root, data.files, s, mean, std)))
    naive_prepare = naive_loader_prepare(device)
    x, y = naive_prepare(naive_batch())
    flops = count_flops(copy.deepcopy(model).to(device).train(), x, y, criterion) / bs
    prepare = make_prepare(device, {"mean": mean, "std": std}, s, channels_last=True,
                           augment=P1Augment(s, hflip=True))
    variants = {"naive": Variant(False, None, naive_batch, naive_prepare),
                **ours_variants(device, cycle(loader(data)), prepare)}
    stats = time_variants(model, criterion, variants, bs, args.p1_steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return row("p1_step", f"P1 train step classifier w{args.p1_width} {s}x{s}", "img/s",
               stats["naive"]["images_per_s"], ours, None, ours_variant=chosen, variants=stats,
               gflop_per_image=flops / 1e9, batch_size=bs, images=len(data), decode_s=decode_s)


class Repeat(Dataset):
    """``length`` items cycling through ``base`` (a long run over a few tiles)."""

    def __init__(self, base, length):
        self.base, self.length = base, length

    def __len__(self):
        return self.length

    def __getitem__(self, k):
        return self.base[k % len(self.base)]


def bench_cuda_fcn8s(args, root, cache_dir, device):
    """FCN8s width 1 at 512x512, AMP + channels_last, eager, fed by the real loader; time in ``next()``."""
    bs = args.cuda_batch_size
    tiles = P2Tiles(root, transform=get_transform(True, augment="d4"), cache_dir=cache_dir, progress=False)
    # Workers started by the untimed epoch stay for the timed one: a short epoch would be mostly start-up.
    loader = DataLoader(Repeat(tiles, args.cuda_steps * bs), batch_size=bs, shuffle=False, drop_last=True,
                        num_workers=args.cuda_workers, pin_memory=True, persistent_workers=args.cuda_workers > 0)
    stats = loop_epoch(1, loader, loader, device, None, args.seed)
    return row("cuda_fcn8s", f"CUDA FCN8s w1 {TILE_SIZE}x{TILE_SIZE} AMP", "img/s", None,
               stats["images"] / stats["seconds"], CUDA_TARGET_IMG_S, target_kind="at_least",
               dtype=dtype_name(amp_dtype(device, True)), batch_size=bs, workers=args.cuda_workers,
               data_wait_fraction=stats["data_seconds"] / stats["seconds"], gpu=torch.cuda.get_device_name(device))


def bench_speed(args, work, device, result, save):
    """The speed rows (see the docstring), appended to ``result["rows"]`` one by one."""
    t = time.perf_counter()
    data = os.path.join(work, "data")
    generate(data, seed=args.seed, p1_train_per_class=args.p1_per_class, p1_val_per_class=0,
             p2_train=args.tiles, p2_val=0, p2_size=TILE_SIZE)
    print(f"synthetic data in {time.perf_counter() - t:.1f} s: {args.tiles} P2 tiles, "
          f"{50 * args.p1_per_class} P1 images (in {work})", flush=True)
    p2_root = os.path.join(data, "p2_data", "train")
    cache_dir = os.path.join(work, "cache")

    t = time.perf_counter()
    peaks = result["peaks"] = measure_peaks(device, args.peak_size, args)
    print(f"  peak FLOP/s measured in {time.perf_counter() - t:.1f} s", flush=True)
    steps = [lambda: bench_pipeline(args, p2_root, cache_dir, device)]
    steps += [lambda name=name: bench_p2_step(name, args, p2_root, cache_dir, device, peaks)
              for name in ("fcn8s", "fcn32s")]
    steps += [lambda: bench_miou(args, p2_root, cache_dir),
              lambda: bench_p1_step(args, os.path.join(data, "p1_data", "train_50"), device, peaks)]
    if device.type == "cuda":
        steps.append(lambda: bench_cuda_fcn8s(args, p2_root, cache_dir, device))
    for step in steps:
        t = time.perf_counter()
        result["rows"].append(step())
        print(f"  {result['rows'][-1]['name']}: {time.perf_counter() - t:.1f} s", flush=True)
        save()
