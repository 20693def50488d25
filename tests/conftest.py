"""Shared fixtures and helpers: small synthetic hw2_data trees and the brief training runs several
tests read, made once per test session (started early, on a background thread: ``EarlyRuns``);
``run_script`` for running the entry points as subprocesses (``run_scripts`` for several side by
side, ``start_script``/``finish_script`` for one beside the test's own work), and ``run_main`` for
running one in this process (no interpreter and torch start-up, about 3 s of CPU each)."""
import functools
import importlib.util
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None  # requirements-optional.txt


def start_script(*cmd, cwd, env=None):
    """Start a command (an entry point) on one thread, its stdout and stderr going to temporary files
    (a pipe nobody reads while other work runs could fill and stall it); ``finish_script`` collects it.
    On a shared 2-core machine one thread per process is faster for these small networks, and two
    such processes run side by side."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err, text=True)
    proc.outputs = out, err
    return proc


def finish_script(proc, timeout=600):
    """Wait for a ``start_script`` process; returns its CompletedProcess with text output (killed, and
    TimeoutExpired raised, after ``timeout`` seconds)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        texts = []
        for f in proc.outputs:
            f.seek(0)
            texts.append(f.read())
            f.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, *texts)


def run_scripts(*cmds, cwd, env=None, timeout=600):
    """Run independent commands side by side (see ``start_script``); returns their CompletedProcess in
    order. A failure to finish one kills the others."""
    procs = [start_script(*cmd, cwd=cwd, env=env) for cmd in cmds]
    try:
        return [finish_script(p, timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_script(*cmd, cwd, env=None, timeout=600):
    """Run one command (see ``start_script``); returns the CompletedProcess with text output."""
    return run_scripts(cmd, cwd=cwd, env=env, timeout=timeout)[0]


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


# --------------------------------------------------------------------------- runs started early
# Training runs that several tests read. Most of the suite is one process on one core of two, so
# the runs that collected tests need train one after another on a background thread from the start
# of the session, in the order the tests first need them, on the core the tests leave idle; each
# fixture waits for its own run. Their outcome does not depend on that: every script runs on one
# thread. (The suite's time: README, ``make test``.)

def script_cmd(name, *argv):
    return [sys.executable, os.path.join(ROOT, name), *map(str, argv)]


@pytest.fixture(scope="session")
def p1_data(tmp_path_factory):
    """``<tmp>/data/p1_data``: 20 train / 6 val images per class (the synthetic defaults), the P2 part empty."""
    from datasets.synthetic import generate

    out = tmp_path_factory.mktemp("p1") / "data"
    generate(str(out), seed=0, p1_train_per_class=20, p1_val_per_class=6, p2_train=0, p2_val=0, p2_size=32)
    return out / "p1_data"


# ``p1_run``: P1's tiny recipe on ``p1_data``. Best val accuracy after 6 epochs: 0.15-0.22 over
# seeds 0-3 (12 epochs: 0.28-0.41); chance is 0.02.
P1_EPOCHS = 6
P1_TINY = ("--width", "4", "--img-size", "32", "--batch-size", "25", "--optimizer", "adam", "--lr", "1e-3",
           "--weight-decay", "0", "--lr-schedule", "none", "--label-smoothing", "0", "--no-hflip", "--crop-padding",
           "0", "--color-jitter", "0", "--workers", "0")


def p1_run_cmds(request):
    factory = request.getfixturevalue("tmp_path_factory")
    out = factory.mktemp("p1") / "run"
    return [script_cmd("p1_train.py", "--data-path", request.getfixturevalue("p1_data"), "--output-dir", out,
                       *P1_TINY, "--epochs", P1_EPOCHS, "--cache-dir", factory.mktemp("cache"))], out


# The P2 runs of ``tiny_runs``: width 16 without ImageNet weights, one epoch, on the CPU.
P2_TINY = ("--width", "16", "--pretrained", "none", "--batch-size", "2", "--workers", "0", "--device", "cpu",
           "--epochs", "1", "--snapshot-epochs", "1")


def tiny_runs_cmds(request):
    data, base = request.getfixturevalue("synthetic_data"), request.getfixturevalue("tmp_path_factory").mktemp("runs")
    cache = base / "cache"
    cmds = [script_cmd("p1_train.py", "--data-path", data / "p1_data", "--output-dir", base / "p1", "--width", "16",
                       "--img-size", "32", "--epochs", "2", "--batch-size", "25", "--optimizer", "adam", "--lr", "1e-3",
                       "--lr-schedule", "none", "--workers", "0", "--device", "cpu", "--cache-dir", cache)]
    for recipe, folder in (("baseline", "p2_fcn32s"), ("improved", "p2_fcn8s")):
        cmds.append(script_cmd("p2_train.py", "--recipe", recipe, "--data-path", data / "p2_data", "--output-dir",
                               base / folder, "--cache-dir", cache, "--lr", "1e-3", *P2_TINY))
    return cmds, base


def fcn8s_run_cmds(request):
    data, out = request.getfixturevalue("synthetic_data"), request.getfixturevalue("tmp_path_factory").mktemp("p2")
    out = out / "fcn8s run"
    cmds = [script_cmd("p2_train.py", "--data-path", data / "p2_data", "--output-dir", out, "--cache-dir",
                       out.parent / "cache", "--width", "16", "--pretrained", "none", "--batch-size", "2", "--workers",
                       "0", "--device", "cpu", "--recipe", "improved-ours", "--epochs", "2", "--switch-sgd-at", "0",
                       "--lr", "1e-3", "--snapshot-epochs", "1,2", *(["--tensorboard"] if HAS_TENSORBOARD else []))]
    return cmds, out


# fixture name -> function(request) -> (commands run in turn, the fixture's value)
EARLY_RUNS = {"p1_run": p1_run_cmds, "tiny_runs": tiny_runs_cmds, "fcn8s_run": fcn8s_run_cmds}


class EarlyRuns:
    """The ``EARLY_RUNS`` that collected tests use, their commands run in turn on a thread."""

    def __init__(self, request):
        first_use = {}
        for index, item in enumerate(request.session.items):
            for name in item.fixturenames:
                first_use.setdefault(name, index)
        # The commands are built here, in pytest's thread: building them makes the data fixtures.
        self.jobs = {name: EARLY_RUNS[name](request) for name in sorted(set(EARLY_RUNS) & set(first_use),
                                                                        key=first_use.get)}
        self.done = {name: threading.Event() for name in self.jobs}
        self.failures, self.current, self.stopping = {}, None, False
        self.thread = threading.Thread(target=self.work, name="early runs", daemon=True)
        self.thread.start()

    def work(self):
        for name, (cmds, _) in self.jobs.items():
            try:
                for cmd in cmds:
                    if self.stopping:
                        self.failures[name] = "the session ended first"
                        break
                    self.current = start_script(*cmd, cwd=ROOT)
                    if self.stopping:  # stop() ran while it started: it saw the previous process
                        self.current.kill()
                    r = finish_script(self.current)
                    if r.returncode != 0:
                        self.failures[name] = f"{' '.join(map(str, cmd))}\n{r.stderr[-3000:]}"
                        break
            except Exception as e:  # a timeout, a command that cannot start: the waiting fixture fails with it
                self.failures[name] = f"{' '.join(map(str, cmd))}: {e!r}"
            finally:
                self.done[name].set()

    def wait(self, name, timeout=900):
        """The fixture's value once its commands ran, each with exit code 0."""
        assert self.done[name].wait(timeout), f"early run {name} did not finish in {timeout} s"
        assert name not in self.failures, self.failures[name]
        return self.jobs[name][1]

    def stop(self):
        self.stopping = True
        if self.current is not None and self.current.poll() is None:
            self.current.kill()
        self.thread.join()


@pytest.fixture(scope="session", autouse=True)
def early_runs(request):
    runs = EarlyRuns(request)
    yield runs
    runs.stop()


@pytest.fixture(scope="session")
def p1_run(early_runs):
    """``<tmp>/run``: ``p1_train.py`` with ``P1_TINY`` for ``P1_EPOCHS`` epochs on ``p1_data``."""
    return early_runs.wait("p1_run")


@pytest.fixture(scope="session")
def tiny_runs(early_runs):
    """``<tmp>/runs`` with three runs on ``synthetic_data``, trained once for every test file that reads
    them (a test that changes a run copies it first): ``p1`` (width 16, 32x32, 2 epochs), ``p2_fcn32s``
    (``--recipe baseline``) and ``p2_fcn8s`` (``--recipe improved``), both ``P2_TINY``."""
    return early_runs.wait("tiny_runs")


@pytest.fixture(scope="session")
def fcn8s_run(early_runs):
    """Our improved recipe for 2 epochs (focal loss, dataset normalisation, Adam 1e-3), width 16, snapshots
    1 and 2, logged for TensorBoard too (where the package is installed)."""
    return early_runs.wait("fcn8s_run")
