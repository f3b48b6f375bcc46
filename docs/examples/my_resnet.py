"""A small ResNet encoder and decoder for vaekit, in a user's own file (docs/own-networks.md).

    PYTHONPATH=. vaekit train --architecture my_resnet:build --out runs/resnet

vaekit calls `build(config)` with the run's ModelConfig and takes back (encoder, decoder):
  encoder: images (B, C, H, W) -> (mu, logvar), each (B, D), D = config.latent_dim
  decoder: latents (..., D) -> likelihood parameters (..., decoder_channels(config), H, W)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaekit.models.architectures import decoder_channels

WIDTH = 16  # channels at half resolution; twice as many at a quarter


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)  # statistics per image: no batch-size dependence, and eval == train


class ResidualBlock(nn.Module):
    """x + F(x), F = two 3x3 convolutions, each after GroupNorm and SiLU (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """(B, C, H, W) -> stride-2 conv, block -> stride-2 conv, block -> linear -> (mu, logvar), each (B, D)."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, width: int = WIDTH):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), ResidualBlock(width),  # (B, width, H/2, W/2)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), ResidualBlock(2 * width),  # (B, 2 width, H/4, W/4)
            norm(2 * width), nn.SiLU(), nn.Flatten())
        self.head = nn.Linear(2 * width * (h // 4) * (w // 4), 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    """(..., D) -> linear -> block, stride-2 transposed conv -> block, stride-2 transposed conv -> (..., C', H, W)."""

    def __init__(self, latent_dim: int, output_shape: tuple[int, int, int], width: int = WIDTH):
        super().__init__()
        c_out, h, w = output_shape
        self.start = (2 * width, h // 4, w // 4)
        self.dense = nn.Linear(latent_dim, math.prod(self.start))
        self.body = nn.Sequential(
            ResidualBlock(2 * width), nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            ResidualBlock(width), norm(width), nn.SiLU(),
            nn.ConvTranspose2d(width, c_out, 4, stride=2, padding=1))  # no activation: likelihood parameters

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # (B,), or (S, B) for S importance samples per image: convolutions take one batch axis
        out = self.body(self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start))
        return out.view(*lead, *out.shape[1:])


def build(config) -> tuple[Encoder, Decoder]:
    """The (encoder, decoder) pair for a run's ModelConfig."""
    c, h, w = config.input_shape
    if h % 4 or w % 4:
        raise ValueError(f"my_resnet halves the image twice: its sides must divide by 4, got {h}x{w}")
    return Encoder(config.input_shape, config.latent_dim), Decoder(config.latent_dim, (decoder_channels(config), h, w))
