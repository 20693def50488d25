"""Image files: listing a folder and decoding one image, with errors that name the file."""
import os
import sys

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data; the message names every offending file and what is wrong with it."""


def format_problems(header, problems, limit=20):
    lines = [header] + [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def list_dir(folder):
    """Sorted plain-file names of ``folder``; DataError if it is missing or not a folder."""
    if not os.path.exists(folder):
        raise DataError(f"{folder}: no such folder")
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    return sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f)))


def warn_ignored(folder, names):
    if names:
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        print(f"warning: {folder}: ignoring {len(names)} file(s) that are not inputs: {shown}", file=sys.stderr)


def image_size(path):
    """(width, height) from the header only; DataError if the file is not a readable image."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def read_rgb(path):
    """Decode ``path`` to an ``H x W x 3`` uint8 array.

    Grayscale, palette, RGBA and 16-bit images are converted (alpha dropped, 16-bit scaled
    to 8-bit); an unreadable or truncated file raises DataError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.uint32)
                arr = (arr >> 8).clip(0, 255).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
