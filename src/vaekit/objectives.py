"""Training objectives as pure functions of a model, a batch and noise. Per-sample values, in nats."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .models import DiagonalGaussian


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
    recon_logits, x = torch.broadcast_tensors(recon_logits, x)  # e.g. (S, B, C, H, W) samples against (B, C, H, W)
    return F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").sum((-3, -2, -1))


def negative_elbo(x: torch.Tensor, recon_logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> ELBOTerms:
    """-ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) from one forward pass, `VAE(x, eps)`.

    Kingma & Welling 2014, Eq. 10: a one-sample estimate of the expectation, the KL in closed
    form (their App. B). Taking the forward pass's outputs, not the model, keeps the loss pure and
    lets a DistributedDataParallel wrapper see the forward call.
    """
    reconstruction = bernoulli_nll(recon_logits, x)
    kl = DiagonalGaussian(mu, logvar).kl()
    return ELBOTerms(reconstruction + kl, reconstruction, kl)


def negative_elbo_sum(x: torch.Tensor, recon_logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """`negative_elbo(...).loss.sum()` computed with one reduction per term: the training loss's fast form."""
    reconstruction = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())  # Kingma & Welling 2014, App. B
    return reconstruction + kl
