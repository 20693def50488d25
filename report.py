"""Write the homework report (``report.md`` and its figures) from finished runs.

    python report.py --p1 runs/p1 --baseline runs/p2_fcn32s --improved runs/p2_fcn8s --output runs/report
    python report.py --p1 runs/p1 --baseline runs/p2_fcn32s --improved runs/p2_fcn8s \\
        --ablation runs/p2_improved-ce --ablation runs/p2_improved-adam --output runs/report
    python report.py --p1 runs/demo/p1 --baseline runs/demo/p2_fcn32s --improved runs/demo/p2_fcn8s \\
        --output runs/demo/report                                                    # end of make demo

``report.md`` follows the seed report's sections and order: Problem 1 (the network as
``print(model)``, the best validation accuracy and its epoch, the t-SNE figure), Problem 2 (both
networks, both epoch-mask figures, both mIoUs with per-class IoU, every setting that differs
between the baseline and the improved run, the ablation runs against ``improved``, the curves
and per-class figures), after a header saying what the numbers were measured on: each run's
data folder and data kind, device, precision, epochs, the command that produced it and the
grading commands. It renders on GitHub and in common Markdown editors; its figures are copied
into ``figures/`` beside it and linked relatively, so the folder can be moved or zipped whole.

Where each number comes from: the accuracy / mIoU and per-class IoU are the row of ``log.csv``
of the epoch ``best.pt`` holds (the validation numbers counted during training, as the course
grader counts them), written as the log writes them; the networks are rebuilt from ``best.pt``
(``core/checkpoint.py``); the settings are ``args.json``. Nothing is recomputed; a number that
cannot be traced to a run's files is not written. A figure the run lacks is made here: the t-SNE
by running ``p1_tsne.py`` on the P1 run's validation folder (``data_path`` of its ``args.json`` +
``val_50``, or ``--p1-images``), curves and per-class IoU drawn from ``log.csv``.

A run that is missing (no folder, no ``log.csv`` or no usable ``best.pt``) is marked missing in
its section, a warning names it, and the rest of the report is still written (exit 0). Exit 1
(``error: ...``) only when nothing can be written: ``--output`` is a run folder or lies inside
one, or holds a ``report.md`` or figure that this tool did not write (or that was edited since;
``--overwrite`` replaces them). Running the same command again replaces the tool's own files.

``--html`` also writes ``report.html``: the same report as one self-contained page (figures
embedded as base64), to print to PDF from a browser.
"""
import argparse
import base64
import csv
import datetime
import hashlib
import html
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile

import torch

from core import checkpoint, cli, plots
from core.checkpoint import CheckpointError
from core.fileio import atomic_write_bytes, read_csv, write_json
from core.hub import sha256_file
from core.plots import number
from core.runs import NOT_RESTORED
from datasets.masks import CLASS_COLORS

REPORT = "report.md"
REPORT_HTML = "report.html"  # --html: the same report, figures embedded
MANIFEST = ".report-files.json"  # what this tool wrote into --output, with each file's sha256
FIGURES = "figures"
METRIC = {"p1": "val_acc", "p2": "val_miou"}
TRAIN_SCRIPT = {"p1": "p1_train.py", "p2": "p2_train.py"}
# Settings of the process, not of what is computed (core/runs.py); world_size stays: it sets the global batch.
PROCESS_KEYS = set(NOT_RESTORED) - {"world_size"}
SYNTHETIC_MARKER = "synthetic.json"  # written by datasets/synthetic.py at the root of its output
# The official hw2_data: file suffix and count of each split (README, Data).
OFFICIAL_COUNTS = {"p1": {"train_50": (".png", 22500), "val_50": (".png", 2500)},
                   "p2": {"train": ("_sat.jpg", 2000), "validation": ("_sat.jpg", 257)}}


# --------------------------------------------------------------------------- reading a run


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


# --------------------------------------------------------------------------- the output folder


def read_manifest(output):
    path = os.path.join(output, MANIFEST)
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        return {str(k): v for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def check_location(output, folders):
    """Refuse an ``--output`` that is not a folder, or is (or lies inside) one of the run folders
    (``folders``: ``[(flag, folder)]``)."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise cli.UserError(f"--output {output}: exists and is not a folder")
    out = os.path.realpath(output)
    for flag, given in folders:
        if given and os.path.isdir(given):
            folder = os.path.realpath(given)
            if out == folder or out.startswith(folder + os.sep):
                raise cli.UserError(f"--output {output}: is {'' if out == folder else 'inside '}the run folder "
                                    f"{given} (--{flag}); write the report into a folder of its own, "
                                    "e.g. --output runs/report")


def check_ownership(output, folders, planned, overwrite):
    """Refuse to write a planned file into a run folder, or over a file this tool did not write
    (or that changed since it wrote it) unless ``overwrite``. Returns the old manifest."""
    for flag, given in folders:
        if given and os.path.isdir(given):
            folder = os.path.realpath(given)
            clash = [p for p in planned if os.path.realpath(os.path.join(output, p)).startswith(folder + os.sep)]
            if clash:
                raise cli.UserError(f"--output {output}: {clash[0]} would land in the run folder {given} "
                                    f"(--{flag}); write the report into a folder of its own")
    manifest = read_manifest(output)
    foreign = []
    for name in planned:
        path = os.path.join(output, name)
        if os.path.lexists(path) and not (name in manifest and os.path.isfile(path) and not os.path.islink(path)
                                          and manifest[name] in (None, sha256_file(path))):
            foreign.append(path)
    if foreign and not overwrite:
        what = "was not written by report.py, or was edited since" if len(foreign) == 1 else \
            "were not written by report.py, or were edited since"
        raise cli.UserError(f"--output {output}: {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''} {what}; "
                            "move it away, choose another --output, or pass --overwrite to replace it")
    return manifest


# --------------------------------------------------------------------------- figures


class Figures:
    """The figures of the report: each is copied (or drawn) into ``figures/`` under a name the
    report links to; ``bytes`` holds the content until everything is checked and written."""

    def __init__(self):
        self.files = {}  # name under --output -> bytes

    def add(self, name, data):
        rel = f"{FIGURES}/{name}"
        self.files[rel] = data
        return rel

    def copy(self, name, path):
        with open(path, "rb") as f:
            return self.add(name, f.read())

    def draw(self, name, draw):
        """Draw into a temporary folder (the plotting functions write files), keep the bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            draw(path)
            return self.copy(name, path)


def run_figure(run, name, figures, warnings):
    """The run's ``name`` figure (copied), or one drawn here from ``log.csv`` when the run has none
    or drew it before its last log row; ``(link, note)``, link None when there is none."""
    folder, prefix = run["folder"], run["role"].split()[0]
    path, log_csv = os.path.join(folder, name), os.path.join(folder, "log.csv")
    target = f"{prefix}-{name}"
    fresh = os.path.isfile(path) and os.path.getmtime(path) >= run["log_mtime"]
    if fresh or (os.path.isfile(path) and name.startswith("epoch_masks")):
        return figures.copy(target, path), None
    title = f"{run['ckpt']['model_name']} (run {os.path.basename(os.path.abspath(folder))})"
    column = METRIC[run["problem"]]
    if name == "curves.png":
        draw = lambda p: plots.plot_curves(log_csv, p, column, title)  # noqa: E731
    elif name == "per_class_iou.png":
        draw = lambda p: plots.plot_per_class_iou(log_csv, p, title, CLASS_COLORS, column)  # noqa: E731
    else:
        return None, f"`{path}` not found (the run draws it when it finishes)"
    why = "older than its log.csv" if os.path.isfile(path) else "not in the run folder"
    try:
        return figures.draw(target, draw), f"drawn by report.py from `{log_csv}` (the run's `{name}` is {why})"
    except (ValueError, KeyError) as e:
        warnings.append(f"{log_csv}: cannot draw {name} ({e})")
        return None, f"`{name}` could not be drawn from `{log_csv}`"


def tsne_figure(run, images, figures, warnings):
    """``(link, note)`` of the t-SNE figure: the run's ``tsne.png`` when it is newer than
    ``best.pt``, else made now by ``p1_tsne.py`` from ``best.pt`` on the validation images."""
    folder = run["folder"]
    path = os.path.join(folder, "tsne.png")
    if os.path.isfile(path) and os.path.getmtime(path) >= run["ckpt"]["mtime"]:
        return figures.copy("p1-tsne.png", path), f"`{path}`, from the run folder"
    if images is None:
        data_path = (run["args"] or {}).get("data_path")
        if not data_path:
            warnings.append(f"{folder}: no tsne.png and no data_path in args.json; pass --p1-images to make one")
            return None, "not made: the validation folder is unknown (pass `--p1-images`)"
        images = os.path.join(data_path, "val_50")
    if not os.path.isdir(images):
        warnings.append(f"{images}: no such folder, so no t-SNE figure was made (pass --p1-images)")
        return None, f"not made: `{images}` is not on this machine (pass `--p1-images`)"
    why = "older than its best.pt" if os.path.isfile(path) else "not in the run folder"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(cli.REPO, "p1_tsne.py"), "--checkpoint", run["ckpt"]["path"],
               "--images", images, "--output-dir", tmp]
        print(f"making the t-SNE figure: python p1_tsne.py --checkpoint {run['ckpt']['path']} --images {images}",
              file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        made = os.path.join(tmp, "tsne.png")
        if r.returncode != 0 or not os.path.isfile(made):
            last = (r.stderr.strip().splitlines() or ["no message"])[-1].replace(tmp, "<t-SNE folder>")
            warnings.append(f"p1_tsne.py failed on {images}: {last}")
            return None, f"not made: `p1_tsne.py` failed ({last})"
        link = figures.copy("p1-tsne.png", made)
    return link, (f"made by report.py with `python p1_tsne.py --checkpoint {run['ckpt']['path']} --images {images}` "
                  f"(the run's `tsne.png` is {why})")


def snapshot_table(run, figures):
    """The seed's id x epoch table from the run's ``snapshots/<id>_epoch<E>.png``, when the run
    has the masks but not the figure; [] when it has none."""
    args = run["args"] or {}
    ids, epochs = args.get("snapshot_ids") or [], args.get("snapshot_epochs") or []
    found = {(i, e): os.path.join(run["folder"], "snapshots", f"{i}_epoch{e}.png") for i in ids for e in epochs}
    if not any(os.path.isfile(p) for p in found.values()):
        return []
    prefix = run["role"].split()[0]
    lines = ["| ID \\ epoch | " + " | ".join(plots.ordinal(e) for e in epochs) + " |",
             "|---|" + "---|" * len(epochs)]
    for i in ids:
        cells = []
        for e in epochs:
            p = found[(i, e)]
            cells.append(f"![{i}, epoch {e}]({figures.copy(f'{prefix}-{i}_epoch{e}.png', p)})" if os.path.isfile(p)
                         else "missing")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------- the report


def code_block(text, lang="text"):
    return [f"```{lang}", text.rstrip("\n"), "```"]


def cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def setting(value):
    if value is None:
        return "(not set)"
    return f"`{cell(json.dumps(value) if isinstance(value, dict) else value_text(value))}`"


def missing_block(run):
    return [f"**Missing:** {run['missing']}." if run["folder"] else
            f"**Missing:** no run given (`--{run['role'].split()[0]}`)."]


def notes_block(run):
    return [f"> Note on `{run['folder']}`: {n}." for n in run["notes"]]


def architecture(run):
    c = run["ckpt"]
    kwargs = ", ".join(f"{k}={v}" for k, v in c["model_kwargs"].items())
    width = c["model_kwargs"].get("width", 1)
    narrow = (f" At width {width} every channel count is divided by {width}: a narrow version of the network, "
              "not its full size (width 1).") if width != 1 else ""
    return [f"`print(model)` of the network in `{c['path']}` (model `{c['model_name']}`, {kwargs}; "
            f"{c['parameters']:,} parameters).{narrow}", ""] + code_block(c["printout"])


def figure_lines(link, alt, note=None):
    lines = [f"![{alt}]({link})"] if link else []
    return lines + ([""] + [f"*{note}*"] if note else [])


def score_sentence(run, what):
    column, row = METRIC[run["problem"]], run["best"]
    if row is None:
        return [f"The {what} is not reported: see the note above."]
    return [f"The {what} is **{row[column]}**, at epoch {row['epoch']} ({run['epochs']} epochs logged; "
            f"`{run['folder']}/log.csv`, column `{column}`, the epoch `best.pt` holds)."]


def title(run):
    """The run's name in the report: P1, P2 baseline, P2 improved, ablation N."""
    return {"p1": "P1", "baseline": "P2 baseline", "improved": "P2 improved"}.get(run["role"], run["role"])


def measured_on(runs, cache):
    """The header: what every number was measured on, and the commands behind each run."""
    lines = ["## What the numbers were measured on", "",
             "| run | folder | data | device, precision of validation, processes | epochs logged (log.csv last "
             "written) |", "|---|---|---|---|---|"]
    kinds, markers = set(), {}
    for run in runs:
        folder = f"`{cell(run['folder'])}`" if run["folder"] else "(not given)"
        if run["missing"] and not run["args"]:
            lines.append(f"| {title(run)} | {folder} **missing** | | | |")
            continue
        args = run["args"] or {}
        kind, detail = data_kind(args.get("data_path"), run["problem"])
        kinds.add(kind)
        if kind == "synthetic":
            markers.setdefault(detail.split(":")[0], detail)
            detail = "marker " + detail.split(":")[0]
        device = args.get("device", "not recorded")
        if args.get("device_used"):  # recorded by core/runs.write_args (the latest command's)
            device = f"{args['device_used']} (--device {device})"
        elif device == "auto":
            device = "auto (the device it chose is not recorded)"
        ckpt = run["ckpt"]
        precision = ckpt["meta"].get("precision", "precision not recorded") if ckpt else "no usable best.pt"
        world = args.get("world_size")
        processes = f"{world} process{'es' if world != 1 else ''}" if world else "processes not recorded"
        epochs = f"{run['epochs']} ({utc(run['log_mtime'])})" if "epochs" in run else ""
        lines.append(f"| {title(run)} | {folder}{' **missing**' if run['missing'] else ''} "
                     f"| `{cell(args.get('data_path', 'not recorded'))}`: **{kind}** ({cell(detail)}) "
                     f"| {cell(device)}, {cell(precision)}, {processes} | {epochs} |")
    recorded = sorted({str(r["args"].get(k)) for r in runs if not r["missing"] and r["args"]
                       for k in ("torch_version", "torch") if r["args"].get(k)})
    pythons = sorted({str(r["args"]["python_version"]) for r in runs if not r["missing"] and r["args"]
                      and r["args"].get("python_version")})
    torch_line = (f"torch {', '.join(recorded)}" + (f", Python {', '.join(pythons)}" if pythons else "")
                  + " (recorded with the runs)" if recorded else
                  f"not recorded with the runs; this report was written with torch {torch.__version__}")
    lines += [""] + [f"- Synthetic data made by `datasets/synthetic.py` with the settings in {detail}."
                     for detail in markers.values()]
    lines += [f"- torch: {torch_line}.",
              f"- Report written {utc(datetime.datetime.now().timestamp())} by `report.py`; each run's date is when "
              "its `log.csv` was last written."]
    if "synthetic" in kinds:
        lines += ["", "> **Synthetic data.** At least one run was trained and validated on the synthetic stand-in "
                  "data of `datasets/synthetic.py`: its numbers show that the pipeline works, and say nothing about "
                  "the real homework data."]
    if "unknown" in kinds:
        lines += ["", "> **Data kind unknown** for some runs (see the table): their data folder has no synthetic-data "
                  "marker but is not the official data either, or is not on this machine."]
    commands = []
    for run in runs:
        if run["missing"] or not run["args"]:
            continue
        command, how = run_command(run, cache)
        commands += [f"{title(run)} (`{run['folder']}`), {how}:", ""] + code_block(command, "bash") + [""]
    if commands:
        lines += ["", "### Commands that produced the runs", ""] + commands
    grading = grading_commands(runs)
    if grading:
        lines += ["### Grading commands", "",
                  "The scores below are the validation numbers logged during training. To recompute them through "
                  "the grading scripts (which predict in the precision validation used):", ""] + \
            code_block("\n".join(grading), "bash")
    return lines


def grading_commands(runs):
    out = []
    for run in runs:
        if run["missing"] or not run["args"] or not run["args"].get("data_path"):
            continue
        ckpt, data = shlex.quote(run["ckpt"]["path"]), run["args"]["data_path"]
        pred = shlex.quote(os.path.join(os.path.dirname(os.path.normpath(run["folder"])) or ".",
                                        f"{os.path.basename(os.path.normpath(run['folder']))}_pred"))
        if run["problem"] == "p1":
            out += [f"P1_CKPT={ckpt} bash hw2_p1.sh {shlex.quote(os.path.join(data, 'val_50'))} {pred}.csv",
                    f"python p1_test.py --score-csv {pred}.csv"]
        elif run["role"].startswith(("baseline", "improved")):
            val = shlex.quote(os.path.join(data, "validation"))
            out += [f"P2_CKPT={ckpt} bash hw2_p2.sh {val} {pred}",
                    f"python3 mean_iou_evaluate.py -g {val} -p {pred}"]
    return out


def p1_section(run, images, figures, warnings):
    lines = ["## Problem 1: Image classification", ""]
    if run["missing"]:
        return lines + missing_block(run) + [""]
    lines += notes_block(run) + ([""] if run["notes"] else [])
    lines += ["### 1. Network architecture", ""] + architecture(run) + [""]
    lines += ["### 2. Validation accuracy", ""] + score_sentence(run, "best accuracy on the validation set") + [""]
    link, note = tsne_figure(run, images, figures, warnings)
    lines += ["### 3. t-SNE of the penultimate-layer features", ""] + figure_lines(link, "t-SNE", note) + [""]
    lines += ["### 4. Training curves and confusion matrix", ""]
    for name, alt in (("curves.png", "training curves"), ("confusion_matrix.png", "confusion matrix")):
        link, note = run_figure(run, name, figures, warnings)
        lines += figure_lines(link, alt, note) + [""]
    return lines


def masks_block(run, figures, warnings):
    args = run["args"] or {}
    epochs = args.get("snapshot_epochs") or []
    stages = " (the early, middle and final stage of this run)" if len(epochs) == 3 else ""
    intro = (f"The predicted masks of validation images {', '.join(args.get('snapshot_ids') or [])} after epochs "
             f"{', '.join(map(str, epochs))}{stages}:") if epochs else "The predicted masks by epoch:"
    lines = [intro, ""]
    link, note = run_figure(run, "epoch_masks_report.png", figures, warnings)
    if link:
        lines += figure_lines(link, "predicted masks by epoch") + [""]
        more, _ = run_figure(run, "epoch_masks.png", figures, warnings)
        if more:
            lines += ["With each image and its ground truth:", ""]
            lines += figure_lines(more, "masks with ground truth") + [""]
        return lines
    table = snapshot_table(run, figures)
    return lines + (table if table else [f"*{note}; the run has no `snapshots/` either.*"]) + [""]


def iou_table(base, imp):
    """Per-class IoU of both runs at their best epochs, from the ``iou_<class>`` columns of the logs."""
    usable = [r for r in (base, imp) if not r["missing"] and r["best"] is not None]
    if not usable:
        return []
    classes = []
    for r in usable:
        classes += [k[4:] for k in r["best"] if k.startswith("iou_") and k[4:] not in classes]
    head = "| class | " + " | ".join(f"{r['role']} (epoch {r['best']['epoch']})" for r in usable) + " |"
    lines = [head, "|---|" + "---:|" * len(usable)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join((r["best"].get(f"iou_{c}") or "absent") for r in usable) + " |")
    lines.append("| **mIoU** | " + " | ".join(f"**{r['best']['val_miou']}**" for r in usable) + " |")
    return lines


def differing_settings(a, b):
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in PROCESS_KEYS and a.get(k) != b.get(k)]


def settings_table(base, imp):
    if base["missing"] or imp["missing"]:
        return ["Not compared: a run is missing."]
    if not base["args"] or not imp["args"]:
        return ["Not compared: a run has no readable `args.json`."]
    keys = differing_settings(base["args"], imp["args"])
    if not keys:
        return ["The two runs' `args.json` hold the same settings."]
    lines = [f"Every setting that differs between the two runs' `args.json` ({len(keys)}; where each recipe value "
             "comes from, the report, the author's code or ours: `p2_train.py --recipe NAME --help` and the README's "
             "recipe table):", "", "| setting | baseline | improved |", "|---|---|---|"]
    lines += [f"| `--{k.replace('_', '-')}` | {setting(base['args'].get(k))} | {setting(imp['args'].get(k))} |"
              for k in keys]
    return lines


def ablation_table(imp, ablations):
    if not ablations:
        return []
    lines = ["### Ablations", ""]
    ref = None if imp["missing"] or imp["best"] is None else number(imp["best"]["val_miou"])
    lines += [f"Each run against the improved run (`{imp['folder']}`"
              + (f", mIoU {imp['best']['val_miou']}" if ref is not None else ", missing") + "): the settings in which "
              "it differs, its best validation mIoU and the difference (ablation minus improved, from the two logged "
              "values).", "", "| run | differs from improved | best mIoU (epoch) | minus improved |",
              "|---|---|---|---:|"]
    for run in ablations:
        if run["missing"]:
            lines.append(f"| `{cell(run['folder'])}` | **missing:** {cell(run['missing'])} | | |")
            continue
        diff = "(args.json unreadable)"
        if run["args"] and imp["args"]:
            keys = differing_settings(imp["args"], run["args"])
            diff = "; ".join(f"`--{k.replace('_', '-')}` {setting(run['args'].get(k))} "
                             f"(improved: {setting(imp['args'].get(k))})" for k in keys) or "none"
        if run["best"] is None:
            score, delta = "not traced (see notes)", ""
        else:
            score = f"{run['best']['val_miou']} ({run['best']['epoch']})"
            delta = "" if ref is None else f"{number(run['best']['val_miou']) - ref:+.6f}"
        lines.append(f"| `{cell(run['folder'])}` | {cell(diff)} | {score} | {delta} |")
    notes = [n for run in ablations if not run["missing"] for n in notes_block(run)]
    return lines + ([""] + notes if notes else []) + [""]


def p2_section(base, imp, ablations, figures, warnings):
    lines = ["## Problem 2: Semantic segmentation", ""]
    for run in (base, imp):
        lines += notes_block(run)
    if base["notes"] or imp["notes"]:
        lines.append("")
    parts = ((base, "baseline", 1), (imp, "improved", 3))
    for run, name, n in parts:
        shown = f" (`{run['ckpt']['class_name']}`)" if run["ckpt"] else ""
        lines += [f"### {n}. Network architecture of the {name} model{shown}", ""]
        lines += missing_block(run) if run["missing"] else architecture(run)
        lines += ["", f"### {n + 1}. Predicted masks of the {name} model by epoch", ""]
        lines += missing_block(run) + [""] if run["missing"] else masks_block(run, figures, warnings)
    lines += ["### 5. Validation mIoU", ""]
    for k, (run, name, _) in enumerate(parts, 1):
        if run["missing"]:
            lines.append(f"{k}. The {name} model: **missing** ({run['missing']}).")
        elif run["best"] is None:
            lines.append(f"{k}. The {name} model: not reported (see the note above).")
        else:
            lines.append(f"{k}. The mIoU of the {name} model on the validation set is **{run['best']['val_miou']}** "
                         f"(epoch {run['best']['epoch']}, {run['epochs']} epochs logged; `{run['folder']}/log.csv`).")
    if all(not r["missing"] and r["best"] is not None for r in (base, imp)):
        delta = number(imp["best"]["val_miou"]) - number(base["best"]["val_miou"])
        lines += ["", f"Improved minus baseline: {delta:+.6f} mIoU."]
    table = iou_table(base, imp)
    if table:
        lines += ["", "Per-class IoU at each run's best epoch, counted over the whole validation set as the course "
                  "grader counts it (classes 0-5; `unknown` is not scored; `absent`: the class is in neither the "
                  "ground truth nor the prediction), as logged:", ""] + table
    lines += ["", "### What differs between the baseline and the improved run", ""] + settings_table(base, imp) + [""]
    lines += ablation_table(imp, ablations)
    lines += ["### 6. Training curves and per-class IoU", ""]
    for run, name, _ in parts:
        if run["missing"]:
            lines += [f"The {name} model: **missing**.", ""]
            continue
        for fig, alt in (("curves.png", "training curves"), ("per_class_iou.png", "per-class IoU")):
            link, note = run_figure(run, fig, figures, warnings)
            lines += figure_lines(link, f"{name}: {alt}", note) + [""]
    return lines


def build_report(runs, ablations, images, cache, warnings):
    """``(markdown text, Figures)``."""
    p1, base, imp = runs
    figures = Figures()
    lines = ["# DLCV Homework 2: report", "",
             "Written by `report.py` from the run folders below. Every number is copied from a run's files: "
             "the score from the `log.csv` row of the epoch `best.pt` holds, the networks from `best.pt`, the "
             "settings from `args.json`. A number that could not be traced to them is left out.", ""]
    lines += measured_on(list(runs) + ablations, cache) + [""]
    lines += p1_section(p1, images, figures, warnings)
    lines += p2_section(base, imp, ablations, figures, warnings)
    return "\n".join(lines).rstrip() + "\n", figures


# --------------------------------------------------------------------------- HTML


HTML_STYLE = """body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:11pt;line-height:1.45;
max-width:46em;margin:2em auto;padding:0 1em;color:#1f2328}h1,h2,h3{line-height:1.25}h2{border-bottom:1px solid #d0d7de;
padding-bottom:.2em;margin-top:1.6em}code{font-family:Menlo,Consolas,monospace;font-size:85%;background:#f3f4f6;
padding:.1em .3em;border-radius:3px}pre{background:#f6f8fa;padding:.8em;font-size:8pt;line-height:1.3;
white-space:pre-wrap;word-break:break-all}pre code{background:none;padding:0;font-size:inherit}
table{border-collapse:collapse;margin:.6em 0;font-size:9pt}th,td{border:1px solid #d0d7de;padding:.25em .5em;
vertical-align:top}th{background:#f6f8fa}td.r{text-align:right}td code{word-break:break-all}img{max-width:100%}
blockquote{margin:.8em 0;padding:.1em 1em;border-left:4px solid #d0d7de;color:#444}
figure{margin:.8em 0;break-inside:avoid}@media print{body{margin:0;max-width:none}h2,h3{break-after:avoid}}"""


def inline_html(text, files):
    """The inline Markdown this tool writes (code, bold, italics, images) as HTML; images are
    embedded from ``files`` (name -> PNG bytes) as base64."""
    codes = []

    def keep(m):
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    def image(m):
        data = files.get(html.unescape(m.group(2)))
        if data is None:
            return f"[{m.group(1)}: not found]"
        return f'<img alt="{m.group(1)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    text = re.sub(r"`([^`]*)`", keep, text.replace("\\|", "|"))
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", image, text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def table_cells(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def markdown_to_html(text, files, title):
    """One self-contained HTML page of the Markdown this tool writes: headings, paragraphs, fenced
    code, tables, block quotes, lists and images (embedded), for printing to PDF from a browser."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,4}) (.*)", line):
            n = len(m.group(1))
            out.append(f"<h{n}>{inline_html(m.group(2), files)}</h{n}>")
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            head, align, body = table_cells(lines[i]), table_cells(lines[i + 1]), lines[i + 2:j]
            right = [a.endswith(":") for a in align]
            rows = ["<tr>" + "".join(f"<th>{inline_html(c, files)}</th>" for c in head) + "</tr>"]
            for row in body:
                rows.append("<tr>" + "".join(f"<td{' class=r' if k < len(right) and right[k] else ''}>"
                                             f"{inline_html(c, files)}</td>" for k, c in enumerate(table_cells(row)))
                            + "</tr>")
            out.append("<table>" + "".join(rows) + "</table>")
            i = j
        elif re.match(r"(> |- |\d+\. )", line):
            kind = line[0] if line[0] in ">-" else "1"
            j, items = i, []
            while j < len(lines) and lines[j].strip() and (lines[j].startswith(kind) if kind in ">-" else
                                                           re.match(r"\d+\. ", lines[j])):
                items.append(re.sub(r"^(> |- |\d+\. )", "", lines[j]))
                j += 1
            if kind == ">":
                out.append(f"<blockquote><p>{inline_html(' '.join(items), files)}</p></blockquote>")
            else:
                tag = "ul" if kind == "-" else "ol"
                out.append(f"<{tag}>" + "".join(f"<li>{inline_html(t, files)}</li>" for t in items) + f"</{tag}>")
            i = j
        elif line.startswith("!["):
            out.append(f"<figure>{inline_html(line, files)}</figure>")
            i += 1
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not re.match(r"(```|#|\||> |- |\d+\. |!\[)", lines[j]):
                j += 1
            out.append(f"<p>{inline_html(' '.join(lines[i:max(j, i + 1)]), files)}</p>")
            i = max(j, i + 1)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


# --------------------------------------------------------------------------- main


def write_output(output, text, figures, old_manifest, with_html):
    """Write the figures, then ``report.md`` (and ``report.html``), atomically; the manifest lists
    every file (and its hash) first as pending, so an interrupted write leaves nothing the next
    run would refuse."""
    files = dict(figures.files)
    files[REPORT] = text.encode()
    if with_html:
        files[REPORT_HTML] = markdown_to_html(text, figures.files, "DLCV Homework 2: report").encode()
    pending = {**old_manifest, **{name: None for name in files}}
    current = os.path.join(output, MANIFEST)
    try:
        write_json(current, {"files": pending})
        for name, data in files.items():
            current = os.path.join(output, name)
            atomic_write_bytes(current, data)
        for name, digest in old_manifest.items():  # figures of an earlier report that this one no longer has
            current = os.path.join(output, name)
            if name not in files and own_name(name) and os.path.isfile(current) and not os.path.islink(current) \
                    and digest in (None, sha256_file(current)):
                os.remove(current)
        current = os.path.join(output, MANIFEST)
        write_json(current, {"files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}})
    except OSError as e:  # named by the real file, not the temporary one beside it
        raise cli.UserError(f"{current}: cannot write ({cli.error_message(e).split(': ')[-1]})") from None


def own_name(name):
    """Whether ``name`` (from the manifest, which anyone can edit) is a file this tool writes."""
    return name in (REPORT, REPORT_HTML) or (name.startswith(FIGURES + "/") and os.path.normpath(name) == name
                                            and "/" not in name[len(FIGURES) + 1:])


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    folders = [("p1", args.p1), ("baseline", args.baseline), ("improved", args.improved)] + \
        [("ablation", folder) for folder in args.ablation]
    check_location(args.output, folders)
    outputs = [REPORT] + ([REPORT_HTML] if args.html else [])
    check_ownership(args.output, folders, outputs, args.overwrite)  # before any slow work
    runs = (load_run(args.p1, "p1", "p1"), load_run(args.baseline, "baseline", "p2"),
            load_run(args.improved, "improved", "p2"))
    ablations = [load_run(folder, f"ablation {i}", "p2") for i, folder in enumerate(args.ablation, 1)]
    warnings = []
    cache = {script: start_help(script) for script in sorted({TRAIN_SCRIPT[r["problem"]] for r in list(runs) + ablations
                                                              if r["args"] and not r["missing"]})}
    text, figures = build_report(runs, ablations, args.p1_images, cache, warnings)
    old_manifest = check_ownership(args.output, folders, list(figures.files) + outputs, args.overwrite)
    write_output(args.output, text, figures, old_manifest, args.html)
    for run in list(runs) + ablations:
        if run["missing"]:
            print(f"warning: {run['role']} run: {run['missing']}; its section is marked missing", file=sys.stderr)
        for note in run["notes"]:
            print(f"warning: {run['folder']}: {note}", file=sys.stderr)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {' and '.join(os.path.join(args.output, n) for n in outputs)}, with {len(figures.files)} "
          f"figure(s) in {os.path.join(args.output, FIGURES)}")
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=cli.HelpFormatter)
    p.add_argument("--p1", default="runs/p1", help="the P1 run folder (p1_train.py --output-dir)")
    p.add_argument("--baseline", default="runs/p2_fcn32s", help="the P2 baseline run folder (--recipe baseline)")
    p.add_argument("--improved", default="runs/p2_fcn8s", help="the P2 improved run folder (--recipe improved)")
    p.add_argument("--ablation", action="append", default=[], metavar="FOLDER",
                   help="a P2 run to compare with --improved (repeat the flag for each)")
    p.add_argument("--p1-images", default=None,
                   help="validation images for a t-SNE figure the P1 run lacks (default: its args.json data_path "
                        "+ val_50)")
    p.add_argument("--output", default="runs/report", help="folder for report.md and figures/")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained file (figures embedded) to print to PDF from a "
                        "browser")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a report.md or figure in --output that report.py did not write (or that was edited)")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main))
