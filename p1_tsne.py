"""Problem 1: t-SNE of the classifier's 512-d features (``Classifier.features``) on the
validation images, coloured by class. ``--layer`` picks them: ``fc4`` (the default, the seed
author's t-SNE: the output of the Linear(1024 -> 512) ``fc[4]``, before its BatchNorm) or ``fc6``
(ours: the penultimate features, after that BatchNorm and LeakyReLU, what the last Linear sees).

    python p1_tsne.py --checkpoint runs/p1/best.pt --images hw2_data/p1_data/val_50 --output-dir runs/p1
    python p1_tsne.py --checkpoint runs/demo/p1/best.pt --images data/synthetic/p1_data/val_50 \\
        --output-dir runs/demo/p1

Writes ``tsne.png`` and ``tsne.csv`` (``image_id,label,x,y`` for every embedded image; label
-1 when the name carries none, drawn in grey) into ``--output-dir``. The model, its input size
and its normalisation come from the checkpoint. ``--max-images`` embeds a random subset (drawn
with ``--seed``); the perplexity is capped at n - 1 so tiny folders work.
"""
import argparse
import os
import sys

import numpy as np

from core import cli, plots
from core.checkpoint import CheckpointError
from core.fileio import write_csv
from core.inference import load_for_inference
from datasets import DataError, P1Images

# --layer -> the figure's words for it.
LAYER_NAMES = {"fc4": "fc[4] (Linear 1024 -> 512, before BatchNorm)", "fc6": "penultimate-layer (fc[6])"}


def embed(features, perplexity, seed):
    """2-D t-SNE coordinates; perplexity is capped at n - 1 (scikit-learn needs it below n)."""
    from sklearn.manifold import TSNE  # imported here: it takes a second, and only this step needs it

    n = len(features)
    if n < 2:
        raise DataError(f"t-SNE needs at least 2 images, got {n}")
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(perplexity, n - 1))
    return tsne.fit_transform(features.astype(np.float64))


def choose(n, max_images, seed):
    """Sorted indices of at most ``max_images`` of ``n`` items (0: all), drawn with ``seed``."""
    if not max_images or n <= max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))


def short_path(path):
    """``path`` relative to the working folder when it lies inside it (no home folders in a report)."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def caption(args, path, ckpt, labels, feature_dim, perplexity, img_size):
    """The run's details, printed under the figure."""
    classes = len(np.unique(labels[labels >= 0]))
    unlabelled = int((labels < 0).sum())
    epoch = ckpt.get("epoch", ckpt["meta"].get("epoch"))
    kwargs = ", ".join(f"{k}={v}" for k, v in ckpt["model_kwargs"].items())
    return (f"{len(labels):,} images of {os.path.basename(os.path.normpath(args.images))} ({classes} classes"
            + (f", {unlabelled:,} without a label" if unlabelled else "") + "); "
            f"{feature_dim}-d {LAYER_NAMES[args.layer]} features of {ckpt['model_name']}({kwargs}) "
            f"at a {img_size}x{img_size} input; "
            f"checkpoint {short_path(path)}" + (f" (epoch {epoch})" if epoch is not None else "")
            + f"; t-SNE with PCA init, perplexity {perplexity:g}, seed {args.seed}.")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if os.path.realpath(args.output_dir) == os.path.realpath(args.images):
        raise cli.UserError(f"--output-dir {args.output_dir} is the image folder itself; pass another folder "
                            "for tsne.png and tsne.csv")
    loaded = load_for_inference(args.checkpoint, "p1", args.device, args.precision)
    model, ckpt = loaded.model, loaded.ckpt
    num_classes = ckpt["model_kwargs"]["num_classes"]
    data = P1Images(args.images, require_labels=False, num_classes=num_classes, progress=False)
    keep = choose(len(data), args.max_images, args.seed)
    names = [data.files[i] for i in keep]
    labels = data.labels[keep].numpy()
    features = loaded.map_batches(lambda x: model.features(x, args.layer).float(), data.images[keep], args.batch_size,
                                  model.img_size)
    features = features.numpy() if features is not None else np.zeros((0, 1), dtype=np.float32)
    xy = embed(features, args.perplexity, args.seed)
    csv_path, png_path = os.path.join(args.output_dir, "tsne.csv"), os.path.join(args.output_dir, "tsne.png")
    write_csv(csv_path, ["image_id", "label", "x", "y"],
              [[name, label, f"{x:.6f}", f"{y:.6f}"] for name, label, (x, y) in zip(names, labels.tolist(),
                                                                                   xy.tolist())])
    text = caption(args, loaded.path, ckpt, labels, features.shape[1], min(args.perplexity, len(names) - 1),
                   model.img_size)
    plots.plot_tsne(xy, labels, png_path, text, num_classes=num_classes,
                    heading=f"t-SNE of {LAYER_NAMES[args.layer]} features")
    print(f"wrote {png_path} and {csv_path} ({len(names)} images)")


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=cli.HelpFormatter,
                                parents=[cli.inference_parser("p1", 256, "images per batch")])
    p.add_argument("--images", default="hw2_data/p1_data/val_50", help="folder of images to embed")
    p.add_argument("--max-images", type=cli.nonneg_int, default=2500,
                   help="embed a random subset of at most this many images (0: all)")
    p.add_argument("--layer", choices=list(LAYER_NAMES), default="fc4",
                   help="features to embed: fc4, the Linear(1024 -> 512) output before its BatchNorm (the seed "
                        "author's); fc6, the penultimate features after BatchNorm and LeakyReLU (ours)")
    p.add_argument("--perplexity", type=cli.positive_float, default=50.0,
                   help="t-SNE perplexity (50: the seed author's), capped at n - 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of t-SNE")
    p.add_argument("--output-dir", default="runs/p1", help="folder for tsne.png and tsne.csv")
    return p


if __name__ == "__main__":
    sys.exit(cli.run(main, expected=(DataError, CheckpointError)))
