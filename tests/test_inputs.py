"""Model inputs on the device (core/inputs.py): normalisation, resizing, ``make_prepare`` with and
without P1's augmentation."""

import pytest
import torch
import torch.nn.functional as F

from core.inputs import make_prepare, model_inputs, to_float
from datasets.augment import P1Augment
from tests.factories import CPU, PREPROCESS


def test_to_float_normalises():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = to_float(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert y.dtype == torch.float32 and torch.allclose(y, torch.ones_like(y))
    z = to_float(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), (0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    torch.testing.assert_close(z.flatten(), torch.tensor([-1.0, -0.5, 0.0]))


def test_prepare_upsamples_and_normalises():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    prepare = make_prepare(CPU, {"mean": [0.5] * 3, "std": [0.25] * 3}, 48, False,
                           P1Augment(48, hflip=True, crop_padding=0, color_jitter=0.0))
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


def test_prepare_with_warp_normalises_after_it():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    aug = {"hflip": True, "crop_padding": 0, "color_jitter": 0.5, "jitter_order": "random", "rotation": 15.0,
           "perspective": 0.5, "affine": 15.0}
    x, y = make_prepare(torch.device("cpu"), {"mean": [0.5] * 3, "std": [0.5] * 3}, 64, True, P1Augment(64, **aug))(
        (images, torch.arange(4)))
    assert x.shape == (4, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    assert x.min() >= -1 and x.max() <= 1 and (x == -1).any()  # filled pixels are 0 before normalising
    assert torch.equal(y, torch.arange(4))


def test_prepare_without_warp_is_the_uint8_path():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    aug = {"hflip": False, "crop_padding": 0, "color_jitter": 0.0, "jitter_order": "fixed", "rotation": 0.0,
           "perspective": 0.0, "affine": 0.0}
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3}
    x, _ = make_prepare(torch.device("cpu"), pre, 48, False, P1Augment(48, **aug))((images, torch.arange(4)))
    torch.testing.assert_close(x, make_prepare(torch.device("cpu"), pre, 48)((images, torch.arange(4)))[0])


def test_prepare_refuses_a_warp_to_another_size():
    # The caller builds the augmentation: a warp to another side would skip the resize to img_size.
    with pytest.raises(ValueError, match="warps to 32"):
        make_prepare(CPU, PREPROCESS, 48, False, P1Augment(32, rotation=15.0))
