"""Batch preparation on the device (torchvision references' ``presets.py``).

Datasets return uint8 tensors; ``make_prepare`` moves a batch to the device, applies P1's
batched augmentation there, converts to normalised float, resizes P1 images to the model's
input side and sets the memory format. Dataset statistics: ``datasets.stats``.
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


def jitter_colors(images, strength):
    """Brightness, contrast and saturation, each scaled by a per-image factor from
    ``[1 - strength, 1 + strength]`` (torchvision ColorJitter's ranges, in a fixed order)."""
    n = images.shape[0]
    x = images.float() / 255

    def factor():
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - strength), 1 + strength)

    def gray(t):
        return (t * torch.tensor(LUMA, device=t.device).view(1, 3, 1, 1)).sum(1, keepdim=True)

    x = (x * factor()).clamp_(0, 1)
    mean = gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp_(0, 1)
    g = gray(x)
    x = ((x - g) * factor() + g).clamp_(0, 1)
    return (x * 255).round_().to(torch.uint8)


def augment(images, hflip=False, crop_padding=0, color_jitter=0.0):
    """Random horizontal flip, crop with zero padding and colour jitter of a uint8
    N x 3 x H x W batch, batched on its device with per-image random draws from that device's
    global RNG (saved in checkpoints). Returns the input itself when all options are off."""
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
        images = jitter_colors(images, color_jitter)
    return images


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

    ``preprocess`` is the checkpoint's ``{"mean", "std"}``; ``aug`` the keyword arguments of
    ``augment`` (P1 training) or None.
    """
    mean = torch.tensor(preprocess["mean"], device=device)
    std = torch.tensor(preprocess["std"], device=device)

    def prepare(batch):
        images, targets = batch
        images = images.to(device, non_blocking=True)
        if aug:
            images = augment(images, **aug)
        return (model_inputs(images, mean, std, img_size, channels_last),
                targets.to(device, non_blocking=True).long())

    return prepare
