"""Decoded-data cache: a folder's images decoded once into uint8 arrays on disk.

The key is a hash of the folder's absolute path and every source file's name, size and
mtime, so touching, adding or removing a file makes a new key (the stale entry is removed).
Entries are ``.npy`` files opened as memmaps, written to a temporary name and renamed, so an
interrupted build never leaves a complete-looking entry.
"""
import hashlib
import json
import os

import numpy as np


def fingerprint(root, names, tag):
    h = hashlib.sha1(f"{tag}\n{os.path.abspath(root)}\n".encode())
    for name in names:
        st = os.stat(os.path.join(root, name))
        h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _atomic_save(path, arr):
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)


def cached_arrays(cache_dir, root, names, tag, build):
    """Return ``{name: array}`` for ``root``'s files, from cache or via ``build() -> {name: array}``.

    Arrays come back as read-only memmaps when cached.
    """
    key = fingerprint(root, names, tag)
    prefix = os.path.join(cache_dir, f"{tag}-{key}")
    meta_path = prefix + ".json"
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            fields = json.load(f)["fields"]
        return {k: np.load(f"{prefix}.{k}.npy", mmap_mode="r") for k in fields}
    os.makedirs(cache_dir, exist_ok=True)
    for old in os.listdir(cache_dir):  # drop stale entries of the same folder and tag
        if old.startswith(f"{tag}-") and not old.startswith(f"{tag}-{key}"):
            os.remove(os.path.join(cache_dir, old))
    arrays = build()
    for k, arr in arrays.items():
        _atomic_save(f"{prefix}.{k}.npy", arr)
    tmp = f"{meta_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"root": os.path.abspath(root), "n": len(names), "fields": sorted(arrays)}, f)
    os.replace(tmp, meta_path)  # the meta file is written last: it marks the entry complete
    return {k: np.load(f"{prefix}.{k}.npy", mmap_mode="r") for k in arrays}


def cache_tag(root, kind):
    """A file-name-safe tag per source folder, so two folders never evict each other."""
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:8]
    return f"{kind}-{digest}"
