"""The report's figures: each run's own (copied), or drawn here from its files when it lacks one
(curves, per-class IoU from ``log.csv``; the t-SNE by running ``p1_tsne.py``)."""
import os
import subprocess
import sys
import tempfile

from core import cli, plots
from datasets.masks import CLASS_COLORS
from reporting.runs import METRIC


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
