"""Problem 2 segmentation networks: the seed's VGG16-FCN32s baseline and BN-VGG16-FCN8s.

Layer names follow the FCN Caffe prototxts as in wkentaro/pytorch-fcn
(https://github.com/wkentaro/pytorch-fcn, ``torchfcn/models/fcn32s.py`` and ``fcn8s.py``);
names, hyper-parameters and registration order follow the seed's printouts, so ``print`` at
``width=1`` reproduces them line for line. ImageNet weights are copied in by
``models.vgg_init.copy_params_from_vgg16``.

Two initialisations (``head_init``; weights loaded afterwards replace either):

    fcn      ours: kaiming convs, zero score layers, fixed upsampling kernels
             (``init_fcn_weights``); fc6/fc7 are meant to be copied from VGG's classifier
    pytorch  the seed author's code: every layer keeps PyTorch's default initialisation
             (fc6/fc7, score and upsampling layers included; only the backbone gets ImageNet
             weights)
"""
import numpy as np
import torch
from torch import nn

from .classifier import check_width

# torchvision's VGG16 configuration "D"; "M" is a 2x2 max-pool (ceil mode, as in FCN).
_VGG16_STAGE3 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
_VGG16_STAGE4 = [512, 512, 512, "M"]
_VGG16_STAGE5 = [512, 512, 512, "M"]


def _vgg_layers(cfg, in_channels, width, batch_norm, first_padding=1):
    """A torchvision-layout VGG block, so ``features.<i>`` indices line up with its weights."""
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        out_channels = v // width
        padding = first_padding if not layers else 1
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers)


def _add_fc_head(model, in_channels, fc_channels, dropout):
    """fc6 (VGG's first classifier layer as a 7x7 conv) and fc7 (1x1), each followed by
    BatchNorm, LeakyReLU(0.2) and dropout, registered in the seed's print order."""
    for i, kernel, cin in ((6, 7, in_channels), (7, 1, fc_channels)):
        setattr(model, f"fc{i}", nn.Conv2d(cin, fc_channels, kernel_size=kernel))
        setattr(model, f"bn{i}", nn.BatchNorm2d(fc_channels))
        setattr(model, f"lrelu{i}", nn.LeakyReLU(0.2, inplace=True))
        setattr(model, f"drop{i}", dropout(0.5))


def get_upsampling_weight(in_channels, out_channels, kernel_size, stride):
    """Fixed upsampling kernel for ``ConvTranspose2d(in, out, kernel_size, stride)``.

    Channel ``c`` maps to channel ``c`` only. The 1-D kernel is the triangle of wkentaro's
    ``get_upsampling_weight`` (the FCN ``bilinear`` filler), normalised so the taps of each
    output phase (taps ``k`` with equal ``k % stride``) sum to 1: a constant input then gives
    the same constant in the interior of the output. For ``kernel_size == 2 * stride`` the
    phase sums are already 1 (the classic bilinear kernel); for ``kernel_size == stride`` the
    kernel becomes nearest-neighbour.
    """
    if in_channels != out_channels:
        raise ValueError("upsampling kernels map each class to itself: in_channels must equal out_channels")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    filt = 1 - np.abs(np.arange(kernel_size) - center) / factor
    phase_sums = np.array([filt[p::stride].sum() for p in range(stride)])
    filt = filt / phase_sums[np.arange(kernel_size) % stride]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    weight[range(in_channels), range(out_channels)] = torch.from_numpy(np.outer(filt, filt)).float()
    return weight


HEAD_INITS = ("fcn", "pytorch")


def check_head_init(head_init):
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
    return head_init


def init_fcn_weights(model, score_layers):
    """FCN initialisation: kaiming convs (as torchvision's VGG), zero score layers
    (as wkentaro's FCNs), fixed upsampling kernels in every ``ConvTranspose2d``."""
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            with torch.no_grad():
                m.weight.copy_(get_upsampling_weight(m.in_channels, m.out_channels,
                                                     m.kernel_size[0], m.stride[0]))
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in score_layers:
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)


class FCN32VGg(nn.Module):
    """VGG16-FCN32s, the seed's baseline (Problem 2).

    VGG16 features (no BN) with conv1_1 padding 100 and ceil-mode pools; fc6 (7x7) and fc7
    (1x1) as convolutions, each followed by BatchNorm, LeakyReLU(0.2) and dropout 0.5;
    ``score_fr`` to ``num_classes``; ``upscore`` a stride-32 transposed conv; the output is
    cropped to the input size. Works for any input size; returns N x num_classes x H x W.

    Args:
        num_classes: number of segmentation classes.
        width: divisor applied to every channel count except ``num_classes``
            (1 = the seed's network).
        head_init: ``fcn`` (ours) or ``pytorch`` (PyTorch's defaults, the author's code).
    """

    vgg_variant = "vgg16"
    vgg_stages = ("features5",)

    def __init__(self, num_classes=7, width=1, head_init="fcn"):
        super().__init__()
        check_width(width)
        check_head_init(head_init)
        fc_channels = 4096 // width
        self.features5 = _vgg_layers(_VGG16_STAGE3 + _VGG16_STAGE4 + _VGG16_STAGE5, 3, width,
                                     batch_norm=False, first_padding=100)
        _add_fc_head(self, 512 // width, fc_channels, nn.Dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, kernel_size=1)
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=64, stride=32, bias=False)
        if head_init == "fcn":
            init_fcn_weights(self, [self.score_fr])

    def forward(self, x):
        h = self.features5(x)  # 1/32 of (input + 200 padding)
        h = self.drop6(self.lrelu6(self.bn6(self.fc6(h))))
        h = self.drop7(self.lrelu7(self.bn7(self.fc7(h))))
        h = self.score_fr(h)
        h = self.upscore(h)  # 1/1, larger than the input
        # Offset 19 is the crop layer's offset in the FCN paper's voc-fcn32s Caffe net,
        # also used by wkentaro's torchfcn/models/fcn32s.py.
        return h[:, :, 19:19 + x.size(2), 19:19 + x.size(3)].contiguous()


class FCN8VGG(nn.Module):
    """BN-VGG16-FCN8s, the seed's improved model (Problem 2).

    VGG16-BN features with VGG's padding 1 and ceil-mode pools, split at pool3 (stride 8),
    pool4 (stride 16) and pool5 (stride 32); fc6 (7x7, no padding) and fc7 (1x1) with
    BatchNorm, LeakyReLU(0.2) and Dropout2d(0.5); ``score_pool3`` a 1x1 conv and
    ``score_pool4`` a three-conv head (3x3 convs with BatchNorm + LeakyReLU);
    ``upscore2`` (5x5 stride 3), ``upscore_pool4`` (2x2 stride 2), ``upscore8`` (8x8 stride 8).

    The seed sized these layers so that no crop is needed, but the three paths meet exactly
    only at a 512x512 input: pool5 is P x P, fc6 gives P - 6, ``upscore2`` gives 3P - 16,
    which must equal pool4's 2P, so P = 16 (10 -> 32 -> 64 -> 512). ``forward`` therefore
    takes exactly ``input_size`` x ``input_size`` inputs (a ValueError names any other size);
    images of other sizes go through ``core.sliding_window``. Returns N x num_classes x 512 x 512.
    Its arguments are ``FCN32VGg``'s.
    """

    vgg_variant = "vgg16_bn"
    vgg_stages = ("features3", "features4", "features5")
    input_size = 512

    def __init__(self, num_classes=7, width=1, head_init="fcn"):
        super().__init__()
        check_width(width)
        check_head_init(head_init)
        fc_channels = 4096 // width
        self.features3 = _vgg_layers(_VGG16_STAGE3, 3, width, batch_norm=True)
        self.features4 = _vgg_layers(_VGG16_STAGE4, 256 // width, width, batch_norm=True)
        self.features5 = _vgg_layers(_VGG16_STAGE5, 512 // width, width, batch_norm=True)
        _add_fc_head(self, 512 // width, fc_channels, nn.Dropout2d)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, kernel_size=1)
        self.score_pool3 = nn.Conv2d(256 // width, num_classes, kernel_size=1)
        self.score_pool4_0 = nn.Conv2d(512 // width, 1024 // width, kernel_size=3, padding=1)
        self.bn4_0 = nn.BatchNorm2d(1024 // width)
        self.lrelu4_0 = nn.LeakyReLU(0.2, inplace=True)
        self.score_pool4_1 = nn.Conv2d(1024 // width, 2048 // width, kernel_size=3, padding=1)
        self.bn4_1 = nn.BatchNorm2d(2048 // width)
        self.lrelu4_1 = nn.LeakyReLU(0.2, inplace=True)
        self.score_pool4_2 = nn.Conv2d(2048 // width, num_classes, kernel_size=3, padding=1)
        self.bn4_2 = nn.BatchNorm2d(num_classes)
        self.lrelu4_2 = nn.LeakyReLU(0.2, inplace=True)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=5, stride=3, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=8, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=2, stride=2, bias=False)
        if head_init == "fcn":
            init_fcn_weights(self, [self.score_fr, self.score_pool3])
            # The pool4 branch ends in conv -> BN: a zero conv would feed BatchNorm a constant, whose
            # gradient is scaled by 1/sqrt(eps) (~316) and amplifies rounding noise. Start the branch
            # silent through the BN's gamma instead, and the conv like the other convs.
            nn.init.zeros_(self.bn4_2.weight)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"FCN8VGG takes {self.input_size}x{self.input_size} inputs (the only size where its "
                             f"skip paths meet), got {x.shape[-2]}x{x.shape[-1]}; predict larger or smaller "
                             "images with core.sliding_window")
        h = self.features3(x)  # 1/8: 64x64
        pool3 = h
        h = self.features4(h)  # 1/16: 32x32
        pool4 = h
        h = self.features5(h)  # 1/32: 16x16

        h = self.drop6(self.lrelu6(self.bn6(self.fc6(h))))  # 10x10
        h = self.drop7(self.lrelu7(self.bn7(self.fc7(h))))
        h = self.score_fr(h)
        h = self.upscore2(h)  # 32x32
        upscore2 = h

        h = self.lrelu4_0(self.bn4_0(self.score_pool4_0(pool4)))
        h = self.lrelu4_1(self.bn4_1(self.score_pool4_1(h)))
        h = self.lrelu4_2(self.bn4_2(self.score_pool4_2(h)))  # 32x32
        h = upscore2 + h
        h = self.upscore_pool4(h)  # 64x64
        upscore_pool4 = h

        h = self.score_pool3(pool3)  # 64x64
        h = upscore_pool4 + h
        return self.upscore8(h)  # 512x512
