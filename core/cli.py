"""The command-line layer shared by every script: argument types, the flags P1 and P2 training
share (one meaning per flag name), and one exit convention.

Exit convention (``run``): 0 success; 1 an error, printed as one line ``error: ...`` naming the
file or flag (no traceback); 2 a usage error (argparse); 130 interrupted by Ctrl-C (128 + N
for signal N, e.g. 143 for SIGTERM). Under ``torchrun`` only rank 0 prints the message.
"""
import argparse
import copy
import errno
import os
import sys

# The repository's folder (where checkpoints/ lives), whatever the working directory.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag's help as a user would type them (a list as ``1,20,40``),
    none for an empty default (None, ``''``, an empty list); the script's docstring printed as
    written."""

    def _get_help_string(self, action):
        if action.default is None or (isinstance(action.default, (str, list, tuple)) and not action.default):
            return action.help or ""
        return super()._get_help_string(action)

    def _expand_help(self, action):
        if isinstance(action.default, (list, tuple)):
            action = copy.copy(action)
            action.default = ",".join(map(str, action.default))
        return super()._expand_help(action)


class UserError(Exception):
    """An error the user can fix; ``run`` prints it as ``error: <message>`` and exits 1."""


class DataError(ValueError):
    """Bad input data; the message names every offending file and what is wrong with it."""


class Interrupted(Exception):
    """Ctrl-C (or a stop signal), with a message saying what was saved and how to continue;
    exit 130 (128 + the signal's number)."""

    def __init__(self, message, exit_code=130):
        super().__init__(message)
        self.exit_code = exit_code


def _number(cast, low=None, high=None, low_open=False, what="number"):
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v != v or (low is not None and (v <= low if low_open else v < low)) or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, what="an integer >= 1")
nonneg_int = _number(int, 0, what="an integer >= 0")
positive_float = _number(float, 0, low_open=True, high=1e6, what="a number > 0")
nonneg_float = _number(float, 0, high=1e6, what="a number >= 0")
fraction = _number(float, 0, high=1, what="a number in [0, 1]")
open_fraction = _number(float, 0, high=0.99, what="a number in [0, 0.99]")


def width(text):
    """A channel divisor: a positive divisor of 64 (1 = the seed's network)."""
    v = _number(int, 1, what="a positive divisor of 64 (1, 2, 4, 8, 16, 32, 64)")(text)
    if 64 % v:
        raise argparse.ArgumentTypeError(f"expected a positive divisor of 64 (1, 2, 4, 8, 16, 32, 64), got {text!r}")
    return v


def int_list(text):
    """``1,20,40`` -> [1, 20, 40] (positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = [0]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def str_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def env_path(name, default):
    """``$name`` when set and not empty, else ``default``: one rule for P1_CKPT and P2_CKPT."""
    return os.environ.get(name) or default


def inference_parser(problem, batch_size, batch_help):
    """The parent parser of the scripts that run a trained ``problem`` model (``p1_test.py``,
    ``p2_test.py``, ``p1_tsne.py``): checkpoint, device, precision, batch size."""
    env = f"{problem.upper()}_CKPT"
    p = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=env_path(env, None),
                   help=f"best.pt or last.pt of {problem}_train.py; ${env} when set (and not empty); else the "
                        "default checkpoint in checkpoints/, downloaded when missing (core/hub.py)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda when available")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: exactly the precision the checkpoint was validated in during training (fp32 unless "
                        "it was trained with --amp: bf16, or fp16 on a GPU without bf16), so the scores match the "
                        "training log; fp32 with a note on a device without arithmetic for it. fp32/bf16/fp16 force "
                        "it; bf16 is faster on CPUs with bf16 arithmetic, predictions may differ slightly "
                        "(core/inference.py)")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help=batch_help)
    return p


def training_parser(description):
    """The parent parser of ``p1_train.py`` / ``p2_train.py``: every flag both scripts take."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, add_help=False)
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--width", type=width, default=1, help="channel divisor (1 = the seed's network; 4-16 for CPU runs)")
    g.add_argument("--epochs", type=positive_int, help="total epochs")
    g.add_argument("--batch-size", type=positive_int, help="samples per step and process (>= 2: BatchNorm)")
    g.add_argument("--lr", type=positive_float, help="learning rate of --optimizer")
    g.add_argument("--momentum", type=fraction, default=0.9, help="SGD momentum")
    g.add_argument("--switch-sgd-at", type=nonneg_int, metavar="EPOCH",
                   help="first SGD epoch: Adam for the epochs before it, then SGD at --sgd-lr (0 = Adam only)")
    g.add_argument("--sgd-lr", type=positive_float, help="learning rate from --switch-sgd-at on")
    g.add_argument("--weight-decay", type=nonneg_float, help="L2 weight decay (decoupled for adamw)")
    g.add_argument("--lr-schedule", choices=["none", "cosine", "step"], default="none",
                   help="per-epoch schedule (within each optimizer phase): cosine to 0, or step")
    g.add_argument("--lr-step-size", type=nonneg_int, default=0,
                   help="epochs between x--lr-gamma steps with --lr-schedule step (0 = once, after 2/3 of the phase)")
    g.add_argument("--lr-gamma", type=fraction, default=0.1, help="factor of each --lr-schedule step")
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs)")
    g.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the model (auto: on CUDA only); a graph that fails to compile runs eagerly")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun (CUDA)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda when available")
    g.add_argument("--workers", type=nonneg_int, default=4, help="data-loading processes")
    g.add_argument("--cache-dir", default=".cache/decoded", help="decoded-image cache (uint8 memmaps)")
    g.add_argument("--no-cache", action="store_true", help="decode every image on every epoch instead")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    g.add_argument("--output-dir", default="", help="run folder (empty: runs/<problem and model>)")
    g.add_argument("--resume", default="", help="a run's last.pt to continue (with the run's own settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --output-dir that holds one (its files are replaced)")
    g.add_argument("--print-freq", type=positive_int, default=50, help="a log line every this many steps")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                   help="also log each epoch's numbers (and P2's snapshot masks) for TensorBoard, under "
                        "<output-dir>/tensorboard/ (needs the optional tensorboard package; a --resume may turn it "
                        "on or off)")
    return p


def error_message(e):
    """One line for an exception a user should see: the message without a traceback.

    DataLoader workers wrap an exception as ``Caught X in DataLoader worker ... Original
    Traceback ...``; the original message is its last line.
    """
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(e, OSError) and e.strerror:  # "[Errno 28] ...: 'x'" -> "x: no space left on the device"
        reason = "no space left on the device" if e.errno == errno.ENOSPC else e.strerror
        names = [str(f) for f in (e.filename, e.filename2) if f is not None]
        text = f"{' -> '.join(names)}: {reason}" if names else reason
    return text


def run(main, argv=None, expected=()):
    """Call ``main(argv)`` and turn the errors a user can cause into one line and an exit code.

    ``expected`` lists further exception types (e.g. ``DataError``) reported as ``error: ...``.
    """
    # Every process of a torchrun (or multi-task SLURM) launch would print the same line: rank 0 speaks.
    say = print if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) in ("", "0") else lambda *a, **k: None
    try:
        return main(argv) or 0
    except Interrupted as e:
        say(f"\ninterrupted: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        say("\ninterrupted", file=sys.stderr)
        return 130
    except (UserError, OSError, *expected) as e:
        say(f"error: {error_message(e)}", file=sys.stderr)
        return 1
