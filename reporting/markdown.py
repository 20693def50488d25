"""The report's text (``report.md``): the seed report's sections and order, every number read from
the runs' files (``report.py``'s docstring says where each comes from)."""
import datetime
import json
import os
import shlex

import torch

from core.plots import number
from reporting.figures import run_figure, snapshot_table, tsne_figure
from reporting.output import Figures
from reporting.runs import METRIC, PROCESS_KEYS, data_kind, run_command, utc, value_text


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
