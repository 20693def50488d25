"""Where a training run's epoch record goes: ``runs.Run.end_epoch`` builds one ``EpochRecord``
per epoch from the numbers ``main`` hands it and passes it to every sink of the run (rank 0):
the epoch line on stdout (``Console``), ``log.csv`` (``CSVFile``) and the optional sinks a flag
turns on (``OPTIONAL``; ``--tensorboard``: ``core/tensorboard.py``).

A sink is a class with ``write(record)`` and ``close()``. ``write`` runs in the run's
background writer after the epoch's checkpoints are on disk, in the order of the sinks: a line
saying "(best)" is printed only once ``best.pt`` is written, and a log row never gets ahead of
its ``last.pt``. An optional sink also has the static methods ``check(folder)``, which refuses
a missing package (or a file in the way) before the run touches any file, and ``remove(folder)``,
which deletes what ``--overwrite`` removes: the files it wrote and nothing else. A new sink is
one module, its flag in ``cli.training_parser`` and its line in ``OPTIONAL``.
"""
import dataclasses
import os

from core import tensorboard
from core.fileio import CSVLog

# The flag (its ``args`` attribute) that turns each optional sink on.
OPTIONAL = {"tensorboard": tensorboard.TensorBoard}


@dataclasses.dataclass
class EpochRecord:
    """One epoch of a run. ``values``: every numeric column as a float (main's numbers, then the
    run's ``<part>_seconds``), in log order; ``images``: tag -> H x W x 3 uint8 image (P2's
    snapshot masks); ``images_per_second``: the training speed of the epoch line."""
    epoch: int
    phase: str
    values: dict
    is_best: bool
    images_per_second: float
    images: dict = dataclasses.field(default_factory=dict)


def csv_cell(column, value):
    """A value as ``log.csv`` writes it: the learning rate to 6 significant digits, seconds to
    hundredths, every other number to 6 decimals."""
    if column == "lr":
        return f"{value:.6g}"
    return f"{value:.2f}" if column.endswith("_seconds") else f"{value:.6f}"


class Console:
    """The epoch line on stdout: phase, learning rate, ``columns`` to 4 decimals, "(best)", and the
    training speed with ``rate_digits`` decimals."""

    def __init__(self, columns, rate_digits):
        self.columns, self.rate_digits = columns, rate_digits

    def write(self, record):
        shown = " ".join(f"{c} {record.values[c]:.4f}" for c in self.columns)
        print(f"epoch {record.epoch}: {record.phase} lr {record.values['lr']:.3g} {shown}"
              f"{' (best)' if record.is_best else ''} [{record.images_per_second:.{self.rate_digits}f} img/s]",
              flush=True)

    def close(self):
        pass


class CSVFile:
    """``log.csv``: ``epoch``, ``phase``, then the record's columns (``csv_cell``). A resumed run
    keeps the rows up to ``saved_epoch``; the file is read now, before any epoch."""

    def __init__(self, path, saved_epoch=0):
        self.log = CSVLog(path, resume_epoch=saved_epoch)

    def write(self, record):
        row = {"epoch": record.epoch, "phase": record.phase,
               **{c: csv_cell(c, v) for c, v in record.values.items()}}
        self.log.append(row)  # an OSError names log.csv, not its temporary file (fileio.atomic_write_bytes)

    def close(self):
        pass


def check(args):
    """Refuse an optional sink whose package is missing (before any file or data is touched)."""
    for flag, sink in OPTIONAL.items():
        if getattr(args, flag, False):
            sink.check(args.output_dir)


def open_sinks(args, saved_epoch, line_columns, rate_digits):
    """The sinks of a run into ``args.output_dir``: the epoch line, ``log.csv``, and the optional
    sinks its flags turn on."""
    folder = args.output_dir
    return [Console(line_columns, rate_digits), CSVFile(os.path.join(folder, "log.csv"), saved_epoch)] + \
        [sink(folder, saved_epoch) for flag, sink in OPTIONAL.items() if getattr(args, flag, False)]


def remove(folder):
    """Remove the files every optional sink wrote into the run ``folder`` (``--overwrite``)."""
    for sink in OPTIONAL.values():
        sink.remove(folder)
