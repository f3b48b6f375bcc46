"""How fast vaekit reads a folder of the images users have: photos of mixed sizes (JPEG, PNG, RGBA, grayscale) in class
subfolders, fitted to --image-size as they are read, beside a folder of the same count already at that size.

    python benchmarks/read_folder.py [--images 400] [--size 32]

Prints one JSON object: images per second for each folder, and their ratio. One thread (torch's resizing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import machine

PHOTO_SIZES = [(480, 640), (640, 480), (500, 500), (375, 500), (96, 128)]  # H x W


def picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (H, W, 3) uint8 picture with some structure (so that JPEG and PNG compress it as they would a photo)."""
    y, x = np.mgrid[:height, :width] / max(height, width)
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)), np.sin(4 * (x + y))], -1)
    noise = rng.normal(0, 0.1, (height, width, 3))
    return np.clip((base + noise + 1) * 127.5, 0, 255).astype(np.uint8)


def write_folder(root: Path, n: int, sizes: list[tuple[int, int]], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        height, width = sizes[i % len(sizes)]
        folder = root / ("a" if i % 2 else "b") / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(picture(rng, height, width))
        kind = i % 4
        if kind == 1:
            image = image.convert("RGBA")
        elif kind == 2:
            image = image.convert("L")
        image.save(folder / f"{i:05d}.{'jpg' if kind in (0, 2) else 'png'}")
    return root


def images_per_second(folder: Path, size: tuple[int, int], repeats: int = 2) -> float:
    from vaekit.data import read_images

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        images = read_images(folder, size=size)
        best = min(best, time.perf_counter() - start)
    assert images.shape[1:] == size
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = (args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        mixed = write_folder(Path(tmp) / "mixed", args.images, PHOTO_SIZES, seed=0)
        small = write_folder(Path(tmp) / "small", args.images, [size], seed=0)
        rates = {"mixed_photos": images_per_second(mixed, size), "already_at_size": images_per_second(small, size)}
    print(json.dumps({"images": args.images, "size": args.size, "photo_sizes_hxw": PHOTO_SIZES,
                      "images_per_second": {k: round(v, 1) for k, v in rates.items()},
                      "ratio": round(rates["already_at_size"] / rates["mixed_photos"], 1), "machine": machine()},
                     indent=2))


if __name__ == "__main__":
    main()
