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
from .models.posterior import DiagonalGaussian, pair_log_density, standard_normal_log_prob


class TCTerms(NamedTuple):
    """The KL term's decomposition per sample, each (B,) in nats: mutual_information + total_correlation +
    dimension_kl = log q(z|x) - log p(z)."""

    mutual_information: torch.Tensor
    total_correlation: torch.Tensor
    dimension_kl: torch.Tensor


BLOCK_ELEMENTS = 1 << 18  # the pairs of this many (sample, posterior) at once: 1 MB of float32, in a core's cache
# up to this many (sample, posterior, dimension) triples, plain autograd on the whole block: the Function's loop
# over dimensions costs more than it saves there (benchmarks/tc_estimator.py: 2x slower at batch 64, 2x faster at 256)
PLAIN_MAX_PAIRS = 1 << 17


class _MixtureLogDensities(torch.autograd.Function):
    """log sum_j q(z_i | n_j) (M,) and log sum_j q(z_id | n_j) (M, D) over a batch's posteriors, with a
    hand-written backward. It visits the pairs a block of samples and one dimension at a time, never the
    (M, M, D) block a plain autograd graph keeps (several of them, 40 MB each for M = 1,024, D = 10), which
    made the estimator, not the networks, most of a large batch's step on CPU."""

    @staticmethod
    def forward(ctx, z, mu, logvar):
        m, dims = z.shape
        precision = torch.exp(-logvar)
        joint_weights = torch.empty(m, m, dtype=z.dtype, device=z.device)
        log_joint, marginals = torch.empty_like(z[:, 0]), torch.empty_like(z)
        for rows in _blocks(m):
            joint = torch.zeros(len(range(m)[rows]), m, dtype=z.dtype, device=z.device)
            for d in range(dims):
                pairs = pair_log_density(z[rows, d], mu[:, d], logvar[:, d], precision[:, d])[0]
                joint += pairs
                marginals[rows, d] = torch.logsumexp(pairs, dim=1)
            log_joint[rows] = torch.logsumexp(joint, dim=1)
            # the joint mixture's weight of each posterior (rows sum to 1): its pairs' share of the gradient
            torch.exp(joint.sub_(log_joint[rows, None]), out=joint_weights[rows])
        ctx.save_for_backward(z, mu, logvar, precision, joint_weights, marginals)
        return log_joint, marginals

    @staticmethod
    def backward(ctx, grad_joint, grad_marginals):
        z, mu, logvar, precision, joint_weights, marginals = ctx.saved_tensors
        m, dims = z.shape
        grad_joint = torch.zeros_like(z[:, 0]) if grad_joint is None else grad_joint
        grad_marginals = torch.zeros_like(z) if grad_marginals is None else grad_marginals
        grad_z = torch.empty_like(z)
        # per posterior j and dimension d: sum_i G_ij, sum_i G_ij (z_i - mu_j), sum_i G_ij (z_i - mu_j)^2
        column, first, second = (torch.zeros_like(z) for _ in range(3))
        for rows in _blocks(m):
            from_joint = joint_weights[rows] * grad_joint[rows, None]
            for d in range(dims):
                pairs, diff = pair_log_density(z[rows, d], mu[:, d], logvar[:, d], precision[:, d])
                # G_ij = d loss / d pairs_ij, through the dimension's mixture and through the joint one
                weights = pairs.sub_(marginals[rows, d, None]).exp_().mul_(grad_marginals[rows, d, None])
                weights += from_joint
                column[:, d] += weights.sum(0)
                weighted = weights.mul_(diff)
                grad_z[rows, d] = -(weighted @ precision[:, d])
                first[:, d] += weighted.sum(0)
                second[:, d] += weighted.mul_(diff).sum(0)
        # pairs_ij = -(log 2 pi + logvar_j + (z_i - mu_j)^2 exp(-logvar_j)) / 2
        return grad_z, first * precision, 0.5 * (second * precision - column)


@torch.compiler.disable  # run as it is under torch.compile: traced, its unrolled loops took minutes to compile
def _mixture_log_densities(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    return _MixtureLogDensities.apply(z, mu, logvar)


def _blocks(m: int) -> list[slice]:
    """Row blocks of an (m, m) matrix of about BLOCK_ELEMENTS each."""
    size = max(1, BLOCK_ELEMENTS // m)
    return [slice(start, min(start + size, m)) for start in range(0, m, size)]


def mws_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                      plain: bool | None = None) -> TCTerms:
    """The three KL terms of each sample z_i ~ q(z|n_i) (M, D), under the N(0, I) prior, with q(z) and its
    marginals estimated by minibatch-weighted sampling over the batch's posteriors (mu, logvar) (M, D) for a
    dataset of `dataset_size` images (N >= M). `plain`: autograd on the whole (M, M, D) block of pairs, or the
    blockwise Function with its own backward (the same numbers); by default plain up to PLAIN_MAX_PAIRS."""
    log_w = math.log(dataset_size * len(z))
    log_q_given_x = DiagonalGaussian(mu, logvar).log_prob(z)  # (M,): each sample under its own posterior
    if plain or (plain is None and z.numel() * len(z) <= PLAIN_MAX_PAIRS):
        pairs = pair_log_density(z, mu, logvar, torch.exp(-logvar))[0]  # (M, M, D)
        log_joint, log_marginals = torch.logsumexp(pairs.sum(2), dim=1), torch.logsumexp(pairs, dim=1)
    else:
        log_joint, log_marginals = _mixture_log_densities(z, mu, logvar)
    log_q = log_joint - log_w
    log_prod_marginals = (log_marginals - log_w).sum(1)
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
