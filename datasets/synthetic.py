"""Synthetic stand-ins for ``hw2_data`` in the official layouts, deterministic given ``--seed``.

    python -m datasets.synthetic --out data/synthetic            # small defaults (demo, tests)
    python -m datasets.synthetic --out data/big --p1-train-per-class 450 --p1-val-per-class 50 \\
        --p2-train 2000 --p2-val 257                              # official sizes

Writes ``<out>/p1_data/{train_50,val_50}/<label>_<index>.png`` (32x32; 50 classes = 10 shapes x
5 colour schemes, with jitter and noise) and ``<out>/p2_data/{train,validation}/<id>_sat.jpg`` +
``<id>_mask.png`` (satellite-like tiles: irregular regions of all 7 classes, each class with its
own colour and texture, JPEG noise; RGB palette masks). Validation ids always include 0010,
0097 and 0107, the ids of the seed's epoch figure. The folder is built under a temporary name
and renamed when complete, so an interrupted run never leaves a complete-looking dataset.
"""
import argparse
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from .masks import class_to_rgb

SNAPSHOT_IDS = (10, 97, 107)
# Base colours of the synthetic classes (urban, agriculture, rangeland, forest, water, barren, unknown).
P2_BASE = np.array([(120, 118, 125), (160, 165, 80), (175, 150, 105), (45, 90, 45), (35, 65, 125),
                    (205, 195, 175), (12, 12, 12)], dtype=np.float32)
P2_CLASS_FREQ = np.array([0.14, 0.34, 0.12, 0.15, 0.08, 0.12, 0.05])
P1_SCHEMES = [((230, 40, 40), (20, 20, 60)), ((40, 200, 60), (60, 20, 20)), ((50, 90, 230), (220, 220, 200)),
              ((240, 220, 50), (30, 80, 80)), ((220, 220, 220), (90, 40, 120))]


def _p1_shape(kind, size, rng):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-3, 3, 2)
    r = size * rng.uniform(0.25, 0.34)
    dy, dx = y - cy, x - cx
    period = rng.uniform(5, 7)
    shapes = [
        dy ** 2 + dx ** 2 < r ** 2,  # disc
        (abs(dy) < r * 0.85) & (abs(dx) < r * 0.85),  # square
        (dy > -r) & (dy < r) & (abs(dx) < (dy + r) / 2),  # triangle
        np.sin(2 * np.pi * y / period) > 0,  # horizontal stripes
        np.sin(2 * np.pi * x / period) > 0,  # vertical stripes
        np.sin(2 * np.pi * (x + y) / period / 1.4) > 0,  # diagonal stripes
        (abs(dy) < r * 0.3) | (abs(dx) < r * 0.3),  # cross
        abs(np.sqrt(dy ** 2 + dx ** 2) - r) < r * 0.3,  # ring
        ((x // 8 + y // 8) % 2) == 0,  # checkerboard
        (np.sin(2 * np.pi * x / period) > 0.5) & (np.sin(2 * np.pi * y / period) > 0.5),  # dot grid
    ]
    return shapes[kind]


def p1_image(label, rng, size=32):
    shape, scheme = label % 10, label // 10
    fg, bg = (np.array(c, dtype=np.float32) for c in P1_SCHEMES[scheme])
    m = _p1_shape(shape, size, rng)[..., None]
    img = np.where(m, fg, bg) * rng.uniform(0.75, 1.15) + rng.normal(0, 18, (size, size, 3))
    return img.clip(0, 255).astype(np.uint8)


def _smooth_noise(rng, h, w, cell):
    small = rng.standard_normal((max(h // cell, 2), max(w // cell, 2))).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def p2_tile(rng, size=512):
    """(image H x W x 3 uint8, class map H x W uint8) of one synthetic satellite tile."""
    n_regions = rng.integers(5, 13)
    seeds = rng.uniform(0, size, (n_regions, 2))
    classes = rng.choice(7, size=n_regions, p=P2_CLASS_FREQ)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wobble = _smooth_noise(rng, size, size, 64) * size * 0.06  # irregular region borders
    dist = np.stack([(y - sy) ** 2 + (x - sx) ** 2 for sy, sx in seeds]) ** 0.5 + wobble[None] * rng.uniform(
        0.5, 1.5, (n_regions, 1, 1)).astype(np.float32)
    region = dist.argmin(0)
    cls = classes[region].astype(np.uint8)
    angle = rng.uniform(0, np.pi, n_regions)[region]
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / 9)
    blocks = (((x // 14) + (y // 14)) % 3 == 0).astype(np.float32)
    texture = {
        0: 45 * blocks - 20,
        1: 25 * stripes,
        2: 18 * _smooth_noise(rng, size, size, 4),
        3: 30 * _smooth_noise(rng, size, size, 6),
        4: 6 * _smooth_noise(rng, size, size, 32),
        5: 12 * _smooth_noise(rng, size, size, 3),
        6: np.zeros((size, size), np.float32),
    }
    tex = np.zeros((size, size), np.float32)
    for c, t in texture.items():
        tex[cls == c] = t[cls == c]
    shade = 1 + 0.12 * _smooth_noise(rng, size, size, 128)  # illumination varies over the tile
    img = P2_BASE[cls] * shade[..., None] + tex[..., None] + rng.normal(0, 10, (size, size, 3))
    return img.clip(0, 255).astype(np.uint8), cls


def generate(out, seed=0, p1_train_per_class=20, p1_val_per_class=6, p2_train=24, p2_val=8, p2_size=512,
             num_classes=50):
    rng = np.random.default_rng(seed)
    p1 = {"train_50": p1_train_per_class, "val_50": p1_val_per_class}
    for split, per_class in p1.items():
        folder = os.path.join(out, "p1_data", split)
        os.makedirs(folder)
        for label in range(num_classes):
            for i in range(per_class):
                Image.fromarray(p1_image(label, rng)).save(os.path.join(folder, f"{label}_{i}.png"))
    p2 = {"train": list(range(p2_train)), "validation": sorted(set(range(p2_val)) | set(SNAPSHOT_IDS))}
    for split, ids in p2.items():
        folder = os.path.join(out, "p2_data", split)
        os.makedirs(folder)
        for i in ids:
            img, cls = p2_tile(rng, p2_size)
            Image.fromarray(img).save(os.path.join(folder, f"{i:04d}_sat.jpg"), quality=90)
            Image.fromarray(class_to_rgb(cls)).save(os.path.join(folder, f"{i:04d}_mask.png"))


def main(args):
    params = {k: v for k, v in vars(args).items() if k not in ("out", "force")}
    marker = os.path.join(args.out, "synthetic.json")
    if os.path.exists(marker) and not args.force:
        with open(marker) as f:
            if json.load(f) == params:
                print(f"{args.out}: synthetic data already generated with these settings")
                return
        raise SystemExit(f"{args.out}: holds synthetic data made with other settings; pass --force to replace it")
    if os.path.exists(args.out) and not os.path.exists(marker) and os.listdir(args.out) and not args.force:
        raise SystemExit(f"{args.out}: exists and is not a synthetic dataset; refusing to overwrite (use --force)")
    parent = os.path.dirname(os.path.abspath(args.out))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)  # a short fresh name beside --out
    except OSError as e:
        raise SystemExit(f"error: {args.out}: cannot write beside it ({e.strerror or e})") from None
    try:
        generate(tmp, args.seed, args.p1_train_per_class, args.p1_val_per_class, args.p2_train, args.p2_val,
                 args.p2_size)
        with open(os.path.join(tmp, "synthetic.json"), "w") as f:
            json.dump(params, f)
        shutil.rmtree(args.out, ignore_errors=True)
        os.replace(tmp, args.out)
    except OSError as e:  # a full disk: name the folder asked for, not the temporary one
        raise SystemExit(f"error: {args.out}: cannot write the synthetic data ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote synthetic hw2_data layout to {args.out}")


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/synthetic", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--p1-train-per-class", type=int, default=20, help="P1 train images per class (default: %(default)s)")
    p.add_argument("--p1-val-per-class", type=int, default=6, help="P1 val images per class (default: %(default)s)")
    p.add_argument("--p2-train", type=int, default=24, help="P2 training tiles (default: %(default)s)")
    p.add_argument("--p2-val", type=int, default=8,
                   help="P2 validation tiles 0000..N-1, plus ids 0010, 0097, 0107 (default: %(default)s)")
    p.add_argument("--p2-size", type=int, default=512, help="P2 tile side in pixels (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
