"""`vaekit embed`, `probe`, `traverse` and `manifold`: the latent space, measured and shown."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_files
from ..data import load_train_test
from ..errors import ConfigError, DataError
from ..evaluate import dims_by_usage, posterior_diagnostics
from ..generate import manifold, traverse
from ..plots import save_image_grid
from ..representation import embed, posterior_features, probe_accuracy, probe_report
from ..tables import csv_text
from .args import (add_data_dir_argument, add_device_argument, add_run_argument, check_index, model_inputs,
                   non_negative_int, open_run, png_path, positive_int, test_inputs)

EMBED_HELP = """\
Write the posterior of every input image: means and log-variances of q(z|x), with labels where the
input has them, as FILE.npz (keys mu, logvar, labels, names) and beside it FILE.csv (one row per
image). INPUT is a split (mnist:test) or any image source vaekit reads. A run trained on dynamically
binarized images encodes the grayscale images, the mean of its random binarizations.

examples:
  vaekit embed runs/seed mnist:test -o latents.npz
  vaekit embed runs/seed my_digits/ -o mine.npz
"""

PROBE_HELP = """\
Measure how much label information the latents hold, on the run's train and test images (a built-in
dataset, or your own images with labels): kNN accuracy on test latents (k = 1, 5, 10, training
latents as the reference, Euclidean on posterior means); a linear probe (logistic regression on the
posterior means and log-variances); with 100 and 1000 labels, the linear probe and label
propagation over the training latents (semi-supervised); and the same logistic regression on raw
pixels as the reference (--no-pixels skips it: it takes about a minute).

examples:
  vaekit probe runs/seed
  vaekit probe runs/seed --json --labels 100 1000 5000
"""

TRAVERSE_HELP = """\
Latent traversals: each row sweeps one latent dimension over [-3, 3] while the others keep a test
image's posterior mean; rows are ordered by the dimension's KL on the test set, most used first.

examples:
  vaekit traverse runs/seed -o traverse.png
  vaekit traverse runs/seed --image 7 --rows 8 --steps 11 -o traverse.png
"""

MANIFOLD_HELP = """\
The learned manifold: decoded images on a grid over the prior's quantiles (5% to 95%) of two latent
dimensions, the rest at 0, as Kingma & Welling's Figure 4. With more than two latent dimensions, the
two with the highest KL on the test set.

example:
  vaekit manifold runs/seed -n 20 -o manifold.png
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="posterior means and log-variances of any images", description=EMBED_HELP)
    add_run_argument(p)
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.npz")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_embed)

    p = subparsers.add_parser("probe", help="how much label information the latents hold", description=PROBE_HELP)
    add_run_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--labels", type=positive_int, nargs="+", default=[100, 1000], metavar="N",
                   help="label counts of the semi-supervised probes (default 100 1000)")
    p.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel reference")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_probe)

    p = subparsers.add_parser("traverse", help="sweep each latent dimension", description=TRAVERSE_HELP)
    add_run_argument(p)
    p.add_argument("--image", type=non_negative_int, default=0, help="test-set index of the base image (default 0)")
    p.add_argument("--rows", type=positive_int, default=10, help="latent dimensions shown, by KL (default 10)")
    p.add_argument("--steps", type=positive_int, default=9, help="images per row (default 9)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_traverse)

    p = subparsers.add_parser("manifold", help="decoded grid over two latent dimensions", description=MANIFOLD_HELP)
    add_run_argument(p)
    p.add_argument("-n", type=positive_int, default=20, help="grid side (default 20)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_manifold)


def run_embed(args) -> int:
    if args.output.suffix != ".npz":
        raise ConfigError(f"-o must end in .npz, got {args.output}")
    loaded = open_run(args)
    x, names, labels = model_inputs(loaded, args.input, args.data_dir, for_latents=True)
    mu, logvar = (t.cpu().numpy() for t in embed(loaded.model, x))
    label_array = np.array([-1 if label is None else label for label in labels], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, logvar=logvar, labels=label_array, names=np.array(names))
    dims = mu.shape[1]
    table = csv_text(["index", "name", "label", *[f"mu_{i}" for i in range(dims)],
                      *[f"logvar_{i}" for i in range(dims)]],
                     ([i, name, "" if label is None else label, *np.round(mu[i], 6), *np.round(logvar[i], 6)]
                      for i, (name, label) in enumerate(zip(names, labels))))
    csv_path = args.output.with_suffix(".csv")
    atomic_write_files({args.output: buffer.getvalue(), csv_path: table.encode("utf-8")})  # both or neither
    print(f"embedded {len(mu)} images into {dims} dimensions: {args.output} and {csv_path} "
          f"(labels: {'yes' if labels[0] is not None else 'none'})")
    return 0


def labelled_latents(loaded, args):
    """Posterior features (means and log-variances side by side) and labels of the run's train and test images."""
    data = loaded.config.data
    train, test = load_train_test(data.name, data.validation, loaded.config.train.seed, args.data_dir,
                                  standardize=data.standardize)
    if train.labels is None or test.labels is None:
        raise DataError(f"{data.name} has no labels: probes need labelled images (a built-in dataset, an .npz "
                        "with labels, or a folder of class subfolders)")
    features = [posterior_features(loaded.model, images.images, data.binarize, loaded.config.train.seed)
                for images in (train, test)]
    return train, test, features[0], features[1]


def run_probe(args) -> int:
    loaded = open_run(args)
    train, test, train_features, test_features = labelled_latents(loaded, args)
    print(f"probing {len(train)} training and {len(test)} test latents...", file=sys.stderr)
    result = probe_report(train_features, train.labels, test_features, test.labels, seed=loaded.config.train.seed,
                          label_counts=tuple(args.labels), knn_dims=loaded.model.latent_dim)
    if not args.no_pixels:
        print("fitting the raw-pixel reference...", file=sys.stderr)
        pixels = lambda images: images.images.flatten(1).float() / 255  # noqa: E731
        result["pixels_linear"] = probe_accuracy(pixels(train), train.labels, pixels(test), test.labels)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"kNN accuracy       k=1 {result['knn']['1']:.4f}   k=5 {result['knn']['5']:.4f}   "
          f"k=10 {result['knn']['10']:.4f}")
    print(f"linear probe       {result['linear']:.4f}")
    for n, row in result["few_labels"].items():
        print(f"{n:>5} labels       linear {row['linear']:.4f}   label propagation {row['label_propagation']:.4f}")
    if "pixels_linear" in result:
        print(f"raw pixels, linear {result['pixels_linear']:.4f} (reference)")
    return 0


def run_traverse(args) -> int:
    loaded = open_run(args)
    x = test_inputs(loaded, args)
    check_index("--image", args.image, len(x), "the test set")
    dims = dims_by_usage(posterior_diagnostics(loaded.model, x))[: args.rows]
    images = traverse(loaded.model, x[args.image], dims, args.steps)
    save_image_grid(args.output, images, nrow=args.steps, scale=2)
    print(f"wrote traversals of dimensions {', '.join(map(str, dims))} (by KL) to {args.output}")
    return 0


def run_manifold(args) -> int:
    loaded = open_run(args)
    if loaded.model.latent_dim < 2:
        raise ConfigError("the manifold needs at least 2 latent dimensions")
    dims = ((0, 1) if loaded.model.latent_dim == 2
            else tuple(dims_by_usage(posterior_diagnostics(loaded.model, test_inputs(loaded, args)))[:2]))
    save_image_grid(args.output, manifold(loaded.model, dims, args.n), nrow=args.n, padding=0)
    print(f"wrote the {args.n}x{args.n} manifold of dimensions {dims[0]} and {dims[1]} to {args.output}")
    return 0
