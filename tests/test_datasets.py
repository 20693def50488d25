import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DataError, P1Images, P2Tiles, parse_label, read_rgb
from datasets.masks import class_to_rgb
from datasets.synthetic import SNAPSHOT_IDS, generate, main as synth_main, get_args_parser as synth_args


def test_parse_label():
    assert parse_label("13_207.png") == 13
    assert parse_label("0_0.png") == 0
    assert parse_label("img_3.png") is None
    assert parse_label("50_1.png") is None
    assert parse_label("7.png") is None


def test_p1_layout(synthetic_data):
    ds = P1Images(str(synthetic_data / "p1_data" / "val_50"), progress=False)
    assert len(ds) == 150 and ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (3, 32, 32)
    assert ds.files == sorted(ds.files)
    assert all(int(f.split("_")[0]) == int(ds.labels[i]) for i, f in enumerate(ds.files))
    assert sorted(set(ds.labels.tolist())) == list(range(50))


def test_p1_unlabelled_names(tmp_path, synthetic_data):
    src = synthetic_data / "p1_data" / "val_50"
    shutil.copy(src / "3_0.png", tmp_path / "a.png")
    shutil.copy(src / "4_1.png", tmp_path / "4_1.png")
    ds = P1Images(str(tmp_path), require_labels=False, progress=False)
    assert ds.files == ["4_1.png", "a.png"] and ds.labels.tolist() == [4, -1]
    with pytest.raises(DataError, match="a.png: name carries no label"):
        P1Images(str(tmp_path), progress=False)


def test_p1_bad_files_all_listed(tmp_path, synthetic_data):
    src = synthetic_data / "p1_data" / "val_50"
    shutil.copy(src / "3_0.png", tmp_path / "3_0.png")
    (tmp_path / "1_1.png").write_bytes(b"")
    (tmp_path / "2_2.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(DataError) as e:
        P1Images(str(tmp_path), progress=False)
    assert "1_1.png" in str(e.value) and "2_2.png" in str(e.value) and "notes.txt" not in str(e.value)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        P1Images(str(tmp_path), progress=False)
    with pytest.raises(DataError, match="no such folder"):
        P1Images(str(tmp_path / "nope"), progress=False)
    with pytest.raises(DataError, match="no <id>_sat.jpg"):
        P2Tiles(str(tmp_path))


def test_p2_layout(synthetic_data):
    ds = P2Tiles(str(synthetic_data / "p2_data" / "validation"))
    assert ds.ids == ["0000", "0001", "0002"] + [f"{i:04d}" for i in SNAPSHOT_IDS]
    image, mask = ds[0]
    assert image.shape == (3, 512, 512) and image.dtype == torch.uint8
    assert mask.shape == (512, 512) and mask.dtype == torch.uint8 and int(mask.max()) <= 6


def _pair(folder, i, size=(16, 16), mask_size=None):
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / f"{i}_sat.jpg")
    Image.fromarray(class_to_rgb(np.zeros(mask_size or size, int))).save(folder / f"{i}_mask.png")


def test_p2_unpaired_and_size_mismatch_listed(tmp_path):
    _pair(tmp_path, "0000")
    _pair(tmp_path, "0001", mask_size=(8, 8))
    (tmp_path / "0002_sat.jpg").write_bytes((tmp_path / "0000_sat.jpg").read_bytes())
    (tmp_path / "0003_mask.png").write_bytes((tmp_path / "0000_mask.png").read_bytes())
    with pytest.raises(DataError) as e:
        P2Tiles(str(tmp_path))
    msg = str(e.value)
    assert "0002_sat.jpg: has no mask" in msg and "0003_mask.png: has no image" in msg
    (tmp_path / "0002_sat.jpg").unlink()
    (tmp_path / "0003_mask.png").unlink()
    with pytest.raises(DataError, match="0001_mask.png: mask is 8x8 but its image is 16x16"):
        P2Tiles(str(tmp_path))


def test_p2_test_folder_without_masks(tmp_path):
    _pair(tmp_path, "0005")
    (tmp_path / "0005_mask.png").unlink()
    ds = P2Tiles(str(tmp_path), require_masks=False)
    image, mask = ds[0]
    assert ds.ids == ["0005"] and (mask == 255).all()


def test_read_rgb_converts_modes(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 4, 4), 100, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "s.png")
    assert (read_rgb(tmp_path / "g.png") == 200).all()
    assert read_rgb(tmp_path / "a.png").shape == (4, 4, 3)
    assert (read_rgb(tmp_path / "s.png") == 255).all()
    (tmp_path / "t.png").write_bytes((tmp_path / "g.png").read_bytes()[:30])
    with pytest.raises(DataError, match="t.png: not a readable image"):
        read_rgb(tmp_path / "t.png")


def test_p2_cache_equals_decode_and_invalidates(tmp_path, synthetic_data):
    src = synthetic_data / "p2_data" / "validation"
    data = tmp_path / "val"
    shutil.copytree(src, data)
    plain = P2Tiles(str(data))
    cached = P2Tiles(str(data), cache_dir=str(tmp_path / "cache"), progress=False)
    assert cached.images is not None
    for k in (0, len(plain) - 1):
        assert all(torch.equal(a, b) for a, b in zip(plain[k], cached[k]))
    entries = sorted(os.listdir(tmp_path / "cache"))
    again = P2Tiles(str(data), cache_dir=str(tmp_path / "cache"), progress=False)
    assert sorted(os.listdir(tmp_path / "cache")) == entries and torch.equal(again[1][1], plain[1][1])
    # change one mask: the stale entry is replaced and the new content is served
    new_mask = np.zeros((512, 512), int)
    Image.fromarray(class_to_rgb(new_mask)).save(data / "0001_mask.png")
    os.utime(data / "0001_mask.png", ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    fresh = P2Tiles(str(data), cache_dir=str(tmp_path / "cache"), progress=False)
    assert sorted(os.listdir(tmp_path / "cache")) != entries and len(os.listdir(tmp_path / "cache")) == len(entries)
    assert (fresh[1][1] == 0).all()


def test_p1_cache_equals_decode(tmp_path, synthetic_data):
    root = str(synthetic_data / "p1_data" / "val_50")
    a = P1Images(root, progress=False)
    b = P1Images(root, cache_dir=str(tmp_path), progress=False)
    c = P1Images(root, cache_dir=str(tmp_path), progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.images, c.images)


def test_synthetic_deterministic_and_atomic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(str(a), seed=3, p1_train_per_class=1, p1_val_per_class=1, p2_train=1, p2_val=1, p2_size=64)
    generate(str(b), seed=3, p1_train_per_class=1, p1_val_per_class=1, p2_train=1, p2_val=1, p2_size=64)
    for rel in ("p1_data/train_50/7_0.png", "p2_data/validation/0097_sat.jpg", "p2_data/train/0000_mask.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    masks = [np.asarray(Image.open(p)) for p in sorted((a / "p2_data" / "validation").glob("*_mask.png"))]
    assert all(m.shape == (64, 64, 3) for m in masks)
    out = tmp_path / "c"
    args = synth_args().parse_args(["--out", str(out), "--p1-train-per-class", "1", "--p1-val-per-class", "1",
                                    "--p2-train", "1", "--p2-val", "1", "--p2-size", "64"])
    synth_main(args)
    assert (out / "synthetic.json").exists() and not list(tmp_path.glob("c.tmp*"))
    synth_main(args)  # same settings: a no-op
    args.seed = 9
    with pytest.raises(SystemExit, match="other settings"):
        synth_main(args)


def test_synthetic_p2_has_all_classes(synthetic_data):
    seen = set()
    for folder in ("train", "validation"):
        ds = P2Tiles(str(synthetic_data / "p2_data" / folder))
        for k in range(len(ds)):
            seen |= set(ds[k][1].unique().tolist())
    assert seen == set(range(7))
