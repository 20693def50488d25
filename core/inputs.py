"""Model inputs: a uint8 batch made into what the model takes, on the device.

Datasets return uint8 tensors; ``make_prepare`` moves a batch to the device, applies P1's
training augmentation there (a ``datasets.augment.P1Augment`` its caller builds), converts to
normalised float, resizes P1 images to the model's input side and sets the memory format;
``model_inputs`` is the same without augmentation (inference). ``NORMALIZATIONS`` names the fixed input scalings
(``--normalize``). Dataset statistics: ``datasets.stats``.
"""
import torch
import torch.nn.functional as F

# torchvision's ImageNet statistics (the normalisation its pretrained VGG16 weights expect).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# CIFAR-10 training-set channel statistics, the usual constants for 32x32 natural photos.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


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


def fixed_preprocess(name):
    """The checkpoint ``preprocess`` of a ``NORMALIZATIONS`` name."""
    mean, std = NORMALIZATIONS[name]
    return {"mean": list(mean), "std": list(std)}


def model_inputs(images, mean, std, img_size=None, channels_last=False):
    """uint8 N x 3 x h x w (on the device) -> normalised float, resized to ``img_size`` squared
    when given (bilinear; normalising first is equivalent, as bilinear weights sum to 1)."""
    x = to_float(images, mean, std)
    if img_size and tuple(x.shape[-2:]) != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_prepare(device, preprocess, img_size=None, channels_last=False, augment=None):
    """``prepare((uint8 images, targets)) -> (model inputs, int64 targets)`` on ``device``.

    ``preprocess`` is the checkpoint's ``{"mean", "std"}``; ``augment`` (P1 training) a
    ``datasets.augment.P1Augment`` for ``img_size``, or None. Without a warp (``augment.warps``
    False) the augmented uint8 images are normalised and resized; a warp returns them in 0..1
    floats at ``img_size``, and they are normalised there.
    """
    if augment is not None and augment.warps and augment.img_size != img_size:
        raise ValueError(f"the augmentation warps to {augment.img_size}, the model inputs are {img_size}")
    mean = torch.tensor(preprocess["mean"], device=device)
    std = torch.tensor(preprocess["std"], device=device)

    def prepare(batch):
        images, targets = batch
        images = images.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images)
        if augment is not None and augment.warps:
            x = (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        else:
            inputs = model_inputs(images, mean, std, img_size, channels_last)
        return inputs, targets.to(device, non_blocking=True).long()

    return prepare
