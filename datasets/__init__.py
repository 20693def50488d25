"""Datasets for both problems in their official layouts, the mask codec, augmentation by named policy
(``datasets.augment``: P1's batched on the device, P2's joint image + mask transforms) and the synthetic data."""
from .common import DataError, read_rgb
from .masks import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES, PALETTE, class_to_rgb, rgb_to_class
from .p1 import P1Images, parse_label
from .p2 import IGNORE_INDEX, P2Tiles, list_pairs, read_mask

__all__ = ["DataError", "read_rgb", "CLASS_COLORS", "CLASS_NAMES", "NUM_CLASSES", "PALETTE", "class_to_rgb", "rgb_to_class",
           "P1Images", "parse_label", "IGNORE_INDEX", "P2Tiles", "list_pairs", "read_mask"]
