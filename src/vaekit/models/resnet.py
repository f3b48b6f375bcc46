"""A residual encoder and decoder for colour or gray images of about 32 to 128 pixels (`--architecture resnet`).

Pre-activation residual blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks"): x + F(x) with
F = [GroupNorm, SiLU, 3x3 conv] twice, the second conv zero-initialised so that every block starts as the
identity (Goyal et al. 2017). GroupNorm keeps each image's statistics its own, so an output does not depend on
the batch around it and training and evaluation compute the same function.

    encoder: x (B, C, H, W) -> 3x3 conv to `width` channels
             -> per resolution: `blocks` blocks, then a stride-2 3x3 conv (channels x2, at most 4 x width)
             -> `blocks` blocks at the bottom (B, C_s, h, w), GroupNorm, SiLU
             -> dense: linear to (mu, logvar), each (B, D)
                spatial: 3x3 conv to 2 D/(h w) channels: (mu, logvar), each (B, D/(h w), h, w) flattened to (B, D)
    decoder: the mirror image, nearest-neighbour x2 upsampling and a 3x3 conv in place of each stride-2 conv,
             to (..., C', H, W) likelihood parameters

The image is halved until its shorter side is between 4 and 7 pixels (`stages`): 32 -> 4, 64 -> 4, 128 -> 4,
28 -> 7; both sides must divide by 2 ** stages (vaekit.config checks it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig, resnet_bottom, resnet_stages
from .architectures import decoder_channels

MAX_GROUPS = 32  # GroupNorm's groups (Wu & He 2018 use 32)...
MIN_GROUP = 8  # ...of at least 8 channels each (or one group of all): see _norm


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over groups of at least MIN_GROUP channels. A group normalizes away its own mean over the image:
    with one channel a group (InstanceNorm), a flat colour (a channel constant over the image) became 0, and a
    resnet trained on flat-coloured discs stayed at 8.1 bits/dim, reconstructing grey; with groups of several
    channels only each group's mean goes, and the colour lives on in the channels' differences."""
    return nn.GroupNorm(math.gcd(channels, min(MAX_GROUPS, max(1, channels // MIN_GROUP))), channels)


def stage_channels(width: int, stages: int) -> list[int]:
    """Channels at each resolution, full size first: width, 2 width, then 4 width at every lower one."""
    return [width * 2 ** min(i, 2) for i in range(stages + 1)]


class ResidualBlock(nn.Module):
    """x + F(x), F = [GroupNorm, SiLU, 3x3 conv] x 2 (pre-activation); (N, C, h, w) -> (N, C, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)  # the block starts as the identity
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(channels: int, count: int) -> list[nn.Module]:
    return [ResidualBlock(channels) for _ in range(count)]


class ResNetTrunk(nn.Module):
    """x (B, C, H, W) -> (B, C_s, H / 2^s, W / 2^s): the encoder without its head, after a GroupNorm and SiLU."""

    def __init__(self, in_channels: int, width: int, blocks: int, stages: int):
        super().__init__()
        channels = stage_channels(width, stages)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [*_blocks(c_in, blocks), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        layers += [*_blocks(channels[-1], blocks), _norm(channels[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResNetExpander(nn.Module):
    """(N, C_s, h, w) -> (N, C', h 2^s, w 2^s): the decoder after its entry; raw likelihood parameters out."""

    def __init__(self, out_channels: int, width: int, blocks: int, stages: int):
        super().__init__()
        channels = stage_channels(width, stages)[::-1]  # bottom first
        layers: list[nn.Module] = _blocks(channels[0], blocks)
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                       *_blocks(c_out, blocks)]
        layers += [_norm(channels[-1]), nn.SiLU(), nn.Conv2d(channels[-1], out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.in_channels = channels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResNetEncoder(nn.Module):
    """x (B, C, H, W) -> (mu, logvar), each (B, D); a spatial latent is (D / (h w), h, w) flattened, channel first."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, width: int, blocks: int,
                 spatial: bool = False):
        super().__init__()
        c, h, w = input_shape
        stages = resnet_stages(h, w)
        bottom = resnet_bottom(h, w)
        self.trunk = ResNetTrunk(c, width, blocks, stages)
        self.spatial = spatial
        if spatial:  # (B, 2 D_c, h, w): D_c = D / (h w) latent channels at each of the h x w positions
            self.head = nn.Conv2d(self.trunk.out_channels, 2 * latent_dim // math.prod(bottom), 3, padding=1)
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.trunk.out_channels * math.prod(bottom),
                                                              2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.trunk(x))
        if self.spatial:
            mu, logvar = out.chunk(2, dim=1)  # each (B, D_c, h, w)
            return mu.flatten(1), logvar.flatten(1)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar


class ResNetDecoder(nn.Module):
    """z (..., D) -> (..., C', H, W): a linear layer (dense) or a 3x3 conv (spatial) to the bottom, then up."""

    def __init__(self, latent_dim: int, output_shape: tuple[int, int, int], width: int, blocks: int,
                 spatial: bool = False):
        super().__init__()
        c_out, h, w = output_shape
        stages = resnet_stages(h, w)
        bottom = resnet_bottom(h, w)
        self.expander = ResNetExpander(c_out, width, blocks, stages)
        self.spatial = spatial
        if spatial:
            self.start = (latent_dim // math.prod(bottom), *bottom)
            self.entry = nn.Conv2d(self.start[0], self.expander.in_channels, 3, padding=1)
        else:
            self.start = (latent_dim,)
            self.entry = nn.Linear(latent_dim, self.expander.in_channels * math.prod(bottom))
        self.bottom = (self.expander.in_channels, *bottom)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # (B,), or (S, B) for S importance samples per image: convolutions take one batch axis
        z = z.reshape(-1, *self.start)
        out = self.expander(self.entry(z).view(-1, *self.bottom))
        return out.view(*lead, *out.shape[1:])


def feature_stem(config: ModelConfig, features: int) -> nn.Sequential:
    """x (B, C, H, W) -> (B, features): the encoder's trunk, then a linear layer and SiLU (the hvae's bottom-up
    path from the pixels)."""
    c, h, w = config.input_shape
    trunk = ResNetTrunk(c, config.width, config.blocks, resnet_stages(h, w))
    return nn.Sequential(trunk, nn.Flatten(), nn.Linear(trunk.out_channels * math.prod(resnet_bottom(h, w)), features),
                         nn.SiLU())


def from_config(config: ModelConfig) -> tuple[ResNetEncoder, ResNetDecoder]:
    """The (encoder, decoder) pair of `config`: the architecture "resnet"."""
    c, h, w = config.input_shape
    spatial = config.latent_shape == "spatial"
    encoder = ResNetEncoder(config.input_shape, config.latent_dim, config.width, config.blocks, spatial)
    decoder = ResNetDecoder(config.latent_dim, (decoder_channels(config), h, w), config.width, config.blocks, spatial)
    return encoder, decoder
