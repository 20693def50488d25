"""The one inference loader (core/inference.py): the checkpoint's validation precision -> the
autocast dtype, exactly or fp32 with a note; device; memory format; refusals naming the file; the
default checkpoint."""
import pytest
import torch

from core import checkpoint, cli, runtime
from core.checkpoint import CheckpointError
from core.inference import load_for_inference
from core.inputs import model_inputs
from tests.factories import CPU, PREPROCESS, classifier, inference_ckpt


def saved(tmp_path, name="best.pt", seed=0, **meta):
    path = str(tmp_path / name)
    checkpoint.save(inference_ckpt(classifier(seed), **meta), path)
    return path


@pytest.fixture
def arithmetic(monkeypatch):
    """Pretend this CPU has (True) or lacks (False) bf16 and fp16 arithmetic."""
    def set_to(has):
        monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: has)
        monkeypatch.setattr(runtime, "cpu_computes_fp16", lambda: has)
    return set_to


@pytest.mark.parametrize("validated, dtype", [(None, None), ("fp32", None), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_auto_is_exactly_the_validation_precision(tmp_path, arithmetic, capsys, validated, dtype):
    arithmetic(True)
    path = saved(tmp_path, **({"precision": validated} if validated else {}))  # None: an older record
    loaded = load_for_inference(path, "p1", "cpu")
    assert loaded.dtype is dtype and loaded.precision == (validated or "fp32")
    assert loaded.channels_last == (dtype is not None) and capsys.readouterr().err == ""
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    out = loaded.map_batches(loaded.model, images, batch_size=2, img_size=32)
    x = model_inputs(images, PREPROCESS["mean"], PREPROCESS["std"], 32, loaded.channels_last)
    with torch.no_grad(), runtime.autocast(CPU, dtype):
        ref = torch.cat([loaded.model(x[i:i + 2]) for i in range(0, 5, 2)])  # the same batches
    assert out.shape == (5, 50) and out.dtype == (dtype or torch.float32)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("validated", ["bf16", "fp16"])
def test_auto_without_the_arithmetic_falls_back_to_fp32_with_a_note(tmp_path, arithmetic, capsys, validated):
    arithmetic(False)
    path = saved(tmp_path, precision=validated)
    loaded = load_for_inference(path, "p1", "cpu")
    err = capsys.readouterr().err
    assert loaded.dtype is None and not loaded.channels_last
    assert err.count("\n") == 1 and err.startswith(f"note: --precision auto: {path} was validated in {validated}")
    assert "predicting in fp32" in err and f"--precision {validated} forces it" in err
    forced = load_for_inference(path, "p1", "cpu", precision=validated)  # emulated, as asked
    assert forced.dtype is runtime.PRECISIONS[validated] and capsys.readouterr().err == ""


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_named_precision_overrides_the_record(tmp_path, arithmetic, precision, dtype):
    arithmetic(True)
    loaded = load_for_inference(saved(tmp_path, precision="bf16"), "p1", "cpu", precision=precision)
    assert loaded.dtype is dtype and loaded.channels_last == (dtype is not None)


def test_memory_format_and_device(tmp_path, arithmetic):
    arithmetic(True)
    path = saved(tmp_path, precision="bf16")
    conv = next(m for m in load_for_inference(path, "p1", "cpu").model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    plain = load_for_inference(path, "p1", "cpu", precision="fp32")
    assert plain.device == CPU and not plain.model.training
    assert all(p.is_contiguous() and p.device == CPU for p in plain.model.parameters())
    auto = load_for_inference(path, "p1", "auto", precision="fp32")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert auto.channels_last == torch.cuda.is_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_but_absent_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: --device cuda: CUDA is not available"):
        load_for_inference(saved(tmp_path), "p1", "cuda")


def test_gpu_without_bf16(monkeypatch):
    """A GPU before Ampere: auto falls back from bf16 to fp32; --precision bf16 is refused in one line."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    gpu = torch.device("cuda", 0)
    assert runtime.inference_dtype(gpu, "auto", "bf16") is None
    assert runtime.inference_dtype(gpu, "auto", "fp16") is torch.float16
    with pytest.raises(cli.UserError, match=r"^--precision bf16: this GPU cannot run bf16"):
        runtime.inference_dtype(gpu, "bf16", "fp32")


def test_refusals_name_the_file(tmp_path):
    path = saved(tmp_path, "p1.pt")
    with pytest.raises(CheckpointError, match=r"p1\.pt: is a p1 checkpoint \(classifier\), but a p2"):
        load_for_inference(path, "p2", "cpu")
    odd = saved(tmp_path, "odd.pt", precision="fp8")
    with pytest.raises(CheckpointError, match=r"odd\.pt: records validation precision 'fp8', expected one of fp32"):
        load_for_inference(odd, "p1", "cpu")


def test_default_checkpoint_when_none_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("HW2_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("HW2_MANIFEST", str(tmp_path / "manifest.json"))
    with pytest.raises(CheckpointError, match=r"p1_best\.pt: checkpoint not found"):
        load_for_inference(None, "p1", "cpu")
    default = saved(tmp_path, "p1_best.pt", seed=1)
    given = saved(tmp_path, "other.pt", seed=2)
    assert load_for_inference("", "p1", "cpu").path == default  # an empty --checkpoint / $P1_CKPT counts as unset
    assert load_for_inference(given, "p1", "cpu").path == given
