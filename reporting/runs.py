"""Reading a finished run for the report (``report.py``): its files, the epoch ``best.pt`` holds, its
data kind, and the command that produced it as the user would type it."""
import csv
import datetime
import json
import math
import os
import re
import shlex
import subprocess
import sys

from core import checkpoint, cli
from core.checkpoint import CheckpointError
from core.fileio import read_csv
from core.plots import number
from core.runs import NOT_RESTORED

METRIC = {"p1": "val_acc", "p2": "val_miou"}
TRAIN_SCRIPT = {"p1": "p1_train.py", "p2": "p2_train.py"}
# Settings of the process, not of what is computed (core/runs.py); world_size stays: it sets the global batch.
PROCESS_KEYS = set(NOT_RESTORED) - {"world_size"}
SYNTHETIC_MARKER = "synthetic.json"  # written by datasets/synthetic.py at the root of its output
# The official hw2_data: file suffix and count of each split (README, Data).
OFFICIAL_COUNTS = {"p1": {"train_50": (".png", 22500), "val_50": (".png", 2500)},
                   "p2": {"train": ("_sat.jpg", 2000), "validation": ("_sat.jpg", 257)}}


def utc(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_run(folder, role, problem):
    """Everything the report reads from one run folder, as a dict; ``missing`` says why the run
    cannot be reported (None when it can), ``notes`` what is odd about it."""
    run = {"folder": folder, "role": role, "problem": problem, "missing": None, "notes": [], "args": None,
           "rows": [], "ckpt": None, "best": None}
    if folder is None:
        run["missing"] = "not given"
        return run
    if not os.path.isdir(folder):
        run["missing"] = f"{folder}: no such folder"
        return run
    args_path, log_path, best_path = (os.path.join(folder, n) for n in ("args.json", "log.csv", "best.pt"))
    if os.path.exists(args_path):
        try:
            with open(args_path) as f:
                saved = json.load(f)
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            run["args"] = saved
        except (OSError, ValueError) as e:
            run["notes"].append(f"{args_path}: unreadable ({e}); its settings are not reported")
    else:
        run["notes"].append(f"{args_path}: not found; the run's settings are not reported")
    if not os.path.exists(log_path):
        run["missing"] = f"{log_path}: not found (has the run started?)"
        return run
    try:
        run["rows"] = read_csv(log_path)
        run["log_mtime"] = os.path.getmtime(log_path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        run["missing"] = f"{log_path}: unreadable ({e})"
        return run
    if not run["rows"]:
        run["missing"] = f"{log_path}: no epoch logged yet"
        return run
    run["epochs"] = epochs_done(run)
    try:
        ckpt = checkpoint.load(best_path, problem)
        model = checkpoint.build_model(ckpt, best_path)
    except (CheckpointError, OSError) as e:
        run["missing"] = cli.error_message(e)
        return run
    run["ckpt"] = {"path": best_path, "mtime": os.path.getmtime(best_path), "model_name": ckpt["model_name"],
                   "model_kwargs": ckpt["model_kwargs"], "meta": ckpt["meta"], "printout": str(model),
                   "class_name": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}
    del ckpt, model
    run["best"] = best_row(run)
    return run


def best_row(run):
    """The ``log.csv`` row of the epoch ``best.pt`` holds, or None (with a note) when the log lacks it."""
    column, meta = METRIC[run["problem"]], run["ckpt"]["meta"]
    epoch = meta.get("epoch")
    rows = [r for r in run["rows"] if str(r.get("epoch")) == str(epoch)]
    if not rows:
        run["notes"].append(f"log.csv has no row for epoch {epoch}, the epoch best.pt holds: its numbers are not "
                            "reported")
        return None
    row = rows[-1]
    if column not in row:
        run["notes"].append(f"log.csv has no {column} column: the score is not reported")
        return None
    logged, saved = number(row[column]), meta.get(column)
    if saved is not None and not (abs(logged - float(saved)) <= 5e-7 or (math.isnan(logged) and math.isnan(saved))):
        run["notes"].append(f"best.pt records {column} {float(saved):.6f} at epoch {epoch}, but log.csv has "
                            f"{row[column]}: the two files are from different runs")
    if not 0 <= logged <= 1:
        run["notes"].append(f"log.csv's {column} at epoch {epoch} is {row[column]}, outside 0..1: the log is damaged")
    higher = [r for r in run["rows"] if number(r.get(column)) > logged]
    if higher:
        run["notes"].append(f"log.csv has a higher {column} ({higher[0][column]} at epoch {higher[0]['epoch']}) "
                            f"than the epoch best.pt holds ({epoch}): best.pt is not this log's best")
    return row


def epochs_done(run):
    """``"12 of 40"`` (logged epochs of planned); a note when the run has not finished."""
    last = max(int(number(r.get("epoch"))) if not math.isnan(number(r.get("epoch"))) else 0 for r in run["rows"])
    planned = (run["args"] or {}).get("epochs")
    if not isinstance(planned, int):
        return f"{last}"
    if last < planned:
        run["notes"].append(f"unfinished: {last} of {planned} epochs logged")
    return f"{last} of {planned}"


def data_kind(data_path, problem):
    """``(kind, detail)`` of a data folder: synthetic when ``datasets/synthetic.py``'s marker is in
    it or its parent; real when it has no marker and exactly the official data's file counts;
    otherwise unknown."""
    if not data_path:
        return "unknown", "no data folder recorded"
    for folder in (data_path, os.path.dirname(os.path.normpath(data_path))):
        marker = os.path.join(folder, SYNTHETIC_MARKER)
        if os.path.isfile(marker):
            try:
                with open(marker) as f:
                    params = json.load(f)
                detail = ", ".join(f"{k} {v}" for k, v in params.items()) if isinstance(params, dict) else ""
            except (OSError, ValueError):
                detail = ""
            return "synthetic", f"`{marker}`" + (f": {detail}" if detail else "")
    if not os.path.isdir(data_path):
        return "unknown", f"the folder is not found from {os.getcwd()}"
    counts = {split: len([n for n in os.listdir(os.path.join(data_path, split)) if n.endswith(suffix)])
              if os.path.isdir(os.path.join(data_path, split)) else 0
              for split, (suffix, _) in OFFICIAL_COUNTS[problem].items()}
    shown = ", ".join(f"{n:,} in {split}/" for split, n in counts.items())
    if all(counts[split] == n for split, (_, n) in OFFICIAL_COUNTS[problem].items()):
        return "real", f"no synthetic-data marker, and the official file counts: {shown}"
    return "unknown", f"no synthetic-data marker, and not the official file counts: {shown}"


# --------------------------------------------------------------------------- commands


def start_help(script):
    """Start ``script --help`` (a subprocess: a script never imports another); ``script_options`` reads it."""
    cmd = [sys.executable, os.path.join(cli.REPO, script), "--help"]
    try:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "COLUMNS": "1000"})
    except OSError:
        return None


def script_options(script, cache):
    """``{dest: (flag, takes_value, negatable)}`` of ``script``'s flags, read from its ``--help``
    (started by ``start_help``, kept in ``cache``); None when it cannot be read."""
    if script not in cache:
        cache[script] = start_help(script)
    if isinstance(cache[script], subprocess.Popen) or cache[script] is None:
        proc, out = cache[script], ""
        if proc is not None:
            try:
                out = proc.communicate(timeout=120)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        options = {}
        for entry in re.split(r"\n(?=  -)", out.split("options:", 1)[-1]) if "options:" in out else []:
            lines = entry.strip().splitlines()
            if not lines or not lines[0].startswith("-"):
                continue
            invocation = re.split(r"\s{2,}", lines[0].strip())[0]
            flags = re.findall(r"--[A-Za-z0-9][\w-]*", invocation)
            if not flags or flags[0] == "--help":
                continue
            takes_value = bool(re.sub(r"--[A-Za-z0-9][\w-]*|,|\s", "", invocation))
            negatable = any(f == "--no-" + flags[0][2:] for f in flags[1:])
            options[flags[0][2:].replace("-", "_")] = (flags[0], takes_value, negatable)
        cache[script] = options or {}
    return cache[script] or None


def value_text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def run_command(run, cache):
    """``(command, how)``: the command recorded with the run, or one rebuilt from ``args.json``."""
    args, script = run["args"], TRAIN_SCRIPT[run["problem"]]
    recorded = [c for c in args.get("commands") or [] if isinstance(c, dict) and isinstance(c.get("command"), str)]
    if recorded:  # core/runs.write_args: sys.argv of each command that ran the run, the first started it
        texts = []
        for i, c in enumerate(recorded):
            world = c.get("world_size")
            launcher = ["torchrun", "--nproc_per_node", str(world)] if isinstance(world, int) and world > 1 else \
                ["python"]
            when = f"{'started' if i == 0 else 'resumed'} {c.get('started', '(time not recorded)')}"
            try:
                command = wrap_command(launcher + shlex.split(c["command"]))
            except ValueError:  # an edited args.json: shown as it is
                command = shlex.join(launcher) + " " + c["command"]
            texts.append(f"# {when} on {c.get('device_used', 'a device not recorded')}\n{command}")
        how = "recorded with the run" + (f" (started, then resumed {len(recorded) - 1} time(s))"
                                         if len(recorded) > 1 else "")
        return "\n".join(texts), how
    for key in ("command", "argv"):
        recorded = args.get(key)
        if recorded:
            text = recorded if isinstance(recorded, str) else shlex.join(map(str, recorded))
            return text, "recorded with the run"
    options = script_options(script, cache)
    words = ["python", script]
    if options is None:
        how = f"rebuilt from args.json without {script} --help (unreadable): every saved value, flags guessed"
        items = {k: ("--" + k.replace("_", "-"), not isinstance(v, bool), False) for k, v in args.items()
                 if k not in PROCESS_KEYS - {"output_dir", "resume"}}
    else:
        how = "rebuilt from args.json (no command is recorded with the run)"
        items = options
    first = [k for k in ("recipe",) if k in items and k in args]
    # --overwrite only removed an earlier run from the folder; pasted again it would delete this one.
    for key in first + sorted(k for k in items if k not in first and k in args and k != "overwrite"):
        flag, takes_value, negatable = items[key]
        value = args[key]
        if isinstance(value, bool) and not takes_value:
            if value or negatable:
                words.append(flag if value else "--no-" + flag[2:])
        elif value is not None and value != "" and value != []:
            words += [flag, value_text(value)]
    world = args.get("world_size")
    if isinstance(world, int) and world > 1:
        words = ["torchrun", "--nproc_per_node", str(world)] + words[1:]
        how += f"; {world} processes (torchrun's node layout is not recorded)"
    return wrap_command(words), how


def wrap_command(words, width=100):
    """A shell command, continued with backslashes at ``width`` columns, each flag with its value."""
    groups, i = [], 0
    while i < len(words):
        if words[i].startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--") and i >= 2:
            groups.append(f"{shlex.quote(words[i])} {shlex.quote(words[i + 1])}")
            i += 2
        else:
            groups.append(shlex.quote(words[i]))
            i += 1
    lines, line = [], ""
    for g in groups:
        if line and len(line) + 1 + len(g) > width:
            lines.append(line + " \\")
            line = "    " + g
        else:
            line = f"{line} {g}" if line else g
    return "\n".join(lines + [line])
