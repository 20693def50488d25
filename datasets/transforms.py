"""Joint transforms on ``(uint8 3 x H x W image, uint8 H x W mask)`` tensors.

Flips, 90-degree rotations and crops move pixels without interpolating, so the mask keeps
exact class ids (no resizing: masks are never interpolated).
"""
import random

import torch.nn.functional as F

from .p2 import IGNORE_INDEX


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


# --augment policies. Aerial tiles have no "up", so every symmetry of the square (the dihedral
# group D4: flips and 90-degree turns) gives another plausible tile.
AUGMENT_POLICIES = {
    "none": (),
    "flips": (RandomHorizontalFlip, RandomVerticalFlip),
    "d4": (RandomHorizontalFlip, RandomVerticalFlip, RandomRotate90),
}


def get_transform(train, crop_size=None, augment="none"):
    """Training: the ``augment`` policy, then a random ``crop_size`` crop if given; eval: identity."""
    ts = []
    if train:
        ts += [t() for t in AUGMENT_POLICIES[augment]]
        if crop_size:
            ts.append(RandomCrop(crop_size))
    return Compose(ts)
