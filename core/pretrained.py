"""Find and read ImageNet VGG16 / VGG16-BN weights for the FCN backbones. Never downloads.

``spec`` is what the user passed as ``--pretrained``: a path to a ``.pth`` file, ``auto``
(torchvision's cache, where ``torchvision.models.vgg16(weights=...)`` stores its download),
or ``none`` (train from scratch). Copy the weights into a model with
``models.copy_params_from_vgg16``.
"""
from pathlib import Path

import torch

from models.vgg_init import vgg_variant

# File names torchvision gives the ImageNet checkpoints (torchvision.models.VGG16_Weights /
# VGG16_BN_Weights.IMAGENET1K_V1).
TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg16_bn": "vgg16_bn-6c64b313.pth"}


def _cache_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hint(variant):
    return (f"pass --pretrained PATH to a torchvision {variant} state dict, or put it at "
            f"{_cache_dir() / TORCHVISION_FILES[variant]}, or use --pretrained none to train from scratch")


def _find_in_cache(variant):
    cache = _cache_dir()
    candidates = [cache / TORCHVISION_FILES[variant]]
    for path in sorted(cache.glob("vgg16*.pth")):
        if path.name.startswith("vgg16_bn") == (variant == "vgg16_bn"):
            candidates.append(path)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {variant} weights in {cache}; {_hint(variant)}")


def load_vgg_state_dict(spec, variant):
    """Return the ``variant`` (``"vgg16"`` or ``"vgg16_bn"``) state dict ``spec`` names,
    or None for ``spec == "none"``.

    Raises FileNotFoundError when the file is absent and ValueError when it is unreadable
    or holds the other variant; each message names the file and where weights go.
    """
    if variant not in TORCHVISION_FILES:
        raise ValueError(f"variant must be one of {', '.join(TORCHVISION_FILES)}, got {variant!r}")
    spec = str(spec)
    if spec.lower() == "none":
        return None
    path = _find_in_cache(variant) if spec.lower() == "auto" else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_hint(variant)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a checkpoint, unsafe pickle...
        raise ValueError(f"cannot read {path} ({type(e).__name__}); the file is corrupt or not "
                         f"a state dict; {_hint(variant)}") from e
    if isinstance(obj, dict):
        obj = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict; {_hint(variant)}")
    try:
        found = vgg_variant(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; {_hint(variant)}") from None
    if found != variant:
        raise ValueError(f"{path} holds {found} weights but {variant} is needed "
                         f"(BatchNorm keys decide); {_hint(variant)}")
    return obj
