"""Decoded-data cache: a folder's images decoded once into uint8 arrays on disk.

The key is a hash of the folder's absolute path and every source file's name, size and
mtime, so touching, adding or removing a file makes a new key (the stale entry is removed).
Entries are ``.npy`` files opened as memmaps, written to a temporary name and renamed, so an
interrupted build never leaves a complete-looking entry; the ``.json`` written last records
each array's shape and dtype.

The cache is never a reason to fail. An entry that does not match its record (a truncated
``.npy``, a garbage header, an empty or unreadable ``.json``) is named in a warning and built
again. A cache that cannot be written (a full disk, a read-only folder) is named in a
warning; the arrays are then used from memory and no partial file is left behind. A
temporary file left by a killed build is removed by a later build an hour on.
"""
import contextlib
import hashlib
import json
import os
import sys

import numpy as np

from core.cli import error_message
from core.fileio import is_temporary, naming, remove_orphans, removed_on_error, temporary_name


def fingerprint(root, names, tag):
    h = hashlib.sha1(f"{tag}\n{os.path.abspath(root)}\n".encode())
    for name in names:
        st = os.stat(os.path.join(root, name))
        h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class _Chunks:
    """A file seen by ``np.save`` as a plain writer: it then writes in chunks with ``write``,
    whose full-disk error carries ``errno`` (``ndarray.tofile`` raises a bare OSError)."""

    def __init__(self, f):
        self.write = f.write


def _atomic_save(path, arr):
    tmp = temporary_name(os.path.dirname(path), ".npy")
    with removed_on_error(tmp, path):
        with open(tmp, "xb") as f:
            np.save(_Chunks(f), arr)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _atomic_json(path, obj):
    tmp = temporary_name(os.path.dirname(path))
    with removed_on_error(tmp, path):
        with open(tmp, "x") as f:
            json.dump(obj, f)
        os.replace(tmp, path)


def _load(prefix):
    """The arrays of a complete entry as read-only memmaps; ValueError saying what is damaged."""
    meta_path = prefix + ".json"
    try:
        with open(meta_path) as f:
            fields = json.load(f)["fields"]
        expected = {str(k): (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in fields.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{meta_path}: unreadable record ({type(e).__name__}: {e})") from None
    arrays = {}
    for k, (shape, dtype) in expected.items():
        path = f"{prefix}.{k}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(f"{path}: holds {arr.dtype} {arr.shape}, its record says {dtype} {shape}")
        arrays[k] = arr
    return arrays


def _remove_leftovers(cache_dir, tag, key):
    """Drop stale entries of the same folder and tag, and the temporary files of builds that
    died (``core.fileio.remove_orphans``)."""
    names = os.listdir(cache_dir)
    for old in names:
        if old.startswith(f"{tag}-") and not old.startswith(f"{tag}-{key}"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cache_dir, old))
    remove_orphans(cache_dir, [n for n in names if is_temporary(n)])


def cached_arrays(cache_dir, root, names, tag, build):
    """Return ``{name: array}`` for ``root``'s files, from cache or via ``build() -> {name: array}``.

    Arrays come back as read-only memmaps when cached, as ``build`` returned them when the
    cache cannot be written.
    """
    key = fingerprint(root, names, tag)
    prefix = os.path.join(cache_dir, f"{tag}-{key}")
    meta_path = prefix + ".json"
    if os.path.exists(meta_path):
        try:
            return _load(prefix)
        except ValueError as e:
            print(f"warning: damaged decoded-image cache entry for {root}: {e}; building it again", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.remove(meta_path)  # the entry is incomplete until it is written again
    arrays = build()
    written = []
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _remove_leftovers(cache_dir, tag, key)
        for k, arr in arrays.items():  # replaces the pieces of a damaged entry or an interrupted build
            written.append(f"{prefix}.{k}.npy")
            _atomic_save(written[-1], arr)
        fields = {k: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for k, arr in arrays.items()}
        # the record is written last: it marks the entry complete
        _atomic_json(meta_path, {"root": os.path.abspath(root), "n": len(names), "fields": fields})
        return _load(prefix)
    except (OSError, ValueError) as e:
        for path in written:  # the disk is full: free what this build took
            with contextlib.suppress(OSError):
                os.remove(path)
        if isinstance(e, OSError) and e.filename is None:
            e = naming(e, cache_dir)
        print(f"warning: --cache-dir {cache_dir}: cannot write the decoded-image cache ({error_message(e)}); "
              f"using the decoded arrays from memory", file=sys.stderr)
        return arrays


def cache_tag(root, kind):
    """A file-name-safe tag per source folder, so two folders never evict each other."""
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:8]
    return f"{kind}-{digest}"
