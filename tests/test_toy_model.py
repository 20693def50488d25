"""A new model is one file plus its registry line: ``tests/toy_model.py`` registers ``toy`` and the
unchanged entry points train, checkpoint and grade it. Each script runs in a subprocess that imports
the toy model first and then runs the script file as ``__main__`` (no test imports an entry point)."""
import os
import sys

import pytest

from core import checkpoint
from core.fileio import read_csv
from tests.conftest import ROOT, run_script


def run_with_toy(script, *argvs):
    """Run the entry point ``script`` once per argument list of ``argvs`` in one fresh Python that has
    registered the toy; stdout gets ``exit <status>`` after each run."""
    code = ("import runpy, sys\nimport tests.toy_model\n" +
            f"for argv in {[[script, *map(str, argv)] for argv in argvs]!r}:\n"
            "    sys.argv = argv\n"
            "    try:\n"
            f"        runpy.run_path({os.path.join(ROOT, script)!r}, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        print('exit', e.code, flush=True)\n")
    return run_script(sys.executable, "-c", code, cwd=ROOT)


def exit_statuses(r):
    return [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("exit ")]


def test_scripts_refuse_what_the_toy_cannot_take(tmp_path):
    r = run_with_toy("p2_train.py", ["--model", "toy", "--img-size", "256", "--output-dir", tmp_path / "run"],
                     ["--model", "toy", "--data-path", tmp_path, "--output-dir", tmp_path / "run"])
    assert exit_statuses(r) == [1, 1], r.stderr
    assert "error: --img-size 256: toy trains on 512x512 inputs only" in r.stderr
    assert "error: --pretrained auto: toy has no pretrained backbone; pass --pretrained none" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_toy_model_trains_checkpoints_and_grades_through_the_real_scripts(synthetic_data, tmp_path):
    run, pred, val = tmp_path / "run", tmp_path / "pred", synthetic_data / "p2_data" / "validation"
    r = run_with_toy("p2_train.py", ["--model", "toy", "--data-path", synthetic_data / "p2_data", "--output-dir", run,
                                     "--cache-dir", tmp_path / "cache", "--width", "16", "--pretrained", "none",
                                     "--batch-size", "2", "--workers", "0", "--device", "cpu", "--epochs", "1",
                                     "--snapshot-epochs", "1"])
    assert exit_statuses(r) == [0], r.stderr[-3000:]
    assert "toy (width 16)" in r.stdout
    ckpt = checkpoint.load(str(run / "best.pt"), "p2")
    assert ckpt["model_name"] == "toy" and ckpt["model_kwargs"] == {"num_classes": 7, "width": 16}
    logged = float(read_csv(run / "log.csv")[-1]["val_miou"])

    # Graded by p2_test.py (windows of the toy's registered 512) and scored by the course's grader script.
    r = run_with_toy("p2_test.py", ["--checkpoint", run / "best.pt", "--images", val, "--output", pred,
                                    "--workers", "0", "--device", "cpu"])
    assert exit_statuses(r) == [0], r.stderr[-3000:]
    graded = run_script(sys.executable, os.path.join(ROOT, "mean_iou_evaluate.py"), "-g", str(val), "-p", str(pred),
                        cwd=tmp_path)
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert float(graded.stdout.strip().splitlines()[-1].split(":")[1]) == pytest.approx(logged, abs=1e-4)

    # Where nothing registered the toy its run cannot be resumed: one line before anything is read or written.
    r = run_script(sys.executable, os.path.join(ROOT, "p2_train.py"), "--resume", str(run / "last.pt"), "--epochs", "2",
                   cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"error: --resume {run / 'last.pt'}: the run's model toy is not registered here" in r.stderr
    assert len(read_csv(run / "log.csv")) == 1
