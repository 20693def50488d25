"""Find and read a model's pretrained backbone weights (the ``models.backbones.Backbone`` its
registry entry names, e.g. ImageNet VGG16-BN for FCN8s). Never downloads.

``spec`` is what the user passed as ``--pretrained``: a path to a ``.pth`` file, ``auto``
(torchvision's cache, where ``torchvision.models.vgg16(weights=...)`` stores its download),
or ``none`` (train from scratch). Copy the weights in with the backbone's ``copy_into``.
"""
from pathlib import Path

import torch

from models.backbones import BACKBONES


def _cache_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hint(backbone):
    return (f"pass --pretrained PATH to a torchvision {backbone.name} state dict, or put it at "
            f"{_cache_dir() / backbone.weights_file}, or use --pretrained none to train from scratch")


def _find_in_cache(backbone):
    """torchvision's file name first, then any ``<name>-*.pth`` / ``<name>.pth`` (``vgg16-*`` is
    never a ``vgg16_bn`` file)."""
    cache = _cache_dir()
    candidates = [cache / backbone.weights_file]
    candidates += [p for p in sorted(cache.glob(f"{backbone.name}*.pth")) if p.name[len(backbone.name)] in "-."]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {backbone.name} weights in {cache}; {_hint(backbone)}")


def load_backbone_state_dict(spec, name):
    """Return the state dict of backbone ``name`` (``models.backbones.BACKBONES``: ``"vgg16"``,
    ``"vgg16_bn"``) that ``spec`` names, or None for ``spec == "none"``.

    Raises FileNotFoundError when the file is absent and ValueError when it is unreadable
    or holds another architecture; each message names the file and where weights go.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone variant {name!r}; known: {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]
    spec = str(spec)
    if spec.lower() == "none":
        return None
    path = _find_in_cache(backbone) if spec.lower() == "auto" else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_hint(backbone)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a checkpoint, unsafe pickle...
        raise ValueError(f"cannot read {path} ({type(e).__name__}); the file is corrupt or not "
                         f"a state dict; {_hint(backbone)}") from e
    if isinstance(obj, dict):
        obj = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict; {_hint(backbone)}")
    try:
        backbone.check(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; {_hint(backbone)}") from None
    return obj
