"""Image files: listing a folder and decoding one image, with errors that name the file.

An entry named like an image that is not a regular file (a folder, FIFO, socket, device) is
listed and then refused by name before it is opened (opening a FIFO would block forever);
macOS metadata from a zip (``._*``, ``__MACOSX/``) is never listed, with one warning per folder.

Large scenes: PIL's decompression-bomb guard is set to ``MAX_PIXELS`` (20000 x 20000, more
than a DeepGlobe original of 2448 x 2448 or a 14000 x 14000 mosaic); a larger image is refused
with a ``DataError`` naming it before any pixel is decoded.
"""
import errno
import functools
import os
import stat
import sys
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.cli import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_SIDE = 20000
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; read_rgb refuses above it itself.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
STRIP_PIXELS = 1 << 22  # pixels copied out of PIL's buffer at a time (see read_rgb)


def one_line(text):
    """``text`` with control characters (a newline in a file name) escaped, so that each
    problem stays on one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def format_problems(header, problems, limit=20):
    """A header line and one indented line per problem (at most ``limit``)."""
    lines = [one_line(header)] + [f"  {one_line(p)}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def is_macos_metadata(name):
    """``._<name>`` (AppleDouble resource forks) and ``__MACOSX`` (their folder), which a zip
    made on macOS carries beside every file: never images."""
    return name.startswith("._") or name == "__MACOSX"


@functools.cache
def _warn_macos(real, folder, names):
    """One warning per folder and process, however often the folder is listed."""
    print(f"warning: {folder}: ignoring {len(names)} macOS metadata entr{'y' if len(names) == 1 else 'ies'} "
          f"(._* files, __MACOSX/; not images): {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}",
          file=sys.stderr)


def list_dir(folder):
    """Sorted names of the entries of ``folder`` that may be inputs: plain files, dangling
    symbolic links, and anything else named like an image (a folder, FIFO, socket or device
    called ``x.png``), so that ``read_rgb`` reports such an entry by name rather than it being
    silently skipped. Other sub-folders are left out; macOS metadata (``._*``, ``__MACOSX/``)
    is left out with one warning. DataError if the folder is missing or not a folder."""
    if not folder:
        raise DataError("empty folder name")
    if not os.path.exists(folder):
        raise DataError(f"{folder}: no such folder")
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise DataError(f"{folder}: cannot list ({e.strerror})") from None
    mac = tuple(sorted(n for n in names if is_macos_metadata(n)))
    if mac:
        _warn_macos(os.path.realpath(folder), folder, mac)
    return sorted(n for n in names if not is_macos_metadata(n) and (
        not os.path.isdir(os.path.join(folder, n)) or n.lower().endswith(IMAGE_EXTS)))


def warn_ignored(folder, names):
    if names:
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        print(f"warning: {folder}: ignoring {len(names)} file(s) that are not inputs: {shown}", file=sys.stderr)


def _unreadable(path, e):
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return DataError(f"{path}: not a readable image (symbolic link loop through {os.readlink(path)})")
        return DataError(f"{path}: not a readable image (dangling symbolic link to {os.readlink(path)})")
    if isinstance(e, Image.DecompressionBombError):
        return DataError(f"{path}: not a readable image (more than {2 * MAX_PIXELS} pixels; at most "
                         f"{MAX_SIDE}x{MAX_SIDE} = {MAX_PIXELS} pixels are read)")
    reason = "empty file" if os.path.isfile(path) and os.path.getsize(path) == 0 else f"{type(e).__name__}: {e}"
    return DataError(f"{path}: not a readable image ({reason})")


def _not_a_file(path):
    """The kind of ``path`` when it exists but is not a regular file (after links), else None.
    Opening a FIFO would block forever, so this is checked before any ``open``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or a dangling link: open() reports it
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _open(path):
    """``Image.open`` with the size guard; the caller closes the image."""
    kind = _not_a_file(path)
    if kind:
        raise DataError(f"{path}: not a readable image ({kind}, not a file)")
    with warnings.catch_warnings():  # between MAX_PIXELS and 2x PIL only warns; refused below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise DataError(f"{path}: {w}x{h} image refused: at most {MAX_SIDE}x{MAX_SIDE} = {MAX_PIXELS} pixels "
                        "are read (decompression-bomb guard)")
    return img


READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def image_size(path):
    """(width, height) from the header only; DataError if the file is not a readable image."""
    try:
        with _open(path) as img:
            return img.size
    except READ_ERRORS as e:
        if isinstance(e, DataError):
            raise
        raise _unreadable(path, e) from None


def _to_array(img):
    """H x W x 3 uint8 copy of an RGB (or L) PIL image, copied in strips of rows.

    ``np.asarray(img)`` would go through ``img.tobytes()``, a second full copy (and a third
    while its chunks are joined); strips keep the peak at PIL's buffer plus the result.
    """
    w, h = img.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        strip = np.asarray(img.crop((0, y, w, min(h, y + rows))))
        out[y:y + rows] = strip[..., None] if strip.ndim == 2 else strip
    return out


def read_rgb(path):
    """Decode ``path`` to an ``H x W x 3`` uint8 array.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted (alpha dropped, 16-bit
    scaled to 8-bit); pixels are read as stored (no EXIF rotation, as the course grader).
    An unreadable, empty, truncated or oversized file, or a dangling link, raises DataError
    naming it.
    """
    try:
        with _open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.uint32)
                arr = (arr >> 8).clip(0, 255).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            return _to_array(img)
    except READ_ERRORS as e:
        if isinstance(e, DataError):
            raise
        raise _unreadable(path, e) from None
