"""Batch preparation on the device (core/presets.py): normalisation, augmentation, resizing."""

import torch
import torch.nn.functional as F

from core.presets import augment, make_prepare, model_inputs, to_float
from tests.factories import CPU, PREPROCESS


def test_to_float_normalises():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = to_float(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert y.dtype == torch.float32 and torch.allclose(y, torch.ones_like(y))
    z = to_float(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), (0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    torch.testing.assert_close(z.flatten(), torch.tensor([-1.0, -0.5, 0.0]))


def test_augment_identity_when_off():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    assert augment(images) is images
    assert torch.equal(augment(images, hflip=False, crop_padding=0, color_jitter=0.0), images)


def test_augment_shapes_dtypes_and_content():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, hflip=True, crop_padding=4, color_jitter=0.4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = augment(images, hflip=True)
    for a, b in zip(images, flipped):
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
    assert any(not torch.equal(a, b) for a, b in zip(images, flipped))
    padded = F.pad(images, (2, 2, 2, 2))
    cropped = augment(images, crop_padding=2)
    for p, c in zip(padded, cropped):  # every crop is one 32x32 window of the padded image
        assert any(torch.equal(p[:, y:y + 32, x:x + 32], c) for y in range(5) for x in range(5))
    assert not torch.equal(augment(images, color_jitter=0.5), images)


def test_augment_follows_the_global_rng():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(5)
    a = augment(images, hflip=True, crop_padding=4, color_jitter=0.3)
    torch.manual_seed(5)
    assert torch.equal(a, augment(images, hflip=True, crop_padding=4, color_jitter=0.3))


def test_prepare_upsamples_and_normalises():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    prepare = make_prepare(CPU, {"mean": [0.5] * 3, "std": [0.25] * 3}, 48, False,
                           {"hflip": True, "crop_padding": 0, "color_jitter": 0.0})
    x, y = prepare((images, torch.arange(4, dtype=torch.uint8)))
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0)) and y.dtype == torch.int64 and torch.equal(y, torch.arange(4))
    masks = torch.randint(0, 7, (2, 16, 16), dtype=torch.uint8)
    x, y = make_prepare(CPU, PREPROCESS)((torch.zeros(2, 3, 16, 16, dtype=torch.uint8), masks))
    assert x.shape == (2, 3, 16, 16) and torch.equal(y, masks.long())  # no img_size: kept as is


def test_model_inputs_resize_equals_normalise_after_resize():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(PREPROCESS["mean"]), torch.tensor(PREPROCESS["std"])
    x = model_inputs(images, mean, std, 64, channels_last=True)
    assert x.shape == (2, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(images.float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (resized - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), rtol=1e-5, atol=1e-5)
