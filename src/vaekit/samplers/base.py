"""The sampler contract and its config: what `sample`, `quality` and `report` ask of a sampler."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from . import COVARIANCES, SAMPLERS

MAX_COMPONENTS = 1000
MAX_ITERATIONS = 10_000
MAX_EPOCHS = 1000
MAX_HIDDEN = 4096
MAX_LAYERS = 32


@dataclass(frozen=True)
class SamplerConfig:
    """How a sampler is built and fitted; the fields a sampler does not read stay at their defaults."""

    name: str = "prior"
    components: int = 10  # gmm: mixture components
    covariance: str = "full"  # gmm: "full" or "diagonal"
    iterations: int = 100  # gmm: the most EM iterations (it stops earlier when the log-likelihood settles)
    epochs: int = 10  # flow, two-stage: passes over the latents
    hidden: int = 128  # flow, two-stage: hidden units per layer
    layers: int = 6  # flow: coupling layers
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS.names())}")
        if self.covariance not in COVARIANCES:
            raise ConfigError(f"covariance must be one of {', '.join(COVARIANCES)}, got {self.covariance!r}")
        for name, most in (("components", MAX_COMPONENTS), ("iterations", MAX_ITERATIONS), ("epochs", MAX_EPOCHS),
                           ("hidden", MAX_HIDDEN), ("layers", MAX_LAYERS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ConfigError(f"sampler {name} must be an integer from 1 to {most:,}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"sampler seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields this sampler reads (and its name and seed): what its file records."""
        keep = ("name", "seed", *SAMPLERS.get(self.name).options)
        return {key: value for key, value in dataclasses.asdict(self).items() if key in keep}

    @classmethod
    def from_dict(cls, document: Any) -> SamplerConfig:
        """Strictly: a JSON object with known fields of the right types (ConfigError otherwise)."""
        if not isinstance(document, dict):
            raise ConfigError("a sampler config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ConfigError(f"unknown sampler field(s): {', '.join(map(str, unknown))}")
        name = document.get("name")
        if not isinstance(name, str) or name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {name!r}")
        reads = {"name", "seed", *SAMPLERS.get(name).options}
        extra = sorted(set(document) - reads)
        if extra:
            raise ConfigError(f"the {name} sampler has no field(s) {', '.join(extra)}")
        for key in ("covariance",):
            if key in document and not isinstance(document[key], str):
                raise ConfigError(f"sampler {key} must be text, got {document[key]!r}")
        return cls(**document)


class LatentSampler(nn.Module):
    """Draws flat latents z (n, D) that the model decodes. Fitted samplers learn a density of the training
    posterior means in `fit`; their state (parameters and buffers) is what RUN/samplers/NAME.safetensors holds."""

    name: ClassVar[str] = ""

    def __init__(self, config: SamplerConfig, dim: int):
        super().__init__()
        self.config, self.dim = config, dim

    def fit(self, latents: torch.Tensor, generator: torch.Generator, progress: bool = False) -> dict[str, Any]:
        """Fit to latents (N, D); returns what the file records of the fit (finite numbers)."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, D), in random order (a mixture's are not grouped by component)."""
        raise NotImplementedError

    def check(self) -> None:
        """ValueError if loaded state breaks what fitting guarantees (beyond shapes and finiteness)."""


def standardizer(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-dimension mean and deviation (D,) of latents (N, D), the deviation floored at 1e-6."""
    return latents.mean(0), latents.std(0).clamp_min(1e-6)
