"""A new model is one file plus its registry line: ``tests/toy_model.py`` registers ``toy`` and the
unchanged entry points train, checkpoint and grade it. The scripts run in a fresh Python that imports
the toy model first and then runs each script file as ``__main__`` (no test imports an entry point);
two such processes, not one per script, keep the test at about ten seconds of CPU."""
import sys

import pytest

from core import checkpoint
from core.fileio import read_csv
from tests.conftest import ROOT, run_script


def run_scripts(*runs, toy):
    """Run each ``(script, argv)`` of ``runs`` in turn as ``__main__`` in one fresh Python that has (``toy``)
    or has not registered the toy model; stdout gets ``exit <status>`` after each run."""
    code = ("import runpy, sys\n" + ("import tests.toy_model\n" if toy else "") +
            f"for script, *argv in {[[script, *map(str, argv)] for script, argv in runs]!r}:\n"
            "    sys.argv = [script, *argv]\n"
            "    try:\n"
            f"        runpy.run_path(os.path.join({ROOT!r}, script), run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        print('exit', e.code, flush=True)\n")
    return run_script(sys.executable, "-c", "import os\n" + code, cwd=ROOT)


def exit_statuses(r):
    return [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("exit ")]


def test_toy_model_trains_checkpoints_and_grades_through_the_real_scripts(synthetic_data, tmp_path):
    run, pred, val = tmp_path / "run", tmp_path / "pred", synthetic_data / "p2_data" / "validation"
    refused = tmp_path / "refused"
    r = run_scripts(
        # What the toy cannot take is refused from its registry entry, in one line, before any data is read.
        ("p2_train.py", ["--model", "toy", "--img-size", "256", "--output-dir", refused]),
        ("p2_train.py", ["--model", "toy", "--data-path", tmp_path, "--output-dir", refused]),
        ("p2_train.py", ["--model", "toy", "--data-path", synthetic_data / "p2_data", "--output-dir", run,
                         "--cache-dir", tmp_path / "cache", "--width", "16", "--pretrained", "none",
                         "--batch-size", "2", "--workers", "0", "--device", "cpu", "--epochs", "1",
                         "--snapshot-epochs", "1"]),
        # Graded by p2_test.py from best.pt alone, in windows of the toy's registered 512.
        ("p2_test.py", ["--checkpoint", run / "best.pt", "--images", val, "--output", pred, "--workers", "0",
                        "--device", "cpu"]),
        toy=True)
    assert exit_statuses(r) == [1, 1, 0, 0], r.stderr[-3000:]
    assert "error: --img-size 256: toy trains on 512x512 inputs only" in r.stderr
    assert "error: --pretrained auto: toy has no pretrained backbone; pass --pretrained none" in r.stderr
    assert "Traceback" not in r.stderr and not refused.exists()
    assert "toy (width 16)" in r.stdout
    ckpt = checkpoint.load(str(run / "best.pt"), "p2")
    assert ckpt["model_name"] == "toy" and ckpt["model_kwargs"] == {"num_classes": 7, "width": 16}

    r = run_scripts(
        # The course's grader scores the masks at the mIoU the training log recorded.
        ("mean_iou_evaluate.py", ["-g", val, "-p", pred]),
        # Where nothing registered the toy its run cannot be resumed: one line before anything is read or written.
        ("p2_train.py", ["--resume", run / "last.pt", "--epochs", "2"]),
        toy=False)
    assert exit_statuses(r) == [0, 1], r.stderr[-3000:]
    miou = float(next(line for line in r.stdout.splitlines() if line.startswith("mean_iou")).split(":")[1])
    assert miou == pytest.approx(float(read_csv(run / "log.csv")[-1]["val_miou"]), abs=1e-4)
    assert f"error: --resume {run / 'last.pt'}: the run's model toy is not registered here" in r.stderr
    assert "Traceback" not in r.stderr and len(read_csv(run / "log.csv")) == 1
