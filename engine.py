"""Training machinery shared by ``p1_train.py`` and ``p2_train.py`` (torchvision-references style).

One path for single-process and ``torchrun`` runs: ``init_distributed_mode`` reads torchrun's
``RANK/WORLD_SIZE/LOCAL_RANK`` (or SLURM's), and every optional piece (GradScaler,
DistributedSampler, DDP wrapper) is an object that may be ``None``. ``fit`` owns the epoch
loop: optimizer phases (e.g. Adam then SGD), evaluation on the whole split, the CSV log,
atomic ``last.pt`` / ``best.pt`` checkpoints and exact resume (RNG states included).
"""
import contextlib
import csv
import datetime
import io
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from metrics import ConfusionMatrix

CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------- distributed


def init_distributed_mode(args):
    """Set ``args.distributed/rank/world_size/local_rank`` from torchrun's or SLURM's environment."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank, args.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        args.rank, args.world_size = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        args.local_rank = int(os.environ.get("SLURM_LOCALID", 0))
        os.environ.setdefault("MASTER_PORT", "29500")
    else:
        args.rank, args.world_size, args.local_rank, args.distributed = 0, 1, 0, False
        return
    args.distributed = args.world_size > 1
    if not args.distributed:
        return
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(args.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                            world_size=args.world_size, rank=args.rank, timeout=datetime.timedelta(minutes=30))
    dist.barrier()


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


def log(*a, **kw):
    """``print`` on rank 0 only."""
    if is_main_process():
        print(*a, **kw, flush=True)


def wrap_model(model, device, channels_last=False, sync_bn=False):
    """Device/memory format, then SyncBatchNorm and DDP when distributed.

    Returns ``(model, model_without_ddp)``; they are the same object in a single process.
    """
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if not is_dist():
        return model, model
    if sync_bn:
        if device.type != "cuda":
            raise SystemExit("error: --sync-bn needs CUDA (PyTorch's SyncBatchNorm does not run on CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return ddp, model


def cleanup_distributed():
    if is_dist():
        dist.destroy_process_group()


class EvalSampler(Sampler):
    """Rank ``r`` of ``w`` takes items ``r, r+w, ...``: every item exactly once, no padding,
    so reduced metrics equal a single-process evaluation."""

    def __init__(self, dataset):
        self.indices = list(range(get_rank(), len(dataset), get_world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loader(dataset, batch_size, train, workers, device, seed=0):
    """DataLoader with a DistributedSampler (train) / EvalSampler (eval) when distributed."""
    sampler = None
    if is_dist():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if train else EvalSampler(
            dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=device.type == "cuda", drop_last=train,
                      worker_init_fn=_seed_worker)


def _seed_worker(worker_id):
    # Workers are re-created every epoch (no persistent_workers) from a base seed drawn from the
    # global torch RNG, which checkpoints restore: that keeps resumed augmentation identical.
    np.random.seed(torch.initial_seed() % 2 ** 32)


# --------------------------------------------------------------------------- devices, seeds, AMP


def resolve_device(name, local_rank=0):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda requested but CUDA is not available")
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", local_rank)
    return torch.device(name)


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def amp_dtype(device, enabled):
    """bf16 where the device supports it, else fp16 on CUDA; None when AMP is off."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device, dtype):
    """A GradScaler only for fp16 (bf16 needs none)."""
    return torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None


def rng_state():
    """Every RNG's state in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def atomic_write_bytes(path, data):
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    with contextlib.suppress(OSError):  # persist the rename itself
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def checkpoint_bytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_checkpoint(state, path):
    atomic_write_bytes(path, checkpoint_bytes(state))


def load_checkpoint(path, problem=None):
    """Load with ``weights_only=True``; CheckpointError naming the file when it is unusable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign classes, not a torch file...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        raise CheckpointError(f"{path}: not a checkpoint of this repo (no model/model_name entries)")
    if problem is not None and ckpt.get("problem") != problem:
        raise CheckpointError(f"{path}: is a {ckpt.get('problem')} checkpoint ({ckpt['model_name']}), "
                              f"but a {problem} checkpoint is needed")
    return ckpt


def model_from_checkpoint(path, problem, device):
    """``(model in eval mode on device, checkpoint)``: the architecture is rebuilt from the
    checkpoint's ``model_name`` / ``model_kwargs``, not from command-line flags."""
    from models import get_model

    ckpt = load_checkpoint(path, problem)
    try:
        model = get_model(ckpt["model_name"], **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild {ckpt['model_name']} {ckpt['model_kwargs']} "
                              f"({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), ckpt


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_csv(path, header, rows):
    """A CSV with ``header`` and ``rows`` (sequences), written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


class CSVLog:
    """``log.csv`` with fixed columns; the whole file is rewritten atomically on every row,
    so it is never left truncated, and a resumed run keeps the rows of the epochs it kept."""

    def __init__(self, path, fields, resume_epoch=None):
        self.path, self.fields, self.rows = path, list(fields), []
        if resume_epoch is not None and os.path.exists(path):
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]

    def append(self, row):
        self.rows.append({k: row.get(k, "") for k in self.fields})
        write_csv(self.path, self.fields, [[r[k] for k in self.fields] for r in self.rows])


# --------------------------------------------------------------------------- one epoch


class NonFiniteLossError(RuntimeError):
    pass


def train_step(model, criterion, optimizer, inputs, targets, device, dtype=None, scaler=None, where=""):
    """One optimisation step; returns the detached loss. NonFiniteLossError before a NaN/Inf
    loss reaches the weights."""
    with autocast(device, dtype):
        loss = criterion(model(inputs), targets)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at {where}" if where else f"loss is {loss.item()}")
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
                    desc="train"):
    """One pass over ``loader``; ``prepare(batch) -> (inputs, targets)`` moves a batch to the
    device and applies device-side augmentation/normalisation. Returns the mean loss."""
    model.train()
    total, count = torch.zeros((), device=device, dtype=torch.float64), 0
    bar = tqdm(loader, desc=f"{desc} {epoch}", leave=False, disable=not is_main_process(), file=sys.stdout)
    for step, batch in enumerate(bar):
        inputs, targets = prepare(batch)
        loss = train_step(model, criterion, optimizer, inputs, targets, device, dtype, scaler,
                          where=f"epoch {epoch}, step {step}")
        total += loss * len(targets)
        count += len(targets)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    stats = torch.tensor([total.item(), count], dtype=torch.float64, device=device)
    if is_dist():
        dist.all_reduce(stats)
    return (stats[0] / stats[1]).item() if stats[1] else float("nan")


@torch.inference_mode()
def evaluate(model, loader, device, num_classes, prepare, dtype=None, desc="eval"):
    """Confusion matrix of the whole split (reduced over processes once)."""
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not is_main_process(), file=sys.stdout):
        inputs, targets = prepare(batch)
        with autocast(device, dtype):
            logits = model(inputs)
        cm.update(targets, logits.argmax(1))
    return cm.reduce_from_all_processes()


# --------------------------------------------------------------------------- the epoch loop


class Phase:
    """Epochs ``[start, next phase's start)`` train with ``build(params) -> (optimizer, scheduler)``;
    the scheduler (or None) is stepped once per epoch."""

    def __init__(self, name, start, build):
        self.name, self.start, self.build = name, start, build


def phase_index(phases, epoch):
    return max(i for i, p in enumerate(phases) if p.start <= epoch)


def fit(args, *, problem, model, model_without_ddp, model_kwargs, criterion, phases, train_loader, val_loader,
        prepare_train, prepare_eval, num_classes, score_fn, device, dtype=None, extra_ckpt=None,
        on_epoch_end=None):
    """Train for ``args.epochs`` epochs (1-based), resuming from ``args.resume`` if given.

    ``score_fn(cm) -> (score, columns)``: the number that picks ``best.pt`` and the extra CSV
    columns. ``on_epoch_end(epoch, model)`` runs on rank 0 after each evaluation.
    Returns ``(best_score, last_columns)``; raises NonFiniteLossError on a NaN/Inf loss with
    ``last.pt`` left at the last good epoch.
    """
    scaler = make_scaler(device, dtype)
    start_epoch, best, ckpt = 1, -math.inf, None
    if args.resume:
        ckpt = load_checkpoint(args.resume, problem)
        if ckpt["model_name"] != args.model or ckpt["model_kwargs"] != model_kwargs:
            raise CheckpointError(f"{args.resume}: holds {ckpt['model_name']} {ckpt['model_kwargs']}, "
                                  f"not {args.model} {model_kwargs}")
        model_without_ddp.load_state_dict(ckpt["model"])
        start_epoch, best = ckpt["epoch"] + 1, ckpt["best_score"]
        log(f"resumed from {args.resume} at epoch {ckpt['epoch']} (best {best:.4f})")
    phase = phase_index(phases, start_epoch)
    optimizer, scheduler = phases[phase].build(model.parameters())
    if ckpt is not None and ckpt.get("phase") == phase:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("lr_scheduler") is not None:
            scheduler.load_state_dict(ckpt["lr_scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
    if ckpt is not None and "rng" in ckpt and get_world_size() == ckpt.get("world_size", 1):
        set_rng_state(ckpt["rng"][get_rank()] if isinstance(ckpt["rng"], list) else ckpt["rng"])

    out = args.output_dir
    csv_log = None
    columns = None
    for epoch in range(start_epoch, args.epochs + 1):
        if phase_index(phases, epoch) != phase:
            phase = phase_index(phases, epoch)
            optimizer, scheduler = phases[phase].build(model.parameters())
            log(f"epoch {epoch}: switching optimizer to {phases[phase].name}")
        if isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        t0 = time.time()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(model, criterion, optimizer, train_loader, device, epoch, prepare_train,
                                     dtype, scaler)
        if scheduler is not None:
            scheduler.step()
        cm = evaluate(model, val_loader, device, num_classes, prepare_eval, dtype)
        score, columns = score_fn(cm)
        is_best = score > best
        best = max(best, score)
        row = {"epoch": epoch, "phase": phases[phase].name, "lr": f"{lr:.6g}", "train_loss": f"{train_loss:.6f}",
               "seconds": f"{time.time() - t0:.1f}", **columns}
        rngs = [None] * get_world_size()
        if is_dist():
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if is_main_process():
            if csv_log is None:
                csv_log = CSVLog(os.path.join(out, "log.csv"), list(row), resume_epoch=start_epoch - 1)
            csv_log.append(row)
            log(" ".join(f"{k}={v}" for k, v in row.items() if not k.startswith("iou_")))
            state = {
                "version": CHECKPOINT_VERSION, "problem": problem, "model_name": args.model,
                "model_kwargs": model_kwargs, "model": model_without_ddp.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None, "phase": phase, "epoch": epoch,
                "score": score, "best_score": best, "metrics": columns, "args": vars(args),
                "rng": rngs if is_dist() else rngs[0], "world_size": get_world_size(), **(extra_ckpt or {}),
            }
            data = checkpoint_bytes(state)  # serialised once, written once or twice
            atomic_write_bytes(os.path.join(out, "last.pt"), data)
            if is_best:
                atomic_write_bytes(os.path.join(out, "best.pt"), data)
            if on_epoch_end is not None:
                on_epoch_end(epoch, model_without_ddp)
        if is_dist():
            dist.barrier()
    return best, columns


def setup_run(args):
    """Distributed set-up, device, seed, output folder and ``args.json``; returns the device."""
    init_distributed_mode(args)
    device = resolve_device(args.device, args.local_rank)
    seed_everything(args.seed + args.rank, deterministic=getattr(args, "deterministic", False))
    if is_main_process():
        os.makedirs(args.output_dir, exist_ok=True)
        write_json(os.path.join(args.output_dir, "args.json"), vars(args))
    return device
