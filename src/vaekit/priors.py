"""Priors p(z) over a VAE's latent, as objects the model holds (vaekit.registry.PRIORS names them).

A prior's learned parameters are registered on the model under the names `extra_parameters` gives, so
checkpoints keep the keys they always had (a VampPrior's `pseudo_inputs`). Each method takes the model
for what it needs of it (its encoder, its parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .models.posterior import DiagonalGaussian, mixture_log_prob, standard_normal_log_prob
from .registry import PRIORS

LogProb = Callable[[torch.Tensor], torch.Tensor]  # z (..., D) -> log p(z) (...,)


class Prior:
    """p(z) over (..., D)."""

    name = ""
    closed_form_kl = False  # KL(q || p) has a closed form per dimension: the ELBO uses it instead of a sample

    def extra_parameters(self, config) -> dict[str, nn.Parameter]:
        """Learned parameters of the prior, by the name the model registers them under."""
        return {}

    def log_prob(self, z: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """log p(z), summed over the last dimension."""
        raise NotImplementedError

    def frozen_log_prob(self, model: nn.Module) -> LogProb:
        """`log_prob` for weights that will not change (evaluation): whatever depends on them computed once."""
        return lambda z: self.log_prob(z, model)

    def sample(self, n: int, dim: int, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, (n, dim)."""
        raise NotImplementedError


class StandardNormal(Prior):
    """N(0, I): the KL to a diagonal Gaussian posterior has a closed form (Kingma & Welling 2014, App. B)."""

    name = "normal"
    closed_form_kl = True

    def log_prob(self, z: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def frozen_log_prob(self, model: nn.Module) -> LogProb:
        return standard_normal_log_prob

    def sample(self, n: int, dim: int, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(model.parameters()).device
        return torch.randn(n, dim, generator=generator, device=device)


class VampPrior(Prior):
    """The mixture of the posteriors of K learned pseudo-inputs (Tomczak & Welling 2018). The pseudo-inputs
    live in logit space; a sigmoid keeps them images in [0, 1] (the paper's hardtanh)."""

    name = "vamp"

    def extra_parameters(self, config) -> dict[str, nn.Parameter]:
        c, h, w = config.input_shape
        return {"pseudo_inputs": nn.Parameter(torch.randn(config.prior_components, c, h, w) * 0.1)}

    def components(self, model: nn.Module) -> DiagonalGaussian:
        return model.encode(torch.sigmoid(model.pseudo_inputs))

    def log_prob(self, z: torch.Tensor, model: nn.Module) -> torch.Tensor:
        components = self.components(model)
        return mixture_log_prob(z, components.mu, components.logvar)

    @torch.no_grad()
    def frozen_log_prob(self, model: nn.Module) -> LogProb:
        components = self.components(model)
        return lambda z: mixture_log_prob(z, components.mu, components.logvar)

    def sample(self, n: int, dim: int, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(model.parameters()).device
        eps = torch.randn(n, dim, generator=generator, device=device)
        components = self.components(model)
        k = torch.randint(len(components.mu), (n,), generator=generator, device=device)
        return DiagonalGaussian(components.mu[k], components.logvar[k]).rsample(eps)


def get(name: str) -> Prior:
    """The prior registered as `name` (vaekit.registry.PRIORS)."""
    return PRIORS.load(name)()
