"""Distributed training on one CPU machine: 1 process x 2 threads against 2 processes x 1 thread, and DDP's
overhead per step. Prints one JSON object; progress on stderr.

    python benchmarks/ddp.py                 # about 2-3 minutes on a 2-core machine
    python benchmarks/ddp.py --epochs 2 --rounds 1

Each configuration trains the seed model (784-400-20 MLP, MNIST, global batch 128) with `vaekit train`
(vaekit's recipe, default precision), and its time is the median of the epochs' own "seconds" in metrics.jsonl
(training only: no start-up, no evaluation), first epoch left out. Configurations are interleaved round by round,
as the host's speed drifts. DDP's overhead per step is a step of the 2-process job (each process: 64 images,
1 thread, then the gradients' all-reduce over gloo) minus a step of one process training batch 64 on 1 thread
(the same work without the exchange). The collectives a DDP step makes are also timed alone (2 processes,
gloo: an all-reduce of the seed model's gradients, and vaekit's all-reduce of the finiteness flag).

    python benchmarks/ddp.py --collectives-only     # those alone, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine

CONFIGS = {  # name: extra `vaekit train` arguments
    "1 process x 2 threads": ["--threads", "2"],
    "2 processes x 1 thread": ["--threads", "1", "--nproc", "2"],
    "1 process x 1 thread": ["--threads", "1"],
    "1 process x 1 thread, batch 64": ["--threads", "1", "--batch-size", "64"],
}
TRAIN_IMAGES = 60_000


def train(extra: list[str], epochs: int, folder: Path) -> list[float]:
    """The epochs' training seconds of one `vaekit train` run."""
    out = folder / f"run-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("OMP_NUM_THREADS", None)  # --threads decides
    result = subprocess.run([sys.executable, "-m", "vaekit", "train", "--epochs", str(epochs), "--out", str(out),
                             *extra], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"vaekit train {' '.join(extra)} failed: {result.stderr.strip()[-500:]}")
    return [json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def collectives_worker(out: str, repeats: int) -> None:
    """One process of a 2-process torchrun job: the time of the collectives a DDP step makes on gloo, alone."""
    import torch

    from vaekit.config import ModelConfig
    from vaekit.distributed import joined
    from vaekit.models import parameter_count

    with joined(torch.device("cpu")) as world:
        gradients = torch.zeros(parameter_count(ModelConfig()))  # the seed model's, in one flat tensor
        flag = torch.ones((), dtype=torch.bool)
        timings = {}
        for name, step in (("gradients_all_reduce_ms", lambda: torch.distributed.all_reduce(gradients)),
                           ("finite_flag_all_reduce_ms", lambda: world.all(flag))):
            for _ in range(10):
                step()
            world.barrier()
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            timings[name] = round(1000 * (time.perf_counter() - start) / repeats, 3)
        if world.is_main():
            Path(out).write_text(json.dumps({**timings, "parameters": gradients.numel()}))


def collectives(repeats: int = 200) -> dict:
    """The 2-process collectives' times (collectives_worker), launched by torchrun, one thread each."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "collectives.json"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, "--worker", str(out), "--repeats", str(repeats)], env=env, check=True,
                       capture_output=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--collectives-only", action="store_true", help="time the collectives alone, no training")
    args = parser.parse_args()
    if args.worker:
        collectives_worker(args.worker, args.repeats)
        return
    if args.collectives_only:
        print(json.dumps({"machine": machine(), "load_average": [round(v, 2) for v in os.getloadavg()],
                          "collectives": collectives(args.repeats)}, indent=2))
        return
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, extra in CONFIGS.items():
                epochs = train(extra, args.epochs, Path(folder))
                seconds[name] += epochs[1:]
                print(f"round {round_ + 1}: {name}: {', '.join(f'{s:.2f}' for s in epochs)} s/epoch",
                      file=sys.stderr)
    result = {}
    for name in CONFIGS:
        per_epoch = statistics.median(seconds[name])
        result[name] = {"seconds_per_epoch": round(per_epoch, 3), "images_per_second": round(TRAIN_IMAGES / per_epoch),
                        "epochs_measured": seconds[name]}
    steps_128 = -(-TRAIN_IMAGES // 128)
    steps_64 = -(-TRAIN_IMAGES // 64)
    ddp_step = result["2 processes x 1 thread"]["seconds_per_epoch"] / steps_128
    local_step = result["1 process x 1 thread, batch 64"]["seconds_per_epoch"] / steps_64
    print(json.dumps({
        "machine": machine(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "epochs": args.epochs, "rounds": args.rounds,
        "configurations": result,
        "speedup_2x1_over_1x2": round(result["1 process x 2 threads"]["seconds_per_epoch"]
                                      / result["2 processes x 1 thread"]["seconds_per_epoch"], 3),
        "ddp_step_ms": round(1000 * ddp_step, 3),
        "same_work_without_ddp_step_ms": round(1000 * local_step, 3),
        "ddp_overhead_per_step_ms": round(1000 * (ddp_step - local_step), 3),
        "collectives": collectives(),
    }, indent=2))


if __name__ == "__main__":
    main()
