"""A training run's folder: which one, never clobbering another run, one writer at a time,
and a resumed run that continues with its own settings; and the run's epoch record (``Run``:
timed, checkpointed, handed to the sinks of ``core/sinks.py``).

A folder holds a run when it has a finished epoch (``last.pt``) or the files of one
(``best.pt``, ``log.csv``). A new run refuses such a folder unless ``--overwrite`` (then the
files that run wrote go, and only those: ``RUN_FILES``, the script's figures and snapshot
masks by their names, the optional sinks' files); a folder whose run finished no epoch (only ``args.json``) holds
nothing to protect and is started again. ``--resume`` continues in the folder of its
checkpoint, which must hold that run's ``best.pt`` and ``log.csv``. An exclusive lock
(``.lock``, released by the kernel when the process ends, never held by DataLoader workers)
makes a second run into the same folder fail at once instead of interleaving files.

Scheduler signals stop a run as Ctrl-C does (``STOP_SIGNALS``): the files in flight are
finished, the message says which epoch ``last.pt`` holds and how to resume, and the exit
code is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
"""
import datetime
import errno
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import sys
import time

import torch

from core.checkpoint import load, restore_training, submit_epoch, to_cpu, training_state
from core.cli import DataError, Interrupted, UserError, error_message
from core.distributed import all_gather_object, cleanup_distributed, get_rank, get_world_size, is_main_process, log
from core.engine import NonFiniteLossError
from core.fileio import AsyncWriter, remove_matching, write_json
from core.optim import build_phase, phase_at
from core.runtime import StopSignal, StopSignals, rng_state
from core.sinks import EpochRecord, check as check_sinks, open_sinks, remove as remove_sink_files
from models import model_names

RUN_FILES = ("last.pt", "best.pt", "log.csv", "args.json")
# Files each script writes besides RUN_FILES (removed with them by --overwrite), and its snapshot masks
# (``snapshots/<id>_epoch<E>.png``, p2_train.py); nothing else in the folder is touched.
RUN_OUTPUTS = {"p1_train.py": ("curves.png", "confusion_matrix.png", "per_class_acc.csv"),
               "p2_train.py": ("curves.png", "per_class_iou.png", "epoch_masks.png", "epoch_masks_report.png")}
SNAPSHOT = re.compile(r".+_epoch[0-9]+\.png")
# Each script's epoch line (``sinks.Console``): the columns it shows after the learning rate, and the
# decimals of its img/s (P1's 32x32 images go by the thousand).
EPOCH_LINES = {"p1_train.py": (("train_loss", "val_loss", "val_acc"), 0),
               "p2_train.py": (("train_loss", "val_loss", "val_miou"), 1)}
# Settings of the process, not of the run: never taken from a --resume checkpoint.
NOT_RESTORED = {"resume", "output_dir", "overwrite", "rank", "local_rank", "distributed", "world_size"}
# What args.json records besides the flags (``write_args``): never restored as flags on --resume.
RUN_RECORD = ("commands", "started", "device_used", "torch_version", "python_version")
NOT_RESTORED |= set(RUN_RECORD)
# Flags a --resume may change: where and how fast the run goes, and which masks it draws, not
# what it computes (``--epochs`` has its own rule in ``check_resume``).
MAY_CHANGE = {"device", "workers", "print_freq", "cache_dir", "no_cache", "compile", "data_path", "pretrained",
              "snapshot_epochs", "snapshot_ids", "tensorboard"}


def existing_run(folder):
    """The run files in ``folder`` when they hold a finished epoch (or its ``best.pt`` / ``log.csv``);
    [] for a folder whose run stopped before its first epoch ended (only ``args.json``)."""
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
    return found if set(found) - {"args.json"} else []


def lock_folder(folder):
    """Take an exclusive, non-blocking lock on ``folder/.lock`` for the life of the process.

    Returns the open lock file (keep a reference); UserError when another process holds it.
    A forked child (a DataLoader worker) closes its copy at once, so the lock ends with this
    process, not with the last of its workers (a requeued run resumes straight after a kill).
    """
    os.makedirs(folder, exist_ok=True)
    f = open(os.path.join(folder, ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise UserError(f"{folder}: another run is writing into this folder right now "
                            "(wait for it to finish, or pass another --output-dir)") from None
        raise
    os.register_at_fork(after_in_child=lambda: _close_in_child(f))
    return f


def _close_in_child(f):
    """A forked child closes its duplicate of the lock's descriptor: ``flock`` holds while any
    duplicate is open, and closing one does not release the parent's."""
    if not f.closed:
        f.close()


def prepare(args, script):
    """Choose, check and lock ``args.output_dir`` (rank 0); returns the lock file.

    Refuses a folder that holds another run, naming ``--resume`` (when ``last.pt`` is there),
    ``--overwrite`` and ``--output-dir``; with ``--overwrite`` removes that run's files first.
    A folder left by a run that finished no epoch is started again. Refuses a folder inside
    ``--data-path`` (its files would be read as data by every later run).
    """
    folder = args.output_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--output-dir {folder}: exists and is not a folder")
    data = getattr(args, "data_path", None)
    if data and _inside(folder, data):
        raise UserError(f"--output-dir {folder}: is inside --data-path {data}; every later run would read the "
                        "run's files as data; pass an --output-dir outside it")
    lock = lock_folder(folder)
    found = existing_run(folder)
    resuming_here = args.resume and os.path.samefile(os.path.dirname(os.path.abspath(args.resume)), folder)
    if found and not resuming_here:
        if not args.overwrite:
            lock.close()
            last = os.path.join(folder, "last.pt")
            if os.path.exists(last):
                raise UserError(f"--output-dir {folder}: holds a run ({', '.join(found)}); continue it with "
                                f"'python {command(script)} --resume {last}', start a new one with another "
                                "--output-dir, or replace it with --overwrite")
            raise UserError(f"--output-dir {folder}: holds the files of a run ({', '.join(found)}) but no last.pt "
                            "to continue it from; start a new run with another --output-dir, or replace them with "
                            "--overwrite")
        remove_run(folder, script)
    elif not found and not resuming_here and os.path.exists(os.path.join(folder, "args.json")):
        print(f"note: {folder} holds a run that finished no epoch; starting it again", file=sys.stderr)
        remove_run(folder, script)
    return lock


def remove_run(folder, script):
    """Remove what a run of ``script`` wrote into ``folder``: its files by name, the snapshot
    masks by their name pattern (the ``snapshots`` folder too when that leaves it empty), and the
    files of the optional sinks (``tensorboard/``'s event files)."""
    for name in RUN_FILES + RUN_OUTPUTS.get(script, ()):
        path = os.path.join(folder, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
    if script == "p2_train.py":
        remove_matching(os.path.join(folder, "snapshots"), SNAPSHOT)
    remove_sink_files(folder)


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def command(script):
    """How the user ran ``script`` (e.g. ``../../p2_train.py`` from inside a run folder), for the
    commands a message suggests."""
    return sys.argv[0] if sys.argv and os.path.basename(sys.argv[0]) == script else script


def parse(parser, argv, problem, recipes):
    """``(args, checkpoint)``: ``argv`` parsed once, and the ``--resume`` training checkpoint or None.

    The defaults are set first, each layer over the next: the settings saved in the ``--resume``
    checkpoint (so ``--resume last.pt`` alone continues the run as it was started), then the
    recipe (``recipes``: name -> {dest: value}; the ``--recipe`` given, else the resumed run's,
    else the parser's default), then the parser's own; a flag given on the command line always
    wins, and ``--help`` after ``--recipe NAME`` shows that recipe's values. ``--recipe`` and
    ``--resume`` are read from ``argv`` beforehand by ``_given``, which needs a parser built with
    ``allow_abbrev=False`` (so ``--rec`` is refused, never read as ``--recipe``); ``--help``
    loads no checkpoint. A resumed run's flags that would change what it computes are refused
    (``check_resume``), and it continues in its checkpoint's folder (``resume_folder``).
    ``--data-path`` and ``--cache-dir`` are kept as absolute paths, so a run resumes from any
    working directory (e.g. inside its folder).
    """
    if parser.allow_abbrev:
        raise ValueError("runs.parse reads --recipe and --resume from argv itself: build the parser with "
                         "allow_abbrev=False")
    argv = sys.argv[1:] if argv is None else list(argv)
    given = _given(argv, ("--recipe", "--resume", "--help", "-h"))
    ckpt, saved = None, {}
    if given["--resume"] and not (given["--help"] or given["-h"]):
        ckpt = load(given["--resume"], problem, training=True)
        saved = {k: v for k, v in ckpt["args"].items() if k not in NOT_RESTORED}
    recipe = given["--recipe"] or saved.get("recipe") or parser.get_default("recipe")
    parser.set_defaults(**{**recipes.get(recipe, {}), **saved})  # an unknown --recipe: parse_args names it
    args = parser.parse_args(argv)
    if ckpt is not None:
        if getattr(args, "model", None) not in (None, *model_names(problem)):  # only a resumed run can name another
            raise UserError(f"--resume {args.resume}: the run's model {args.model} is not registered here "
                            f"(registered: {', '.join(model_names(problem))}; models/__init__.py)")
        check_resume(args, ckpt, args.resume)
        args.output_dir = resume_folder(args.resume, args.output_dir, ckpt)
    for key in ("data_path", "cache_dir"):
        if getattr(args, key, None):
            setattr(args, key, os.path.abspath(getattr(args, key)))
    return args, ckpt


# What argparse reads as a negative number, not a flag (argparse._negative_number_matcher).
NEGATIVE = re.compile(r"-\d+|-\d*\.\d+")


def _is_value(token):
    """Whether argparse reads ``token`` after a flag as its value, not as another flag (as
    ``ArgumentParser._parse_optional`` does for a parser with no flag that looks like a negative
    number): "-", a negative number, and a string with a space are values."""
    return not token.startswith("-") or token == "-" or bool(NEGATIVE.fullmatch(token)) or " " in token


def _given(argv, flags):
    """What ``argv`` gives each of ``flags`` as argparse reads it without abbreviations, nothing
    after ``--``: ``-h``/``--help`` True when present; a flag taking a value the last ``--flag
    value`` or ``--flag=value`` (None when absent, or when no value follows: parse_args refuses it)."""
    found = dict.fromkeys(flags)
    for i, token in enumerate(argv):
        if token == "--":
            break
        name, eq, value = token.partition("=")
        if token in ("-h", "--help"):
            found[token] = True
        elif name in found and eq:
            found[name] = value
        elif name in found:
            found[name] = argv[i + 1] if i + 1 < len(argv) and _is_value(argv[i + 1]) else None
    return found


def resume_folder(path, output_dir, ckpt):
    """The folder a ``--resume path`` run continues in: the checkpoint's own, which must hold the
    run's ``best.pt`` and ``log.csv`` (a ``last.pt`` copied out of its folder would continue
    without them, and the run's best model and history would be lost)."""
    folder = os.path.dirname(path) or "."
    if output_dir and not (os.path.isdir(output_dir) and os.path.samefile(output_dir, folder)):
        raise UserError(f"--output-dir {output_dir}: a resumed run continues in its own folder ({folder}); drop "
                        f"--output-dir, or copy the whole folder {folder} and resume the copy's last.pt")
    missing = [name for name in ("best.pt", "log.csv") if not os.path.exists(os.path.join(folder, name))
               and not (name == "log.csv" and ckpt["epoch"] == 1)]  # a kill just after epoch 1's last.pt
    if missing:
        raise UserError(f"--resume {path}: its folder lacks the run's {' and '.join(missing)} (was last.pt copied "
                        "out of its run folder?); resume the last.pt inside the whole run folder")
    return folder


def check_resume(args, ckpt, path):
    """Refuse a --resume whose flags change what the run computes (it continues with the
    checkpoint's settings); ``--epochs`` may grow when no schedule depends on it."""
    saved = ckpt["args"]
    changed = [k for k in sorted(saved) if k in vars(args) and k not in NOT_RESTORED | MAY_CHANGE | {"epochs"}
               and _norm(saved[k]) != _norm(getattr(args, k))]
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)!r} (the run has {saved[k]!r})"
                          for k in changed[:4])
        raise UserError(f"--resume {path}: the run was started with other settings: {shown}; a resumed run "
                        "continues with its own, so drop those flags, or start a new run")
    if args.epochs != saved["epochs"]:
        if args.epochs < ckpt["epoch"]:
            raise UserError(f"--epochs {args.epochs}: {path} already finished epoch {ckpt['epoch']}")
        if saved.get("lr_schedule", "none") != "none":
            raise UserError(f"--epochs {args.epochs}: the run's --lr-schedule {saved['lr_schedule']} was planned for "
                            f"{saved['epochs']} epochs; resume with --epochs {saved['epochs']}")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def start_training(args, model, model_without_ddp, scaler, resume, score_name):
    """``(first epoch, best score, phase, optimizer, lr scheduler)`` of the epoch loop: a new run's
    first optimizer phase, or a resumed run's phase with every state restored from ``resume``
    (its training checkpoint); ``score_name`` names the best score in the resume message."""
    start_epoch, best = (1, -float("inf")) if resume is None else (resume["epoch"] + 1, resume["best_score"])
    phase = phase_at(args, start_epoch)
    optimizer, scheduler = build_phase(args, model.parameters(), phase)
    if resume is not None:
        restore_training(resume, model_without_ddp, optimizer, scheduler, scaler, phase, get_rank(), get_world_size())
        log(f"resumed from {args.resume} at epoch {resume['epoch']} (best {score_name} {best:.4f})")
    return start_epoch, best, phase, optimizer, scheduler


def switch_phase(args, model, epoch):
    """``(phase, optimizer, lr scheduler)`` of the optimizer phase that starts at ``epoch`` (Adam to
    SGD at ``--switch-sgd-at``), said in the log."""
    phase = phase_at(args, epoch)
    optimizer, scheduler = build_phase(args, model.parameters(), phase)
    log(f"epoch {epoch}: switching optimizer to {phase} (lr {args.sgd_lr:g})")
    return phase, optimizer, scheduler


def write_args(args, script, device):
    """Write ``args.json``: the run's settings, and what they cannot say (``RUN_RECORD``): each
    command that ran the run as typed (``commands``: the first started it, each later one resumed
    it; kept from the folder's ``args.json`` on ``--resume``), with its start time, the device it
    actually used and its torch and Python versions; the latest command's are also the top-level
    ``device_used``, ``torch_version``, ``python_version``; ``started`` is the first start."""
    path = os.path.join(args.output_dir, "args.json")
    now = {"command": shlex.join(sys.argv), "script": script,
           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device_used": device_name(device), "world_size": get_world_size(),
           "torch_version": torch.__version__, "python_version": platform.python_version()}
    earlier = _earlier_commands(path) if args.resume else []
    record = {"commands": earlier + [now], "started": (earlier + [now])[0].get("started", now["started"])}
    record.update({k: now[k] for k in ("device_used", "torch_version", "python_version")})
    write_json(path, {**vars(args), **record})  # an OSError names args.json, not its temporary file


def _earlier_commands(path):
    """The ``commands`` recorded in the ``args.json`` at ``path``; none when it is missing,
    unreadable or written before commands were recorded (the run then starts its list again)."""
    try:
        with open(path) as f:
            commands = json.load(f).get("commands")
    except (OSError, ValueError, AttributeError):
        return []
    return [c for c in commands if isinstance(c, dict)] if isinstance(commands, list) else []


def device_name(device):
    """``cuda:0 (NVIDIA H200)``, ``cpu``: the device a run used, as its record and report name it."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


class Run:
    """A training run around its epoch loop: ``with runs.Run(args, "p2_train.py", epoch) as run:``.

    On entry: an optional sink's missing package is refused, the run folder is checked and locked
    (rank 0); ``STOP_SIGNALS`` raise ``runtime.StopSignal`` (``runtime.StopSignals``: one deferred
    in a ``__del__`` is sent again).
    Each epoch, ``main`` marks the parts it times (``run.begin("train")``, ``"val"``, ``"other"``),
    may hand images (``run.add_images``), and ends it with ``run.end_epoch``, handing the numbers
    of its record; the run writes the checkpoints and, in the background, passes the record to
    its sinks (``core/sinks.py``: the epoch line, ``log.csv``, TensorBoard). ``run.finish()`` waits
    for the last epoch's files and closes the sinks.
    On exit, however the loop ends: pending writes finish; Ctrl-C or a stop signal becomes
    ``cli.Interrupted`` (exit 128 + signal number), and a NaN loss, a file that fails to decode
    mid-training or a checkpoint that cannot be written (full disk) a one-line ``UserError``,
    each saying which epoch ``last.pt`` holds and how to resume; the process group and the
    lock are released, and the signal handlers restored.
    """

    def __init__(self, args, script, saved_epoch=0):
        self.args, self.script, self.saved_epoch = args, script, saved_epoch
        check_sinks(args)  # before --overwrite removes anything
        self.lock = prepare(args, script) if is_main_process() else None
        self.writer = AsyncWriter()
        self.sinks = open_sinks(args, saved_epoch, *EPOCH_LINES[script]) if is_main_process() else []
        self.signals = StopSignals()
        self.seconds, self.part, self.since, self.images = {}, None, 0.0, {}

    @property
    def signum(self):
        return self.signals.signum

    def __enter__(self):
        self.signals.__enter__()
        return self

    def begin(self, part):
        """Time ``part`` of this epoch (``train``, ``val``, ``other``) from now to the next ``begin``
        or ``end_epoch``: the record's ``<part>_seconds``."""
        now = time.perf_counter()
        if self.part is not None:
            self.seconds[f"{self.part}_seconds"] = now - self.since
        self.part, self.since = part, now

    def add_images(self, images):
        """Images of this epoch for the sinks that show them (tag -> H x W x 3 uint8)."""
        self.images.update(images)

    def end_epoch(self, inference, numbers, *, optimizer, lr_scheduler, scaler, phase, epoch, best_score, is_best,
                  train_images):
        """End an epoch (every process calls it: the RNG states of all are gathered). ``numbers``: the
        epoch's record as floats (``lr``, the losses, the scores), in log order; ``train_images``:
        the images this process trained on (the line's img/s). Rank 0 takes a CPU snapshot of the
        training state, closes the last timed part and, in the background, writes ``best.pt`` when
        ``is_best``, then ``last.pt``, then hands the record to the sinks in order (the epoch line,
        the log row, ...): a line saying "(best)" is printed only once ``best.pt`` is on disk, and
        ``saved_epoch`` names this epoch only once ``last.pt`` is."""
        rngs = all_gather_object(rng_state())
        if is_main_process():
            state = to_cpu(training_state(inference, optimizer=optimizer, lr_scheduler=lr_scheduler, scaler=scaler,
                                          phase=phase, epoch=epoch, best_score=best_score, args=vars(self.args),
                                          rng=rngs, world_size=get_world_size()))
            self.begin(None)
            values = {**{k: float(v) for k, v in numbers.items()}, **self.seconds}
            record = EpochRecord(epoch, phase, values, is_best, train_images / values["train_seconds"], self.images)
            submit_epoch(self.writer, self.args.output_dir, state, is_best,
                         then=[lambda: self._saved(epoch), lambda: self._record(record)])
        else:
            self.saved_epoch = epoch
        self.seconds, self.part, self.images = {}, None, {}
        if self.signum is not None:  # a StopSignal that something swallowed: stop now
            raise StopSignal(self.signum)

    def _saved(self, epoch):
        self.saved_epoch = epoch

    def _record(self, record):
        for sink in self.sinks:
            sink.write(record)

    def finish(self):
        """Wait for the last epoch's files and records (an OSError if one could not be written), and
        close the sinks."""
        self.writer.wait()
        self._close_sinks()

    def _close_sinks(self):
        for sink in self.sinks:
            sink.close()

    def __exit__(self, exc_type, exc, tb):
        self.signals.hold()  # a signal while the files in flight finish is only recorded
        try:
            stopped = self.signum is not None or (exc_type is not None and issubclass(exc_type, KeyboardInterrupt))
            if stopped or (exc_type is not None and issubclass(exc_type, (NonFiniteLossError, DataError, OSError))):
                try:
                    self.writer.wait()
                except OSError as e:  # the files of the last epoch could not be written
                    exc = e
                note = saved_note(self.args.output_dir, self.saved_epoch, self.script)
                if not is_main_process():  # rank 0 says it, unless the cause is this rank's own (a file it read)
                    if not stopped and isinstance(exc, DataError):
                        print(f"error: rank {get_rank()}: training stopped: {error_message(exc)}", file=sys.stderr)
                    raise SystemExit(128 + (self.signum or signal.SIGINT) if stopped else 1)
                if stopped and not isinstance(exc, OSError):
                    signum = self.signum or signal.SIGINT
                    by = "" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}; "
                    raise Interrupted(by + note, exit_code=128 + signum) from None
                hint = " (try a lower --lr, or run without --amp)" if isinstance(exc, NonFiniteLossError) else ""
                raise UserError(f"training stopped: {error_message(exc)}{hint}; {note}") from None
        finally:
            if self.writer.pending is None:  # nothing in flight that a sink still has to take
                self._close_sinks()
            cleanup_distributed()
            if self.lock is not None:
                self.lock.close()
            self.signals.__exit__(exc_type, exc, tb)
        return False


def saved_note(folder, last_epoch, script):
    """What an interrupted or failed run left: the epoch in ``last.pt`` and the resume command."""
    if not last_epoch:
        return "no epoch finished, so nothing was saved; the same command starts the run again"
    last = os.path.join(folder, "last.pt")
    return f"{last} holds epoch {last_epoch}; continue with: python {command(script)} --resume {last}"
