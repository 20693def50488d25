"""Model registry: scripts and checkpoints name models with ``get_model(name, **kwargs)``.

    classifier  Problem 1 VGG-style classifier (``Classifier``)
    fcn32s      Problem 2 baseline, VGG16-FCN32s (``FCN32VGg``), ImageNet VGG16 backbone
    fcn8s       Problem 2 improved model, BN-VGG16-FCN8s (``FCN8VGG``), 512x512 inputs only,
                ImageNet VGG16-BN backbone

A new model is one file in ``models/`` plus its ``register`` line below (``models/registry.py``
says what an entry carries). Constructors take the keyword arguments their training script
passes: P1 ``num_classes, width, img_size``; P2 ``num_classes, width, head_init``.
"""
from .backbones import VGG16, VGG16_BN
from .classifier import Classifier, check_img_size
from .fcn import FCN8VGG, FCN32VGg
from .registry import MODELS, get_model, model_names, register
from .vgg_init import copy_params_from_vgg16

register("classifier", Classifier, "p1", check_size=check_img_size)
register("fcn32s", FCN32VGg, "p2", backbone=VGG16)
register("fcn8s", FCN8VGG, "p2", backbone=VGG16_BN)

__all__ = ["MODELS", "Classifier", "FCN32VGg", "FCN8VGG", "copy_params_from_vgg16", "get_model", "model_names",
           "register"]
