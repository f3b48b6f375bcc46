"""A convolutional encoder and decoder: strided 4x4 convolutions down to 1/4 size, a dense layer between."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> [conv 4x4 stride 2, ReLU] per channel count -> dense ReLU -> (mu, logvar) (B, D)."""

    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int], hidden: int, latent_dim: int):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        scale = 2 ** len(channels)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * (h // scale) * (w // scale), hidden),
                                   nn.ReLU())
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.dense(self.convs(x))).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """z (..., D) -> dense ReLU layers -> [transposed conv 4x4 stride 2] back to (..., C_out, H, W)."""

    def __init__(self, latent_dim: int, hidden: int, channels: Sequence[int], output_shape: tuple[int, int, int]):
        super().__init__()
        c_out, h, w = output_shape
        scale = 2 ** len(channels)
        self.start = (channels[0], h // scale, w // scale)
        self.dense = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                   nn.Linear(hidden, channels[0] * (h // scale) * (w // scale)), nn.ReLU())
        layers: list[nn.Module] = []
        for c_in, c_next in zip(channels, [*channels[1:], c_out]):
            layers += [nn.ConvTranspose2d(c_in, c_next, 4, stride=2, padding=1), nn.ReLU()]
        self.deconvs = nn.Sequential(*layers[:-1])  # no ReLU on the output parameters

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # e.g. (S, B) for importance samples: convolutions need one batch axis
        out = self.deconvs(self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start))
        return out.view(*lead, *out.shape[1:])


def build(input_shape: tuple[int, int, int], hidden_dims: Sequence[int], latent_dim: int, out_channels: int,
          conv_channels: Sequence[int] = (32, 64)) -> tuple[ConvEncoder, ConvDecoder]:
    """A conv pair for `input_shape`; its sides must divide by 2 ** len(conv_channels)."""
    c, h, w = input_shape
    encoder = ConvEncoder(input_shape, conv_channels, hidden_dims[0], latent_dim)
    decoder = ConvDecoder(latent_dim, hidden_dims[0], tuple(reversed(conv_channels)), (out_channels, h, w))
    return encoder, decoder


def from_config(config) -> tuple[ConvEncoder, ConvDecoder]:
    """`build` for a ModelConfig: the architecture "conv"."""
    from .architectures import decoder_channels

    return build(config.input_shape, config.hidden_dims, config.latent_dim, decoder_channels(config),
                 config.conv_channels)
