"""Measuring a trained model on held-out images: per-sample nats, averaged at the end."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from .acceleration import accumulator_dtype, autocast_dtype, compile_with_fallback
from .config import MAX_IW_SAMPLES  # memory is bounded for any k, time is not: 1,000,000 decodes per image
from .distributed import World
from .models import LatentVariableModel
from .models.architectures import decoder_channels
from .rng import derive_seed, make_generator
from .runs import append_nll_block, read_nll_blocks

EVAL_BATCH = 1000
IW_ROWS = {"cpu": 2048, "cuda": 65536}  # decoded samples per chunk: bounds the memory of --iw-samples
# ...and of large images, at most this many decoded values (likelihood parameters) per chunk, by device: a chunk's
# parameters and a convolutional decoder's full-size activations grow with them (a resnet at 64x64x3 with a
# 10-logistic mixture, 286,720 values per image, took 6.7 MB per image in evaluate_elbo: 6.7 GB at EVAL_BATCH).
# MNIST's models (784 to 23,520 values per image) keep EVAL_BATCH and IW_ROWS.
DECODED_VALUES = {"cpu": 1 << 26, "cuda": 1 << 31}
# Above this many noise values per chunk of images, the noise is drawn chunk by chunk rather than all at once
# (below it, all at once, as vaekit always has: the same numbers for the same seed).
IW_NOISE_AT_ONCE = 1 << 24
# Below this many decoded samples, compiling costs more than it saves
# (1M on a 2-core CPU: 10.0 s compiled, 7.9 s eager).
COMPILE_MIN_SAMPLES = 2_000_000


def chunk_rows(model: LatentVariableModel, most: int, device: torch.device) -> int:
    """Decoded samples per chunk: `most`, or fewer where the model's images are large (DECODED_VALUES)."""
    c, h, w = model.config.input_shape
    values = decoder_channels(model.config) * h * w
    return max(1, min(most, DECODED_VALUES.get(device.type, DECODED_VALUES["cpu"]) // values))


@torch.no_grad()
def evaluate_elbo(model: LatentVariableModel, x: torch.Tensor, seed: int,
                  batch_size: int | None = None) -> dict[str, float]:
    """Mean negative ELBO and its two terms over inputs x (N, C, H, W), per sample in nats.

    One posterior sample per image from a generator seeded by `seed`, so the numbers repeat exactly.
    Keys: test_loss, reconstruction, kl. `batch_size`: images per pass (default EVAL_BATCH, fewer for large images).
    """
    model.require("eval")
    batch_size = batch_size or chunk_rows(model, EVAL_BATCH, x.device)
    was_training = model.training
    model.eval()
    noise = make_generator(derive_seed(seed, "eval-noise"), x.device)
    frozen = model.freeze()
    wide = accumulator_dtype(x.device)
    sums = torch.zeros(3, dtype=wide, device=x.device)
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        eps = torch.randn(len(batch), model.latent_dim, generator=noise, device=x.device)
        terms = model.elbo(batch, eps, frozen)
        sums += torch.stack([t.sum(dtype=wide) for t in terms])
    model.train(was_training)
    loss, reconstruction, kl = (sums / len(x)).tolist()
    return {"test_loss": loss, "reconstruction": reconstruction, "kl": kl}


# What -log p(x) / (C H W ln 2) means, by the likelihood and the test images (`bits_per_dim_basis`)
BITS_PER_DIM_BASES = {
    "8-bit": "the probability of the 8-bit pixel values (a discretized likelihood): comparable with published "
             "8-bit bits/dim (PixelCNN++, NVAE, VDVAE)",
    "binary": "the probability of binary pixels: comparable only with other numbers on binarized data, never "
              "with 8-bit bits/dim",
    "density": "a density's NLL plus log2(255) bits per value (the bin of width 1/255 around each value k/255): "
               "the 8-bit bits/dim only of a model trained and evaluated on dequantized data (uniform noise in "
               "each bin), which vaekit does not do, so it is no bound on the 8-bit code length and compares "
               "only with other densities' numbers made the same way",
    "none": "no bits/dim: the likelihood's number is no probability of these images (a Bernoulli's "
            "cross-entropy on grey pixels, a density on binary ones, or images off the 8-bit grid, e.g. "
            "standardized)",
}
DENSITY_BITS_PER_VALUE = math.log2(255)  # 7.994: vaekit holds the value k as k / 255, so its bins are 1/255 wide


def bits_per_dim_basis(binary: bool, discrete_8bit: bool, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> str:
    """Which of BITS_PER_DIM_BASES a likelihood's NLL on the images x has: `binary` and `discrete_8bit` are
    the likelihood's (vaekit.registry.LikelihoodSpec); the images are read for what they are (binary, on the
    8-bit grid k / 255, or neither), not for what the config says. x is read by slices of `batch_size`."""
    binary_data = on_grid = True
    for start in range(0, len(x), batch_size):
        part = x[start:start + batch_size]
        binary_data = binary_data and bool(((part == 0) | (part == 1)).all())
        scaled = part.double() * 255
        on_grid = (on_grid and bool(((part >= 0) & (part <= 1)).all())
                   and bool(((scaled - scaled.round()).abs() < 1e-3).all()))
    if binary_data:
        return "binary" if binary or discrete_8bit else "none"
    if not on_grid or binary:
        return "none"
    return "8-bit" if discrete_8bit else "density"


def bits_per_dim(nats: float, dims: int, basis: str) -> float:
    """Nats per image as bits per dimension (value) on `basis`: nats / (dims ln 2), plus log2(255) for a density
    (see BITS_PER_DIM_BASES); `basis` "none" has no bits/dim (ValueError)."""
    if basis not in BITS_PER_DIM_BASES or basis == "none":
        raise ValueError(f"no bits/dim on basis {basis!r}")
    return nats / (dims * math.log(2)) + (DENSITY_BITS_PER_VALUE if basis == "density" else 0.0)


ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, Sec. 5.2: a unit is active if Cov_x(E_q[z_j]) > 0.01


@torch.no_grad()
def posterior_diagnostics(model: LatentVariableModel, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> dict:
    """How much the latent code is used, on inputs x (N, C, H, W).

    active_units: dimensions whose posterior mean varies across inputs with variance > 0.01 (Burda et al.
    2016); unit_variance: that variance per dimension; kl_per_dim: the mean KL(q || N(0, 1)) of each
    dimension in nats (standard normal prior only, else None). A dimension with near-zero KL and
    variance is collapsed: the decoder ignores it.
    """
    model.require("eval")
    was_training = model.training
    model.eval()
    wide = accumulator_dtype(x.device)
    means, kl_sum = [], torch.zeros(model.latent_dim, dtype=wide, device=x.device)
    for start in range(0, len(x), batch_size):
        usage = model.usage(x[start:start + batch_size])
        means.append(usage.means)
        closed_form = usage.kl_per_dim is not None
        if closed_form:
            kl_sum += usage.kl_per_dim.sum(0, dtype=wide)
    model.train(was_training)
    means = torch.cat(means).to(wide)
    variance = means.var(0) if len(means) > 1 else torch.zeros_like(means[0])  # one image: no spread
    return {
        "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum()),
        "unit_variance": variance.tolist(),
        "kl_per_dim": (kl_sum / len(x)).tolist() if closed_form else None,
        **({"kl_per_layer": {name: (kl_sum[part].sum() / len(x)).item() if closed_form else None
                             for name, part in model.layers}} if len(model.layers) > 1 else {}),
    }


def dims_by_usage(diagnostics: dict) -> list[int]:
    """Latent dimensions of `posterior_diagnostics` from the most used to the least: by KL, or by the
    variance of the posterior means where the prior gives no closed-form KL."""
    score = diagnostics["kl_per_dim"] or diagnostics["unit_variance"]
    return sorted(range(len(score)), key=lambda d: -score[d])


def is_collapsed(active_units: int, latent_dim: int) -> bool:
    """Whether the posterior counts as collapsed: fewer than half the latent dimensions active."""
    return active_units * 2 < latent_dim


def collapse_streak(metrics: list[dict], latent_dim: int, after_epoch: int = 0) -> int:
    """How many epochs in a row, up to the last one logged, were collapsed (`is_collapsed`), counting
    only epochs after `after_epoch` (the KL warm-up, when collapse is expected)."""
    streak = 0
    for row in reversed(metrics):
        if row["epoch"] <= after_epoch or not is_collapsed(row["active_units"], latent_dim):
            break
        streak += 1
    return streak


def collapse_warning(diagnostics: dict, latent_dim: int, pixel_groups: int = 1) -> str | None:
    """A sentence saying the posterior is collapsing, if it is (`is_collapsed`)."""
    active = diagnostics["active_units"]
    if not is_collapsed(active, latent_dim):
        return None
    warning = (f"posterior collapse: only {active} of {latent_dim} latent dimensions are active (their posterior "
               "means barely vary across images), so the decoder ignores most of the code; try --kl-warmup 10, "
               "--free-bits 0.25 or a smaller --beta (see docs/posterior-collapse.md)")
    if pixel_groups > 1:
        warning += ("; with --pixel-groups some of this is expected: a decoder that sees neighbouring pixels needs "
                    "less from z, which lowers the NLL and the compressed size but leaves fewer dimensions to explore")
    return warning


def log_importance_weights(model: LatentVariableModel, x: torch.Tensor, context, eps: torch.Tensor,
                           amp_dtype: torch.dtype | None = None, frozen=None) -> torch.Tensor:
    """log p(x, z) - log q(z|x) for the samples eps (S, B, D) make: (S, B), by the model's `log_weights`
    (a function, so that torch.compile can wrap it)."""
    return model.log_weights(x, context, eps, amp_dtype, frozen)


NLL_BLOCK = 1000  # images per block of a resumable importance-sampled evaluation (`nll_blocks`)


def nll_blocks(model: LatentVariableModel, x: torch.Tensor, k: int, seed: int, done: dict | None = None,
               block: int = NLL_BLOCK, precision: str = "auto", progress: bool = False,
               starts: range | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, -log p(x[start:start + block])) for each block of images that `done` lacks, in order.

    `importance_weighted_nll` a block at a time, each block drawing its samples from its own stream,
    seeded by `seed` and its first image: a block's estimate does not depend on the blocks before it,
    so an evaluation that was stopped goes on where it stopped (`done` maps the finished blocks' starts
    to their per-image values; one too short, torn by a kill, is done again; one longer, from an
    evaluation of more images, serves by its first values, as the stream is drawn image by image).
    As valid an estimate as one call over all of x, not bit-identical to it. `progress` shows one bar
    on stderr over all of x, in images, naming the block, with the time left once a block has finished.
    `starts`: the blocks to estimate, by their first image (default all: a process of a distributed evaluation
    takes its share, `World.split` of the blocks).
    """
    done = done or {}
    starts = range(0, len(x), block) if starts is None else starts
    todo = [start for start in starts if len(done.get(start, ())) < len(x[start:start + block])]
    total = sum(len(x[start:start + block]) for start in starts)
    with tqdm(total=total, initial=total - sum(len(x[start:start + block]) for start in todo), unit="image",
              desc=f"NLL (K={k})", leave=False, disable=not progress, bar_format=NLL_BAR) as bar:
        timed = [0.0, 0]  # seconds and images of the blocks finished here

        def advance(n: int) -> None:
            bar.set_postfix_str(time_left(*timed, bar.total - bar.n - n), refresh=False)
            bar.update(n)

        for start in todo:
            images = x[start:start + block]
            bar.set_postfix_str(time_left(*timed, bar.total - bar.n), refresh=False)
            bar.set_description_str(f"NLL (K={k}), block {start // block + 1} of {len(starts)}")  # drawn now
            began = time.perf_counter()
            nll = importance_weighted_nll(model, images, k, derive_seed(seed, "nll-block", start),
                                          precision=precision, advance=advance)
            timed = [timed[0] + time.perf_counter() - began, timed[1] + len(images)]
            yield start, nll


# tqdm's own ETA extrapolates from the first chunks, slowed by compiling and warm-up (3:32:32 for a
# 12-minute job): the time left comes from finished blocks instead, in the postfix
NLL_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} images [{elapsed}{postfix}]"


def time_left(seconds: float, images: int, remaining: int) -> str:
    """The bar's estimate of the time left: `remaining` images at the rate of the `images` timed so far."""
    if not images:
        return "time left known after the first block"
    return f"about {tqdm.format_interval(round(seconds / images * remaining))} left"


def gather_blocks(done: dict, n: int, block: int = NLL_BLOCK, starts: range | None = None) -> torch.Tensor:
    """The per-image values of images 0..n-1 from `nll_blocks`' finished blocks (all of them needed); or of the
    blocks `starts` only, in order."""
    starts = range(0, n, block) if starts is None else starts
    return torch.tensor([value for start in starts for value in done[start][:min(block, n - start)]],
                        dtype=torch.float64)


@torch.no_grad()
def importance_weighted_nll(model: LatentVariableModel, x: torch.Tensor, k: int, seed: int, rows: int | None = None,
                            compile: bool | None = None, precision: str = "auto",
                            progress: bool = False, advance: Callable[[int], object] | None = None,
                            world: World | None = None) -> torch.Tensor:
    """-log p(x) per image (N,), estimated by the importance-weighted bound with k posterior samples.

    log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2016, Eq. 8): the
    IWAE bound, which tightens towards log p(x) as k grows; k = 1 is the ELBO. Samples are decoded in
    equal chunks of about `rows` (image, sample) pairs, so memory stays bounded for any k. Each image
    draws its k noise vectors in turn from one seeded stream, so its estimate depends on the seed and
    its position alone, not on how the work is chunked. `compile` (default: for large jobs) fuses each
    chunk's elementwise work with torch.compile. `precision` "auto" (bf16 where the hardware has it
    natively) or "bf16" runs the decoder's matmuls in bf16 with fp32 accumulation: 1.6x faster on a
    Zen 4 CPU, moving the mean NLL of MNIST's test set by 3e-4 nats (benchmarks/eval_speed.py
    measures both); "fp32" keeps everything in fp32. `progress` shows a bar in images on stderr;
    `advance(n)` is told of each n images done (an outer bar's update). `world` (vaekit.distributed): the
    processes share the chunks out whole; each draws, and discards, the noise of the chunks before its own, so
    the gathered estimates are the single process's, bit for bit.
    """
    model.require("nll")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > MAX_IW_SAMPLES:
        raise ValueError(f"k must be at most {MAX_IW_SAMPLES:,}, got {k}")
    was_training = model.training
    model.eval()
    rows = rows or chunk_rows(model, IW_ROWS.get(x.device.type, 4096), x.device)
    batch = max(1, min(len(x), rows // k))  # images per chunk: several when k is small
    n_chunks = math.ceil(k / max(1, rows // batch))
    samples = math.ceil(k / n_chunks)  # posterior samples per chunk, as equal as k allows
    if compile is None:
        compile = len(x) * k >= COMPILE_MIN_SAMPLES
    log_weights = compile_with_fallback(log_importance_weights) if compile else log_importance_weights
    amp_dtype = autocast_dtype(precision, x.device)
    frozen = model.freeze()
    noise = make_generator(derive_seed(seed, "iw-noise"), x.device)
    wide = accumulator_dtype(x.device)
    out = torch.empty(len(x), dtype=wide, device=x.device)
    world = world or World()
    mine = world.blocks(len(x), batch)
    with tqdm(total=mine.stop - mine.start, desc=f"log-likelihood (K={k})", unit="image", leave=False,
              disable=not progress) as bar:
        for start in range(0, len(x), batch):
            images = x[start:start + batch]
            if not mine.start <= start < mine.stop:  # another process's chunk: its noise only, to go on the stream
                skip_noise(noise, k, len(images), samples, model.latent_dim, x.device)
                continue
            context = model.iw_context(images)
            if k * len(images) * model.latent_dim <= IW_NOISE_AT_ONCE:
                eps = torch.stack([torch.randn(k, model.latent_dim, generator=noise, device=x.device)
                                   for _ in images], dim=1)
                log_w = torch.cat([log_weights(model, images, context, eps[first:first + samples], amp_dtype, frozen)
                                   for first in range(0, k, samples)]).to(wide)
                out[start:start + batch] = math.log(k) - torch.logsumexp(log_w, dim=0)
            else:  # one image per chunk (k >= rows): its noise drawn a chunk at a time, its weights reduced as they
                # come
                total = torch.full((len(images),), -math.inf, dtype=wide, device=x.device)
                for first in range(0, k, samples):
                    eps = torch.randn(min(samples, k - first), len(images), model.latent_dim, generator=noise,
                                      device=x.device)
                    log_w = log_weights(model, images, context, eps, amp_dtype, frozen)
                    total = torch.logaddexp(total, torch.logsumexp(log_w.to(wide), dim=0))
                out[start:start + batch] = math.log(k) - total
            bar.update(len(images))
            if advance is not None:
                advance(len(images))
    model.train(was_training)
    return world.gather(out[mine]) if world.distributed else out


def skip_noise(noise: torch.Generator, k: int, n: int, samples: int, latent_dim: int, device) -> None:
    """Draw, as `importance_weighted_nll` draws them, the noise of a chunk of n images that another process
    estimates, so that this process's stream reaches its own chunks where the single process's does."""
    if k * n * latent_dim <= IW_NOISE_AT_ONCE:
        for _ in range(n):
            torch.randn(k, latent_dim, generator=noise, device=device)
    else:
        for first in range(0, k, samples):
            torch.randn(min(samples, k - first), n, latent_dim, generator=noise, device=device)


def recorded_nll(model: LatentVariableModel, x: torch.Tensor, k: int, seed: int, record: str | Path, key: dict,
                 precision: str = "auto", progress: bool = False, log=lambda line: None,
                 starts: range | None = None) -> tuple[torch.Tensor, float]:
    """Per-image NLLs of x by `nll_blocks`, and the seconds their blocks took, each finished
    block appended to `record` under `key` with its seconds: a stopped evaluation goes on from the first
    unfinished block, a finished one is read back. A record that cannot be written is warned of once
    and the estimate goes on. `log` gets a line for what was read back, each block, and any warning.
    `starts`: only these blocks (by their first image), whose images' values are returned, in order."""
    # x may be the first images of those the record was made for (eval --images): its blocks only
    rows = {start: row for start, row in read_nll_blocks(record, key).items() if start < len(x)}
    done = {start: row["nll"] for start, row in rows.items()}
    seconds = {start: float(row.get("seconds", 0.0)) for start, row in rows.items()}
    blocks = -(-len(x) // NLL_BLOCK)
    ready = sum(len(values) >= min(NLL_BLOCK, len(x) - start) for start, values in done.items())
    if ready:
        log(f"{ready} of {blocks} blocks of {NLL_BLOCK} images already estimated ({record})"
            + ("; going on" if ready < blocks else ""))
    writable, began = True, time.perf_counter()
    for start, nll in nll_blocks(model, x, k, seed, done, precision=precision, progress=progress, starts=starts):
        done[start], seconds[start] = nll.tolist(), round(time.perf_counter() - began, 1)
        if writable:
            try:
                append_nll_block(record, {**key, "seconds": seconds[start]}, start, done[start])
            except OSError as e:
                writable = False
                log(f"warning: cannot record finished blocks in {record} ({e.strerror}); a stopped evaluation "
                    "will start over")
        log(f"NLL of images {start}-{start + len(nll) - 1}: {nll.mean():.3f} ({seconds[start]} s)")
        began = time.perf_counter()
    starts = range(0, len(x), NLL_BLOCK) if starts is None else starts
    return gather_blocks(done, len(x), starts=starts), sum(seconds[start] for start in starts)
