"""Problem 1 classifier: the seed's 13-conv VGG-style network with a 3-layer MLP head.

At ``width=1`` and ``img_size=224`` (the 32x32 images upsampled, as the seed did) ``print``
reproduces the seed's printout layer for layer: ``cnn`` (Conv-BN-LeakyReLU(0.2) blocks,
max-pool plus dropout 0.25/0.3/0.35 after each stage, the first two convs with padding 2)
and ``fc`` (25088 -> 1024 -> 512 -> 50 with BatchNorm1d, LeakyReLU(0.2), dropout 0.5).
"""
import torch
from torch import nn

# (out_channels, padding) per conv; "M" closes a stage with max-pool + dropout.
# The padding-2 convs and the dropout rates are the seed's.
_CNN_CFG = [(64, 2), (64, 2), "M", (128, 1), (128, 1), "M",
            (256, 1), (256, 1), (256, 1), "M",
            (512, 1), (512, 1), (512, 1), "M",
            (512, 1), (512, 1), (512, 1), "M"]
_STAGE_DROPOUT = [0.25, 0.3, 0.35, 0.35, 0.35]
_FC_HIDDEN = (1024, 512)


def check_width(width):
    """Return ``width`` if it is a valid channel divisor (a positive divisor of 64)."""
    if not isinstance(width, int) or width < 1 or 64 % width:
        raise ValueError(f"width must be a positive divisor of 64 (1, 2, 4, ...), got {width!r}")
    return width


def _cnn_output_size(img_size):
    size = img_size + 4  # the two padding-2 3x3 convs each grow the map by 2
    for _ in _STAGE_DROPOUT:
        size //= 2
    return size


def check_img_size(img_size):
    """Return ``img_size`` if the five pools leave at least one pixel of it (the registry's
    input-size check: ``--img-size`` is validated without building a model)."""
    if _cnn_output_size(img_size) < 1:
        raise ValueError(f"img_size={img_size} is too small: the five pools need at least 28 pixels")
    return img_size


class Classifier(nn.Module):
    """VGG-style classifier from the seed report (Problem 1).

    Args:
        num_classes: number of output logits.
        width: divisor applied to every conv channel count and to the fc hidden sizes
            (1 = the seed's network; larger values give small models for tests).
        img_size: side of the square input the ``fc`` input size is computed from
            (224 -> 512 x 7 x 7 = 25088 as in the seed; 32 -> 512 x 1 x 1).
    """

    def __init__(self, num_classes=50, width=1, img_size=224):
        super().__init__()
        check_width(width)
        out_size = _cnn_output_size(check_img_size(img_size))
        self.img_size = img_size

        layers, in_channels, stage = [], 3, 0
        for v in _CNN_CFG:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2), nn.Dropout(_STAGE_DROPOUT[stage])]
                stage += 1
            else:
                out_channels, padding = v[0] // width, v[1]
                layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
                           nn.BatchNorm2d(out_channels),
                           nn.LeakyReLU(0.2)]
                in_channels = out_channels
        self.cnn = nn.Sequential(*layers)

        hidden1, hidden2 = (h // width for h in _FC_HIDDEN)
        self.fc = nn.Sequential(
            nn.Linear(in_channels * out_size * out_size, hidden1),
            nn.BatchNorm1d(hidden1),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.5),
            nn.Linear(hidden1, hidden2),
            nn.BatchNorm1d(hidden2),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.5),
            nn.Linear(hidden2, num_classes),
        )

    # Embeddable layers (``features(x, layer)``) -> how many ``fc`` modules they run.
    FEATURE_LAYERS = {"fc4": 5, "fc6": 7}

    def features(self, x, layer="fc6"):
        """Features for t-SNE, 512/width wide: ``fc6`` the penultimate features (output of
        ``fc[6]``, after BatchNorm and LeakyReLU: what the last Linear sees), or ``fc4`` the output
        of the Linear(1024 -> 512) ``fc[4]`` before its BatchNorm (the seed author's t-SNE)."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"Classifier built for {self.img_size}x{self.img_size} inputs, "
                             f"got {tuple(x.shape[-2:])}; resize the images or pass img_size")
        if layer not in self.FEATURE_LAYERS:
            raise ValueError(f"layer must be one of {', '.join(self.FEATURE_LAYERS)}, got {layer!r}")
        h = self.cnn(x)  # N x C x img_size/32 x img_size/32 (7x7 at 224)
        h = torch.flatten(h, 1)
        return self.fc[:self.FEATURE_LAYERS[layer]](h)  # N x 512/width

    def forward(self, x):
        return self.fc[7:](self.features(x))  # N x num_classes
