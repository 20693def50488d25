"""The distributed path on the CPU (gloo): DDP gradients and reduced metrics in two spawned
processes, single-process defaults, and both training scripts under torchrun, whose logged
metric must equal a single-process evaluation of their checkpoint."""
import argparse
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from core import checkpoint, distributed, engine, fileio, runtime
from core.inputs import make_prepare
from datasets import P1Images, P2Tiles
from models import get_model
from tests.conftest import ROOT

CPU = torch.device("cpu")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank, world, port):
    """What torchrun does for a worker: the environment that ``init_distributed_mode`` reads."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    args = argparse.Namespace(device="cpu")
    distributed.init_distributed_mode(args)
    assert (args.distributed, args.rank, args.world_size) == (True, rank, world)
    assert (distributed.get_rank(), distributed.get_world_size()) == (rank, world)


def _worker(rank, world, port, grad_data, eval_data, out):
    _init(rank, world, port)
    result = {}
    # DDP gradients of half the batch on each rank
    torch.manual_seed(0)
    model, bare = distributed.wrap_model(get_model("fcn32s", width=16), CPU)
    assert model is not bare and model.module is bare
    model.eval()  # BatchNorm on running stats, no dropout: the per-sample gradient is the same everywhere
    inputs, targets = grad_data
    half = len(inputs) // world
    F.cross_entropy(model(inputs[rank * half:(rank + 1) * half]), targets[rank * half:(rank + 1) * half]).backward()
    result["grads"] = {n: p.grad for n, p in bare.named_parameters()}
    # evaluation reduced over ranks
    loader = distributed.make_loader(TensorDataset(*eval_data), batch_size=2, train=False, workers=0, device=CPU)
    seen = distributed.all_gather_object(list(loader.sampler))
    cm, loss = engine.evaluate(torch.nn.Identity(), loader, CPU, 5, tuple, criterion=torch.nn.CrossEntropyLoss())
    result.update(mat=cm.mat, loss=torch.tensor(loss), seen=seen)
    if distributed.is_main_process():
        torch.save(result, out)
    distributed.barrier()  # both ranks done before either tears the group down (rank 0 holds the store)
    distributed.cleanup_distributed()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What two gloo processes computed: gradients of an FCN32s batch split in two, and the
    evaluation of 7 samples (odd: a padding sampler would count one twice)."""
    torch.manual_seed(1)
    grad_data = torch.randn(4, 3, 48, 48), torch.randint(0, 7, (4, 48, 48))
    eval_data = torch.randn(7, 5), torch.randint(0, 5, (7,))
    out = tmp_path_factory.mktemp("ddp") / "result.pt"
    mp.spawn(_worker, args=(2, free_port(), grad_data, eval_data, str(out)), nprocs=2)
    return grad_data, eval_data, torch.load(out, weights_only=True)


def test_ddp_gradients_equal_single_process_with_same_global_batch(two_ranks):
    (inputs, targets), _, result = two_ranks
    torch.manual_seed(0)
    model = get_model("fcn32s", width=16).eval()
    F.cross_entropy(model(inputs), targets).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_distributed_evaluation_counts_each_sample_once(two_ranks):
    _, (logits, labels), result = two_ranks
    assert result["seen"] == [[0, 2, 4, 6], [1, 3, 5]]
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(labels, logits.argmax(1)):
        expected[t, p] += 1
    assert torch.equal(result["mat"], expected)
    assert float(result["loss"]) == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_single_process_defaults(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    args = argparse.Namespace(device="cpu")
    distributed.init_distributed_mode(args)
    assert (args.distributed, args.rank, args.world_size, args.local_rank) == (False, 0, 1, 0)
    assert not distributed.is_dist() and distributed.is_main_process()
    model = torch.nn.Linear(2, 2)
    wrapped, bare = distributed.wrap_model(model, CPU)
    assert wrapped is bare is model
    assert distributed.all_reduce_sum([1.5, 2], CPU) == [1.5, 2.0] and distributed.all_gather_object("a") == ["a"]
    loader = distributed.make_loader(TensorDataset(torch.arange(5)), 2, True, 0, CPU)
    assert loader.sampler.__class__.__name__ == "RandomSampler" and len(loader) == 2  # drop_last for BatchNorm
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            runtime.resolve_device("cuda")


# ---------------------------------------------------------------- the training scripts under torchrun


def torchrun(script, *flags):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *flags]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # the scripts' one-line errors
    assert r.returncode == 0, "\n".join(errors) + "\n" + r.stderr[-2000:]
    return r


def logged_epochs(out):
    return [int(r["epoch"]) for r in fileio.read_csv(os.path.join(out, "log.csv"))]


def evaluate_checkpoint(path, problem, dataset):
    """A single-process evaluation of ``path`` on ``dataset``: ``(confusion matrix, checkpoint)``."""
    model, ckpt = checkpoint.load_model(str(path), problem, CPU)
    img_size = ckpt["model_kwargs"].get("img_size")
    loader = distributed.make_loader(dataset, 4, False, 0, CPU)
    cm, _ = engine.evaluate(model, loader, CPU, ckpt["model_kwargs"]["num_classes"],
                            make_prepare(CPU, ckpt["preprocess"], img_size))
    return cm, ckpt


def test_p2_two_processes_metric_equals_single_process_evaluation(synthetic_data, tmp_path):
    out = tmp_path / "run"
    torchrun("p2_train.py", "--recipe", "improved", "--data-path", str(synthetic_data / "p2_data"), "--width", "16",
                 "--pretrained", "none", "--epochs", "2", "--switch-sgd-at", "0", "--snapshot-epochs", "1",
                 "--batch-size", "2", "--workers", "0", "--lr", "1e-3", "--output-dir", str(out), "--cache-dir",
                 str(tmp_path / "cache"))
    assert logged_epochs(out) == [1, 2]  # rank 0 logs once
    last = checkpoint.load(str(out / "last.pt"), "p2", training=True)
    assert last["world_size"] == 2 and last["epoch"] == 2 and len(last["rng"]) == 2
    assert checkpoint.load(str(out / "best.pt"), "p2")["kind"] == "inference"
    val = P2Tiles(str(synthetic_data / "p2_data" / "validation"))
    cm, ckpt = evaluate_checkpoint(out / "last.pt", "p2", val)
    assert cm.mat.sum() == len(val) * 512 * 512
    assert cm.mean_iou()[0] == pytest.approx(ckpt["meta"]["val_miou"], abs=1e-9)


def test_p1_two_processes_resume_and_metric_equals_single_process_evaluation(synthetic_data, tmp_path):
    out = tmp_path / "run"
    flags = ["--data-path", str(synthetic_data / "p1_data"), "--width", "16", "--img-size", "32", "--batch-size", "10",
             "--workers", "0", "--lr-schedule", "none", "--cache-dir", str(tmp_path / "cache")]
    torchrun("p1_train.py", *flags, "--epochs", "1", "--output-dir", str(out))
    r = torchrun("p1_train.py", *flags, "--epochs", "2", "--resume", str(out / "last.pt"))
    assert logged_epochs(out) == [1, 2]
    val = P1Images(str(synthetic_data / "p1_data" / "val_50"), progress=False)  # 150 images: 75 per process
    cm, ckpt = evaluate_checkpoint(out / "last.pt", "p1", val)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2 and cm.mat.sum() == len(val)
    assert cm.accuracy() == pytest.approx(ckpt["meta"]["val_acc"], abs=1e-12)
    best_cm, best = evaluate_checkpoint(out / "best.pt", "p1", val)
    assert f"best val_acc {best_cm.accuracy():.4f} at epoch {best['meta']['epoch']}" in r.stdout
    assert best_cm.accuracy() == pytest.approx(best["meta"]["val_acc"], abs=1e-12)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_torchrun_cpu_sync_bn_refused_up_front_and_said_by_rank_0_only(tmp_path, rank):
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "2", "LOCAL_RANK": rank, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "p2_train.py"), "--data-path", str(tmp_path / "nowhere"),
                        "--output-dir", str(tmp_path / "run"), "--device", "cpu", "--sync-bn"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    expected = "error: --sync-bn: SyncBatchNorm runs on CUDA only; drop it for a run on the CPU\n"
    assert r.stderr == (expected if rank == "0" else "")
    assert not (tmp_path / "run").exists()


def test_only_rank_0_prints_the_interrupt_message(monkeypatch, capsys):
    from core import cli

    def stopped(argv):
        raise cli.Interrupted("runs/x/last.pt holds epoch 2", exit_code=143)

    monkeypatch.setenv("RANK", "1")
    assert cli.run(stopped) == 143 and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert cli.run(stopped) == 143 and "interrupted: runs/x/last.pt holds epoch 2" in capsys.readouterr().err
