"""`vaekit sample`, `vaekit reconstruct` and `vaekit interpolate`: pictures from a trained run."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..generate import INTERPOLATIONS, interpolate, reconstruct, sample
from ..plots import save_image_grid
from ..rng import make_generator
from .args import (add_data_dir_argument, add_device_argument, add_run_argument, check_index, non_negative_int,
                   open_run, png_path, positive_int, test_inputs)

SAMPLE_HELP = """\
Draw images from the prior: z ~ N(0, I), decoded to pixel probabilities, as one PNG grid.

examples:
  vaekit sample runs/seed -n 64 -o samples.png
  vaekit sample runs/seed -n 16 --seed 7 -o more.png
"""

RECONSTRUCT_HELP = """\
Show test images (top row) above their reconstructions from the posterior mean (bottom row).

example:
  vaekit reconstruct runs/seed -n 8 -o reconstruction.png
"""

INTERPOLATE_HELP = """\
Walk the latent space between two test images (by index in the test split), decoding each step.
slerp follows the great circle, which keeps intermediate codes at a typical distance from the origin.

examples:
  vaekit interpolate runs/seed --from 0 --to 1 --steps 10 -o interpolation.png
  vaekit interpolate runs/seed --from 3 --to 2 --method slerp -o slerp.png
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="a grid of images drawn from the prior", description=SAMPLE_HELP)
    add_run_argument(p)
    p.add_argument("-n", type=positive_int, default=64, help="number of images (default 64)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the prior draws (default 0)")
    add_device_argument(p)
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser("reconstruct", help="test images above their reconstructions",
                              description=RECONSTRUCT_HELP)
    add_run_argument(p)
    p.add_argument("-n", type=positive_int, default=8, help="number of test images (default 8)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_reconstruct)

    p = subparsers.add_parser("interpolate", help="decode a path between two test images",
                              description=INTERPOLATE_HELP)
    add_run_argument(p)
    p.add_argument("--from", dest="index_from", type=non_negative_int, required=True, metavar="I",
                   help="test-set index of the first image")
    p.add_argument("--to", dest="index_to", type=non_negative_int, required=True, metavar="J",
                   help="test-set index of the last image")
    p.add_argument("--steps", type=positive_int, default=10, help="images on the path, ends included (default 10)")
    p.add_argument("--method", choices=INTERPOLATIONS, default="linear", help="default linear")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_interpolate)


def run_sample(args) -> int:
    loaded = open_run(args)
    device = next(loaded.model.parameters()).device
    images = sample(loaded.model, args.n, make_generator(args.seed, device))
    save_image_grid(args.output, images, nrow=8)
    print(f"wrote {args.n} samples to {args.output}")
    return 0


def run_reconstruct(args) -> int:
    loaded = open_run(args)
    x = test_inputs(loaded, args)
    if args.n > len(x):
        raise ConfigError(f"-n {args.n} is more than the {len(x)} test images")
    inputs = x[: args.n]
    save_image_grid(args.output, torch.cat([inputs, reconstruct(loaded.model, inputs)]), nrow=args.n)
    print(f"wrote {args.n} test images and their reconstructions to {args.output}")
    return 0


def run_interpolate(args) -> int:
    if args.steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two ends), got {args.steps}")
    loaded = open_run(args)
    x = test_inputs(loaded, args)
    check_index("--from", args.index_from, len(x), "the test set")
    check_index("--to", args.index_to, len(x), "the test set")
    images = interpolate(loaded.model, x[args.index_from], x[args.index_to], args.steps, args.method)
    save_image_grid(args.output, images, nrow=args.steps)
    print(f"wrote a {args.steps}-step {args.method} interpolation to {args.output}")
    return 0
