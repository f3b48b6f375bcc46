"""A model family in one file: a VAE whose posterior has one variance per image, N(mu, sigma^2 I).

The worked example of docs/write-your-own-family.md. It keeps vaekit's family contract
(vaekit.models.base.LatentVariableModel), so training with bitwise resume, eval (with the importance-
sampled NLL), sample, reconstruct, interpolate, traverse, embed, probe, report, score and calibrate all
work with it; compress says it cannot (the base class's `unsupported`).

    from vaekit.registry import FAMILIES, FamilySpec
    FAMILIES.register(FamilySpec("isotropic", "isotropic_family:IsotropicVAE", "one posterior variance per image",
                                 priors=("normal",), architectures=("mlp",), pixel_context=False))
    fit(RunConfig(model=ModelConfig(family="isotropic")), "runs/iso")
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.models.base import LatentUsage, LatentVariableModel
from vaekit.models.posterior import DiagonalGaussian, standard_normal_log_prob
from vaekit.objectives import negative_elbo, training_loss


class IsotropicVAE(LatentVariableModel):
    family = "isotropic"

    def __init__(self, config):
        super().__init__(config)  # keeps the config, and the likelihood object it names
        c, h, w = config.input_shape
        hidden, d = config.hidden_dims[0], config.latent_dim
        out = self.likelihood.output_channels(c)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, d + 1))
        self.decoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out * h * w),
                                     nn.Unflatten(-1, (out, h, w)))

    # the latent commands: a posterior object over the flat latent, prior draws, decoding
    def encode(self, x):
        out = self.encoder(x)
        mu, logvar = out[:, :-1], out[:, -1:].expand(-1, self.latent_dim)  # one variance, every dimension
        return DiagonalGaussian(mu, logvar)

    def decode(self, z, x=None, generator=None):
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood.finish(params.reshape(*lead, *params.shape[1:]), self)

    def sample_prior(self, n, generator=None):
        return torch.randn(n, self.latent_dim, generator=generator, device=next(self.parameters()).device)

    def usage(self, x):
        posterior = self.encode(x)
        return LatentUsage(posterior.mu, posterior.kl_per_dim())

    # training: the forward pass (what DDP would wrap), then a pure loss of its output
    def forward(self, x, eps):
        posterior = self.encode(x)
        return self.decode(posterior.rsample(eps)), posterior.mu, posterior.logvar

    def objective(self, x, output, eps, *, kl_weight=1.0, free_bits=0.0):
        params, mu, logvar = output
        return training_loss(x, params.float(), mu.float(), logvar.float(), eps, likelihood=self.likelihood,
                             kl_weight=kl_weight, free_bits=free_bits)

    # evaluation: the -ELBO terms per image, and importance weights for the NLL
    def elbo(self, x, eps, frozen=None):
        return negative_elbo(x, *self(x, eps), eps, likelihood=self.likelihood)

    def iw_context(self, x):
        return self.encode(x)

    def log_weights(self, x, context, eps, amp_dtype=None, frozen=None):
        z = context.rsample(eps)  # (S, B, D)
        return -self.likelihood.nll(self.decode(z), x) + standard_normal_log_prob(z) - context.log_prob(z)
