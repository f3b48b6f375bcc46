"""`vaekit eval`: a run's loss on the test set."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import TYPE_CHECKING

from ..config import PRECISIONS
from ..errors import ConfigError
from .args import (add_data_dir_argument, add_device_argument, add_run_argument, iw_count, open_run, positive_int,
                   test_inputs)

if TYPE_CHECKING:
    import torch

HELP = """\
Evaluate a run on its dataset's test split: the negative ELBO per image and its two terms,
reconstruction (-log p(x|z)) and KL, in nats. One posterior sample per image, seeded by the run's seed.

--iw-samples K adds the negative log-likelihood estimated with K importance samples per image (the
IWAE bound of Burda et al. 2016; K=5000 is the literature's standard), computed in chunks that keep
memory bounded. The decoder runs in bf16 where the hardware has it natively (--precision auto, the
default): on a 2-core Zen 4 CPU, K=5000 over the 10,000 test images then takes about 3 minutes
instead of 4.5-5, and the mean NLL moves by 3e-4 nats (BENCHMARKS.md); --precision fp32 gives the
all-fp32 number. The ELBO terms are always computed in fp32. The estimate is made 1,000 images at a
time, each finished block recorded in RUN/nll-blocks.jsonl: stopped (Ctrl-C, a lost session), the
same command goes on from the first unfinished block, and asked again, it answers at once. The record
names the weights, data, K and precision it holds, so a retrained run is measured afresh. On a
terminal, one bar follows the whole estimate in images and blocks, with the time left once the first
block has finished. --images N evaluates the first N test images only, for a quick estimate: its
blocks serve a later evaluation of all of them, and those of an earlier one serve it.

examples:
  vaekit eval runs/seed
  vaekit eval runs/seed --json
  vaekit eval runs/seed --iw-samples 5000 --json
  vaekit eval runs/seed --iw-samples 5000 --images 1000
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="test-set loss, reconstruction and KL", description=HELP)
    add_run_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: test_loss, reconstruction (the distortion), kl (the rate), "
                        "active_units, kl_per_dim (kl_per_layer for a hierarchy; nll, iw_samples, precision); "
                        "a non-finite value is null "
                        "and named in non_finite")
    p.add_argument("--iw-samples", type=iw_count, default=None, metavar="K",
                   help="also estimate the negative log-likelihood with K importance samples per image")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="of the decoder in --iw-samples: auto (bf16 where native, the default), fp32 or bf16")
    p.add_argument("--images", type=positive_int, default=None, metavar="N",
                   help="evaluate the first N test images only (a quick estimate; default all)")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import evaluate_elbo, posterior_diagnostics

    loaded = open_run(args)
    x = test_inputs(loaded, args)
    test_images = len(x)
    if args.images is not None:
        if args.images > test_images:
            raise ConfigError(f"--images {args.images} is more than the {test_images:,} test images")
        x = x[:args.images]
    result = evaluate_elbo(loaded.model, x, loaded.config.train.seed)
    diagnostics = posterior_diagnostics(loaded.model, x)
    result.update(active_units=diagnostics["active_units"], kl_per_dim=diagnostics["kl_per_dim"])
    if "kl_per_layer" in diagnostics:  # a hierarchical model's KL, layer by layer (top first)
        result.update(kl_per_layer=diagnostics["kl_per_layer"])
    if args.images is not None:
        result.update(images=len(x))
    if args.iw_samples:
        nll = resumable_nll(loaded, x, args.iw_samples, args.precision, test_images)
        result.update(nll=nll.mean().item(), iw_samples=args.iw_samples, precision=args.precision)
    if args.json:
        print(json.dumps(json_ready(result), allow_nan=False))
        return 0
    latent = loaded.model.latent_dim
    if args.images is not None:
        print(f"on the first {len(x):,} of the {test_images:,} test images")
    print(f"test loss        {result['test_loss']:9.3f} nats per image (negative ELBO)")
    print(f"  reconstruction {result['reconstruction']:9.3f}   (distortion)")
    print(f"  KL             {result['kl']:9.3f}   (rate)")
    print(f"active units     {result['active_units']:5d} of {latent}")
    if result["kl_per_dim"] is not None:
        ranked = sorted(enumerate(result["kl_per_dim"]), key=lambda item: -item[1])
        print("KL per dimension " + "  ".join(f"z{i}:{kl:.2f}" for i, kl in ranked))
    if result.get("kl_per_layer"):
        print("KL per layer     " + "  ".join(f"{name}:{kl:.2f}" for name, kl in result["kl_per_layer"].items()
                                              if kl is not None))
    if args.iw_samples:
        print(f"NLL              {result['nll']:9.3f} nats per image ({args.iw_samples} importance samples)")
    return 0


def resumable_nll(loaded, x: torch.Tensor, k: int, precision: str, test_images: int) -> torch.Tensor:
    """Per-image NLLs of x, the first of the run's `test_images` test images, by `evaluate.recorded_nll`, with
    each finished block recorded in the run directory (under the whole test set's size: a block's
    estimate does not depend on how many images follow it)."""
    from tqdm import tqdm

    from ..evaluate import recorded_nll
    from ..models import model_fingerprint
    from ..runs import NLL_FILE

    key = {"k": k, "precision": precision, "seed": loaded.config.train.seed, "images": test_images,
           "data": dataclasses.asdict(loaded.config.data), "weights": model_fingerprint(loaded.model)}
    nll, _ = recorded_nll(loaded.model, x, k, loaded.config.train.seed, loaded.path / NLL_FILE, key, precision,
                          progress=sys.stderr.isatty(),
                          log=lambda line: tqdm.write(f"vaekit: {line}", file=sys.stderr))  # above the bar
    return nll


def json_ready(result: dict) -> dict:
    """`result` with each non-finite number (a NaN or infinite loss) as null, and their names listed under
    "non_finite" (absent when all are finite): valid JSON, whose reader cannot mistake a null for a value."""
    bad = []

    def clean(name, value):
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
            return None
        if isinstance(value, list):
            return [clean(f"{name}[{i}]", v) for i, v in enumerate(value)]
        return value

    cleaned = {name: clean(name, value) for name, value in result.items()}
    return {**cleaned, "non_finite": bad} if bad else cleaned
