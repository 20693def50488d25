"""Dataset statistics (datasets/stats.py): channel mean/std, class pixels, median-frequency weights."""
import os
import time

import numpy as np
from PIL import Image

from datasets import P2Tiles, stats
from datasets.masks import class_to_rgb


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), rng.integers(0, 120, (2, 8, 8, 3), dtype=np.uint8)]
    mean, std = stats.channel_stats(chunks)
    pixels = np.concatenate([c.reshape(-1, 3) for c in chunks]).astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-6)


def write_tiles(folder, masks, seed=0):
    """``<id>_sat.jpg`` / ``<id>_mask.png`` pairs of random images with the given class maps."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i, mask in enumerate(masks):
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:04d}_sat.jpg")
        Image.fromarray(class_to_rgb(mask)).save(folder / f"{i:04d}_mask.png")


def test_split_statistics_are_exact_and_cached(tmp_path, monkeypatch):
    masks = [np.zeros((8, 8), int), np.zeros((8, 8), int)]
    masks[0][:2] = 3  # 16 forest pixels in tile 0; urban (0) in both; class 4 nowhere
    masks[1][:, :1] = 6
    write_tiles(tmp_path / "train", masks)
    tiles = P2Tiles(str(tmp_path / "train"))
    computed = []
    real = stats._compute
    monkeypatch.setattr(stats, "_compute", lambda *a: computed.append(1) or real(*a))

    first = stats.split_statistics(tiles, str(tmp_path / "cache"), progress=False)
    images = np.stack([tiles.load(k)[0] for k in range(len(tiles))]).reshape(-1, 3) / 255
    np.testing.assert_allclose(first["mean"], images.mean(0), atol=1e-6)
    np.testing.assert_allclose(first["std"], images.std(0), atol=1e-6)
    assert first["class_pixels"] == [48 + 56, 0, 0, 16, 0, 0, 8]
    assert first["class_present"] == [128, 0, 0, 64, 0, 0, 64]
    assert stats.split_statistics(tiles, str(tmp_path / "cache"), progress=False) == first
    assert len(computed) == 1  # the second call read the cache
    later = time.time_ns() + 10 ** 9
    os.utime(tmp_path / "train" / "0001_mask.png", ns=(later, later))
    assert stats.split_statistics(P2Tiles(str(tmp_path / "train")), str(tmp_path / "cache"), progress=False) == first
    assert len(computed) == 2  # a touched file recomputes


def test_median_frequency_weights_by_hand():
    # f = pixels / pixels of the tiles where the class appears = [0.1, 0.5, -, 0.2]; median 0.2
    assert stats.median_frequency_weights([10, 20, 0, 40], [100, 40, 0, 200]) == [2.0, 0.4, 0.0, 1.0]
    assert stats.median_frequency_weights([0, 0], [0, 0]) == [1.0, 1.0]
