"""The `flow` sampler: a RealNVP coupling flow trained by maximum likelihood on the training posterior means."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..rng import derive_seed
from .base import LatentSampler, SamplerConfig, standardizer
from .training import seeded_init, train_density


class Coupling(nn.Module):
    """An affine coupling layer (Dinh et al. 2017, "Density estimation using Real NVP"): the dimensions where
    `mask` is 1 pass through and set a scale and shift of the others."""

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.clone(), persistent=False)  # fixed by the layer's place: not stored
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)  # each layer starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(kept).chunk(2, -1)
        free = 1 - self.mask
        return torch.tanh(s) * free, t * free  # tanh bounds each step's scale to [e^-1, e]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to noise: y (N, D) and log|det dy/dx| (N,)."""
        s, t = self.scale_shift(x * self.mask)
        return x * self.mask + (1 - self.mask) * (x * s.exp() + t), s.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self.scale_shift(y * self.mask)
        return y * self.mask + (1 - self.mask) * ((y - t) * (-s).exp())


class CouplingFlow(LatentSampler):
    """z = mean + std * f^-1(u), u ~ N(0, I): `layers` couplings with alternating masks on the standardized latent."""

    name = "flow"

    def __init__(self, config: SamplerConfig, dim: int):
        super().__init__(config, dim)
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("spread", torch.ones(dim))
        even = (torch.arange(dim) % 2 == 0).float()

        def build():
            self.couplings = nn.ModuleList(Coupling(dim, config.hidden, even if i % 2 == 0 else 1 - even)
                                           for i in range(config.layers))

        seeded_init(derive_seed(config.seed, "flow", "init"), build)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) (N,) of latents z (N, D)."""
        y = (z - self.center) / self.spread
        log_det = -self.spread.log().sum().expand(len(z))
        for coupling in self.couplings:
            y, step = coupling(y)
            log_det = log_det + step
        return -0.5 * (y * y).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + log_det

    def fit(self, latents: torch.Tensor, generator: torch.Generator, progress: bool = False) -> dict[str, Any]:
        center, spread = standardizer(latents)
        self.center.copy_(center)
        self.spread.copy_(spread)
        loss = train_density(self, lambda z, t: -self.log_prob(z).mean(), latents, self.config.epochs, generator,
                             progress, "flow")
        return {"log_likelihood": -loss}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        y = torch.randn(n, self.dim, generator=generator, device=self.center.device)
        for coupling in reversed(self.couplings):
            y = coupling.inverse(y)
        return self.center + self.spread * y

    def check(self) -> None:
        if not bool((self.spread > 0).all()):
            raise ValueError("spread must be positive")
