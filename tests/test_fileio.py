"""Atomic files and the CSV log (core/fileio.py)."""
import errno
import os

import pytest

from core import fileio


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    fileio.atomic_write_bytes(str(path), b"old contents\n")

    class HalfWritten:
        """A file that writes half the bytes, then hits a full disk."""

        def __init__(self, name, mode):
            self.f = open(name, mode)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    name = str(path)
    monkeypatch.setattr(fileio, "open", HalfWritten, raising=False)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write_bytes(name, b"new contents that never fully arrive\n" * 100)
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents\n"
    assert os.listdir(tmp_path) == ["log.csv"]

    def no_fsync(fd):  # the crash lands after every byte, before the rename
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="I/O error"):
        fileio.write_csv(name, ["epoch"], [[1], [2]])
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents\n" and os.listdir(tmp_path) == ["log.csv"]


def test_csv_log_keeps_rows_up_to_resume_epoch(tmp_path):
    path = str(tmp_path / "log.csv")
    log = fileio.CSVLog(path, ["epoch", "loss"])
    for e in (1, 2, 3):
        log.append({"epoch": e, "loss": 0.1 * e})
    resumed = fileio.CSVLog(path, ["epoch", "loss"], resume_epoch=2)
    resumed.append({"epoch": 3, "loss": 9})
    assert [(r["epoch"], r["loss"]) for r in fileio.read_csv(path)] == [("1", "0.1"), ("2", "0.2"), ("3", "9")]
    fresh = fileio.CSVLog(path, ["epoch", "loss"])  # a new run starts an empty log
    fresh.append({"epoch": 1, "loss": 5})
    assert len(fileio.read_csv(path)) == 1
