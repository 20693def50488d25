"""The TensorBoard sink (``--tensorboard``): each epoch's numeric columns as scalars (the tag is the
``log.csv`` column, the step the epoch) and P2's snapshot masks as images, in event files under
``<run>/tensorboard/`` (view with ``tensorboard --logdir runs/``).

``tensorboard`` is an optional package (``requirements-optional.txt``): without it
``--tensorboard`` stops with one line before the run touches a file or reads any data.
A resumed run continues the curves: its writer drops the events of the epochs from the first
resumed one on (SummaryWriter's ``purge_step``), so each epoch shows once, as in ``log.csv``.
``--overwrite`` removes the event files (``events.out.tfevents.*``) and the folder when that
leaves it empty; a user's own file there stays.
"""
import os
import re

from core.cli import UserError
from core.fileio import remove_matching

FOLDER = "tensorboard"
EVENT_FILE = re.compile(r"events\.out\.tfevents\..+")  # SummaryWriter's names for its files


class TensorBoard:
    """A ``core.sinks`` sink writing to ``<folder>/tensorboard/``; ``saved_epoch``: the epoch a
    resumed run continues after (0 for a new run)."""

    def __init__(self, folder, saved_epoch=0):
        self.folder = os.path.join(folder, FOLDER)
        self.purge_step = saved_epoch + 1 if saved_epoch else None
        self.writer = None  # opened with the first record: a run that stops before it leaves no file

    @staticmethod
    def check(folder):
        """Refuse ``--tensorboard`` for a run into ``folder`` without the package (naming the install
        command), or with a file where its folder should be."""
        try:
            import tensorboard  # noqa: F401  (the package itself, which torch.utils.tensorboard wraps)
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
        board = os.path.join(folder, FOLDER)
        if os.path.lexists(board) and not os.path.isdir(board):
            raise UserError(f"{board}: is not a folder; --tensorboard writes its event files there (move it, or run "
                            "without --tensorboard)")

    @staticmethod
    def remove(folder):
        """Remove the event files of ``<folder>/tensorboard/``, and the folder if that leaves it empty."""
        remove_matching(os.path.join(folder, FOLDER), EVENT_FILE)

    def write(self, record):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.folder, purge_step=self.purge_step)
        for column, value in record.values.items():
            self.writer.add_scalar(column, value, record.epoch)
        for tag, image in record.images.items():
            self.writer.add_image(tag, image, record.epoch, dataformats="HWC")
        self.writer.flush()  # a run killed later keeps this epoch's curves

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
