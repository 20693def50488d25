"""Timed training steps: naive and ours as ``Variant``s of one model, and an epoch through
``core.engine.train_one_epoch``."""
import collections
import copy
import gc

import torch
from torch import nn

from benchmarks.row import IMAGENET
from benchmarks.timing import dtype_name, median_seconds
from core import engine
from core.inputs import make_prepare
from core.runtime import amp_dtype, make_scaler, maybe_compile
from datasets import IGNORE_INDEX, NUM_CLASSES
from models import get_model


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
