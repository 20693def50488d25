"""Atomic file writes.

Every file this repo writes (checkpoints, ``log.csv``, ``args.json``, figures, masks, CSVs) goes
through ``atomic_write_bytes``: a temporary file in the same folder, fsync, rename. A reader, a
crash or a full disk never leaves a truncated file under the real name.
"""
import contextlib
import csv
import io
import json
import os


def atomic_write_bytes(path, data):
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    with contextlib.suppress(OSError):  # persist the rename itself
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def csv_bytes(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_csv(path, header, rows):
    """A CSV with ``header`` and ``rows`` (sequences), written atomically."""
    atomic_write_bytes(path, csv_bytes(header, rows))


def read_csv(path):
    """The rows of a CSV file as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CSVLog:
    """``log.csv`` with fixed columns; the whole file is rewritten atomically on every row,
    so it is never left truncated, and a resumed run keeps the rows of the epochs it kept."""

    def __init__(self, path, fields, resume_epoch=None):
        self.path, self.fields, self.rows = path, list(fields), []
        if resume_epoch is not None and os.path.exists(path):
            self.rows = [{k: r.get(k, "") for k in self.fields} for r in read_csv(path)
                         if int(r["epoch"]) <= resume_epoch]

    def append(self, row):
        self.rows.append({k: row.get(k, "") for k in self.fields})
        write_csv(self.path, self.fields, [[r[k] for k in self.fields] for r in self.rows])
