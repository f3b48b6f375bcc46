"""The beta-TCVAE objective (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"): pure functions.

The KL term of the ELBO, averaged over the data, splits into three (Chen et al. 2018, Eq. 2):

    E_p(n)[KL(q(z|n) || p(z))] = I_q(z; n)                           index-code mutual information
                               + KL(q(z) || prod_j q(z_j))            total correlation (TC)
                               + sum_j KL(q(z_j) || p(z_j))           dimension-wise KL

and beta-TCVAE weights the TC by its own B. The aggregate posterior q(z) = (1/N) sum_n q(z|n) and its
marginals q(z_j) are estimated on each minibatch of M images by minibatch-weighted sampling (MWS, the
paper's Eq. S.5 and rtqichen/beta-tcvae's default, `mss=False`):

    log q(z_i) ~ logsumexp_j log q(z_i | n_j) - log(N M)

with the same for each dimension's marginal. Each term's value is offset by a constant: log q(z) reads
log N below the minibatch's own mixture (1/M) sum_j q(z|n_j) (the exact aggregate posterior when the batch
is the whole set), so the MI reads log N high, the TC (D - 1) log N high and the dimension-wise KL D log N
low; a collapsed model (every posterior N(0, I)) logs MI log N, TC (D - 1) log N. The constants have no
gradient, and the three terms add up exactly to log q(z_i|n_i) - log p(z_i), the sampled KL of the ELBO.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .likelihoods import Likelihood
from .models.posterior import DiagonalGaussian, standard_normal_log_prob

LOG_2PI = math.log(2 * math.pi)


class TCTerms(NamedTuple):
    """The KL term's decomposition per sample, each (B,) in nats: mutual_information + total_correlation +
    dimension_kl = log q(z|x) - log p(z)."""

    mutual_information: torch.Tensor
    total_correlation: torch.Tensor
    dimension_kl: torch.Tensor


def pairwise_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_i,d | n_j) for every sample i, posterior j and dimension d: (M, M, D) from z, mu, logvar (M, D)."""
    z, mu, logvar = z[:, None, :], mu[None, :, :], logvar[None, :, :]
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def mws_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int) -> TCTerms:
    """The three KL terms of each sample z_i ~ q(z|n_i) (M, D), under the N(0, I) prior, with q(z) and its
    marginals estimated by minibatch-weighted sampling over the batch's posteriors (mu, logvar) (M, D) for a
    dataset of `dataset_size` images (N >= M)."""
    m = len(z)
    pairs = pairwise_log_density(z, mu, logvar)  # (M, M, D)
    log_w = math.log(dataset_size * m)
    log_q_given_x = pairs.diagonal(dim1=0, dim2=1).sum(0)  # (M,): each sample under its own posterior
    log_q = torch.logsumexp(pairs.sum(2), dim=1) - log_w
    log_prod_marginals = (torch.logsumexp(pairs, dim=1) - log_w).sum(1)
    log_prior = standard_normal_log_prob(z)
    return TCTerms(log_q_given_x - log_q, log_q - log_prod_marginals, log_prod_marginals - log_prior)


def tc_training_loss(x: torch.Tensor, recon_params: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                     eps: torch.Tensor, *, likelihood: Likelihood, dataset_size: int,
                     kl_weight: torch.Tensor | float, tc_weight: torch.Tensor | float) -> torch.Tensor:
    """The beta-TCVAE objective summed over the batch, and its three KL terms summed over the batch: a (4,)
    tensor [loss, mutual information, total correlation, dimension-wise KL], in nats.

    loss = reconstruction + kl_weight * (MI + dimension-wise KL) + tc_weight * TC, at z = mu + std * eps (B, D);
    with tc_weight = kl_weight it is the beta-weighted ELBO with the KL sampled at z.
    """
    z = DiagonalGaussian(mu, logvar).rsample(eps)
    terms = mws_decomposition(z, mu, logvar, dataset_size)
    sums = torch.stack([t.sum() for t in terms])
    loss = (likelihood.batch_nll(recon_params, x) + kl_weight * (sums[0] + sums[2]) + tc_weight * sums[1])
    return torch.cat([loss[None], sums.detach()])
