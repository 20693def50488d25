"""P1 classification data: ``<label>_<index>.png`` files, 32x32 RGB, labels 0..49.

The whole folder is decoded once into memory (22,500 x 3 x 32 x 32 uint8 is 69 MB), so
epochs read no PNG; augmentation and the upsampling to the model's input size run batched
on the device (see ``p1_train.py``). Test folders may hold names without a label.
"""
import os

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .cache import cache_tag, cached_arrays
from .common import IMAGE_EXTS, DataError, format_problems, list_dir, read_rgb, warn_ignored

NUM_CLASSES = 50
IMAGE_SIZE = 32
UNLABELLED = -1


def parse_label(name, num_classes=NUM_CLASSES):
    """``13_207.png`` -> 13; None when the name carries no label in ``0..num_classes-1``.
    Only ASCII digits make a label: ``٣_1.png`` (Arabic-Indic three) or ``²_1.png`` carry none."""
    head = name.split("_", 1)[0]
    if "_" not in name or not (head.isascii() and head.isdigit()):
        return None
    label = int(head)
    return label if label < num_classes else None


def resize_uint8(arr, size):
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


class P1Images(Dataset):
    """Returns ``(uint8 3 x 32 x 32 tensor, label)``; label is -1 for unlabelled names.

    ``require_labels`` (training/validation) makes a name without a label an error.
    Images of another size are resized to 32x32 (a warning says how many). With a
    ``cache_dir`` the decoded array is kept on disk and reused while the folder is unchanged.
    An unreadable file is an error listing every such file, unless ``skip_unreadable``
    (grading): then the readable images are kept and ``unreadable`` holds one message per
    file left out.
    """

    def __init__(self, root, require_labels=True, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, cache_dir=None,
                 progress=True, skip_unreadable=False):
        self.root = root
        names = list_dir(root)
        self.files = [n for n in names if n.lower().endswith(IMAGE_EXTS)]
        warn_ignored(root, [n for n in names if n not in self.files])
        if not self.files:
            raise DataError(f"{root}: no image files (.png/.jpg) in this folder")
        labels, problems = [], []
        for name in self.files:
            label = parse_label(name, num_classes)
            if label is None and require_labels:
                problems.append(f"{os.path.join(root, name)}: name carries no label in 0..{num_classes - 1} "
                                "(expected <label>_<index>.png)")
            labels.append(UNLABELLED if label is None else label)
            if not os.path.exists(os.path.join(root, name)) and not skip_unreadable:  # before the cache reads sizes
                problems.append(f"{os.path.join(root, name)}: not a readable image (dangling symbolic link)")
        if problems:
            raise DataError(format_problems(f"{root}: {len(problems)} bad file(s):", problems))

        self.unreadable = []

        def build():
            images, problems = self._decode_all(image_size, progress)
            problems = [p for p in problems if p is not None]
            if problems:
                raise DataError(format_problems(f"{self.root}: {len(problems)} bad file(s):", problems))
            return {"images": images}

        if skip_unreadable:
            images, problems = self._decode_all(image_size, progress)
            keep = [k for k, p in enumerate(problems) if p is None]
            self.unreadable = [p for p in problems if p is not None]
            self.files, labels, images = [self.files[k] for k in keep], [labels[k] for k in keep], images[keep]
        elif cache_dir:
            images = cached_arrays(cache_dir, root, self.files, cache_tag(root, f"p1s{image_size}"), build)["images"]
        else:
            images = build()["images"]
        self.images = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def _decode_all(self, image_size, progress):
        """``(N x size x size x 3 uint8, [None or the DataError message of each file])``."""
        images = np.zeros((len(self.files), image_size, image_size, 3), dtype=np.uint8)
        problems, resized = [None] * len(self.files), 0
        name = os.path.basename(self.root.rstrip("/"))
        for i, f in enumerate(tqdm(self.files, desc=f"decode {name}", leave=False,
                                   disable=None if progress else True)):
            try:
                arr = read_rgb(os.path.join(self.root, f))
            except DataError as e:
                problems[i] = str(e)
                continue
            if arr.shape[:2] != (image_size, image_size):
                arr = resize_uint8(arr, image_size)
                resized += 1
            images[i] = arr
        if resized:
            print(f"warning: {self.root}: {resized} image(s) were not {image_size}x{image_size} and were resized")
        return images, problems

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]
