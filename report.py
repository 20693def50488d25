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
import os
import sys

from core import cli
from reporting.markdown import build_report
from reporting.output import FIGURES, REPORT, REPORT_HTML, check_location, check_ownership, write_output
from reporting.runs import TRAIN_SCRIPT, load_run, start_help


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
