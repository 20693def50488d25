"""Copy ImageNet VGG16 / VGG16-BN weights (a torchvision state dict) into the FCNs.

Pure tensor code: reading the file is ``core.pretrained.load_backbone_state_dict``'s job. As in
wkentaro/pytorch-fcn's ``copy_params_from_vgg16``, the conv layers are copied one to one
and the first two classifier layers are reshaped into the 7x7 ``fc6`` and 1x1 ``fc7``.
"""
import torch
from torch import nn

# Buffers and parameters copied for each BatchNorm2d of VGG16-BN.
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def vgg_variant(state_dict):
    """Return ``"vgg16_bn"`` or ``"vgg16"`` for a torchvision VGG16 state dict.

    Raises ValueError when the dict is not a torchvision VGG16 state dict at all.
    """
    missing = [k for k in ("features.0.weight", "classifier.0.weight", "classifier.3.weight")
               if k not in state_dict]
    if missing:
        raise ValueError(f"not a torchvision VGG16 state dict: missing {', '.join(missing)}")
    # torchvision's vgg16_bn puts a BatchNorm2d right after the first conv (features.1).
    return "vgg16_bn" if "features.1.running_mean" in state_dict else "vgg16"


def _copy(dst, state_dict, dst_name, src_name, reshape=False):
    if src_name not in state_dict:
        raise ValueError(f"not a torchvision VGG16 state dict: missing {src_name}")
    src = state_dict[src_name]
    fits = src.numel() == dst.numel() if reshape else src.shape == dst.shape
    if not fits:
        raise ValueError(f"shape mismatch copying {src_name} {tuple(src.shape)} into "
                         f"{dst_name} {tuple(dst.shape)}")
    dst.copy_(src.reshape(dst.shape))


def copy_params_from_vgg16(model, state_dict, copy_fc=True):
    """Copy a torchvision VGG16 state dict into an FCN's backbone and, with ``copy_fc``, fc6 and fc7.

    ``FCN32VGg`` takes a ``vgg16`` state dict, ``FCN8VGG`` a ``vgg16_bn`` one (convs plus
    BatchNorm weights, biases and running statistics). ``classifier.0`` (4096 x 25088) becomes
    ``fc6`` (4096 x 512 x 7 x 7) and ``classifier.3`` becomes ``fc7`` (4096 x 4096 x 1 x 1);
    ``bn6``/``bn7`` and the score/upsampling layers keep their initialisation. ``copy_fc=False``
    (the seed author's code) leaves fc6/fc7 as initialised too.

    Returns the names of the model's parameters and buffers that were overwritten.
    """
    expected = getattr(model, "vgg_variant", None)
    if expected is None:
        raise TypeError(f"{type(model).__name__} has no VGG16 backbone to initialise")
    found = vgg_variant(state_dict)
    if found != expected:
        raise ValueError(f"{type(model).__name__} needs a {expected} state dict, got {found} "
                         f"(BatchNorm keys {'present' if found == 'vgg16_bn' else 'absent'})")
    if model.fc6.in_channels != 512:
        raise ValueError("ImageNet VGG16 weights only fit width=1 models")

    # The stages concatenated have torchvision's vgg16(_bn).features layout, index for index.
    layers = [(f"{stage}.{i}", m) for stage in model.vgg_stages
              for i, m in enumerate(getattr(model, stage))]
    copied = []
    with torch.no_grad():
        for index, (name, m) in enumerate(layers):
            if isinstance(m, nn.Conv2d):
                keys = ("weight", "bias")
            elif isinstance(m, nn.BatchNorm2d):
                keys = _BN_KEYS
            else:
                continue
            for key in keys:
                _copy(getattr(m, key), state_dict, f"{name}.{key}", f"features.{index}.{key}")
                copied.append(f"{name}.{key}")

        for fc, src in (("fc6", "classifier.0"), ("fc7", "classifier.3")) if copy_fc else ():
            conv = getattr(model, fc)
            _copy(conv.weight, state_dict, f"{fc}.weight", f"{src}.weight", reshape=True)
            _copy(conv.bias, state_dict, f"{fc}.bias", f"{src}.bias")
            copied += [f"{fc}.weight", f"{fc}.bias"]
    return copied
