"""Model registry: scripts and checkpoints name models with ``get_model(name, **kwargs)``.

    classifier  Problem 1 VGG-style classifier (``Classifier``)
    fcn32s      Problem 2 baseline, VGG16-FCN32s (``FCN32VGg``)
    fcn8s       Problem 2 improved model, BN-VGG16-FCN8s (``FCN8VGG``)
"""
from .classifier import Classifier
from .fcn import FCN8VGG, FCN32VGg
from .vgg_init import copy_params_from_vgg16

MODELS = {
    "classifier": Classifier,
    "fcn32s": FCN32VGg,
    "fcn8s": FCN8VGG,
}

__all__ = ["MODELS", "Classifier", "FCN32VGg", "FCN8VGG", "copy_params_from_vgg16", "get_model"]


def get_model(name, **kwargs):
    """Build the model registered as ``name`` with its constructor ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
