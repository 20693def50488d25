"""Pretrained backbones as the registry names them: what weights a model's backbone takes and how
they are copied in. Pure descriptions (STYLE: no file I/O in ``models/``); ``core/pretrained.py``
finds and reads the file a ``Backbone`` names.

A model with another backbone is one more ``Backbone`` here (torchvision's architecture name, the
file name its cache gives the ImageNet weights, a function naming the architecture a state dict
holds, and the copy function) and its ``register(..., backbone=...)`` line.
"""
from dataclasses import dataclass
from typing import Callable

from .vgg_init import copy_params_from_vgg16, vgg_variant


@dataclass(frozen=True)
class Backbone:
    name: str  # torchvision's architecture name, e.g. "vgg16_bn"
    description: str  # how messages and --help call the weights
    weights_file: str  # the file name torchvision's cache gives the ImageNet weights
    identify: Callable  # state dict -> the architecture name it holds; ValueError when none
    copy: Callable  # (model, state_dict, copy_fc) -> the names copied

    def check(self, state_dict):
        """ValueError (naming both) when ``state_dict`` holds another architecture's weights."""
        found = self.identify(state_dict)
        if found != self.name:
            raise ValueError(f"holds {found} weights but {self.name} is needed")

    def copy_into(self, model, state_dict, copy_fc=True):
        """Copy ``state_dict`` into ``model``'s backbone (and fc6/fc7 with ``copy_fc``); the names copied."""
        return self.copy(model, state_dict, copy_fc=copy_fc)


# File names of torchvision.models.VGG16_Weights / VGG16_BN_Weights.IMAGENET1K_V1.
VGG16 = Backbone("vgg16", "ImageNet VGG16", "vgg16-397923af.pth", vgg_variant, copy_params_from_vgg16)
VGG16_BN = Backbone("vgg16_bn", "ImageNet VGG16-BN", "vgg16_bn-6c64b313.pth", vgg_variant, copy_params_from_vgg16)
BACKBONES = {b.name: b for b in (VGG16, VGG16_BN)}
