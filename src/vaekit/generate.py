"""Generating images with a trained model: tensors in, Bernoulli means (N, C, H, W) in [0, 1] out."""

from __future__ import annotations

from typing import Any

import torch

from .choices import INTERPOLATIONS
from .models import LatentVariableModel


@torch.no_grad()
def sample(model: LatentVariableModel, n: int, generator: torch.Generator | None = None,
           sampler: Any = None) -> torch.Tensor:
    """Decode `n` draws from the model's prior, or from a latent sampler (vaekit.samplers: anything with
    `.sample(n, generator) -> (n, D)`), as the family's `pictures`."""
    model.require("sample")
    z = model.sample_prior(n, generator) if sampler is None else sampler.sample(n, generator)
    return model.pictures(z, generator)


@torch.no_grad()
def sample_many(model: LatentVariableModel, n: int, generator: torch.Generator | None = None,
                sampler: Any = None, batch_size: int = 1000) -> torch.Tensor:
    """`sample` for many images (N, C, H, W), on the CPU, decoded `batch_size` at a time: memory stays bounded."""
    return torch.cat([sample(model, min(batch_size, n - start), generator, sampler).cpu()
                      for start in range(0, n, batch_size)])


@torch.no_grad()
def reconstruct(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """Decode the posterior mean of each input (the family's `pictures`): the model's reconstruction, deterministic."""
    model.require("reconstruct")
    return model.pictures(model.encode(x).mode())


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between vectors a and b (D,) at fractions t (T,) -> (T, D) (Shoemake 1985).

    Falls back to linear interpolation where the arc is undefined: a and b (anti)parallel, or either of them zero.
    """
    if min(float(a.norm()), float(b.norm())) <= 1e-12:  # the zero vector has no direction (it gave NaN)
        return torch.lerp(a, b, t[:, None])
    a_unit, b_unit = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_unit * b_unit).sum().clamp(-1.0, 1.0))
    t = t[:, None]
    if omega.abs() < 1e-6 or (torch.pi - omega).abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolate(model: LatentVariableModel, x_from: torch.Tensor, x_to: torch.Tensor, steps: int,
                method: str = "linear") -> torch.Tensor:
    """Decode `steps` points on the path between the posterior means of two images (C, H, W), ends included."""
    model.require("interpolate")
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERPOLATIONS)}")
    mu = model.encode(torch.stack([x_from, x_to])).mode()
    t = torch.linspace(0, 1, steps, device=mu.device)
    z = slerp(mu[0], mu[1], t) if method == "slerp" else torch.lerp(mu[0], mu[1], t[:, None])
    return model.pictures(z)


@torch.no_grad()
def traverse(model: LatentVariableModel, x: torch.Tensor, dims: list[int], steps: int = 9,
             span: float = 3.0) -> torch.Tensor:
    """A row per latent dimension in `dims`: that dimension swept over [-span, span], the others held at
    the posterior mean of image x (C, H, W). Returns (len(dims) * steps, C, H, W)."""
    model.require("traverse")
    mu = model.encode(x[None]).mode()[0]
    z = mu.repeat(len(dims) * steps, 1)
    values = traverse_values(steps, span).to(mu.device)
    for row, dim in enumerate(dims):
        z[row * steps:(row + 1) * steps, dim] = values
    return model.pictures(z)


def traverse_values(steps: int = 9, span: float = 3.0) -> torch.Tensor:
    """The values a `traverse` row gives its dimension, left to right: (steps,) evenly over [-span, span]."""
    return torch.linspace(-span, span, steps)


def manifold_values(n: int = 20) -> torch.Tensor:
    """The values of each `manifold` dimension, ascending: the prior's 5% to 95% quantiles, (n,)."""
    return torch.special.ndtri(torch.linspace(0.05, 0.95, n))


@torch.no_grad()
def manifold(model: LatentVariableModel, dims: tuple[int, int] = (0, 1), n: int = 20) -> torch.Tensor:
    """The decoded grid over the prior's quantiles in two latent dimensions, the rest at 0 (Kingma &
    Welling 2014, Fig. 4): (n * n, C, H, W), row by row, the first dimension across, the second down."""
    values = manifold_values(n)
    axes = torch.eye(model.latent_dim)[list(dims)]  # the plane of the two dimensions through 0
    return plane_manifold(model, torch.zeros(model.latent_dim), axes, torch.stack([values, values]))


PLANE_DRAWS = 10_000  # sampler draws that place a sampler's manifold plane: its mean, axes and quantiles


@torch.no_grad()
def sampler_plane(sampler: Any, n: int = 20, generator: torch.Generator | None = None,
                  draws: int = PLANE_DRAWS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a fitted sampler's manifold lies: the plane through the mean of `draws` of its latents, spanned
    by their first two principal directions, each swept over the draws' own 5% to 95% quantiles along it.

    Returns center (D,), axes (2, D) (unit, orthogonal, the larger variance first, each signed so that its
    largest entry is positive) and values (2, n) (ascending quantiles of the centered draws along each axis).
    """
    z = sampler.sample(draws, generator).double()  # (draws, D)
    center = z.mean(0)
    _, vectors = torch.linalg.eigh(torch.cov((z - center).T))  # ascending eigenvalues
    axes = vectors[:, [-1, -2]].T  # (2, D): the first two principal directions
    signs = axes.gather(1, axes.abs().argmax(1, keepdim=True)).sign()
    axes = axes * torch.where(signs == 0, 1.0, signs)
    levels = torch.linspace(0.05, 0.95, n, dtype=z.dtype, device=z.device)
    values = torch.quantile((z - center) @ axes.T, levels, dim=0).T  # (2, n)
    return center.float(), axes.float(), values.float()


@torch.no_grad()
def plane_manifold(model: LatentVariableModel, center: torch.Tensor, axes: torch.Tensor,
                   values: torch.Tensor) -> torch.Tensor:
    """The decoded grid center + a u_1 + b u_2 over a in values[0] (across) and b in values[1] (down, the highest
    at the top), as `manifold` lays out its grid: (n * n, C, H, W)."""
    model.require("manifold")
    n = values.shape[1]
    across, down = values[0].repeat(n), values[1].flip(0).repeat_interleave(n)
    z = center + across[:, None] * axes[0] + down[:, None] * axes[1]
    return model.pictures(z.to(next(model.parameters()).device))
