"""The training recipes as parsed (the seed author's runs and ours, value for value), the P1
learning rate that follows the optimizer, the shared ``--help`` formatter, the FCN head
initialisations and the t-SNE layers. Parsing only: nothing here trains more than one tiny epoch."""
import argparse
import contextlib
import functools
import io
import os
import runpy
import subprocess
import sys
from unittest import mock

import pytest
import torch
from torch import nn

from core import cli, runs, runtime
from core.inputs import IMAGENET_MEAN, IMAGENET_STD, fixed_preprocess, to_float
from datasets.augment import P1_POLICIES
from models import Classifier, FCN8VGG, FCN32VGg
from tests.conftest import ROOT

SCRIPTS = ("p1_train", "p1_test", "p1_tsne", "p2_train", "p2_test", "mean_iou_evaluate", "bench")


@functools.cache
def script(name):
    """The globals of the script ``<name>.py``, run as a script (not imported), under a name no
    module has."""
    return runpy.run_path(os.path.join(ROOT, f"{name}.py"), run_name=f"{name}_script")


def parse(name, *argv):
    """``argv`` parsed as the script does: a training script through ``runs.parse`` with its recipes."""
    g = script(name)
    if "RECIPES" in g:
        return runs.parse(g["get_args_parser"](), list(argv), name[:2], g["RECIPES"])[0]
    return g["get_args_parser"]().parse_args(list(argv))


def settings(args, keys):
    return {k: getattr(args, k) for k in keys}


# --------------------------------------------------------------------------- P2 recipes

P2_KEYS = ("model", "epochs", "batch_size", "optimizer", "lr", "switch_sgd_at", "sgd_lr", "momentum", "loss",
           "focal_gamma", "normalize", "head_init", "weight_decay", "lr_schedule", "augment", "class_weights",
           "snapshot_epochs")
AUTHOR = dict(epochs=100, batch_size=8, optimizer="adam", lr=1e-3, sgd_lr=1e-3, momentum=0.9, focal_gamma=2.0,
              head_init="pytorch", weight_decay=0.0, lr_schedule="none", augment="none", class_weights="none",
              snapshot_epochs=[1, 20, 40])


def test_p2_baseline_and_improved_are_the_seed_authors_runs():
    assert settings(parse("p2_train"), P2_KEYS) == settings(parse("p2_train", "--recipe", "baseline"), P2_KEYS) == \
        dict(AUTHOR, model="fcn32s", loss="ce", switch_sgd_at=0, normalize="raw")
    improved = dict(AUTHOR, model="fcn8s", loss="focal", switch_sgd_at=71, normalize="imagenet")
    assert settings(parse("p2_train", "--recipe", "improved"), P2_KEYS) == improved
    # the report's ablations change one thing each
    assert settings(parse("p2_train", "--recipe", "improved-ce"), P2_KEYS) == dict(improved, loss="ce")
    assert settings(parse("p2_train", "--recipe", "improved-adam"), P2_KEYS) == dict(improved, switch_sgd_at=0)


def test_p2_our_earlier_choices_survive_as_named_recipes():
    ours = dict(AUTHOR, model="fcn8s", loss="focal", lr=1e-4, switch_sgd_at=70, normalize="dataset", head_init="fcn")
    assert settings(parse("p2_train", "--recipe", "improved-ours"), P2_KEYS) == ours
    assert settings(parse("p2_train", "--recipe", "baseline-ours"), P2_KEYS) == \
        dict(ours, model="fcn32s", loss="ce", epochs=40, switch_sgd_at=0, normalize="imagenet")
    assert settings(parse("p2_train", "--recipe", "best"), P2_KEYS) == \
        dict(ours, augment="d4", class_weights="auto", lr_schedule="cosine")
    args = parse("p2_train", "--recipe", "improved", "--lr", "5e-4", "--head-init", "fcn", "--switch-sgd-at", "0")
    assert (args.lr, args.head_init, args.switch_sgd_at, args.loss) == (5e-4, "fcn", 0, "focal")  # flags win


def test_switch_sgd_at_is_the_first_sgd_epoch():
    from core.optim import phase_at

    args = parse("p2_train", "--recipe", "improved")
    assert [phase_at(args, e) for e in (1, 70, 71, 100)] == ["adam", "adam", "sgd", "sgd"]
    assert [phase_at(parse("p2_train"), e) for e in (1, 100)] == ["adam", "adam"]  # baseline: Adam throughout


def test_raw_normalisation_feeds_pixel_values_exactly():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    pre = fixed_preprocess("raw")
    assert torch.equal(to_float(images, torch.tensor(pre["mean"]), torch.tensor(pre["std"])), images.float())
    assert fixed_preprocess("unit") == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert fixed_preprocess("imagenet") == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


# --------------------------------------------------------------------------- P1 recipes and learning rate

P1_KEYS = ("epochs", "batch_size", "optimizer", "lr", "switch_sgd_at", "sgd_lr", "momentum", "weight_decay",
           "lr_schedule", "label_smoothing", "img_size", "normalize", "hflip", "crop_padding", "rotation",
           "perspective", "affine", "color_jitter", "jitter_order")


def resolved(*argv):
    """The settings a P1 command resolves to. The memory bound is lifted: these tests check recipe
    values, and the full-size default (width 1, 224, batch 128) does not fit in this machine's free
    memory, which would make them depend on the machine (the bound has its own tests)."""
    args = parse("p1_train", *argv)
    with mock.patch.object(runtime, "memory_limit", lambda *a, **k: 2 ** 50):
        script("p1_train")["check_args"](args)
    return args


def test_p1_report_recipe_is_the_seed_authors_run():
    assert settings(resolved("--recipe", "report"), P1_KEYS) == dict(
        epochs=150, batch_size=32, optimizer="adam", lr=1e-3, switch_sgd_at=101, sgd_lr=1e-4, momentum=0.9,
        weight_decay=0.0, lr_schedule="none", label_smoothing=0.0, img_size=224, normalize="unit", hflip=True,
        crop_padding=0, rotation=15.0, perspective=0.5, affine=15.0, color_jitter=0.5, jitter_order="random")


def test_p1_ours_stays_the_default_with_todays_values():
    assert settings(resolved(), P1_KEYS) == settings(resolved("--recipe", "ours"), P1_KEYS) == dict(
        epochs=60, batch_size=128, optimizer="sgd", lr=0.05, switch_sgd_at=0, sgd_lr=None, momentum=0.9,
        weight_decay=5e-4, lr_schedule="cosine", label_smoothing=0.1, img_size=224, normalize="dataset", hflip=True,
        crop_padding=4, rotation=0.0, perspective=0.0, affine=0.0, color_jitter=0.2, jitter_order="fixed")


def test_p1_recipes_augment_by_the_policy_of_their_name_and_each_flag_overrides_one_value():
    for name in ("ours", "report"):
        assert settings(parse("p1_train", "--recipe", name), P1_POLICIES["none"]) == P1_POLICIES[name]
    assert settings(parse("p1_train", "--recipe", "report", "--rotation", "5", "--no-hflip"), P1_POLICIES["none"]) \
        == dict(P1_POLICIES["report"], rotation=5.0, hflip=False)


@pytest.mark.parametrize("argv, lr", [([], 0.05), (["--optimizer", "adam"], 1e-3), (["--optimizer", "adamw"], 1e-3),
                                      (["--optimizer", "adam", "--lr", "0.02"], 0.02),
                                      (["--recipe", "report", "--optimizer", "sgd", "--switch-sgd-at", "0"], 0.05)])
def test_p1_default_learning_rate_follows_the_optimizer(argv, lr):
    assert resolved(*argv).lr == lr


def test_p1_report_run_logs_its_lr_and_progress_readably_into_a_file(tmp_path):
    """As under nohup / SLURM / ``> log.txt``: stdout and stderr go to a file, which gets the step
    lines and the learning rate used, and no tqdm ``\\r`` frames."""
    from core.fileio import read_csv
    from datasets.synthetic import generate

    generate(str(tmp_path / "data"), seed=0, p1_train_per_class=1, p1_val_per_class=1, p2_train=0, p2_val=0,
             p2_size=32)
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "p1_train.py"), "--recipe", "report", "--data-path",
                            str(tmp_path / "data" / "p1_data"), "--output-dir", str(tmp_path / "run"), "--width", "16",
                            "--img-size", "32", "--epochs", "2", "--switch-sgd-at", "2", "--batch-size", "10",
                            "--workers", "0", "--no-cache", "--print-freq", "2"], cwd=ROOT, stdout=f,
                           stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    assert "\r" not in text
    assert "optimizer adam, lr 0.001 (its default); SGD at lr 0.0001, momentum 0.9 from epoch 2" in text
    assert "epoch 2: switching optimizer to sgd (lr 0.0001)" in text
    assert [line.split(" loss")[0] for line in text.splitlines() if line.startswith("epoch 1 [")] == \
        ["epoch 1 [2/5]", "epoch 1 [4/5]", "epoch 1 [5/5]"]
    assert [(row["phase"], row["lr"]) for row in read_csv(tmp_path / "run" / "log.csv")] == \
        [("adam", "0.001"), ("sgd", "0.0001")]


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from core.engine import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert progress_bar(range(3)).disable
    monkeypatch.setattr(sys, "stdout", Terminal())
    bar = progress_bar(range(3), desc="epoch 1")
    assert not bar.disable and list(bar) == [0, 1, 2]
    assert "epoch 1" in sys.stdout.getvalue()


def test_p1_switch_needs_adam_and_an_sgd_rate():
    with pytest.raises(cli.UserError, match="--optimizer adam"):
        resolved("--switch-sgd-at", "5")
    with pytest.raises(cli.UserError, match="--sgd-lr"):
        resolved("--optimizer", "adam", "--switch-sgd-at", "5")


# --------------------------------------------------------------------------- --help


def help_text(name, *argv):
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        parse(name, *argv, "--help")
    return " ".join(out.getvalue().split())


def test_help_formatter_shows_defaults_as_typed_and_no_empty_ones():
    p = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    p.add_argument("--epochs-list", type=cli.int_list, default=[1, 20, 40], help="epochs")
    p.add_argument("--ids", default=("0010", "0097"), help="ids")
    p.add_argument("--out", default="", help="folder")
    p.add_argument("--lr", type=float, help="rate")
    p.add_argument("--none-list", default=[], help="nothing")
    p.add_argument("--n", type=int, default=0, help="count")
    text = " ".join(p.format_help().split())
    assert "epochs (default: 1,20,40)" in text and "ids (default: 0010,0097)" in text
    assert "folder --lr" in text and "rate --none-list" in text and "nothing --n" in text
    assert "count (default: 0)" in text


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_scripts_help_has_no_empty_default_no_list_repr_and_no_until(name):
    text = help_text(name)
    assert "(default: )" not in text and "(default: None)" not in text
    assert "(default: [" not in text and "(default: (" not in text
    assert "until this epoch" not in text


def test_p2_recipe_help_shows_that_recipes_values():
    text = help_text("p2_train", "--recipe", "baseline")
    for shown in ("--epochs EPOCHS total epochs (default: 100)", "(default: 8)", "--lr LR learning rate of "
                  "--optimizer (default: 0.001)", "(default: raw)", "--head-init {fcn,pytorch}",
                  "(default: pytorch)", "epochs whose masks the figure shows (default: 1,20,40)",
                  "first SGD epoch"):
        assert shown in text, shown
    improved = help_text("p2_train", "--recipe", "improved")
    assert "(default: 71)" in improved and "(default: focal)" in improved and "(default: imagenet)" in improved


def test_p1_recipe_help_shows_the_report_values():
    text = help_text("p1_train", "--recipe", "report")
    for shown in ("total epochs (default: 150)", "(default: 32)", "(default: unit)", "(default: 101)",
                  "SGD at --sgd-lr (0 = Adam only) (default: 101) --sgd-lr SGD_LR learning rate from "
                  "--switch-sgd-at on (default: 0.0001)", "not given: sgd 0.05, adam 0.001, adamw 0.001"):
        assert shown in text, shown


# --------------------------------------------------------------------------- FCN head initialisation


@pytest.mark.parametrize("cls", [FCN32VGg, FCN8VGG])
def test_head_init_pytorch_keeps_pytorchs_defaults(cls):
    torch.manual_seed(0)
    ours, author = cls(width=16), cls(width=16, head_init="pytorch")
    assert torch.count_nonzero(ours.score_fr.weight) == 0  # ours: zero score layer, bilinear upsampling
    up = author.upscore if cls is FCN32VGg else author.upscore8
    assert torch.count_nonzero(author.score_fr.weight) > 0
    off_diagonal = up.weight.clone()
    off_diagonal[range(7), range(7)] = 0
    assert torch.count_nonzero(off_diagonal) > 0  # a default ConvTranspose2d, not a per-class upsampler
    fresh = nn.ConvTranspose2d(7, 7, up.kernel_size, up.stride, bias=False)  # PyTorch's default bound
    assert up.weight.abs().max() <= fresh.weight.abs().max() * 1.5
    with pytest.raises(ValueError, match="head_init"):
        cls(width=16, head_init="zeros")


# --------------------------------------------------------------------------- t-SNE layers


def test_classifier_feature_layers():
    model = Classifier(num_classes=50, width=16, img_size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        h = torch.flatten(model.cnn(x), 1)
        assert torch.equal(model.features(x, "fc4"), model.fc[4](model.fc[:4](h)))
        assert torch.equal(model.features(x), model.fc[:7](h))
        assert torch.equal(model.fc[7:](model.features(x)), model(x))
    with pytest.raises(ValueError, match="layer"):
        model.features(x, "fc9")


def test_tsne_layer_default_is_stated():
    assert parse("p1_tsne").layer == "fc4" and parse("p1_tsne").perplexity == 50
    text = help_text("p1_tsne")
    assert "(the seed author's); fc6" in text and "(default: fc4)" in text
