"""The beta-TCVAE estimator's cost per step: `mws_decomposition`'s blockwise autograd Function (a block of samples and
one dimension at a time, a hand-written backward; `plain=False`, vaekit's path above 2^17 pairs x dimensions)
against the same estimator through plain autograd on the whole (M, M, D) block of pairwise densities
(`plain=True`: vaekit's before, and rtqichen/beta-tcvae's form), side by side in one process, forward and
backward, float32, one thread. Prints one JSON object.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/tc_estimator.py
    PYTHONPATH=src python benchmarks/tc_estimator.py --batches 256 2048 --latent 10 --repeats 5

Each timing is the median of `--repeats` after one warm-up; "ratio" is plain / vaekit (above 1: vaekit faster).
The largest difference of the two estimators' losses and gradients is reported too (they are the same function).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median  # noqa: E402

from vaekit.total_correlation import mws_decomposition  # noqa: E402


def step(plain, mu0, logvar0, eps, weights):
    """One forward and backward of a weighted sum of the three terms; (seconds, loss, gradients)."""
    start = time.perf_counter()
    mu, logvar = mu0.clone().requires_grad_(), logvar0.clone().requires_grad_()
    z = mu + torch.exp(0.5 * logvar) * eps
    loss = sum((w * term).sum() for w, term in zip(weights, mws_decomposition(z, mu, logvar, 737_280, plain)))
    grads = torch.autograd.grad(loss, (mu, logvar))
    return time.perf_counter() - start, loss.detach(), grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for m in args.batches:
        g = torch.Generator().manual_seed(m)
        mu, eps = torch.randn(m, args.latent, generator=g), torch.randn(m, args.latent, generator=g)
        logvar = torch.randn(m, args.latent, generator=g) - 2
        weights = torch.tensor([1.0, 6.0, 1.0])[:, None].expand(3, m)  # beta-TCVAE's: MI, 6 x TC, dimension-wise KL
        times = {}
        for name, plain in (("plain", True), ("vaekit", False)):
            step(plain, mu, logvar, eps, weights)
            times[name] = median([step(plain, mu, logvar, eps, weights)[0] for _ in range(args.repeats)])
        _, loss_a, grads_a = step(True, mu, logvar, eps, weights)
        _, loss_b, grads_b = step(False, mu, logvar, eps, weights)
        row = {"batch": m, "plain_ms": round(times["plain"] * 1e3, 2), "vaekit_ms": round(times["vaekit"] * 1e3, 2),
               "ratio": round(times["plain"] / times["vaekit"], 2),
               "loss_rel_diff": float((loss_a - loss_b).abs() / loss_a.abs()),
               "grad_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(grads_a, grads_b))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "tc_estimator", "machine": machine(), "latent": args.latent,
                      "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
