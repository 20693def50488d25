"""Speed benchmark (not a test): our data, training and grading paths against the naive ones.

    python bench.py                          # CPU: speed + grading rows (grading at full width: slow) -> runs/bench/
    python bench.py --quick                  # smoke run, about 1.5 min on 2 busy cores
    python bench.py --quick --force-gpu-rows # also the GPU rows' code on the CPU (tiny sizes, compile backend eager)
    python bench.py --rows grading           # only the grading rows (FCN8s width 1, 512 and 2448 pixels)
    python bench.py --workers 2 --width 4 --json runs/bench/w4.json
    python bench.py --device cuda --rows gpu,grading --cuda-workers 12 --json $OUT/bench_cuda.json  # H100, < 10 min

It generates its own synthetic data (``datasets.synthetic``) into a temporary folder, prints a
table (row, unit, naive, ours, speed-up of ours over naive, target) and writes every number to
``--json`` (rewritten after each row, ``"complete": false`` until the end, so a run cut short
keeps its rows), with the device name, torch version, date and load average. Each in-process
number is the median of ``--repeats`` timed runs after warm-up. Timings on a busy machine are
noise: the load average at start and end is printed and saved.

``--rows`` picks the sections (default all three), run in this order:

  speed    data, train-step and mIoU rows below, run in this process; on CUDA also ``cuda_fcn8s``.
  gpu      training speed on the GPU (issue "GPU speed"). With ``--device cpu`` these rows print
           "n/a (no CUDA)" unless ``--force-gpu-rows`` runs the same code on the CPU (with
           ``--quick``: width 64, 512x512 batches of 2, ``--compile-backend eager``; a check of the
           code path in seconds, not a measurement).
  grading  ``p2_test.py``, the grading entry point, in fresh processes (issue "inference at any scale").

What "naive" is, row by row (the way course code for this homework typically reads; same
batch size, same number of DataLoader workers, same augmentation as ours):

  input pipeline  A Dataset that per item opens the JPEG and the PNG with PIL, flips/rotates the
                  PIL images, applies torchvision ``ToTensor`` + ``Normalize`` (float32 on the CPU)
                  and decodes the RGB mask with the course grader's ``read_masks`` body (threshold
                  at 128, ``code = 4R + 2G + B``, one boolean assignment per code into a float64
                  array, then ``.long()``). Ours: ``P2Tiles`` reading the decoded uint8 memmap
                  cache, uint8 joint transforms, default collate, then ``core.presets.make_prepare``
                  on the batch (``to_float`` on the device, counted). The one-time cache build
                  is timed separately.
  P2 train step   fp32, NCHW, each item normalised to float32 on the CPU and then stacked.
                  Ours: the uint8 batch goes to the device, ``core.presets.make_prepare`` normalises
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
                  images decoded once into memory (``P1Images``), ``core.presets.make_prepare``
                  (batched flip, normalise, bilinear upsampling on the device, channels_last);
                  fp32 and AMP timed as for P2. Data loading is included in both.
  cuda_fcn8s      (speed, CUDA only) FCN8s width 1 at 512x512, AMP, channels_last, eager, fed by
                  the real loader (``P2Tiles`` cache, ``--cuda-workers``, persistent) through
                  ``core.engine.train_one_epoch``: an untimed epoch of ``--cuda-steps``, then the
                  timed one: images/s and the share of it spent in the loader's ``next()``.
                  No naive; absolute target.

GPU rows (``--gpu-width`` 1 unless ``--quick``; targets are for one H100):

  train step      FCN8s and FCN32s at 512x512 (batch ``--cuda-batch-size``), the P1 classifier at
                  ``--gpu-p1-img-size`` 224 (batch ``--gpu-p1-batch-size``; 32x32 uint8 images
                  upsampled by ``make_prepare``). Naive: fp32, NCHW, the batch prepared once as
                  fp32 on the GPU (data excluded from every variant). Ours: bf16 autocast (AMP) +
                  channels_last, ``make_prepare`` from a uint8 batch on the GPU each step, eager
                  (``ours_eager``) and ``core.runtime.maybe_compile(model, True, backend)``
                  (``ours_compiled``); the faster is "ours". Per variant: images/s, TFLOP/s
                  (FlopCounterMode), MFU = achieved FLOP/s over the bf16 matmul peak measured in
                  the same run at ``--gpu-peak-size``, and ``torch.cuda.max_memory_allocated``
                  (reset before each variant). Target: classifier >= 2,900 img/s.
  in the loop     FCN8s on the official-size synthetic training split (``--e2e-train`` tiles)
                  through ``P2Tiles`` (decoded cache, d4 augmentation), ``core.distributed.make_loader``
                  (``--cuda-workers``) and ``core.engine.train_one_epoch``, compiled, AMP,
                  channels_last: one untimed epoch of ``--cuda-warmup`` batches (compilation), then
                  one timed epoch over the whole split. Images/s (target >= 450) and data wait =
                  ``data_seconds / seconds`` of that epoch (target <= 2 %). No naive.
  end to end      ``p2_train.py --recipe improved --epochs E --snapshot-epochs 1 --pretrained none
                  --amp --channels-last --compile on|off --batch-size B --workers W`` in a fresh
                  process (fresh inductor and triton caches) on ``--e2e-train`` + ``--e2e-val``
                  tiles (made in parallel, one RNG stream per tile), ``E = --e2e-epochs`` (2).
                  One epoch = the last row of its ``log.csv`` (train + val + other seconds);
                  100 epochs projected = wall clock of the E-epoch run + (100 - E) x that epoch
                  + the decoded-cache build timed in the loop row (the run reuses that cache).
                  Target <= 8 min. ``--compile on`` only with ``--compile-backend inductor``
                  (p2_train.py has no backend flag).

Grading rows (``p2_test.py`` on generated folders, a randomly initialised FCN8s at
``--grade-width`` 1 saved with ``core.checkpoint``; ``--precision fp32`` (the default for an fp32-trained
checkpoint) is naive, ``--precision bf16`` ours: bf16 autocast + channels_last, AMP on CUDA):

  s/image         Each figure comes from two fresh processes on the same images: 1 image and N
                  images (512x512: N = ``--grade-images``; ``--grade-large`` 2448: N = 4).
                  s/image = (wall(N) - wall(1)) / (N - 1), so start-up, checkpoint loading and the
                  first image's warm-up cancel. 2448x2448 images are mosaics of the 512 tiles in
                  random flips/turns (49 windows of 512 at overlap 0.25).
  peak RSS        ``ru_maxrss`` of ``os.wait4`` on the ``p2_test.py`` process (kB on Linux): its own
                  high-water mark; for processes it forked (decoding workers) Linux reports the
                  larger, not the sum. 512x512: the N-image run; 2448: the 1- and the 4-image run,
                  and their ratio (target <= 1.3: memory must not grow with the number of images).
  257 tiles       Projected time to grade the validation split: wall(1) + 256 x s/image at 512,
                  against the course's limit (``COURSE_LIMIT_S``: the testing code must finish
                  within 10 minutes): ratio to it and margin, per precision; the verdict is
                  fp32's, what the grading scripts run for an fp32-trained checkpoint
                  (``--precision auto``). Measured on ``--device``; on a CPU run of a machine
                  with CUDA, also on the GPU (``grade_257_cuda``, from its own 1- and N-image runs).
"""
import argparse
import collections
import copy
import csv
import datetime
import gc
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from core import checkpoint, cli, engine
from core.course_grader import mean_iou_score, read_mask_array
from core.distributed import make_loader
from core.fileio import write_json
from core.metrics import ConfusionMatrix
from core.presets import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, make_prepare, to_float
from core.runtime import amp_dtype, inference_dtype, make_scaler, maybe_compile, resolve_device
from datasets import IGNORE_INDEX, NUM_CLASSES, P1Images, P2Tiles, class_to_rgb, parse_label, read_rgb
from datasets.p2 import MASK_SUFFIX, SAT_SUFFIX
from datasets.synthetic import SNAPSHOT_IDS, generate, p2_tile
from datasets.transforms import get_transform
from models import get_model

REPO = os.path.dirname(os.path.abspath(__file__))
IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
TILE_SIZE = 512  # the DeepGlobe tiles of the homework are 512x512
TARGETS = {"input": 10.0, "p2_step": 1.5, "miou": 10.0}
CUDA_TARGET_IMG_S = 150.0  # FCN8s width 1, 512x512, AMP, one H100
# Issue "GPU speed", one H100: FCN8s in the loop, P1 classifier step at 224, data wait, 100 improved epochs.
GPU_TARGETS = {"loop_img_s": 450.0, "p1_img_s": 2900.0, "data_wait_pct": 2.0, "e2e_100_min": 8.0}
RSS_RATIO_TARGET = 1.3  # issue "inference at any scale": peak RSS of 4 large images over 1
LARGE_IMAGES = 4
GRADED_TILES = 257  # the validation split the course grades
COURSE_LIMIT_S = 600  # the course's rule: the testing code must finish within 10 minutes
SECTIONS = ("speed", "gpu", "grading")
# Values --quick gives every size flag left at its default.
QUICK = dict(tiles=4, batch_size=2, width=64, steps=1, warmup=1, repeats=1, miou_masks=8, p1_per_class=1,
             p1_width=32, p1_img_size=32, p1_batch_size=8, p1_steps=2, peak_size=256, cuda_steps=5,
             cuda_batch_size=2, cuda_workers=0, cuda_warmup=1, gpu_width=64, gpu_p1_img_size=32,
             gpu_p1_batch_size=8, gpu_steps=1, gpu_peak_size=256, compile_backend="eager", e2e_train=4, e2e_val=2,
             grade_width=16, grade_images=2, grade_large=1024)


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


def dtype_name(dtype):
    return str(dtype or torch.float32).replace("torch.", "")


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


def measure_peaks(device, size, args):
    """``measure_peak`` for fp32 and the AMP dtype, keyed by dtype name."""
    return {dtype_name(dtype): measure_peak(device, dtype, size, args.warmup, max(args.repeats, 3))
            for dtype in (torch.float32, amp_dtype(device, True))}


def count_flops(model, inputs, targets, criterion):
    """FLOPs of one forward + backward pass (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        criterion(model(inputs), targets).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# Runs argv[2:] and writes "wall seconds, exit status, ru_maxrss" to argv[1]: ``run_child``'s
# launcher, a bare interpreter. Linux starts a process's ru_maxrss at the peak RSS of the process
# it was forked from (exec keeps the old memory's high-water mark), so a child forked straight from
# this large process would report our peak, not its own.
LAUNCHER = """
import os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - t} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_child(cmd, log_path, env=None):
    """Run ``cmd`` in a fresh process; ``(wall seconds, the process's peak RSS in MiB)``.

    The peak is ``ru_maxrss`` from ``os.wait4`` on it (kB on Linux), in ``LAUNCHER``: its own
    high-water mark; for processes it forked and reaped (DataLoader workers) Linux reports the
    larger, not the sum. Output goes to ``log_path``; a failure raises with its tail."""
    measured = log_path + ".rusage"
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-c", LAUNCHER, measured, *cmd], cwd=REPO, env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=False)
    with open(measured) as f:
        seconds, code, max_rss_kb = f.read().split()
    if int(code):
        with open(log_path) as f:
            raise RuntimeError(f"{' '.join(cmd)} exited with {code}:\n{f.read()[-3000:]}")
    return float(seconds), int(max_rss_kb) / 1024


# --------------------------------------------------------------------------- naive data paths


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
        return self.to_tensor(image), torch.from_numpy(read_mask_array(np.array(mask))).long()


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
    """``steps`` calls of ``core.engine.train_step`` (the body of ``core.engine.train_one_epoch``).
    Returns the detached losses."""
    scaler = make_scaler(device, dtype)
    losses = []
    for _ in range(steps):
        inputs, targets = prepare(next_batch())
        losses.append(engine.train_step(model, criterion, optimizer, inputs, targets, device, dtype, scaler))
    return losses


# One way of running a train step: memory format, autocast dtype (None: fp32), the batch source,
# its preparation, and the torch.compile backend (None: eager).
Variant = collections.namedtuple("Variant", "channels_last dtype next_batch prepare backend", defaults=(None,))


def variant(model, device, channels_last, backend=None):
    model = copy.deepcopy(model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = maybe_compile(model.train(), backend is not None, backend)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def time_variants(base_model, criterion, variants, batch_size, steps, args, device, peaks, flops_per_image):
    """``variants``: name -> ``Variant``; ``steps`` per timed run. Returns name -> stats: images/s,
    GFLOP/s, its fraction of the same dtype's measured peak, MFU (over the AMP dtype's matmul
    peak) and, on CUDA, the peak memory allocated (GiB)."""
    mfu_peak = peaks[dtype_name(amp_dtype(device, True))]["matmul_gflops"]
    out = {}
    for name, v in variants.items():
        model, optimizer = variant(base_model, device, v.channels_last, v.backend)
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        seconds = median_seconds(
            lambda: train_steps(model, criterion, optimizer, v.next_batch, v.prepare, device, v.dtype, steps),
            args.warmup, args.repeats, device)
        img_s = steps * batch_size / seconds
        achieved = img_s * flops_per_image / 1e9
        out[name] = {"images_per_s": img_s, "dtype": dtype_name(v.dtype), "channels_last": v.channels_last,
                     "compile_backend": v.backend, "gflops": achieved,
                     "peak_fraction": achieved / peaks[dtype_name(v.dtype)]["peak_gflops"], "mfu": achieved / mfu_peak,
                     "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30
                     if device.type == "cuda" else None}
        del model, optimizer
    return out


def ours_variants(device, next_batch, prepare):
    amp = amp_dtype(device, True)
    return {"ours_fp32": Variant(True, None, next_batch, prepare),
            f"ours_{dtype_name(amp)}": Variant(True, amp, next_batch, prepare)}


def pick_ours(stats):
    name = max((k for k in stats if k.startswith("ours")), key=lambda k: stats[k]["images_per_s"])
    return name, stats[name]["images_per_s"]


def loop_epoch(width, warm_loader, loader, device, backend, seed):
    """FCN8s trained by ``core.engine.train_one_epoch`` (AMP, channels_last, compiled with
    ``backend``, None: eager): an untimed epoch over ``warm_loader`` (compilation, cuDNN
    autotuning), then the measured one over ``loader``; returns that epoch's dict."""
    torch.manual_seed(seed)
    dtype = amp_dtype(device, True)
    model, optimizer = variant(get_model("fcn8s", num_classes=NUM_CLASSES, width=width), device, True, backend)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    prepare = make_prepare(device, IMAGENET, channels_last=True)
    scaler = make_scaler(device, dtype)
    for epoch, data in enumerate((warm_loader, loader)):
        stats = engine.train_one_epoch(model, criterion, optimizer, data, device, epoch, prepare, dtype, scaler,
                                       print_freq=len(data))
    return stats


# --------------------------------------------------------------------------- rows


def row(key, name, unit, naive, ours, target, higher_is_better=True, target_kind="speedup", **details):
    """One table row. ``speedup`` is ours over naive (as throughput, whatever the unit); the
    target is a minimum speed-up (``speedup``) or a bound on ours (``at_least`` / ``at_most``).
    A figure that was not measured (no naive, no CUDA) is None."""
    speedup = None
    if naive is not None and ours is not None and naive > 0 and ours > 0:
        speedup = ours / naive if higher_is_better else naive / ours
    value = speedup if target_kind == "speedup" else ours
    meets = None
    if target is not None and value is not None:
        meets = value <= target if target_kind == "at_most" else value >= target
    return {"key": key, "name": name, "unit": unit, "naive": naive, "ours": ours, "speedup": speedup,
            "target": target, "target_kind": target_kind, "meets_target": meets,
            "higher_is_better": higher_is_better, **details}


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
    prepare = make_prepare(device, {"mean": mean, "std": std}, s, channels_last=True, aug={"hflip": True})
    variants = {"naive": Variant(False, None, naive_batch, naive_prepare),
                **ours_variants(device, cycle(loader(data)), prepare)}
    stats = time_variants(model, criterion, variants, bs, args.p1_steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return row("p1_step", f"P1 train step classifier w{args.p1_width} {s}x{s}", "img/s",
               stats["naive"]["images_per_s"], ours, None, ours_variant=chosen, variants=stats,
               gflop_per_image=flops / 1e9, batch_size=bs, images=len(data), decode_s=decode_s)


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


# --------------------------------------------------------------------------- synthetic images in parallel


def write_tile(job):
    """Tile ``i`` from its own RNG stream ``(seed, i)``, so tiles can be made in any order and process;
    written as ``datasets.synthetic.generate`` writes them."""
    folder, i, seed = job
    image, classes = p2_tile(np.random.default_rng([seed, i]), TILE_SIZE)
    Image.fromarray(image).save(os.path.join(folder, f"{i:04d}{SAT_SUFFIX}"), quality=90)
    Image.fromarray(class_to_rgb(classes)).save(os.path.join(folder, f"{i:04d}{MASK_SUFFIX}"))


def write_tiles(folder, ids, seed):
    """Synthetic 512x512 tiles ``ids`` (images and masks) into ``folder``, one process per CPU."""
    os.makedirs(folder, exist_ok=True)
    jobs = [(folder, i, seed) for i in ids]
    with multiprocessing.get_context("fork").Pool(min(os.cpu_count(), len(jobs))) as pool:
        pool.map(write_tile, jobs, chunksize=8)


def write_mosaics(folder, tiles, size, count, seed):
    """``count`` ``size``-square JPEGs made of the ``tiles`` (H x W x 3 arrays) in random flips and
    turns: what a forward pass costs does not depend on the content."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = -(-size // TILE_SIZE)
    for i in range(count):
        rows = [np.concatenate([dihedral(tiles[rng.integers(len(tiles))], rng.integers(8)) for _ in range(n)], 1)
                for _ in range(n)]
        image = np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])
        Image.fromarray(image).save(os.path.join(folder, f"{i:04d}{SAT_SUFFIX}"), quality=90)


def image_folder(folder, sources):
    """``folder`` holding copies of the ``sources`` images (a grading input of its own)."""
    os.makedirs(folder)
    for path in sources:
        shutil.copy(path, folder)
    return folder


# --------------------------------------------------------------------------- grading (p2_test.py)


def bench_grading(args, work, device):
    """s/image and peak RSS of ``p2_test.py`` at fp32 (naive) and ``--precision bf16`` (ours); see
    the docstring for the method."""
    folder = os.path.join(work, "grading")
    tiles_dir = os.path.join(folder, "tiles")
    n, large = args.grade_images, args.grade_large
    write_tiles(tiles_dir, range(n), args.seed)
    tiles = [os.path.join(tiles_dir, f"{i:04d}{SAT_SUFFIX}") for i in range(n)]
    large_dir = os.path.join(folder, f"large{LARGE_IMAGES}")
    write_mosaics(large_dir, [read_rgb(p) for p in tiles], large, LARGE_IMAGES, args.seed)
    sets = {"small1": image_folder(os.path.join(folder, "small1"), tiles[:1]),
            f"small{n}": image_folder(os.path.join(folder, f"small{n}"), tiles),
            "large1": image_folder(os.path.join(folder, "large1"), [os.path.join(large_dir, f"0000{SAT_SUFFIX}")]),
            f"large{LARGE_IMAGES}": large_dir}
    torch.manual_seed(args.seed)
    kwargs = {"num_classes": NUM_CLASSES, "width": args.grade_width}
    ckpt = os.path.join(folder, "fcn8s.pt")
    checkpoint.save(checkpoint.inference_state("p2", "fcn8s", kwargs, get_model("fcn8s", **kwargs), IMAGENET), ckpt)

    runs = {}  # (precision, set) -> (seconds, peak RSS MiB); set "cuda:<name>" for the extra GPU runs
    gpu_too = device.type == "cpu" and torch.cuda.is_available()
    jobs = [(name, images, device.type) for name, images in sets.items()]
    jobs += [(f"cuda:{name}", sets[name], "cuda") for name in ("small1", f"small{n}") if gpu_too]
    for name, images, dev in jobs:
        for precision in ("fp32", "bf16"):
            out = os.path.join(folder, f"out-{precision}-{name.replace(':', '-')}")
            runs[precision, name] = run_child(
                [sys.executable, "p2_test.py", "--images", images, "--output", out, "--checkpoint", ckpt,
                 "--precision", precision, "--device", dev], out + ".log")
            print(f"    p2_test.py --precision {precision} on {name}: {runs[precision, name][0]:.1f} s, "
                  f"peak RSS {runs[precision, name][1]:.0f} MiB", flush=True)

    def per_image(precision, prefix, count):
        return (runs[precision, f"{prefix}{count}"][0] - runs[precision, f"{prefix}1"][0]) / (count - 1)

    def both(f):
        return f("fp32"), f("bf16")

    raw = {f"{p} {name}": {"seconds": s, "peak_rss_mib": m} for (p, name), (s, m) in runs.items()}
    fast = dtype_name(inference_dtype(device, "bf16"))
    common = dict(higher_is_better=False, precision_fast=fast, width=args.grade_width, runs=raw)
    w, big = args.grade_width, f"{large}x{large}"
    small = {p: per_image(p, "small", n) for p in ("fp32", "bf16")}

    def graded_257(prefix, dev):
        """The projected 257-tile row on ``dev``, with its ratio to the course's limit and its margin."""
        seconds = {p: runs[p, f"{prefix}small1"][0] + (GRADED_TILES - 1) * per_image(p, f"{prefix}small", n)
                   for p in ("fp32", "bf16")}
        r = row(f"grade_257{'_cuda' if prefix else ''}", f"grade {GRADED_TILES} tiles {TILE_SIZE}x{TILE_SIZE} on {dev} "
                "(projected)", "s", seconds["fp32"], seconds["bf16"], COURSE_LIMIT_S, target_kind="at_most",
                device=dev, limit_s=COURSE_LIMIT_S, limit_ratio={p: v / COURSE_LIMIT_S for p, v in seconds.items()},
                limit_margin_s={p: COURSE_LIMIT_S - v for p, v in seconds.items()}, **common)
        r["meets_target"] = seconds["fp32"] <= COURSE_LIMIT_S  # what --precision auto runs for fp32 training
        return r

    limit_rows = [graded_257("", device.type)] + ([graded_257("cuda:", "cuda")] if gpu_too else [])
    return [
        row("grade_s_512", f"grading fcn8s w{w} {TILE_SIZE}x{TILE_SIZE}", "s/img", *both(small.get), None,
            images=n, **common),
        row("grade_s_large", f"grading fcn8s w{w} {big}", "s/img", *both(lambda p: per_image(p, "large", LARGE_IMAGES)),
            None, images=LARGE_IMAGES, size=large, **common),
        row("grade_rss_512", f"  peak RSS, {n} images {TILE_SIZE}x{TILE_SIZE}", "MiB",
            *both(lambda p: runs[p, f"small{n}"][1]), None, **common),
        row("grade_rss_large", f"  peak RSS, 1 image {big}", "MiB", *both(lambda p: runs[p, "large1"][1]), None,
            size=large, **common),
        row("grade_rss_large4", f"  peak RSS, {LARGE_IMAGES} images {big}", "MiB",
            *both(lambda p: runs[p, f"large{LARGE_IMAGES}"][1]), None, size=large, **common),
        row("grade_rss_ratio", f"  peak RSS {LARGE_IMAGES} / 1 images {big}", "ratio",
            *both(lambda p: runs[p, f"large{LARGE_IMAGES}"][1] / runs[p, "large1"][1]), RSS_RATIO_TARGET,
            target_kind="at_most", size=large, **common),
        *limit_rows,
    ]


# --------------------------------------------------------------------------- GPU training speed


def gpu_specs(args):
    """key -> (name, unit, target, target kind, higher is better) of each GPU row, in table order."""
    w, s, p1 = args.gpu_width, TILE_SIZE, args.gpu_p1_img_size
    return {
        "gpu_step_fcn8s": (f"GPU train step fcn8s w{w} {s}x{s}", "img/s", None, "speedup", True),
        "gpu_step_fcn32s": (f"GPU train step fcn32s w{w} {s}x{s}", "img/s", None, "speedup", True),
        "gpu_step_classifier": (f"GPU train step classifier w{w} {p1}x{p1}", "img/s", GPU_TARGETS["p1_img_s"],
                                "at_least", True),
        "gpu_loop_fcn8s": (f"GPU fcn8s w{w} in the loop, compiled", "img/s", GPU_TARGETS["loop_img_s"],
                           "at_least", True),
        "gpu_loop_data_wait": ("  its share of time waiting for data", "%", GPU_TARGETS["data_wait_pct"],
                               "at_most", False),
        "gpu_e2e_epoch": (f"GPU improved recipe, 1 epoch {args.e2e_train}+{args.e2e_val} tiles", "s", None,
                          "speedup", False),
        "gpu_e2e_100": ("GPU improved recipe, 100 epochs (projected)", "min", GPU_TARGETS["e2e_100_min"],
                        "at_most", False),
    }


def gpu_row(args, key, naive, ours, **details):
    name, unit, target, kind, higher = gpu_specs(args)[key]
    return row(key, name, unit, naive, ours, target, higher, kind, **details)


def bench_gpu_step(model_name, args, device, peaks):
    """Train step, data excluded: naive fp32 NCHW against AMP + channels_last, eager and compiled."""
    torch.manual_seed(args.seed)
    if model_name == "classifier":
        bs, side, source = args.gpu_p1_batch_size, args.gpu_p1_img_size, 32  # P1 images are 32x32
        model = get_model("classifier", num_classes=50, width=args.gpu_width, img_size=side)
        preprocess, criterion = {"mean": CIFAR_MEAN, "std": CIFAR_STD}, nn.CrossEntropyLoss()
        targets = torch.randint(0, 50, (bs,))
    else:
        bs, side = args.cuda_batch_size, TILE_SIZE
        source = side
        model = get_model(model_name, num_classes=NUM_CLASSES, width=args.gpu_width)
        preprocess, criterion = IMAGENET, nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        targets = torch.randint(0, NUM_CLASSES, (bs, side, side), dtype=torch.uint8)
    batch = (torch.randint(0, 256, (bs, 3, source, source), dtype=torch.uint8).to(device), targets.to(device))
    naive_batch = make_prepare(device, preprocess, side)(batch)  # fp32 NCHW on the device, made once
    flops = count_flops(copy.deepcopy(model).to(device).train(), naive_batch[0][:2], naive_batch[1][:2],
                        criterion) / 2
    amp, prepare = amp_dtype(device, True), make_prepare(device, preprocess, side, channels_last=True)
    variants = {"naive": Variant(False, None, lambda: naive_batch, lambda b: b),
                "ours_eager": Variant(True, amp, lambda: batch, prepare),
                "ours_compiled": Variant(True, amp, lambda: batch, prepare, args.compile_backend)}
    stats = time_variants(model, criterion, variants, bs, args.gpu_steps, args, device, peaks, flops)
    chosen, ours = pick_ours(stats)
    return gpu_row(args, f"gpu_step_{model_name}", stats["naive"]["images_per_s"], ours, ours_variant=chosen,
                   variants=stats, gflop_per_image=flops / 1e9, batch_size=bs)


def bench_gpu_loop(args, root, cache_dir, device):
    """FCN8s through the real loader and ``train_one_epoch``, compiled: a whole epoch of ``root``."""
    t = time.perf_counter()
    tiles = P2Tiles(root, transform=get_transform(True, augment="d4"), cache_dir=cache_dir, progress=False)
    cache_build_s = time.perf_counter() - t
    bs, workers = args.cuda_batch_size, args.cuda_workers
    warm = make_loader(Subset(tiles, range(min(len(tiles), args.cuda_warmup * bs))), bs, True, workers, device)
    stats = loop_epoch(args.gpu_width, warm, make_loader(tiles, bs, True, workers, device, args.seed), device,
                       args.compile_backend, args.seed)
    details = dict(batch_size=bs, workers=workers, tiles=len(tiles), cache_build_s=cache_build_s,
                   compile_backend=args.compile_backend, dtype=dtype_name(amp_dtype(device, True)), **stats)
    return [gpu_row(args, "gpu_loop_fcn8s", None, stats["images"] / stats["seconds"], **details),
            gpu_row(args, "gpu_loop_data_wait", None, 100 * stats["data_seconds"] / stats["seconds"], **details)]


def bench_gpu_e2e(args, data, cache_dir, cache_build_s, work, device):
    """``p2_train.py --recipe improved`` for ``--e2e-epochs`` in a fresh process; 100 epochs projected."""
    out = os.path.join(work, "e2e_run")
    compile_flag = "on" if args.compile_backend == "inductor" else "off"
    cmd = [sys.executable, "p2_train.py", "--recipe", "improved", "--data-path", os.path.join(data, "p2_data"),
           "--epochs", str(args.e2e_epochs), "--snapshot-epochs", "1", "--pretrained", "none", "--amp",
           "--channels-last", "--compile", compile_flag, "--batch-size", str(args.cuda_batch_size),
           "--workers", str(args.cuda_workers), "--width", str(args.gpu_width), "--device", device.type,
           "--cache-dir", cache_dir, "--seed", str(args.seed), "--output-dir", out]
    # A fresh compiler cache: the projection must include the compilation a first run pays.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(work, "inductor"),
           "TRITON_CACHE_DIR": os.path.join(work, "triton")}
    wall, rss = run_child(cmd, os.path.join(work, "e2e.log"), env)
    with open(os.path.join(out, "log.csv")) as f:
        epochs = [sum(float(r[k]) for k in ("train_seconds", "val_seconds", "other_seconds"))
                  for r in csv.DictReader(f)]
    one_time = wall - sum(epochs) + cache_build_s
    projected = wall + cache_build_s + (100 - len(epochs)) * epochs[-1]
    details = dict(command=" ".join(cmd), compile=compile_flag, wall_s=wall, epoch_seconds=epochs,
                   cache_build_s=cache_build_s, one_time_s=one_time, peak_rss_mib=rss)
    return [gpu_row(args, "gpu_e2e_epoch", None, epochs[-1], **details),
            gpu_row(args, "gpu_e2e_100", None, projected / 60, **details)]


def bench_gpu(args, work, device, result, save):
    """The GPU rows (see the docstring), appended to ``result["gpu"]`` one by one."""
    rows = result["gpu"]
    t = time.perf_counter()
    data = os.path.join(work, "e2e")
    p2 = os.path.join(data, "p2_data")
    write_tiles(os.path.join(p2, "train"), range(args.e2e_train), args.seed)
    write_tiles(os.path.join(p2, "validation"), sorted(set(range(args.e2e_val)) | set(SNAPSHOT_IDS)), args.seed + 1)
    result["gpu_data_s"] = time.perf_counter() - t
    print(f"  {args.e2e_train}+{args.e2e_val} synthetic tiles for the GPU rows in {result['gpu_data_s']:.1f} s",
          flush=True)
    result["gpu_peaks"] = measure_peaks(device, args.gpu_peak_size, args)
    cache_dir = os.path.join(work, "e2e_cache")
    steps = [lambda name=name: [bench_gpu_step(name, args, device, result["gpu_peaks"])]
             for name in ("fcn8s", "fcn32s", "classifier")]
    steps += [lambda: bench_gpu_loop(args, os.path.join(p2, "train"), cache_dir, device),
              lambda: bench_gpu_e2e(args, data, cache_dir, rows[-1]["cache_build_s"], work, device)]
    for step in steps:
        t = time.perf_counter()
        new = step()
        rows += new
        print(f"  {new[0]['name']}: {time.perf_counter() - t:.1f} s", flush=True)
        save()


# --------------------------------------------------------------------------- report


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def num(v):
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def print_rows(rows):
    for r in rows:
        target = "" if r["target"] is None else {"speedup": f">= {r['target']:g}x", "at_least": f">= {r['target']:g}",
                                                  "at_most": f"<= {r['target']:g}"}[r["target_kind"]]
        if r.get("na"):
            print(f"{r['name']:52s} {r['unit']:8s} {'n/a (' + r['na'] + ')':>29s} {target:>9s}")
            continue
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        verdict = "" if r["meets_target"] is None else ("  ok" if r["meets_target"] else "  BELOW")
        print(f"{r['name']:52s} {r['unit']:8s} {num(r['naive']):>9s} {num(r['ours']):>9s} {speedup:>9s} "
              f"{target:>9s}{verdict}")


def print_variants(rows, tera):
    """One line per train-step row: FLOPs and, per variant, speed, FLOP/s, share of peak, memory."""
    for r in rows:
        if "variants" not in r:
            continue
        parts = []
        for k, v in r["variants"].items():
            rate = f"{v['gflops'] / 1e3:.1f} TFLOP/s, MFU {100 * v['mfu']:.0f}%" if tera else (
                f"{v['gflops']:.1f} GFLOP/s ({100 * v['peak_fraction']:.0f}% of {v['dtype']} peak)")
            mem = "" if v["peak_memory_gib"] is None else f", {v['peak_memory_gib']:.1f} GiB"
            parts.append(f"{k} {v['images_per_s']:.2f} img/s = {rate}{mem}")
        print(f"  {r['name']}: {r['gflop_per_image']:.3g} GFLOP/img fwd+bwd, batch {r['batch_size']}; "
              f"ours = {r['ours_variant']}; " + "; ".join(parts))


def print_peaks(name, peaks):
    print(f"  {name}: " + "; ".join(f"{k} matmul {v['matmul_gflops']:.0f}, conv {v['conv_gflops']:.0f} GFLOP/s"
                                   for k, v in peaks.items()))


def print_table(result):
    print(f"\nbench on {result['device']} = {result['device_name']} ({result['cpu']}, {result['cpus']} CPUs, "
          f"{result['threads']} torch threads), torch {result['torch']}, {result['date']}; load average at start "
          f"{result['load_start']:.2f}, at end {result['load_end']:.2f}")
    if result["busy"]:
        print("warning: other processes kept the CPUs busy during this run; these timings are noise, rerun on an "
              "idle machine")
    print(f"{'row':52s} {'unit':8s} {'naive':>9s} {'ours':>9s} {'speed-up':>9s} {'target':>9s}")
    print_rows(result["rows"] + result["gpu"] + result["grading"])
    rows = {r["key"]: r for r in result["rows"] + result["gpu"] + result["grading"]}
    if "input" in rows:
        inp, miou = rows["input"], rows["miou"]
        print(f"  input pipeline: cache build {inp['cache_build_s']:.2f} s for {inp['tiles']} tiles (excluded), "
              f"batch {inp['batch_size']}, {inp['workers']} workers, same output without augmentation: "
              f"{inp['same_output']}")
        print_variants(result["rows"], tera=False)
        print_peaks("measured peaks", result["peaks"])
        print(f"  mIoU: grader {miou['miou_naive']:.12f}, ours {miou['miou_ours']:.12f}, "
              f"max |diff| {miou['max_abs_diff']:.1e}, agree to 1e-9: {miou['agree']}")
    if "cuda_fcn8s" in rows:
        r = rows["cuda_fcn8s"]
        print(f"  {r['name']} on {r['gpu']}: {r['dtype']}, batch {r['batch_size']}, {r['workers']} workers; "
              f"waiting on data {100 * r['data_wait_fraction']:.1f}% of the step time")
    if "gpu_peaks" in result:
        print_variants(result["gpu"], tera=True)
        print_peaks(f"GPU-row peaks ({result['args']['gpu_peak_size']}-square matmul; MFU is over the "
                    f"{dtype_name(amp_dtype(torch.device(result['device']), True))} matmul)", result["gpu_peaks"])
    if "gpu_loop_fcn8s" in rows and not rows["gpu_loop_fcn8s"].get("na"):
        r = rows["gpu_loop_fcn8s"]
        print(f"  loop: {r['images']} images in {r['seconds']:.1f} s, {r['data_seconds']:.2f} s in next(); batch "
              f"{r['batch_size']}, {r['workers']} workers, {r['dtype']}, compile {r['compile_backend']}; "
              f"decoded-cache build {r['cache_build_s']:.1f} s")
        r = rows["gpu_e2e_100"]
        print(f"  end to end: {len(r['epoch_seconds'])} epochs in {r['wall_s']:.1f} s wall (epochs "
              + ", ".join(f"{s:.1f}" for s in r["epoch_seconds"]) + f" s; one-time {r['one_time_s']:.1f} s with "
              f"the cache build), compile {r['compile']}, peak RSS {r['peak_rss_mib']:.0f} MiB")
    if "grade_s_512" in rows:
        r = rows["grade_s_512"]
        print(f"  grading: p2_test.py in fresh processes, fp32 vs --precision bf16 (= {r['precision_fast']} here); "
              "s/image = (wall of N images - wall of 1) / (N - 1); peak RSS = ru_maxrss of the process")
    for key in ("grade_257", "grade_257_cuda"):
        if key in rows:
            r = rows[key]
            parts = [f"{p} {r[k]:.0f} s = {r['limit_ratio'][p]:.2f}x the limit ("
                     + (f"margin {r['limit_margin_s'][p]:.0f} s)" if r["limit_margin_s"][p] >= 0 else
                        f"over by {-r['limit_margin_s'][p]:.0f} s)") for p, k in (("fp32", "naive"), ("bf16", "ours"))]
            print(f"  course limit {r['limit_s']} s (10 minutes), {GRADED_TILES} tiles on {r['device']} at width "
                  f"{r['width']}: " + "; ".join(parts) + " (the verdict is fp32's: --precision auto for fp32 training)")


def apply_quick(args):
    defaults = get_args_parser()
    for k, v in QUICK.items():
        if getattr(args, k) == defaults.get_default(k):
            setattr(args, k, v)


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


def main(args):
    if args.quick:
        apply_quick(args)
    if not 0 < args.img_size <= TILE_SIZE:
        raise SystemExit(f"error: --img-size must be in 1..{TILE_SIZE} (the tiles are {TILE_SIZE}x{TILE_SIZE})")
    if args.batch_size > args.tiles:
        raise SystemExit(f"error: --batch-size {args.batch_size} is larger than --tiles {args.tiles}")
    if args.grade_images < 2:
        raise SystemExit("error: --grade-images must be >= 2 (s/image is the difference of a 1- and an N-image run)")
    device = resolve_device(args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    cpus = os.cpu_count()
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else cpu_name(), "cpu": cpu_name(), "cpus": cpus, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "loadavg_start": os.getloadavg(), "load_start": os.getloadavg()[0], "args": vars(args), "peaks": {},
              "rows": [], "gpu": [], "grading": [], "complete": False}

    def save():
        result["loadavg_end"] = os.getloadavg()
        result["load_end"] = result["loadavg_end"][0]
        # The 1-minute load average counts this run too (about one process): more means others ran.
        result["busy"] = max(result["load_start"], result["load_end"] - 1) > 0.5 * cpus
        write_json(args.json, result)

    work = tempfile.mkdtemp(prefix="bench-")
    try:
        if "speed" in args.rows:
            bench_speed(args, work, device, result, save)
        if "gpu" in args.rows and (device.type == "cuda" or args.force_gpu_rows):
            bench_gpu(args, work, device, result, save)
        elif "gpu" in args.rows:
            result["gpu"] = [gpu_row(args, key, None, None, na="no CUDA") for key in gpu_specs(args)]
        if "grading" in args.rows:
            t = time.perf_counter()
            result["grading"] = bench_grading(args, work, device)
            print(f"  grading rows: {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["complete"] = True
    save()
    print_table(result)
    print(f"\nwrote {args.json}")
    return result


def row_sections(text):
    names = [s for s in text.split(",") if s]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(SECTIONS)}, got {text!r}")
    return names


# Every integer size flag: (flag, default, help). --quick replaces those left at their default (QUICK).
INT_FLAGS = [
    ("--tiles", 16, "synthetic 512x512 P2 tiles"),
    ("--workers", 0, "DataLoader workers, the same for naive and ours"),
    ("--batch-size", 4, "P2 batch size, input pipeline and train step"),
    ("--width", 8, "P2 model channel divisor"),
    ("--img-size", 512, "P2 train-step input side (top-left crop of the tiles); FCN8s pads any input to 512x512 tiles"),
    ("--steps", 3, "P2 train steps per timed repeat"),
    ("--warmup", 1, "untimed warm-up runs before each measurement"),
    ("--repeats", 3, "timed runs per measurement; the median is reported"),
    ("--miou-masks", 64, "512x512 masks scored in the mIoU row"),
    ("--p1-per-class", 4, "synthetic P1 images per class, 50 classes"),
    ("--p1-width", 8, "P1 classifier channel divisor"),
    ("--p1-img-size", 64, "P1 model input side, the 32x32 images upsampled to it"),
    ("--p1-batch-size", 32, "P1 batch size"),
    ("--p1-steps", 4, "P1 train steps per timed repeat"),
    ("--peak-size", 2048, "side of the matmul (and 16x the conv's map) that measures peak FLOP/s"),
    ("--cuda-batch-size", 16, "FCN8s/FCN32s batch size of cuda_fcn8s and the gpu rows"),
    ("--cuda-workers", 8, "DataLoader workers of cuda_fcn8s and the gpu loop and end-to-end rows"),
    ("--cuda-steps", 30, "cuda_fcn8s: steps of its untimed epoch and of its timed one (workers persist)"),
    ("--cuda-warmup", 5, "gpu loop: steps of its untimed epoch (compilation) before the timed one"),
    ("--gpu-width", 1, "gpu rows: model channel divisor"),
    ("--gpu-p1-img-size", 224, "gpu rows: P1 classifier input side"),
    ("--gpu-p1-batch-size", 128, "gpu rows: P1 classifier batch size"),
    ("--gpu-steps", 5, "gpu rows: train steps per timed repeat"),
    ("--gpu-peak-size", 8192, "gpu rows: side of the matmul whose bf16 FLOP/s is the peak of MFU"),
    ("--e2e-train", 2000, "gpu rows: synthetic training tiles (the official count)"),
    ("--e2e-val", 257, "gpu rows: synthetic validation tiles 0..N-1, plus the snapshot ids"),
    ("--e2e-epochs", 2, "gpu rows: epochs of the end-to-end p2_train.py run (>= 2: the last is the steady one)"),
    ("--grade-width", 1, "grading rows: FCN8s channel divisor"),
    ("--grade-images", 9, "grading rows: 512x512 images of the N-image run (>= 2)"),
    ("--grade-large", 2448, "grading rows: side of the large images"),
    ("--seed", 0, "random seed"),
]


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=cli.HelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device")
    p.add_argument("--json", default="runs/bench/bench.json", help="where to write the results")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: every size flag left at its default takes "
                        + ", ".join(f"{k.replace('_', '-')}={v}" for k, v in QUICK.items()))
    p.add_argument("--rows", type=row_sections, default=",".join(SECTIONS),
                   help=f"sections to run, a comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--force-gpu-rows", action="store_true",
                   help="run the gpu rows on a CPU device too (a check of their code; without it they print n/a)")
    p.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager", "eager"],
                   help="gpu rows: torch.compile backend; the end-to-end run compiles only with inductor")
    for flag, default, text in INT_FLAGS:
        p.add_argument(flag, type=int, default=default, help=text)
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
