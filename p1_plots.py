"""Problem 1 figures: the validation confusion matrix and the t-SNE scatter.

Figures are built with matplotlib's object API (``Figure``, rendered by Agg), so no pyplot
state is touched, and written atomically.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from plots import save_figure


def plot_confusion_matrix(mat, out_png, title="confusion matrix"):
    """``mat[t, p]`` counts; each row is normalised to the fraction of true class ``t``."""
    mat = np.asarray(mat, dtype=np.float64)
    totals = mat.sum(1, keepdims=True)
    frac = np.divide(mat, totals, out=np.zeros_like(mat), where=totals > 0)
    n = len(mat)
    fig = Figure(figsize=(9, 8))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ticks = np.arange(0, n, 5 if n > 20 else 1)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=150)


def plot_tsne(xy, labels, out_png, title="t-SNE", num_classes=50):
    """Scatter of 2-D points coloured by class (a discrete colormap with a colour bar, and each
    class number written at the median of its points); label -1 (unknown) is drawn in grey."""
    xy, labels = np.asarray(xy, dtype=np.float64), np.asarray(labels)
    known = labels >= 0
    fig = Figure(figsize=(10, 8.5))
    ax = fig.subplots()
    if (~known).any():
        ax.scatter(xy[~known, 0], xy[~known, 1], s=6, c="0.6", label="no label")
        ax.legend(loc="upper right")
    sc = ax.scatter(xy[known, 0], xy[known, 1], c=labels[known], s=6, cmap=colormaps["turbo"].resampled(num_classes),
                    vmin=-0.5, vmax=num_classes - 0.5)
    for c in np.unique(labels[known]):
        mx, my = np.median(xy[labels == c], axis=0)
        ax.text(mx, my, str(c), fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
    fig.colorbar(sc, ax=ax, label="class", ticks=np.arange(0, num_classes, 5 if num_classes > 20 else 1))
    ax.set_title(title)
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=150)
