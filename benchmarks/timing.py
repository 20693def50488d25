"""Timing helpers: median wall time, measured peak FLOP/s, FLOP counts, and wall time and peak
RSS of a command in a fresh process."""
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.runtime import amp_dtype

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the timed scripts are


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
