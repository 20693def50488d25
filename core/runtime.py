"""Device, seeds, mixed precision, RNG state, ``torch.compile``, memory bounds and stop signals
for both problems."""
import contextlib
import os
import platform
import random
import signal
import threading
import warnings

import numpy as np
import torch

from core.cli import UserError


# What a scheduler sends to stop a job: SLURM SIGTERM at the time limit and SIGUSR1/SIGUSR2 before it
# (--signal), torchrun its own SIGTERM to every rank, a closed terminal SIGHUP; and Ctrl-C.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(worker_id=None):
    """A DataLoader worker's ``worker_init_fn``: the main process alone decides how a run stops,
    so a worker ignores the stop signals, except SIGTERM, which ends it quietly (exit 0: the
    main process ends its workers with SIGTERM, and a worker killed by a job-wide SIGTERM would
    make the main process fail with "DataLoader worker is killed by signal")."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


class StopSignal(KeyboardInterrupt):
    """A stop signal raised in the main thread as Ctrl-C is (``StopSignals``)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """``with StopSignals() as signals:`` each of ``STOP_SIGNALS`` raises ``StopSignal`` in the
    main thread, so a scheduler's SIGTERM ends a command as Ctrl-C does. After ``hold()`` a
    signal is only recorded (``signum``), so the files in flight finish. A signal the job was
    started to ignore (nohup: SIGHUP; a shell's background job: SIGINT) stays ignored; the
    handlers are restored on exit. A signal that lands where an exception would be lost or leave
    processes behind (``_unsafe_to_interrupt``) is sent again 0.2 s later (at most 25 times)."""

    def __init__(self):
        self.signum, self.holding, self.previous, self.again, self.deferred = None, False, {}, None, 0

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._stop) for s in STOP_SIGNALS
                             if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def _stop(self, signum, frame):
        self.signum = signum
        if self.holding:
            return
        self.deferred += 1
        if _unsafe_to_interrupt(frame) and self.deferred < 25:  # send it again in a moment
            self.again = threading.Timer(0.2, os.kill, (os.getpid(), signum))
            self.again.daemon = True
            self.again.start()
            return
        raise StopSignal(signum)

    def hold(self):
        self.holding = True
        if self.again is not None:
            self.again.cancel()

    def __exit__(self, exc_type, exc, tb):
        self.hold()
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
        return False


def _unsafe_to_interrupt(frame):
    """Whether ``frame`` runs where an exception would be lost or leave processes behind: in a
    ``__del__`` (Python prints and drops it), or where a DataLoader starts or stops its workers
    (an iterator left half-built never ends them, and the process waits for them at exit)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name in ("__init__", "_shutdown_workers")
                                         and f"torch{os.sep}utils{os.sep}data" in code.co_filename):
            return True
        frame = frame.f_back
    return False


def resolve_device(name, local_rank=0):
    """``auto`` -> cuda when available; SystemExit with one line when CUDA is asked for but absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda: CUDA is not available on this machine")
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


def cpu_computes_bf16():
    """Whether this CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX; Arm BF16) that oneDNN uses.

    PyTorch has no public query: these are the private checks its own CPU autocast tests use,
    and any failure reads as "no". Without the instructions bf16 is emulated, slower than fp32.
    """
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return True
    except (AttributeError, RuntimeError):
        return False


# Each precision as checkpoints record it (``meta["precision"]``, ``--precision``) -> its autocast dtype.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_computes_fp16():
    """Whether this CPU has fp16 arithmetic that oneDNN uses (x86 AVX512-FP16 or AMX-FP16); the
    same private checks as ``cpu_computes_bf16``, any failure reads as "no"."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def computes(device, precision):
    """Whether ``device`` has arithmetic for ``precision`` (``PRECISIONS``); without it a reduced
    precision runs emulated, slower than fp32."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_computes_bf16() if precision == "bf16" else cpu_computes_fp16()


def precision_name(dtype):
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` (None) for an autocast dtype: how checkpoints record it."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def inference_dtype(device, precision, trained="fp32"):
    """``--precision`` -> autocast dtype (None: fp32).

    ``auto`` is exactly ``trained``, the precision the checkpoint's validation ran in (fp32, bf16
    or fp16), so predictions reproduce the logged scores, on a device that ``computes`` it; else
    fp32 (``core.inference`` says so). ``fp32``, ``bf16`` and ``fp16`` force that precision, emulated
    where the device lacks the arithmetic; UserError for bf16 on a GPU that cannot run it at all.
    """
    if precision == "auto":
        precision = trained if computes(device, trained) else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--precision bf16: this GPU cannot run bf16; use --precision fp16 or fp32")
    return PRECISIONS[precision]


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device, dtype):
    """A GradScaler only for fp16 (bf16 needs none)."""
    return torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None


def compile_enabled(flag, device):
    """``--compile auto`` compiles on CUDA only (on a CPU the compile time outweighs the gain)."""
    return device.type == "cuda" if flag == "auto" else flag == "on"


def maybe_compile(model, enabled, backend="inductor"):
    """``torch.compile(model)`` when ``enabled``; a graph that fails to compile runs eagerly.

    PyTorch's own fallback does the work: with ``suppress_errors`` a compilation error is
    printed once as a warning and that frame runs in eager mode, so a broken compiler (no C++
    toolchain, an unsupported GPU) costs speed, never the run.
    """
    if not enabled:
        return model
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    try:
        return torch.compile(model, backend=backend)
    except Exception as e:  # torch.compile itself refused (e.g. unsupported Python)
        warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running eagerly")
        return model


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


def training_bytes(build_model, sample_shape, batch_size, amp=False):
    """About the least memory one training step takes: the weights with their gradients and two
    optimizer buffers, and per sample the input and every layer's output (what autograd keeps
    for the backward pass; in 16 bits with ``amp``). On the CPU it measured 0.7-0.8 of the
    peak memory of a step (classifier, FCN32s, FCN8s).

    The forward pass runs on the ``meta`` device: shapes only, nothing is allocated (two
    samples, as BatchNorm needs more than one to train).
    """
    with torch.device("meta"):
        model = build_model()
    outputs = []

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model.train()(torch.empty((2, *sample_shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_sample = 4 * int(np.prod(sample_shape)) + sum(outputs) // (4 if amp else 2)
    return 4 * weights + batch_size * per_sample


def memory_limit(device_name):
    """Bytes a run may use: the first GPU's memory for ``cuda`` (``auto`` with CUDA), else the
    memory the kernel says is available (``MemAvailable``), within this process's cgroup limit."""
    if device_name != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            limit = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = min(limit, int(f.read().strip()))  # "max" (no limit) is a ValueError
    return limit


def check_workers(workers):
    """Refuse more DataLoader processes than twice this machine's CPUs (at least 4): each is a
    copy of the training process, and more than the CPUs can run only costs memory."""
    limit = max(4, 2 * (os.cpu_count() or 1))
    if workers > limit:
        raise UserError(f"--workers {workers}: more loader processes than this machine's {os.cpu_count()} CPUs can "
                        f"run (at most {limit})")


def check_memory(build_model, sample_shape, batch_size, device_name, amp, flags):
    """Refuse, before anything is allocated, a run whose training step cannot fit in memory;
    ``flags`` names the settings that size it (e.g. ``--img-size 4000 --batch-size 128``)."""
    need, have = training_bytes(build_model, sample_shape, batch_size, amp), memory_limit(device_name)
    if need > have:
        where = "GPU" if device_name != "cpu" and torch.cuda.is_available() else "available"
        raise UserError(f"{flags}: one training step needs at least {need / 2 ** 30:.1f} GiB, more than the "
                        f"{have / 2 ** 30:.1f} GiB of {where} memory on this machine; lower them")
