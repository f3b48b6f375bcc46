"""Lossless compression of binarized MNIST: vaekit's bits-back coder against general-purpose compressors.

    python benchmarks/compression.py --threshold-run RUN_T --stochastic-run RUN_S
    python benchmarks/compression.py                       # trains both runs first (long on a CPU)
    python benchmarks/compression.py --data fashion-mnist --threshold-run RUN --skip-stochastic

Two test sets, both the 10,000 MNIST test images: thresholded at 127, and stochastically binarized
(each pixel a Bernoulli draw with its intensity as probability, seed 0). For each: bits per pixel
of vaekit (the whole file: header, initial bits and payload), the model's negative ELBO in bits
per pixel, gzip -9, bz2 -9 and lzma (preset 9 extreme) on raw bytes (one byte per pixel) and on
bit-packed bytes (8 pixels per byte), and PNG and lossless WebP of all images tiled into one
2800x2800 picture. Also compression and decompression throughput, and an exact round-trip check.
--data fashion-mnist does the same with the 10,000 Fashion-MNIST test images (and runs trained on
Fashion-MNIST).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import BENCHMARK_DATA, DATA_DIR, machine, on_data, runs_folder
from PIL import Image

from vaekit import ModelConfig, RunConfig, TrainConfig, fit, load_run, load_split
from vaekit.compress import compress_images, decompress_images
from vaekit.config import DataConfig
from vaekit.evaluate import evaluate_elbo

# the runs trained when none is given: BENCHMARKS.md's models
DEFAULT_RUNS = {
    "threshold": RunConfig(DataConfig(binarize="threshold"), ModelConfig(pixel_groups=7), TrainConfig(epochs=30)),
    "dynamic": RunConfig(DataConfig(binarize="dynamic"), ModelConfig(), TrainConfig(epochs=100)),
}


def baselines(bits: np.ndarray) -> dict:
    """Bits per pixel of general-purpose lossless compressors on (N, 784) 0/1 images."""
    pixels = bits.size
    raw, packed = bits.astype(np.uint8).tobytes(), np.packbits(bits).tobytes()
    result = {}
    for name, compress in (("gzip -9", lambda b: gzip.compress(b, compresslevel=9, mtime=0)),
                           ("bz2 -9", lambda b: bz2.compress(b, 9)),
                           ("lzma -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))):
        result[f"{name} (raw bytes)"] = 8 * len(compress(raw)) / pixels
        result[f"{name} (bit-packed)"] = 8 * len(compress(packed)) / pixels
    side = int(math.isqrt(len(bits)))
    tiles = bits[: side * side].reshape(side, side, 28, 28).transpose(0, 2, 1, 3).reshape(side * 28, side * 28)
    for name, image, options in (("PNG (1-bit, tiled)", Image.fromarray(tiles.astype(bool)), {"optimize": True}),
                                 ("WebP lossless (tiled)", Image.fromarray(tiles.astype(np.uint8) * 255),
                                  {"lossless": True, "quality": 100, "method": 6})):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if name.startswith("PNG") else "WEBP", **options)
        result[name] = 8 * len(buffer.getvalue()) / (side * side * 784)
    return {k: round(v, 4) for k, v in result.items()}


def measure(run, bits: np.ndarray) -> dict:
    images = bits.reshape(-1, 28, 28).astype(np.uint8) * 255
    start = time.perf_counter()
    data, stats = compress_images(run.model, images, "idx", run.config.data.binarize, run.config.train.seed)
    compress_s = time.perf_counter() - start
    start = time.perf_counter()
    restored, _ = decompress_images(run.model, data)
    decompress_s = time.perf_counter() - start
    x = torch.from_numpy(bits).float().view(-1, 1, 28, 28)
    elbo_nats = evaluate_elbo(run.model, x, run.config.train.seed)["test_loss"]
    return {"vaekit_bits_per_pixel": round(stats["bits_per_pixel"], 4), "file_bytes": stats["bytes"],
            "model_neg_elbo_bits_per_pixel": round(elbo_nats / (784 * math.log(2)), 4),
            "round_trip_exact": bool(np.array_equal(restored, images)),
            "compress_s": round(compress_s, 1), "decompress_s": round(decompress_s, 1),
            "compress_images_per_s": round(len(bits) / compress_s),
            "decompress_images_per_s": round(len(bits) / decompress_s)}


def get_run(path: Path | None, binarize: str, out: Path, data: str):
    if path is None:
        path = runs_folder(out, data) / f"compression-{binarize}"
        if not (path / "model.safetensors").exists():
            fit(on_data(DEFAULT_RUNS[binarize], data), path, data_dir=DATA_DIR,
                log=lambda line: print(f"[{binarize}] {line}", file=sys.stderr, flush=True))
    run = load_run(path)
    if run.config.data.name != data:
        sys.exit(f"{path} was trained on {run.config.data.name}, not on {data}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold-run", type=Path, help="a run trained with --binarize threshold")
    parser.add_argument("--stochastic-run", type=Path, help="a run trained with --binarize dynamic")
    parser.add_argument("--data", default="mnist", choices=BENCHMARK_DATA, help="the test set (default mnist)")
    parser.add_argument("--skip-stochastic", action="store_true", help="the thresholded set only")
    parser.add_argument("--out", type=Path, default=Path("bench-runs"))
    args = parser.parse_args()
    test = load_split(args.data, "test", DATA_DIR).images[:, 0].numpy()
    sets = {
        "thresholded": ((test > 127).reshape(len(test), -1).astype(np.uint8), args.threshold_run, "threshold"),
        "stochastic": ((np.random.default_rng(0).random(test.shape)
                        < test / 255.0).reshape(len(test), -1).astype(np.uint8),
                       args.stochastic_run, "dynamic"),
    }
    if args.skip_stochastic:
        del sets["stochastic"]
    result = {"benchmark": "compression", "data": args.data, "machine": machine()}
    for name, (bits, run_path, binarize) in sets.items():
        run = get_run(run_path, binarize, args.out, args.data)
        result[name] = {"run": str(run.path), "model": run.config.model.__dict__, "epochs": len(run.metrics),
                        **measure(run, bits), "baselines": baselines(bits)}
        bz2_bpp = min(result[name]["baselines"]["bz2 -9 (raw bytes)"], result[name]["baselines"]["bz2 -9 (bit-packed)"])
        result[name]["ratio_to_bz2"] = round(result[name]["vaekit_bits_per_pixel"] / bz2_bpp, 3)
        print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
