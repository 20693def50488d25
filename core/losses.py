"""Losses: cross entropy and focal loss, built from a run's arguments."""
import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, https://arxiv.org/abs/1708.02002): ``-(1 - p_t)^gamma log p_t``.

    Averaged like ``nn.CrossEntropyLoss``: pixels labelled ``ignore_index`` are skipped and, with
    class ``weight``, the sum is divided by the summed weights of the counted pixels; so
    ``gamma = 0`` gives exactly the cross entropy.
    """

    def __init__(self, gamma=2.0, weight=None, ignore_index=-100):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        log_p = F.log_softmax(logits.float(), dim=1)  # float32 even under autocast
        valid = target != self.ignore_index
        target = target.where(valid, 0)
        log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -(1 - log_pt.exp()).clamp(min=0).pow(self.gamma) * log_pt
        w = valid.float() if self.weight is None else self.weight[target] * valid
        return (loss * w).sum() / w.sum().clamp(min=1e-12)


def build_criterion(name, weight=None, gamma=2.0, ignore_index=-100, label_smoothing=0.0):
    """``ce`` (``nn.CrossEntropyLoss``) or ``focal``; ``weight`` a list of per-class weights or None."""
    weight = torch.tensor(weight, dtype=torch.float32) if weight is not None else None
    if name == "focal":
        return FocalLoss(gamma, weight, ignore_index)
    return nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
