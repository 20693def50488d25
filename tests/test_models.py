"""Tests for models/ (the registry, models/backbones.py) and core/pretrained.py: seed printouts, parameter counts, output sizes,
initialisation, VGG weight copying and weight-file loading.

Width-1 models are only built on the meta device (printing and counting need no memory or
init time); forward passes use width 8-16 so the file runs in seconds on a laptop CPU.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from core import hub
from models import MODELS, FCN8VGG, Classifier, FCN32VGg, copy_params_from_vgg16, get_model, model_names
from models.registry import ModelEntry, register
from models.fcn import get_upsampling_weight
from core.pretrained import load_backbone_state_dict
from models.backbones import BACKBONES

SEED_PRINTS = Path(__file__).parent / "seed_prints"
NAMES = ["classifier", "fcn32s", "fcn8s"]


def seed_lines(name):
    return (SEED_PRINTS / f"{name}.txt").read_text().splitlines()


def normalise(line):
    # torch >= 2.14 adds "bias=True" to the BatchNorm repr; the seed's torch did not.
    return line.rstrip().replace(", bias=True, track_running_stats", ", track_running_stats")


def meta_model(name):
    with torch.device("meta"):
        return get_model(name)


def seed_param_count(lines):
    """Parameter count implied by the printed layers alone."""
    total = 0
    for line in lines:
        if m := re.search(r"Conv(?:Transpose)?2d\((\d+), (\d+), kernel_size=\((\d+), (\d+)\)", line):
            cin, cout, kh, kw = map(int, m.groups())
            total += cin * cout * kh * kw + (0 if "bias=False" in line else cout)
        elif m := re.search(r"BatchNorm[12]d\((\d+),", line):
            total += 2 * int(m.group(1))
        elif m := re.search(r"Linear\(in_features=(\d+), out_features=(\d+), bias=True\)", line):
            a, b = map(int, m.groups())
            total += a * b + b
    return total


def randomise_score_layers(model):
    """Score layers start at zero; give them values so outputs depend on every path."""
    with torch.no_grad():
        for name in ("score_fr", "score_pool3", "score_pool4_2"):
            if hasattr(model, name):
                getattr(model, name).weight.normal_(0, 0.1)
                getattr(model, name).bias.normal_(0, 0.1)
        if hasattr(model, "bn4_2"):
            model.bn4_2.weight.fill_(1.0)


# ---------------------------------------------------------------- registry and printouts

def test_registry():
    assert list(MODELS) == NAMES
    assert isinstance(get_model("classifier", width=16, img_size=32), Classifier)
    assert isinstance(get_model("fcn32s", width=16), FCN32VGg)
    assert isinstance(get_model("fcn8s", width=16, num_classes=3), FCN8VGG)
    with pytest.raises(ValueError, match="classifier, fcn32s, fcn8s"):
        get_model("fcn16s")


def test_registry_entries_describe_their_models(monkeypatch):
    assert model_names("p1") == ["classifier"] and model_names("p2") == ["fcn32s", "fcn8s"]
    assert [MODELS[n].input_size for n in MODELS] == [None, None, 512]
    assert MODELS["classifier"].backbone is None
    assert [MODELS[n].backbone.name for n in ("fcn32s", "fcn8s")] == ["vgg16", "vgg16_bn"]
    assert all(MODELS[n].backbone.name == MODELS[n].cls.vgg_variant for n in ("fcn32s", "fcn8s"))  # copy checks it
    assert MODELS["classifier"].check_input_size(28) == 28
    with pytest.raises(ValueError, match="img_size=27 is too small"):
        MODELS["classifier"].check_input_size(27)
    with pytest.raises(ValueError, match="fcn8s trains on 512x512 inputs only, got 256"):
        MODELS["fcn8s"].check_input_size(256)
    assert MODELS["fcn32s"].check_input_size(33) == 33
    with pytest.raises(ValueError, match="already registered"):
        register("fcn8s", object, "p2")
    with pytest.raises(ValueError, match="p1, p2"):
        register("unet", object, "p3")
    assert "unet" not in MODELS
    monkeypatch.setitem(MODELS, "tiny", ModelEntry("tiny", dict, "p2"))  # a class without input_size or backbone
    assert MODELS["tiny"].input_size is None and MODELS["tiny"].backbone is None
    assert model_names("p2") == ["fcn32s", "fcn8s", "tiny"] and get_model("tiny", a=1) == {"a": 1}


def test_default_checkpoints_name_registered_models_of_their_problem():
    assert {m: MODELS[m].problem for m in hub.DEFAULTS} == {m: problem for m, (problem, _, _) in hub.DEFAULTS.items()}


@pytest.mark.parametrize("name", NAMES)
def test_print_matches_seed(name):
    got = [normalise(line) for line in str(meta_model(name)).splitlines()]
    assert got == [normalise(line) for line in seed_lines(name)]


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_seed(name):
    expected = seed_param_count(seed_lines(name))
    assert expected > 10_000_000
    assert sum(p.numel() for p in meta_model(name).parameters()) == expected


def test_bad_width():
    with pytest.raises(ValueError, match="width"):
        Classifier(width=3)
    with pytest.raises(ValueError, match="width"):
        FCN8VGG(width=0)


# ---------------------------------------------------------------- classifier

@pytest.mark.parametrize("img_size, fc_in", [(224, 64 * 7 * 7), (32, 64 * 1 * 1)])
def test_classifier_shapes(img_size, fc_in):
    torch.manual_seed(0)
    model = Classifier(width=8, img_size=img_size).eval()
    assert model.fc[0].in_features == fc_in
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (2, 50)
    assert feats.shape == (2, 64)
    torch.testing.assert_close(logits, model.fc[8](feats))


def test_classifier_seed_fc_size():
    assert meta_model("classifier").fc[0].in_features == 25088


def test_classifier_wrong_input_size():
    model = Classifier(width=16, img_size=32).eval()
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="too small"):
        Classifier(width=16, img_size=16)


# ---------------------------------------------------------------- FCN shapes

@pytest.mark.parametrize("size", [(64, 64), (100, 100), (200, 300), (512, 512), (1, 1)])
def test_fcn32s_output_size(size):
    model = FCN32VGg(width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 7, *size)


def test_fcn32s_crop_offset():
    torch.manual_seed(0)
    model = FCN32VGg(width=16).eval()
    randomise_score_layers(model)
    seen = {}
    model.upscore.register_forward_hook(lambda m, i, o: seen.update(upscore=o))
    with torch.no_grad():
        y = model(torch.randn(1, 3, 512, 512))
    assert seen["upscore"].shape[-2:] == (576, 576)
    torch.testing.assert_close(y, seen["upscore"][:, :, 19:531, 19:531])


def test_fcn8s_takes_exactly_512():
    model = FCN8VGG(width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 512, 512)).shape == (2, 7, 512, 512)
        for size in [(256, 256), (512, 511), (513, 512), (1024, 1024)]:
            with pytest.raises(ValueError, match=f"512x512 inputs .*got {size[0]}x{size[1]}"):
                model(torch.randn(1, 3, *size))


def test_fcn8s_internal_sizes_at_512():
    model = FCN8VGG(width=16).eval()
    sizes = {}
    for name in ("fc6", "upscore2", "lrelu4_2", "upscore_pool4", "score_pool3", "upscore8"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: sizes.update({name: tuple(o.shape[-2:])}))
    with torch.no_grad():
        model(torch.randn(1, 3, 512, 512))
    assert sizes == {"fc6": (10, 10), "upscore2": (32, 32), "lrelu4_2": (32, 32),
                     "upscore_pool4": (64, 64), "score_pool3": (64, 64), "upscore8": (512, 512)}


# ---------------------------------------------------------------- initialisation

def upsampling_layers():
    for cls in (FCN32VGg, FCN8VGG):
        for name, m in cls(width=16).named_modules():
            if isinstance(m, nn.ConvTranspose2d):
                yield f"{cls.__name__}.{name}", m


@pytest.mark.parametrize("name, layer", list(upsampling_layers()))
def test_upsampling_constant_in_constant_out(name, layer):
    k, s, n = layer.kernel_size[0], layer.stride[0], 6
    assert layer.bias is None
    x = torch.arange(1.0, 8.0).view(1, 7, 1, 1).expand(1, 7, n, n)
    with torch.no_grad():
        y = layer(x)
    # Output pixels that every tap reaches from inside the input.
    interior = y[:, :, k - 1:(n - 1) * s + 1, k - 1:(n - 1) * s + 1]
    assert interior.numel() > 0
    torch.testing.assert_close(interior, x[:, :, :1, :1].expand_as(interior))


def test_upsampling_weight_is_bilinear_for_kernel_twice_stride():
    # wkentaro/pytorch-fcn's get_upsampling_weight for kernel 64 (the FCN32s upscore).
    og = np.ogrid[:64, :64]
    filt = (1 - abs(og[0] - 31.5) / 32) * (1 - abs(og[1] - 31.5) / 32)
    weight = get_upsampling_weight(7, 7, 64, 32)
    torch.testing.assert_close(weight[3, 3], torch.from_numpy(filt).float())
    assert weight[3, 4].abs().sum() == 0
    torch.testing.assert_close(get_upsampling_weight(7, 7, 8, 8)[0, 0], torch.ones(8, 8))


@pytest.mark.parametrize("cls, names", [(FCN32VGg, ["score_fr"]), (FCN8VGG, ["score_fr", "score_pool3"])])
def test_score_paths_start_silent(cls, names):
    model = cls(width=16)
    for name in names:
        assert getattr(model, name).weight.abs().sum() == 0
        assert getattr(model, name).bias.abs().sum() == 0
    assert model.fc6.weight.abs().sum() > 0
    if cls is FCN8VGG:  # the pool4 branch is silenced by bn4_2's gamma, not by a zero conv
        assert model.score_pool4_2.weight.abs().sum() > 0 and model.bn4_2.weight.abs().sum() == 0
        model.eval()
        with torch.no_grad():
            h = model.features4(model.features3(torch.randn(1, 3, 64, 64)))
            branch = model.lrelu4_2(model.bn4_2(model.score_pool4_2(model.lrelu4_1(model.bn4_1(
                model.score_pool4_1(model.lrelu4_0(model.bn4_0(model.score_pool4_0(h)))))))))
        assert branch.abs().sum() == 0


# ---------------------------------------------------------------- VGG weights

@pytest.fixture(scope="module")
def vgg16_state():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.fixture(scope="module")
def vgg16_bn_state():
    torch.manual_seed(0)
    model = torchvision.models.vgg16_bn(weights=None)
    state = model.state_dict()
    for key, value in state.items():  # non-trivial BN values, so copying them is visible
        if key.endswith(("running_mean", "running_var")) or ("weight" in key and value.dim() == 1):
            value.uniform_(0.5, 2)
    return state


def fake_state_dict(variant):
    """The keys of a torchvision state dict with tiny tensors, for file/variant tests."""
    with torch.device("meta"):
        keys = getattr(torchvision.models, variant)().state_dict().keys()
    return {k: torch.zeros(1) for k in keys}


def check_fc_copied(model, state):
    assert torch.equal(model.fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(model.fc6.bias, state["classifier.0.bias"])
    assert torch.equal(model.fc7.weight, state["classifier.3.weight"].view(4096, 4096, 1, 1))
    assert torch.equal(model.fc7.bias, state["classifier.3.bias"])
    assert (model.bn6.weight == 1).all() and (model.bn7.bias == 0).all()


def test_copy_vgg16_into_fcn32s(vgg16_state):
    model = FCN32VGg()
    copied = copy_params_from_vgg16(model, vgg16_state)
    assert len(copied) == 13 * 2 + 4
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    for i in conv_indices:
        torch.testing.assert_close(model.features5[i].weight, vgg16_state[f"features.{i}.weight"])
        torch.testing.assert_close(model.features5[i].bias, vgg16_state[f"features.{i}.bias"])
    check_fc_copied(model, vgg16_state)


def test_copy_without_fc_keeps_the_authors_fresh_fc6_fc7(vgg16_state):
    model = FCN32VGg(head_init="pytorch")
    fc6, fc7 = model.fc6.weight.detach().clone(), model.fc7.bias.detach().clone()
    copied = copy_params_from_vgg16(model, vgg16_state, copy_fc=False)
    assert len(copied) == 13 * 2 and not any(k.startswith("fc") for k in copied)
    assert torch.equal(model.fc6.weight, fc6) and torch.equal(model.fc7.bias, fc7)
    torch.testing.assert_close(model.features5[0].weight, vgg16_state["features.0.weight"])


def test_copy_vgg16_bn_into_fcn8s(vgg16_bn_state):
    model = FCN8VGG()
    copied = copy_params_from_vgg16(model, vgg16_bn_state)
    assert len(copied) == 13 * 2 + 13 * 4 + 4
    torch.testing.assert_close(model.features4[0].weight, vgg16_bn_state["features.24.weight"])
    torch.testing.assert_close(model.features5[1].running_var, vgg16_bn_state["features.35.running_var"])
    check_fc_copied(model, vgg16_bn_state)

    # The three stages together compute torchvision's vgg16_bn.features.
    with torch.device("meta"):
        vgg = torchvision.models.vgg16_bn(weights=None).eval()
    vgg.load_state_dict(vgg16_bn_state, assign=True)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.features5(model.features4(model.features3(x))), vgg.features(x))


def test_copy_rejects_wrong_variant_and_width():
    with torch.device("meta"):
        fcn32s, fcn8s = FCN32VGg(), FCN8VGG()
    with pytest.raises(ValueError, match="FCN8VGG needs a vgg16_bn state dict, got vgg16"):
        copy_params_from_vgg16(fcn8s, fake_state_dict("vgg16"))
    with pytest.raises(ValueError, match="FCN32VGg needs a vgg16 state dict, got vgg16_bn"):
        copy_params_from_vgg16(fcn32s, fake_state_dict("vgg16_bn"))
    with pytest.raises(ValueError, match="width=1"):
        copy_params_from_vgg16(FCN32VGg(width=16), fake_state_dict("vgg16"))
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        copy_params_from_vgg16(fcn32s, {"features.0.weight": torch.zeros(1)})
    with pytest.raises(TypeError):
        copy_params_from_vgg16(Classifier(width=16, img_size=32), fake_state_dict("vgg16"))


# ---------------------------------------------------------------- weight files

def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_load_none_and_bad_variant():
    assert load_backbone_state_dict("none", "vgg16") is None
    with pytest.raises(ValueError, match="variant"):
        load_backbone_state_dict("none", "vgg19")


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_load_from_path(tmp_path, wrap):
    state = fake_state_dict("vgg16_bn")
    path = tmp_path / "weights.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    loaded = load_backbone_state_dict(str(path), "vgg16_bn")
    assert loaded.keys() == state.keys()


def test_load_errors(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError) as e:
        load_backbone_state_dict(str(missing), "vgg16")
    one_line_error(e, str(missing), "--pretrained PATH", "--pretrained none", BACKBONES["vgg16"].weights_file)

    path = tmp_path / "vgg16.pth"
    torch.save(fake_state_dict("vgg16"), path)
    with pytest.raises(ValueError) as e:
        load_backbone_state_dict(str(path), "vgg16_bn")
    one_line_error(e, str(path), "holds vgg16 weights but vgg16_bn is needed", "--pretrained none")

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError) as e:
        load_backbone_state_dict(str(truncated), "vgg16")
    one_line_error(e, str(truncated), "corrupt", "--pretrained none")

    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError) as e:
        load_backbone_state_dict(str(other), "vgg16")
    one_line_error(e, str(other), "not a torchvision VGG16")


def test_load_auto_uses_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_backbone_state_dict("auto", "vgg16")
    one_line_error(e, str(cache / BACKBONES["vgg16"].weights_file), "--pretrained none")

    torch.save(fake_state_dict("vgg16_bn"), cache / BACKBONES["vgg16_bn"].weights_file)
    with pytest.raises(FileNotFoundError):  # a BN file is never taken for plain vgg16
        load_backbone_state_dict("auto", "vgg16")
    assert "features.1.running_mean" in load_backbone_state_dict("auto", "vgg16_bn")

    torch.save(fake_state_dict("vgg16"), cache / "vgg16-renamed.pth")
    assert "features.1.running_mean" not in load_backbone_state_dict("auto", "vgg16")
