"""The report's output folder: where it may go, which files the tool owns (``.report-files.json``
with each file's sha256), the figures it holds, and the atomic write of everything."""
import hashlib
import json
import os
import tempfile

from core import cli
from core.fileio import atomic_write_bytes, write_json
from core.hub import sha256_file
from reporting.html import markdown_to_html

REPORT = "report.md"
REPORT_HTML = "report.html"  # --html: the same report, figures embedded
MANIFEST = ".report-files.json"  # what this tool wrote into --output, with each file's sha256
FIGURES = "figures"


def read_manifest(output):
    path = os.path.join(output, MANIFEST)
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        return {str(k): v for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def check_location(output, folders):
    """Refuse an ``--output`` that is not a folder, or is (or lies inside) one of the run folders
    (``folders``: ``[(flag, folder)]``)."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise cli.UserError(f"--output {output}: exists and is not a folder")
    out = os.path.realpath(output)
    for flag, given in folders:
        if given and os.path.isdir(given):
            folder = os.path.realpath(given)
            if out == folder or out.startswith(folder + os.sep):
                raise cli.UserError(f"--output {output}: is {'' if out == folder else 'inside '}the run folder "
                                    f"{given} (--{flag}); write the report into a folder of its own, "
                                    "e.g. --output runs/report")


def check_ownership(output, folders, planned, overwrite):
    """Refuse to write a planned file into a run folder, or over a file this tool did not write
    (or that changed since it wrote it) unless ``overwrite``. Returns the old manifest."""
    for flag, given in folders:
        if given and os.path.isdir(given):
            folder = os.path.realpath(given)
            clash = [p for p in planned if os.path.realpath(os.path.join(output, p)).startswith(folder + os.sep)]
            if clash:
                raise cli.UserError(f"--output {output}: {clash[0]} would land in the run folder {given} "
                                    f"(--{flag}); write the report into a folder of its own")
    manifest = read_manifest(output)
    foreign = []
    for name in planned:
        path = os.path.join(output, name)
        if os.path.lexists(path) and not (name in manifest and os.path.isfile(path) and not os.path.islink(path)
                                          and manifest[name] in (None, sha256_file(path))):
            foreign.append(path)
    if foreign and not overwrite:
        what = "was not written by report.py, or was edited since" if len(foreign) == 1 else \
            "were not written by report.py, or were edited since"
        raise cli.UserError(f"--output {output}: {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''} {what}; "
                            "move it away, choose another --output, or pass --overwrite to replace it")
    return manifest



class Figures:
    """The figures of the report: each is copied (or drawn) into ``figures/`` under a name the
    report links to; ``bytes`` holds the content until everything is checked and written."""

    def __init__(self):
        self.files = {}  # name under --output -> bytes

    def add(self, name, data):
        rel = f"{FIGURES}/{name}"
        self.files[rel] = data
        return rel

    def copy(self, name, path):
        with open(path, "rb") as f:
            return self.add(name, f.read())

    def draw(self, name, draw):
        """Draw into a temporary folder (the plotting functions write files), keep the bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            draw(path)
            return self.copy(name, path)



def write_output(output, text, figures, old_manifest, with_html):
    """Write the figures, then ``report.md`` (and ``report.html``), atomically; the manifest lists
    every file (and its hash) first as pending, so an interrupted write leaves nothing the next
    run would refuse."""
    files = dict(figures.files)
    files[REPORT] = text.encode()
    if with_html:
        files[REPORT_HTML] = markdown_to_html(text, figures.files, "DLCV Homework 2: report").encode()
    pending = {**old_manifest, **{name: None for name in files}}
    current = os.path.join(output, MANIFEST)
    try:
        write_json(current, {"files": pending})
        for name, data in files.items():
            current = os.path.join(output, name)
            atomic_write_bytes(current, data)
        for name, digest in old_manifest.items():  # figures of an earlier report that this one no longer has
            current = os.path.join(output, name)
            if name not in files and own_name(name) and os.path.isfile(current) and not os.path.islink(current) \
                    and digest in (None, sha256_file(current)):
                os.remove(current)
        current = os.path.join(output, MANIFEST)
        write_json(current, {"files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}})
    except OSError as e:  # named by the real file, not the temporary one beside it
        raise cli.UserError(f"{current}: cannot write ({cli.error_message(e).split(': ')[-1]})") from None


def own_name(name):
    """Whether ``name`` (from the manifest, which anyone can edit) is a file this tool writes."""
    return name in (REPORT, REPORT_HTML) or (name.startswith(FIGURES + "/") and os.path.normpath(name) == name
                                            and "/" not in name[len(FIGURES) + 1:])
