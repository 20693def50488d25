"""Every figure of the repo, drawn for a report page: matplotlib's object API (``Figure``, no
pyplot state), about 6.5 inches wide (a page's text width) with text of 8 pt or more, so a
figure can be pasted unchanged.

    plot_curves(log_csv, out_png, metric_column, run_name)       loss and a validation metric per epoch
    plot_per_class_iou(log_csv, out_png, run_name, classes, ...) IoU of each class at the best epoch
    plot_epoch_masks(rows, epochs, out_png, run_name, classes)   P2 masks predicted after some epochs
    plot_confusion_matrix(mat, out_png, title)                   row-normalised confusion matrix
    plot_tsne(xy, labels, out_png, caption, num_classes)         2-D embedding coloured by class

P2's figures take ``classes``, the mask classes' names and colours, from their caller
(``{name: (R, G, B)}`` in 0..255, in class order: ``datasets.masks.CLASS_COLORS``), and masks
the caller coloured (``datasets.masks.class_to_rgb``), so drawing knows no dataset.

Each function returns the ``Figure`` it saved. Every PNG is written atomically
(``core.fileio.atomic_write_bytes``), so a reader never sees a half-written file.
"""
import functools
import io
import math
import textwrap

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from core.fileio import atomic_write_bytes, read_csv

PAGE_WIDTH = 6.5  # inches: the text width of an A4 / letter page with usual margins
DPI = 200
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 11}
OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
METRIC_NAMES = {"val_miou": "mIoU", "val_acc": "accuracy"}
PALETTE_EDGE = "black"  # palette patches get a frame, so white "barren" shows on white paper
# 10 qualitative colours x 8 marker shapes: 80 classes drawn with distinct (colour, marker) pairs.
TSNE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
UNLABELLED_COLOR = "0.65"


def report_style(plot):
    """Draw and save under ``STYLE`` (rcParams are read when each artist is made)."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)

    return wrapper


def _figure(width, height):
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, out_png, dpi=DPI):
    """Render ``fig`` to PNG and write it atomically; returns ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    atomic_write_bytes(out_png, buf.getvalue())
    return fig


def number(value):
    """A log.csv cell as a float; NaN for an empty or damaged cell."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _column(rows, name):
    return np.array([number(r.get(name)) for r in rows])


def _best_row(rows, metric_column):
    """The row with the highest finite ``metric_column`` (the first of ties); the last row when
    no epoch has a value."""
    scores = _column(rows, metric_column)
    if np.isnan(scores).all():
        return rows[-1]
    return rows[int(np.nanargmax(scores))]


def metric_name(column):
    """``val_miou`` -> ``mIoU``; other columns lose ``val_`` and underscores."""
    return METRIC_NAMES.get(column, column.removeprefix("val_").replace("_", " "))


def phase_changes(rows):
    """``[(boundary x, "Adam -> SGD")]`` for each change of the ``phase`` column."""
    changes = []
    for prev, cur in zip(rows, rows[1:]):
        a, b = prev.get("phase") or "", cur.get("phase") or ""
        if a != b:
            label = f"{OPTIMIZER_NAMES.get(a, a)} \u2192 {OPTIMIZER_NAMES.get(b, b)}"
            changes.append(((int(prev["epoch"]) + int(cur["epoch"])) / 2, f"{label} (epoch {cur['epoch']})"))
    return changes


def _line_style(n):
    return {"marker": "o", "markersize": 3} if n <= 15 else {}


@report_style
def plot_curves(log_csv, out_png, metric_column, run_name):
    """Two panels against epoch: train and validation loss, then ``metric_column``; the best
    epoch is starred and a dashed line marks each optimizer switch (``phase`` column)."""
    rows = read_csv(log_csv)
    epochs = np.array([int(r["epoch"]) for r in rows])
    name = metric_name(metric_column)
    style = _line_style(len(rows))
    fig = _figure(PAGE_WIDTH, 2.9)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for label, column in (("train", "train_loss"), ("validation", "val_loss")):
        values = _column(rows, column)
        if not np.isnan(values).all():
            ax_loss.plot(epochs, values, label=label, **style)
    ax_loss.set(title="Loss", ylabel="loss")
    scores = _column(rows, metric_column)
    ax_metric.set(title=f"Validation {name}", ylabel=name)
    if np.isnan(scores).all():
        ax_metric.text(0.5, 0.5, f"no {metric_column} values in the log", ha="center", va="center",
                       transform=ax_metric.transAxes, color="0.4")
    else:
        ax_metric.plot(epochs, scores, color="C2", label=name, **style)
        best = int(np.nanargmax(scores))
        ax_metric.plot(epochs[best], scores[best], "*", color="C3", markersize=11, zorder=3,
                       label=f"best {scores[best]:.4f} (epoch {epochs[best]})")
    for ax in (ax_loss, ax_metric):
        for x, label in phase_changes(rows):
            ax.axvline(x, color="0.35", linestyle="--", linewidth=1, label=label)
        ax.set_xlabel("epoch")
        if len(epochs) < 8:  # a few epochs: a tick at each, not fractions
            ax.set_xticks(epochs)
            ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", framealpha=0.9)
    fig.suptitle(run_name)
    return save_figure(fig, out_png)


@report_style
def plot_per_class_iou(log_csv, out_png, run_name, classes, metric_column="val_miou", prefix="iou_"):
    """Bars of the ``<prefix><class>`` columns of the epoch with the best ``metric_column``, in
    the classes' mask colours (``classes``: name -> RGB 0..255; grey for a name not in it), with
    their values ("absent" for a blank or NaN IoU) and the mean as a dashed line."""
    rows = read_csv(log_csv)
    best = _best_row(rows, metric_column)
    names = [k[len(prefix):] for k in best if k.startswith(prefix)]
    values = np.array([number(best[prefix + n]) for n in names])
    colors = [np.asarray(classes[n]) / 255 if n in classes else (0.6, 0.6, 0.6) for n in names]
    score = number(best.get(metric_column))
    fig = _figure(PAGE_WIDTH, 3.2)
    ax = fig.subplots()
    bars = ax.bar(names, np.nan_to_num(values), color=colors, edgecolor=PALETTE_EDGE, linewidth=0.8)
    texts = ax.bar_label(bars, labels=["absent" if math.isnan(v) else f"{v:.3f}" for v in values], padding=2,
                         fontsize=8)
    for text in texts:  # readable where the mean line crosses a label
        text.set(bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none"}, zorder=3)
    if not math.isnan(score):
        ax.axhline(score, color="0.2", linestyle="--", linewidth=1, zorder=1.5,
                   label=f"{metric_name(metric_column)} {score:.4f} (mean over classes)")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, borderaxespad=0.2)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("IoU")
    ax.set_xlabel("class")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    score_text = "n/a" if math.isnan(score) else f"{score:.4f}"
    fig.suptitle(f"{run_name}: per-class IoU, epoch {best['epoch']} "
                 f"({metric_name(metric_column)} {score_text})")
    return save_figure(fig, out_png)


def ordinal(n):
    """1 -> 1st, 2 -> 2nd, 11 -> 11th, 20 -> 20th."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def class_legend(fig, classes, width=PAGE_WIDTH):
    """A legend of the mask ``classes`` (name -> RGB 0..255) below the panels, each colour framed
    in black: one row, or as many as a figure ``width`` inches wide needs (about an inch per class)."""
    handles = [Patch(facecolor=np.asarray(color) / 255, edgecolor=PALETTE_EDGE, linewidth=0.8, label=name)
               for name, color in classes.items()]
    ncol = max(1, min(len(handles), int(width / 0.9)))
    return fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
                      handlelength=1.4, columnspacing=1.0, handletextpad=0.4)


def _draw_cell(ax, image, shape):
    """One framed panel: an RGB image, or "missing" in a grey box of the same ``shape``."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(linewidth=0.6, color="black")
    if image is None:
        ax.set_facecolor("0.93")
        ax.set(xlim=(0, shape[1]), ylim=(shape[0], 0), aspect="equal")
        ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes, color="0.35")
    else:
        ax.imshow(image)


def epoch_titles(epochs, last_epoch, layout="table"):
    """Column titles of ``plot_epoch_masks``: one per epoch, "final" only for ``last_epoch`` (the
    run's last epoch; None when unknown)."""
    words = [f"{ordinal(e)} epoch" if layout == "report" else f"epoch {e}" for e in epochs]
    return [w + (" (final)" if e == last_epoch else "") for w, e in zip(words, epochs)]


@report_style
def plot_epoch_masks(rows, epochs, out_png, run_name, classes, layout="table", last_epoch=None):
    """P2's masks after some epochs; ``rows`` is ``[(image id, image H x W x 3 uint8 or None,
    ground-truth mask or None, [predicted mask or None for each epoch])]``, every mask an
    H x W x 3 uint8 RGB mask in the colours of ``classes`` (name -> RGB 0..255, the legend).

    ``layout="table"``: one row per id; image, ground truth, then one column per epoch.
    ``layout="report"``: the seed's figure, ids down and epochs across, predicted masks only.
    Columns are labelled by epoch; the one of ``last_epoch`` (the run's last) is called
    "final". A None cell is drawn as "missing".
    """
    if layout not in ("table", "report"):
        raise ValueError(f"layout must be 'table' or 'report', got {layout!r}")
    if not rows:
        raise ValueError("no rows to draw")
    cells = [list(preds) if layout == "report" else [image, truth, *preds] for _, image, truth, preds in rows]
    titles = ([] if layout == "report" else ["image", "ground truth"]) + epoch_titles(epochs, last_epoch, layout)
    shape = next((c.shape for row in cells for c in row if c is not None), (1, 1))
    ncols = len(titles)
    cell = min(2.0, (PAGE_WIDTH - 0.4) / ncols)
    width = cell * ncols + 0.4
    fig = _figure(width, cell * len(rows) * shape[0] / shape[1] + 1.0)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (row, (image_id, *_)) in enumerate(zip(cells, rows)):
        for c, image in enumerate(row):
            _draw_cell(axes[r][c], image, shape)
        axes[r][0].set_ylabel(image_id, rotation=0, ha="right", va="center", fontsize=9)
    for c, title in enumerate(titles):
        axes[0][c].set_title(title, fontsize=9)
    fig.supylabel("validation image id", fontsize=9)
    class_legend(fig, classes, width)
    what = "predicted masks" if layout == "report" else "validation masks"
    title = f"{run_name}: {what} by epoch" + (f" (run of {last_epoch} epochs)" if last_epoch else "")
    fit_title_and_legends(fig, title, int(width * 10))  # about 10 characters of 11 pt per inch
    return save_figure(fig, out_png)


def fit_title_and_legends(fig, title, chars):
    """Set ``fig``'s title wrapped at ``chars`` characters, then, measured as drawn, wrap it
    shorter and give the legends fewer columns until each fits within the figure's width (a
    narrow figure, e.g. of one or two epoch columns, would cut off their ends; wide characters
    take more room than the estimate)."""
    def too_wide(artist):
        box, margin = artist.get_window_extent(), 0.02 * fig.bbox.width  # glyph widths vary a little with the dpi
        return box.x0 < margin or box.x1 > fig.bbox.width - margin

    fig.suptitle(textwrap.fill(title, chars))
    fig.draw_without_rendering()
    while chars > 4 and too_wide(fig._suptitle):
        chars -= max(1, chars // 10)
        fig.suptitle(textwrap.fill(title, chars))
        fig.draw_without_rendering()
    for legend in fig.legends:
        while legend._ncols > 1 and too_wide(legend):
            legend.set_ncols(legend._ncols - 1)
            fig.draw_without_rendering()


@report_style
def plot_confusion_matrix(mat, out_png, title):
    """``mat[t, p]`` counts; each row is normalised to the percentage of true class ``t``. Small
    matrices (up to 12 classes) also print each cell's percentage."""
    mat = np.asarray(mat, dtype=np.float64)
    totals = mat.sum(1, keepdims=True)
    pct = 100 * np.divide(mat, totals, out=np.zeros_like(mat), where=totals > 0)
    n = len(mat)
    fig = _figure(PAGE_WIDTH * 0.85, PAGE_WIDTH * 0.75)
    ax = fig.subplots()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    ticks = np.arange(0, n, 5 if n > 20 else 1)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if n <= 12:
        for t, p in np.ndindex(n, n):
            ax.text(p, t, f"{pct[t, p]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if pct[t, p] > 50 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.9, label="% of the true class")
    return save_figure(fig, out_png)


def tsne_styles(num_classes):
    """``[(colour, marker)]`` for classes ``0..num_classes-1``: tab10's colours cycle fastest,
    a new marker shape every 10 classes, so up to 80 classes get distinct pairs."""
    colors = colormaps["tab10"].colors
    return [(colors[c % 10], TSNE_MARKERS[(c // 10) % len(TSNE_MARKERS)]) for c in range(num_classes)]


@report_style
def plot_tsne(xy, labels, out_png, caption, num_classes=50, heading="t-SNE of penultimate-layer features"):
    """Scatter of 2-D points, one (colour, marker) pair per class, with one legend below the
    axes (10 columns: a column per colour, a row per marker shape); label -1 (no label) is drawn
    in grey. ``caption`` (the run's details) is printed under the figure."""
    xy, labels = np.asarray(xy, dtype=np.float64).reshape(-1, 2), np.asarray(labels).reshape(-1)
    present = sorted(int(c) for c in np.unique(labels[labels >= 0]))
    unlabelled = labels < 0
    styles = tsne_styles(max([num_classes] + [c + 1 for c in present]))
    ncol = min(10, max(len(present), 1))
    lines = textwrap.wrap(caption, 105) if caption else []
    caption_h = 0.17 * len(lines) + 0.12 * bool(lines)
    height = 5.3 + 0.2 * math.ceil(len(present) / ncol) + caption_h
    fig = _figure(PAGE_WIDTH, height)
    fig.get_layout_engine().set(rect=(0, caption_h / height, 1, 1 - caption_h / height))
    ax = fig.subplots()
    if unlabelled.any():
        ax.scatter(xy[unlabelled, 0], xy[unlabelled, 1], s=10, color=UNLABELLED_COLOR, marker="o", linewidths=0)
    handles = {}
    for c in present:
        color, marker = styles[c]
        pts = xy[labels == c]
        handles[c] = ax.scatter(pts[:, 0], pts[:, 1], s=16, color=color, marker=marker, linewidths=0, alpha=0.85,
                                label=str(c))
    # The legend fills column by column: with whole rows of 10, column j gets classes j, j+10, ...
    # (one colour), so the legend reads as the colour-by-marker grid.
    full_rows = len(present) % ncol == 0 and present == list(range(len(present)))
    order = sorted(present, key=lambda c: (c % ncol, c // ncol)) if full_rows else present
    title = "class" + (f" (grey: no label, {int(unlabelled.sum())} points)" if unlabelled.any() else "")
    if present:
        ax.legend(handles=[handles[c] for c in order], loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=ncol,
                  fontsize=8, title=title, title_fontsize=8, frameon=False, handletextpad=0.05,
                  columnspacing=0.9, markerscale=1.4, borderaxespad=0.2)
    elif unlabelled.any():
        ax.set_xlabel(f"grey: no label ({int(unlabelled.sum())} points)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(heading)
    if lines:
        fig.text(0.015, (caption_h - 0.06) / height, "\n".join(lines), ha="left", va="top", fontsize=8,
                 color="0.15", linespacing=1.35)
    return save_figure(fig, out_png)
