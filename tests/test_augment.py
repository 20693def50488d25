"""Augmentation (datasets/augment.py). P1 on the device: flip, padded crop and colour jitter; the
seed author's combined rotation / perspective / affine warp against torchvision's own transforms,
and colour jitter in torchvision's random order. P2: joint image + mask transforms and the
``--augment`` policies. Small CPU tensors only."""
import random

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from datasets import augment as augment_module
from datasets.augment import (P1_POLICIES, P2_POLICIES, PERSPECTIVE_DISTORTION, Compose, P1Augment, RandomCrop,
                              RandomHorizontalFlip, RandomRotate90, augment, get_transform, jitter_colors, warp)


def smooth_images(n, size=32, seed=0):
    """Random but smooth images (0..1): nearest vs bilinear sampling then differ little."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


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


def test_p1_policies_set_every_flag_and_none_is_the_identity():
    assert list(P1_POLICIES) == ["none", "ours", "report"]
    assert all(set(values) == set(P1_POLICIES["none"]) for values in P1_POLICIES.values())
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    for off in (P1Augment(), P1Augment(48, **P1_POLICIES["none"])):
        assert not off.warps and off(images) is images
    ours = P1Augment(48, **P1_POLICIES["ours"])
    assert not ours.warps and ours(images).shape == images.shape and ours(images).dtype == torch.uint8
    report = P1Augment(48, **P1_POLICIES["report"])  # warped: 0..1 floats at the input side
    out = report(images)
    assert report.warps and out.shape == (4, 3, 48, 48) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


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
    h = augment_module._perspective_params(n, size, torch.device("cpu"))
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
    perspective_params = augment_module._perspective_params
    try:
        augment_module._perspective_params = lambda n, s, d: h[:1]
        out = warp(x, size, perspective=1.0)[0]
    finally:
        augment_module._perspective_params = perspective_params
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


def test_joint_transforms_keep_pairs_aligned():
    torch.manual_seed(0)
    mask = torch.randint(0, 7, (20, 20), dtype=torch.uint8)
    image = torch.stack([mask * 10, mask * 20, mask * 30])  # image encodes the mask exactly
    t = Compose([RandomHorizontalFlip(1.0), RandomRotate90(), RandomCrop(12)])
    for _ in range(10):
        im, m = t(image, mask)
        assert im.shape == (3, 12, 12) and torch.equal(im[0], m * 10)
    im, m = RandomCrop(24)(image, mask)
    assert im.shape == (3, 24, 24) and (m[20:] == 255).all() and (m[:, 20:] == 255).all()


def test_get_transform_policies():
    assert list(P2_POLICIES) == ["none", "flips", "d4"]
    mask = torch.arange(400).view(20, 20).to(torch.uint8)  # the corners tell the orientation
    image = torch.stack([mask, mask + 1, mask + 2])
    for t in (get_transform(False), get_transform(False, 12, "d4"), get_transform(True)):
        im, m = t(image, mask)  # eval, and training with nothing asked: the identity
        assert im is image and m is mask
    random.seed(0)
    seen = set()
    for _ in range(40):
        im, m = get_transform(True, 12, "d4")(image, mask)
        assert im.shape == (3, 12, 12) and torch.equal(im[1], m + 1)
        seen.add(tuple(m[:2, :2].flatten().tolist()))
    assert len(seen) > 8  # random crops and turns
    turned = {tuple(get_transform(True, None, "d4")(image, mask)[1][0, :2].tolist()) for _ in range(40)}
    flipped = {tuple(get_transform(True, None, "flips")(image, mask)[1][0, :2].tolist()) for _ in range(40)}
    assert len(flipped) == 4 and len(turned) == 8  # D4: 8 corner orientations, flips alone: 4
