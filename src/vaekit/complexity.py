"""Input complexity: how many bits a generic lossless compressor needs for an image, and the likelihood
score corrected by it (Serrà et al. 2020, "Input complexity and out-of-distribution detection with
likelihood-based generative models", ICLR).

A likelihood model gives simple images (few strokes, flat backgrounds) a high likelihood whatever it was
trained on: most of an image's likelihood measures how complex it is, not how well it fits the training
data. Serrà et al. subtract a compressor's length from the negative log-likelihood,

    S(x) = -log2 p(x) - L(x)        (their eq. 2; both in bits)

where L(x) is the length of x under a generic compressor (PNG here, as their best). The compressor is
a model of "any image"; S is the log-ratio of the two, and large where the model explains the image
worse than a generic compressor does. A continuous density over [0, 1] pixels differs from a discrete
one over 8-bit values by a constant per image size (D log2 255), which changes no ranking.

The exchange of one bit for one bit holds only for a likelihood of the compressor's 8-bit pixels. A
Bernoulli likelihood of gray pixels (vaekit's default) or a density of standardized ones prices a bit of
complexity at far fewer nats (0.05-0.08 on MNIST and Fashion-MNIST), and S then ranks uniform noise, which
no compressor shortens, as the most normal of images. `fit_rate` measures the exchange rate on normal
images instead, and `complexity_scores` subtracts complexity at that rate.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image

LN2 = math.log(2)
STREAMED_SLICE = 4096  # images of streamed inputs encoded at once


def png_bits(x: torch.Tensor) -> torch.Tensor:
    """The length in bits of each image of model inputs x (N, C, H, W) in [0, 1] as a PNG file (N,) float64.

    Pixels are rounded to 8 bits (x * 255); one channel is a grayscale PNG, three an RGB one, any other
    count is compressed as the channels stacked vertically in one grayscale image. zlib level 9, the
    whole file (its fixed 60-odd bytes of headers included: the same for every image of a size). About 0.55 ms
    an image of 28x28 on one busy CPU thread, many times the ELBO's cost; torch's threads encode in parallel.
    """
    if not isinstance(x, torch.Tensor):  # inputs streamed from a dataset cache (data.streamed): a slice at a time
        return torch.cat([png_bits(x[i:i + STREAMED_SLICE]) for i in range(0, len(x), STREAMED_SLICE)])
    if x.ndim != 4:
        raise ValueError(f"expected model inputs (N, C, H, W), got shape {tuple(x.shape)}")
    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    n, channels, height, width = pixels.shape
    if channels == 3:
        arrays = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    else:
        arrays = pixels.reshape(n, channels * height, width).numpy()
    workers = min(torch.get_num_threads(), max(1, n // 256))  # zlib lets go of the GIL: torch's threads share it
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            lengths = list(pool.map(_png_length, arrays, chunksize=64))
    else:
        lengths = [_png_length(array) for array in arrays]
    return 8 * torch.tensor(lengths, dtype=torch.float64)


def _png_length(array) -> int:
    """Bytes of one image (H, W) or (H, W, 3) uint8 as a PNG file, zlib level 9."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=9)
    return buffer.getbuffer().nbytes


def complexity_scores(nll: torch.Tensor, bits: torch.Tensor, rate: float = LN2) -> torch.Tensor:
    """The negative log-likelihood `nll` (N,) in nats less `rate` nats per bit of the images' compressed
    lengths `bits` (N,) (`png_bits`), float64 on the CPU. Higher is more anomalous.

    With `rate` ln 2 (nats per bit), Serrà et al.'s S(x) in nats: exact when the likelihood is a discrete one
    over the compressor's 8-bit pixels, so that both lengths count the same thing. Other likelihoods (a
    Bernoulli on gray pixels, vaekit's default) price complexity at another rate: `fit_rate` measures it.
    """
    if nll.shape != bits.shape:
        raise ValueError(f"one length per score: got scores {tuple(nll.shape)} and lengths {tuple(bits.shape)}")
    if not math.isfinite(rate):
        raise ValueError(f"the rate must be a finite number of nats per bit, got {rate}")
    return nll.double().cpu() - rate * bits.double().cpu()


def fit_rate(nll: torch.Tensor, bits: torch.Tensor) -> float:
    """The nats of `nll` a bit of compressed length costs on normal images: the least-squares slope of their
    negative log-likelihoods (N,) on their lengths (N,). Subtracting it (`complexity_scores`) leaves how much
    worse the model explains an image than it explains normal images of the same complexity.

    For a likelihood of the compressor's 8-bit pixels it is near ln 2 (Serrà et al.'s exchange, bits for bits);
    for vaekit's default Bernoulli on gray pixels of MNIST and Fashion-MNIST about 0.05-0.08 (BENCHMARKS.md).
    ValueError if the lengths do not vary.
    """
    if nll.shape != bits.shape or len(nll) < 2:
        raise ValueError(f"the rate needs two or more scores with one length each, got {tuple(nll.shape)} "
                         f"and {tuple(bits.shape)}")
    nll, bits = nll.double().cpu(), bits.double().cpu()
    spread = (bits - bits.mean()).pow(2).sum().item()
    if not spread > 0:
        raise ValueError(f"the rate of complexity needs normal images of differing compressed lengths; all "
                         f"{len(bits)} have {bits[0].item():g} bits")
    return ((nll - nll.mean()) * (bits - bits.mean())).sum().item() / spread
