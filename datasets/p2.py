"""P2 segmentation data: ``<id>_sat.jpg`` + ``<id>_mask.png`` pairs (DeepGlobe tiles, 512x512).
Images may also be named ``<id>_sat.jpeg`` or in another letter case (``<id>_sat.JPG``); masks
are ``<id>_mask.png`` exactly, as the course grader pairs them.

``__getitem__`` returns ``(uint8 3 x H x W image, uint8 H x W class map)``; class 255 marks
pixels to ignore (padding added by a crop). The file list is checked up front (every image
has its mask and vice versa, sizes agree), and all bad files are reported together. With a
``cache_dir`` every image and mask is decoded once into a uint8 memmap, so later epochs read
no JPEG/PNG and do no RGB -> class decoding.
"""
import os
import sys

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .cache import cache_tag, cached_arrays
from .common import IMAGE_EXTS, DataError, format_problems, image_size, list_dir, read_rgb, warn_ignored
from .masks import rgb_to_class

SAT_SUFFIX = "_sat.jpg"
SAT_SUFFIXES = (SAT_SUFFIX, "_sat.jpeg")  # matched in any letter case
MASK_SUFFIX = "_mask.png"
IGNORE_INDEX = 255


def image_id(name):
    """``<id>`` of an image name ``<id>_sat.jpg`` (also ``.jpeg``, any letter case: cameras and
    Windows tools write ``.JPG``), else None."""
    low = name.lower()
    suffix = next((s for s in SAT_SUFFIXES if low.endswith(s)), None)
    return name[: -len(suffix)] if suffix and len(name) > len(suffix) else None


def list_pairs(root, require_masks=True):
    """``{id: image file name}`` of ``root``, sorted by id; DataError listing every image
    without mask / mask without image (``require_masks``), and every id with two images
    (``a_sat.jpg`` and ``a_sat.JPG`` would write one ``a_mask.png``)."""
    names = list_dir(root)
    images, twins = {}, []
    for n in names:
        i = image_id(n)
        if i is not None:
            if i in images:
                twins.append(f"{os.path.join(root, n)}: a second image of id {i!r} (beside {images[i]}); "
                             f"both would be {i}{MASK_SUFFIX}: rename or remove one")
            else:
                images[i] = n
    if twins:
        raise DataError(format_problems(f"{root}: {len(twins)} image(s) share an id:", twins))
    sats = set(images)
    masks = {n[: -len(MASK_SUFFIX)] for n in names if n.endswith(MASK_SUFFIX)}
    other = [n for n in names if image_id(n) is None and not n.endswith(MASK_SUFFIX)]
    bad_images = [n for n in other if n.lower().endswith(IMAGE_EXTS)]
    warn_ignored(root, [n for n in other if n not in bad_images])
    problems = [f"{os.path.join(root, n)}: image not named <id>{SAT_SUFFIX} or <id>{MASK_SUFFIX}" for n in bad_images]
    if require_masks:
        problems += [f"{os.path.join(root, images[i])}: has no mask {i + MASK_SUFFIX}" for i in sorted(sats - masks)]
        problems += [f"{os.path.join(root, i + MASK_SUFFIX)}: has no image {i + SAT_SUFFIX}" for i in sorted(masks - sats)]
    if problems and require_masks:
        raise DataError(format_problems(f"{root}: {len(problems)} problem(s) with the file list:", problems))
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not sats:
        raise DataError(f"{root}: no <id>{SAT_SUFFIX} images in this folder")
    return {i: images[i] for i in sorted(sats)}


def read_mask(path):
    """Decode an RGB mask file into an ``H x W`` uint8 class map (the grader's reading)."""
    return rgb_to_class(read_rgb(path))


class P2Tiles(Dataset):
    def __init__(self, root, transform=None, require_masks=True, cache_dir=None, progress=True):
        self.root = root
        self.transform = transform
        self.has_masks = require_masks
        pairs = list_pairs(root, require_masks)
        self.ids = list(pairs)
        self.image_paths = [os.path.join(root, pairs[i]) for i in self.ids]
        self.mask_paths = [os.path.join(root, i + MASK_SUFFIX) for i in self.ids] if require_masks else []
        self.sizes = self._check_sizes()
        self.images = self.masks = None
        if cache_dir and len(set(self.sizes)) == 1:
            self._load_cache(cache_dir, progress)

    def _check_sizes(self):
        problems, sizes = [], []
        for k, img_path in enumerate(self.image_paths):
            try:
                size = image_size(img_path)
                if self.has_masks:
                    msize = image_size(self.mask_paths[k])
                    if msize != size:
                        problems.append(f"{self.mask_paths[k]}: mask is {msize[0]}x{msize[1]} but its image is "
                                        f"{size[0]}x{size[1]}")
                sizes.append(size)
            except DataError as e:
                problems.append(str(e))
        if problems:
            raise DataError(format_problems(f"{self.root}: {len(problems)} bad file(s):", problems))
        return sizes

    def _load_cache(self, cache_dir, progress):
        names = [os.path.basename(p) for p in self.image_paths + self.mask_paths]

        def build():
            w, h = self.sizes[0]
            images = np.empty((len(self.ids), h, w, 3), dtype=np.uint8)
            masks = np.empty((len(self.ids), h, w), dtype=np.uint8) if self.has_masks else None
            problems = []
            for k in tqdm(range(len(self.ids)), desc=f"cache {self.root}", leave=False,
                          disable=None if progress else True):
                try:
                    images[k] = read_rgb(self.image_paths[k])
                    if self.has_masks:
                        masks[k] = read_mask(self.mask_paths[k])
                except DataError as e:
                    problems.append(str(e))
            if problems:
                raise DataError(format_problems(f"{self.root}: {len(problems)} bad file(s):", problems))
            return {"images": images, "masks": masks} if self.has_masks else {"images": images}

        arrays = cached_arrays(cache_dir, self.root, names, cache_tag(self.root, "p2"), build)
        self.images, self.masks = arrays["images"], arrays.get("masks")

    def load(self, k):
        """``(H x W x 3 uint8 image, H x W uint8 class map or None)`` of item ``k``."""
        if self.images is not None:
            return self.images[k], (self.masks[k] if self.masks is not None else None)
        image = read_rgb(self.image_paths[k])
        return image, (read_mask(self.mask_paths[k]) if self.has_masks else None)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        image, mask = self.load(k)
        image = torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1)
        if mask is None:
            mask = torch.full(image.shape[1:], IGNORE_INDEX, dtype=torch.uint8)
        else:
            mask = torch.from_numpy(np.require(mask, requirements=("C", "W")))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
