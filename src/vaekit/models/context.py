"""Pixel context: a decoder whose pixels depend on z *and* on pixels decoded before them.

A plain VAE decoder makes every pixel independent given z, so it pays for each edge pixel of a binary
image on its own although edges are continuous. Here the pixels are split into interleaved groups,
each a lattice {(a + s*i, b + s*j)}, decoded in order: the first group from z alone, every later group
from z and the groups before it, through a small convolution over the pixels already known. It is a
local autoregressive decoder with a handful of steps instead of one per pixel (a multiscale ordering,
as in Reed et al. 2017, "Parallel Multiscale Autoregressive Density Estimation"; the convolution over
known pixels is PixelCNN's idea, van den Oord et al. 2016). Lower NLL on binary images, and still a
few network calls per image to sample or to decode a compressed file.

z reaches a pixel through the decoder's output at that pixel: its logit, and with `features` > 0 that
many more channels, which only the context's mixers read (a wider path from z to each pixel; with the
logit alone, z can shift a pixel's odds but not change how it weighs its neighbours).

Nothing here sees a pixel before its group's turn: group k's logits are a function of the decoder's
output and of the image with every pixel outside groups 0..k-1 set to 0. Training computes all groups
at once from the true image (teacher forcing); sampling and bits-back decoding go group by group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# pixel_groups -> lattices (stride, row offset, column offset), in decoding order; each scheme
# partitions the image. 1: every pixel at once (no context). 4: the 2x2 grid's four cosets. 7: the
# first of those refined at stride 4. 16: all four refined at stride 4 (the 4x4 grid's cosets, in the
# same coarse-to-fine order), so later pixels see more known neighbours; more steps to sample or decode.
_COARSE = ((4, 0, 0), (4, 2, 2), (4, 0, 2), (4, 2, 0))
SCHEMES: dict[int, tuple[tuple[int, int, int], ...]] = {
    1: ((1, 0, 0),),
    4: ((2, 0, 0), (2, 1, 1), (2, 0, 1), (2, 1, 0)),
    7: (*_COARSE, (2, 1, 1), (2, 0, 1), (2, 1, 0)),
    16: tuple((4, row + a, col + b) for a, b in ((0, 0), (1, 1), (0, 1), (1, 0)) for _, row, col in _COARSE),
}
KERNEL = 7  # each later group sees the known pixels within 3 of it


class PixelContext(nn.Module):
    """Logits of pixel groups 1..G-1 from the decoder's output and the pixels of earlier groups.

    The decoder's output has C * (1 + features) channels: the C logits, then the features. Per later
    group: a KERNEL x KERNEL convolution over the known pixels, evaluated at that group's positions only
    (a strided convolution), then a per-pixel MLP over its features and the decoder's output there,
    added to the logits.
    """

    def __init__(self, groups: int, channels: int, hidden: int, features: int = 0):
        super().__init__()
        self.lattices = SCHEMES[groups]
        self.channels = channels
        self.convs = nn.ModuleList(nn.Conv2d(channels, hidden, KERNEL) for _ in self.lattices[1:])
        self.mixers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(hidden + channels * (1 + features), hidden, 1), nn.ReLU(),
                          nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
            for _ in self.lattices[1:])

    def group_logits(self, k: int, decoded: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, h_k, w_k) of group k's pixels, from the decoder's output (B, C', H, W) and `known`
        (B, C, H, W): the image with every pixel outside groups 0..k-1 set to 0. Sampling and the
        bits-back coder call this, one group at a time."""
        stride, row, col = self.lattices[k]
        decoded = decoded[..., row::stride, col::stride]
        base = decoded[..., :self.channels, :, :]
        if k == 0:
            return base
        return base + self.mixers[k - 1](torch.cat([self._features(k, known), decoded], dim=1))

    def _features(self, k: int, known: torch.Tensor) -> torch.Tensor:
        """Group k's convolution features (B, hidden, h_k, w_k) of the known pixels around its positions."""
        stride, row, col = self.lattices[k]
        pad = KERNEL // 2
        window = F.pad(known, (pad, pad, pad, pad))[..., row:, col:]  # output (i, j) centred on (row + s*i, col + s*j)
        return F.relu(F.conv2d(window, self.convs[k - 1].weight, self.convs[k - 1].bias, stride=stride))

    def forward(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """All pixels' logits given the true image x (teacher forcing): (..., C, H, W) for the decoder's
        output (..., C', H, W) and x broadcastable to the logits (e.g. (B, C, H, W) against S samples).

        The same function as `group_logits` group after group, computed so that S samples of z per
        image share the work that depends on x alone: the convolution over known pixels, and its part of
        the mixer's first layer (a 1x1 convolution of [features, base] is W_f features + W_b base + b).
        The mixers' 1x1 convolutions run as matmuls over channels-last pixels, which is how they are fast.
        """
        shape = (*decoded.shape[:-3], self.channels, *decoded.shape[-2:])  # the logits'
        if shape[len(shape) - x.dim():] != x.shape:  # x broadcasts along more than leading sample dims
            x = x.expand(shape)
        images = x.reshape(-1, *shape[-3:]).to(decoded.dtype)  # (N, C, H, W)
        decoded = decoded.reshape(-1, len(images), *decoded.shape[-3:])  # (S, N, C', H, W)
        out = decoded[:, :, :self.channels].clone()
        known = torch.zeros_like(images)
        for k, (stride, row, col) in enumerate(self.lattices):
            if k:
                here = decoded[..., row::stride, col::stride].movedim(2, -1)  # (S, N, h, w, C')
                base = here[..., :self.channels]
                first, *rest = self.mixers[k - 1]
                hidden = first.out_channels
                weight = first.weight[:, :, 0, 0]
                shared = F.linear(self._features(k, known).movedim(1, -1), weight[:, :hidden], first.bias)
                mixed = F.linear(here, weight[:, hidden:]) + shared  # (S, N, h, w, hidden)
                for layer in rest:
                    mixed = F.linear(mixed, layer.weight[:, :, 0, 0], layer.bias) if isinstance(layer, nn.Conv2d) \
                        else layer(mixed)
                out[..., row::stride, col::stride] = (base + mixed).movedim(-1, 2)
            known[..., row::stride, col::stride] = images[..., row::stride, col::stride]
        return out.reshape(shape)

    def sample(self, decoded: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits (..., C, H, W) with each group conditioned on Bernoulli draws of the groups before it:
        what the decoder predicts for a sampled image, from its output (..., C', H, W)."""
        return self._draw_groups(decoded, generator)[0]

    def draw(self, decoded: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A binary image (..., C, H, W) drawn group by group: a sample of x given the decoder's output."""
        return self._draw_groups(decoded, generator)[1]

    def _draw_groups(self, decoded: torch.Tensor,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*decoded.shape[:-3], self.channels, *decoded.shape[-2:])
        decoded = decoded.reshape(-1, *decoded.shape[-3:])
        out = decoded[:, :self.channels].clone()
        known = torch.zeros_like(out)
        for k, (stride, row, col) in enumerate(self.lattices):
            group = self.group_logits(k, decoded, known)
            out[..., row::stride, col::stride] = group
            known[..., row::stride, col::stride] = torch.bernoulli(torch.sigmoid(group), generator=generator)
        return out.reshape(shape), known.reshape(shape)
