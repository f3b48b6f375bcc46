"""`vaekit compress` and `vaekit decompress`: lossless bits-back coding of binary or 8-bit images with a trained
run."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import LATENT_BITS
from ..errors import ConfigError
from .args import DeprecatedAlias, add_data_dir_argument, add_run_argument, open_run, positive_int

if TYPE_CHECKING:
    import numpy as np

COMPRESS_HELP = """\
Compress images losslessly with bits-back coding (BB-ANS): each image costs about its negative
ELBO under the run's model. INPUT is any image source vaekit reads (a split such as mnist:test, an
IDX, .npy or .npz file, an image, or a folder of images).

A run trained on --likelihood discretized-logistic or discretized-logistic-mixture codes 8-bit
grayscale or colour images exactly, every value 0 to 255 (integer arrays, or floats of values
k / 255). A run on the Bernoulli likelihood codes binary images: images whose pixels take only two
values (0 and one other) round-trip exactly; grayscale images are binarized by the run's rule first
(threshold > 127, or the run's seeded dynamic draw) and that binarization round-trips.

Under torchrun, each process codes a contiguous shard of the images on its own stack, and the main
process writes one file (format 3) holding the shards in order; decompress decodes them in one process,
or shares them out under torchrun.

The file records the model's fingerprint, the image count and shape, and checksums of the payload and
of the images: decompressing with another model, or a truncated or corrupted file, is an error,
never wrong output.

examples:
  vaekit compress runs/thresholded mnist:test -o test.vkbb
  vaekit compress runs/8bit mnist:test -o test8.vkbb      # a run on discretized-logistic-mixture
  vaekit compress runs/thresholded digits.npy -o digits.vkbb
  vaekit compress runs/thresholded mnist:test --latent-bits 10 -o test.vkbb
"""

DECOMPRESS_HELP = """\
Decompress a file made by vaekit compress, with the run that compressed it. The images come back in
the input's format: IDX in (or a built-in split), IDX out; .npy (or anything else) in, .npy out.

examples:
  vaekit decompress runs/thresholded test.vkbb -o test-images-idx3-ubyte
  vaekit decompress runs/thresholded digits.vkbb -o digits.npy
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("compress", help="lossless bits-back compression of binary or 8-bit images",
                              description=COMPRESS_HELP)
    add_run_argument(p)
    p.add_argument("input", metavar="INPUT", help="images to compress")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    p.add_argument("--latent-bits", type=positive_int, default=LATENT_BITS, metavar="BITS",
                   help=f"bits per latent dimension of the discretized latent, at most 16 (default {LATENT_BITS})")
    p.add_argument("--precision", dest="latent_bits", type=positive_int, action=DeprecatedAlias,
                   instead="--latent-bits {value}")
    add_data_dir_argument(p)
    p.set_defaults(func=run_compress, device="cpu")

    p = subparsers.add_parser("decompress", help="restore images from vaekit compress", description=DECOMPRESS_HELP)
    add_run_argument(p)
    p.add_argument("file", type=Path, metavar="FILE", help="a file written by vaekit compress")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT")
    p.set_defaults(func=run_decompress, device="cpu")


def refuse_stdout(args) -> None:
    """ConfigError for `-o -`: these commands write files only (a file named '-' was written in the cwd)."""
    if str(args.output) == "-":
        raise ConfigError(f"vaekit {args.command} -o -: it writes a file, not standard output; give -o a file name")


def run_compress(args) -> int:
    refuse_stdout(args)
    if args.latent_bits > 16:
        raise ConfigError(f"--latent-bits must be at most 16, got {args.latent_bits}")
    from ..atomic import atomic_write_bytes, check_target

    check_target(args.output)  # now, not after the work
    from ..compress import compress_images
    from ..data import read_array
    from ..distributed import world

    loaded = open_run(args)
    if loaded.config.data.standardize:
        raise ConfigError(f"{args.run} was trained on standardized images (--standardize); compression codes "
                          "the pixels themselves: use a run trained without it")
    array, container = read_array(args.input, args.data_dir)
    data, stats = compress_images(loaded.model, array, container, loaded.config.data.binarize,
                                  loaded.config.train.seed, args.latent_bits, source=str(args.input), world=world())
    if not world().is_main():
        return 0  # under torchrun, each process codes its shard of the images; the main process writes
    atomic_write_bytes(args.output, data)
    note = "" if stats["exact"] else " (grayscale input: its binarization by the run's rule was compressed)"
    unit = "bits per pixel" if stats["pixel_bits"] == 1 else "bits per dim (8-bit values)"
    print(f"compressed {stats['images']} images to {args.output}: {stats['bytes']} bytes, "
          f"{stats['bits_per_pixel']:.4f} {unit}{note}")
    return 0


def run_decompress(args) -> int:
    refuse_stdout(args)
    from ..atomic import atomic_write_bytes
    from ..compress import decompress_images
    from ..data import encode_idx
    from ..data.files import display, read_input
    from ..distributed import world

    loaded = open_run(args)
    images, container = decompress_images(loaded.model, read_input(args.file), display(args.file), world=world())
    wants_npy = args.output.suffix.lower() == ".npy"
    if (container == "npy") != wants_npy:
        expected = "a .npy name" if container == "npy" else "an IDX name (not .npy)"
        raise ConfigError(f"{args.file} holds images from {'a .npy array' if container == 'npy' else 'an IDX file'}; "
                          f"give -o {expected}")
    if not world().is_main():
        return 0  # under torchrun, each process decodes its share of the shards; the main process writes
    atomic_write_bytes(args.output, npy_bytes(images) if container == "npy" else encode_idx(images))
    print(f"decompressed {len(images)} images of {math.prod(images.shape[1:])} pixels to {args.output}")
    return 0


def npy_bytes(array: np.ndarray) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
