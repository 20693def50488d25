"""Losses (core/losses.py): focal loss against cross entropy."""

import torch
import torch.nn.functional as F

from core.losses import FocalLoss, build_criterion
from datasets import IGNORE_INDEX


def logits_and_target():
    torch.manual_seed(0)
    return torch.randn(2, 7, 5, 6), torch.randint(0, 7, (2, 5, 6))


def test_focal_gamma0_is_cross_entropy():
    logits, target = logits_and_target()
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))


def test_focal_skips_ignored_pixels_and_down_weights_easy_ones():
    logits, target = logits_and_target()
    masked = target.clone()
    masked[:, :2] = IGNORE_INDEX
    log_pt = F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    per_pixel = -(1 - log_pt.exp()) ** 2 * log_pt
    focal = FocalLoss(gamma=2, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(focal(logits, masked), per_pixel[masked != IGNORE_INDEX].mean())
    assert focal(logits, target) < F.cross_entropy(logits, target)
    assert focal(logits, torch.full_like(target, IGNORE_INDEX)) == 0  # all ignored: 0, not NaN


def test_focal_class_weights_match_weighted_cross_entropy():
    logits, target = logits_and_target()
    target[0, 0] = IGNORE_INDEX
    weight = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weight), ignore_index=IGNORE_INDEX)
    focal = build_criterion("focal", weight, gamma=0, ignore_index=IGNORE_INDEX)
    assert isinstance(focal, FocalLoss)
    torch.testing.assert_close(focal(logits, target), expected)
    ce = build_criterion("ce", weight, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(ce(logits, target), expected)
    smooth = build_criterion("ce", label_smoothing=0.1)
    torch.testing.assert_close(smooth(logits, target.clamp(max=6)),
                               F.cross_entropy(logits, target.clamp(max=6), label_smoothing=0.1))
