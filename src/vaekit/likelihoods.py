"""Pixel likelihoods p(x|z): what the decoder's outputs mean, and the loss numbers they give.

- bernoulli: one logit per pixel. On binarized images -log p(x|z) is a true negative log-likelihood
  in nats, the quantity published NLLs on binarized MNIST compare. On grayscale targets in [0, 1]
  it is the seed's binary cross-entropy: a cross-entropy, not a likelihood (it is not zero even for
  a perfect reconstruction).
- continuous-bernoulli: one logit per pixel, with the normalising constant that makes the Bernoulli
  form a proper density on [0, 1] (Loaiza-Ganem & Cunningham 2019). Its NLL is a density's: it can
  be negative, and it does not compare with Bernoulli numbers.
- gaussian: a mean (through a sigmoid, in [0, 1]) and a log standard deviation per pixel, the
  deviation floored at 1/64 so that constant pixels cannot drive the density to infinity. Also a
  density: the numbers can be negative and compare only with other densities.
- gaussian-shared: a mean per pixel and one learned standard deviation for every pixel of every
  image (the "sigma-VAE", Rybkin et al. 2021). The model appends that deviation to the decoder's
  means, so its parameters read like `gaussian`'s. -log p(x|z) is the squared error scaled by
  1 / (2 sigma^2), plus a constant: the ELBO weighs reconstruction against KL by how well the
  decoder can reconstruct, and as an anomaly score it is the squared error plus the KL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import LIKELIHOODS  # noqa: F401  (the names, kept with the other config choices)

MIN_LOG_STD = math.log(1 / 64)
LOG_2PI = math.log(2 * math.pi)


def output_channels(likelihood: str, channels: int) -> int:
    """How many decoder output channels a likelihood needs for images of `channels` channels."""
    return 2 * channels if likelihood == "gaussian" else channels  # gaussian-shared: the model adds the deviation


def is_gaussian(likelihood: str) -> bool:
    """Whether decoder parameters are (mean logits, log std) pairs along the channel axis."""
    return likelihood in ("gaussian", "gaussian-shared")


def negative_log_likelihood(params: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(x|z) summed over (C, H, W): params (..., C', H, W) from the decoder, x (..., C, H, W) -> (...,)."""
    if is_gaussian(likelihood):
        mean_logits, log_std = params.chunk(2, dim=-3)
        log_std = log_std.clamp(min=MIN_LOG_STD)
        mean = torch.sigmoid(mean_logits)
        per_pixel = 0.5 * LOG_2PI + log_std + 0.5 * ((x - mean) * torch.exp(-log_std)).pow(2)
        return per_pixel.sum((-3, -2, -1))
    params, x = torch.broadcast_tensors(params, x)  # e.g. (S, B, C, H, W) samples against (B, C, H, W)
    nll = F.binary_cross_entropy_with_logits(params, x, reduction="none")
    if likelihood == "continuous-bernoulli":
        nll = nll - continuous_bernoulli_log_norm(params)
    return nll.sum((-3, -2, -1))


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli with lambda = sigmoid(logits).

    C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2) in terms of the logit l
    (Loaiza-Ganem & Cunningham 2019, Eq. 7); near l = 0 its Taylor series log 2 + l^2 / 12 avoids 0/0.
    """
    a = logits.abs()
    small = a < 1e-3
    safe = torch.where(small, torch.ones_like(a), a)
    exact = torch.log(safe) - torch.log(torch.tanh(safe / 2))
    return torch.where(small, math.log(2) + a.pow(2) / 12, exact)


def pixel_means(params: torch.Tensor, likelihood: str) -> torch.Tensor:
    """E[x|z] in [0, 1], (..., C, H, W): what to show as the decoded image."""
    if is_gaussian(likelihood):
        return torch.sigmoid(params.chunk(2, dim=-3)[0])
    probs = torch.sigmoid(params)
    if likelihood == "continuous-bernoulli":
        # mean = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)), which is 1/2 at lambda = 1/2
        near_half = (probs - 0.5).abs() < 1e-3
        safe = torch.where(near_half, torch.full_like(probs, 0.25), probs)
        mean = safe / (2 * safe - 1) + 1 / (2 * torch.atanh(1 - 2 * safe))
        return torch.where(near_half, 0.5 + (probs - 0.5) / 3, mean)
    return probs
