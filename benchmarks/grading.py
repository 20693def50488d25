"""Grading rows (``p2_test.py`` on generated folders, a randomly initialised FCN8s at
``--grade-width`` 1 saved with ``core.checkpoint``; ``--precision fp32`` (the default for an fp32-trained
checkpoint) is naive, ``--precision bf16`` ours: bf16 autocast + channels_last, AMP on CUDA):

  s/image         Each figure comes from two fresh processes on the same images: 1 image and N
                  images (512x512: N = ``--grade-images``; ``--grade-large`` 2448: N = 4).
                  s/image = (wall(N) - wall(1)) / (N - 1), so start-up, checkpoint loading and the
                  first image's warm-up cancel. Where wall(N) <= wall(1) (an image costs less than the
                  start-up's jitter: small widths, ``--quick``) it is not measured: "-" in the table,
                  None in the JSON, and no verdict. 2448x2448 images are mosaics of the 512 tiles
                  in random flips/turns (49 windows of 512 at overlap 0.25).
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
import os
import sys

import torch

from benchmarks.images import image_folder, write_mosaics, write_tiles
from benchmarks.row import IMAGENET, TILE_SIZE, row
from benchmarks.timing import dtype_name, run_child
from core import checkpoint
from core.runtime import inference_dtype
from datasets import NUM_CLASSES, read_rgb
from datasets.p2 import SAT_SUFFIX
from models import get_model

RSS_RATIO_TARGET = 1.3  # issue "inference at any scale": peak RSS of 4 large images over 1
LARGE_IMAGES = 4
GRADED_TILES = 257  # the validation split the course grades
COURSE_LIMIT_S = 600  # the course's rule: the testing code must finish within 10 minutes


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
        """s/image, or None where the N-image run was no slower than the 1-image one: the time per
        image is below the processes' start-up noise there (small widths, ``--quick``)."""
        seconds = (runs[precision, f"{prefix}{count}"][0] - runs[precision, f"{prefix}1"][0]) / (count - 1)
        return seconds if seconds > 0 else None

    def both(f):
        return f("fp32"), f("bf16")

    raw = {f"{p} {name}": {"seconds": s, "peak_rss_mib": m} for (p, name), (s, m) in runs.items()}
    fast = dtype_name(inference_dtype(device, "bf16"))
    common = dict(higher_is_better=False, precision_fast=fast, width=args.grade_width, runs=raw)
    w, big = args.grade_width, f"{large}x{large}"
    small = {p: per_image(p, "small", n) for p in ("fp32", "bf16")}

    def graded_257(prefix, dev):
        """The projected 257-tile row on ``dev``, with its ratio to the course's limit and its margin."""
        seconds = {}
        for p in ("fp32", "bf16"):
            each = per_image(p, f"{prefix}small", n)
            seconds[p] = None if each is None else runs[p, f"{prefix}small1"][0] + (GRADED_TILES - 1) * each
        r = row(f"grade_257{'_cuda' if prefix else ''}", f"grade {GRADED_TILES} tiles {TILE_SIZE}x{TILE_SIZE} on {dev} "
                "(projected)", "s", seconds["fp32"], seconds["bf16"], COURSE_LIMIT_S, target_kind="at_most",
                device=dev, limit_s=COURSE_LIMIT_S,
                limit_ratio={p: None if v is None else v / COURSE_LIMIT_S for p, v in seconds.items()},
                limit_margin_s={p: None if v is None else COURSE_LIMIT_S - v for p, v in seconds.items()}, **common)
        # The verdict is fp32's, what --precision auto runs for fp32 training; none where it was not measured.
        r["meets_target"] = None if seconds["fp32"] is None else seconds["fp32"] <= COURSE_LIMIT_S
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
