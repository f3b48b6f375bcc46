"""The VAE: an encoder and a decoder built from a ModelConfig, and nothing else (no loss, no I/O)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .mlp import Decoder, Encoder
from .posterior import DiagonalGaussian


class VAE(nn.Module):
    """x (B, C, H, W) in [0, 1] -> q(z|x) -> z (B, D) -> Bernoulli logits (B, C, H, W).

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes", with the seed's MLPs.
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.input_dim, config.hidden_dims, config.latent_dim)
        self.decoder = Decoder(config.latent_dim, tuple(reversed(config.hidden_dims)), config.input_dim)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for a batch of images (B, C, H, W)."""
        mu, logvar = self.encoder(x.flatten(start_dim=1))
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits (..., C, H, W) for latents z (..., D); sigmoid gives the Bernoulli means."""
        return self.decoder(z).unflatten(-1, self.config.input_shape)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_logits, mu, logvar) for x, with z = mu + std * eps; eps is drawn from `generator` if not given."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if eps is None else posterior.rsample(eps)
        return self.decode(z), posterior.mu, posterior.logvar
