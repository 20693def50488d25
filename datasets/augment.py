"""Augmentation for both problems, by named policy.

P1 (``P1_POLICIES``, ``P1Augment``): a uint8 batch on the device, augmented as one batch with
per-image random draws from the device's global RNG (saved in checkpoints): flip, padded crop and
colour jitter; the seed author's rotation, perspective and affine as one ``warp``.
``p1_train.py`` builds one from its flags; ``core.inputs.make_prepare`` applies it before normalising.

P2 (``P2_POLICIES``, ``get_transform``): joint transforms of ``(uint8 3 x H x W image, uint8 H x
W mask)`` tensors on the CPU, in the DataLoader. Flips, 90-degree rotations and crops move pixels
without interpolating, so the mask keeps exact class ids (masks are never interpolated).
"""
import random

import torch
import torch.nn.functional as F

from datasets.p2 import IGNORE_INDEX

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
# torchvision RandomPerspective's default distortion_scale (the seed author's code used the defaults).
PERSPECTIVE_DISTORTION = 0.5
# P1's policies: the values of p1_train.py's augmentation flags (each flag overrides its one value).
# "none" is every flag off (a value P1Augment is not given); "ours" and "report" are the --recipe
# values of the same names (their sources: p1_train.py's docstring and the README's P1 recipe table).
P1_POLICIES = {
    "none": dict(hflip=False, crop_padding=0, rotation=0.0, perspective=0.0, affine=0.0, color_jitter=0.0,
                 jitter_order="fixed"),
    # ours: flips, 4-pixel padded crops and mild colour jitter in a fixed order
    "ours": dict(hflip=True, crop_padding=4, rotation=0.0, perspective=0.0, affine=0.0, color_jitter=0.2,
                 jitter_order="fixed"),
    # the seed author's (GitHub Andychen3558/DLCV2020, hw2/): RandomHorizontalFlip, RandomRotation(15),
    # RandomPerspective(), RandomAffine(15), ColorJitter(0.5, 0.5, 0.5)
    "report": dict(hflip=True, crop_padding=0, rotation=15.0, perspective=0.5, affine=15.0, color_jitter=0.5,
                   jitter_order="random"),
}


# --------------------------------------------------------------------------- P1: batched on the device


def jitter_colors(images, strength, random_order=False):
    """Brightness, contrast and saturation, each scaled by a per-image factor from
    ``[1 - strength, 1 + strength]`` (torchvision ColorJitter's ranges). ``images``: uint8
    N x 3 x H x W (returned as uint8, rounded) or float in 0..1 (returned as float).
    ``random_order``: a random order of the three per image, as torchvision's ColorJitter draws
    it; else always brightness, contrast, saturation."""
    n = images.shape[0]
    x = images.float() / 255 if images.dtype == torch.uint8 else images

    def factor():
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - strength), 1 + strength)

    def gray(t):
        return (t * torch.tensor(LUMA, device=t.device).view(1, 3, 1, 1)).sum(1, keepdim=True)

    def brightness(t, f):
        return (t * f).clamp_(0, 1)

    def contrast(t, f):
        mean = gray(t).mean((1, 2, 3), keepdim=True)
        return ((t - mean) * f + mean).clamp_(0, 1)

    def saturation(t, f):
        g = gray(t)
        return ((t - g) * f + g).clamp_(0, 1)

    ops = [(op, factor()) for op in (brightness, contrast, saturation)]
    if random_order:
        order = torch.rand(n, len(ops), device=x.device).argsort(1)  # N x 3: op index of each step
        for step in range(len(ops)):
            x = sum(torch.where((order[:, step] == k).view(n, 1, 1, 1), op(x, f), 0) for k, (op, f) in enumerate(ops))
    else:
        for op, f in ops:
            x = op(x, f)
    return (x * 255).round_().to(torch.uint8) if images.dtype == torch.uint8 else x


def augment(images, hflip=False, crop_padding=0, color_jitter=0.0, jitter_order="fixed"):
    """Random horizontal flip, crop with zero padding and colour jitter (``jitter_order`` fixed or
    random, see ``jitter_colors``) of a uint8 N x 3 x H x W batch, batched on its device with
    per-image random draws from that device's global RNG (saved in checkpoints). Returns the
    input itself when all options are off."""
    n, c, h, w = images.shape
    dev = images.device
    if hflip:
        flip = torch.rand(n, device=dev) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(images, (p, p, p, p))  # N x C x (H+2p) x (W+2p)
        top = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        left = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        rows = (top + torch.arange(h, device=dev)).view(n, 1, h, 1)
        cols = (left + torch.arange(w, device=dev)).view(n, 1, 1, w)
        images = padded[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
                        rows, cols]  # N x C x H x W
    if color_jitter > 0:
        images = jitter_colors(images, color_jitter, jitter_order == "random")
    return images


def _rotate_points(xy, degrees, center):
    """Rotate N x P x 2 points about ``center`` by per-image angles (N,) in degrees."""
    t = torch.deg2rad(degrees).view(-1, 1)
    cos, sin = torch.cos(t), torch.sin(t)
    x, y = xy[..., 0] - center, xy[..., 1] - center
    return torch.stack((cos * x - sin * y + center, sin * x + cos * y + center), -1)


def _perspective_params(n, size, device):
    """Per image, the homography (N x 3 x 3) taking each output point to the point it samples:
    torchvision ``RandomPerspective.get_params`` (corners moved inward by up to
    ``PERSPECTIVE_DISTORTION`` of half the side), solved as in its ``_get_perspective_coeffs``."""
    half = size // 2
    bound = int(PERSPECTIVE_DISTORTION * half) + 1

    def draw(low, high):
        return torch.randint(low, high, (n,), device=device)

    ends = torch.stack([torch.stack(p, -1) for p in (
        (draw(0, bound), draw(0, bound)), (draw(size - bound, size), draw(0, bound)),
        (draw(size - bound, size), draw(size - bound, size)), (draw(0, bound), draw(size - bound, size)))], 1)
    ends = ends.double()  # N x 4 x 2
    starts = torch.tensor([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], dtype=torch.float64,
                          device=device).expand(n, 4, 2)
    x, y, u, v = ends[..., 0], ends[..., 1], starts[..., 0], starts[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows = torch.cat([torch.stack((x, y, one, zero, zero, zero, -u * x, -u * y), -1),
                      torch.stack((zero, zero, zero, x, y, one, -v * x, -v * y), -1)], 1)  # N x 8 x 8
    coeffs = torch.linalg.solve(rows, torch.cat((u, v), 1))  # N x 8
    return torch.cat((coeffs, torch.ones(n, 1, dtype=coeffs.dtype, device=device)), 1).view(n, 3, 3)


def warp(x, size, rotation=0.0, perspective=0.0, affine=0.0):
    """The seed author's geometric augmentation of a float N x 3 x h x w batch (0..1), on its
    device, returned at ``size`` x ``size``: as if the images were resized to ``size`` and then
    passed through torchvision's ``RandomRotation(rotation)``, ``RandomPerspective(p=perspective)``
    and ``RandomAffine(affine)`` (rotation only, its defaults), each filling with 0.

    One bilinear sample of the source per output pixel replaces the four resamplings (bilinear
    resize, then nearest / bilinear / nearest): the source coordinates are the same, only the
    rounding to the intermediate pixel grid is skipped. An output pixel whose point leaves the
    canvas at any stage is 0, as in the chain of transforms.
    """
    n, dev = x.shape[0], x.device
    center = (size - 1) / 2  # torchvision's rotation centre, in pixel-index coordinates
    idx = torch.arange(size, device=dev, dtype=torch.float64)
    gy, gx = torch.meshgrid(idx, idx, indexing="ij")
    pts = torch.stack((gx, gy), -1).view(1, -1, 2).expand(n, -1, -1)  # N x S*S x 2, output pixels
    inside = torch.ones(n, size * size, dtype=torch.bool, device=dev)

    def keep(p):
        return ((p >= -0.5) & (p <= size - 0.5)).all(-1)

    def angles(degrees):
        return torch.empty(n, device=dev, dtype=torch.float64).uniform_(-degrees, degrees)

    # Applied last, so inverted first: each stage maps output points to the points they sample
    # (rotating the points by +angle samples torchvision's rotation of the image by +angle).
    if affine > 0:
        pts = _rotate_points(pts, angles(affine), center)
        inside &= keep(pts)
    if perspective > 0:
        apply = torch.rand(n, device=dev) < perspective
        h = _perspective_params(n, size, dev)
        homog = torch.cat((pts, torch.ones_like(pts[..., :1])), -1) @ h.transpose(1, 2)
        warped = homog[..., :2] / homog[..., 2:]
        pts = torch.where(apply.view(n, 1, 1), warped, pts)
        inside &= keep(pts)
    if rotation > 0:
        pts = _rotate_points(pts, angles(rotation), center)
        inside &= keep(pts)
    grid = ((pts + 0.5) / size * 2 - 1).to(x.dtype).view(n, size, size, 2)  # align_corners=False units
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside.view(n, 1, size, size).to(x.dtype)


class P1Augment:
    """P1's training augmentation of a uint8 N x 3 x H x W batch on its device, from a policy's
    values (the keys of ``P1_POLICIES``; a key not given is off, as in ``"none"``).

    Without a warp (rotation, perspective and affine all 0) the batch comes back as uint8 at its
    own size: flipped, cropped and colour-jittered (``warps`` False). With one, it is flipped and
    cropped, warped to ``img_size`` squared (its own side when None) in 0..1 floats, then
    colour-jittered there, after the warps as in the author's order (``warps`` True).
    """

    def __init__(self, img_size=None, **values):
        values = {**P1_POLICIES["none"], **values}
        self.geometry = {k: v for k in ("rotation", "perspective", "affine") if (v := values.pop(k))}
        self.warps, self.img_size = bool(self.geometry), img_size
        self.late_jitter = (values.pop("color_jitter"), values["jitter_order"]) if self.warps else None
        self.values = values

    def __call__(self, images):
        images = augment(images, **self.values)
        if not self.warps:
            return images
        x = warp(images.float() / 255, self.img_size or images.shape[-1], **self.geometry)
        if self.late_jitter[0] > 0:
            x = jitter_colors(x, self.late_jitter[0], self.late_jitter[1] == "random")
        return x


# --------------------------------------------------------------------------- P2: joint transforms on the CPU


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, mask):
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, mask):
        if random.random() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


class RandomVerticalFlip(RandomHorizontalFlip):
    def __call__(self, image, mask):
        if random.random() < self.p:
            return image.flip(-2), mask.flip(-2)
        return image, mask


class RandomRotate90:
    """Rotate by 0/90/180/270 degrees (aerial tiles have no "up"); non-square: 0/180 only."""

    def __call__(self, image, mask):
        k = random.randrange(4) if mask.shape[0] == mask.shape[1] else random.choice((0, 2))
        return image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))


class RandomCrop:
    """Random ``size x size`` crop; smaller inputs are padded (image 0, mask IGNORE_INDEX)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image, mask):
        h, w = mask.shape
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0)
            mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = mask.shape
        top, left = random.randint(0, h - self.size), random.randint(0, w - self.size)
        return (image[:, top:top + self.size, left:left + self.size],
                mask[top:top + self.size, left:left + self.size])


# P2's policies (--augment). Aerial tiles have no "up", so every symmetry of the square (the dihedral
# group D4: flips and 90-degree turns) gives another plausible tile.
P2_POLICIES = {
    "none": (),
    "flips": (RandomHorizontalFlip, RandomVerticalFlip),
    "d4": (RandomHorizontalFlip, RandomVerticalFlip, RandomRotate90),
}


def get_transform(train, crop_size=None, augment="none"):
    """Training: the ``augment`` policy, then a random ``crop_size`` crop if given; eval: identity."""
    ts = []
    if train:
        ts += [t() for t in P2_POLICIES[augment]]
        if crop_size:
            ts.append(RandomCrop(crop_size))
    return Compose(ts)
