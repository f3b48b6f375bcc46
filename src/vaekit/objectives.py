"""Training objectives as pure functions of a forward pass, its noise and the prior. Per-sample nats.

- The ELBO (Kingma & Welling 2014): -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)).
- beta-weighted KL (Higgins et al. 2017) and its linear warm-up from 0 (Bowman et al. 2016),
  passed in as `kl_weight`.
- free bits (Kingma et al. 2016, Eq. 15): each latent dimension's KL, averaged over the batch, is
  floored at `free_bits` nats, so no dimension is pushed all the way to the prior.
- the IWAE bound (Burda et al. 2016, Eq. 8) with S samples per image when eps is (S, B, D).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import likelihoods
from .likelihoods import Likelihood
from .models.posterior import DiagonalGaussian, standard_normal_log_prob

PriorLogProb = Callable[[torch.Tensor], torch.Tensor]  # z (..., D) -> log p(z) (...,); None means N(0, I)


class ELBOTerms(NamedTuple):
    """Per-sample terms of the negative ELBO, each (B,) in nats: loss = reconstruction + kl."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def bernoulli_nll(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) under independent Bernoulli pixels, summed over (C, H, W): (...,) nats.

    BCE on logits (log-sum-exp form) rather than on sigmoid outputs: exact where the sigmoid saturates.
    For grayscale targets in [0, 1] this is the seed's loss, a cross-entropy rather than a likelihood.
    """
    return likelihoods.Bernoulli().nll(recon_logits, x)


def _likelihood(likelihood: Likelihood | str) -> Likelihood:
    return likelihoods.get(likelihood) if isinstance(likelihood, str) else likelihood


def negative_elbo(x: torch.Tensor, recon_params: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  eps: torch.Tensor | None = None, *, likelihood: Likelihood | str = "bernoulli",
                  prior_log_prob: PriorLogProb | None = None) -> ELBOTerms:
    """-ELBO(x) from one forward pass `VAE(x, eps)`: a one-sample estimate of the reconstruction term,
    the KL in closed form for the N(0, I) prior (Kingma & Welling 2014, App. B) or sampled at
    z = mu + std * eps for any other prior.

    Taking the forward pass's outputs, not the model, keeps the loss pure and lets a
    DistributedDataParallel wrapper see the forward call.
    """
    posterior = DiagonalGaussian(mu, logvar)
    reconstruction = _likelihood(likelihood).nll(recon_params, x)
    if prior_log_prob is None:
        kl = posterior.kl()
    else:
        z = posterior.rsample(eps)
        kl = posterior.log_prob(z) - prior_log_prob(z)
    return ELBOTerms(reconstruction + kl, reconstruction, kl)


def negative_iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """-log (1/S) sum_s w_s summed over the batch, from log-weights (S, B) (Burda et al. 2016, Eq. 8)."""
    return (math.log(log_w.shape[0]) - torch.logsumexp(log_w, dim=0)).sum()


def floored_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL summed over a batch (B, D), each dimension's batch mean floored at free_bits nats (Kingma et al.
    2016, Eq. 15); with no free bits, the plain sum."""
    if free_bits:
        return kl_per_dim.mean(0).clamp(min=free_bits).sum() * len(kl_per_dim)
    return kl_per_dim.sum()


def training_loss(x: torch.Tensor, recon_params: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  eps: torch.Tensor, *, likelihood: Likelihood | str = "bernoulli",
                  prior_log_prob: PriorLogProb | None = None, kl_weight: torch.Tensor | float = 1.0,
                  free_bits: float = 0.0) -> torch.Tensor:
    """The objective summed over the batch (divide by B for the mean): -ELBO with a weighted, optionally
    floored KL; or, when eps holds S samples per image (S, B, D), the negative IWAE bound.

    With kl_weight 1 and no free bits this is `negative_elbo(...).loss.sum()`, reduced once per term.
    """
    posterior, likelihood = DiagonalGaussian(mu, logvar), _likelihood(likelihood)
    if eps.dim() == 3:  # IWAE: log w_s = log p(x|z_s) + w (log p(z_s) - log q(z_s|x)); w = 1 is the bound
        z = posterior.rsample(eps)
        log_prior = standard_normal_log_prob(z) if prior_log_prob is None else prior_log_prob(z)
        log_w = -likelihood.nll(recon_params, x) + kl_weight * (log_prior - posterior.log_prob(z))
        return negative_iwae_bound(log_w)
    reconstruction = likelihood.batch_nll(recon_params, x)
    if prior_log_prob is not None:
        z = posterior.rsample(eps)
        kl = (posterior.log_prob(z) - prior_log_prob(z)).sum()
    else:
        kl = floored_kl(posterior.kl_per_dim(), free_bits)
    return reconstruction + kl_weight * kl
