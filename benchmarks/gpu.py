"""The GPU benchmarks, for a lent CUDA machine: run by benchmarks/gpu.sh, which installs vaekit first.

    python benchmarks/gpu.py --out $OUT/gpu.json      # about 3-5 minutes on one H200 (budget: 8)
    python benchmarks/gpu.py --quick --device cpu     # a smoke test of this script on any machine (~1 minute)

1. The seed config (784-400-20 MLP, the seed's optimisation: batch 128, Adam 1e-3, 10 epochs), on one GPU
   with the data on the GPU: wall seconds of the 10 epochs and the test loss after them, compiled
   (torch.compile with CUDA graphs, "reduce-overhead") and in bf16 autocast where the GPU has it (the
   default precision), and eager for comparison. Target: <= 1 s for the 10 epochs on an H100/H200.
2. 1 to N GPU scaling (N = the GPUs present; one H200 gives N = 1) of a larger model (784-2048-2048-64
   MLP, global batch 1024, eager, default precision) through torchrun and DDP: seconds per epoch (the median
   after the first) and images per second, with N processes.
3. K=5000 NLL throughput: the importance-weighted NLL of 1,000 test images with 5,000 samples each, by the
   model of step 1, in the default precision; images per second and the time 10,000 would take.
4. `--architecture resnet` (width 32, 2 blocks, a dense latent of 128, the 10-logistic mixture) on CIFAR-10-shaped
   (50,000 images of 32x32x3) and CelebA-64-shaped (20,000 of 64x64x3) data: training images per second (the
   epochs after the first, batch 128, eager, default precision), the test loss in bits/dim, and the K=100 NLL's
   images per second on 1,000 test images. The images are synthetic (a disc of one colour on another): the GPU
   machine has no network and neither dataset is on it, and speed does not depend on what the pixels show.

    python benchmarks/gpu.py --steps resnet            # step 4 alone (estimated 1-3 minutes on an H200; not yet run)

Everything is measured with vaekit's own code (vaekit.train.Trainer, vaekit.evaluate), without writing run
directories (so without matplotlib). Prints one JSON object and writes it to --out; progress on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vaekit import ModelConfig, RunConfig, TrainConfig
from vaekit.data import fixed_binarization, load_train_test
from vaekit.evaluate import bits_per_dim
from vaekit.devices import resolve_device
from vaekit.evaluate import evaluate_elbo, importance_weighted_nll
from vaekit.fit import build_model, wrapped
from vaekit.train import Trainer

SCALING_MODEL = ModelConfig(hidden_dims=(2048, 2048), latent_dim=64)
SCALING_BATCH = 1024
RESNET_MODEL = ModelConfig(architecture="resnet", latent_dim=128, likelihood="discretized-logistic-mixture")
RESNET_SHAPES = {"cifar10_shaped": (32, 50_000, 10_000), "celeba64_shaped": (64, 20_000, 1_000)}  # side, train, test
STEPS = ("seed", "scaling", "nll", "resnet")


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data(config: RunConfig, device: torch.device, quick: bool):
    train_set, test_set = load_train_test(config.data.name, config.data.validation, config.train.seed)
    train, test = train_set.images, test_set.images
    if quick:
        train, test = train[:2048], test[:512]
    return train.to(device), fixed_binarization(test.to(device), config.data.binarize, config.train.seed)


def seed_config(device: torch.device, compile_mode: str, epochs: int, quick: bool):
    """Step 1: the seed config trained for `epochs`, timed epoch by epoch; returns (result, model, test inputs)."""
    config = RunConfig(train=TrainConfig.seed_settings(epochs=epochs, compile=compile_mode))
    images, test_x = data(config, device, quick)
    model = build_model(config).to(device)
    trainer = Trainer(model, images, config.train, config.data.binarize)
    sync(device)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.train_epoch()
        sync(device)
        seconds.append(time.perf_counter() - start)
    test = evaluate_elbo(model, test_x, config.train.seed)
    result = {"compile": compile_mode, "compiled": trainer.compiled, "precision": str(trainer.amp_dtype or "fp32"),
              "epochs": epochs, "seconds_total": round(sum(seconds), 3),
              "seconds_total_without_first_epoch": round(sum(seconds[1:]), 3),
              "seconds_per_epoch": [round(s, 4) for s in seconds], "test_loss": round(test["test_loss"], 4),
              "target_seconds": 1.0}
    say(f"seed config, compile {compile_mode}: {sum(seconds):.2f} s for {epochs} epochs "
        f"({sum(seconds[1:]):.2f} s after the first), test loss {test['test_loss']:.3f}")
    return result, model, test_x


def scaling_worker(out: str, epochs: int, quick: bool) -> None:
    """Step 2, one process of a torchrun job: the larger model under DDP; rank 0 writes its epoch times."""
    from vaekit.distributed import joined

    device = resolve_device("auto")
    with joined(device) as world:
        config = RunConfig(model=SCALING_MODEL, train=TrainConfig(epochs=epochs, batch_size=SCALING_BATCH,
                                                                  compile="off"))
        images, _ = data(config, device, quick)
        model = build_model(config).to(device)
        trainer = Trainer(wrapped(model, device, world), images, config.train, config.data.binarize, world)
        seconds = []
        for _ in range(epochs):
            world.barrier()
            start = time.perf_counter()
            trainer.train_epoch()
            sync(device)
            world.barrier()
            seconds.append(time.perf_counter() - start)
        if world.is_main():
            Path(out).write_text(json.dumps({"processes": world.size, "images": len(images), "seconds": seconds}))


def scaling(max_processes: int, epochs: int, quick: bool, device: str) -> list[dict]:
    """Step 2: the worker launched by torchrun with 1..max_processes processes."""
    rows = []
    for n in range(1, max_processes + 1):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "scaling.json"
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                    __file__, "--worker", str(out), "--epochs", str(epochs), *(["--quick"] if quick else [])]
            env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
            started = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                rows.append({"processes": n, "error": result.stderr.strip()[-800:]})
                say(f"scaling with {n} process(es) failed")
                continue
            measured = json.loads(out.read_text())
        per_epoch = statistics.median(measured["seconds"][1:] or measured["seconds"])
        rows.append({"processes": n, "seconds_per_epoch": round(per_epoch, 4),
                     "images_per_second": round(measured["images"] / per_epoch),
                     "seconds_per_epoch_all": [round(s, 4) for s in measured["seconds"]],
                     "wall_seconds_with_start_up": round(time.perf_counter() - started, 1)})
        say(f"scaling: {n} process(es): {per_epoch:.3f} s/epoch")
    base = rows[0].get("images_per_second")
    for row in rows:
        if base and "images_per_second" in row:
            row["speedup"] = round(row["images_per_second"] / base, 3)
    return rows


def nll_throughput(model, test_x: torch.Tensor, k: int, images: int, seed: int) -> dict:
    """Step 3: the K-sample NLL of the first `images` test images, timed."""
    x = test_x[:images]
    sync(x.device)
    start = time.perf_counter()
    nll = importance_weighted_nll(model, x, k, seed)
    sync(x.device)
    seconds = time.perf_counter() - start
    say(f"NLL K={k}: {len(x)} images in {seconds:.1f} s, mean {nll.mean().item():.3f}")
    return {"k": k, "images": len(x), "seconds": round(seconds, 2), "images_per_second": round(len(x) / seconds, 1),
            "seconds_for_10000_images": round(10_000 * seconds / len(x), 1), "nll": round(nll.mean().item(), 4)}


def discs(n: int, side: int, seed: int) -> torch.Tensor:
    """n synthetic colour images (N, 3, side, side) uint8: a disc of one random colour on another."""
    import numpy as np

    g = np.random.default_rng(seed)
    background, foreground = g.integers(0, 256, (2, n, 3, 1, 1), dtype=np.uint8)
    cy, cx = g.integers(side // 4, 3 * side // 4, (2, n, 1, 1, 1))
    r = g.integers(side // 8, side // 3, (n, 1, 1, 1))
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r  # (N, 1, side, side)
    return torch.from_numpy(np.where(disc, foreground, background))


def resnet_shapes(device: torch.device, epochs: int, quick: bool) -> dict:
    """Step 4: the resnet on CIFAR-10- and CelebA-64-shaped synthetic data, trained for `epochs`, then evaluated."""
    results = {}
    for name, (side, n_train, n_test) in RESNET_SHAPES.items():
        if quick:
            n_train, n_test = 256, 16
        config = RunConfig(model=dataclasses.replace(RESNET_MODEL, input_shape=(3, side, side)),
                           train=TrainConfig(epochs=epochs, compile="off", lr=1e-3))
        images, test_x = discs(n_train, side, 0).to(device), (discs(n_test, side, 1).float() / 255).to(device)
        model = build_model(config).to(device)
        trainer = Trainer(model, images, config.train, config.data.binarize)
        seconds = []
        for _ in range(epochs):
            sync(device)
            start = time.perf_counter()
            trainer.train_epoch()
            sync(device)
            seconds.append(time.perf_counter() - start)
        per_epoch = statistics.median(seconds[1:] or seconds)
        dims = 3 * side * side
        test = evaluate_elbo(model, test_x, config.train.seed)
        k, nll_x = (10, test_x) if quick else (100, test_x[:1000])
        sync(device)
        start = time.perf_counter()
        nll = importance_weighted_nll(model, nll_x, k, 0).mean().item()
        sync(device)
        nll_seconds = time.perf_counter() - start
        results[name] = {
            "shape": [3, side, side], "train_images": n_train, "batch_size": config.train.batch_size,
            "precision": str(trainer.amp_dtype or "fp32"), "epochs": epochs,
            "seconds_per_epoch": [round(s, 3) for s in seconds],
            "train_images_per_second": round(n_train / per_epoch, 1),
            "test_bits_per_dim_elbo": round(bits_per_dim(test["test_loss"], dims, "8-bit"), 4),
            "nll_k": k, "nll_images": len(nll_x), "nll_bits_per_dim": round(bits_per_dim(nll, dims, "8-bit"), 4),
            "nll_images_per_second": round(len(nll_x) / nll_seconds, 1)}
        say(f"resnet {name}: {n_train / per_epoch:.0f} training images/s, NLL K={k} {len(nll_x) / nll_seconds:.0f} "
            f"images/s, {results[name]['nll_bits_per_dim']} bits/dim")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small data and few epochs: a smoke test")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="the steps to run (default all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a torchrun process of step 2
    args = parser.parse_args()
    if args.worker:
        scaling_worker(args.worker, args.epochs, args.quick)
        return
    began = time.perf_counter()
    device = resolve_device(args.device)
    info = {"torch": torch.__version__, "device": str(device), "quick": args.quick}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count(),
                    cuda=torch.version.cuda, capability=list(torch.cuda.get_device_capability(device)))
    say(f"device {device}: {info.get('gpu', 'cpu')}")
    epochs = args.epochs or (2 if args.quick else 10)
    results: dict = {"machine": info}
    if "seed" in args.steps or "nll" in args.steps:
        results["seed_config_compiled"], model, test_x = seed_config(device, "on", epochs, args.quick)
    if "seed" in args.steps:
        results["seed_config_eager"], _, _ = seed_config(device, "off", epochs, args.quick)
    if "scaling" in args.steps:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 2
        results["scaling"] = scaling(gpus, 2 if args.quick else 4, args.quick, device.type)
    if "nll" in args.steps:
        results["nll"] = nll_throughput(model, test_x, 50 if args.quick else 5000, 128 if args.quick else 1000, 0)
    if "resnet" in args.steps:
        results["resnet"] = resnet_shapes(device, 2 if args.quick else 3, args.quick)
    results["wall_seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
