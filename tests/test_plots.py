"""Every figure of ``core.plots`` on typical and edge-case inputs (blank or NaN IoU, one epoch,
an old log without ``val_loss``, missing mask cells, unlabelled t-SNE points, few classes), and
``p1_tsne.py`` end to end on an untrained tiny checkpoint. A figure is checked as a PNG file
and through the artists of the ``Figure`` the function returns."""
import csv
import math
import os
import sys

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from core import checkpoint, plots
from core.fileio import write_csv
from datasets.masks import CLASS_COLORS, CLASS_NAMES, PALETTE, class_to_rgb
from datasets.synthetic import generate, p2_tile
from models import get_model
from tests.conftest import ROOT, run_main, run_script

IOU_CLASSES = CLASS_NAMES[:6]


def assert_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 200


def write_log(path, epochs=40, switch=None, val_loss=True, iou=None):
    """A fake ``log.csv``; ``iou`` maps a class name to a fixed cell text (e.g. "" or "nan")."""
    header = ["epoch", "phase", "train_loss"] + (["val_loss"] if val_loss else []) + ["val_miou"]
    header += [f"iou_{c}" for c in IOU_CLASSES]
    rows = []
    for e in range(1, epochs + 1):
        score = 0.6 * (1 - math.exp(-e / 8))
        cells = [f"{score + 0.01 * k:.6f}" for k in range(len(IOU_CLASSES))]
        for k, c in enumerate(IOU_CLASSES):
            cells[k] = (iou or {}).get(c, cells[k])
        rows.append([e, "adam" if switch is None or e < switch else "sgd", f"{1 / e:.4f}"]
                    + ([f"{1.2 / e:.4f}"] if val_loss else []) + [f"{score:.6f}"] + cells)
    write_csv(path, header, rows)
    return path


def legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_curves_mark_phase_change_and_best_epoch(tmp_path):
    fig = plots.plot_curves(write_log(tmp_path / "log.csv", 40, switch=30), tmp_path / "c.png", "val_miou", "fcn8s")
    assert_png(tmp_path / "c.png")
    ax_loss, ax_metric = fig.axes
    assert ax_loss.get_title() == "Loss" and ax_metric.get_title() == "Validation mIoU"
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel(), ax_metric.get_ylabel()) == ("epoch", "loss", "mIoU")
    assert fig.get_suptitle() == "fcn8s"
    texts = legend_texts(fig)
    assert {"train", "validation"} <= set(texts)
    assert sum("Adam \u2192 SGD (epoch 30)" == t for t in texts) == 2
    assert any(t.startswith("best 0.5") and "(epoch 40)" in t for t in texts)


@pytest.mark.parametrize("epochs,val_loss", [(1, True), (5, False)])
def test_curves_edge_cases(tmp_path, epochs, val_loss):
    log = write_log(tmp_path / "log.csv", epochs, val_loss=val_loss)
    fig = plots.plot_curves(log, tmp_path / "c.png", "val_miou", "run")
    assert_png(tmp_path / "c.png")
    assert ("validation" in legend_texts(fig)) == val_loss
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())


def test_curves_accuracy_title(tmp_path):
    path = tmp_path / "log.csv"
    write_csv(path, ["epoch", "phase", "train_loss", "val_loss", "val_acc"], [[1, "sgd", 2.0, "", 0.1],
                                                                             [2, "sgd", 1.5, "", 0.3]])
    fig = plots.plot_curves(path, tmp_path / "c.png", "val_acc", "p1")
    assert fig.axes[1].get_title() == "Validation accuracy"


def bar_colors(fig):
    return [tuple(round(v, 3) for v in p.get_facecolor()[:3]) for p in fig.axes[0].patches]


def test_per_class_iou_uses_palette_and_titles(tmp_path):
    log = write_log(tmp_path / "log.csv", 10)
    fig8 = plots.plot_per_class_iou(log, tmp_path / "a.png", "fcn8s", CLASS_COLORS)
    fig32 = plots.plot_per_class_iou(log, tmp_path / "b.png", "fcn32s", CLASS_COLORS)
    assert_png(tmp_path / "a.png")
    assert bar_colors(fig8) == [tuple(round(v / 255, 3) for v in PALETTE[c]) for c in range(6)]
    assert all(to_rgb(p.get_edgecolor()) == (0, 0, 0) for p in fig8.axes[0].patches)  # white barren stays visible
    assert [t.get_text() for t in fig8.axes[0].get_xticklabels()] == list(IOU_CLASSES)
    assert fig8.get_suptitle() != fig32.get_suptitle() and "epoch 10" in fig8.get_suptitle()
    assert any("mean" in t for t in legend_texts(fig8))


@pytest.mark.parametrize("cell", ["", "nan"])
def test_per_class_iou_absent_class(tmp_path, cell):
    fig = plots.plot_per_class_iou(write_log(tmp_path / "log.csv", 3, iou={"water": cell}), tmp_path / "a.png", "r",
                                   CLASS_COLORS)
    assert_png(tmp_path / "a.png")
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels[4] == "absent" and labels.count("absent") == 1


def mask_rows(size=64):
    rng = np.random.default_rng(0)
    rows = []
    for image_id in ("0010", "0097", "0107"):
        image, truth = p2_tile(rng, size)
        rows.append((image_id, image, class_to_rgb(truth), [class_to_rgb(m) for m in (truth, (truth + 1) % 7, truth)]))
    return rows


@pytest.mark.parametrize("layout,cols", [("table", 5), ("report", 3)])
def test_epoch_masks_layouts(tmp_path, layout, cols):
    fig = plots.plot_epoch_masks(mask_rows(), [1, 20, 40], tmp_path / "m.png", "FCN32s", CLASS_COLORS, layout=layout,
                                 last_epoch=100)
    assert_png(tmp_path / "m.png")
    cells = [ax for ax in fig.axes if ax.images or ax.texts]
    assert len(cells) == 3 * cols
    titles = [ax.get_title() for ax in cells[:cols]]
    # The report's figure shows epochs 1/20/40 of a 100-epoch run: no column is the final epoch.
    assert titles[-3:] == (["epoch 1", "epoch 20", "epoch 40"] if layout == "table" else
                           ["1st epoch", "20th epoch", "40th epoch"])
    assert "run of 100 epochs" in fig.get_suptitle()
    assert "FCN32s" in fig.get_suptitle()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(CLASS_NAMES)
    assert all(to_rgb(p.get_edgecolor()) == (0, 0, 0) for p in legend.get_patches())


@pytest.mark.parametrize("last_epoch, titles", [(40, ["1st epoch", "20th epoch", "40th epoch (final)"]),
                                                (None, ["1st epoch", "20th epoch", "40th epoch"])])
def test_epoch_masks_call_only_the_runs_last_epoch_final(last_epoch, titles):
    assert plots.epoch_titles([1, 20, 40], last_epoch, "report") == titles
    assert plots.epoch_titles([1, 20, 40], last_epoch)[-1] == "epoch 40" + (" (final)" if last_epoch else "")


def test_epoch_masks_missing_cells(tmp_path):
    image_id, image, truth, preds = mask_rows()[0]
    rows = [(image_id, None, truth, [preds[0], None, preds[2]]), ("0097", image, None, [None, None, None])]
    fig = plots.plot_epoch_masks(rows, [1, 20, 40], tmp_path / "m.png", "run", CLASS_COLORS)
    assert_png(tmp_path / "m.png")
    assert sum(t.get_text() == "missing" for ax in fig.axes for t in ax.texts) == 6
    with pytest.raises(ValueError):
        plots.plot_epoch_masks(rows, [1, 20, 40], tmp_path / "x.png", "run", CLASS_COLORS, layout="grid")


@pytest.mark.parametrize("n", [7, 50])
def test_confusion_matrix(tmp_path, n):
    mat = np.eye(n) * 10 + 1
    mat[0] = 0  # a class with no samples
    plots.plot_confusion_matrix(mat, tmp_path / "cm.png", "confusion")
    assert_png(tmp_path / "cm.png")


def test_tsne_styles_are_distinct():
    assert len({(tuple(c), m) for c, m in plots.tsne_styles(50)}) == 50


def test_tsne_fifty_classes_with_unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(50), 4)
    labels[::9] = -1
    fig = plots.plot_tsne(rng.normal(size=(200, 2)), labels, tmp_path / "t.png", "a caption " * 30)
    assert_png(tmp_path / "t.png")
    ax = fig.axes[0]
    assert ax.get_title() == "t-SNE of penultimate-layer features"
    grey = ax.collections[0]
    assert to_rgb(grey.get_facecolor()[0]) == to_rgb(plots.UNLABELLED_COLOR) and len(grey.get_offsets()) == 23
    pairs = {(tuple(np.round(c.get_facecolor()[0][:3], 3)), c.get_paths()[0].vertices.tobytes())
             for c in ax.collections[1:]}
    assert len(pairs) == 50
    assert len(ax.get_legend().get_texts()) == 50 and "no label" in ax.get_legend().get_title().get_text()
    assert any("a caption" in t.get_text() for t in fig.texts)


def test_tsne_few_classes(tmp_path):
    labels = np.array([0, 1, 2, 2, 5, 5, -1])
    fig = plots.plot_tsne(np.arange(14.0).reshape(7, 2), labels, tmp_path / "t.png", "", num_classes=7)
    assert_png(tmp_path / "t.png")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["0", "1", "2", "5"]


@pytest.fixture(scope="module")
def tiny_p1(tmp_path_factory):
    """An untrained width-16 classifier checkpoint and a 100-image val_50 folder."""
    root = tmp_path_factory.mktemp("tsne")
    generate(str(root / "data"), seed=0, p1_train_per_class=1, p1_val_per_class=2, p2_train=1, p2_val=1, p2_size=64)
    kwargs = {"num_classes": 50, "width": 16, "img_size": 32}
    torch.manual_seed(0)
    model = get_model("classifier", **kwargs)
    ckpt = root / "p1.pt"
    checkpoint.save(checkpoint.inference_state("p1", "classifier", kwargs, model,
                                               {"mean": [0.5] * 3, "std": [0.25] * 3}), str(ckpt))
    return ckpt, root / "data" / "p1_data" / "val_50"


def tsne(*argv, cwd):
    return run_script(sys.executable, os.path.join(ROOT, "p1_tsne.py"), *argv, cwd=cwd)


def test_p1_tsne_writes_png_and_csv(tmp_path, tiny_p1):
    ckpt, images = tiny_p1
    r = tsne("--checkpoint", str(ckpt), "--images", str(images), "--output-dir", str(tmp_path / "out"),
             "--device", "cpu", "--batch-size", "32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_png(tmp_path / "out" / "tsne.png")
    with open(tmp_path / "out" / "tsne.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image_id"] for r in rows) == sorted(p.name for p in images.iterdir())
    assert all(r["image_id"].split("_")[0] == r["label"] for r in rows)
    assert all(math.isfinite(float(r["x"])) and math.isfinite(float(r["y"])) for r in rows)


def test_p1_tsne_refuses_image_folder_as_output(tiny_p1, capsys, monkeypatch):
    ckpt, images = tiny_p1
    monkeypatch.chdir(images.parent)  # in this process (run_main: a traceback a process would print fails the test)
    code, _, err = run_main("p1_tsne", ["--checkpoint", str(ckpt), "--images", str(images), "--output-dir",
                                        str(images)], capsys)
    assert code == 1 and "--output-dir" in err and "Traceback" not in err
    assert not (images / "tsne.png").exists()


def test_p1_tsne_missing_checkpoint_is_one_line_error(tmp_path, tiny_p1, capsys, monkeypatch):
    _, images = tiny_p1
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("p1_tsne", ["--checkpoint", str(tmp_path / "none.pt"), "--images", str(images),
                                        "--output-dir", str(tmp_path)], capsys)
    assert code == 1 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("epochs", [[1], [1, 2], [1, 2, 3]])
def test_epoch_masks_title_and_legend_fit_a_narrow_figure(tmp_path, epochs):
    # One or two epoch columns make a narrow figure; a title of wide characters must still wrap inside it.
    rows = [(image_id, image, truth, preds[:len(epochs)]) for image_id, image, truth, preds in mask_rows()]
    fig = plots.plot_epoch_masks(rows, epochs, tmp_path / "m.png", "WWWWW (MMMMMMMM WWWWWW, run WWWWWWWWWWWWWWWWWW)",
                                 CLASS_COLORS, layout="report", last_epoch=len(epochs))
    assert_png(tmp_path / "m.png")
    fig.draw_without_rendering()  # measured at the figure's own dpi
    for artist in (fig._suptitle, fig.legends[0]):
        box = artist.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0 and box.y1 <= fig.bbox.height
