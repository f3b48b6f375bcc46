"""Defaults on any data: `vaekit train` with no flags but --data and --out, old recipe against new.

    python benchmarks/defaults.py                 # about 15 minutes on one thread; prints one JSON object
    python benchmarks/defaults.py --images 500    # a quicker look
    python benchmarks/defaults.py --shapes gray32 --flags='--epochs 1'   # with train flags beyond --data

Four dataset shapes: the bundled MNIST, and three sets generated here (seeded, saved as .npy): 32x32
grayscale, 64x64 RGB and 128x128 RGB. Each generated image is a smooth coloured gradient with up to
four soft blobs, structure a VAE can learn. Every shape trains twice, each in its own process on one
thread (OMP_NUM_THREADS=1): with the code at --old-rev (extracted with git archive), and with this
checkout's. Reported per run: the final test loss per pixel (Bernoulli cross-entropy on the grayscale
values plus KL, in nats) beside two references on the same held-out images, the loss of predicting the
training set's mean image and the targets' own entropy (no model can go below it); the rate (KL), the
recipe the run chose, and the wall time. A run is sane when its loss is finite, below the mean image's
and its rate below 1,000 nats. For MNIST the two runs' weights and metrics must be bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DATA_DIR, REPO, machine

SHAPES = {"gray32": (32, 1), "rgb64": (64, 3), "rgb128": (128, 3)}  # name: (side, channels)
MAX_SANE_RATE = 1000.0  # nats; the old recipe's failures were rates of 10^4 to 10^27


def make_images(n: int, side: int, channels: int, seed: int, chunk: int = 250) -> np.ndarray:
    """n smooth images, uint8 (N, H, W) or (N, H, W, 3): a linear gradient between two random colours at a
    random angle, plus each of four Gaussian blobs (random centre, width and colour) with probability 0.75."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(0, 1, side, dtype=np.float32)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    yy, xx = yy[None, :, :, None], xx[None, :, :, None]  # (1, H, W, 1)
    out = np.empty((n, side, side, channels), np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        angle = rng.uniform(0, 2 * np.pi, (m, 1, 1, 1)).astype(np.float32)
        ramp = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) + 0.5
        low, high = rng.uniform(0, 0.4, (2, m, 1, 1, channels)).astype(np.float32)
        image = low + (high - low) * ramp
        for _ in range(4):
            present = (rng.uniform(size=(m, 1, 1, 1)) < 0.75).astype(np.float32)
            cy, cx = rng.uniform(0.15, 0.85, (2, m, 1, 1, 1)).astype(np.float32)
            width = rng.uniform(0.06, 0.2, (m, 1, 1, 1)).astype(np.float32)
            colour = rng.uniform(0.3, 1.0, (m, 1, 1, channels)).astype(np.float32)
            image = image + present * colour * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width ** 2))
        out[start:start + m] = np.clip(image * 255, 0, 255).round().astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def references(data: str) -> dict:
    """Per-pixel losses on the run's held-out images: predicting the training mean image, and the entropy floor."""
    import torch

    from vaekit import DataConfig, TrainConfig
    from vaekit.data import load_train_test

    train_set, test_set = load_train_test(data, DataConfig().validation, TrainConfig().seed, DATA_DIR)
    x = test_set.images.double() / 255
    mean = (train_set.images.double() / 255).mean(0).clamp(1e-6, 1 - 1e-6)
    pixels = x[0].numel()

    def cross_entropy(p: torch.Tensor) -> float:
        return float(-(x * p.log() + (1 - x) * (1 - p).log()).sum() / len(x) / pixels)

    return {"pixels": pixels, "test_images": len(x), "mean_image_per_pixel": round(cross_entropy(mean), 4),
            "entropy_per_pixel": round(cross_entropy(x.clamp(1e-6, 1 - 1e-6)), 4)}


def train(src: Path, data: str, out: Path, flags: list[str]) -> dict:
    """`vaekit train --data DATA --out OUT [FLAGS]` with the vaekit at `src`, on one thread, from the repo root."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", data, "--out", str(out), *flags],
                             cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    result = {"exit": process.returncode, "wall_s": round(wall, 1),
              "warnings": [line for line in (process.stdout + process.stderr).splitlines() if "warning:" in line]}
    if process.returncode != 0:
        return {**result, "error": process.stderr.strip().splitlines()[-1:]}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_config = json.loads((out / "config.json").read_text())["train"]
    last = rows[-1]
    return {**result, "epochs": last["epoch"], "batch_size": train_config["batch_size"], "lr": train_config["lr"],
            "test_loss": last["test_loss"], "rate": last["test_kl"], "distortion": last["test_reconstruction"],
            "active_units": last["active_units"], "train_s": round(sum(row["seconds"] for row in rows), 1)}


def same_run(a: Path, b: Path) -> bool:
    """Whether two runs hold bitwise equal weights and metrics (the seconds aside)."""
    from safetensors.torch import load_file

    def metrics(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return metrics(a) == metrics(b) and wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images in each generated set (default 2000)")
    parser.add_argument("--old-rev", default="6a44ccf", help="the commit with the old defaults (default 6a44ccf)")
    parser.add_argument("--shapes", nargs="+", default=["mnist", *SHAPES], choices=["mnist", *SHAPES])
    parser.add_argument("--flags", default="", help="more train flags for both runs, in one string "
                        "(the issue's failures: --flags='--epochs 1', --flags='--architecture conv')")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    with tempfile.TemporaryDirectory(prefix="vaekit-defaults-") as tmp:
        work = Path(tmp)
        old_src = work / "old"
        old_src.mkdir()
        archive = subprocess.run(["git", "archive", args.old_rev, "src"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive.stdout, check=True)
        results = {}
        for shape in args.shapes:
            if shape == "mnist":
                data = "mnist"
            else:
                side, channels = SHAPES[shape]
                data = str(work / f"{shape}.npy")
                np.save(data, make_images(args.images, side, channels, seed=1))
            row = {"references": references(data)}
            for variant, src in (("old", old_src / "src"), ("new", REPO / "src")):
                row[variant] = train(src, data, work / f"{shape}-{variant}", shlex.split(args.flags))
                if "test_loss" in row[variant]:
                    run = row[variant]
                    per_pixel = run["test_loss"] / row["references"]["pixels"]
                    run["loss_per_pixel"] = round(per_pixel, 4)
                    run["sane"] = (math.isfinite(per_pixel) and per_pixel < row["references"]["mean_image_per_pixel"]
                                   and math.isfinite(run["rate"]) and run["rate"] < MAX_SANE_RATE)
                else:
                    row[variant]["sane"] = False
                print(json.dumps({shape: {variant: row[variant]}}), file=sys.stderr, flush=True)
            if shape == "mnist" and row["old"]["exit"] == 0 and row["new"]["exit"] == 0:
                row["bitwise_equal"] = bool(same_run(work / "mnist-old", work / "mnist-new"))
            results[shape] = row
    print(json.dumps({"machine": machine(), "images": args.images, "flags": args.flags, "old_rev": args.old_rev,
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
