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
    p = argparse.ArgumentParser(parents=[cli.training_parser("x")], formatter_class=cli.HelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--recipe", default="small", choices=list(RECIPES))
    return p


def parse(argv):
    return runs.parse(recipe_parser(), argv, "p1", RECIPES)


def saved_run(folder, **args):
    """A run folder holding a p1 ``last.pt`` whose saved settings are the parser's, with ``args``."""
    folder.mkdir(exist_ok=True)
    ckpt = training_ckpt(classifier(), **{"lr": 0.1, "epochs": 3, "recipe": "small", "lr_schedule": "none", **args})
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    checkpoint.save(ckpt, str(folder / "last.pt"))
    (folder / "best.pt").write_text("x")
    (folder / "log.csv").write_text("epoch\n1\n")
    return ckpt, str(folder / "last.pt")


def test_parse_recipes_flags_and_resumed_defaults(tmp_path, capsys):
    args = parse([])[0]
    assert (args.recipe, args.epochs, args.lr) == ("small", 3, 0.1)
    args = parse(["--recipe", "big"])[0]
    assert (args.recipe, args.epochs, args.lr) == ("big", 50, 0.01)
    args = parse(["--recipe=big", "--lr", "0.5"])[0]
    assert (args.epochs, args.lr) == (50, 0.5)
    _, path = saved_run(tmp_path / "run", recipe="big", epochs=7, lr=0.2)
    args = parse(["--resume", path, "--recipe", "big"])[0]
    assert (args.recipe, args.epochs, args.lr) == ("big", 7, 0.2)  # the run's settings, not the recipe's
    assert parse([f"--resume={path}", "--epochs", "9"])[0].epochs == 9
    with pytest.raises(cli.UserError, match="--recipe 'small' \\(the run has 'big'\\)"):
        parse(["--resume", path, "--recipe", "small"])
    with pytest.raises(SystemExit):
        parse(["--recipe", "big", "--help"])
    assert "total epochs (default: 50)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as e:  # --help loads no checkpoint: it shows the help, not an error
        parse(["--resume", str(tmp_path / "missing.pt"), "--help"])
    assert e.value.code == 0 and "total epochs (default: 3)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as e:  # no abbreviations: --rec never quietly means --recipe
        parse(["--rec", "big"])
    assert e.value.code == 2 and "unrecognized arguments: --rec big" in capsys.readouterr().err


def test_parse_reads_a_resumed_run_in_one_pass(tmp_path, monkeypatch):
    """The defaults are set before the one parse: a resumed run is parsed once (the old RunParser
    parsed up to 4 times), and a parser that allows abbreviations is refused."""
    _, path = saved_run(tmp_path / "run", recipe="big", epochs=7, lr=0.2)
    calls = []
    parse_known_args = argparse.ArgumentParser.parse_known_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args",
                        lambda self, *a, **k: calls.append(a) or parse_known_args(self, *a, **k))
    args, loaded = parse(["--resume", path, "--workers", "3"])
    assert len(calls) == 1 and (args.epochs, args.lr, args.workers) == (7, 0.2, 3) and loaded["epoch"] == 2
    calls.clear()
    assert parse(["--recipe", "big"])[0].epochs == 50 and len(calls) == 1  # a new run: once too
    with pytest.raises(ValueError, match="allow_abbrev=False"):
        runs.parse(argparse.ArgumentParser(), [], "p1", RECIPES)


def test_parse_reads_resume_as_argparse_does(tmp_path, monkeypatch):
    """Checkpoint names argparse takes for a value although they start with "-": each is resumed
    with the run's settings, never read as a new run."""
    _, path = saved_run(tmp_path, recipe="big", epochs=7, lr=0.2)
    monkeypatch.chdir(tmp_path)
    for name in ("-", "-1", "-0.5", "- my run.pt"):
        shutil.copy(path, name)
        args, loaded = parse(["--resume", name])
        assert loaded is not None and (args.resume, args.epochs, args.output_dir) == (name, 7, "."), name
    with pytest.raises(SystemExit):  # a flag where the value should be: argparse's usage error, no checkpoint read
        parse(["--resume", "--workers", "3"])


def test_parse_args_resumes_with_the_runs_settings_and_refuses_a_changed_flag(tmp_path):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    path = str(tmp_path / "last.pt")
    checkpoint.save(ckpt, path)
    (tmp_path / "best.pt").write_text("x")
    (tmp_path / "log.csv").write_text("epoch\n1\n")
    args, loaded = parse(["--resume", path, "--workers", "3"])
    assert (args.epochs, args.lr, args.workers) == (3, 0.1, 3) and loaded["epoch"] == ckpt["epoch"]
    assert args.output_dir == str(tmp_path)  # a resumed run continues in its own folder
    assert parse(["--lr", "0.3"])[1] is None  # no --resume: a new run
    with pytest.raises(cli.UserError, match="--lr 0.3"):
        parse(["--resume", path, "--lr", "0.3"])


def test_resume_continues_only_in_its_own_folder_with_its_best_pt(tmp_path, monkeypatch):
    ckpt = training_ckpt(classifier(), epochs=3, lr=0.1, recipe="small", lr_schedule="none")
    ckpt["args"] = {**vars(recipe_parser().parse_args([])), **ckpt["args"]}
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(ckpt, str(run / "last.pt"))
    (run / "best.pt").write_text("x")
    (run / "log.csv").write_text("epoch\n1\n")
    with pytest.raises(cli.UserError, match="--output-dir .*other: a resumed run continues in its own folder"):
        parse(["--resume", str(run / "last.pt"), "--output-dir", str(tmp_path / "other")])
    assert parse(["--resume", str(run / "last.pt"), "--output-dir", str(run)])
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    shutil.copy(run / "last.pt", copied / "last.pt")
    with pytest.raises(cli.UserError, match="lacks the run's best.pt and log.csv"):
        parse(["--resume", str(copied / "last.pt")])
    monkeypatch.chdir(run)  # cd runs/x && python ../../p1_train.py --resume last.pt
    args, _ = parse(["--resume", "last.pt"])
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
