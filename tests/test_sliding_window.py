"""core.sliding_window, the one P2 predictor: geometry, blending against a naive whole-image
reference, exactness at 512, odd sizes, bounded memory; FCN8s now takes only 512x512."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from core.inputs import to_float
from core.runtime import inference_dtype
from core.sliding_window import (pad_to_window, predict_masks, reflect_index, sliding_logits, window_starts,
                                 window_weights)
from datasets import DataError, read_rgb
from datasets.common import MAX_SIDE, image_size
from models import FCN8VGG
from tests.conftest import ROOT

MEAN, STD = [0.5] * 3, [0.25] * 3


class PointModel(nn.Module):
    """A 1x1 conv: translation-equivariant, so every window agrees with the whole image."""

    def __init__(self, window, classes=7):
        super().__init__()
        self.input_size = window
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        assert tuple(x.shape[-2:]) == (self.input_size, self.input_size), x.shape
        return self.conv(x)


class PositionModel(PointModel):
    """Logits that depend on the position inside the window: overlaps disagree, so the
    blended result depends on the weights and on which windows cover a pixel."""

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1], device=x.device)
        return super().forward(x) + ramp.view(1, 1, 1, -1) * torch.arange(1, 8, device=x.device).view(1, 7, 1, 1)


def naive_blend(model, x, window, overlap, weighting):
    """Whole-image K x H x W accumulation of every window (the reference the streaming
    implementation must match)."""
    padded, top, left = pad_to_window(x, window)
    _, hp, wp = padded.shape
    acc, wsum = torch.zeros(7, hp, wp), torch.zeros(1, hp, wp)
    ys, xs = window_starts(hp, window, overlap), window_starts(wp, window, overlap)
    w = window_weights(window, weighting) if len(ys) * len(xs) > 1 else torch.ones(window, window)
    for y in ys:
        for x0 in xs:
            acc[:, y:y + window, x0:x0 + window] += model(padded[None, :, y:y + window, x0:x0 + window])[0] * w
            wsum[:, y:y + window, x0:x0 + window] += w
    return (acc / wsum)[:, top:top + x.shape[1], left:left + x.shape[2]]


@pytest.mark.parametrize("length, window, overlap", [(512, 512, 0.25), (513, 512, 0), (2448, 512, 0.25),
                                                     (2448, 512, 0.5), (1000, 64, 0.9), (14000, 512, 0.25)])
def test_window_starts_cover_evenly_with_the_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] == length - window
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= window * (1 - overlap)).all()  # overlap at least as asked
    assert len(gaps) == 0 or np.ptp(gaps) <= 1  # evenly spaced


def test_reflect_index_is_numpy_reflect_for_any_padding():
    for n, before, after in [(1, 3, 4), (2, 5, 1), (3, 7, 7), (5, 2, 2), (4, 9, 0)]:
        ref = np.pad(np.arange(n), (before, after), mode="reflect") if n > 1 else np.zeros(n + before + after)
        assert (reflect_index(n, before, after).numpy() == ref).all()


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = window_weights(512, "gaussian")
    assert w.min() > 0 and w[255:257, 255:257].min() > 0.99 and w[0, 0] < 1e-6
    assert torch.equal(window_weights(8, "uniform"), torch.ones(8, 8))


@pytest.mark.parametrize("weighting", ["gaussian", "uniform"])
@pytest.mark.parametrize("size", [(1, 1), (600, 400), (129, 300), (37, 129)])
def test_point_model_blends_to_the_whole_image_result(weighting, size):
    model = PointModel(128).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = sliding_logits(model, x, overlap=0.3, weighting=weighting, batch_size=3)
        torch.testing.assert_close(out, model.conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighting", ["gaussian", "uniform"])
@pytest.mark.parametrize("size", [(150, 97), (64, 300), (20, 20)])
def test_streaming_blend_equals_a_whole_image_buffer(weighting, size):
    model = PositionModel(64).eval()
    x = torch.randn(3, *size)
    with torch.no_grad():
        ref = naive_blend(model, x, 64, 0.4, weighting)
        out = sliding_logits(model, x[None], overlap=0.4, weighting=weighting, batch_size=5)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    images = [(k, (x * 40 + 128).clamp(0, 255).to(torch.uint8)) for k in range(2)]
    with torch.no_grad():
        ref = naive_blend(model, to_float(images[0][1][None], MEAN, STD)[0], 64, 0.4, weighting).argmax(0)
    masks = list(predict_masks(model, images, mean=MEAN, std=STD, overlap=0.4, weighting=weighting, batch_size=4))
    assert [k for k, _ in masks] == [0, 1]
    assert (torch.from_numpy(masks[0][1]).long() == ref).float().mean() > 0.999


def test_512_tiles_give_exactly_the_models_prediction():
    torch.manual_seed(0)
    model = FCN8VGG(width=16).eval()
    for m in (model.score_fr, model.score_pool3, model.bn4_2):
        nn.init.normal_(m.weight)
    tiles = torch.randint(0, 256, (3, 3, 512, 512), dtype=torch.uint8)
    with torch.no_grad():
        ref = model(to_float(tiles, MEAN, STD)).argmax(1)
    masks = list(predict_masks(model, enumerate(tiles), mean=MEAN, std=STD, batch_size=3))
    assert ref.unique().numel() > 1
    for k, classes in masks:
        assert classes.dtype == np.uint8 and torch.equal(torch.from_numpy(classes).long(), ref[k])


def test_odd_sizes_keep_their_size_and_windows_of_many_images_share_batches():
    model = PointModel(512).eval()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    sizes = [(1, 1), (600, 400), (2448, 2448), (5, 3000)]
    images = [(k, torch.randint(0, 256, (3, h, w), dtype=torch.uint8)) for k, (h, w) in enumerate(sizes)]
    masks = dict(predict_masks(model, iter(images), mean=MEAN, std=STD, overlap=0.25, batch_size=8))
    assert [masks[k].shape for k in range(4)] == sizes
    windows = [len(window_starts(max(h, 512), 512, 0.25)) * len(window_starts(max(w, 512), 512, 0.25))
               for h, w in sizes]
    assert windows == [1, 2, 49, 8] and max(seen) == 8 and sum(seen) == sum(windows)
    with torch.no_grad():
        full = model.conv(to_float(images[2][1][None], MEAN, STD)).argmax(1)[0]
    assert (torch.from_numpy(masks[2]).long() == full).float().mean() > 0.9999


def test_memory_is_bounded_by_the_window_row_not_the_image():
    # 32 classes x 4096 x 512 float32 is 256 MiB for a whole-image buffer; a row of windows, 35 MiB.
    code = """
import resource, torch
from core.sliding_window import predict_masks
MEAN, STD = [0.5] * 3, [0.25] * 3
model = torch.nn.Conv2d(3, 32, 1).eval()
model.input_size = 512
image = torch.randint(0, 256, (3, 4096, 512), dtype=torch.uint8)
list(predict_masks(model, [(0, image[:, :1024])], mean=MEAN, std=STD, batch_size=2))  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(_, classes), = predict_masks(model, [(0, image)], mean=MEAN, std=STD, batch_size=2)
assert classes.shape == (4096, 512)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) < 128, f"peak grew by {r.stdout.split()[-1]} MiB"


def test_fcn8s_takes_only_512():
    model = FCN8VGG(width=16).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="got 300x700"):
        model(torch.zeros(1, 3, 300, 700))
    with pytest.raises(ValueError, match="only 512x512"):
        list(predict_masks(model, [], mean=MEAN, std=STD, window=256))


def test_precision_flag():
    cpu = torch.device("cpu")
    assert inference_dtype(cpu, "fp32") is None and inference_dtype(cpu, "bf16") == torch.bfloat16
    assert inference_dtype(cpu, "auto") in (None, torch.bfloat16)


def png_header(width, height):
    """A PNG whose header declares ``width`` x ``height`` (no pixel data: only the size is read)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_images_up_to_20000_squared_are_read_larger_ones_refused(tmp_path):
    (tmp_path / "max.png").write_bytes(png_header(MAX_SIDE, MAX_SIDE))
    assert image_size(tmp_path / "max.png") == (MAX_SIDE, MAX_SIDE)
    (tmp_path / "big.png").write_bytes(png_header(MAX_SIDE + 1, MAX_SIDE))
    with pytest.raises(DataError, match=r"big.png: 20001x20000 image refused"):
        read_rgb(tmp_path / "big.png")
    (tmp_path / "bomb.png").write_bytes(png_header(60000, 60000))
    with pytest.raises(DataError, match=r"bomb.png: not a readable image \(more than"):
        image_size(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb.png"):
        read_rgb(tmp_path / "bomb.png")


def test_read_rgb_reads_large_images_exactly(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1500, 3001, 3), dtype=np.uint8)  # several strips of rows
    from PIL import Image

    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert np.array_equal(read_rgb(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_rgb(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, axis=2))
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with pytest.raises(DataError, match="link.png: not a readable image \\(dangling symbolic link"):
        read_rgb(tmp_path / "link.png")
