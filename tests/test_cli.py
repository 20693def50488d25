"""The command-line layer (core/cli.py): argument types, the exit convention, recipes and resume parsing."""
import argparse
import errno
import json
import os
import platform
import re
import shutil
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from core import checkpoint, cli, runs
from datasets import DataError
from tests.factories import (
    classifier,
    training_ckpt,
)


@pytest.mark.parametrize("parse, good, bad", [
    (cli.positive_int, {"1": 1, "12": 12}, ["0", "-3", "1.5", "x", ""]),
    (cli.nonneg_int, {"0": 0, "7": 7}, ["-1", "nan"]),
    (cli.positive_float, {"1e-3": 1e-3, "2": 2.0}, ["0", "-1", "nan", "inf", "1e9", "x"]),
    (cli.nonneg_float, {"0": 0.0, "5e-4": 5e-4}, ["-1e-9", "nan", "1e7"]),
    (cli.fraction, {"0": 0.0, "1": 1.0, "0.9": 0.9}, ["1.01", "-0.1", "nan"]),
    (cli.open_fraction, {"0.1": 0.1}, ["0.995", "1"]),
    (cli.width, {"1": 1, "16": 16, "64": 64}, ["0", "3", "128", "-2", "x"]),
    (cli.int_list, {"1,20,40": [1, 20, 40], "": []}, ["0", "1,x", "-1"]),
])
def test_argument_types(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
            parse(text)


def test_bad_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.training_parser("x").parse_args(["--lr", "nan"])
    assert e.value.code == 2 and "expected a number > 0, got 'nan'" in capsys.readouterr().err


class FailingItem(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, k):
        raise DataError("x.jpg: not a readable image")


def exit_code_and_stderr(capsys, error, expected=(DataError,)):
    def main(argv):
        if isinstance(error, BaseException):
            raise error
        return error()

    code = cli.run(main, expected=expected)
    return code, capsys.readouterr().err


def test_run_exit_convention(capsys):
    assert exit_code_and_stderr(capsys, lambda: None) == (0, "")
    assert exit_code_and_stderr(capsys, cli.UserError("--epochs 3: too few")) == (1, "error: --epochs 3: too few\n")
    code, err = exit_code_and_stderr(capsys, KeyboardInterrupt())
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    code, err = exit_code_and_stderr(capsys, cli.Interrupted("runs/x/last.pt holds epoch 3"))
    assert code == 130 and "runs/x/last.pt holds epoch 3" in err
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/last.pt")
    assert exit_code_and_stderr(capsys, full) == (1, "error: runs/x/last.pt: no space left on the device\n")
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\ndatasets.common.DataError: x.jpg: not a readable image")
    assert exit_code_and_stderr(capsys, wrapped) == (1, "error: x.jpg: not a readable image\n")
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        exit_code_and_stderr(capsys, RuntimeError("bug"))


def test_run_reports_a_real_dataloader_worker_error_in_one_line(capsys):
    def load():
        next(iter(DataLoader(FailingItem(), num_workers=1)))

    assert exit_code_and_stderr(capsys, load) == (1, "error: x.jpg: not a readable image\n")


RECIPES = {"small": {"epochs": 3, "lr": 0.1}, "big": {"epochs": 50, "lr": 0.01}}


def recipe_parser():
    p = cli.RunParser(parents=[cli.training_parser("x")], recipes=RECIPES, formatter_class=cli.HelpFormatter)
    p.add_argument("--recipe", default="small", choices=list(RECIPES))
    return p


def test_run_parser_recipes_flags_and_resumed_defaults(capsys):
    args = recipe_parser().parse_args([])
    assert (args.recipe, args.epochs, args.lr) == ("small", 3, 0.1)
    args = recipe_parser().parse_args(["--recipe", "big"])
    assert (args.recipe, args.epochs, args.lr) == ("big", 50, 0.01)
    args = recipe_parser().parse_args(["--recipe", "big", "--lr", "0.5"])
    assert (args.epochs, args.lr) == (50, 0.5)
    parser = recipe_parser()
    parser.resumed = {"recipe": "big", "epochs": 7, "lr": 0.2}
    args = parser.parse_args(["--recipe", "small"])
    assert (args.recipe, args.epochs, args.lr) == ("small", 7, 0.2)  # the run's settings, not the recipe's
    assert parser.parse_args(["--epochs", "9"]).epochs == 9
    with pytest.raises(SystemExit):
        recipe_parser().parse_args(["--recipe", "big", "--help"])
    assert "total epochs (default: 50)" in " ".join(capsys.readouterr().out.split())


def test_parse_args_resumes_with_the_runs_settings_and_refuses_a_changed_flag(tmp_path):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    path = str(tmp_path / "last.pt")
    checkpoint.save(ckpt, path)
    (tmp_path / "best.pt").write_text("x")
    (tmp_path / "log.csv").write_text("epoch\n1\n")
    args, loaded = runs.parse_args(recipe_parser(), ["--resume", path, "--workers", "3"], "p1")
    assert (args.epochs, args.lr, args.workers) == (3, 0.1, 3) and loaded["epoch"] == ckpt["epoch"]
    assert args.output_dir == str(tmp_path)  # a resumed run continues in its own folder
    assert runs.parse_args(recipe_parser(), ["--lr", "0.3"], "p1")[1] is None  # no --resume: a new run
    with pytest.raises(cli.UserError, match="--lr 0.3"):
        runs.parse_args(recipe_parser(), ["--resume", path, "--lr", "0.3"], "p1")


def test_resume_continues_only_in_its_own_folder_with_its_best_pt(tmp_path, monkeypatch):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(ckpt, str(run / "last.pt"))
    (run / "best.pt").write_text("x")
    (run / "log.csv").write_text("epoch\n1\n")
    with pytest.raises(cli.UserError, match="--output-dir .*other: a resumed run continues in its own folder"):
        runs.parse_args(recipe_parser(), ["--resume", str(run / "last.pt"), "--output-dir", str(tmp_path / "other")],
                        "p1")
    assert runs.parse_args(recipe_parser(), ["--resume", str(run / "last.pt"), "--output-dir", str(run)], "p1")
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    shutil.copy(run / "last.pt", copied / "last.pt")
    with pytest.raises(cli.UserError, match="lacks the run's best.pt and log.csv"):
        runs.parse_args(recipe_parser(), ["--resume", str(copied / "last.pt")], "p1")
    monkeypatch.chdir(run)  # cd runs/x && python ../../p1_train.py --resume last.pt
    args, _ = runs.parse_args(recipe_parser(), ["--resume", "last.pt"], "p1")
    assert args.output_dir == "."


def test_args_json_records_each_command_device_and_versions_and_none_become_flags(tmp_path, monkeypatch):
    args = argparse.Namespace(output_dir=str(tmp_path), resume=None, lr=0.1)
    monkeypatch.setattr(sys, "argv", ["../p1_train.py", "--lr", "0.1", "--output-dir", "my run"])
    runs.write_args(args, "p1_train.py", torch.device("cpu"))
    first = json.loads((tmp_path / "args.json").read_text())
    assert first["lr"] == 0.1 and first["device_used"] == "cpu" and first["torch_version"] == torch.__version__
    assert first["python_version"] == platform.python_version()
    assert first["commands"] == [{"command": "../p1_train.py --lr 0.1 --output-dir 'my run'", "script": "p1_train.py",
                                  "started": first["started"], "device_used": "cpu", "world_size": 1,
                                  "torch_version": torch.__version__, "python_version": platform.python_version()}]
    # A resumed run keeps the command that started it and adds its own; the first start stays.
    monkeypatch.setattr(sys, "argv", ["p1_train.py", "--resume", "last.pt"])
    runs.write_args(argparse.Namespace(**{**vars(args), "resume": "last.pt"}), "p1_train.py", "cpu")
    resumed = json.loads((tmp_path / "args.json").read_text())
    assert [c["command"] for c in resumed["commands"]] == [first["commands"][0]["command"],
                                                           "p1_train.py --resume last.pt"]
    assert resumed["started"] == first["started"]
    # A new run in the folder (no --resume) starts its own list.
    runs.write_args(args, "p1_train.py", "cpu")
    assert len(json.loads((tmp_path / "args.json").read_text())["commands"]) == 1
    # What args.json records besides the flags is never read back as a flag on --resume.
    assert set(runs.RUN_RECORD) <= runs.NOT_RESTORED
