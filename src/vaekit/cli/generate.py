"""`vaekit sample`, `vaekit reconstruct` and `vaekit interpolate`: pictures from a trained run."""

from __future__ import annotations

import functools

from ..choices import INTERPOLATIONS
from ..errors import ConfigError
from .args import (IMAGE_HELP, add_data_dir_argument, add_device_argument, add_invert_argument, add_run_argument,
                   add_scale_argument, image_reference, open_run, picture_count, png_or_gif_path, png_path,
                   reference_image, seed_int, test_inputs)
from .samplers import add_sampler_argument

SAMPLE_HELP = """\
Draw images from the prior (z ~ N(0, I)), or from a latent sampler fitted by `vaekit fit-sampler`,
decoded to pixel probabilities, as one PNG grid.

examples:
  vaekit sample runs/seed -n 64 -o samples.png
  vaekit sample runs/seed -n 16 --seed 7 -o more.png
  vaekit sample runs/seed --sampler gmm -o gmm.png
"""

RECONSTRUCT_HELP = """\
Show test images (top row) above their reconstructions from the posterior mean (bottom row).

example:
  vaekit reconstruct runs/seed -n 8 -o reconstruction.png
"""

INTERPOLATE_HELP = """\
Walk the latent space between two images, decoding each step, as a strip (-o FILE.png) or an
animated GIF (-o FILE.gif). Each end is a test-set index, or any image source vaekit reads (its
first image, or image N with SOURCE@N), as traverse --image takes, made the run's size and
channels as its training images were; an image whose polarity is the reverse of the run's (a dark
digit on white paper for a run of light digits on black) is inverted (--invert auto, the default).
slerp follows the great circle, which keeps intermediate codes at a typical distance from the origin.

examples:
  vaekit interpolate runs/seed --from 0 --to 1 --steps 10 -o interpolation.png
  vaekit interpolate runs/seed --from 3 --to 2 --method slerp -o slerp.gif
  vaekit interpolate runs/seed --from my_seven.png --to mnist:train@1 -o walk.gif
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="a grid of images drawn from the prior", description=SAMPLE_HELP)
    add_run_argument(p)
    p.add_argument("-n", type=picture_count, default=64, help="number of images (default 64)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prior draws (default 0)")
    add_sampler_argument(p)
    add_scale_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser("reconstruct", help="test images above their reconstructions",
                              description=RECONSTRUCT_HELP)
    add_run_argument(p)
    p.add_argument("-n", type=picture_count, default=None,
                   help="number of test images (default 8, or all of a smaller test set)")
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    add_scale_argument(p)
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_reconstruct)

    p = subparsers.add_parser("interpolate", help="decode a path between two images",
                              description=INTERPOLATE_HELP)
    add_run_argument(p)
    p.add_argument("--from", dest="image_from", type=image_reference, required=True, metavar="IMAGE",
                   help=f"the first image: {IMAGE_HELP}")
    p.add_argument("--to", dest="image_to", type=image_reference, required=True, metavar="IMAGE",
                   help=f"the last image: {IMAGE_HELP}")
    p.add_argument("--steps", type=picture_count, default=10, help="images on the path, ends included (default 10)")
    p.add_argument("--method", choices=INTERPOLATIONS, default="linear",
                   help=f"{' or '.join(INTERPOLATIONS)} (default linear)")
    p.add_argument("-o", "--output", type=png_or_gif_path, required=True, metavar="FILE.png|FILE.gif")
    add_scale_argument(p)
    add_invert_argument(p, "auto")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_interpolate)


def run_sample(args) -> int:
    from ..generate import sample
    from ..plots import save_image_grid
    from ..rng import make_generator

    from ..samplers.store import load_sampler

    loaded = open_run(args)
    device = next(loaded.model.parameters()).device
    sampler = None if args.sampler == "prior" else load_sampler(loaded, args.sampler)
    images = sample(loaded.model, args.n, make_generator(args.seed, device), sampler)
    save_image_grid(args.output, images, nrow=8, scale=args.scale)
    print(f"wrote {args.n} samples{'' if sampler is None else f' from the {args.sampler} sampler'} to {args.output}")
    return 0


def run_reconstruct(args) -> int:
    import torch

    from ..generate import reconstruct
    from ..plots import save_image_grid

    loaded = open_run(args)
    x = test_inputs(loaded, args)
    if args.n is not None and args.n > len(x):
        raise ConfigError(f"-n {args.n} is more than the {len(x)} test images")
    n = args.n or min(8, len(x))  # the default holds on a tiny held-out set too
    inputs = x[:n]
    save_image_grid(args.output, torch.cat([inputs, reconstruct(loaded.model, inputs)]), nrow=n, scale=args.scale)
    print(f"wrote {n} test images and their reconstructions to {args.output}")
    return 0


def run_interpolate(args) -> int:
    if args.steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two ends), got {args.steps}")
    from ..generate import interpolate
    from ..plots import save_gif, save_image_grid

    loaded = open_run(args)
    test_set = functools.cache(lambda: test_inputs(loaded, args))  # read once, and only if an end needs it
    ends = [reference_image(loaded, args, "--from", args.image_from, test_set),
            reference_image(loaded, args, "--to", args.image_to, test_set)]
    images = interpolate(loaded.model, ends[0], ends[1], args.steps, args.method)
    if args.output.suffix.lower() == ".gif":
        save_gif(args.output, images, scale=args.scale)
    else:
        save_image_grid(args.output, images, nrow=args.steps, scale=args.scale)
    print(f"wrote a {args.steps}-step {args.method} interpolation to {args.output}")
    return 0

