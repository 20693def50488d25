"""The one inference set-up of ``p1_test.py``, ``p2_test.py`` and ``p1_tsne.py``: a checkpoint
becomes a model in eval mode on its device and memory format, with the autocast dtype to run it
in and the input normalisation it was trained with (``load_for_inference``).

- **Checkpoint.** ``--checkpoint`` (or ``$P1_CKPT`` / ``$P2_CKPT``) as given, never downloaded;
  else the default checkpoint of the model to grade (``core.hub.grading_checkpoint``). A
  checkpoint of the other problem is refused naming the file, and so is one holding another
  model than the one asked for (``model``, ``p2_test.py --model``) or than the default file's.
- **Precision** (``--precision``). ``auto`` is exactly the precision the checkpoint's validation
  ran in during training (``meta["precision"]``: fp32, bf16 or fp16; fp32 when not recorded), so
  the predictions score what the training log says. On a device without arithmetic for it
  (``runtime.computes``) it would be emulated, slower than fp32: ``auto`` then predicts in fp32
  and prints one ``note:`` line saying so (ours: grading on such a machine stays fast).
  ``fp32``, ``bf16`` and ``fp16`` force that precision (``runtime.inference_dtype``).
- **Memory format.** channels_last on CUDA and in reduced precision, where convolutions run
  faster in it; the default format in fp32 on a CPU (ours; the same rule for all three scripts).
"""
import dataclasses
import sys

import torch

from core import hub
from core.checkpoint import CheckpointError, load_model
from core.inputs import model_inputs
from core.runtime import PRECISIONS, autocast, inference_dtype, precision_name, resolve_device


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A checkpoint set up for inference (``load_for_inference``)."""

    model: torch.nn.Module  # eval mode, on ``device``, in its memory format
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    channels_last: bool  # the memory format of the model and of its inputs
    preprocess: dict  # the input normalisation: mean / std in 0..1 units
    ckpt: dict  # the checkpoint's descriptive entries (model_name, model_kwargs, meta...), not its weights
    path: str  # the checkpoint file read (the default one when none was given)

    @property
    def precision(self):
        return precision_name(self.dtype)

    @torch.inference_mode()
    def map_batches(self, fn, images, batch_size, img_size=None):
        """``fn`` over uint8 N x 3 x h x w ``images`` in batches, each moved to the device,
        normalised and resized to ``img_size`` there, run in the autocast dtype; the outputs
        concatenated on the CPU (None for no image). P1's inference: ``fn`` is the model's argmax
        or its ``features``."""
        outs = []
        for i in range(0, len(images), batch_size):
            x = model_inputs(images[i:i + batch_size].to(self.device, non_blocking=True), self.preprocess["mean"],
                             self.preprocess["std"], img_size, self.channels_last)
            with autocast(self.device, self.dtype):
                outs.append(fn(x).cpu())
        return torch.cat(outs) if outs else None


def uses_channels_last(device, dtype):
    """The memory format rule of every inference script (see the module docstring)."""
    return device.type == "cuda" or dtype is not None


def validated_precision(ckpt, path):
    """The precision ``ckpt``'s validation ran in; CheckpointError naming ``path`` for one this code does not know."""
    precision = ckpt["meta"].get("precision", "fp32")
    if precision not in PRECISIONS:
        raise CheckpointError(f"{path}: records validation precision {precision!r}, expected one of "
                              f"{', '.join(PRECISIONS)}")
    return precision


def load_for_inference(checkpoint, problem, device="auto", precision="auto", model=None):
    """``Loaded``: the ``problem`` checkpoint ``checkpoint`` (empty or None: the default one of
    ``model``, else of the problem's graded model) on ``device`` (``--device``) in ``precision``
    (``--precision``). ``model`` also refuses a checkpoint holding another model."""
    device = resolve_device(device)
    name = model or hub.DEFAULT_MODEL[problem]
    path = hub.grading_checkpoint(checkpoint, name)
    net, ckpt = load_model(path, problem, device)
    if model or not checkpoint:
        hub.expect_model(ckpt, path, name)
    validated = validated_precision(ckpt, path)
    dtype = inference_dtype(device, precision, validated)
    if precision == "auto" and precision_name(dtype) != validated:
        where = "this CPU" if device.type == "cpu" else f"this GPU ({torch.cuda.get_device_name(device)})"
        print(f"note: --precision auto: {path} was validated in {validated}, which {where} has no arithmetic for "
              f"(emulated, slower than fp32); predicting in fp32, so scores may differ slightly from the training "
              f"log (--precision {validated} forces it)", file=sys.stderr)
    channels_last = uses_channels_last(device, dtype)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return Loaded(net, device, dtype, channels_last, ckpt["preprocess"], ckpt, path)
