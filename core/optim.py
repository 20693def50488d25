"""Optimizers and per-epoch learning-rate schedules (one meaning per name for P1 and P2)."""
import torch


def build_optimizer(name, params, lr, momentum=0.9, weight_decay=0.0):
    """``sgd`` (momentum, L2 decay), ``adam`` (L2 decay, as torch.optim.Adam) or ``adamw``
    (decoupled decay)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(name, optimizer, epochs, step_size=0, gamma=0.1):
    """Stepped once per epoch over ``epochs`` epochs; None for a constant rate.

    ``cosine`` anneals to 0; ``step`` multiplies by ``gamma`` every ``step_size`` epochs
    (``step_size`` 0: once, after two thirds of ``epochs``).
    """
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if name == "step":
        step_size = step_size or max(2 * epochs // 3, 1)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return None
