"""Chen et al. 2018's dSprites networks (rtqichen/beta-tcvae, vae_quant.py: MLPEncoder, MLPDecoder) as a vaekit
`--architecture` (docs/own-networks.md), for benchmarks/disentanglement.py --architecture chen_mlp:build:

    encoder  4096 -> 1200 -> 1200 -> 2 D    ReLU       (mu, log-variance; theirs outputs (mu, log sigma))
    decoder  D -> 1200 -> 1200 -> 1200 -> 4096    tanh  Bernoulli logits

vaekit's own `mlp` mirrors the encoder (ReLU, two hidden layers) in the decoder; theirs has three tanh layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaekit.models.architectures import decoder_channels

WIDTH = 1200


class Encoder(nn.Module):
    def __init__(self, pixels: int, latent_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                                 nn.Linear(WIDTH, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, output_shape: tuple[int, int, int]):
        super().__init__()
        self.output_shape = output_shape
        self.net = nn.Sequential(nn.Linear(latent_dim, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Tanh(),
                                 nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, math.prod(output_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], *self.output_shape)  # (B,) or (S, B) leading dimensions


def build(config) -> tuple[Encoder, Decoder]:
    """The (encoder, decoder) pair for a run's ModelConfig."""
    c, h, w = config.input_shape
    return Encoder(c * h * w, config.latent_dim), Decoder(config.latent_dim, (decoder_channels(config), h, w))
