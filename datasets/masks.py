"""The one P2 mask codec: RGB mask <-> class map, exactly as the course grader reads masks.

The grader (DLCV hw2 ``mean_iou_evaluate.read_masks``, kept as written there in
``core/course_grader.py``'s ``read_mask_array``) thresholds each channel at 128, forms
``code = 4*R + 2*G + B`` and maps codes to classes; pure red (code 4) is read as class 6
(unknown). Palette and class names: DeepGlobe land-cover, as the grader's comments name them.
"""
import io

import numpy as np
from PIL import Image

NUM_CLASSES = 7
CLASS_NAMES = ("urban", "agriculture", "rangeland", "forest", "water", "barren", "unknown")
PALETTE = np.array(
    [
        (0, 255, 255),  # 0 urban
        (255, 255, 0),  # 1 agriculture
        (255, 0, 255),  # 2 rangeland
        (0, 255, 0),  # 3 forest
        (0, 0, 255),  # 4 water
        (255, 255, 255),  # 5 barren
        (0, 0, 0),  # 6 unknown
    ],
    dtype=np.uint8,
)
# Each class's name and colour, in class order (what core.plots' P2 figures take as ``classes``).
CLASS_COLORS = dict(zip(CLASS_NAMES, PALETTE))
# index = 4R + 2G + B (channels thresholded at 128); value = class id
CODE_TO_CLASS = np.array([6, 4, 3, 0, 6, 2, 1, 5], dtype=np.uint8)


def rgb_to_class(mask):
    """Decode an ``H x W x 3`` uint8 RGB mask into an ``H x W`` uint8 class map."""
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 RGB mask, got shape {mask.shape}")
    bits = (mask[..., :3] >= 128).astype(np.uint8)
    code = (bits[..., 0] << 2) | (bits[..., 1] << 1) | bits[..., 2]
    return CODE_TO_CLASS[code]


def class_to_rgb(classes):
    """Encode an ``H x W`` integer class map (0..6) into an ``H x W x 3`` uint8 RGB mask."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class ids must be in 0..{NUM_CLASSES - 1}, got {classes.min()}..{classes.max()}")
    return PALETTE[classes]


def encode_png(classes):
    """PNG bytes of the RGB palette mask of an ``H x W`` class map (what the grader reads)."""
    buf = io.BytesIO()
    Image.fromarray(class_to_rgb(classes)).save(buf, format="PNG")
    return buf.getvalue()
