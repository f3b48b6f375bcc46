"""The VAE family: an encoder, a decoder and a prior over one diagonal-Gaussian latent (no loss code, no I/O)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import objectives, priors, total_correlation
from ..config import CUSTOM_ARCHITECTURE, ModelConfig
from ..errors import ConfigError
from ..registry import ARCHITECTURES
from ..rng import make_generator
from .architectures import build_networks, check_networks
from .base import LatentUsage, LatentVariableModel
from .context import PixelContext
from .posterior import DiagonalGaussian


class VAE(LatentVariableModel):
    """x (B, C, H, W) in [0, 1] -> q(z|x) -> z (B, D) -> likelihood parameters (B, C', H, W).

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes". The prior is an object from
    vaekit.priors (N(0, I), or a VampPrior: a mixture of the posteriors of learned pseudo-inputs, Tomczak &
    Welling 2018), the likelihood one from vaekit.likelihoods. The networks come from the config's
    architecture, or are given: `VAE(config, encoder=..., decoder=...)` (vaekit.models.architectures
    states their contract); a config naming a built-in architecture then records "custom".
    """

    family = "vae"

    def __init__(self, config: ModelConfig = ModelConfig(),  # noqa: B008  (frozen, so one shared default is safe)
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        if (encoder is None) != (decoder is None):
            raise ConfigError("give both an encoder and a decoder, or neither")
        if encoder is not None and config.architecture in ARCHITECTURES:
            config = dataclasses.replace(config, architecture=CUSTOM_ARCHITECTURE)
        super().__init__(config)
        if encoder is None:
            encoder, decoder = build_networks(config)
            if config.architecture not in ARCHITECTURES:
                check_networks(encoder, decoder, config, f"--architecture {config.architecture}")
        else:
            check_networks(encoder, decoder, config, "VAE(encoder=..., decoder=...)")
        self.encoder, self.decoder = encoder, decoder
        self.prior = priors.get(config.prior)
        for name, parameter in self.prior.extra_parameters(config).items():
            self.register_parameter(name, parameter)
        if config.pixel_groups > 1:
            c = config.input_shape[0]
            self.context = PixelContext(config.pixel_groups, c, config.context_channels, config.context_features)
        for name, parameter in self.likelihood.extra_parameters().items():
            self.register_parameter(name, parameter)

    @property
    def analytic_kl(self) -> bool:
        """Whether KL(q || p) has a closed form (the standard normal prior), rather than a sampled one."""
        return self.prior.closed_form_kl

    def unsupported(self, use: str) -> str | None:
        if use != "compress":
            return super().unsupported(use)
        if not (self.likelihood.binary or self.likelihood.discrete_8bit):
            return ("bits-back coding needs a Bernoulli likelihood (binary images) or a discretized one (8-bit "
                    f"images); this run's is {self.likelihood.name}")
        if not isinstance(self.prior, priors.StandardNormal):
            return ("bits-back coding here needs the N(0, I) prior (its bins are equal-mass under it); "
                    f"this run's prior is {self.prior.name}")
        return None  # vaekit.compress.BitsBackCoder, vaekit.compress_8bit.EightBitCoder

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for a batch of images (B, C, H, W)."""
        mu, logvar = self.encoder(x)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Likelihood parameters (..., C', H, W) for latents z (..., D); see vaekit.likelihoods.

        With pixel groups (vaekit.models.context) the pixels also depend on each other: given the images x
        (broadcastable to the output), each group's parameters are conditioned on x's earlier groups, which
        is what the likelihood of x needs; without x, on earlier groups sampled from `generator` (default: seeded
        with 0, so pictures repeat).
        """
        params = self.decoder(z)
        if self.config.pixel_groups > 1:
            if x is not None:
                return self.context(params, x)
            return self.context.sample(params, generator or make_generator(0, params.device))
        return self.likelihood.finish(params, self)

    def pictures(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] to show for latents z (..., D): E[x|z]; for a pixel-group model, whose mean has
        no closed form, a binary image drawn group by group (from `generator`, default seeded with 0).
        Its groups' probabilities side by side would mix soft first-group pixels with crisp later ones."""
        if self.config.pixel_groups > 1:
            params = self.decoder(z)
            return self.context.draw(params, generator or make_generator(0, params.device))
        return self.pixel_means(self.decode(z))

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension, (...,)."""
        return self.prior.log_prob(z, self)

    def frozen_prior_log_prob(self):
        """`prior_log_prob` for a model that will not change: a VampPrior's components computed once.

        For evaluation, where log p(z) is asked for thousands of times with the same weights.
        """
        return self.prior.frozen_log_prob(self)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), (n, D)."""
        return self.prior.sample(n, self.latent_dim, self, generator)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_params, mu, logvar) for x, with z = mu + std * eps; eps (B, D) or (S, B, D) for S samples
        per image, drawn from `generator` if not given."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if eps is None else posterior.rsample(eps)
        return self.decode(z, x), posterior.mu, posterior.logvar

    def objective(self, x, output, eps, *, kl_weight=1.0, free_bits=0.0) -> torch.Tensor:
        recon_params, mu, logvar = output
        return objectives.training_loss(x, recon_params.float(), mu.float(), logvar.float(), eps,
                                        likelihood=self.likelihood,
                                        prior_log_prob=None if self.analytic_kl else self.prior_log_prob,
                                        kl_weight=kl_weight, free_bits=free_bits)

    def tc_objective(self, x, output, eps, *, dataset_size, kl_weight, tc_weight) -> torch.Tensor:
        recon_params, mu, logvar = output
        return total_correlation.tc_training_loss(x, recon_params.float(), mu.float(), logvar.float(), eps,
                                                  likelihood=self.likelihood, dataset_size=dataset_size,
                                                  kl_weight=kl_weight, tc_weight=tc_weight)

    def freeze(self):
        return self.frozen_prior_log_prob()

    def elbo(self, x, eps, frozen=None) -> objectives.ELBOTerms:
        return objectives.negative_elbo(x, *self(x, eps), eps, likelihood=self.likelihood,
                                        prior_log_prob=None if self.analytic_kl else (frozen or self.prior_log_prob))

    def iw_context(self, x: torch.Tensor) -> DiagonalGaussian:
        return self.encode(x)

    def log_weights(self, x, context, eps, amp_dtype=None, frozen=None) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) for z = mu + std * eps: (S, B) for x (B, C, H, W), eps (S, B, D);
        only the decoder runs under autocast, z, the likelihood and the densities stay fp32."""
        z = context.rsample(eps)
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            recon_params = self.decode(z, x)
        log_likelihood = -self.likelihood.nll(recon_params.float(), x)
        return log_likelihood + (frozen or self.prior_log_prob)(z) - context.log_prob(z)

    def usage(self, x: torch.Tensor) -> LatentUsage:
        posterior = self.encode(x)
        return LatentUsage(posterior.mu, posterior.kl_per_dim() if self.analytic_kl else None)
