"""CPU images per second of `--architecture resnet`: training and evaluation at 32x32x3 (CIFAR-10's shape) and
64x64x3 (CelebA-64's), in fp32 and in bf16 autocast, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/resnet_speed.py                  # one thread, about 10 minutes
    python benchmarks/resnet_speed.py --sizes 32 --images 128 --rounds 1  # a smoke test

The images are synthetic (a disc of one random colour on another, uint8), of the datasets' shapes: CIFAR-10 and
CelebA are not on this machine, and a network's speed does not depend on what its pixels show. The model is the
resnet at vaekit's defaults (--width 32 --blocks 2, a dense latent of --latent values) with the discretized
logistic mixture of 10 components, the likelihood for 8-bit colour; training is vaekit's Trainer (Adam, eager,
no torch.compile) at batch --batch-size, evaluation the importance-weighted NLL with K samples per image
(`vaekit eval --iw-samples K`). Each round times one epoch (and one evaluation) in every precision in turn, after
one untimed warm-up of each, so a busy machine slows both alike. Each is reported as images per CPU-second of
this process (at one thread, the rate of an idle core, which a machine shared with other jobs does not give in
wall time) and as images per wall-clock second, both from the median round. bf16 is
measured where the CPU multiplies bf16 natively (vaekit.acceleration.has_native_bf16). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from common import machine, peak_rss_mb

from vaekit import ModelConfig, RunConfig, TrainConfig
from vaekit.acceleration import has_native_bf16
from vaekit.evaluate import importance_weighted_nll
from vaekit.fit import build_model
from vaekit.models import parameter_count
from vaekit.train import Trainer


def discs(n: int, side: int, seed: int) -> torch.Tensor:
    """n synthetic colour images (N, 3, side, side) uint8: a disc of one random colour on another."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    images = np.empty((n, 3, side, side), np.uint8)
    for i in range(n):
        background, foreground = g.integers(0, 256, (2, 3))
        cy, cx = g.integers(side // 4, 3 * side // 4, 2)
        r = g.integers(side // 8, side // 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        images[i] = np.where(disc, foreground[:, None, None], background[:, None, None])
    return torch.from_numpy(images)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def measure(side: int, args, precisions: list[str]) -> dict:
    """Training and evaluation images/s at side x side x 3 in each precision, timed round by round in turn."""
    model_config = ModelConfig(input_shape=(3, side, side), architecture="resnet", width=args.width,
                               blocks=args.blocks, latent_dim=args.latent, likelihood=args.likelihood)
    train_images = discs(args.images, side, 0)
    test_x = discs(args.eval_images, side, 1).float() / 255
    trainers, models = {}, {}
    for precision in precisions:
        config = RunConfig(model=model_config, train=TrainConfig(batch_size=args.batch_size, compile="off",
                                                                 precision=precision, lr=1e-3))
        models[precision] = build_model(config)  # the same initial weights in every precision
        trainers[precision] = Trainer(models[precision], train_images, config.train, config.data.binarize)
    # seconds of wall time and of this process's CPU time per round: on a shared machine the CPU time (one thread)
    # is what an idle core would take; the wall time includes waiting for the core
    wall = {(p, what): [] for p in precisions for what in ("train", "eval")}
    cpu = {(p, what): [] for p in precisions for what in ("train", "eval")}
    nll = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN kernels) and is not counted
        for precision in precisions:
            for what in ("train", "eval"):
                start, start_cpu = time.perf_counter(), time.process_time()
                if what == "train":
                    trainers[precision].train_epoch()
                else:
                    nll[precision] = importance_weighted_nll(models[precision], test_x, args.k, seed=0, compile=False,
                                                             precision=precision).mean().item()
                if round_:
                    wall[precision, what].append(time.perf_counter() - start)
                    cpu[precision, what].append(time.process_time() - start_cpu)
            if round_:
                rate = args.images / cpu[precision, "train"][-1]
                say(f"{side}x{side}x3 {precision} round {round_}: train {rate:.1f} "
                    f"img/CPU-s, eval {args.eval_images / cpu[precision, 'eval'][-1]:.2f} img/CPU-s")
    dims = 3 * side * side
    result = {"shape": [3, side, side], "parameters": parameter_count(model_config), "train_images": args.images,
              "batch_size": args.batch_size, "eval_images": args.eval_images, "k": args.k}
    counts = {"train": args.images, "eval": args.eval_images}
    for precision in precisions:
        result[precision] = {}
        for what, n in counts.items():
            result[precision][f"{what}_images_per_cpu_second"] = round(n / statistics.median(cpu[precision, what]), 3)
            result[precision][f"{what}_images_per_second_wall"] = round(n / statistics.median(wall[precision, what]), 3)
            result[precision][f"{what}_cpu_seconds"] = [round(t, 2) for t in cpu[precision, what]]
            result[precision][f"{what}_wall_seconds"] = [round(t, 2) for t in wall[precision, what]]
        # two models trained apart from the same initial weights: this shows both learn, not a precision's accuracy
        result[precision]["nll_bits_per_dim_after_training"] = round(nll[precision] / (dims * np.log(2)), 3)
    if "bf16" in result:
        result["bf16_speedup_cpu_time"] = {what: round(result["bf16"][f"{what}_images_per_cpu_second"]
                                                       / result["fp32"][f"{what}_images_per_cpu_second"], 3)
                                           for what in counts}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sides (default 32 64)")
    parser.add_argument("--images", type=int, default=256, help="training images per timed epoch (default 256)")
    parser.add_argument("--eval-images", type=int, default=32, help="images per timed evaluation (default 32)")
    parser.add_argument("-k", type=int, default=16, help="importance samples per image in evaluation (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=ModelConfig().width)
    parser.add_argument("--blocks", type=int, default=ModelConfig().blocks)
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--likelihood", default="discretized-logistic-mixture")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = ["fp32"] + (["bf16"] if has_native_bf16(torch.device("cpu")) else [])
    began = time.perf_counter()
    results = {"machine": machine(), "width": args.width, "blocks": args.blocks, "latent": args.latent,
               "likelihood": args.likelihood, "sizes": [measure(side, args, precisions) for side in args.sizes]}
    results["wall_seconds"] = round(time.perf_counter() - began, 1)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
