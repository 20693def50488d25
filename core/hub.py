"""Default checkpoints that fetch themselves: the manifest of published checkpoints, the download.

    python -m core.hub add p2_fcn8s_best.pt runs/p2_fcn8s/best.pt --url https://example.org/p2_fcn8s_best.pt
    python -m core.hub verify          # sha256 of every default checkpoint present, against the manifest
    python -m core.hub fetch           # download every missing default checkpoint now
    python -m core.hub export-fp16 runs/p2_fcn8s/best.pt runs/p2_fcn8s/best_fp16.pt   # half the size

The grading scripts load a default checkpoint (``DEFAULTS``: ``checkpoints/p1_best.pt``,
``checkpoints/p2_fcn32s_best.pt``, ``checkpoints/p2_fcn8s_best.pt``) unless a checkpoint is
given (``--checkpoint``, ``$P1_CKPT``, ``$P2_CKPT``: never downloaded). When the default file is
missing and the manifest, ``checkpoints/manifest.json`` (tracked in git), names it, it is
downloaded with ``torch.hub.download_url_to_file`` (a progress bar on a terminal only) to a
temporary file beside it, checked against the manifest's size and sha256, and renamed into
place: a failed, cut-off or tampered download leaves nothing behind and stops with one line
naming the URL and the file. A file already in place is used as it is (``verify`` checks it).

``add`` writes the manifest entry of a trained run's ``best.pt`` (its sha256, size, model,
epoch and score) for the URL it will be published at; upload that file, byte for byte, there.
``$HW2_CHECKPOINT_DIR`` replaces the ``checkpoints/`` folder and ``$HW2_MANIFEST`` the manifest
(the tests point both at temporary copies and a server on 127.0.0.1).
"""
import argparse
import contextlib
import hashlib
import http.client
import json
import os
import socket
import sys
import urllib.error
import urllib.parse

import torch

from core import checkpoint, cli
from core.checkpoint import CheckpointError
from core.fileio import temporary_name, write_json

FORMAT = "dlcv-hw2-manifest"
VERSION = 1
# The default checkpoint of each model: (problem, file name in the checkpoint folder, grading script).
DEFAULTS = {"classifier": ("p1", "p1_best.pt", "hw2_1.sh / hw2_p1.sh"),
            "fcn32s": ("p2", "p2_fcn32s_best.pt", "hw2_2.sh"),
            "fcn8s": ("p2", "p2_fcn8s_best.pt", "hw2_2_best.sh / hw2_p2.sh")}
BY_NAME = {name: model for model, (_, name, _) in DEFAULTS.items()}
# The model each problem grades when none is named (hw2_p1.sh, hw2_p2.sh).
DEFAULT_MODEL = {"p1": "classifier", "p2": "fcn8s"}
TIMEOUT_S = 60  # a stalled server fails the download instead of hanging the grading
URL_SCHEMES = ("http", "https", "file")


def checkpoint_dir():
    return os.environ.get("HW2_CHECKPOINT_DIR") or os.path.join(cli.REPO, "checkpoints")


def manifest_path():
    return os.environ.get("HW2_MANIFEST") or os.path.join(cli.REPO, "checkpoints", "manifest.json")


def default_path(model):
    return os.path.join(checkpoint_dir(), DEFAULTS[model][1])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path=None):
    """name -> {url, sha256, size, ...}; {} when the manifest file does not exist."""
    path = path or manifest_path()
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint manifest ({getattr(e, 'strerror', None) or e})") from None
    entries = data.get("checkpoints") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{path}: not a checkpoint manifest of this repo (format {FORMAT!r})")
    for name, e in entries.items():
        ok = (isinstance(e, dict) and isinstance(e.get("url"), str) and isinstance(e.get("sha256"), str)
              and len(e["sha256"]) == 64 and isinstance(e.get("size"), int) and e["size"] > 0)
        if not ok:
            raise CheckpointError(f"{path}: entry {name!r} needs a url, a 64-digit sha256 and a size in bytes")
    return entries


def download(url, dst, sha256, size, progress=None):
    """Download ``url`` to ``dst`` through a temporary file beside it, checked against ``size`` and
    ``sha256`` before the rename; CheckpointError naming both otherwise, and nothing left behind."""
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = temporary_name(folder, ".download")
    progress = sys.stderr.isatty() if progress is None else progress
    print(f"downloading {url} to {dst} ({size / 2 ** 20:.1f} MiB)", file=sys.stderr, flush=True)
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)  # download_url_to_file's urlopen takes no timeout of its own
    try:
        try:
            os.makedirs(folder, exist_ok=True)
            torch.hub.download_url_to_file(url, tmp, progress=progress)
        except urllib.error.HTTPError as e:
            raise CheckpointError(f"{dst}: cannot download {url}: HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            reason = getattr(e.reason, "strerror", None) or e.reason
            raise CheckpointError(f"{dst}: cannot download {url}: {reason} (offline? copy the file there "
                                  "by hand, or give a checkpoint with --checkpoint)") from None
        except (OSError, http.client.HTTPException) as e:  # timeout, connection reset, disk full
            raise CheckpointError(f"{dst}: cannot download {url}: "
                                  f"{getattr(e, 'strerror', None) or e or type(e).__name__}") from None
        got = os.path.getsize(tmp)
        if got != size:
            raise CheckpointError(f"{dst}: the download from {url} has {got} bytes, the manifest says {size}: "
                                  "cut off or replaced; nothing was kept")
        digest = sha256_file(tmp)
        if digest != sha256:
            raise CheckpointError(f"{dst}: the download from {url} has sha256 {digest}, the manifest says "
                                  f"{sha256}: refused and deleted")
        os.replace(tmp, dst)
    finally:
        socket.setdefaulttimeout(timeout)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    print(f"verified sha256 {sha256[:16]}... of {dst}", file=sys.stderr, flush=True)
    return dst


def ensure(model, progress=None):
    """The default checkpoint of ``model``, downloaded first when it is missing and the manifest names it."""
    path = default_path(model)
    if os.path.lexists(path):
        return path
    name = DEFAULTS[model][1]
    entry = read_manifest().get(name)
    if entry is None:
        problem = DEFAULTS[model][0]
        raise CheckpointError(f"{path}: checkpoint not found, and {manifest_path()} names no download for {name}: "
                              f"copy a trained run's best.pt there, or give one with --checkpoint / "
                              f"${problem.upper()}_CKPT")
    return download(entry["url"], path, entry["sha256"], entry["size"], progress)


def graded_models(problem):
    """The models of ``problem`` that have a default checkpoint (``p2_test.py --model`` choices)."""
    return [model for model, (p, _, _) in DEFAULTS.items() if p == problem]


def grading_checkpoint(given, model):
    """The checkpoint to grade with: ``given`` (``--checkpoint`` or ``$P?_CKPT``) as it is, never
    downloaded; else ``model``'s default checkpoint (``ensure``)."""
    return given if given else ensure(model)


def expect_model(ckpt, path, model):
    """CheckpointError when ``ckpt`` (loaded from ``path``) holds another model than ``model``."""
    if ckpt["model_name"] != model:
        raise CheckpointError(f"{path}: holds {ckpt['model_name']}, but {model} is to be graded "
                              f"(--model {model}; {DEFAULTS[model][2]} grades {model})")


# --------------------------------------------------------------------------- the command


def add(name, source, url, manifest=None):
    """Write ``name``'s manifest entry for the inference checkpoint ``source`` published at ``url``."""
    if name not in BY_NAME:
        raise cli.UserError(f"{name}: not a default checkpoint; expected one of {', '.join(BY_NAME)}")
    if urllib.parse.urlsplit(url).scheme not in URL_SCHEMES:
        raise cli.UserError(f"--url {url}: expected an {', '.join(URL_SCHEMES)} URL")
    model = BY_NAME[name]
    ckpt = checkpoint.load(source, DEFAULTS[model][0])
    if ckpt["kind"] != "inference":
        raise CheckpointError(f"{source}: is a training checkpoint (last.pt, with the optimizer state); publish "
                              "the run's best.pt")
    expect_model(ckpt, source, model)
    manifest = manifest or manifest_path()
    entries = read_manifest(manifest)
    meta = ckpt["meta"]
    entries[name] = {"url": url, "sha256": sha256_file(source), "size": os.path.getsize(source), "model": model,
                     "epoch": meta.get("epoch"), "score": meta.get("val_miou", meta.get("val_acc"))}
    write_json(manifest, {"format": FORMAT, "version": VERSION, "checkpoints": entries})
    print(f"{manifest}: {name} -> {url} (sha256 {entries[name]['sha256'][:16]}..., {entries[name]['size']} bytes)")
    print(f"now upload {source} as it is to {url}, and commit {manifest}")


def export_fp16(source, dest):
    """Write the inference checkpoint of ``source`` with float16 weights to ``dest`` (a new file)."""
    if os.path.lexists(dest):
        raise cli.UserError(f"{dest}: exists; choose a new file for the fp16 export")
    ckpt = checkpoint.load(source)
    checkpoint.save(checkpoint.half_weights(ckpt, source), dest)
    print(f"wrote {dest}: {os.path.getsize(dest) / 2 ** 20:.1f} MiB ({source}: {os.path.getsize(source) / 2 ** 20:.1f} MiB)")


def verify():
    """Check every default checkpoint present against the manifest; the number of mismatches."""
    entries, bad = read_manifest(), 0
    for model in DEFAULTS:
        path, name = default_path(model), DEFAULTS[model][1]
        entry = entries.get(name)
        if not os.path.exists(path):
            state = "missing (downloaded on first use)" if entry else "missing, no manifest entry"
        elif entry is None:
            state = "present, no manifest entry"
        else:
            ok = os.path.getsize(path) == entry["size"] and sha256_file(path) == entry["sha256"]
            bad += not ok
            state = "matches the manifest" if ok else "differs from the manifest (a local file is used as it is)"
        print(f"{path}: {state}")
    return bad


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.command == "add":
        add(args.name, args.source, args.url)
    elif args.command == "export-fp16":
        export_fp16(args.source, args.dest)
    elif args.command == "verify":
        return 1 if verify() else 0
    else:
        for name in args.names or list(BY_NAME):
            if name not in BY_NAME:
                raise cli.UserError(f"{name}: not a default checkpoint; expected one of {', '.join(BY_NAME)}")
            print(ensure(BY_NAME[name]))
    return 0


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(prog="python -m core.hub", description=__doc__, add_help=add_help,
                                formatter_class=cli.HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="write a manifest entry from a trained run's best.pt")
    a.add_argument("name", choices=list(BY_NAME), help="the default checkpoint it becomes")
    a.add_argument("source", help="the run's best.pt (uploaded as it is)")
    a.add_argument("--url", required=True, help="where the file will be published")
    e = sub.add_parser("export-fp16", help="a copy of a checkpoint with float16 weights (half the size)")
    e.add_argument("source", help="best.pt or last.pt")
    e.add_argument("dest", help="the new file")
    sub.add_parser("verify", help="compare the default checkpoints present with the manifest")
    f = sub.add_parser("fetch", help="download the missing default checkpoints now")
    f.add_argument("names", nargs="*", help="default checkpoints to fetch (all when none)")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(CheckpointError,)))
