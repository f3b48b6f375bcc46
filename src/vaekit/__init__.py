"""vaekit: variational autoencoders on image data.

    from vaekit import RunConfig, TrainConfig, fit, load_run
"""

import sys
import types

__version__ = "0.1.0"

# The names below load on first use (PEP 562): `import vaekit`, and so `python -m vaekit`, imports no torch
# until something needs it, which lets the CLI install its signal handlers first (vaekit.__main__).
_EXPORTS = {
    "DataConfig": "config", "ModelConfig": "config", "RunConfig": "config", "TrainConfig": "config",
    "ImageSet": "data", "load_split": "data", "VaekitError": "errors", "evaluate_elbo": "evaluate",
    "fit": "fit", "resume": "fit", "interpolate": "generate", "reconstruct": "generate", "sample": "generate",
    "VAE": "models", "DiagonalGaussian": "models", "ELBOTerms": "objectives", "negative_elbo": "objectives",
    "Run": "runs", "load_run": "runs", "Trainer": "train",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps `vaekit.fit` the function: importing the submodule vaekit.fit would otherwise bind its name here."""

    def __setattr__(self, name, value):
        if not (name in _EXPORTS and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "VAE", "DataConfig", "DiagonalGaussian", "ELBOTerms", "ImageSet", "ModelConfig", "Run", "RunConfig",
    "TrainConfig", "Trainer", "VaekitError", "__version__", "evaluate_elbo", "fit", "interpolate",
    "load_run", "load_split", "negative_elbo", "reconstruct", "resume", "sample",
]
