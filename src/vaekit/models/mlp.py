"""The seed's multilayer perceptrons: an encoder to (mu, logvar) and a decoder to pixel parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by a ReLU."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x (B, input_dim) or (B, C, H, W) -> hidden ReLU layers -> (mu, logvar), each (B, latent_dim)."""

    def __init__(self, input_dim: int, hidden_dims: Sequence[int], latent_dim: int):
        super().__init__()
        self.body = _mlp([input_dim, *hidden_dims])
        # One layer gives mu and logvar side by side: the seed's fc21 and fc22 as a single matmul.
        self.head = nn.Linear(hidden_dims[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x.reshape(len(x), -1))).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    """z (..., latent_dim) -> hidden ReLU layers -> (..., output_dim), or (..., *output_shape) if given."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int], output_dim: int,
                 output_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.body = _mlp([latent_dim, *hidden_dims])
        self.head = nn.Linear(hidden_dims[-1], output_dim)
        self.output_shape = output_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(z))
        return out if self.output_shape is None else out.unflatten(-1, self.output_shape)


def build(input_shape: tuple[int, int, int], hidden_dims: Sequence[int], latent_dim: int, out_channels: int,
          conv_channels: Sequence[int] = ()) -> tuple[Encoder, Decoder]:
    """The seed's MLP pair for images of `input_shape`, the decoder giving `out_channels` per pixel."""
    c, h, w = input_shape
    encoder = Encoder(c * h * w, hidden_dims, latent_dim)
    decoder = Decoder(latent_dim, tuple(reversed(hidden_dims)), out_channels * h * w, (out_channels, h, w))
    return encoder, decoder


def from_config(config) -> tuple[Encoder, Decoder]:
    """`build` for a ModelConfig: the architecture "mlp"."""
    from .architectures import decoder_channels

    return build(config.input_shape, config.hidden_dims, config.latent_dim, decoder_channels(config))
