"""Importance-sampled log-likelihood: time and peak memory of K=5000 on the 10,000 MNIST test images.

    python benchmarks/eval_speed.py --run runs/seed          # a trained run (vaekit train --out runs/seed)
    python benchmarks/eval_speed.py                           # trains the default recipe first (about 6 s)

Runs `vaekit eval RUN --iw-samples K --json` as a subprocess, in fp32 and with the decoder in bf16
(where the CPU has native bf16; then it is vaekit's default, --precision auto), and reports each
one's wall time (start-up, data loading and compilation included), the NLL it printed and its peak
resident memory; the top-level numbers are the default precision's. Also times the decoder's fp32
matmuls alone over the same number of samples: the floor for fp32. The run's record of finished
blocks (RUN/nll-blocks.jsonl) is deleted before each evaluation, so each one is timed from scratch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_DIR, REPO, machine, matmul_gflops, run_measured

from vaekit.runs import NLL_FILE

N_TEST = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run directory to evaluate (default: train one first)")
    parser.add_argument("-k", type=int, default=5000, help="importance samples per image (default 5000)")
    args = parser.parse_args()
    vaekit = [sys.executable, "-m", "vaekit"]
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "run"
        subprocess.run([*vaekit, "train", "--out", str(run), "--data-dir", str(DATA_DIR)], check=True,
                       capture_output=True, cwd=REPO)

    import torch

    from vaekit.acceleration import has_native_bf16

    precisions = ["fp32"] + (["bf16"] if has_native_bf16(torch.device("cpu")) else [])
    timings = {}
    for precision in precisions:
        (run / NLL_FILE).unlink(missing_ok=True)  # eval would read back blocks a previous run recorded
        start = time.perf_counter()
        code, out, err, peak_mb = run_measured([*vaekit, "eval", str(run), "--iw-samples", str(args.k), "--json",
                                                "--precision", precision, "--data-dir", str(DATA_DIR)], cwd=REPO)
        seconds = time.perf_counter() - start
        if code != 0:
            sys.exit(f"vaekit eval failed:\n{err[-2000:]}")
        evaluation = json.loads(out.strip().splitlines()[-1])
        timings[precision] = {"seconds": round(seconds, 1), "nll": round(evaluation["nll"], 4),
                              "peak_rss_mb": round(peak_mb, 1)}

    config = json.loads((run / "config.json").read_text())["model"]
    hidden, latent = list(reversed(config["hidden_dims"])), config["latent_dim"]
    sizes = [latent, *hidden, 784]
    flop_per_sample = sum(2 * i * o for i, o in zip(sizes[:-1], sizes[1:]))
    rows = 2500  # the shape of one decoding chunk on CPU
    gflops = matmul_gflops([(rows, i, o) for i, o in zip(sizes[:-1], sizes[1:])], seconds=2.0)
    floor = flop_per_sample * args.k * N_TEST / (gflops * 1e9)
    print(json.dumps({
        "benchmark": "eval_speed", "machine": machine(), "k": args.k, "images": N_TEST,
        "default_precision": precisions[-1], **timings[precisions[-1]], "by_precision": timings,
        "test_loss": round(evaluation["test_loss"], 3),
        "decoder_gflop": round(flop_per_sample * args.k * N_TEST / 1e9, 1), "matmul_gflops": round(gflops, 1),
        "matmul_floor_s": round(floor, 1), "run": str(run),
    }))


if __name__ == "__main__":
    main()
