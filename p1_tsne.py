"""Problem 1: t-SNE of the classifier's second-to-last layer (``Classifier.features``, the
512-d output of ``fc[6]`` at width 1) on the validation images, coloured by class.

    python p1_tsne.py --checkpoint runs/p1/best.pt --images hw2_data/p1_data/val_50 --output-dir runs/p1
    python p1_tsne.py --checkpoint runs/p1_demo/best.pt --output-dir runs/p1_demo     # synthetic val_50

Writes ``tsne.png`` and ``tsne.csv`` (``image_id,label,x,y`` for every embedded image; label
-1 when the name carries none; those points are drawn in grey). ``--max-images`` embeds a
random subset (drawn with ``--seed``); the perplexity is capped at n - 1 so tiny folders work.
"""
import argparse
import os

import numpy as np
import torch
from sklearn.manifold import TSNE

import engine
from datasets import DataError, P1Images
from engine import CheckpointError
from p1_plots import plot_tsne
from p1_test import default_checkpoint, load_model
from p1_train import model_inputs


@torch.inference_mode()
def extract_features(model, ckpt, images, device, batch_size):
    """Penultimate features (float32 numpy N x D) of uint8 N x 3 x 32 x 32 ``images``."""
    norm = ckpt["normalize"]
    feats = []
    for i in range(0, len(images), batch_size):
        x = model_inputs(images[i:i + batch_size].to(device), norm["mean"], norm["std"], ckpt["img_size"])
        feats.append(model.features(x).float().cpu())
    return torch.cat(feats).numpy()


def embed(features, perplexity, seed):
    """2-D t-SNE coordinates; perplexity is capped at n - 1 (scikit-learn needs it below n)."""
    n = len(features)
    if n < 2:
        raise DataError(f"t-SNE needs at least 2 images, got {n}")
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(perplexity, n - 1))
    return tsne.fit_transform(features.astype(np.float64))


def write_coordinates(path, names, labels, xy):
    rows = [[name, label, f"{x:.6f}", f"{y:.6f}"] for name, label, (x, y) in zip(names, labels, xy.tolist())]
    engine.write_csv(path, ["image_id", "label", "x", "y"], rows)


def main(args):
    try:
        device = engine.resolve_device(args.device)
        model, ckpt = load_model(args.checkpoint, device)
        data = P1Images(args.images, require_labels=False, num_classes=ckpt["model_kwargs"]["num_classes"],
                        progress=False)
        keep = np.arange(len(data))
        if args.max_images and len(keep) > args.max_images:
            keep = np.sort(np.random.default_rng(args.seed).choice(len(keep), args.max_images, replace=False))
        names = [data.files[i] for i in keep]
        labels = data.labels[keep].numpy()
        features = extract_features(model, ckpt, data.images[keep], device, args.batch_size)
        xy = embed(features, args.perplexity, args.seed)
        os.makedirs(args.output_dir, exist_ok=True)
        write_coordinates(os.path.join(args.output_dir, "tsne.csv"), names, labels.tolist(), xy)
        epoch = ckpt.get("epoch", "?")
        plot_tsne(xy, labels, os.path.join(args.output_dir, "tsne.png"),
                  num_classes=ckpt["model_kwargs"]["num_classes"],
                  title=f"t-SNE of penultimate features ({features.shape[1]}-d), {len(names)} images of "
                        f"{os.path.basename(os.path.normpath(args.images))}, epoch {epoch}")
        print(f"wrote {os.path.join(args.output_dir, 'tsne.png')} and tsne.csv ({len(names)} images)")
    except (DataError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=default_checkpoint(),
                   help="P1 checkpoint (default: $P1_CKPT, else checkpoints/p1_best.pt; now %(default)s)")
    p.add_argument("--images", default="data/synthetic/p1_data/val_50",
                   help="folder of images to embed (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=2500,
                   help="embed a random subset of at most this many images, 0 = all (default: %(default)s)")
    p.add_argument("--perplexity", type=float, default=30.0,
                   help="t-SNE perplexity, capped at n - 1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of t-SNE (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: %(default)s)")
    p.add_argument("--output-dir", default="runs/p1", help="folder for tsne.png and tsne.csv (default: %(default)s)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
