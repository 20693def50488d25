"""The one checkpoint format: build, save, load, check and rebuild the model.

Two kinds, one schema (``VERSION``), both loaded with ``torch.load(weights_only=True)``:

    inference   what grading needs and nothing more (``best.pt``, ``p2_test.py --checkpoint``):
                {format, version, kind, problem, model_name, model_kwargs, preprocess, model, meta}
    training    the inference entries plus the full training state (``last.pt``, ``--resume``):
                optimizer, lr_scheduler, scaler, phase, epoch, best_score, args, rng, world_size

An inference checkpoint may store its weights as float16 (``half_weights``, half the file).
``model_name`` / ``model_kwargs`` rebuild the architecture (nanoGPT's ``model_args``), so test
and resume never rebuild a model from command-line flags. ``preprocess`` holds the input
normalisation (``mean``/``std`` in 0..1 units); P1's input side is the model's own
``img_size`` constructor argument, its single source of truth.
"""
import io
import os

import torch

from core.fileio import atomic_write_bytes
from core.runtime import set_rng_state
from models import get_model

FORMAT = "dlcv-hw2"
VERSION = 2
INFERENCE_KEYS = ("problem", "model_name", "model_kwargs", "preprocess", "model", "meta")
TRAINING_KEYS = ("optimizer", "lr_scheduler", "scaler", "phase", "epoch", "best_score", "args", "rng", "world_size")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def inference_state(problem, model_name, model_kwargs, model, preprocess, **meta):
    """The inference checkpoint of ``model`` (its state dict is referenced, not copied)."""
    return {"format": FORMAT, "version": VERSION, "kind": "inference", "problem": problem,
            "model_name": model_name, "model_kwargs": dict(model_kwargs), "model": model.state_dict(),
            "preprocess": {"mean": list(preprocess["mean"]), "std": list(preprocess["std"])}, "meta": meta}


def training_state(inference, *, optimizer, lr_scheduler, scaler, phase, epoch, best_score, args, rng,
                   world_size):
    """An inference checkpoint plus everything ``--resume`` restores."""
    return {**inference, "kind": "training", "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None, "phase": phase, "epoch": epoch,
            "best_score": best_score, "args": dict(args), "rng": rng, "world_size": world_size}


def inference_part(ckpt):
    """The inference checkpoint inside a training one (no copy of tensors)."""
    return {**{k: ckpt[k] for k in ("format", "version", *INFERENCE_KEYS)}, "kind": "inference"}


FP16_MAX = 65504.0  # the largest finite float16


def half_weights(ckpt, path="checkpoint"):
    """The inference checkpoint of ``ckpt`` with its floating-point weights stored as float16: half
    the file. Loading copies them into the float32 model (``build_model``), so inference runs as
    before on weights rounded to float16 (``meta["weights"]`` says so). CheckpointError naming the
    tensor when a value lies beyond float16's range."""
    state = {}
    for k, v in ckpt["model"].items():
        if v.is_floating_point():
            peak = float(v.abs().max()) if v.numel() else 0.0
            if not peak <= FP16_MAX:
                raise CheckpointError(f"{path}: {k} holds {peak:.6g}, beyond float16's range; keep this one fp32")
            v = v.to(torch.float16)
        state[k] = v
    return {**inference_part(ckpt), "model": state, "meta": {**ckpt["meta"], "weights": "fp16"}}


def to_cpu(obj):
    """A copy of ``obj`` with every tensor cloned to the CPU: a snapshot that later training
    steps cannot change, safe to serialise in another thread."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def to_bytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save(state, path):
    """Serialise and write atomically (temporary file, fsync, rename); an OSError (a full disk)
    names ``path``, not the temporary file (``fileio.atomic_write_bytes``)."""
    atomic_write_bytes(path, to_bytes(state))


def load(path, problem=None, training=False):
    """Load and check a checkpoint; CheckpointError naming the file when it is unusable.

    ``training=True`` asks for a training checkpoint (``--resume``).
    """
    if not path:
        raise CheckpointError("no checkpoint given (empty path)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign classes, not a torch file...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        if isinstance(ckpt, dict) and "model_name" in ckpt and "model" in ckpt:
            raise CheckpointError(f"{path}: written by an older version of this repo (unversioned format); "
                                  f"retrain, or check out that version to use it")
        raise CheckpointError(f"{path}: not a checkpoint of this repo")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')}, this code reads "
                              f"version {VERSION}")
    missing = [k for k in INFERENCE_KEYS + (TRAINING_KEYS if ckpt.get("kind") == "training" else ())
               if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    if problem is not None and ckpt["problem"] != problem:
        raise CheckpointError(f"{path}: is a {ckpt['problem']} checkpoint ({ckpt['model_name']}), "
                              f"but a {problem} checkpoint is needed")
    if training and ckpt.get("kind") != "training":
        raise CheckpointError(f"{path}: holds only the weights for inference (best.pt); resume from the "
                              "run's last.pt")
    return ckpt


def build_model(ckpt, path="checkpoint"):
    """The model ``ckpt`` describes, with its weights, in train mode on the CPU."""
    try:
        model = get_model(ckpt["model_name"], **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild {ckpt['model_name']} {ckpt['model_kwargs']} "
                              f"({str(e).splitlines()[0]})") from None
    return model


def load_model(path, problem, device):
    """``(model in eval mode on device, checkpoint)`` from an inference or training checkpoint.

    The returned checkpoint keeps its descriptive entries but not its copy of the weights (they
    are in the model), so grading does not hold the network twice in memory.
    """
    ckpt = load(path, problem)
    model = build_model(ckpt, path).to(device).eval()
    return model, {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}


def submit_epoch(writer, folder, state, is_best, then=()):
    """In the background, write ``best.pt`` (its inference part only) when ``is_best``, then
    ``last.pt``, then run the ``then`` jobs (e.g. the log row), in that order: ``last.pt`` never
    gets ahead of ``best.pt`` (a resumed run always finds the best epoch it has passed), and a
    log row never gets ahead of the checkpoint it describes. A write that fails (a full disk)
    raises an OSError naming the file and stops the jobs after it. ``state`` must be a
    snapshot (``to_cpu``)."""
    jobs = [lambda: save(inference_part(state), os.path.join(folder, "best.pt"))] if is_best else []
    jobs.append(lambda: save(state, os.path.join(folder, "last.pt")))
    writer.submit(jobs + list(then))


def restore_training(ckpt, model, optimizer, lr_scheduler, scaler, phase, rank=0, world_size=1):
    """Load a training checkpoint into a freshly built run. The optimizer, scheduler and scaler
    are restored only when the checkpoint is in the same optimizer ``phase`` (resuming exactly
    at a switch builds the new optimizer fresh); RNG states when the process count matches."""
    model.load_state_dict(ckpt["model"])
    if ckpt["phase"] == phase:
        optimizer.load_state_dict(ckpt["optimizer"])
        if lr_scheduler is not None and ckpt["lr_scheduler"] is not None:
            lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if scaler is not None and ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
    if ckpt["world_size"] == world_size:
        set_rng_state(ckpt["rng"][rank])
