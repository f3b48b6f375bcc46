"""Samplers side by side on one trained model: sample quality (vaekit.quality) of the prior, gmm, flow and
two-stage samplers, the time to fit each on the training latents, and the time to draw 10,000 images.

    PYTHONPATH=src python benchmarks/samplers.py --data mnist --grids docs/images
    PYTHONPATH=src python benchmarks/samplers.py --data fashion-mnist --run /tmp/seed-fashion

Trains the seed model (`vaekit train --recipe seed`: the tutorial's MLP, 10 epochs) unless --run names one,
fits every sampler into it (RUN/samplers/), and prints one JSON object. Times are wall-clock and CPU
seconds of this process (the CPU time is what a quiet machine's wall clock would show at one thread).
With --grids DIR, `vaekit sample --sampler S` draws a 64-image grid of each sampler into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402

from vaekit.data import load_split, to_unit  # noqa: E402
from vaekit.generate import sample_many  # noqa: E402
from vaekit.quality import image_quality, run_quality  # noqa: E402
from vaekit.rng import make_generator  # noqa: E402
from vaekit.runs import load_run  # noqa: E402
from vaekit.samplers.base import SamplerConfig  # noqa: E402
from vaekit.samplers.store import fit_sampler, load_sampler, save_sampler, training_latents  # noqa: E402

SAMPLERS = ("prior", "gmm", "flow", "two-stage")
METRICS = ("fd_classifier", "precision", "recall", "density", "mmd2", "confidence", "class_coverage")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def vaekit(*argv: str) -> None:
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "vaekit", *argv, "--threads", "1"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "fashion-mnist"), default="mnist")
    parser.add_argument("--run", type=Path, default=None, help="a trained run (default: train the seed model)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-runs/samplers"))
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10, help="flow and two-stage passes over the latents")
    parser.add_argument("--grids", type=Path, default=None, help="write a sample grid of each sampler here")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the times to fit and to draw 10,000 images (no quality, no grids)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run_path = args.run
    if run_path is None:
        run_path = args.workdir / f"seed-{args.data}"
        if not (run_path / "model.safetensors").exists():
            vaekit("train", "--recipe", "seed", "--data", args.data, "--out", str(run_path))
    run = load_run(run_path)
    result = {"machine": machine(), "data": args.data, "run": str(run_path), "samples": args.samples,
              "test_loss": run.metrics[-1]["test_loss"] if run.metrics else None, "samplers": {}}
    latents, wall, cpu = timed(lambda: training_latents(run))
    result["latents"] = {"count": len(latents), "dim": latents.shape[1], "wall_s": wall, "cpu_s": cpu}
    result["load_average"] = os.getloadavg()  # the machine's load when timing began (1, 5 and 15 minutes)
    if not args.timing_only:
        # the floor: real training images against the test images, through the same protocol
        test = load_split(args.data, "test")
        train = load_split(args.data, "train")
        real = image_quality(to_unit(test.images), to_unit(train.images[:args.samples]), args.data)
        result["train_images_as_samples"] = {k: real[k] for k in METRICS}
        print(json.dumps({"train_images_as_samples": result["train_images_as_samples"]}), file=sys.stderr,
              flush=True)
    for name in args.samplers:
        row = {}
        if name != "prior":
            config = SamplerConfig(name, epochs=args.epochs) if name != "gmm" else SamplerConfig(name)
            fitted, wall, cpu = timed(lambda: fit_sampler(run, config, latents=latents))  # noqa: B023
            save_sampler(run.path, fitted)
            row["fit"] = {"wall_s": wall, "cpu_s": cpu, **fitted.record["fitted_on"], "config": config.to_dict()}
        sampler = load_sampler(run, name)
        drawn, wall, cpu = timed(lambda: sample_many(run.model, 10_000, make_generator(1), sampler))  # noqa: B023
        row["sample_10000"] = {"wall_s": wall, "cpu_s": cpu}
        if args.timing_only:
            result["samplers"][name] = row
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
            continue
        quality, wall, cpu = timed(lambda: run_quality(run, name, args.samples))  # noqa: B023
        row["quality"] = {k: quality[k] for k in METRICS}
        row["quality_seconds"] = {"wall_s": wall, "cpu_s": cpu}
        result["samplers"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
        if args.grids is not None:
            args.grids.mkdir(parents=True, exist_ok=True)
            vaekit("sample", str(run_path), "--sampler", name, "-n", "64", "--seed", "0", "--scale", "2",
                   "-o", str(args.grids / f"samples-{args.data}-{name}.png"))
    result["load_average_after"] = os.getloadavg()
    if args.timing_only:
        print(json.dumps(result))
        return
    result["protocol"] = quality["protocol"]
    prior_fd = result["samplers"].get("prior", {}).get("quality", {}).get("fd_classifier")
    if prior_fd:
        result["fd_ratio_to_prior"] = {name: round(row["quality"]["fd_classifier"] / prior_fd, 4)
                                       for name, row in result["samplers"].items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
