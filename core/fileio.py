"""Atomic file writes, the one background writer (``AsyncWriter``), and the record of which
files a script wrote (``WrittenFiles``).

Every file this repo writes (checkpoints, ``log.csv``, ``args.json``, figures, masks, CSVs) goes
through ``atomic_write_bytes``: a temporary file in the same folder, fsync, rename. A reader, a
crash or a full disk never leaves a truncated file under the real name.

The temporary name is short and random (``.tmp-<16 hex>``, see ``temporary_name``), so it fits
the file-name limit whatever the real name's length and never collides with a leftover of a
killed process; it is removed after any error, and every error names the real path, never
the temporary one.
"""
import contextlib
import csv
import errno
import io
import json
import os
import re
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor


TMP_PREFIX = ".tmp-"
ORPHAN_AGE = 3600  # seconds: a temporary file this old belongs to no live writer


def temporary_name(folder, suffix=""):
    """A fresh temporary path in ``folder``: 21 characters plus ``suffix``, whatever the name it
    stands for (a user's 255-byte name has no room for ``.<name>.tmp<pid>``)."""
    return os.path.join(folder, f"{TMP_PREFIX}{secrets.token_hex(8)}{suffix}")


def is_temporary(name):
    """Whether ``name`` is one of ``temporary_name``'s names (of this or a killed process)."""
    return bool(re.fullmatch(re.escape(TMP_PREFIX) + r"[0-9a-f]{16}(\.[a-z]+)?", name))


def remove_orphans(folder, names, age=ORPHAN_AGE):
    """Remove the temporary files among ``names`` of ``folder`` older than ``age`` seconds:
    left by a killed process (a live writer's are seconds old). Returns the names left."""
    left = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            if time.time() - os.lstat(path).st_mtime > age:
                os.remove(path)
                continue
        except OSError:
            pass
        left.append(name)
    return left


def naming(e, path):
    """``e`` (an OSError) as one naming ``path``: a failed write, fsync or rename of a temporary
    file reports the user's file, not the temporary name (or no name at all)."""
    return OSError(e.errno, e.strerror or str(e), path)  # the subclass of the errno (FileNotFoundError, ...)


@contextlib.contextmanager
def removed_on_error(tmp, path):
    """Remove ``tmp`` if the block fails (any exception, Ctrl-C included); an OSError is
    re-raised naming ``path``."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise naming(e, path) from None
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, "not a folder (a file is in the way)", folder) from None
    except OSError as e:
        raise naming(e, folder) from None
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
    tmp = temporary_name(folder)
    with removed_on_error(tmp, path):
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    with contextlib.suppress(OSError):  # persist the rename itself
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_matching(folder, pattern):
    """Remove the files of ``folder`` whose names match ``pattern`` (a compiled regex), then the
    folder when that leaves it empty: what a run wrote there, and nothing a user put beside it.
    A link is never followed or removed."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if pattern.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
    if not os.listdir(folder):
        os.rmdir(folder)


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def csv_bytes(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode(errors="surrogateescape")  # a file name that is not UTF-8 keeps its bytes


def write_csv(path, header, rows):
    """A CSV with ``header`` and ``rows`` (sequences), written atomically."""
    atomic_write_bytes(path, csv_bytes(header, rows))


def read_csv(path):
    """The rows of a CSV file as dicts of strings; a UTF-8 byte-order mark and CRLF line ends
    (a CSV re-saved by a spreadsheet) read as the plain file would, and bytes that are not
    UTF-8 (a file name in another encoding) as ``os.listdir`` names them."""
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


class CSVLog:
    """``log.csv`` with fixed columns (``fields``, or the first row's keys); the whole file is
    rewritten atomically on every row, so it is never left truncated, and a resumed run keeps
    the rows of the epochs it kept."""

    def __init__(self, path, fields=None, resume_epoch=None):
        self.path, self.fields, self.rows = path, fields and list(fields), []
        if resume_epoch is not None and os.path.exists(path):
            self.rows = [r for r in read_csv(path) if int(r["epoch"]) <= resume_epoch]

    def append(self, row):
        self.fields = self.fields or list(row)
        self.rows.append(dict(row))
        write_csv(self.path, self.fields, [[r.get(k, "") for k in self.fields] for r in self.rows])


def file_id(path):
    """``[size, mtime_ns, inode]`` of ``path`` (not following a link): every write here is a
    rename, so a file rewritten by anyone else, even to the same bytes, gets another id."""
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class WrittenFiles:
    """Which files of a folder a script wrote itself, so that running it again replaces those and
    nothing a user owns (ground truth, a training log, a spreadsheet).

    ``<folder>/<marker>`` maps each name the script wrote to its ``file_id``, or to null: claimed
    before the write, so a run killed mid-write is still known as the file's writer. A file that
    changed since is no longer ours. ``claim`` marks every name a run will write with one save
    before the first is written; ``finish`` records the ones written and hands the others back
    as they were, except one that changed meanwhile (a write in flight when the run stopped),
    which stays claimed. A record of ``p2_test.py`` from before this class (``"masks"`` for
    ``"files"``) reads as one of its own.
    """

    def __init__(self, folder, marker, writer):
        self.folder, self.path, self.writer = folder, os.path.join(folder, marker), writer
        self.records = self._read()
        self.claimed = {}  # name -> (had a record, that record, its file_id when claimed or None)

    def _read(self):
        if os.path.lexists(self.path) and not os.path.isfile(self.path):  # a FIFO would block open()
            print(f"warning: {self.path}: not a file; the files already there count as not written by "
                  f"{self.writer}", file=sys.stderr)
            return {}
        try:
            with open(self.path) as f:
                record = json.load(f)
            files = record["files"] if "files" in record else record["masks"]  # "masks": p2_test.py's first format
            return {str(n): r for n, r in files.items() if r is None or (isinstance(r, list) and len(r) == 3)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            print(f"warning: {self.path}: unreadable record of earlier runs; the files they wrote count as not "
                  f"written by {self.writer}", file=sys.stderr)
            return {}

    def _id(self, name):
        """``file_id`` of ``name``, None when there is none (missing, or a name over the file-name limit)."""
        try:
            return file_id(os.path.join(self.folder, name))
        except OSError:
            return None

    def wrote(self, name):
        """True when ``name`` is as this script left it (or was claimed by a run that may have written it)."""
        if name not in self.records:
            return False
        now = self._id(name)
        return now is not None and self.records[name] in (None, now)

    def _save(self):
        # a file that is gone is dropped (a user's new file of that name is the user's), unless claimed now
        live = {n: r for n, r in self.records.items()
                if n in self.claimed or os.path.lexists(os.path.join(self.folder, n))}
        write_json(self.path, {"written_by": self.writer, "files": live})

    def claim(self, names):
        """Mark ``names`` as this run's before any is written (one save)."""
        for n in names:
            if n not in self.claimed:
                self.claimed[n] = (n in self.records, self.records.get(n), self._id(n))
            self.records[n] = None
        self._save()

    def finish(self, written):
        """Record ``written`` (name -> ``file_id`` taken right after the write) and release the other
        claimed names: a missing one is dropped, one that changed since the claim stays claimed, any
        other goes back to its record before the claim (one save)."""
        for n, (had, before, found) in self.claimed.items():
            now = self._id(n)
            if n in written:
                self.records[n] = written[n]
            elif now is None or (now == found and not had):
                self.records.pop(n, None)
            elif now == found:
                self.records[n] = before
        self.claimed = {}
        self._save()


class AsyncWriter:
    """Runs a list of write jobs in a background thread, one list at a time, in order: the
    checkpoints and log row of an epoch (``checkpoint.submit_epoch``) while the next epoch
    trains, a mask (``p2_test.py``) while the next image is predicted.

    ``submit`` first waits for the previous list, so at most one list is in flight; ``wait``
    re-raises the first error of a list (e.g. a full disk) in the caller's thread; ``close``
    waits, then ends the thread. Jobs should write atomically: a job that fails leaves the
    previous file whole, and the jobs after it in the list (e.g. the log row after the
    checkpoint) are not run. Waiting is on a future, not ``Thread.join``: on Python < 3.13 a
    join interrupted by Ctrl-C marks the still-running thread as stopped, and its write would
    be cut off at exit.
    """

    def __init__(self, name="background-writer"):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.pending = None

    @staticmethod
    def _run(jobs):
        for job in jobs:
            job()

    def submit(self, jobs):
        self.wait()
        self.pending = self.pool.submit(self._run, list(jobs))

    def wait(self):
        if self.pending is not None:
            pending, self.pending = self.pending, None
            try:
                pending.result()
            except KeyboardInterrupt:
                self.pending = pending  # still in flight: a later wait() finishes it
                raise

    def close(self):
        try:
            self.wait()
        finally:
            self.pool.shutdown()
