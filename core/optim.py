"""Optimizers and per-epoch learning-rate schedules (one meaning per name for P1 and P2)."""
import sys

import torch

from core.cli import UserError

# The learning rate of each optimizer when --lr is not given (P1): ours for SGD, Adam's usual 1e-3
# (also the seed author's).
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


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


def check_switch(args):
    """Refuse a ``--switch-sgd-at`` that cannot run (``UserError``); warn about one after the last
    epoch."""
    if not args.switch_sgd_at:
        return
    if args.optimizer != "adam":
        raise UserError("--switch-sgd-at switches from Adam to SGD; it needs --optimizer adam")
    if args.switch_sgd_at == 1:
        raise UserError("--switch-sgd-at 1 would skip Adam entirely; use --optimizer sgd instead")
    if args.switch_sgd_at > args.epochs:
        print(f"warning: --switch-sgd-at {args.switch_sgd_at} is after --epochs {args.epochs}: this run ends "
              "before the SGD phase (0 = Adam only)", file=sys.stderr)


def phase_at(args, epoch):
    """The optimizer of ``epoch``: --optimizer, or SGD from --switch-sgd-at (its first SGD epoch)."""
    return "sgd" if args.switch_sgd_at and epoch >= args.switch_sgd_at else args.optimizer


def build_phase(args, params, phase):
    """Optimizer and schedule of one phase; the schedule spans that phase's epochs."""
    if args.switch_sgd_at:
        epochs = args.switch_sgd_at - 1 if phase != "sgd" else args.epochs - args.switch_sgd_at + 1
    else:
        epochs = args.epochs
    lr = args.sgd_lr if args.switch_sgd_at and phase == "sgd" else args.lr
    optimizer = build_optimizer(phase, params, lr, args.momentum, args.weight_decay)
    return optimizer, build_scheduler(args.lr_schedule, optimizer, epochs, args.lr_step_size, args.lr_gamma)
