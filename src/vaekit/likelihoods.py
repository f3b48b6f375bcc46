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
- discretized-logistic: a mean and a log-scale per pixel value; the probability of the 8-bit value
  k = round(255 x) is the logistic's mass on its bin [k/255 - 1/510, k/255 + 1/510], the two edge
  bins open to -inf and +inf (Kingma et al. 2016, IAF; Salimans et al. 2017, PixelCNN++). A true
  probability of 8-bit data: the NLL is in nats of the 8-bit values, never negative, and
  NLL / (C H W ln 2) is the bits/dim that published 8-bit numbers (PixelCNN++, NVAE, VDVAE) report.
- discretized-logistic-mixture: K such logistics per pixel (model.likelihood_components, default
  10), with one set of K mixture weights per pixel shared by its channels, so colour channels
  depend on each other through the component (PixelCNN++'s mixture without its linear dependence of
  later channels on earlier ones: each component's channels are independent given the component).
  On one channel it is PixelCNN++'s likelihood exactly.

The two discretized likelihoods model 8-bit values (vaekit.registry.LikelihoodSpec.discrete_8bit): they
are refused on standardized data (off the 8-bit grid), and accepted on binarized data, where they are still
a distribution over the 256 values (one that learns to put its mass on 0 and 255).
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

    @classmethod
    def from_config(cls, config) -> Likelihood:
        """The likelihood with the settings of a ModelConfig (the fields its spec names)."""
        return cls()

    @property
    def binary(self) -> bool:
        """Whether this is a distribution over {0, 1} pixels (vaekit.registry.LikelihoodSpec.binary)."""
        return LIKELIHOODS.get(self.name).binary

    @property
    def discrete_8bit(self) -> bool:
        """Whether this is a distribution over the 256 values k / 255 (LikelihoodSpec.discrete_8bit)."""
        return LIKELIHOODS.get(self.name).discrete_8bit

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


EIGHT_BIT = 255  # the largest 8-bit value: vaekit holds the value k as x = k / 255 (vaekit.data.to_unit)
HALF_BIN = 0.5 / EIGHT_BIT  # the bin of k is [k/255 - 1/510, k/255 + 1/510] in x's units
# PixelCNN++'s floor of -7 on the log-scale of its [-1, 1] data, on vaekit's [0, 1]: a scale of 0.23 half-bins,
# below which a bin's probability is 1 to float precision and the gradient only sharpens it further
MIN_LOG_SCALE = -7.0 - math.log(2)
# exp(-log_scale) underflows near 88 in fp32; a logistic of scale e^10 on [0, 1] is flat long before
MAX_LOG_SCALE = 10.0


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(k) elementwise, for the 8-bit value k = round(255 x) under a logistic(mean, exp(log_scale)) on x's
    scale discretized into 256 bins of width 1/255, the two at the edges open (PixelCNN++, Salimans et al. 2017,
    Eq. 2). x, mean and log_scale broadcast; x need not lie on the grid (it is read as its nearest value).

    With a = (k/255 + 1/510 - mean) / s and b = (k/255 - 1/510 - mean) / s the bin's mass is
    sigmoid(a) - sigmoid(b), taken in log space as log sigmoid(a) + log sigmoid(-b) + log(1 - e^-(a - b)),
    where a - b = 1 / (255 s) exactly: no difference of two near-equal numbers, so no underflow in either
    tail, which makes PixelCNN++'s fallback (the density at the bin centre times the bin width, where its
    sigmoid(a) - sigmoid(b) drops below 1e-5) unnecessary; tests check the two agree where it would apply.
    The edge bins are log sigmoid(a) (k = 0) and log sigmoid(-b) (k = 255).
    """
    k = (x * EIGHT_BIT).round().clamp(0, EIGHT_BIT)
    log_scale = log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE)
    inv_scale = torch.exp(-log_scale)
    centred = k / EIGHT_BIT - mean
    upper = (centred + HALF_BIN) * inv_scale
    lower = (centred - HALF_BIN) * inv_scale
    log_cdf_upper, log_sf_lower = F.logsigmoid(upper), F.logsigmoid(-lower)
    inner = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-inv_scale / EIGHT_BIT))
    return torch.where(k == 0, log_cdf_upper, torch.where(k == EIGHT_BIT, log_sf_lower, inner))


MEAN_WINDOW = 24  # edges each side of the mean that a narrow logistic's E[k] sums (the terms beyond: < e^-24)
MEAN_CHUNK = 1 << 16  # values per chunk of that sum


def discretized_logistic_mean(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[k / 255] under `discretized_logistic_log_prob`, elementwise, in [0, 1], to about 1e-7.

    E[k] = sum_{j=1..255} P(k >= j) = sum_j sigmoid((mean - t_j) / s) over the bin edges t_j = (j - 1/2) / 255,
    evaluated with a bounded number of terms, as a picture of thousands of images needs: for s >= 1/255 the
    sum is the midpoint rule of the integral of sigmoid((mean - t) / s) over [0, 1], which has a closed form,
    plus the rule's Euler-Maclaurin end corrections (its error inside the interval is of order
    exp(-2 pi^2 255 s), 3e-9 of one term at most), in float64, where the closed form's difference of two
    softplus values keeps its digits; for a narrower s, the terms further than MEAN_WINDOW edges from the mean
    are 0 or 1 to within e^-24, and the sum counts those and adds the ones between exactly.
    """
    mean, log_scale = torch.broadcast_tensors(mean, log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))
    narrow = discretized_logistic_mean_narrow(mean, log_scale)
    mean, log_scale = mean.double(), log_scale.double()
    scale = log_scale.exp()
    h = 1 / EIGHT_BIT
    # wide: the integral of sigmoid((mean - t) / s) over t in [0, 1] is s (softplus(u0) - softplus(u1)) with
    # u0 = mean / s, u1 = (mean - 1) / s, or 1 + s (softplus(-u0) - softplus(-u1)): each where its terms are
    # small, so that nothing large cancels
    u0, u1 = mean / scale, (mean - 1) / scale
    integral = torch.where(mean < 0.5, scale * (F.softplus(u0) - F.softplus(u1)),
                           1 + scale * (F.softplus(-u0) - F.softplus(-u1)))
    slope0 = torch.sigmoid(u0) * torch.sigmoid(-u0)  # sigmoid'(u); the integrand's first and third derivatives
    slope1 = torch.sigmoid(u1) * torch.sigmoid(-u1)  # in t are -sigmoid'(u) / s and -sigmoid'''(u) / s^3, with
    third0, third1 = slope0 * (1 - 6 * slope0), slope1 * (1 - 6 * slope1)  # sigmoid''' = sigmoid' (1 - 6 sigmoid')
    # the midpoint rule: h sum_j f(t_j) = integral - h^2/24 [f'] + 7 h^4/5760 [f'''] - ..., [g] = g(1) - g(0)
    wide = integral + h ** 2 / 24 * (slope1 - slope0) / scale - 7 * h ** 4 / 5760 * (third1 - third0) / scale ** 3
    return torch.where(scale >= h, wide.to(narrow.dtype), narrow).clamp(0, 1)


def discretized_logistic_mean_narrow(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """`discretized_logistic_mean` for scales below 1/255: the edges below the mean's window count 1 each,
    those above it 0, and the 2 MEAN_WINDOW between are summed, a cache-sized chunk of values at a time
    (three times faster than all at once on a million values)."""
    out = torch.empty(mean.shape, dtype=mean.dtype, device=mean.device)  # mean may be a broadcast view
    flat_out, flat_mean, flat_log_scale = out.view(-1), mean.reshape(-1), log_scale.reshape(-1)
    for start in range(0, flat_out.numel(), MEAN_CHUNK):
        part = slice(start, start + MEAN_CHUNK)
        m, inv_scale = flat_mean[part], torch.exp(-flat_log_scale[part])
        below = (m * EIGHT_BIT + 0.5).floor().clamp(0, EIGHT_BIT)  # how many edges t_j lie at or below the mean
        first = (m - (below - 0.5) / EIGHT_BIT) * inv_scale  # (mean - t_j) / s at j = below, the edge under it
        step = inv_scale / EIGHT_BIT
        total = (below - MEAN_WINDOW).clamp(min=0)
        for offset in range(1 - MEAN_WINDOW, MEAN_WINDOW + 1):  # edges j = below + offset, those in 1..255
            inside = (below >= 1 - offset) & (below <= EIGHT_BIT - offset)
            total += torch.sigmoid(first - offset * step) * inside
        flat_out[part] = total / EIGHT_BIT
    return out


class DiscretizedLogistic(Likelihood):
    """A logistic per pixel value, discretized to the 256 8-bit values (Kingma et al. 2016; Salimans et al.
    2017): parameters (..., 2C, H, W), the means (on x's scale, unbounded: the edge bins are open) then the
    log-scales (floored at MIN_LOG_SCALE)."""

    name = "discretized-logistic"

    def output_channels(self, channels: int) -> int:
        return 2 * channels

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, log_scale = params.chunk(2, dim=-3)
        return -discretized_logistic_log_prob(x, mean, log_scale).sum((-3, -2, -1))

    def means(self, params: torch.Tensor) -> torch.Tensor:
        return discretized_logistic_mean(*params.chunk(2, dim=-3))

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DiscretizedLogisticMixture.split's view of a mixture of one: (log weights of 0 (..., 1, 1, H, W),
        means (..., 1, C, H, W), log-scales (..., 1, C, H, W)); what bits-back coding of 8-bit images reads."""
        mean, log_scale = params.chunk(2, dim=-3)
        return torch.zeros_like(mean[..., :1, :, :]).unsqueeze(-4), mean.unsqueeze(-4), log_scale.unsqueeze(-4)


DEFAULT_COMPONENTS = 10  # PixelCNN++'s K, and ModelConfig.likelihood_components' default


class DiscretizedLogisticMixture(Likelihood):
    """K discretized logistics per pixel (Salimans et al. 2017, Sec. 2.1), one set of K mixture weights per
    pixel shared by its C channels, each component's channels independent given the component.

    Parameters (..., K (1 + 2C), H, W): the K mixture logits, then the K x C means (component-major), then the
    K x C log-scales. log p(pixel) = logsumexp_k [log pi_k + sum_c log P_k(x_c)].
    """

    name = "discretized-logistic-mixture"

    def __init__(self, components: int = DEFAULT_COMPONENTS):
        self.components = components

    @classmethod
    def from_config(cls, config) -> DiscretizedLogisticMixture:
        return cls(config.likelihood_components)

    def output_channels(self, channels: int) -> int:
        return self.components * (1 + 2 * channels)

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log mixture weights (..., K, 1, H, W), means (..., K, C, H, W), log-scales (..., K, C, H, W))."""
        k = self.components
        channels = (params.shape[-3] // k - 1) // 2
        if params.shape[-3] != self.output_channels(channels):
            raise ValueError(f"a mixture of {k} needs K (1 + 2C) parameter channels, got {params.shape[-3]}")
        log_weights = F.log_softmax(params[..., :k, :, :], dim=-3).unsqueeze(-3)
        means = params[..., k:k + k * channels, :, :].unflatten(-3, (k, channels))
        log_scales = params[..., k + k * channels:, :, :].unflatten(-3, (k, channels))
        return log_weights, means, log_scales

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_weights, means, log_scales = self.split(params)
        per_component = discretized_logistic_log_prob(x.unsqueeze(-4), means, log_scales).sum(-3)  # (..., K, H, W)
        return -torch.logsumexp(log_weights.squeeze(-3) + per_component, dim=-3).sum((-2, -1))

    def means(self, params: torch.Tensor) -> torch.Tensor:
        log_weights, means, log_scales = self.split(params)
        return (log_weights.exp() * discretized_logistic_mean(means, log_scales)).sum(-4)


def get(name: str, config=None) -> Likelihood:
    """The likelihood registered as `name` (vaekit.registry.LIKELIHOODS), with the settings of the ModelConfig
    `config` where given (else its defaults)."""
    cls = LIKELIHOODS.load(name)
    return cls() if config is None else cls.from_config(config)


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
