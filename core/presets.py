"""Batch preparation on the device (torchvision references' ``presets.py``).

Datasets return uint8 tensors; ``make_prepare`` moves a batch to the device, applies P1's
batched augmentation there (flip, padded crop, colour jitter; the seed author's rotation,
perspective and affine as one ``warp``), converts to normalised float, resizes P1 images to the
model's input side and sets the memory format. ``NORMALIZATIONS`` names the fixed input
scalings (``--normalize``). Dataset statistics: ``datasets.stats``.
"""
import torch
import torch.nn.functional as F

# torchvision's ImageNet statistics (the normalisation its pretrained VGG16 weights expect).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# CIFAR-10 training-set channel statistics, the usual constants for 32x32 natural photos.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def to_float(images, mean, std):
    """uint8 N x 3 x H x W (on any device) -> normalised float: ``(x/255 - mean) / std``."""
    mean = torch.as_tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return images.float().mul_(1 / (255 * std)).sub_(mean / std)


# Fixed input scalings by ``--normalize`` name, as a checkpoint's ``preprocess`` (``(x/255 - mean) / std``).
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar": (CIFAR_MEAN, CIFAR_STD),
    "unit": ((0.0,) * 3, (1.0,) * 3),  # 0..1, no mean/std (the seed author's P1 inputs)
    "raw": ((0.0,) * 3, (1 / 255,) * 3),  # 0..255 pixel values (the seed author's FCN32s inputs); exact in float32
}
# torchvision RandomPerspective's default distortion_scale (the seed author's code used the defaults).
PERSPECTIVE_DISTORTION = 0.5


def fixed_preprocess(name):
    """The checkpoint ``preprocess`` of a ``NORMALIZATIONS`` name."""
    mean, std = NORMALIZATIONS[name]
    return {"mean": list(mean), "std": list(std)}


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


def model_inputs(images, mean, std, img_size=None, channels_last=False):
    """uint8 N x 3 x h x w (on the device) -> normalised float, resized to ``img_size`` squared
    when given (bilinear; normalising first is equivalent, as bilinear weights sum to 1)."""
    x = to_float(images, mean, std)
    if img_size and tuple(x.shape[-2:]) != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_prepare(device, preprocess, img_size=None, channels_last=False, aug=None):
    """``prepare((uint8 images, targets)) -> (model inputs, int64 targets)`` on ``device``.

    ``preprocess`` is the checkpoint's ``{"mean", "std"}``; ``aug`` (P1 training) the keyword
    arguments of ``augment`` and ``warp`` (``rotation``, ``perspective``, ``affine``), or None.
    Without a warp the uint8 images are flipped, cropped and jittered at their own size, then
    normalised and resized. With one, the images are flipped (and cropped), warped to
    ``img_size`` in 0..1 floats, colour-jittered there (after the warps, the author's order),
    then normalised.
    """
    mean = torch.tensor(preprocess["mean"], device=device)
    std = torch.tensor(preprocess["std"], device=device)
    aug = dict(aug or {})
    geometry = {k: v for k in ("rotation", "perspective", "affine") if (v := aug.pop(k, 0.0))}
    late_jitter = (aug.pop("color_jitter", 0.0), aug.get("jitter_order", "fixed")) if geometry else None

    def prepare(batch):
        images, targets = batch
        images = images.to(device, non_blocking=True)
        if aug:
            images = augment(images, **aug)
        if geometry:
            x = warp(images.float() / 255, img_size or images.shape[-1], **geometry)
            if late_jitter[0] > 0:
                x = jitter_colors(x, late_jitter[0], late_jitter[1] == "random")
            x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        else:
            inputs = model_inputs(images, mean, std, img_size, channels_last)
        return inputs, targets.to(device, non_blocking=True).long()

    return prepare
