"""report.py end to end on tiny runs: a P1 run (width 16, 32x32, 2 epochs) and two P2 runs (width 16,
no ImageNet weights, 1 epoch) on the session's synthetic data (``tiny_runs``), then the report: every figure link
resolves, the accuracy and mIoUs in the text are the logged ones, a missing run is reported and
not fatal, and the output folder rules (never a run folder, never a file the tool did not write).
The runs train in subprocesses; report.py runs as ``main(argv)`` in this process (``run_main``),
which starts its own ``--help`` and ``p1_tsne.py`` subprocesses as it does from the command line.
"""
import json
import os
import platform
import re
import shutil
import subprocess

import pytest
import torch

from core.fileio import read_csv
from core.runs import RUN_RECORD
from tests.conftest import ROOT, run_main

@pytest.fixture(scope="module")
def runs(tiny_runs):
    return tiny_runs


def report(capsys, base, output, *extra, p1="p1", baseline="p2_fcn32s", improved="p2_fcn8s", check=True):
    """report.py's ``main(argv)`` in this process (``run_main``; report.py's ``__main__`` expects no
    extra error types), as a CompletedProcess."""
    argv = ["--p1", base / p1, "--baseline", base / baseline, "--improved", base / improved, "--output", output, *extra]
    code, out, err = run_main("report", [str(a) for a in argv], capsys, expected=())
    if check:
        assert code == 0, err[-3000:]
    return subprocess.CompletedProcess(argv, code, out, err)


def best(log_csv, column):
    """The best logged value of ``column`` as the log writes it (the first epoch of ties)."""
    rows = read_csv(log_csv)
    return max(rows, key=lambda r: (float(r[column]), -int(r["epoch"])))


def section(text, start, end=None):
    body = text.split(start, 1)[1]
    return body.split(end, 1)[0] if end else body


def test_report_figures_resolve_and_numbers_are_the_logged_ones(runs, tmp_path, capsys):
    out = tmp_path / "report"
    r = report(capsys, runs, out, "--ablation", runs / "p2_fcn32s", "--ablation", runs / "no such run", "--html")
    text = (out / "report.md").read_text()

    # Every image link is relative and resolves to a file beside report.md; the t-SNE figure,
    # which the P1 run lacks, was made by p1_tsne.py.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 11 and "figures/p1-tsne.png" in links
    for link in links:
        assert not os.path.isabs(link) and (out / link).is_file(), link
    assert not (runs / "p1" / "tsne.png").exists()  # the run folder is only read

    # P1: the best accuracy and its epoch, as logged.
    p1 = best(runs / "p1" / "log.csv", "val_acc")
    assert f"**{p1['val_acc']}**, at epoch {p1['epoch']} " in section(text, "## Problem 1", "## Problem 2")
    # P2: both mIoUs and every per-class IoU of the best epoch, as logged.
    p2 = section(text, "### 5. Validation mIoU", "### What differs")
    rows = [best(runs / name / "log.csv", "val_miou") for name in ("p2_fcn32s", "p2_fcn8s")]
    assert f"baseline model on the validation set is **{rows[0]['val_miou']}** (epoch {rows[0]['epoch']}," in p2
    assert f"improved model on the validation set is **{rows[1]['val_miou']}** (epoch {rows[1]['epoch']}," in p2
    for cls in ("urban", "agriculture", "rangeland", "forest", "water", "barren"):
        assert f"| {cls} | {rows[0]['iou_' + cls] or 'absent'} | {rows[1]['iou_' + cls] or 'absent'} |" in p2
    # Settings that differ, and the ablation table with its difference to improved.
    assert "| `--model` | `fcn32s` | `fcn8s` |" in text and "| `--loss` | `ce` | `focal` |" in text
    delta = float(rows[0]["val_miou"]) - float(rows[1]["val_miou"])
    assert f"| {rows[0]['val_miou']} ({rows[0]['epoch']}) | {delta:+.6f} |" in text
    assert "**missing:**" in section(text, "### Ablations") and "no such run" in r.stderr
    # The header: data kind, the commands (rebuilt, and able to run), the grading commands.
    # The session's data is made by generate() without the marker `python -m datasets.synthetic`
    # writes, and it is not official-sized: unknown, not claimed real.
    assert text.count("**unknown** (no synthetic-data marker, and not the official file counts") == 4
    # The commands as typed, recorded with each run (args.json), and the device and torch that ran them.
    commands = section(text, "### Commands that produced the runs", "### Grading commands")
    assert commands.count("recorded with the run:") == 4 and "rebuilt" not in commands
    assert "--recipe improved" in commands and "--lr 1e-3" in commands and "bash hw2_p2.sh" in text
    assert f"python {ROOT}/p2_train.py --recipe improved" in commands.replace(" \\\n   ", "")
    assert f"--output-dir {runs / 'p2_fcn8s'}" in commands and "# started 20" in commands
    assert text.count("| cpu (--device cpu), ") == 4
    assert f"- torch: torch {torch.__version__}, Python {platform.python_version()} (recorded with the runs)." in text
    # --html: one self-contained page, every figure embedded.
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img alt="[^"]*" src="([^"]{0,30})', page)
    assert len(sources) == len(links) and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "](" not in page and "figures/" not in page


def test_a_missing_run_is_reported_and_the_rest_written(runs, tmp_path, capsys):
    partial = tmp_path / "p1 without best.pt"
    partial.mkdir()
    shutil.copy(runs / "p1" / "log.csv", partial / "log.csv")
    marked = tmp_path / "synthetic"  # data made by `python -m datasets.synthetic`, which leaves its marker
    (marked / "p1_data").mkdir(parents=True)
    (marked / "synthetic.json").write_text('{"seed": 3}')
    args = json.loads((runs / "p1" / "args.json").read_text())
    (partial / "args.json").write_text(json.dumps({**args, "data_path": str(marked / "p1_data")}))
    edited = tmp_path / "edited log"  # a log that is not best.pt's: said, not hidden
    shutil.copytree(runs / "p2_fcn8s", edited)
    log = (edited / "log.csv").read_text().splitlines()
    log[1] = re.sub(r"^((?:[^,]*,){5})[^,]*", r"\g<1>0.999999", log[1])  # val_miou of epoch 1
    (edited / "log.csv").write_text("\n".join(log) + "\n")
    saved = json.loads((edited / "args.json").read_text())  # a run from before commands were recorded
    (edited / "args.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in RUN_RECORD}))
    resumed = tmp_path / "resumed"  # started on this machine, resumed on two GPUs
    shutil.copytree(runs / "p2_fcn32s", resumed)
    saved = json.loads((resumed / "args.json").read_text())
    saved["commands"].append({"command": "p2_train.py --resume last.pt", "started": "2026-01-02T03:04:05+00:00",
                              "device_used": "cuda:0 (NVIDIA H200)", "world_size": 2})
    (resumed / "args.json").write_text(json.dumps({**saved, "device_used": "cuda:0 (NVIDIA H200)"}))
    out = tmp_path / "report"
    r = report(capsys, runs, out, "--ablation", edited, "--ablation", resumed, p1=partial,
               improved=tmp_path / "not trained yet")
    assert r.returncode == 0
    assert re.search(r"best\.pt records val_miou 0\.\d{6} at epoch 1, but log\.csv has 0\.999999: the two files are "
                     "from different runs", r.stderr)
    text = (out / "report.md").read_text()
    assert "best.pt: checkpoint not found" in section(text, "## Problem 1", "## Problem 2")
    assert "**synthetic** (marker" in text and "seed 3" in text and "Synthetic data." in text
    rebuilt = section(text, "(`" + str(edited) + "`), ", "```\n\n")  # its command rebuilt from its settings
    assert rebuilt.startswith("rebuilt from args.json") and "--recipe improved" in rebuilt and "--lr 0.001 " in rebuilt
    assert f"--output-dir {runs / 'p2_fcn8s'}" in rebuilt.replace(" \\\n   ", "")
    both = section(text, "(`" + str(resumed) + "`), ", "```\n\n")  # the command that started it, then the resume
    assert both.startswith("recorded with the run (started, then resumed 1 time(s))") and "--recipe baseline" in both
    assert "# resumed 2026-01-02T03:04:05+00:00 on cuda:0 (NVIDIA H200)\n" \
           "torchrun --nproc_per_node 2 p2_train.py --resume last.pt\n" in both
    assert "| cuda:0 (NVIDIA H200) (--device cpu), " in text
    assert "not trained yet: no such folder" in section(text, "### 3. Network architecture of the improved")
    baseline = best(runs / "p2_fcn32s" / "log.csv", "val_miou")["val_miou"]
    assert f"baseline model on the validation set is **{baseline}**" in text
    assert re.search(r"warning: p1 run: .*best\.pt: checkpoint not found", r.stderr)
    assert re.search(r"warning: improved run: .*not trained yet: no such folder", r.stderr)
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / link).is_file(), link

    # An edited report.md is refused (one line naming it) and left as it is; once it is the tool's
    # own again, the same command replaces it.
    (out / "report.md").write_text(text + "\nmy own notes\n")
    r = report(capsys, runs, out, "--ablation", edited, p1=partial, improved=tmp_path / "not trained yet", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: --output ")
    assert "report.md" in r.stderr and "--overwrite" in r.stderr
    assert (out / "report.md").read_text().endswith("my own notes\n")
    (out / "report.md").write_text(text)
    # The same command twice:
    report(capsys, runs, out, "--ablation", edited, p1=partial, improved=tmp_path / "not trained yet")


@pytest.mark.parametrize("where", ["run folder", "inside a run folder", "foreign report.md"])
def test_output_that_would_clobber_is_refused(runs, tmp_path, where, capsys):
    if where == "run folder":
        out = runs / "p2_fcn8s"
    elif where == "inside a run folder":
        out = runs / "p1" / "report"
    else:
        out = tmp_path / "notes"
        out.mkdir()
        (out / "report.md").write_text("a student's own report\n")
    before = sorted(os.listdir(out)) if out.exists() else None
    r = report(capsys, runs, out, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: --output {out}")
    assert "Traceback" not in r.stderr
    assert (sorted(os.listdir(out)) if out.exists() else None) == before
    if where == "foreign report.md":
        assert (out / "report.md").read_text() == "a student's own report\n"
