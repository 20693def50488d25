"""P1's device-side augmentation for the seed author's recipe (``core.presets``): the combined
rotation / perspective / affine warp against torchvision's own transforms, and colour jitter in
torchvision's random order. Small CPU tensors only."""
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from core import presets
from core.presets import PERSPECTIVE_DISTORTION, jitter_colors, make_prepare, warp


def smooth_images(n, size=32, seed=0):
    """Random but smooth images (0..1): nearest vs bilinear sampling then differ little."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_no_warp_is_the_bilinear_upsampling():
    x = smooth_images(2)
    torch.testing.assert_close(warp(x, 96), F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False),
                               atol=1e-5, rtol=0)


def test_rotation_matches_torchvision_rotate_of_the_resized_image():
    x = smooth_images(4)
    torch.manual_seed(3)
    out = warp(x, 64, rotation=15)
    torch.manual_seed(3)  # the same draws: one uniform angle in [-15, 15] per image
    angles = torch.empty(4, dtype=torch.float64).uniform_(-15, 15)
    resized = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    for k in range(4):
        ref = TF.rotate(resized[k], float(angles[k]), interpolation=TF.InterpolationMode.NEAREST, fill=0)
        assert (out[k] - ref).abs().mean() < 0.02, k
    assert abs(float(angles.abs().max())) <= 15


def test_perspective_homography_is_torchvisions_random_perspective():
    size, n = 64, 64
    torch.manual_seed(0)
    h = presets._perspective_params(n, size, torch.device("cpu"))
    starts = torch.tensor([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], dtype=torch.float64)
    # torchvision: each corner moves inward by an integer below int(distortion * size // 2) + 1.
    bound = int(PERSPECTIVE_DISTORTION * (size // 2)) + 1
    ends = torch.cat((starts, torch.ones(4, 1, dtype=torch.float64)), 1) @ torch.linalg.inv(h).transpose(1, 2)
    ends = ends[..., :2] / ends[..., 2:]
    torch.testing.assert_close(ends, ends.round(), atol=1e-6, rtol=0)
    inward = torch.where(starts == 0, ends, size - 1 - ends)
    assert inward.min() > -1e-6 and inward.max() < bound - 1 + 1e-6 + 1
    assert len(torch.unique(inward.round())) > 10  # drawn, not fixed
    # The image warped with those corners equals torchvision's perspective (away from the edges).
    x = smooth_images(1, size)
    e = ends[0].round().long().tolist()
    ref = TF.perspective(x[0], starts.long().tolist(), e, interpolation=TF.InterpolationMode.BILINEAR, fill=0)
    presets_params = presets._perspective_params
    try:
        presets._perspective_params = lambda n, s, d: h[:1]
        out = warp(x, size, perspective=1.0)[0]
    finally:
        presets._perspective_params = presets_params
    assert (out - ref).abs().mean() < 0.02


def test_warp_fills_with_zero_and_stays_in_range():
    x = torch.ones(16, 3, 32, 32)
    torch.manual_seed(1)
    out = warp(x, 224, rotation=15, perspective=0.5, affine=15)
    assert out.shape == (16, 3, 224, 224) and out.min() >= 0 and out.max() <= 1
    assert 0.3 < out.mean() < 1 and (out == 0).any()  # the corners leave the canvas
    torch.testing.assert_close(out[:, :, 112, 112], torch.ones(16, 3))  # the centre stays inside


def test_jitter_random_order_is_one_of_the_orders_per_image():
    x = smooth_images(600, 8, seed=1)
    torch.manual_seed(7)
    fixed = jitter_colors(x, 0.5)
    torch.manual_seed(7)  # the same three factors; random adds an order per image
    mixed = jitter_colors(x, 0.5, random_order=True)
    same = ((fixed - mixed).abs().flatten(1).max(1).values < 1e-6).float().mean()
    # brightness -> contrast -> saturation is 1 of 6 orders (more agree: some steps commute)
    assert 1 / 6 - 0.05 < same < 0.9
    assert mixed.min() >= 0 and mixed.max() <= 1
    torch.testing.assert_close(jitter_colors(x, 0.0, random_order=True), x)


def test_prepare_with_warp_normalises_after_it():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    aug = {"hflip": True, "crop_padding": 0, "color_jitter": 0.5, "jitter_order": "random", "rotation": 15.0,
           "perspective": 0.5, "affine": 15.0}
    x, y = make_prepare(torch.device("cpu"), {"mean": [0.5] * 3, "std": [0.5] * 3}, 64, True, aug)(
        (images, torch.arange(4)))
    assert x.shape == (4, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    assert x.min() >= -1 and x.max() <= 1 and (x == -1).any()  # filled pixels are 0 before normalising
    assert torch.equal(y, torch.arange(4))


def test_prepare_without_warp_is_the_uint8_path():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    aug = {"hflip": False, "crop_padding": 0, "color_jitter": 0.0, "jitter_order": "fixed", "rotation": 0.0,
           "perspective": 0.0, "affine": 0.0}
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3}
    x, _ = make_prepare(torch.device("cpu"), pre, 48, False, aug)((images, torch.arange(4)))
    torch.testing.assert_close(x, make_prepare(torch.device("cpu"), pre, 48)((images, torch.arange(4)))[0])
