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

Under torchrun (`torchrun --nproc_per_node N -m vaekit eval ...`) the processes share the NLL's blocks
and gather them in order: the same numbers as one process, since each block is seeded by its first image.

Bits per dimension: the NLL (from --iw-samples K; without it, the negative ELBO, an upper bound) over
C x H x W values, in bits: nats / (C H W ln 2), printed with what it is a number of (--json:
bits_per_dim, bits_per_dim_elbo from the negative ELBO, and bits_per_dim_basis):
  8-bit    discretized-logistic(-mixture) on 8-bit images (not binarized): the probability of the
           8-bit values, the measure published for natural images (PixelCNN++, NVAE, VDVAE).
  binary   bernoulli, or a discretized logistic (its mass on 0 and 255), on binarized images
           (--binarize) or images that are all 0 and 1: the NLL of binary data, comparable only with
           other binarized-data numbers (e.g. the published binarized-MNIST NLLs), never with 8-bit ones.
  density  gaussian, gaussian-shared or continuous-bernoulli on 8-bit images: a density's NLL plus
           log2(255) = 7.994 bits per value (the bin of width 1/255 around each value k/255; the
           literature's +8 is for data scaled by 1/256). That is the 8-bit bits/dim only of a model
           trained and evaluated on dequantized data (uniform noise in each bin); vaekit does neither,
           so this number is no bound on the 8-bit code length: compare it only with other densities.
  none     no bits/dim: bernoulli on grey pixels (a cross-entropy, not a likelihood), a density on
           binary images, or images off the 8-bit grid (--standardize).

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
                        "active_units, kl_per_dim (kl_per_layer for a hierarchy), bits_per_dim_basis, bits_per_dim "
                        "and bits_per_dim_elbo (unless the basis is none), and nll, iw_samples, precision; a "
                        "non-finite value is null and named in non_finite")
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
    from ..distributed import world
    from ..evaluate import bits_per_dim, bits_per_dim_basis, evaluate_elbo, posterior_diagnostics

    loaded = open_run(args)
    x = streamed_test_inputs(loaded, args.data_dir)
    if x is None:
        x = test_inputs(loaded, args)
    test_images = len(x)
    if args.images is not None:
        if args.images > test_images:
            raise ConfigError(f"--images {args.images} is more than the {test_images:,} test images")
        x = x[:args.images]
    result = evaluate_elbo(loaded.model, x, loaded.config.train.seed)
    diagnostics = posterior_diagnostics(loaded.model, x)
    result.update(active_units=diagnostics["active_units"], kl_per_dim=diagnostics["kl_per_dim"],
                  **{key: diagnostics[key] for key in ("kl_per_layer",) if key in diagnostics})
    if args.images is not None:
        result.update(images=len(x))
    if args.iw_samples:
        nll = resumable_nll(loaded, x, args.iw_samples, args.precision, test_images)
        result.update(nll=nll.mean().item(), iw_samples=args.iw_samples, precision=args.precision)
    if not world().is_main():
        return 0  # under torchrun: the main process prints
    likelihood = loaded.model.likelihood
    basis = bits_per_dim_basis(likelihood.binary, likelihood.discrete_8bit, x)
    result.update(bits_per_dim_basis=basis)
    if basis != "none":
        dims = math.prod(x.shape[1:])
        result.update(bits_per_dim=bits_per_dim(result.get("nll", result["test_loss"]), dims, basis),
                      bits_per_dim_elbo=bits_per_dim(result["test_loss"], dims, basis))
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
    if result.get("kl_per_layer"):
        print("KL per layer     " + "  ".join(f"{name}:{kl:.2f}" for name, kl in result["kl_per_layer"].items()
                                               if kl is not None) + "   (top first, at the posterior means)")
    if result["kl_per_dim"] is not None:
        ranked = sorted(enumerate(result["kl_per_dim"]), key=lambda item: -item[1])
        print("KL per dimension " + "  ".join(f"z{i}:{kl:.2f}" for i, kl in ranked))
    if result.get("kl_per_layer"):
        print("KL per layer     " + "  ".join(f"{name}:{kl:.2f}" for name, kl in result["kl_per_layer"].items()
                                              if kl is not None))
    if args.iw_samples:
        print(f"NLL              {result['nll']:9.3f} nats per image ({args.iw_samples} importance samples)")
    if basis != "none":
        print(f"bits/dim         {result['bits_per_dim']:9.4f}   ({basis}; from the "
              f"{'NLL' if args.iw_samples else 'negative ELBO'}; see vaekit eval --help)")
    return 0


def streamed_test_inputs(loaded, data_dir):
    """The run's test inputs read from its dataset cache by slices (`data.streamed.PreparedInputs`) when it was
    trained streamed, or None: evaluation then needs the memory of a slice, not of the held-out split. (Under
    dynamic binarization the split's one draw is made over all of it, in memory: None.)"""
    from ..data.streamed import held_out_inputs, streamed_held_out

    data = loaded.config.data
    if data.binarize == "dynamic":
        return None
    held_out = streamed_held_out(data.name, data.validation, loaded.config.train.seed, data_dir, data.standardize)
    if held_out is None or held_out.shape != loaded.config.model.input_shape:
        return None
    return held_out_inputs(held_out, data.binarize, loaded.config.train.seed, next(loaded.model.parameters()).device)


def resumable_nll(loaded, x: torch.Tensor, k: int, precision: str, test_images: int) -> torch.Tensor:
    """Per-image NLLs of x, the first of the run's `test_images` test images, by `evaluate.recorded_nll`, with
    each finished block recorded in the run directory (under the whole test set's size: a block's
    estimate does not depend on how many images follow it)."""
    from tqdm import tqdm

    from ..distributed import world
    from ..evaluate import NLL_BLOCK, recorded_nll
    from ..models import model_fingerprint
    from ..pretrained import scratch_file
    from ..runs import NLL_FILE

    key = {"k": k, "precision": precision, "seed": loaded.config.train.seed, "images": test_images,
           "data": dataclasses.asdict(loaded.config.data), "weights": model_fingerprint(loaded.model)}
    share = world()  # under torchrun, each process estimates its share of the blocks, and records them
    mine = share.blocks(len(x), NLL_BLOCK)
    starts = range(mine.start, mine.stop, NLL_BLOCK)
    main = share.is_main()
    record = scratch_file(loaded.path, NLL_FILE)  # a pretrained run's in the user's cache
    nll, _ = recorded_nll(loaded.model, x, k, loaded.config.train.seed, record, key, precision,
                          progress=sys.stderr.isatty() and main, starts=starts,
                          log=lambda line: main and tqdm.write(f"vaekit: {line}", file=sys.stderr))  # above the bar
    return share.gather(nll.to(x.device)).cpu() if share.distributed else nll  # NCCL gathers on the GPU


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
