"""Two-process (gloo, CPU) checks of the distributed path: DDP gradients and reduced metrics."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

import engine
from models import get_model
from tests.conftest import ROOT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)


def _grad_worker(rank, world, port, inputs, targets, out):
    _init(rank, world, port)
    torch.manual_seed(0)
    model, _ = engine.wrap_model(get_model("fcn32s", width=16), torch.device("cpu"))
    model.eval()  # BatchNorm on running stats, no dropout: the per-sample gradient is the same everywhere
    half = len(inputs) // world
    x, y = inputs[rank * half:(rank + 1) * half], targets[rank * half:(rank + 1) * half]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_with_same_global_batch(tmp_path):
    torch.manual_seed(1)
    inputs, targets = torch.randn(4, 3, 48, 48), torch.randint(0, 7, (4, 48, 48))
    mp.spawn(_grad_worker, args=(2, free_port(), inputs, targets, str(tmp_path / "g.pt")), nprocs=2)
    torch.manual_seed(0)
    model = get_model("fcn32s", width=16).eval()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    ddp_grads = torch.load(tmp_path / "g.pt", weights_only=True)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ddp_grads[name], rtol=1e-4, atol=1e-6), name


def _eval_worker(rank, world, port, data, out):
    _init(rank, world, port)
    dataset = TensorDataset(*data)
    loader = engine.make_loader(dataset, batch_size=2, train=False, workers=0, device=torch.device("cpu"))
    model = torch.nn.Identity()
    cm = engine.evaluate(model, loader, torch.device("cpu"), 5, prepare=lambda b: (b[0], b[1]))
    if rank == 0:
        torch.save(cm.mat, out)
    dist.destroy_process_group()


def test_distributed_evaluation_counts_each_sample_once(tmp_path):
    torch.manual_seed(2)
    n = 7  # odd: a padding sampler would count one sample twice
    logits, labels = torch.randn(n, 5), torch.randint(0, 5, (n,))
    mp.spawn(_eval_worker, args=(2, free_port(), (logits, labels), str(tmp_path / "cm.pt")), nprocs=2)
    mat = torch.load(tmp_path / "cm.pt", weights_only=True)
    assert int(mat.sum()) == n
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(labels, logits.argmax(1)):
        expected[t, p] += 1
    assert torch.equal(mat, expected)


def test_single_process_defaults(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)

    class Args:
        device = "cpu"

    args = Args()
    engine.init_distributed_mode(args)
    assert (args.distributed, args.rank, args.world_size) == (False, 0, 1)
    model = torch.nn.Linear(2, 2)
    wrapped, bare = engine.wrap_model(model, torch.device("cpu"))
    assert wrapped is bare is model
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            engine.resolve_device("cuda")


# ---------------------------------------------------------------- the training scripts under torchrun


def torchrun(script, *flags):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, script), *flags]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_p2_two_processes_metric_equals_single_process_evaluation(synthetic_data, tmp_path):
    import p2_test
    import p2_train
    from datasets import NUM_CLASSES, P2Tiles

    out = tmp_path / "run"
    flags = ["--data-path", str(synthetic_data / "p2_data"), "--output-dir", str(out), "--model", "fcn32s",
             "--width", "16", "--pretrained", "none", "--img-size", "128", "--batch-size", "1", "--workers", "0",
             "--device", "cpu", "--lr", "1e-3", "--snapshot-epochs", "1", "--no-cache"]
    r = torchrun("p2_train.py", *flags, "--epochs", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun("p2_train.py", *flags, "--epochs", "2", "--resume", str(out / "last.pt"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(n for n in os.listdir(out) if n.endswith(".pt")) == ["best.pt", "last.pt"]
    with open(out / "log.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1", "2"]  # rank 0 logs once
    ckpt = engine.load_checkpoint(str(out / "last.pt"), "p2")
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2

    model, normalize = p2_test.load_model(str(out / "last.pt"), torch.device("cpu"))
    val = P2Tiles(str(synthetic_data / "p2_data" / "validation"))
    loader = engine.make_loader(val, 2, False, 0, torch.device("cpu"))
    prepare = p2_train.make_prepare(torch.device("cpu"), normalize["mean"], normalize["std"], False)
    cm = engine.evaluate(model, loader, torch.device("cpu"), NUM_CLASSES, prepare)
    assert cm.mean_iou()[0] == pytest.approx(ckpt["score"], abs=1e-9)


def test_p1_two_processes_metric_equals_single_process_evaluation(synthetic_data, tmp_path):
    import p1_test
    import p1_train
    from datasets import P1Images

    out = tmp_path / "run"
    flags = ["--data-path", str(synthetic_data / "p1_data"), "--output-dir", str(out), "--width", "4",
             "--img-size", "32", "--batch-size", "25", "--optimizer", "adam", "--workers", "0", "--device", "cpu",
             "--hflip", "--no-cache"]
    r = torchrun("p1_train.py", *flags, "--epochs", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun("p1_train.py", *flags, "--epochs", "2", "--resume", str(out / "last.pt"))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "log.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1", "2"]
    model, ckpt = p1_test.load_model(str(out / "last.pt"), torch.device("cpu"))
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2
    val = P1Images(str(synthetic_data / "p1_data" / "val_50"), progress=False)  # 150 images: 75 per process
    prepare = p1_train.make_prepare(torch.device("cpu"), ckpt["normalize"], ckpt["img_size"], False)
    cm = engine.evaluate(model, engine.make_loader(val, 16, False, 0, torch.device("cpu")), torch.device("cpu"), 50,
                         prepare)
    assert cm.accuracy() == pytest.approx(ckpt["score"], abs=1e-12)
