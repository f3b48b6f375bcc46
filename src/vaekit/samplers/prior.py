"""The `prior` sampler: the model's own prior, what `vaekit sample` drew from before samplers existed."""

from __future__ import annotations

import torch

from ..models import LatentVariableModel


class PriorSampler:
    """z ~ p(z), as the model's family draws it (`sample_prior`); nothing to fit or store."""

    name = "prior"

    def __init__(self, model: LatentVariableModel):
        self.model = model

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.sample_prior(n, generator)
