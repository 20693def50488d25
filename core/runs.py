"""A training run's folder: which one, never clobbering another run, one writer at a time,
and a resumed run that continues with its own settings.

A folder holds a run when it has any of ``RUN_FILES``. A new run refuses such a folder unless
``--overwrite`` (then those files go, and only those); ``--resume`` continues in the folder of
its checkpoint. An exclusive lock (``.lock``, released by the kernel when the process ends)
makes a second run into the same folder fail at once instead of interleaving files.
"""
import errno
import fcntl
import os
import shutil
import time

from core.checkpoint import AsyncWriter, load, submit_epoch, to_cpu, training_state
from core.cli import Interrupted, UserError, error_message
from core.distributed import all_gather_object, cleanup_distributed, get_world_size, is_main_process
from core.engine import NonFiniteLossError
from core.fileio import write_json
from core.runtime import rng_state
from datasets import DataError

RUN_FILES = ("last.pt", "best.pt", "log.csv", "args.json")
# Files and folders a run writes besides RUN_FILES (removed with them by --overwrite).
RUN_OUTPUTS = ("curves.png", "per_class_iou.png", "epoch_masks.png", "epoch_masks_report.png", "confusion_matrix.png",
               "per_class_acc.csv", "snapshots")
# Settings of the process, not of the run: never taken from a --resume checkpoint.
NOT_RESTORED = {"resume", "output_dir", "overwrite", "rank", "local_rank", "distributed", "world_size"}
# Flags a --resume may change: where and how fast the run goes, and which masks it draws, not
# what it computes (``--epochs`` has its own rule in ``check_resume``).
MAY_CHANGE = {"device", "workers", "print_freq", "cache_dir", "no_cache", "compile", "data_path", "pretrained",
              "snapshot_epochs", "snapshot_ids"}


def existing_run(folder):
    return [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]


def lock_folder(folder):
    """Take an exclusive, non-blocking lock on ``folder/.lock`` for the life of the process.

    Returns the open lock file (keep a reference); UserError when another process holds it.
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
    return f


def prepare(args, script):
    """Choose, check and lock ``args.output_dir`` (rank 0); returns the lock file.

    Refuses a folder that holds another run, naming ``--resume``, ``--overwrite`` and
    ``--output-dir``; with ``--overwrite`` removes that run's files first.
    """
    folder = args.output_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--output-dir {folder}: exists and is not a folder")
    lock = lock_folder(folder)
    found = existing_run(folder)
    resuming_here = args.resume and os.path.samefile(os.path.dirname(os.path.abspath(args.resume)), folder)
    if found and not resuming_here:
        if not args.overwrite:
            lock.close()
            last = os.path.join(folder, "last.pt")
            raise UserError(f"--output-dir {folder}: holds a run ({', '.join(found)}); continue it with "
                            f"'python {script} --resume {last}', start a new one with another --output-dir, "
                            "or replace it with --overwrite")
        for name in RUN_FILES + RUN_OUTPUTS:
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    return lock


def parse_args(parser, argv, problem):
    """``(args, checkpoint)``: the parsed flags, and the ``--resume`` training checkpoint or None.

    With ``--resume``, ``argv`` is parsed again with the checkpoint's settings as defaults, so a
    resumed run continues with its own settings, and flags given now that would change what it
    computes are refused (``check_resume``).
    """
    args = parser.parse_args(argv)
    if not args.resume:
        return args, None
    ckpt = load(args.resume, problem, training=True)
    parser.resumed = {k: v for k, v in ckpt["args"].items() if k not in NOT_RESTORED}
    args = parser.parse_args(argv)
    check_resume(args, ckpt, args.resume)
    return args, ckpt


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


def write_args(args):
    write_json(os.path.join(args.output_dir, "args.json"), vars(args))


class Run:
    """A training run around its epoch loop: ``with runs.Run(args, "p2_train.py", epoch) as run:``.

    On entry: the run folder is checked and locked (rank 0). ``run.save_epoch`` ends each epoch
    (checkpoints and the log row, written in the background by ``run.writer``).
    On exit, however the loop ends: pending writes finish; Ctrl-C becomes ``cli.Interrupted``
    and a NaN loss or a file that fails to decode mid-training a one-line ``UserError``, each
    saying which epoch ``last.pt`` holds and how to resume; the process group and the lock are
    released.
    """

    def __init__(self, args, script, saved_epoch=0):
        self.args, self.script, self.saved_epoch = args, script, saved_epoch
        self.lock = prepare(args, script) if is_main_process() else None
        self.writer = AsyncWriter()

    def __enter__(self):
        return self

    def save_epoch(self, inference, log, row, started, *, optimizer, lr_scheduler, scaler, phase, epoch, best_score,
                   is_best):
        """End an epoch (every process calls it: the RNG states of all are gathered). Rank 0 takes a
        CPU snapshot of the training state, sets ``row["other_seconds"]`` (time since ``started``,
        the end of validation) and writes ``last.pt``, ``best.pt`` when ``is_best`` and the log row
        in the background; ``saved_epoch`` then names this epoch."""
        rngs = all_gather_object(rng_state())
        if is_main_process():
            state = to_cpu(training_state(inference, optimizer=optimizer, lr_scheduler=lr_scheduler, scaler=scaler,
                                          phase=phase, epoch=epoch, best_score=best_score, args=vars(self.args),
                                          rng=rngs, world_size=get_world_size()))
            row["other_seconds"] = f"{time.perf_counter() - started:.2f}"
            submit_epoch(self.writer, self.args.output_dir, state, is_best, then=[lambda: log.append(row)])
        self.saved_epoch = epoch

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, NonFiniteLossError, DataError)):
                self.writer.wait()
                note = saved_note(self.args.output_dir, self.saved_epoch, self.script)
                if issubclass(exc_type, KeyboardInterrupt):
                    raise Interrupted(note) from None
                hint = " (try a lower --lr, or run without --amp)" if exc_type is NonFiniteLossError else ""
                raise UserError(f"training stopped: {error_message(exc)}{hint}; {note}") from None
        finally:
            cleanup_distributed()
            if self.lock is not None:
                self.lock.close()
        return False


def saved_note(folder, last_epoch, script):
    """What an interrupted or failed run left: the epoch in ``last.pt`` and the resume command."""
    if not last_epoch:
        return "no epoch finished, so nothing was saved"
    last = os.path.join(folder, "last.pt")
    return f"{last} holds epoch {last_epoch}; continue with: python {script} --resume {last}"
