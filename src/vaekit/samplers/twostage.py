"""The `two-stage` sampler: a second VAE on the training posterior means (Dai & Wipf 2019, "Diagnosing and
Enhancing VAE Models"), whose prior draws, decoded, are the first VAE's latents."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..rng import derive_seed
from .base import LatentSampler, SamplerConfig, standardizer
from .training import seeded_init, train_density


KL_WARMUP = 0.3


def mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))


class TwoStageVAE(LatentSampler):
    """z (standardized) -> q(u|z) -> u (D) -> N(z; g(u), gamma I), with gamma learned: the second stage's
    learned decoder variance is what lets it match the first stage's aggregate posterior (Dai & Wipf, Sec. 4).
    Sampling: u ~ N(0, I), z = mean + std * (g(u) + sqrt(gamma) eps), the second stage's own model of z
    (the noise is small once gamma has shrunk)."""

    name = "two-stage"

    def __init__(self, config: SamplerConfig, dim: int):
        super().__init__(config, dim)
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("spread", torch.ones(dim))

        def build():
            self.encoder = mlp(dim, config.hidden, 2 * dim)
            self.decoder = mlp(dim, config.hidden, dim)
            self.log_gamma = nn.Parameter(torch.zeros(()))

        seeded_init(derive_seed(config.seed, "two-stage", "init"), build)
        self._noise: torch.Generator | None = None

    def loss(self, z: torch.Tensor, done: float = 1.0) -> torch.Tensor:
        """The negative ELBO per latent (nats), averaged over the batch, its KL weighted up from 0 over the first
        KL_WARMUP of training (`done`: the fraction done), so that the decoder learns to use u before the KL
        can switch it off (a second stage that ignores u only fits the latents' marginal Gaussian)."""
        x = (z - self.center) / self.spread
        mu, logvar = self.encoder(x).chunk(2, -1)
        logvar = logvar.clamp(-20, 10)
        u = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=self._noise, device=mu.device)
        recon = self.decoder(u)
        nll = 0.5 * (((x - recon) ** 2) / self.log_gamma.exp() + self.log_gamma + math.log(2 * math.pi)).sum(-1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        return (nll + min(1.0, done / KL_WARMUP) * kl).mean()

    def fit(self, latents: torch.Tensor, generator: torch.Generator, progress: bool = False) -> dict[str, Any]:
        center, spread = standardizer(latents)
        self.center.copy_(center)
        self.spread.copy_(spread)
        self._noise = torch.Generator(latents.device).manual_seed(derive_seed(self.config.seed, "two-stage", "noise"))
        loss = train_density(self, self.loss, latents, self.config.epochs, generator, progress, "two-stage")
        self._noise = None
        return {"negative_elbo": loss, "gamma": self.log_gamma.exp().item()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.randn(n, self.dim, generator=generator, device=self.center.device)
        eps = torch.randn(n, self.dim, generator=generator, device=self.center.device)
        return self.center + self.spread * (self.decoder(u) + (0.5 * self.log_gamma).exp() * eps)

    def check(self) -> None:
        if not bool((self.spread > 0).all()):
            raise ValueError("spread must be positive")
        if not -50 <= self.log_gamma.item() <= 10:  # fitting starts at 0 and shrinks it; exp() must stay finite
            raise ValueError(f"log_gamma must be in [-50, 10], got {self.log_gamma.item()}")
