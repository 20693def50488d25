"""Data files a user really has: odd names, entries that are not files, macOS zip debris, files
re-saved by other programs, full disks and damaged caches. Every case: each good image still
gets its mask or row, each bad entry is named, refusals are one line naming the user's path
(never a temporary name), and nothing is left behind.

Grading runs in this process through ``main(argv)`` under the scripts' exit convention
(``tests.conftest.run_main``) with an untrained width-16 FCN32s and 64-pixel windows.
"""
import errno
import os
import socket

import numpy as np
import pytest
from PIL import Image

from core import cli, fileio
from core.sliding_window import window_bytes
from datasets import DataError, P1Images, P2Tiles, cache, parse_label
from models import get_model
from tests.conftest import run_main, script_main
from tests.test_grading import image, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "p2.pt", "p2", "fcn32s", {"num_classes": 7, "width": 16})


def p2(images, out, ckpt, capsys, *extra):
    return run_main("p2_test", ["--checkpoint", str(ckpt), "--images", str(images), "--output", str(out),
                                "--workers", "0", "--device", "cpu", "--window", "64", *extra], capsys)


def folder(path, ids, size=(40, 48)):
    path.mkdir(exist_ok=True)
    for k, i in enumerate(ids):
        image(path / f"{i}_sat.jpg", size=size, seed=k)
    return path


def leftovers(path):
    return [n for n in os.listdir(path) if n.startswith(fileio.TMP_PREFIX) or ".tmp" in n]


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- grading: where the masks go


def test_p2_refuses_gt_that_is_the_output_folder(ckpt, tmp_path, capsys):
    images, out = folder(tmp_path / "v", ["0000", "0001"]), tmp_path / "out"
    assert p2(images, out, ckpt, capsys)[0] == 0
    before = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out)}
    os.symlink(out, tmp_path / "link")
    for gt in (out, tmp_path / "link"):
        code, _, err = p2(images, out, ckpt, capsys, "--gt", str(gt))
        assert code == 1 and err.count("\n") == 1 and err.startswith(f"error: --gt {gt} is the output folder")
    assert {n: (out / n).stat().st_mtime_ns for n in os.listdir(out)} == before
    code, out_text, err = p2(images, tmp_path / "out2", ckpt, capsys, "--gt", str(out))  # predictions as "truth"
    assert code == 0 and "written by p2_test.py (predictions, not ground truth)" in err
    code, _, err = run_main("mean_iou_evaluate", ["-g", str(out), "-p", str(tmp_path / "out2")], capsys)
    assert "-g" in err and "written by p2_test.py (predictions, not ground truth)" in err


def test_p2_long_names_fit_and_a_name_too_long_costs_only_itself(ckpt, tmp_path, capsys):
    long_id, too_long = "1" * 240, "2" * 247  # 2..._sat.jpg is 255 bytes; its mask name would be 256
    images, out = folder(tmp_path / "v", ["0000", long_id, too_long]), tmp_path / "out"
    code, _, err = p2(images, out, ckpt, capsys)
    assert code == 1
    assert sorted(os.listdir(out)) == [".p2_test.json", "0000_mask.png", f"{long_id}_mask.png"]
    assert f"cannot write {out / too_long}_mask.png: File name too long" in err
    assert not leftovers(out)


def test_p2_entries_named_like_images_that_are_not_files(ckpt, tmp_path, capsys, monkeypatch):
    images, out = folder(tmp_path / "v", ["good"]), tmp_path / "out"
    (images / "dir_sat.jpg").mkdir()
    os.mkfifo(images / "fifo_sat.jpg")  # opening it would block forever
    sock = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(images)  # a relative name: a socket's path is limited to 108 bytes
    sock.bind("sock_sat.jpg")
    os.symlink(images / "gone", images / "link_sat.jpg")
    os.symlink("loop_sat.jpg", images / "loop_sat.jpg")
    try:
        code, _, err = p2(images, out, ckpt, capsys)
    finally:
        sock.close()
    assert code == 1 and sorted(os.listdir(out)) == [".p2_test.json", "good_mask.png"]
    for name, kind in (("dir", "a folder"), ("fifo", "a FIFO"), ("sock", "a socket"), ("link", "dangling"),
                       ("loop", "symbolic link loop")):
        assert f"{images / name}_sat.jpg: not a readable image ({kind}" in err


def test_p2_full_disk_names_the_mask_and_a_rerun_finishes(ckpt, tmp_path, capsys, monkeypatch):
    images, out = folder(tmp_path / "v", ["0000", "0001", "0002", "0003"]), tmp_path / "out"
    real_open, opened = open, []

    def filling_disk(name, mode="r", *a, **kw):  # the record and two masks fit, then the disk is full
        f = real_open(name, mode, *a, **kw)
        if "x" in mode:
            opened.append(name)
            if len(opened) > 3:
                f.write(b"half a png")
                f.flush()
                f.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(fileio, "open", filling_disk, raising=False)
    code, _, err = p2(images, out, ckpt, capsys)
    monkeypatch.undo()
    assert code == 1 and error_lines(err) == [
        f"error: {out / '0002_mask.png'}: no space left on the device; 2 of 4 mask(s) were written to {out}; "
        "free some space and run the same command again"]
    assert not leftovers(out) and sorted(os.listdir(out)) == [".p2_test.json", "0000_mask.png", "0001_mask.png"]
    assert p2(images, out, ckpt, capsys)[0] == 0  # its own masks, claimed before the disk filled
    assert len(os.listdir(out)) == 5


def test_p2_temporary_files_of_a_killed_run_never_fail_a_later_one(ckpt, tmp_path, capsys):
    images, out = folder(tmp_path / "v", ["0000"]), tmp_path / "out"
    out.mkdir()
    old, fresh = out / f"{fileio.TMP_PREFIX}{'a' * 16}", out / f"{fileio.TMP_PREFIX}{'b' * 16}"
    old.write_bytes(b"half a png")
    fresh.write_bytes(b"half a png")
    os.utime(old, (0, 0))  # killed long ago: removed; a fresh one may be a running writer's: kept
    code, _, err = p2(images, out, ckpt, capsys)
    assert code == 0 and sorted(os.listdir(out)) == [".p2_test.json", fresh.name, "0000_mask.png"]
    assert "holds 1 temporary file(s) of a run that was killed or is running" in err and "other file" not in err


def test_p2_window_that_cannot_fit_is_refused_before_allocating(ckpt, tmp_path, capsys, monkeypatch):
    images = folder(tmp_path / "v", ["0000", "0001"])
    code, _, err = p2(images, tmp_path / "o", ckpt, capsys, "--window", "100000")
    assert code == 1 and err == ("error: --window 100000: at most 20000 (the largest image side read); larger "
                                 "images are predicted window by window anyway\n")
    main_globals = script_main("p2_test").__globals__
    monkeypatch.setitem(main_globals, "available_bytes", lambda device: 2 ** 30)
    code, _, err = p2(images, tmp_path / "o", ckpt, capsys, "--window", "16000")
    assert code == 1 and err.startswith("error: --window 16000: one window needs at least") and "1.0 GiB free" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    # a batch that cannot fit is lowered to what fits (half the free memory, the estimate being a lower bound)
    per_window = window_bytes(get_model("fcn32s", num_classes=7, width=16), 64)
    monkeypatch.setitem(main_globals, "available_bytes", lambda device: 5 * per_window)
    used = []
    real_predict = main_globals["predict_masks"]
    monkeypatch.setitem(main_globals, "predict_masks", lambda *a, **kw: used.append(kw["batch_size"]) or
                        real_predict(*a, **kw))
    code, _, err = p2(images, tmp_path / "o", ckpt, capsys, "--batch-size", "64")
    assert code == 0 and used == [2] and err.startswith("warning: --batch-size 64: 64 windows of 64x64 need about")
    assert err.rstrip().endswith("using 2") and len(os.listdir(tmp_path / "o")) == 3


# ---------------------------------------------------------------- names and entries


def test_macos_metadata_is_ignored_with_one_warning(ckpt, tmp_path, capsys):
    images = folder(tmp_path / "v", ["0000"])
    (images / "._0000_sat.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (images / "__MACOSX").mkdir()
    code, _, err = p2(images, tmp_path / "out", ckpt, capsys)
    assert code == 0 and sorted(os.listdir(tmp_path / "out")) == [".p2_test.json", "0000_mask.png"]
    assert err.count("macOS metadata") == 1 and "._0000_sat.jpg, __MACOSX" in err

    train = tmp_path / "train"  # training: P1 and P2 folders
    train.mkdir()
    image(train / "3_0.png", size=(32, 32))
    (train / "._3_0.png").write_bytes(b"\x00\x05\x16\x07")
    assert P1Images(str(train), progress=False).files == ["3_0.png"]
    tiles = folder(tmp_path / "tiles", ["0000"])
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tiles / "0000_mask.png")
    for name in ("._0000_sat.jpg", "._0000_mask.png"):
        (tiles / name).write_bytes(b"\x00\x05\x16\x07")
    assert P2Tiles(str(tiles), progress=False).ids == ["0000"]

    pred = tmp_path / "out"
    (pred / "._0000_mask.png").write_bytes(b"\x00\x05\x16\x07")
    code, text, err = run_main("mean_iou_evaluate", ["-g", str(tiles), "-p", str(pred)], capsys)
    assert code == 0 and "mean_iou:" in text and "._0000_mask.png" in err


def test_p2_predicts_sat_jpg_in_any_case_and_jpeg(ckpt, tmp_path, capsys):
    images = tmp_path / "v"
    images.mkdir()
    image(images / "a_sat.JPG", size=(40, 48))
    image(images / "b_sat.jpeg", size=(40, 48))
    image(images / "c_sat.Jpeg", size=(40, 48))
    code, _, err = p2(images, tmp_path / "out", ckpt, capsys)
    assert code == 0 and sorted(os.listdir(tmp_path / "out")) == [
        ".p2_test.json", "a_mask.png", "b_mask.png", "c_mask.png"]
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(images / "a_mask.png")  # training reads them too
    tiles = P2Tiles(str(images), require_masks=False, progress=False)
    assert tiles.ids == ["a", "b", "c"] and tiles.image_paths[0] == str(images / "a_sat.JPG")
    image(images / "a_sat.jpg", size=(40, 48))  # two images for one mask name
    code, _, err = p2(images, tmp_path / "out2", ckpt, capsys)
    assert code == 1 and "a second image of id 'a'" in err and not (tmp_path / "out2").exists()


def test_p2_odd_file_names(ckpt, tmp_path, capsys):
    ids = ["é٣", "x\ny", "q\"'", "-z", "a b", os.fsdecode(b"\xff\xfe")]
    images, out = folder(tmp_path / "v", ids), tmp_path / "out"
    (images / "bad\nname_sat.jpg").write_bytes(b"not a jpeg")
    code, text, err = p2(images, out, ckpt, capsys)
    assert code == 1 and sorted(os.listdir(out)) == sorted([".p2_test.json"] + [f"{i}_mask.png" for i in ids])
    lines = err.splitlines()  # the newline in the bad file's name is escaped: one line per problem
    assert len(lines) == 2 and lines[1].startswith(f"  {images}/bad\\nname_sat.jpg: not a readable image")


def test_p1_odd_file_names_get_their_rows(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "p1.pt", "p1", "classifier", {"num_classes": 50, "width": 16, "img_size": 32})
    images = tmp_path / "p1"
    images.mkdir()
    names = ["0_0.png", os.fsdecode(b"1_\xff.png"), "2_a\nb.png", '3_"q,.png', "-4_x.png", "٣_1.png"]
    for k, name in enumerate(names):
        image(images / name, size=(32, 32), seed=k)
    code, _, err = run_main("p1_test", ["--checkpoint", str(ckpt), "--images", str(images), "--output",
                                        str(tmp_path / "pred.csv"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(r["image_id"] for r in fileio.read_csv(str(tmp_path / "pred.csv"))) == sorted(names)


def test_unicode_digits_are_not_labels(tmp_path):
    assert parse_label("٣_1.png") is None and parse_label("²_1.png") is None and parse_label("03_1.png") == 3
    image(tmp_path / "²_1.png", size=(32, 32))
    with pytest.raises(DataError, match="carries no label"):
        P1Images(str(tmp_path), progress=False)


def test_entries_that_are_not_files_in_training_and_scoring(tmp_path, capsys):
    train = tmp_path / "train"
    train.mkdir()
    image(train / "1_0.png", size=(32, 32))
    os.mkfifo(train / "2_0.png")
    (train / "3_0.png").mkdir()
    with pytest.raises(DataError) as e:
        P1Images(str(train), progress=False)
    assert "2_0.png: not a readable image (a FIFO" in str(e.value) and "3_0.png: not a readable image (a folder" \
        in str(e.value)
    tiles = folder(tmp_path / "tiles", ["0000"])
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tiles / "0000_mask.png")
    image(tiles / "0001_sat.jpg", size=(40, 48))
    os.mkfifo(tiles / "0001_mask.png")
    with pytest.raises(DataError, match="0001_mask.png: not a readable image \\(a FIFO"):
        P2Tiles(str(tiles), progress=False)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(gt / "0_mask.png")
    (pred / "0_mask.png").mkdir()
    code, _, err = run_main("mean_iou_evaluate", ["-g", str(gt), "-p", str(pred)], capsys)
    assert (code, err) == (1, f"error: {pred / '0_mask.png'}: not a readable image (a folder, not a file)\n")


def test_score_csv_saved_by_a_spreadsheet(tmp_path, capsys):
    path = tmp_path / "pred.csv"
    path.write_bytes(b"\xef\xbb\xbfimage_id,label\r\n0_0.png,0\r\n1_5.png,3\r\n")
    assert fileio.read_csv(str(path)) == [{"image_id": "0_0.png", "label": "0"}, {"image_id": "1_5.png", "label": "3"}]
    code, text, _ = run_main("p1_test", ["--score-csv", str(path)], capsys)
    assert code == 0 and text == "accuracy: 0.500000 (1/2)\n"


# ---------------------------------------------------------------- atomic writes, messages


def test_atomic_write_fits_any_name_and_errors_name_the_users_file(tmp_path, monkeypatch):
    name = tmp_path / ("n" * 251 + ".csv")  # 255 bytes: no room for ".<name>.tmp<pid>"
    fileio.atomic_write_bytes(str(name), b"a\n")
    assert name.read_bytes() == b"a\n" and os.listdir(tmp_path) == [name.name]
    with pytest.raises(IsADirectoryError) as e:
        fileio.atomic_write_bytes(str(tmp_path), b"x")
    assert cli.error_message(e.value) == f"{tmp_path}: is a folder, not a file"
    with pytest.raises(NotADirectoryError) as e:
        fileio.atomic_write_bytes(str(name / "x.csv"), b"x")
    assert cli.error_message(e.value) == f"{name}: not a folder (a file is in the way)"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write_bytes(str(name), b"b\n")
    assert cli.error_message(e.value) == f"{name}: no space left on the device"
    assert name.read_bytes() == b"a\n" and os.listdir(tmp_path) == [name.name]
    # without a file name the reason alone, never "[Errno 28] ..." (the old startswith("") bug)
    assert cli.error_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "no space left on the device"
    assert cli.error_message(OSError(errno.EACCES, "Permission denied", "a", None, "b")) == "a -> b: Permission denied"


# ---------------------------------------------------------------- the decoded-image cache


@pytest.fixture
def p1_folder(tmp_path):
    d = tmp_path / "p1"
    d.mkdir()
    for k in range(4):
        image(d / f"{k}_0.png", size=(32, 32), seed=k)
    return d


def test_damaged_cache_entries_are_rebuilt(p1_folder, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    want = P1Images(str(p1_folder), cache_dir=str(cache_dir), progress=False).images
    npy = next(cache_dir.glob("*.npy"))
    meta = next(cache_dir.glob("*.json"))
    damage = [lambda: os.truncate(npy, 200), lambda: npy.write_bytes(b"garbage" * 40), lambda: meta.write_bytes(b"")]
    for spoil in damage:
        spoil()
        capsys.readouterr()
        got = P1Images(str(p1_folder), cache_dir=str(cache_dir), progress=False).images
        err = capsys.readouterr().err
        assert (got == want).all() and err.count("\n") == 1
        assert err.startswith(f"warning: damaged decoded-image cache entry for {p1_folder}: ")
        assert err.rstrip().endswith("building it again")
        P1Images(str(p1_folder), cache_dir=str(cache_dir), progress=False)  # rebuilt: read quietly
        assert capsys.readouterr().err == ""


def test_cache_that_cannot_be_written_is_skipped_and_leaves_nothing(p1_folder, tmp_path, capsys, monkeypatch):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    orphan = cache_dir / f"{fileio.TMP_PREFIX}0123456789abcdef.npy"  # left by a build killed long ago
    orphan.write_bytes(b"x" * 100)
    os.utime(orphan, (0, 0))
    want = P1Images(str(p1_folder), progress=False).images
    real_open = open

    def full(name, mode="r", *a, **kw):
        f = real_open(name, mode, *a, **kw)
        if "x" in mode:
            f.write(b"\x93NUMPY partial")
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(cache, "open", full, raising=False)
    got = P1Images(str(p1_folder), cache_dir=str(cache_dir), progress=False).images
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert (got == want).all() and os.listdir(cache_dir) == []
    assert err.startswith(f"warning: --cache-dir {cache_dir}: cannot write the decoded-image cache ({cache_dir}/")
    assert "no space left on the device); using the decoded arrays from memory" in err
    got = P1Images(str(p1_folder), cache_dir=str(cache_dir), progress=False).images  # space again: cached
    assert (got == want).all() and sorted(p.suffix for p in cache_dir.iterdir()) == [".json", ".npy"]


def test_synthetic_data_on_a_full_disk_names_its_folder_and_leaves_nothing(tmp_path, monkeypatch):
    from datasets import synthetic

    def full(folder, *a):
        (tmp_path / os.path.basename(folder) / "part").write_bytes(b"x")  # mkdtemp made the folder
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(synthetic, "generate", full)
    out = tmp_path / ("d" * 250)  # no room for "<out>.tmp<pid>"
    with pytest.raises(SystemExit) as e:
        synthetic.main(synthetic.get_args_parser().parse_args(["--out", str(out)]))
    assert str(e.value) == f"error: {out}: cannot write the synthetic data (No space left on device)"
    assert os.listdir(tmp_path) == []
