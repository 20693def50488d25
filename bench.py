"""Speed benchmark (not a test): our data, training and grading paths against the naive ones.

    python bench.py                          # CPU: speed + grading rows (grading at full width: slow) -> runs/bench/
    python bench.py --quick                  # smoke run, about 30 s on 2 quiet cores (the test suite runs it)
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
"""
import argparse
import random
import shutil
import tempfile
import time

import torch

from benchmarks import gpu, grading, speed, summary
from benchmarks.row import TILE_SIZE
from core import cli
from core.runtime import resolve_device

SECTIONS = ("speed", "gpu", "grading")
# Values --quick gives every size flag left at its default.
QUICK = dict(tiles=2, batch_size=2, width=64, steps=1, warmup=0, repeats=1, miou_masks=4,
             p1_per_class=1, p1_width=32, p1_img_size=32, p1_batch_size=8, p1_steps=2, peak_size=256, cuda_steps=5,
             cuda_batch_size=2, cuda_workers=0, cuda_warmup=1, gpu_width=64, gpu_p1_img_size=32,
             gpu_p1_batch_size=8, gpu_steps=1, gpu_peak_size=256, compile_backend="eager", e2e_train=4, e2e_val=2,
             grade_width=64, grade_images=2, grade_large=768)


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
    if args.grade_images < 2:
        raise SystemExit("error: --grade-images must be >= 2 (s/image is the difference of a 1- and an N-image run)")
    device = resolve_device(args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    result = summary.new_result(args, device)

    def save():
        summary.save(result, args.json)

    work = tempfile.mkdtemp(prefix="bench-")
    try:
        if "speed" in args.rows:
            speed.bench_speed(args, work, device, result, save)
        if "gpu" in args.rows and (device.type == "cuda" or args.force_gpu_rows):
            gpu.bench_gpu(args, work, device, result, save)
        elif "gpu" in args.rows:
            result["gpu"] = gpu.na_rows(args, "no CUDA")
        if "grading" in args.rows:
            t = time.perf_counter()
            result["grading"] = grading.bench_grading(args, work, device)
            print(f"  grading rows: {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["complete"] = True
    save()
    summary.print_table(result)
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
    # The method of each section is its module's docstring; --help prints them all.
    description = "\n".join([__doc__, speed.__doc__, gpu.__doc__, grading.__doc__])
    p = argparse.ArgumentParser(description=description, add_help=add_help, formatter_class=cli.HelpFormatter)
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
