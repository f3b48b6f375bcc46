"""Measuring a trained model on held-out images: per-sample nats, averaged at the end."""

from __future__ import annotations

import torch

from .models import VAE
from .objectives import negative_elbo
from .rng import derive_seed, make_generator

EVAL_BATCH = 1000


@torch.no_grad()
def evaluate_elbo(model: VAE, x: torch.Tensor, seed: int, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean negative ELBO and its two terms over inputs x (N, C, H, W), per sample in nats.

    One posterior sample per image from a generator seeded by `seed`, so the numbers repeat exactly.
    Keys: test_loss, reconstruction, kl.
    """
    was_training = model.training
    model.eval()
    noise = make_generator(derive_seed(seed, "eval-noise"), x.device)
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        eps = torch.randn(len(batch), model.latent_dim, generator=noise, device=x.device)
        terms = negative_elbo(batch, *model(batch, eps))
        sums += torch.stack([t.sum(dtype=torch.float64) for t in terms])
    model.train(was_training)
    loss, reconstruction, kl = (sums / len(x)).tolist()
    return {"test_loss": loss, "reconstruction": reconstruction, "kl": kl}
