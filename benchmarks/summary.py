"""The record of a run (``--json``: machine, settings, every row; rewritten after each row)
and the printed table."""
import datetime
import os
import platform

import torch

from benchmarks.grading import GRADED_TILES
from benchmarks.timing import dtype_name
from core.fileio import write_json
from core.runtime import amp_dtype


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def new_result(args, device):
    """The record ``--json`` holds: the machine, the settings, and the rows as they come."""
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else cpu_name(), "cpu": cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg(), "load_start": os.getloadavg()[0], "args": vars(args), "peaks": {},
            "rows": [], "gpu": [], "grading": [], "complete": False}


def save(result, path):
    """Rewrite ``path`` with ``result`` and the load average now."""
    result["loadavg_end"] = os.getloadavg()
    result["load_end"] = result["loadavg_end"][0]
    # The 1-minute load average counts this run too (about one process): more means others ran.
    result["busy"] = max(result["load_start"], result["load_end"] - 1) > 0.5 * result["cpus"]
    write_json(path, result)


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
              "s/image = (wall of N images - wall of 1) / (N - 1), \"-\" where N images took no longer than 1 "
              "(below start-up jitter); peak RSS = ru_maxrss of the process")
    for key in ("grade_257", "grade_257_cuda"):
        if key in rows:
            print(limit_line(rows[key]))


def limit_line(r):
    """The 257-tile projection of a ``grade_257`` row against the course's limit, per precision."""
    parts = []
    for p, k in (("fp32", "naive"), ("bf16", "ours")):
        if r[k] is None:
            parts.append(f"{p} not measured (an image costs less than the processes' start-up jitter)")
        else:
            margin = r["limit_margin_s"][p]
            parts.append(f"{p} {r[k]:.0f} s = {r['limit_ratio'][p]:.2f}x the limit ("
                         + (f"margin {margin:.0f} s)" if margin >= 0 else f"over by {-margin:.0f} s)"))
    return (f"  course limit {r['limit_s']} s (10 minutes), {GRADED_TILES} tiles on {r['device']} at width "
            f"{r['width']}: " + "; ".join(parts) + " (the verdict is fp32's: --precision auto for fp32 training)")
