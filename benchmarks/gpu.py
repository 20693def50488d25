"""GPU rows (``--gpu-width`` 1 unless ``--quick``; targets are for one H100):

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
"""
import copy
import csv
import os
import sys
import time

import torch
from torch import nn
from torch.utils.data import Subset

from benchmarks.images import write_tiles
from benchmarks.row import IMAGENET, TILE_SIZE, row
from benchmarks.steps import Variant, loop_epoch, pick_ours, time_variants
from benchmarks.timing import count_flops, dtype_name, measure_peaks, run_child
from core.distributed import make_loader
from core.inputs import CIFAR_MEAN, CIFAR_STD, make_prepare
from core.runtime import amp_dtype
from datasets import IGNORE_INDEX, NUM_CLASSES, P2Tiles
from datasets.augment import get_transform
from datasets.synthetic import SNAPSHOT_IDS
from models import MODELS, get_model

# Issue "GPU speed", one H100: FCN8s in the loop, P1 classifier step at 224, data wait, 100 improved epochs.
GPU_TARGETS = {"loop_img_s": 450.0, "p1_img_s": 2900.0, "data_wait_pct": 2.0, "e2e_100_min": 8.0}


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


def na_rows(args, reason):
    """Every GPU row, not measured for ``reason``."""
    return [gpu_row(args, key, None, None, na=reason) for key in gpu_specs(args)]


def bench_gpu_step(model_name, args, device, peaks):
    """Train step, data excluded: naive fp32 NCHW against AMP + channels_last, eager and compiled."""
    torch.manual_seed(args.seed)
    if MODELS[model_name].problem == "p1":
        bs, side, source = args.gpu_p1_batch_size, args.gpu_p1_img_size, 32  # P1 images are 32x32
        model = get_model(model_name, num_classes=50, width=args.gpu_width, img_size=side)
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
