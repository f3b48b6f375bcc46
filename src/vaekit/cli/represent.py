"""`vaekit embed`, `probe`, `traverse` and `manifold`: the latent space, measured and shown."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from ..errors import ConfigError, DataError
from .args import (IMAGE_HELP, DeprecatedAlias, ImageRef, add_data_dir_argument, add_device_argument,
                   add_invert_argument, add_run_argument, add_scale_argument, check_picture_count, image_reference,
                   model_inputs, open_run, picture_count, png_path, positive_int, reference_image, test_inputs)
from .samplers import add_sampler_argument

EMBED_HELP = """\
Write the posterior of every input image: means and log-variances of q(z|x), with labels where the
input has them, as FILE.npz (keys mu, logvar, labels, names) and beside it FILE.csv (one row per
image). INPUT is a split (mnist:test) or any image source vaekit reads, of any size: images are
made the run's size and channels as its training images were, and those whose polarity is the
reverse of the run's (dark on light for a run of light on dark) are inverted (--invert auto, the
default; off keeps them, with a warning). A run trained on dynamically binarized images encodes
the grayscale images, the mean of its random binarizations.
A hierarchical model (--family hvae) gives its top layer z1; --layer names another (z2, ...) or all.

examples:
  vaekit embed runs/seed mnist:test -o latents.npz
  vaekit embed runs/seed my_digits/ -o mine.npz
  vaekit embed runs/hvae mnist:test --layer z2 -o z2.npz
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
Latent traversals: each row sweeps one latent dimension over [-3, 3] while the others keep an
image's posterior mean; rows are ordered by the dimension's KL on the test set, most used first.
--image is a test-set index (default 0), or any image source vaekit reads (its first image, or
image N with SOURCE@N), as interpolate --from and --to take, with its polarity as interpolate's
(--invert).
The picture names each row's dimension (z3, as eval prints it) and each column's value.
--layer keeps to one layer of a hierarchical model (z1 the top, z2, ...).

examples:
  vaekit traverse runs/seed -o traverse.png
  vaekit traverse runs/seed --image 7 --rows 8 --steps 11 -o traverse.png
  vaekit traverse runs/seed --image my_seven.png -o mine.png
"""

MANIFOLD_HELP = """\
The learned manifold: decoded images on a grid over the prior's quantiles (5% to 95%) of two latent
dimensions, the rest at 0, as Kingma & Welling's Figure 4. With more than two latent dimensions, the
two with the highest KL on the test set. --side N draws an N x N grid. Each image is scaled to its
own brightest pixel, so that faint decodings far from the data still show their shape; rows and
columns are labelled with the dimensions' values.

With --sampler NAME (fitted by `vaekit fit-sampler`), the grid lies where that sampler draws: in the
plane through the mean of 10,000 of its draws (seed 0) spanned by their first two principal
directions, the first across and the second down, each swept over the draws' own 5% to 95%
quantiles along it (labels: the offsets from the mean). Every grid point then mixes all latent
dimensions, the way the sampler's draws vary most, instead of two dimensions with the rest at 0.

examples:
  vaekit manifold runs/seed --side 20 -o manifold.png
  vaekit manifold runs/seed --sampler gmm -o gmm-manifold.png
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="posterior means and log-variances of any images", description=EMBED_HELP)
    add_run_argument(p)
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.npz")
    add_layer_argument(p, "the latent layer embedded", "z1, the top; all: every layer")
    add_invert_argument(p, "auto")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_embed)

    p = subparsers.add_parser("probe", help="how much label information the latents hold", description=PROBE_HELP)
    add_run_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--labels", type=positive_int, nargs="+", default=[100, 1000], metavar="N",
                   help="label counts of the semi-supervised probes (default 100 1000)")
    p.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel reference")
    add_layer_argument(p, "the latent layer probed", "z1, the top; all: every layer")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_probe)

    p = subparsers.add_parser("traverse", help="sweep each latent dimension", description=TRAVERSE_HELP)
    add_run_argument(p)
    p.add_argument("--image", type=image_reference, default=ImageRef(None, 0), metavar="IMAGE",
                   help=f"the image whose code the rows start from: {IMAGE_HELP} (default 0)")
    p.add_argument("--rows", type=positive_int, default=10, help="latent dimensions shown, by KL (default 10)")
    p.add_argument("--steps", type=picture_count, default=9, help="images per row (default 9)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_layer_argument(p, "only dimensions of this latent layer", "every layer's, by KL")
    add_scale_argument(p)
    add_invert_argument(p, "auto")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_traverse)

    p = subparsers.add_parser("manifold", help="decoded grid over two latent dimensions", description=MANIFOLD_HELP)
    add_run_argument(p)
    p.add_argument("--side", type=positive_int, default=20, help="images per side of the square grid (default 20)")
    p.add_argument("-n", dest="side", type=positive_int, action=DeprecatedAlias, instead="--side {value}")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_sampler_argument(p)
    add_scale_argument(p)
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_manifold)


def run_embed(args) -> int:
    if args.output.suffix != ".npz":
        raise ConfigError(f"-o must end in .npz, got {args.output}")
    from ..atomic import check_target

    for path in (args.output, args.output.with_suffix(".csv")):
        check_target(path)  # now, not after the work
    import numpy as np

    from ..atomic import atomic_write_files
    from ..distributed import world
    from ..representation import embed
    from ..tables import csv_text

    loaded = open_run(args)
    layer = loaded.model.layer(args.layer)[0]  # a layer the model lacks is said before the images are read
    x, names, labels = model_inputs(loaded, args.input, args.data_dir, for_latents=True, invert=args.invert)
    mu, logvar = (t.cpu().numpy() for t in embed(loaded.model, x, layer=layer, world=world()))
    if not world().is_main():
        return 0  # under torchrun, the processes share the images; the main process writes
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
    where = f" of layer {layer}" if len(loaded.model.layers) > 1 else ""
    print(f"embedded {len(mu)} images into {dims} dimensions{where}: {args.output} and {csv_path} "
          f"(labels: {'yes' if labels[0] is not None else 'none'})")
    return 0


def labelled_latents(loaded, args):
    """Posterior features (means and log-variances side by side) and labels of the run's train and test images."""
    from ..data import load_train_test
    from ..representation import posterior_features

    data = loaded.config.data
    train, test = load_train_test(data.name, data.validation, loaded.config.train.seed, args.data_dir,
                                  standardize=data.standardize, preparation=loaded.preparation())
    if train.labels is None or test.labels is None:
        raise DataError(f"{data.name} has no labels: probes need labelled images (a built-in dataset, an .npz "
                        "with labels, or a folder of class subfolders)")
    layer = loaded.model.layer(args.layer)[0]
    features = [posterior_features(loaded.model, images.images, data.binarize, loaded.config.train.seed, layer)
                for images in (train, test)]
    return train, test, features[0], features[1]


def run_probe(args) -> int:
    from ..representation import probe_accuracy, probe_report

    loaded = open_run(args)
    train, test, train_features, test_features = labelled_latents(loaded, args)
    print(f"probing {len(train)} training and {len(test)} test latents...", file=sys.stderr)
    result = probe_report(train_features, train.labels, test_features, test.labels, seed=loaded.config.train.seed,
                          label_counts=tuple(args.labels), knn_dims=train_features.shape[1] // 2)
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
    check_picture_count("--steps", args.steps)
    from ..evaluate import dims_by_usage, posterior_diagnostics
    from ..generate import traverse, traverse_values
    from ..plots import save_picture, traverse_picture

    loaded = open_run(args)
    layer, part = loaded.model.layer(args.layer or "all")
    check_picture_count("--rows x --steps", min(args.rows, part.stop - part.start) * args.steps)
    x = test_inputs(loaded, args)
    base = reference_image(loaded, args, "--image", args.image, lambda: x)
    usage = posterior_diagnostics(loaded.model, x)
    dims = [part.start + d for d in dims_by_usage(layer_usage(usage, part))[: args.rows]]
    images = traverse(loaded.model, base, dims, args.steps)
    caption = f"test image {args.image}" if args.image.source is None else str(args.image)
    save_picture(args.output, traverse_picture(images, dims, traverse_values(args.steps).tolist(), caption,
                                               args.scale))
    where = f" of layer {layer}" if args.layer and len(loaded.model.layers) > 1 else ""
    print(f"wrote traversals of dimensions {', '.join(map(str, dims))}{where} (by KL) to {args.output}")
    return 0


def add_layer_argument(p, what: str, default: str) -> None:
    p.add_argument("--layer", metavar="NAME",
                   help=f"{what}, for a hierarchical model: z1 (the top), z2, ..., or all (default: {default})")


def layer_usage(diagnostics: dict, part: slice) -> dict:
    """`posterior_diagnostics` cut to one layer's dimensions (numbered from 0 within it)."""
    kl = diagnostics["kl_per_dim"]
    return {**diagnostics, "unit_variance": diagnostics["unit_variance"][part], "kl_per_dim": kl and kl[part]}


def run_manifold(args) -> int:
    check_picture_count("the manifold's images (--side squared)", args.side ** 2)
    from ..evaluate import dims_by_usage, posterior_diagnostics
    from ..generate import manifold, manifold_values
    from ..plots import manifold_picture, save_picture

    loaded = open_run(args)
    if loaded.model.latent_dim < 2:
        raise ConfigError("the manifold needs at least 2 latent dimensions")
    if args.sampler != "prior":
        return run_sampler_manifold(args, loaded)
    dims = ((0, 1) if loaded.model.latent_dim == 2
            else tuple(dims_by_usage(posterior_diagnostics(loaded.model, test_inputs(loaded, args)))[:2]))
    save_picture(args.output, manifold_picture(manifold(loaded.model, dims, args.side), dims,
                                               manifold_values(args.side).tolist(), args.scale))
    print(f"wrote the {args.side}x{args.side} manifold of dimensions {dims[0]} and {dims[1]} to {args.output}")
    return 0


def run_sampler_manifold(args, loaded) -> int:
    """`vaekit manifold --sampler NAME`: the grid in the plane of the sampler's first two principal directions."""
    from ..generate import plane_manifold, sampler_plane
    from ..plots import manifold_picture, save_picture
    from ..rng import make_generator
    from ..samplers.store import load_sampler

    sampler = load_sampler(loaded, args.sampler)
    device = next(loaded.model.parameters()).device
    center, axes, values = sampler_plane(sampler, args.side, make_generator(0, device))
    images = plane_manifold(loaded.model, center, axes, values)
    save_picture(args.output, manifold_picture(images, (0, 1), values[0].tolist(), args.scale,
                                               down_values=values[1].tolist(), sampler=args.sampler))
    print(f"wrote the {args.side}x{args.side} manifold of the {args.sampler} sampler's first two principal "
          f"directions to {args.output}")
    return 0
