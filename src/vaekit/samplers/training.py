"""The loop that fits the neural samplers (flow, two-stage) to latents: Adam, cosine decay, seeded batches."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

BATCH = 256
LR = 1e-3


def train_density(module: torch.nn.Module, loss: Callable[[torch.Tensor, float], torch.Tensor], latents: torch.Tensor,
                  epochs: int, generator: torch.Generator, progress: bool = False, desc: str = "fit") -> float:
    """Minimise loss(batch, fraction of training done) (per-latent mean) over `epochs` shuffled passes of latents
    (N, D); returns the last epoch's mean loss. The order of batches comes from `generator` alone: a fit repeats."""
    optimizer = torch.optim.Adam(module.parameters(), lr=LR)
    steps_per_epoch = math.ceil(len(latents) / BATCH)
    total = epochs * steps_per_epoch
    module.train()
    last = math.nan
    with tqdm(total=total, desc=desc, unit="step", leave=False, disable=not progress) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(latents), generator=generator).to(latents.device)
            running, seen = 0.0, 0
            for step, start in enumerate(range(0, len(latents), BATCH)):
                t = (epoch * steps_per_epoch + step) / total
                for group in optimizer.param_groups:
                    group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * t))
                batch = latents[order[start:start + BATCH]]
                value = loss(batch, t)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                torch.nn.utils.clip_grad_norm_(module.parameters(), 100.0)
                optimizer.step()
                running += value.item() * len(batch)
                seen += len(batch)
                bar.update()
            last = running / seen
            bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} loss {last:.4f}", refresh=False)
            if not math.isfinite(last):
                raise ValueError(f"the loss became {last} in epoch {epoch + 1}")
    module.eval()
    return last


def seeded_init(seed: int, build: Callable[[], None]) -> None:
    """Run `build` (which creates modules) with torch's global RNG seeded from `seed`, then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        build()
