"""Lossless compression of 8-bit images: vaekit's bits-back coder against image and general-purpose compressors.

    python benchmarks/compression8.py --mnist-run RUN_M --fashion-run RUN_F
    python benchmarks/compression8.py                # trains both runs first (DEFAULT_RUN; long on one thread)
    python benchmarks/compression8.py --limit 500    # the first 500 test images of each set only

The MNIST and Fashion-MNIST test sets at 8 bits (the files' values, not thresholded). For each, in bits per
dimension (bits per 8-bit value) on the same bytes: vaekit (the whole file: header, initial bits, payload, digest),
the model's negative ELBO, PNG, lossless WebP and lossless JPEG-XL (imagecodecs, where it is installed) both
per image (one file per 28x28 image, as a user stores them) and tiled (all images in one 100-column picture), and
bz2 -9 and lzma -9e on the raw bytes of the whole set (one byte per value). Every image of every codec is
decoded again and compared with the original; vaekit's file is decompressed and compared image for image.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import lzma
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA_DIR, machine
from PIL import Image

from vaekit import ModelConfig, RunConfig, TrainConfig, fit, load_run
from vaekit.compress import compress_images, decompress_images
from vaekit.config import DataConfig
from vaekit.data import read_array
from vaekit.evaluate import evaluate_elbo

# the run trained when none is given: a mixture of 5 discretized logistics, 32 latents, the MLP, 5 epochs
DEFAULT_RUN = dict(model=ModelConfig(latent_dim=32, likelihood="discretized-logistic-mixture",
                                     likelihood_components=5), train=TrainConfig(epochs=5))
# published numbers, bits/dim, for their own datasets (none of them is MNIST or Fashion-MNIST at our split unless
# named): what a hierarchical VAE with bits-back coding reaches
ANCHORS = {
    "Bit-Swap (Kingma et al. 2019), MNIST 8-bit test set, paper Table 3": 1.29,
    "Bit-Swap, CIFAR-10 test set": 3.82,
    "Bit-Swap, ImageNet 32x32 test set": 4.50,
    "Bit-Swap, 100 unscaled ImageNet crops (repo README; PNG 4.71, WebP 3.66, BB-ANS 3.62 there)": 3.51,
    "HiLLoC (Townsend et al. 2020), CIFAR-10 test set": 3.56,
    "HiLLoC, ImageNet 32x32": 4.20,
    "HiLLoC, ImageNet 64x64": 3.90,
    "HiLLoC, full-size ImageNet (its own test images)": 3.25,
}


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def webp(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
    return buffer.getvalue()


def pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


def image_codecs() -> dict:
    """name -> (encode, decode) of the lossless image codecs available here."""
    codecs = {"PNG": (png, pil_decode), "WebP lossless": (webp, pil_decode)}
    try:
        import imagecodecs

        if imagecodecs.JPEGXL.available:
            codecs["JPEG-XL lossless"] = (lambda image: imagecodecs.jpegxl_encode(image, lossless=True, effort=9),
                                          imagecodecs.jpegxl_decode)
    except ImportError:
        pass
    return codecs


def baselines(images: np.ndarray) -> dict:
    """Bits/dim of the codecs on uint8 images (N, 28, 28), per image and tiled, each decoded and checked."""
    values, result = images.size, {}
    columns = 100 if len(images) >= 100 else len(images)
    rows = len(images) // columns
    tiles = images[:rows * columns].reshape(rows, columns, 28, 28).transpose(0, 2, 1, 3).reshape(rows * 28, -1)
    for name, (encode, decode) in image_codecs().items():
        start, total = time.perf_counter(), 0
        for image in images:
            data = encode(image)
            if not np.array_equal(decode(data), image):
                raise SystemExit(f"{name} did not give an image back exactly")
            total += len(data)
        result[f"{name} (per image)"] = {"bits_per_dim": round(8 * total / values, 4),
                                         "seconds": round(time.perf_counter() - start, 1)}
        data = encode(tiles)
        if not np.array_equal(decode(data), tiles):
            raise SystemExit(f"{name} did not give the tiled picture back exactly")
        result[f"{name} (tiled, whole set)"] = {"bits_per_dim": round(8 * len(data) / tiles.size, 4)}
    raw = images.tobytes()
    extreme = 9 | lzma.PRESET_EXTREME
    for name, compress, decompress in (("bz2 -9 (whole set)", lambda b: bz2.compress(b, 9), bz2.decompress),
                                       ("lzma -9e (whole set)", lambda b: lzma.compress(b, preset=extreme),
                                        lzma.decompress)):
        data = compress(raw)
        if decompress(data) != raw:
            raise SystemExit(f"{name} did not give the bytes back exactly")
        result[name] = {"bits_per_dim": round(8 * len(data) / values, 4)}
    return result


def neg_elbo_bits_per_dim(run, images: np.ndarray) -> float:
    x = torch.from_numpy(images).float().div(255).view(-1, 1, 28, 28)
    return round(evaluate_elbo(run.model, x, run.config.train.seed)["test_loss"] / (784 * math.log(2)), 4)


def measure(run, images: np.ndarray) -> dict:
    start = time.perf_counter()
    data, stats = compress_images(run.model, images, "idx", run.config.data.binarize, run.config.train.seed)
    compress_s = time.perf_counter() - start
    start = time.perf_counter()
    restored, _ = decompress_images(run.model, data)
    decompress_s = time.perf_counter() - start
    exact = [bool(np.array_equal(a, b)) for a, b in zip(restored, images)]
    return {"vaekit_bits_per_dim": round(stats["bits_per_pixel"], 4), "file_bytes": stats["bytes"],
            "model_neg_elbo_bits_per_dim": neg_elbo_bits_per_dim(run, images),
            "images_round_trip_exact": f"{sum(exact)} of {len(exact)}",
            "compress_s": round(compress_s, 1), "decompress_s": round(decompress_s, 1),
            "compress_ms_per_image": round(1000 * compress_s / len(images), 1),
            "decompress_ms_per_image": round(1000 * decompress_s / len(images), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-run", type=Path)
    parser.add_argument("--fashion-run", type=Path)
    parser.add_argument("--limit", type=int, default=10_000, help="the first LIMIT test images of each set "
                        "(default all 10,000); the model's negative ELBO is also given on all of them")
    parser.add_argument("--sets", nargs="+", choices=("mnist", "fashion-mnist"), default=["mnist", "fashion-mnist"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"machine": machine(), "anchors_bits_per_dim": ANCHORS, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, given in (("mnist", args.mnist_run), ("fashion-mnist", args.fashion_run)):
            if name not in args.sets:
                continue
            if given is None:
                given = Path(tmp) / name
                fit(RunConfig(DataConfig(name=name), **DEFAULT_RUN), given, data_dir=DATA_DIR, progress=True)
            run = load_run(given)
            test = read_array(f"{name}:test", DATA_DIR)[0].astype(np.uint8)
            images = test[:args.limit]
            row = {"run": str(given), "images": len(images), "vaekit": measure(run, images),
                   "model_neg_elbo_bits_per_dim_all_10000": neg_elbo_bits_per_dim(run, test),
                   "baselines": baselines(images)}
            out["sets"][name] = row
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
