"""A test-only Problem 2 model, registered as ``toy`` when this module is imported: one file plus
its registry line, as README's "Adding a model" describes. ``tests/test_toy_model.py`` trains,
checkpoints and grades it through the real ``p2_train.py`` / ``p2_test.py``, which name no model.

Two convolutions at full resolution; like FCN8s it takes a fixed input size (``input_size``), so
the scripts' size checks and the sliding-window predictor are exercised through the registry.
It has no backbone (``--pretrained`` must be ``none``). Import it only in a subprocess: the
registry is process-wide and the other tests expect the three real models.
"""
from torch import nn

from models import register
from models.classifier import check_width
from models.fcn import check_head_init


class ToyNet(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> conv 1x1 to ``num_classes``; takes the P2 constructor arguments."""

    input_size = 512

    def __init__(self, num_classes=7, width=1, head_init="fcn"):
        super().__init__()
        check_width(width)
        check_head_init(head_init)  # both initialisations are PyTorch's defaults here
        channels = 64 // width
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.score = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"ToyNet takes {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return self.score(self.relu1(self.bn1(self.conv1(x))))  # N x num_classes x H x W


register("toy", ToyNet, "p2")
