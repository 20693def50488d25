"""Shared fixtures and helpers: a small synthetic hw2_data tree and three brief runs on it, made
once per test session, ``run_script`` for running the entry points as subprocesses, and
``run_main`` for running one in this process (no interpreter and torch start-up, about 3 s of CPU
each)."""
import functools
import os
import runpy
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*cmd, cwd, env=None, timeout=600):
    """Run a command (an entry point) on one thread; returns the CompletedProcess with text output.
    On a shared 2-core machine one thread per process is faster for these small networks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@functools.cache
def script_main(name):
    """The ``main`` of the script ``<name>.py``, loaded as a script (not imported)."""
    return runpy.run_path(os.path.join(ROOT, f"{name}.py"), run_name=name)["main"]


def run_main(name, argv, capsys, expected=None):
    """``(exit code, stdout, stderr)`` of ``<name>.py``'s ``main(argv)`` under the scripts' exit convention
    (``cli.run`` with ``expected``, by default the errors the training and grading scripts' ``__main__``
    expects; report.py's expects none: ``()``); argparse's own exits (a usage error, ``--help``) give the
    code a process would exit with. An unexpected exception propagates: where a process would print a
    traceback, the test fails."""
    from core import cli
    from core.checkpoint import CheckpointError
    from datasets import DataError

    try:
        code = cli.run(script_main(name), argv, expected=(DataError, CheckpointError) if expected is None else expected)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def default_sigint():
    """``preexec_fn`` for a child that a test interrupts: a shell starts background jobs with
    SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """``<tmp>/data`` with p1_data (5 train / 3 val per class) and p2_data (6 train, 3+3 val tiles)."""
    from datasets.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(str(out), seed=0, p1_train_per_class=5, p1_val_per_class=3, p2_train=6, p2_val=3, p2_size=512)
    return out


# The P2 runs of ``tiny_runs``: width 16 without ImageNet weights, one epoch, on the CPU.
P2_TINY = ("--width", "16", "--pretrained", "none", "--batch-size", "2", "--workers", "0", "--device", "cpu",
           "--epochs", "1", "--snapshot-epochs", "1")


@pytest.fixture(scope="session")
def tiny_runs(synthetic_data, tmp_path_factory):
    """``<tmp>/runs`` with three runs on ``synthetic_data``, trained once for every test file that reads
    them (a test that changes a run copies it first): ``p1`` (width 16, 32x32, 2 epochs), ``p2_fcn32s``
    (``--recipe baseline``) and ``p2_fcn8s`` (``--recipe improved``), both ``P2_TINY``."""
    base = tmp_path_factory.mktemp("runs")
    cache = base / "cache"

    def script(name, *argv):
        r = run_script(sys.executable, os.path.join(ROOT, name), *map(str, argv), cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]

    script("p1_train.py", "--data-path", synthetic_data / "p1_data", "--output-dir", base / "p1", "--width", "16",
           "--img-size", "32", "--epochs", "2", "--batch-size", "25", "--optimizer", "adam", "--lr", "1e-3",
           "--lr-schedule", "none", "--workers", "0", "--device", "cpu", "--cache-dir", cache)
    for recipe, folder in (("baseline", "p2_fcn32s"), ("improved", "p2_fcn8s")):
        script("p2_train.py", "--recipe", recipe, "--data-path", synthetic_data / "p2_data", "--output-dir",
               base / folder, "--cache-dir", cache, "--lr", "1e-3", *P2_TINY)
    return base
