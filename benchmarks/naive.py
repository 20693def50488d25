"""The naive baselines: the way course code for this homework typically reads (see
``benchmarks/speed.py`` for what each row compares them with)."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from core.course_grader import read_mask_array
from core.inputs import IMAGENET_MEAN, IMAGENET_STD
from datasets import parse_label


class NaiveP2Tiles(Dataset):
    """Per item: PIL decode, PIL flips/rotations, ToTensor + Normalize, grader-style mask decoding."""

    def __init__(self, tiles, train):
        self.tiles, self.train = tiles, train
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.tiles.ids)

    def __getitem__(self, k):
        image = Image.open(self.tiles.image_paths[k]).convert("RGB")
        mask = Image.open(self.tiles.mask_paths[k]).convert("RGB")
        if self.train:
            if random.random() < 0.5:
                image, mask = TF.hflip(image), TF.hflip(mask)
            if random.random() < 0.5:
                image, mask = TF.vflip(image), TF.vflip(mask)
            angle = 90 * random.randrange(4)
            if angle:
                image, mask = image.rotate(angle), mask.rotate(angle)
        return self.to_tensor(image), torch.from_numpy(read_mask_array(np.array(mask))).long()


class NaiveP1Images(Dataset):
    """Per item: PIL decode and torchvision transforms (flip, Resize to ``img_size``, ToTensor, Normalize)."""

    def __init__(self, root, files, img_size, mean, std):
        self.paths = [os.path.join(root, f) for f in files]
        self.labels = [parse_label(f) for f in files]
        self.transform = T.Compose([T.RandomHorizontalFlip(), T.Resize(img_size), T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        return self.transform(Image.open(self.paths[k]).convert("RGB")), self.labels[k]


def naive_p2_prepare(device):
    """Per-item float32 normalisation on the CPU, then stack and move (fp32, NCHW)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def prepare(items):
        images = torch.stack([(image.float() / 255 - mean) / std for image, _ in items])
        masks = torch.stack([mask.long() for _, mask in items])
        return images.to(device), masks.to(device)

    return prepare


def naive_loader_prepare(device):
    def prepare(batch):
        images, targets = batch
        return images.to(device), targets.to(device)

    return prepare
