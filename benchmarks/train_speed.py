"""Training speed and time to quality: vaekit against the seed tutorial's loop, in one process tree.

    python benchmarks/train_speed.py            # about 4 minutes on a 2-core CPU; prints one JSON object

1. The matmul rate of this machine on the seed model's own layer shapes (fp32, and bf16 where the
   CPU has it natively), and the floor it implies for one epoch: 60,000 images through the
   784-400-20 MLP, forward and backward, 234 GFLOP.
2. Speed, interleaved: rounds of one seed-loop epoch (../shared/bench/seed_vae.py, per-sample PIL
   work in a DataLoader) and one vaekit epoch with the seed's settings (--recipe seed: batch 128,
   Adam lr 1e-3), in vaekit's default precision and in fp32. This machine's speed drifts by up to
   1.7x over minutes, so each round's ratio compares neighbours and the medians are reported.
3. Quality: the seed loop's and vaekit's test loss after 10 epochs with the seed's settings.
4. Time to quality: wall seconds of training (test evaluations included) until the test loss first
   reaches the seed's 10-epoch level (grayscale BCE + KL <= 105.4), with vaekit's default recipe,
   for three seeds, against the seed loop's 10 epochs.

Each training runs in its own subprocess, whose peak memory is measured (wait4).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from common import DATA_DIR, SEED_SCRIPT, machine, matmul_gflops, median, run_json

TARGET = 105.4  # the seed loop's test loss after 10 epochs at batch 128 (shared/README.md)
N_TRAIN = 60_000
LAYERS = [(784, 400), (400, 40), (20, 400), (400, 784)]  # the seed model's matmuls (encoder head fused)


def epoch_gflop(batch: int = 128) -> float:
    """Forward + backward FLOPs of one epoch: 3x the forward's 2*B*in*out per layer."""
    steps = math.ceil(N_TRAIN / batch)
    return 3 * 2 * sum(i * o for i, o in LAYERS) * N_TRAIN / 1e9 * (steps * batch / N_TRAIN)


def step_shapes(batch: int = 128) -> list[tuple[int, int, int]]:
    """The (m, k, n) products of one training step: forward, weight gradients, input gradients."""
    shapes = []
    for i, o in LAYERS:
        shapes += [(batch, i, o), (o, batch, i), (batch, o, i)]
    return shapes


def worker(spec: dict) -> dict:
    """Train one configuration in this process and report per-epoch timings and test losses."""
    import torch

    from vaekit import RunConfig, TrainConfig, Trainer, evaluate_elbo, load_split
    from vaekit.data import fixed_binarization
    from vaekit.fit import build_model

    base = TrainConfig.seed_settings() if spec["recipe"] == "seed" else TrainConfig()
    train = base.__class__(**{**base.__dict__, **spec.get("overrides", {})})
    config = RunConfig(train=train)
    train_images = load_split("mnist", "train", DATA_DIR).images
    test_x = fixed_binarization(load_split("mnist", "test", DATA_DIR).images, "none", train.seed)
    model = build_model(config)
    trainer = Trainer(model, train_images, train, "none")
    epoch_s, test_losses, elapsed, reached = [], [], 0.0, None
    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        trainer.train_epoch()
        epoch_s.append(time.perf_counter() - start)
        if spec.get("skip_eval"):
            continue
        test = evaluate_elbo(model, test_x, train.seed)["test_loss"]
        elapsed += time.perf_counter() - start
        test_losses.append(round(test, 3))
        if reached is None and test <= TARGET:
            reached = {"epoch": epoch, "seconds": round(elapsed, 2)}
    return {"epoch_s": [round(s, 3) for s in epoch_s], "test_loss": test_losses, "compiled": trainer.compiled,
            "precision": str(trainer.amp_dtype or torch.float32).replace("torch.", ""),
            "reached_target": reached, "total_s": round(elapsed, 2),
            "threads": torch.get_num_threads()}


def run_worker(spec: dict) -> dict:
    return run_json([sys.executable, __file__, "--worker", json.dumps(spec)])


def run_seed(epochs: int) -> dict:
    return run_json([sys.executable, str(SEED_SCRIPT), "--epochs", str(epochs), "--batch-size", "128"],
                    env={"VAE_DATA_DIR": str(DATA_DIR / "mnist")})


def bf16_gflops() -> float | None:
    """The bf16 matmul rate on the model's shapes, where the CPU multiplies bf16 natively."""
    import torch

    from vaekit.acceleration import has_native_bf16

    if not has_native_bf16(torch.device("cpu")):
        return None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return matmul_gflops(step_shapes(), seconds=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved speed rounds (default 4)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the time-to-quality runs (default 3)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    gflops, gflops_bf16 = matmul_gflops(step_shapes(), seconds=2.0), bf16_gflops()
    result = {"benchmark": "train_speed", "machine": machine(), "matmul_gflops": round(gflops, 1),
              "epoch_gflop": round(epoch_gflop(), 1), "floor_s_per_epoch": round(epoch_gflop() / gflops, 3)}
    if gflops_bf16:
        result.update(matmul_gflops_bf16=round(gflops_bf16, 1),
                      floor_s_per_epoch_bf16=round(epoch_gflop() / gflops_bf16, 3))

    # 2. interleaved speed rounds: the second epoch of each vaekit worker (the first warms up)
    rounds = []
    for _ in range(args.rounds):
        seed = run_seed(1)
        default = run_worker({"recipe": "seed", "overrides": {"epochs": 2}, "skip_eval": True})
        fp32 = run_worker({"recipe": "seed", "overrides": {"epochs": 2, "precision": "fp32"}, "skip_eval": True})
        rounds.append({"seed_s": seed["s_per_epoch"], "vaekit_s": default["epoch_s"][1],
                       "vaekit_fp32_s": fp32["epoch_s"][1], "precision": default["precision"]})
    seed_s = median([r["seed_s"] for r in rounds])
    result.update({
        "seed_s_per_epoch": round(seed_s, 3),
        "vaekit_s_per_epoch": round(median([r["vaekit_s"] for r in rounds]), 3),
        "vaekit_precision": rounds[0]["precision"],
        "ratio": round(median([r["seed_s"] / r["vaekit_s"] for r in rounds]), 2),
        "vaekit_fp32_s_per_epoch": round(median([r["vaekit_fp32_s"] for r in rounds]), 3),
        "ratio_fp32": round(median([r["seed_s"] / r["vaekit_fp32_s"] for r in rounds]), 2),
        "rounds": rounds,
    })

    # 3. quality after 10 epochs of the seed's settings; the seed's run also times its 10 epochs
    seed10 = run_seed(10)
    vaekit10 = run_worker({"recipe": "seed", "overrides": {"epochs": 10}})
    fp32_10 = run_worker({"recipe": "seed", "overrides": {"epochs": 10, "precision": "fp32"}})
    compiled10 = run_worker({"recipe": "seed", "overrides": {"epochs": 10, "compile": "on"}})
    result.update({
        "seed_test_loss": seed10["test_loss"], "vaekit_test_loss": vaekit10["test_loss"][-1],
        "vaekit_fp32_test_loss": fp32_10["test_loss"][-1],
        "vaekit_10_epoch_s": vaekit10["epoch_s"],
        "compiled": {"s_per_epoch": round(median(compiled10["epoch_s"][1:]), 3),
                     "first_epoch_s": compiled10["epoch_s"][0], "test_loss": compiled10["test_loss"][-1]},
        "peak_rss_mb": {"seed": seed10["peak_rss_mb"], "vaekit": vaekit10["peak_rss_mb"],
                        "vaekit_compiled": compiled10["peak_rss_mb"]},
    })

    # 4. time to quality with vaekit's defaults
    fast = [run_worker({"recipe": "vaekit", "overrides": {"seed": s}}) for s in range(1, args.seeds + 1)]
    reached = [r["reached_target"]["seconds"] if r["reached_target"] else None for r in fast]
    result["time_to_quality"] = {
        "target_test_loss": TARGET,
        "seed_s": round(seed10["s_per_epoch"] * 10, 1),
        "seed_final_test_loss": seed10["test_loss"],
        "vaekit_s": reached,
        "vaekit_median_s": median([r for r in reached if r is not None]) if any(reached) else None,
        "vaekit_test_loss_per_epoch": [r["test_loss"] for r in fast],
        "vaekit_recipe": "defaults: 4 epochs, batch 128, Adam lr 6e-3 beta2 0.98, 5% warm-up, cosine",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
