"""Default checkpoints that fetch themselves (``core/hub.py``), against an HTTP server on 127.0.0.1
that each test starts: nothing leaves the machine, and the tracked manifest is never touched
(``$HW2_MANIFEST`` and ``$HW2_CHECKPOINT_DIR`` point at temporary copies)."""
import contextlib
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import signal
import threading
import time

import pytest
import torch

from core import checkpoint, hub
from tests.conftest import ROOT, default_sigint, run_main
from tests.test_grading import image, read_mask, save_checkpoint, snapshot


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes); ``/cut/<path>`` announces the whole file but sends half."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.requests = {}, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/slow.pt":  # a trickle that outlasts any test: something to interrupt
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(600):
                    self.wfile.write(b"x" * 1024)
                    time.sleep(0.1)
            return
        cut = self.path.startswith("/cut/")
        data = self.server.files.get(self.path[4:] if cut else self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2] if cut else data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    s = Server()
    thread = threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


@pytest.fixture
def fcn8s(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", "p2", "fcn8s", {"num_classes": 7, "width": 16})


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty checkpoint folder and a manifest of its own, for this test and its subprocesses."""
    env = {"HW2_CHECKPOINT_DIR": str(tmp_path / "checkpoints"), "HW2_MANIFEST": str(tmp_path / "manifest.json"),
           "P2_CKPT": "", "P1_CKPT": ""}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    image(d / "0000_sat.jpg", (64, 80))
    return d


def publish(server, path, data):
    """Serve ``data`` at ``path``; its URL."""
    server.files[path] = data
    return f"{server.url}{path}"


def write_entry(url, data):
    """The manifest entry ``python -m core.hub add`` writes, for ``data`` published at ``url``."""
    from core.fileio import write_json
    entry = {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "model": "fcn8s"}
    write_json(os.environ["HW2_MANIFEST"], {"format": hub.FORMAT, "version": hub.VERSION,
                                            "checkpoints": {"p2_fcn8s_best.pt": entry}})


def test_grading_downloads_verifies_and_grades_the_default_checkpoint(server, fcn8s, hub_env, images, tmp_path,
                                                                       capsys):
    code = hub.cli.run(hub.main, ["add", "p2_fcn8s_best.pt", str(fcn8s), "--url", f"{server.url}/v1/p2_fcn8s_best.pt"])
    assert code == 0 and "now upload" in capsys.readouterr().out and not os.path.exists(hub_env["HW2_CHECKPOINT_DIR"])
    server.files["/v1/p2_fcn8s_best.pt"] = fcn8s.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", os.path.join(ROOT, "hw2_2_best.sh"), str(images), str(tmp_path / "out")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "downloading" in r.stderr and "verified sha256" in r.stderr and "\r" not in r.stderr  # no bar in a pipe
    local = os.path.join(hub_env["HW2_CHECKPOINT_DIR"], "p2_fcn8s_best.pt")
    assert open(local, "rb").read() == fcn8s.read_bytes()
    assert sorted(os.listdir(hub_env["HW2_CHECKPOINT_DIR"])) == ["p2_fcn8s_best.pt"]
    # the masks are those of the published checkpoint given explicitly; a second grading downloads nothing
    code, _, err = run_main("p2_test", ["--checkpoint", str(fcn8s), "--images", str(images), "--output",
                                        str(tmp_path / "ref"), "--workers", "0", "--device", "cpu"], capsys)
    assert code == 0, err
    assert (read_mask(str(tmp_path / "out" / "0000_mask.png")) == read_mask(str(tmp_path / "ref" / "0000_mask.png"))).all()
    code, _, err = run_main("p2_test", ["--images", str(images), "--output", str(tmp_path / "out"), "--workers", "0",
                                        "--device", "cpu"], capsys)
    assert code == 0 and "downloading" not in err, err
    assert server.requests == ["/v1/p2_fcn8s_best.pt"]
    assert hub.verify() == 0 and "p2_fcn8s_best.pt: matches the manifest" in capsys.readouterr().out


def flip_a_byte(data):
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


@pytest.mark.parametrize("case, message", [
    ("404", "HTTP 404"),
    ("offline", "Connection refused"),
    ("truncated", "the manifest says"),
    ("tampered", "refused and deleted"),
])
def test_a_bad_download_is_one_line_and_leaves_nothing(server, fcn8s, hub_env, images, tmp_path, capsys, case,
                                                       message):
    data = fcn8s.read_bytes()
    url = {"404": f"{server.url}/missing.pt", "offline": f"{server.url}/p.pt", "truncated": f"{server.url}/cut/p.pt",
           "tampered": f"{server.url}/p.pt"}[case]
    server.files["/p.pt"] = flip_a_byte(data) if case == "tampered" else data
    write_entry(url, data)
    if case == "offline":
        server.shutdown()
        server.server_close()
    code, _, err = run_main("p2_test", ["--images", str(images), "--output", str(tmp_path / "out"), "--workers", "0",
                                        "--device", "cpu"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and message in errors[0] and url in errors[0], err
    assert os.path.join(hub_env["HW2_CHECKPOINT_DIR"], "p2_fcn8s_best.pt") in errors[0]
    assert ".download" not in err and ".partial" not in err and "Traceback" not in err
    assert os.listdir(hub_env["HW2_CHECKPOINT_DIR"]) == []  # no partial, no bad file
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_a_download_leaves_nothing(server, hub_env, images, tmp_path):
    write_entry(f"{server.url}/slow.pt", b"x" * 1000)
    proc = subprocess.Popen(["bash", os.path.join(ROOT, "hw2_2_best.sh"), str(images), str(tmp_path / "out")],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=default_sigint)
    folder, deadline = hub_env["HW2_CHECKPOINT_DIR"], time.time() + 120
    while not (os.path.isdir(folder) and os.listdir(folder)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.listdir(folder), "the download never started"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert os.listdir(folder) == [] and not (tmp_path / "out").exists()


def test_a_checkpoint_given_is_never_downloaded(server, fcn8s, hub_env, images, tmp_path, capsys, monkeypatch):
    write_entry(publish(server, "/p.pt", fcn8s.read_bytes()), fcn8s.read_bytes())
    monkeypatch.setenv("P2_CKPT", str(tmp_path / "missing.pt"))
    argv = ["--images", str(images), "--output", str(tmp_path / "out"), "--workers", "0", "--device", "cpu"]
    code, _, err = run_main("p2_test", argv, capsys)
    assert code == 1 and "missing.pt: checkpoint not found" in err
    monkeypatch.setenv("P2_CKPT", "")
    code, _, err = run_main("p2_test", argv + ["--checkpoint", str(tmp_path / "gone.pt")], capsys)
    assert code == 1 and "gone.pt: checkpoint not found" in err
    assert server.requests == [] and not os.path.exists(hub_env["HW2_CHECKPOINT_DIR"])


def test_a_missing_default_without_a_manifest_entry_says_what_to_do(hub_env, images, tmp_path, capsys):
    code, _, err = run_main("p2_test", ["--model", "fcn32s", "--images", str(images), "--output",
                                        str(tmp_path / "out"), "--workers", "0"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "p2_fcn32s_best.pt: checkpoint not found" in err and "names no download" in err and "$P2_CKPT" in err


def test_add_refuses_what_is_not_the_named_model(fcn8s, hub_env, tmp_path, capsys):
    fcn32s = save_checkpoint(tmp_path / "fcn32s.pt", "p2", "fcn32s", {"num_classes": 7, "width": 16})
    inference = checkpoint.load(str(fcn8s))
    model = checkpoint.build_model(inference)
    training = checkpoint.training_state(inference, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                         lr_scheduler=None, scaler=None, phase=0, epoch=1, best_score=0.0, args={},
                                         rng=[], world_size=1)
    checkpoint.save(training, str(tmp_path / "last.pt"))
    url = ["--url", "https://x/y.pt"]
    for argv, message in ((["add", "p2_fcn8s_best.pt", str(tmp_path / "last.pt"), *url], "is a training checkpoint"),
                          (["add", "p2_fcn8s_best.pt", str(fcn32s), *url], "holds fcn32s"),
                          (["add", "p1_best.pt", str(fcn8s), *url], "is a p2 checkpoint"),
                          (["add", "p2_fcn8s_best.pt", str(fcn8s), "--url", "ftp://x/y.pt"], "--url ftp://x/y.pt")):
        code = hub.cli.run(hub.main, argv, expected=(hub.CheckpointError,))
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("error:") == 1, err
    assert not os.path.exists(hub_env["HW2_MANIFEST"])


# ---------------------------------------------------------------- the shell entry points


def test_fresh_clone_without_torch_says_how_to_set_up(tmp_path):
    clone = tmp_path / "clone"
    (clone / "core").mkdir(parents=True)
    for name in ("hw2_1.sh", "hw2_2.sh", "hw2_2_best.sh", "hw2_p1.sh", "hw2_p2.sh", "core/python.sh", "p1_test.py"):
        shutil.copy(os.path.join(ROOT, name), clone / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a python3 without torch: this interpreter with no site-packages
    (bin_dir / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for script in ("hw2_1.sh", "hw2_2.sh", "hw2_2_best.sh"):
        r = subprocess.run(["bash", str(clone / script), str(tmp_path), str(tmp_path / "out")], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "make -C" in r.stderr and "venv" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["hw2_1.sh", "hw2_2.sh", "hw2_2_best.sh", "hw2_p1.sh", "hw2_p2.sh"])
def test_scripts_show_their_own_usage(script, tmp_path):
    r = subprocess.run(["bash", os.path.join(ROOT, script), "only-one"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and f"usage: bash {script}" in r.stderr
    assert snapshot(tmp_path) == {}


def test_fp16_export_is_half_the_size_and_predicts_alike(tmp_path, capsys):
    full, half = tmp_path / "p1.pt", tmp_path / "half.pt"
    save_checkpoint(full, "p1", "classifier", {"num_classes": 50, "width": 16, "img_size": 32})
    assert hub.cli.run(hub.main, ["export-fp16", str(full), str(half)]) == 0
    assert half.stat().st_size < 0.55 * full.stat().st_size
    assert hub.cli.run(hub.main, ["export-fp16", str(full), str(half)]) == 1  # never over an existing file
    assert "exists" in capsys.readouterr().err
    x = torch.rand(64, 3, 32, 32)
    with torch.no_grad():
        ref, low = (checkpoint.load_model(str(p), "p1", torch.device("cpu"))[0](x) for p in (full, half))
    torch.testing.assert_close(low, ref, rtol=0, atol=2e-2 * float(ref.abs().max()))
    assert (ref.argmax(1) == low.argmax(1)).float().mean() > 0.9
    big = checkpoint.load(str(full))
    name = next(k for k in big["model"] if k.endswith("running_var"))
    big["model"][name] = big["model"][name] + 1e6  # e.g. raw 0..255 inputs: variances past float16's 65504
    checkpoint.save(big, str(tmp_path / "big.pt"))
    assert hub.cli.run(hub.main, ["export-fp16", str(tmp_path / "big.pt"), str(tmp_path / "big16.pt")],
                       expected=(hub.CheckpointError,)) == 1
    assert f"{name} holds" in capsys.readouterr().err and not (tmp_path / "big16.pt").exists()
