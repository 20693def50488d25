"""Atomic file writes, and the record of which files a script wrote (``WrittenFiles``).

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
import time


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


class WrittenFiles:
    """Which files of a folder a script wrote itself, so that running it again replaces those and
    nothing a user owns (ground truth, a training log, a spreadsheet).

    ``<folder>/<marker>`` maps each name the script wrote to its ``[size, mtime_ns, inode]`` (every
    write here is a rename, so a new inode), or to null: claimed before the write, so a run killed
    mid-write is still known as the file's writer. A file that changed since is no longer ours.
    """

    def __init__(self, folder, marker, writer):
        self.path, self.writer = os.path.join(folder, marker), writer
        self.records = self._read()

    def _read(self):
        try:
            with open(self.path) as f:
                files = json.load(f)["files"]
            return {str(n): r for n, r in files.items() if r is None or (isinstance(r, list) and len(r) == 3)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # an unreadable record owns nothing: every existing file counts as the user's

    def _stat(self, name):
        st = os.lstat(os.path.join(os.path.dirname(self.path), name))
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def wrote(self, name):
        """True when ``name`` is as this script left it (or was claimed by a run that may have written it)."""
        if name not in self.records:
            return False
        try:
            return self.records[name] is None or self.records[name] == self._stat(name)
        except FileNotFoundError:
            return False

    def _save(self):
        folder = os.path.dirname(self.path)
        live = {n: r for n, r in self.records.items() if r is None or os.path.lexists(os.path.join(folder, n))}
        write_json(self.path, {"written_by": self.writer, "files": live})

    def claim(self, name):
        self.records[name] = None
        self._save()

    def record(self, name):
        self.records[name] = self._stat(name)
        self._save()
