"""vaekit: variational autoencoders on image data.

    from vaekit import RunConfig, TrainConfig, fit, load_run
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .errors import VaekitError  # noqa: E402

# The rest of the API loads torch: it is imported on first use, so that `vaekit --help` answers at once.
_LAZY = {
    "ImageSet": "data", "load_split": "data", "evaluate_elbo": "evaluate", "fit": "fit", "resume": "fit",
    "interpolate": "generate", "reconstruct": "generate", "sample": "generate", "VAE": "models",
    "DiagonalGaussian": "models", "ELBOTerms": "objectives", "negative_elbo": "objectives", "Run": "runs",
    "load_run": "runs", "set_threads": "threads", "Trainer": "train",
    "Detector": "detector", "LatentVariableModel": "models",
}

__all__ = [
    "VAE", "DataConfig", "Detector", "DiagonalGaussian", "ELBOTerms", "ImageSet", "LatentVariableModel", "ModelConfig",
    "Run", "RunConfig",
    "TrainConfig", "Trainer", "VaekitError", "__version__", "evaluate_elbo", "fit", "interpolate",
    "load_run", "load_split", "negative_elbo", "reconstruct", "resume", "sample", "set_threads",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # importing the submodule vaekit.fit sets the attribute `fit` to it; the API's `vaekit.fit` is the function
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
