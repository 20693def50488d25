"""Training figures, drawn from a run's files with matplotlib's Agg canvas (no pyplot state).

    plot_curves(log_csv, out_png, metric_column)   training loss and a validation metric per epoch
    plot_per_class_iou(log_csv, out_png)            per-class IoU of the best epoch (bar chart)
    plot_mask_grid(rows, col_titles, out_png)       a table of images, e.g. P2's masks per epoch

Every figure is written atomically (``engine.atomic_write_bytes``), so a reader never sees a
half-written PNG.
"""
import csv
import io
import math

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from engine import atomic_write_bytes


def read_log(log_csv):
    """The rows of a ``log.csv`` as dicts of strings."""
    with open(log_csv, newline="") as f:
        return list(csv.DictReader(f))


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def save_figure(fig, out_png, dpi=100):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(out_png, buf.getvalue())


def plot_curves(log_csv, out_png, metric_column, loss_column="train_loss"):
    """Two panels, ``loss_column`` and ``metric_column`` against epoch; a dashed line marks
    each change of the ``phase`` column (e.g. the switch from Adam to SGD)."""
    rows = read_log(log_csv)
    epochs = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    for ax, column in ((ax_loss, loss_column), (ax_metric, metric_column)):
        ax.plot(epochs, [_float(r[column]) for r in rows], marker=".")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(column)
        ax.grid(alpha=0.3)
        for prev, cur in zip(rows, rows[1:]):
            if cur.get("phase") != prev.get("phase"):
                ax.axvline(int(cur["epoch"]) - 0.5, color="gray", linestyle="--")
                ax.text(int(cur["epoch"]) - 0.5, 0.02, f" {cur['phase']}", transform=ax.get_xaxis_transform(),
                        color="gray")
    save_figure(fig, out_png)


def plot_per_class_iou(log_csv, out_png, metric_column="val_miou", prefix="iou_"):
    """Bar chart of the ``<prefix><class>`` columns of the epoch with the best ``metric_column``."""
    rows = read_log(log_csv)
    best = max(rows, key=lambda r: -math.inf if math.isnan(_float(r[metric_column])) else _float(r[metric_column]))
    names = [k[len(prefix):] for k in best if k.startswith(prefix)]
    values = [_float(best[prefix + n]) for n in names]
    fig = Figure(figsize=(1.2 * len(names) + 2, 4), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(names, [0 if math.isnan(v) else v for v in values])
    ax.bar_label(bars, labels=["absent" if math.isnan(v) else f"{v:.3f}" for v in values])
    ax.axhline(_float(best[metric_column]), color="gray", linestyle="--")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title(f"epoch {best['epoch']}: {metric_column} {_float(best[metric_column]):.4f} (dashed)")
    save_figure(fig, out_png)


def plot_mask_grid(rows, col_titles, out_png, cell_inches=2.2):
    """A table of images: ``rows`` is ``[(row_title, [H x W x 3 uint8 array or None, ...])]``,
    one array per entry of ``col_titles``; None leaves a cell marked "missing"."""
    fig = Figure(figsize=(cell_inches * len(col_titles), cell_inches * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), len(col_titles), squeeze=False)
    for r, (row_title, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image, interpolation="nearest")
            if r == 0:
                ax.set_title(col_titles[c])
            if c == 0:
                ax.set_ylabel(row_title)
    save_figure(fig, out_png)
