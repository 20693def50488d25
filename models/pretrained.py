"""Backbone weight loaders of the registry: find and read ImageNet VGG16 / VGG16-BN weights
for the FCN backbones, and copy them in. Never downloads.

``spec`` is what the user passed as ``--pretrained``: a path to a ``.pth`` file, ``auto``
(torchvision's cache, where ``torchvision.models.vgg16(weights=...)`` stores its download),
or ``none`` (train from scratch). ``VGG16`` and ``VGG16_BN`` are the loaders the registry
(``models/__init__.py``) gives FCN32s and FCN8s: ``load(spec)`` the state dict, then
``copy_into(model, state_dict)`` (``models.vgg_init.copy_params_from_vgg16``).
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from .vgg_init import copy_params_from_vgg16, vgg_variant

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


@dataclass(frozen=True)
class VGGBackbone:
    """An ImageNet VGG16 backbone loader: ``variant`` names torchvision's weights (``vgg16`` or
    ``vgg16_bn``), ``description`` is how messages and ``--help`` call them."""

    variant: str
    description: str

    def load(self, spec):
        """The state dict ``spec`` (``--pretrained``) names, or None for ``none``; FileNotFoundError
        or ValueError (one line naming the file and where weights go) otherwise."""
        return load_vgg_state_dict(spec, self.variant)

    def copy_into(self, model, state_dict, copy_fc=True):
        """Copy ``state_dict`` into ``model``'s backbone (and fc6/fc7 with ``copy_fc``); the names copied."""
        return copy_params_from_vgg16(model, state_dict, copy_fc=copy_fc)


VGG16 = VGGBackbone("vgg16", "ImageNet VGG16")
VGG16_BN = VGGBackbone("vgg16_bn", "ImageNet VGG16-BN")
