"""The training loop: one epoch at a time over a split held as a single uint8 tensor.

It knows nothing of files, plots or the CLI; vaekit.fit drives it and writes what each epoch gives.
The model it steps may be any module whose forward is `(x, eps) -> (recon_logits, mu, logvar)`,
a DistributedDataParallel wrapper included.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .data.batches import epoch_order, prepare
from .objectives import negative_elbo
from .rng import derive_seed, make_generator


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam at the config's learning rate, with the fused kernel where the device has one."""
    try:
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
        return torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)


class Trainer:
    """Owns the optimizer and the count of finished epochs; `train_epoch()` runs the next epoch."""

    def __init__(self, model: nn.Module, images: torch.Tensor, config: TrainConfig, binarize: str,
                 latent_dim: int):
        self.model = model
        self.images = images  # (N, C, H, W) uint8, on the training device
        self.config = config
        self.binarize = binarize
        self.latent_dim = latent_dim
        self.optimizer = make_optimizer(model, config)
        self.epoch = 0  # epochs finished

    def train_epoch(self, progress: bool = False) -> float:
        """Train one epoch; returns the mean per-sample negative ELBO over it, in nats."""
        epoch, seed = self.epoch + 1, self.config.seed
        device, n, batch_size = self.images.device, len(self.images), self.config.batch_size
        order = epoch_order(n, seed, epoch).to(device)
        noise = make_generator(derive_seed(seed, "noise", epoch), device)
        flips = make_generator(derive_seed(seed, "binarize", epoch), device) if self.binarize == "dynamic" else None
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress):
            x = prepare(self.images[order[start:start + batch_size]], self.binarize, flips)
            eps = torch.randn(len(x), self.latent_dim, generator=noise, device=device)
            loss = negative_elbo(x, *self.model(x, eps)).loss  # (B,)
            self.optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            self.optimizer.step()
            total += loss.detach().sum()
        self.epoch = epoch
        return total.item() / n
