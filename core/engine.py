"""``train_one_epoch`` and ``evaluate``, the helpers each training script's loop calls
(torchvision references' ``train_one_epoch`` / ``evaluate``). The epoch loop itself, with
validation, checkpoints and optimizer switches, is written out in each script's ``main``.
"""
import sys
import time

import torch
from tqdm import tqdm

from core.distributed import all_reduce_sum, is_main_process
from core.metrics import ConfusionMatrix
from core.runtime import autocast


class NonFiniteLossError(RuntimeError):
    pass


def progress_bar(iterable=None, *, total=None, desc=""):
    """A tqdm bar on stdout, drawn only on rank 0 and only when stdout is a terminal: under nohup,
    SLURM or ``> log.txt`` its ``\r`` frames would pile up in the file (tqdm's ``disable=None``)."""
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stdout,
                disable=None if is_main_process() else True)


def train_step(model, criterion, optimizer, inputs, targets, device, dtype=None, scaler=None):
    """One optimisation step; returns the detached loss, without reading it on the host."""
    with autocast(device, dtype):
        loss = criterion(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_one_epoch(model, criterion, optimizer, loader, device, epoch, prepare, dtype=None, scaler=None,
                    print_freq=50):
    """One pass over ``loader``; returns ``{"loss", "images", "seconds", "data_seconds"}``.

    ``prepare(batch) -> (inputs, targets)`` moves a batch to the device and applies device-side
    augmentation and normalisation. The loss is checked for NaN/Inf without a host
    synchronisation per step: a flag accumulates on the device and is read every
    ``print_freq`` steps and at the end, where NonFiniteLossError names the first bad step.
    The caller saves checkpoints only after this returns, so a non-finite update never
    reaches one.
    """
    model.train()
    total = torch.zeros((), device=device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    images, data_seconds, start = 0, 0.0, time.perf_counter()
    bar = progress_bar(total=len(loader), desc=f"epoch {epoch}")
    it = iter(loader)
    for step in range(len(loader)):
        t = time.perf_counter()
        batch = next(it)
        data_seconds += time.perf_counter() - t
        inputs, targets = prepare(batch)
        loss = train_step(model, criterion, optimizer, inputs, targets, device, dtype, scaler)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        total += loss.double() * len(targets)
        images += len(targets)
        bar.update()
        if (step + 1) % print_freq == 0 or step + 1 == len(loader):
            if first_bad.item() >= 0:
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {first_bad.item()}")
            elapsed = time.perf_counter() - start
            line = (f"epoch {epoch} [{step + 1}/{len(loader)}] loss {loss.item():.4f} "
                    f"img/s {images / elapsed:.1f} data {100 * data_seconds / elapsed:.1f}%")
            if device.type == "cuda":
                line += f" mem {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f}GiB"
            if not bar.disable:
                bar.write(line)
            elif is_main_process():  # no terminal (nohup, SLURM, > log.txt): the step lines are the progress
                print(line, flush=True)
    bar.close()
    loss_sum, count = all_reduce_sum([total.item(), images], device)
    return {"loss": loss_sum / count if count else float("nan"), "images": images,
            "seconds": time.perf_counter() - start, "data_seconds": data_seconds}


@torch.inference_mode()
def evaluate(model, loader, device, num_classes, prepare, dtype=None, criterion=None, forward=None, desc="eval"):
    """``(confusion matrix of the whole split, mean loss or nan)``, reduced over processes once.

    ``forward(model, inputs) -> logits`` replaces ``model(inputs)`` (e.g. the sliding-window
    predictor for images of another size than the model's).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for batch in progress_bar(loader, desc=desc):
        inputs, targets = prepare(batch)
        with autocast(device, dtype):
            logits = model(inputs) if forward is None else forward(model, inputs)
        if criterion is not None:
            loss_sum += criterion(logits.float(), targets).double() * len(targets)
            count += len(targets)
        cm.update(targets, logits.argmax(1))
    cm.reduce_from_all_processes()
    loss_total, count = all_reduce_sum([loss_sum.item(), count], device)
    return cm, (loss_total / count if count else float("nan"))
