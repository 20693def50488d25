"""Speed benchmark (not a test): our data, training and metric paths against the naive ones.

    python bench.py                          # CPU, a few minutes on 2 cores -> table + runs/bench/bench.json
    python bench.py --quick                  # smoke run, a few seconds
    python bench.py --workers 2 --width 4 --json runs/bench/w4.json
    python bench.py --device cuda            # adds FCN8s width-1 AMP training at 512x512 and the data wait

It generates its own synthetic data (``datasets.synthetic``) into a temporary folder, runs every
row in one process, prints a table (speed-up of ours over naive beside each target) and writes
the numbers to ``--json``. Each number is the median of ``--repeats`` timed runs after warm-up.
The machine's load average is printed and saved: timings on a busy machine are noise.

What "naive" is, row by row (the way course code for this homework typically reads; same
batch size, same number of DataLoader workers, same augmentation as ours):

  input pipeline  A Dataset that per item opens the JPEG and the PNG with PIL, flips/rotates the
                  PIL images, applies torchvision ``ToTensor`` + ``Normalize`` (float32 on the CPU)
                  and decodes the RGB mask with the course grader's ``read_masks`` body (threshold
                  at 128, ``code = 4R + 2G + B``, one boolean assignment per code into a float64
                  array, then ``.long()``). Ours: ``P2Tiles`` reading the decoded uint8 memmap
                  cache, uint8 joint transforms, default collate, then ``p2_train.make_prepare``
                  on the batch (``to_float`` on the device, counted). The one-time cache build
                  is timed separately.
  P2 train step   fp32, NCHW, each item normalised to float32 on the CPU and then stacked.
                  Ours: the uint8 batch goes to the device, ``p2_train.make_prepare`` normalises
                  it there in channels_last, model in channels_last; fp32 and AMP (bf16 on the
                  CPU, ``engine.amp_dtype`` on CUDA) are both timed and the faster is "ours".
                  Data loading is excluded from both (that is the input-pipeline row). FLOPs of
                  forward + backward come from ``torch.utils.flop_counter.FlopCounterMode``,
                  and the peak from a large matmul / conv timed in the same run.
  mIoU            The course grader's ``mean_iou_score`` (for each class: ``np.sum`` over the
                  stacked float64 arrays its ``read_masks`` returns) against our streaming
                  ``metrics.ConfusionMatrix`` (one ``update`` per mask); mask decoding is
                  excluded from both. Both must agree to 1e-9.
  P1 train step   Per item: PIL decode of the PNG, torchvision ``RandomHorizontalFlip``,
                  ``Resize(img_size)``, ``ToTensor``, ``Normalize``; fp32 NCHW step. Ours: the
                  images decoded once into memory (``P1Images``), ``p1_train.make_prepare``
                  (batched flip, normalise, bilinear upsampling on the device, channels_last);
                  fp32 and AMP timed as for P2. Data loading is included in both.
  CUDA only       FCN8s width 1 at 512x512 with AMP and channels_last, fed by the real loader
                  (``P2Tiles`` cache, ``--cuda-workers``): images/s and the fraction of the
                  step time spent waiting in the loader's ``next()``.
"""
import argparse
import copy
import os
import platform
import random
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from torchvision.transforms import functional as TF

import engine
from datasets import IGNORE_INDEX, NUM_CLASSES, P1Images, P2Tiles, parse_label
from datasets.synthetic import generate
from datasets.transforms import get_transform, to_float
from engine import amp_dtype, make_scaler
from metrics import ConfusionMatrix
from models import get_model
from p1_train import CIFAR_MEAN, CIFAR_STD
from p1_train import make_prepare as p1_make_prepare
from p2_train import IMAGENET_MEAN, IMAGENET_STD
from p2_train import make_prepare as p2_make_prepare

TILE_SIZE = 512  # the DeepGlobe tiles of the homework are 512x512
TARGETS = {"input": 10.0, "p2_step": 1.5, "miou": 10.0}
CUDA_TARGET_IMG_S = 150.0  # FCN8s width 1, 512x512, AMP, one H100
# Values --quick gives every size flag left at its default.
QUICK = dict(tiles=4, batch_size=2, width=64, steps=1, warmup=1, repeats=1, miou_masks=8, p1_per_class=1,
             p1_width=32, p1_img_size=32, p1_batch_size=8, p1_steps=2, peak_size=256, cuda_steps=5)


# --------------------------------------------------------------------------- timing


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run, warmup, repeats, device):
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_peak(device, dtype, size, warmup, repeats):
    """GFLOP/s of a ``size``-square matmul and of a 3x3 conv (64 channels, ``size / 16`` square maps,
    channels_last)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    matmul = 2 * size ** 3 / median_seconds(lambda: a @ b, warmup, repeats, device)
    n, c, hw = 8, 64, size // 16
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = 2 * n * c * c * 9 * hw * hw / median_seconds(
        lambda: torch.nn.functional.conv2d(x, w, padding=1), warmup, repeats, device)
    return {"matmul_gflops": matmul / 1e9, "conv_gflops": conv / 1e9, "peak_gflops": max(matmul, conv) / 1e9}


def count_flops(model, inputs, targets, criterion):
    """FLOPs of one forward + backward pass (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        criterion(model(inputs), targets).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# --------------------------------------------------------------------------- naive data paths


def grader_decode_mask(rgb):
    """The body of the course grader's ``read_masks`` for one RGB mask (float64 class map)."""
    mask = (rgb >= 128).astype(int)
    mask = 4 * mask[:, :, 0] + 2 * mask[:, :, 1] + mask[:, :, 2]
    out = np.empty(mask.shape)
    out[mask == 3] = 0  # (Cyan: 011) Urban land
    out[mask == 6] = 1  # (Yellow: 110) Agriculture land
    out[mask == 5] = 2  # (Purple: 101) Rangeland
    out[mask == 2] = 3  # (Green: 010) Forest land
    out[mask == 1] = 4  # (Blue: 001) Water
    out[mask == 7] = 5  # (White: 111) Barren land
    out[mask == 0] = 6  # (Black: 000) Unknown
    out[mask == 4] = 6  # (Red: 100) read as unknown, as datasets.masks does
    return out


def grader_mean_iou(pred, labels):
    """The course grader's ``mean_iou_score`` over stacked arrays; returns (mean, per-class)."""
    mean_iou, per_class = 0, []
    for i in range(6):
        tp_fp = np.sum(pred == i)
        tp_fn = np.sum(labels == i)
        tp = np.sum((pred == i) * (labels == i))
        iou = tp / (tp_fp + tp_fn - tp)
        mean_iou += iou / 6
        per_class.append(iou)
    return mean_iou, per_class


class NaiveP2Tiles(Dataset):
    """Per item: PIL decode, PIL flips/rotations, ToTensor + Normalize, grader-style mask decoding."""

    def __init__(self, tiles, train):
        self.tiles, self.train = tiles, train
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.tiles.ids)

    def __getitem__(self, k):
        image = Image.open(self.tiles.image_paths[k]).convert("RGB")
        mask = Image.open(self.tiles.mask_paths[k]).convert("RGB")
        if self.train:
            if random.random() < 0.5:
                image, mask = TF.hflip(image), TF.hflip(mask)
            if random.random() < 0.5:
                image, mask = TF.vflip(image), TF.vflip(mask)
            angle = 90 * random.randrange(4)
            if angle:
                image, mask = image.rotate(angle), mask.rotate(angle)
        return self.to_tensor(image), torch.from_numpy(grader_decode_mask(np.array(mask))).long()


class NaiveP1Images(Dataset):
    """Per item: PIL decode and torchvision transforms (flip, Resize to ``img_size``, ToTensor, Normalize)."""

    def __init__(self, root, files, img_size, mean, std):
        self.paths = [os.path.join(root, f) for f in files]
        self.labels = [parse_label(f) for f in files]
        self.transform = T.Compose([T.RandomHorizontalFlip(), T.Resize(img_size), T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        return self.transform(Image.open(self.paths[k]).convert("RGB")), self.labels[k]


def naive_p2_prepare(device):
    """Per-item float32 normalisation on the CPU, then stack and move (fp32, NCHW)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def prepare(items):
        images = torch.stack([(image.float() / 255 - mean) / std for image, _ in items])
        masks = torch.stack([mask.long() for _, mask in items])
        return images.to(device), masks.to(device)

    return prepare


def naive_loader_prepare(device):
    def prepare(batch):
        images, targets = batch
        return images.to(device), targets.to(device)

    return prepare


class Repeat(Dataset):
    """``length`` items cycling through ``base`` (a long run over a few tiles)."""

    def __init__(self, base, length):
        self.base, self.length = base, length

    def __len__(self):
        return self.length

    def __getitem__(self, k):
        return self.base[k % len(self.base)]


# --------------------------------------------------------------------------- training steps


def train_steps(model, criterion, optimizer, next_batch, prepare, device, dtype, steps):
    """``steps`` calls of ``engine.train_step`` (the body of ``engine.train_one_epoch``).
    Returns the detached losses."""
    scaler = make_scaler(device, dtype)
    losses = []
    for _ in range(steps):
        inputs, targets = prepare(next_batch())
        losses.append(engine.train_step(model, criterion, optimizer, inputs, targets, device, dtype, scaler))
    return losses


def variant(model, device, channels_last):
    model = copy.deepcopy(model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train(), torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def time_variants(base_model, criterion, variants, batch_size, steps, args, device, peaks, flops_per_image):
    """``variants``: name -> (channels_last, dtype, next_batch, prepare); ``steps`` per timed run.
    Returns name -> stats."""
    out = {}
    for name, (channels_last, dtype, next_batch, prepare) in variants.items():
        model, optimizer = variant(base_model, device, channels_last)
        seconds = median_seconds(
            lambda: train_steps(model, criterion, optimizer, next_batch, prepare, device, dtype, steps),
            args.warmup, args.repeats, device)
        img_s = steps * batch_size / seconds
        dtype_name = str(dtype or torch.float32).replace("torch.", "")
        achieved = img_s * flops_per_image / 1e9
        out[name] = {"images_per_s": img_s, "dtype": dtype_name, "channels_last": channels_last,
                     "gflops": achieved, "peak_fraction": achieved / peaks[dtype_name]["peak_gflops"]}
    return out


def ours_variants(device, next_batch, prepare):
    return {"ours_fp32": (True, None, next_batch, prepare),
            f"ours_{str(amp_dtype(device, True)).replace('torch.', '')}": (True, amp_dtype(device, True),
                                                                              next_batch, prepare)}


def pick_ours(stats):
    name = max((k for k in stats if k.startswith("ours")), key=lambda k: stats[k]["images_per_s"])
    return name, stats[name]["images_per_s"]


# --------------------------------------------------------------------------- rows


def row(key, name, unit, naive, ours, target, higher_is_better=True, **details):
    """One table row; ``speedup`` is ours over naive (as throughput, whatever the unit)."""
    speedup = ours / naive if higher_is_better else naive / ours
    return {"key": key, "name": name, "unit": unit, "naive": naive, "ours": ours, "speedup": speedup,
            "target": target, "meets_target": None if target is None else speedup >= target,
            "higher_is_better": higher_is_better, **details}


def bench_pipeline(args, root, cache_dir, device):
    t = time.perf_counter()
    P2Tiles(root, cache_dir=cache_dir, progress=False)
    build_s = time.perf_counter() - t
    ours_set = P2Tiles(root, transform=get_transform(True), cache_dir=cache_dir, progress=False)
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
    ours_prepare = p2_make_prepare(device, IMAGENET_MEAN, IMAGENET_STD, channels_last=False)  # to_float + long

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
    variants = {"naive": (False, None, lambda: items, naive_prepare),
                **ours_variants(device, lambda: (images, masks),
                                p2_make_prepare(device, IMAGENET_MEAN, IMAGENET_STD, channels_last=True))}
    stats = time_variants(model, criterion, variants, bs, args.steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return row(f"p2_step_{model_name}", f"P2 train step {model_name} w{args.width} {s}x{s}", "img/s",
               stats["naive"]["images_per_s"], ours, TARGETS["p2_step"], ours_variant=chosen, variants=stats,
               gflop_per_image=flops / 1e9, batch_size=bs)


def dihedral(a, k):
    """The ``k``-th of the 8 flips/rotations of a square array (more distinct masks from few tiles)."""
    return np.rot90(a[:, ::-1] if k >= 4 else a, k % 4)


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
        result["naive"] = grader_mean_iou(pred_stack, gt_stack)

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
    prepare = p1_make_prepare(device, {"mean": mean, "std": std}, s, channels_last=True, aug={"hflip": True})
    variants = {"naive": (False, None, naive_batch, naive_prepare),
                **ours_variants(device, cycle(loader(data)), prepare)}
    stats = time_variants(model, criterion, variants, bs, args.p1_steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return row("p1_step", f"P1 train step classifier w{args.p1_width} {s}x{s}", "img/s",
               stats["naive"]["images_per_s"], ours, None, ours_variant=chosen, variants=stats,
               gflop_per_image=flops / 1e9, batch_size=bs, images=len(data), decode_s=decode_s)


def bench_cuda_fcn8s(args, root, cache_dir, device):
    """FCN8s width 1 at 512x512, AMP + channels_last, fed by the real loader; time in ``next()``."""
    torch.manual_seed(args.seed)
    dtype = amp_dtype(device, True)
    bs, total_steps = args.cuda_batch_size, args.cuda_warmup + args.cuda_steps
    tiles = P2Tiles(root, transform=get_transform(True), cache_dir=cache_dir, progress=False)
    loader = DataLoader(Repeat(tiles, total_steps * bs), batch_size=bs, shuffle=False, drop_last=True,
                        num_workers=args.cuda_workers, pin_memory=True)
    model, optimizer = variant(get_model("fcn8s", num_classes=NUM_CLASSES, width=1), device, True)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    prepare = p2_make_prepare(device, IMAGENET_MEAN, IMAGENET_STD, channels_last=True)
    it = iter(loader)
    wait = total = 0.0
    for step in range(total_steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        train_steps(model, criterion, optimizer, lambda: batch, prepare, device, dtype, 1)
        synchronize(device)
        if step >= args.cuda_warmup:
            wait += t1 - t0
            total += time.perf_counter() - t0
    img_s = args.cuda_steps * bs / total
    return {"key": "cuda_fcn8s", "name": f"CUDA FCN8s w1 {TILE_SIZE}x{TILE_SIZE} AMP", "unit": "img/s",
            "naive": None, "ours": img_s, "speedup": None, "target": CUDA_TARGET_IMG_S,
            "meets_target": img_s >= CUDA_TARGET_IMG_S,
            "target_kind": "absolute", "dtype": str(dtype).replace("torch.", ""), "batch_size": bs,
            "workers": args.cuda_workers, "data_wait_fraction": wait / total,
            "gpu": torch.cuda.get_device_name(device)}


# --------------------------------------------------------------------------- report


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def print_table(result):
    print(f"\nbench on {result['device']} ({result['cpu']}, {result['cpus']} CPUs, {result['threads']} torch threads), "
          f"torch {result['torch']}; load average at start {result['load_start']:.2f}, at end {result['load_end']:.2f}")
    if result["busy"]:
        print("warning: other processes kept the CPUs busy during this run; these timings are noise, rerun on an "
              "idle machine")
    print(f"{'row':44s} {'unit':8s} {'naive':>9s} {'ours':>9s} {'speed-up':>9s} {'target':>9s}")
    for r in result["rows"]:
        if r["naive"] is None:  # an absolute target (CUDA row)
            naive, speedup, target = "-", "-", f">= {r['target']:g}"
        else:
            naive, speedup = f"{r['naive']:.2f}", f"{r['speedup']:.2f}x"
            target = "" if r["target"] is None else f">= {r['target']:g}x"
        verdict = "" if r["meets_target"] is None else ("  ok" if r["meets_target"] else "  BELOW")
        print(f"{r['name']:44s} {r['unit']:8s} {naive:>9s} {r['ours']:9.2f} {speedup:>9s} {target:>9s}{verdict}")
    rows = {r["key"]: r for r in result["rows"]}
    inp, miou = rows["input"], rows["miou"]
    print(f"  input pipeline: cache build {inp['cache_build_s']:.2f} s for {inp['tiles']} tiles (excluded), "
          f"batch {inp['batch_size']}, {inp['workers']} workers, same output without augmentation: "
          f"{inp['same_output']}")
    for r in result["rows"]:
        if "variants" in r:
            parts = [f"{k} {v['images_per_s']:.2f} img/s = {v['gflops']:.1f} GFLOP/s "
                     f"({100 * v['peak_fraction']:.0f}% of {v['dtype']} peak)" for k, v in r["variants"].items()]
            print(f"  {r['name']}: {r['gflop_per_image']:.3g} GFLOP/img fwd+bwd, batch {r['batch_size']}; "
                  f"ours = {r['ours_variant']}; " + "; ".join(parts))
    peaks = "; ".join(f"{k} matmul {v['matmul_gflops']:.0f}, conv {v['conv_gflops']:.0f} GFLOP/s"
                      for k, v in result["peaks"].items())
    print(f"  measured peaks: {peaks}")
    print(f"  mIoU: grader {miou['miou_naive']:.12f}, ours {miou['miou_ours']:.12f}, "
          f"max |diff| {miou['max_abs_diff']:.1e}, agree to 1e-9: {miou['agree']}")
    if "cuda_fcn8s" in rows:
        r = rows["cuda_fcn8s"]
        print(f"  {r['name']} on {r['gpu']}: {r['dtype']}, batch {r['batch_size']}, {r['workers']} workers; "
              f"waiting on data {100 * r['data_wait_fraction']:.1f}% of the step time")


def apply_quick(args):
    defaults = get_args_parser()
    for k, v in QUICK.items():
        if getattr(args, k) == defaults.get_default(k):
            setattr(args, k, v)


def main(args):
    if args.quick:
        apply_quick(args)
    if not 0 < args.img_size <= TILE_SIZE:
        raise SystemExit(f"error: --img-size must be in 1..{TILE_SIZE} (the tiles are {TILE_SIZE}x{TILE_SIZE})")
    if args.batch_size > args.tiles:
        raise SystemExit(f"error: --batch-size {args.batch_size} is larger than --tiles {args.tiles}")
    device = engine.resolve_device(args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    load_start = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="bench-")
    try:
        t = time.perf_counter()
        data = os.path.join(work, "data")
        generate(data, seed=args.seed, p1_train_per_class=args.p1_per_class, p1_val_per_class=0,
                 p2_train=args.tiles, p2_val=0, p2_size=TILE_SIZE)
        print(f"synthetic data in {time.perf_counter() - t:.1f} s: {args.tiles} P2 tiles, "
              f"{50 * args.p1_per_class} P1 images (in {work})", flush=True)
        p2_root = os.path.join(data, "p2_data", "train")
        cache_dir = os.path.join(work, "cache")

        t = time.perf_counter()
        peaks = {}
        for dtype in (torch.float32, amp_dtype(device, True)):
            peaks[str(dtype).replace("torch.", "")] = measure_peak(device, dtype, args.peak_size, args.warmup,
                                                                   max(args.repeats, 3))
        print(f"  peak FLOP/s measured in {time.perf_counter() - t:.1f} s", flush=True)
        rows = []
        steps = [lambda: bench_pipeline(args, p2_root, cache_dir, device)]
        steps += [lambda name=name: bench_p2_step(name, args, p2_root, cache_dir, device, peaks)
                  for name in ("fcn8s", "fcn32s")]
        steps += [lambda: bench_miou(args, p2_root, cache_dir),
                  lambda: bench_p1_step(args, os.path.join(data, "p1_data", "train_50"), device, peaks)]
        if device.type == "cuda":
            steps.append(lambda: bench_cuda_fcn8s(args, p2_root, cache_dir, device))
        for step in steps:
            t = time.perf_counter()
            rows.append(step())
            print(f"  {rows[-1]['name']}: {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end, cpus = os.getloadavg()[0], os.cpu_count()
    # The 1-minute load average counts this run too (about one process): more means others ran.
    busy = max(load_start, load_end - 1) > 0.5 * cpus
    result = {"device": str(device), "cpu": cpu_name(), "cpus": cpus, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_start": load_start, "load_end": load_end, "busy": busy,
              "args": vars(args), "peaks": peaks, "rows": rows}
    print_table(result)
    engine.write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return result


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device (default: %(default)s)")
    p.add_argument("--json", default="runs/bench/bench.json", help="where to write the results (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run (a few seconds): every size flag left at its default takes "
                        + ", ".join(f"{k.replace('_', '-')}={v}" for k, v in QUICK.items()))
    p.add_argument("--tiles", type=int, default=16, help="synthetic 512x512 P2 tiles (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers, the same for naive and ours (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="P2 batch size, input pipeline and train step (default: %(default)s)")
    p.add_argument("--width", type=int, default=8, help="P2 model channel divisor (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=512,
                   help="P2 train-step input side (top-left crop of the tiles); FCN8s pads any input to "
                        "512x512 tiles (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="P2 train steps per timed repeat (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed warm-up runs before each measurement (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per measurement; the median is reported (default: %(default)s)")
    p.add_argument("--miou-masks", type=int, default=64,
                   help="512x512 masks scored in the mIoU row (default: %(default)s)")
    p.add_argument("--p1-per-class", type=int, default=4,
                   help="synthetic P1 images per class, 50 classes (default: %(default)s)")
    p.add_argument("--p1-width", type=int, default=8, help="P1 classifier channel divisor (default: %(default)s)")
    p.add_argument("--p1-img-size", type=int, default=64,
                   help="P1 model input side, the 32x32 images upsampled to it (default: %(default)s)")
    p.add_argument("--p1-batch-size", type=int, default=32, help="P1 batch size (default: %(default)s)")
    p.add_argument("--p1-steps", type=int, default=4, help="P1 train steps per timed repeat (default: %(default)s)")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="side of the matmul (and 16x the conv's map) that measures peak FLOP/s (default: %(default)s)")
    p.add_argument("--cuda-batch-size", type=int, default=16,
                   help="CUDA only: FCN8s width-1 batch size (default: %(default)s)")
    p.add_argument("--cuda-workers", type=int, default=8,
                   help="CUDA only: DataLoader workers feeding FCN8s (default: %(default)s)")
    p.add_argument("--cuda-steps", type=int, default=30, help="CUDA only: timed FCN8s steps (default: %(default)s)")
    p.add_argument("--cuda-warmup", type=int, default=5, help="CUDA only: untimed FCN8s steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
