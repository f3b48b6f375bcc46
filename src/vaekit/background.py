"""The likelihood ratio against a background model (Ren et al. 2019, "Likelihood ratios for
out-of-distribution detection", NeurIPS).

A likelihood model's score mixes two things: how well an image's content fits the training data, and
the background statistics every image of its kind shares (flat backgrounds, few strokes), which dominate
it. A second model of the same kind, trained on the training images with a share of their pixels replaced
by noise, learns the background statistics but not the content; the difference of the two scores,

    -LLR(x) = -log p(x) + log p_background(x)        (Ren et al., eq. 5, negated: higher is more anomalous)

cancels the background and keeps the content. `perturb` makes the background model's training images
(their section 4: each pixel replaced by a uniform random value with probability mu, 0.1-0.3).
"""

from __future__ import annotations

import torch

DEFAULT_RATE = 0.2  # Ren et al.'s mu for Fashion-MNIST lies in 0.1-0.3


def perturb(images: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (any shape) with each value replaced, with probability `rate`, by a uniform draw from 0..255."""
    if images.dtype != torch.uint8:
        raise ValueError(f"perturb takes uint8 images, got {images.dtype}")
    if not 0 <= rate <= 1:
        raise ValueError(f"the perturbation rate must be in [0, 1], got {rate}")
    replaced = torch.rand(images.shape, generator=generator) < rate
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(replaced, noise, images)


def ratio_scores(scores: torch.Tensor, background_scores: torch.Tensor) -> torch.Tensor:
    """The negative log-likelihood ratio (N,) in nats: the model's scores minus the background model's,
    both -log p of the same images."""
    if scores.shape != background_scores.shape:
        raise ValueError(f"one background score per score: got {tuple(scores.shape)} and "
                         f"{tuple(background_scores.shape)}")
    return scores.double() - background_scores.double()
