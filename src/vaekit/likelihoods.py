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
from torch import nn

from .registry import LIKELIHOODS

MIN_LOG_STD = math.log(1 / 64)
LOG_2PI = math.log(2 * math.pi)


class Likelihood:
    """p(x|z) over images (..., C, H, W), given the decoder's parameters (..., C', H, W).

    A model asks its likelihood how many channels its decoder must give (`output_channels`), lets it add
    learned parameters of its own (`extra_parameters`, registered on the model under their names, so
    checkpoints keep their keys) and finish the decoder's output with them (`finish`).
    """

    name = ""

    @property
    def binary(self) -> bool:
        """Whether this is a distribution over {0, 1} pixels (vaekit.registry.LikelihoodSpec.binary)."""
        return LIKELIHOODS.get(self.name).binary

    def output_channels(self, channels: int) -> int:
        """How many decoder output channels images of `channels` channels need."""
        return channels

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """Learned parameters of the likelihood itself, by the name the model registers them under."""
        return {}

    def finish(self, params: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The decoder's output made into this likelihood's parameters (with `model`'s extra parameters)."""
        return params

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) summed over (C, H, W): params (..., C', H, W), x (..., C, H, W) -> (...,)."""
        raise NotImplementedError

    def batch_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`nll` summed over the batch too: the training loss's reconstruction term."""
        return self.nll(params, x).sum()

    def means(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z] in [0, 1], (..., C, H, W): what to show as the decoded image."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """One logit per pixel. -log p(x|z) is a true NLL on binary images, the seed's cross-entropy on grey ones."""

    name = "bernoulli"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params, x = torch.broadcast_tensors(params, x)  # e.g. (S, B, C, H, W) samples against (B, C, H, W)
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").sum((-3, -2, -1))

    def batch_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # BCE on logits (log-sum-exp form), reduced in one kernel: exact where the sigmoid saturates
        return F.binary_cross_entropy_with_logits(params, x, reduction="sum")

    def means(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class ContinuousBernoulli(Likelihood):
    """The Bernoulli form normalised into a density on [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    name = "continuous-bernoulli"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params, x = torch.broadcast_tensors(params, x)
        nll = F.binary_cross_entropy_with_logits(params, x, reduction="none") - continuous_bernoulli_log_norm(params)
        return nll.sum((-3, -2, -1))

    def means(self, params: torch.Tensor) -> torch.Tensor:
        # mean = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)), which is 1/2 at lambda = 1/2
        probs = torch.sigmoid(params)
        near_half = (probs - 0.5).abs() < 1e-3
        safe = torch.where(near_half, torch.full_like(probs, 0.25), probs)
        mean = safe / (2 * safe - 1) + 1 / (2 * torch.atanh(1 - 2 * safe))
        return torch.where(near_half, 0.5 + (probs - 0.5) / 3, mean)


class Gaussian(Likelihood):
    """A mean (through a sigmoid, in [0, 1]) and a log standard deviation per pixel, floored at log(1/64)."""

    name = "gaussian"

    def output_channels(self, channels: int) -> int:
        return 2 * channels

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean_logits, log_std = params.chunk(2, dim=-3)
        log_std = log_std.clamp(min=MIN_LOG_STD)
        mean = torch.sigmoid(mean_logits)
        per_pixel = 0.5 * LOG_2PI + log_std + 0.5 * ((x - mean) * torch.exp(-log_std)).pow(2)
        return per_pixel.sum((-3, -2, -1))

    def means(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params.chunk(2, dim=-3)[0])


class GaussianShared(Gaussian):
    """A mean per pixel and one learned deviation for all of them (the sigma-VAE, Rybkin et al. 2021): the
    model appends the deviation to the decoder's means, so the parameters read like `gaussian`'s."""

    name = "gaussian-shared"

    def output_channels(self, channels: int) -> int:
        return channels

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        return {"log_std": nn.Parameter(torch.full((), math.log(0.1)))}  # learned with the rest; starts at 0.1

    def finish(self, params: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return torch.cat([params, model.log_std.to(params.dtype).expand_as(params)], dim=-3)


def get(name: str) -> Likelihood:
    """The likelihood registered as `name` (vaekit.registry.LIKELIHOODS)."""
    return LIKELIHOODS.load(name)()


def output_channels(likelihood: str, channels: int) -> int:
    """How many decoder output channels a likelihood needs for images of `channels` channels."""
    return get(likelihood).output_channels(channels)


def negative_log_likelihood(params: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(x|z) summed over (C, H, W): params (..., C', H, W) from the decoder, x (..., C, H, W) -> (...,)."""
    return get(likelihood).nll(params, x)


def pixel_means(params: torch.Tensor, likelihood: str) -> torch.Tensor:
    """E[x|z] in [0, 1], (..., C, H, W): what to show as the decoded image."""
    return get(likelihood).means(params)


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
