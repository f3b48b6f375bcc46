"""A spatial broadcast decoder (Watters et al. 2019, "Spatial Broadcast Decoder: A Simple Architecture for Learning
Disentangled Representations in VAEs") with an MLP encoder, as a vaekit `--architecture` (docs/own-networks.md):

    benchmarks/disentanglement.py --architecture broadcast:build

    encoder  pixels -> hidden -> hidden -> 2 D   ReLU (vaekit's mlp; widths from --hidden)
    decoder  z tiled over the H x W grid, with two coordinate channels (x, y in [-1, 1]);
             1x1 conv to CHANNELS, then LAYERS 3x3 convs of CHANNELS (stride 1, ReLU), then a 1x1 conv to the
             likelihood's channels (Bernoulli logits for dSprites)

A decoder that reads position off coordinate channels need not learn to map a scalar to a place in the image
(the problem CoordConv names, Liu et al. 2018), which the MLP and deconvolution decoders find hard; Watters et al.
report cleaner position latents on dSprites-like data. The first layer is applied as a broadcast sum
(W_z z per image plus W_c coords once), which is the 1x1 convolution of the tiled input without building it.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.models.architectures import decoder_channels
from vaekit.models.mlp import Encoder

CHANNELS = 24
LAYERS = 2


class BroadcastDecoder(nn.Module):
    """z (..., D) -> (..., C_out, H, W): z broadcast over the grid beside x, y coordinates, then convolutions."""

    def __init__(self, latent_dim: int, output_shape: tuple[int, int, int], channels: int = CHANNELS,
                 layers: int = LAYERS):
        super().__init__()
        c_out, h, w = output_shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)  # (1, 2, H, W)
        self.from_z = nn.Linear(latent_dim, channels)
        self.from_coords = nn.Conv2d(2, channels, 1, bias=False)
        body: list[nn.Module] = [nn.ReLU()]
        for _ in range(layers):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        body.append(nn.Conv2d(channels, c_out, 1))
        self.body = nn.Sequential(*body)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # (B,) or (S, B): the convolutions need one batch axis
        first = self.from_z(z.reshape(-1, z.shape[-1]))[:, :, None, None] + self.from_coords(self.coords)
        out = self.body(first)
        return out.view(*lead, *out.shape[1:])


def build(config) -> tuple[Encoder, BroadcastDecoder]:
    """The (encoder, decoder) pair for a run's ModelConfig."""
    c, h, w = config.input_shape
    return (Encoder(c * h * w, config.hidden_dims, config.latent_dim),
            BroadcastDecoder(config.latent_dim, (decoder_channels(config), h, w), CHANNELS, LAYERS))
