"""Statistics of a P2 training split, computed once and cached beside its decoded tiles.

    mean, std       per-channel pixel statistics (0..1 units) for ``--normalize dataset``
    class_pixels    pixels of each class over all masks
    class_present   pixels of all tiles in which each class appears (for median-frequency balancing)

The cache entry is keyed like the decoded-tile cache (every file's name, size and mtime), so
changing a file recomputes it.
"""
import numpy as np
from tqdm import tqdm

from .cache import cache_tag, cached_arrays
from .masks import NUM_CLASSES


def channel_histogram(chunks):
    """Per-channel 256-bin histograms (3 x 256 int64) of uint8 arrays with channels last."""
    hist = np.zeros((3, 256), dtype=np.int64)
    for chunk in chunks:
        arr = np.asarray(chunk).reshape(-1, 3)
        for c in range(3):
            hist[c] += np.bincount(arr[:, c], minlength=256)
    return hist


def mean_std(hist):
    """Exact per-channel mean and std (0..1 units, rounded to 6 digits) from ``channel_histogram``."""
    hist = np.asarray(hist, dtype=np.float64)
    values = np.arange(256) / 255
    p = hist / hist.sum(1, keepdims=True)
    mean = (p * values).sum(1)
    std = np.sqrt((p * (values - mean[:, None]) ** 2).sum(1)).clip(min=1e-6)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def channel_stats(chunks):
    """Mean and std of uint8 images with channels last (``... x 3``): one pass, no float copy."""
    return mean_std(channel_histogram(chunks))


def _compute(tiles, progress):
    hist = np.zeros((3, 256), dtype=np.int64)
    class_pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    class_present = np.zeros(NUM_CLASSES, dtype=np.int64)
    for k in tqdm(range(len(tiles)), desc=f"statistics {tiles.root}", leave=False,
                  disable=None if progress else True):
        image, mask = tiles.load(k)
        hist += channel_histogram([image])
        counts = np.bincount(np.asarray(mask).ravel(), minlength=256)[:NUM_CLASSES]
        class_pixels += counts
        class_present += np.where(counts > 0, counts.sum(), 0)
    return {"hist": hist, "class_pixels": class_pixels, "class_present": class_present}


def split_statistics(tiles, cache_dir=None, progress=True):
    """``{"mean", "std", "class_pixels", "class_present"}`` of a ``P2Tiles`` split with masks."""
    if cache_dir:
        names = [p.rsplit("/", 1)[-1] for p in tiles.image_paths + tiles.mask_paths]
        arrays = cached_arrays(cache_dir, tiles.root, names, cache_tag(tiles.root, "p2stats"),
                               lambda: _compute(tiles, progress))
    else:
        arrays = _compute(tiles, progress)
    mean, std = mean_std(arrays["hist"])
    return {"mean": mean, "std": std,
            "class_pixels": np.asarray(arrays["class_pixels"]).tolist(),
            "class_present": np.asarray(arrays["class_present"]).tolist()}


def median_frequency_weights(class_pixels, class_present):
    """Median-frequency balancing (Eigen & Fergus 2015, https://arxiv.org/abs/1411.4734):
    ``w_c = median(f) / f_c`` with ``f_c = pixels of class c / pixels of the tiles where c
    appears``. A class absent from every tile gets weight 0 (it has no pixel to weigh)."""
    pixels = np.asarray(class_pixels, dtype=np.float64)
    present = np.asarray(class_present, dtype=np.float64)
    freq = np.divide(pixels, present, out=np.zeros_like(pixels), where=present > 0)
    seen = freq > 0
    if not seen.any():
        return [1.0] * len(freq)
    median = np.median(freq[seen])
    weights = np.divide(median, freq, out=np.zeros_like(freq), where=seen)
    return [round(float(w), 6) for w in weights]
