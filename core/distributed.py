"""One path for single-process and ``torchrun`` runs (torchvision references' ``utils.py``).

``init_distributed_mode`` reads torchrun's ``RANK/WORLD_SIZE/LOCAL_RANK`` (or SLURM's); every
optional piece (DistributedSampler, DDP wrapper) is an object that may be ``None``, and a single
process simply has world size 1. Only rank 0 prints (``log``) and writes files.
"""
import datetime
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from core.cli import UserError
from core.runtime import ignore_stop_signals


def launch_env():
    """``(rank, world_size, local_rank)`` from torchrun's or SLURM's environment; None outside one."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        os.environ.setdefault("MASTER_PORT", "29500")
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return None


def check_sync_bn(args):
    """``--sync-bn`` across processes needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel):
    refused up front instead of a traceback from every rank at the first step."""
    env = launch_env()
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    if args.sync_bn and on_cpu and env is not None and env[1] > 1:
        raise UserError("--sync-bn: SyncBatchNorm runs on CUDA only; drop it for a run on the CPU")


def init_distributed_mode(args):
    """Set ``args.distributed/rank/world_size/local_rank`` from torchrun's or SLURM's environment."""
    env = launch_env()
    if env is None:
        args.rank, args.world_size, args.local_rank, args.distributed = 0, 1, 0, False
        return
    args.rank, args.world_size, args.local_rank = env
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


def barrier():
    if is_dist():
        dist.barrier()


def log(*a, **kw):
    """``print`` on rank 0 only."""
    if is_main_process():
        print(*a, **kw, flush=True)


def all_reduce_sum(values, device):
    """Sum a list of floats over processes (float64); the list itself in a single process."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if is_dist():
        dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_model(model, device, channels_last=False, sync_bn=False):
    """Device/memory format, then SyncBatchNorm and DDP when distributed.

    Returns ``(model, model_without_ddp)``; they are the same object in a single process.
    """
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if not is_dist():
        return model, model
    if sync_bn:
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
    """DataLoader with a DistributedSampler (train) / EvalSampler (eval) when distributed.

    Training drops the last partial batch (BatchNorm needs more than one sample). Workers leave
    the stop signals to the main process (``runtime.ignore_stop_signals``); they are re-created
    each epoch and seeded by torch from the global RNG, which checkpoints restore, so a resumed
    run draws the same augmentation.
    """
    sampler = None
    if is_dist():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if train else EvalSampler(
            dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=device.type == "cuda", drop_last=train,
                      worker_init_fn=ignore_stop_signals if workers else None)


def set_epoch(loader, epoch):
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
