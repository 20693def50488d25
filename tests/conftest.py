"""Shared fixtures and helpers: a small synthetic hw2_data tree, generated once per test
session, ``run_script`` for running the entry points as subprocesses, and ``run_main`` for running
one in this process (no interpreter and torch start-up, about 3 s of CPU each)."""
import functools
import os
import runpy
import signal
import subprocess

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
