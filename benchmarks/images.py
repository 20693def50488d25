"""Synthetic images for the GPU and grading rows, made in parallel."""
import multiprocessing
import os
import shutil

import numpy as np
from PIL import Image

from benchmarks.row import TILE_SIZE
from datasets import class_to_rgb
from datasets.p2 import MASK_SUFFIX, SAT_SUFFIX
from datasets.synthetic import p2_tile


def dihedral(a, k):
    """The ``k``-th of the 8 flips/rotations of a square array (more distinct masks from few tiles)."""
    return np.rot90(a[:, ::-1] if k >= 4 else a, k % 4)


def write_tile(job):
    """Tile ``i`` from its own RNG stream ``(seed, i)``, so tiles can be made in any order and process;
    written as ``datasets.synthetic.generate`` writes them."""
    folder, i, seed = job
    image, classes = p2_tile(np.random.default_rng([seed, i]), TILE_SIZE)
    Image.fromarray(image).save(os.path.join(folder, f"{i:04d}{SAT_SUFFIX}"), quality=90)
    Image.fromarray(class_to_rgb(classes)).save(os.path.join(folder, f"{i:04d}{MASK_SUFFIX}"))


def write_tiles(folder, ids, seed):
    """Synthetic 512x512 tiles ``ids`` (images and masks) into ``folder``, one process per CPU."""
    os.makedirs(folder, exist_ok=True)
    jobs = [(folder, i, seed) for i in ids]
    with multiprocessing.get_context("fork").Pool(min(os.cpu_count(), len(jobs))) as pool:
        pool.map(write_tile, jobs, chunksize=8)


def write_mosaics(folder, tiles, size, count, seed):
    """``count`` ``size``-square JPEGs made of the ``tiles`` (H x W x 3 arrays) in random flips and
    turns: what a forward pass costs does not depend on the content."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = -(-size // TILE_SIZE)
    for i in range(count):
        rows = [np.concatenate([dihedral(tiles[rng.integers(len(tiles))], rng.integers(8)) for _ in range(n)], 1)
                for _ in range(n)]
        image = np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])
        Image.fromarray(image).save(os.path.join(folder, f"{i:04d}{SAT_SUFFIX}"), quality=90)


def image_folder(folder, sources):
    """``folder`` holding copies of the ``sources`` images (a grading input of its own)."""
    os.makedirs(folder)
    for path in sources:
        shutil.copy(path, folder)
    return folder
