"""Encoder/decoder pairs from a config: the built-in architectures, and a user's own builder.

`model.architecture` is a built-in name (vaekit.registry.ARCHITECTURES), "custom" (networks given in
Python: `VAE(config, encoder=..., decoder=...)`), or an importable builder "package.module:function".
A builder is called as `build(config)` with the run's ModelConfig and returns (encoder, decoder):

- the encoder maps images (B, C, H, W) to the posterior's (mu, logvar), each (B, D);
- the decoder maps latents (..., D) to likelihood parameters (..., C', H, W), C' = `decoder_channels(config)`.

Only the builder's name is stored in config.json; loading the run imports it again (nothing is pickled).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from .. import likelihoods
from ..config import BUILDER_PATTERN, CUSTOM_ARCHITECTURE, ModelConfig
from ..errors import ConfigError
from ..registry import ARCHITECTURES


def decoder_channels(config: ModelConfig) -> int:
    """C', the channels per pixel the decoder of `config` gives: what its likelihood needs, times
    (1 + context_features) with pixel groups."""
    per_channel = likelihoods.get(config.likelihood, config).output_channels(config.input_shape[0])
    return per_channel * (1 + config.context_features)


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) for `config`, from a built-in architecture or the user's builder."""
    if config.architecture in ARCHITECTURES:
        return ARCHITECTURES.load(config.architecture)(config)
    if config.architecture == CUSTOM_ARCHITECTURE:
        raise ConfigError("this model's networks were given in Python (model.architecture custom), so vaekit cannot "
                          "build them; pass the model: load_run(path, model=VAE(config, encoder=..., decoder=...)), "
                          "or resume(path, model=...)")
    builder = load_builder(config.architecture)
    try:
        pair = builder(config)
    except ConfigError:
        raise
    except Exception as e:  # the user's code: any failure is reported as theirs, in one line
        raise ConfigError(f"--architecture {config.architecture}: the builder failed ({type(e).__name__}: "
                          f"{_first_line(e)})") from None
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(m, nn.Module) for m in pair)):
        raise ConfigError(f"--architecture {config.architecture}: a builder returns (encoder, decoder), two "
                          f"torch.nn.Modules; got {type(pair).__name__}")
    return pair


def load_builder(name: str):
    """The builder function named "package.module:function"; ConfigError in one line if it cannot be had."""
    if not BUILDER_PATTERN.match(name):
        raise ConfigError(f"model.architecture must be one of {', '.join(ARCHITECTURES.names())}, or a builder "
                          f"'package.module:function', got {name!r}")
    module_name, _, attribute = name.partition(":")
    if module_name.split(".")[0] in _REFUSED_MODULES:
        raise ConfigError(f"--architecture {name}: a builder comes from the user's own module, not from "
                          f"{module_name.split('.')[0]}")
    try:
        value = importlib.import_module(module_name)
    except Exception as e:  # importing runs the user's module: any failure is theirs, said in one line
        missing = e.name if isinstance(e, ModuleNotFoundError) else None
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):  # not one it imports
            file = Path(*module_name.split(".")).with_suffix(".py")
            hint = ("is it installed, or on PYTHONPATH?" if not file.is_file() else
                    f"{file} is in this folder, but Python does not look here: run with PYTHONPATH=.")
            raise ConfigError(f"--architecture {name}: cannot import {module_name} ({_first_line(e)}); "
                              f"{hint}") from None
        raise ConfigError(f"--architecture {name}: importing {module_name} failed ({type(e).__name__}: "
                          f"{_first_line(e)})") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"--architecture {name}: {module_name} has no {attribute}")
        value = getattr(value, part)
    if not callable(value):
        raise ConfigError(f"--architecture {name}: {attribute} is not a function")
    return value


def _first_line(error: Exception) -> str:
    """The first line of an exception's message, for a one-line error."""
    return str(error).splitlines()[0] if str(error).strip() else "no message"


# A config.json read from elsewhere names the builder to import: never one of Python's own modules (say
# os:system), whose functions would run with the config as their argument, nor one of vaekit's own dependencies
# or the running program (__main__). Any other module it names is imported: load only runs you trust.
_REFUSED_MODULES = frozenset(sys.stdlib_module_names) | {
    "__main__", "vaekit", "torch", "numpy", "PIL", "safetensors", "tqdm", "matplotlib", "constriction", "pip",
    "setuptools", "pkg_resources", "_distutils_hack"}


@torch.no_grad()
def check_networks(encoder: nn.Module, decoder: nn.Module, config: ModelConfig, source: str) -> None:
    """ConfigError in one line unless the networks keep the contract on a batch of two blank images."""
    parameter = next(iter(encoder.parameters()), None)
    if parameter is not None and parameter.device.type == "meta":
        return  # sized, not built: nothing to run
    c, h, w = config.input_shape
    modes = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    try:
        out = encoder(torch.zeros(2, c, h, w))
        shape = (2, config.latent_dim)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(torch.is_tensor(t) for t in out)
                and all(tuple(t.shape) == shape for t in out)):
            got = (", ".join(str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__ for t in out)
                   if isinstance(out, (tuple, list)) else type(out).__name__)
            raise ConfigError(f"{source}: the encoder must return (mu, logvar), each of shape (B, {config.latent_dim}) "
                              f"for --latent {config.latent_dim}; for a batch of 2 it returned {got}")
        # latents (B, D) in training, (S, B, D) for S importance samples per image (--iwae, --iw-samples)
        for lead in ((2,), (3, 2)):
            params = decoder(torch.zeros(*lead, config.latent_dim))
            want = (*lead, decoder_channels(config), h, w)
            if not torch.is_tensor(params) or tuple(params.shape) != want:
                got = tuple(params.shape) if torch.is_tensor(params) else type(params).__name__
                shape = "B" if len(lead) == 1 else "S, B"
                raise ConfigError(f"{source}: the decoder must map ({shape}, {config.latent_dim}) latents to ({shape}, "
                                  f"{want[-3]}, {h}, {w}) likelihood parameters ({config.likelihood}); for "
                                  f"{tuple(want[:-3]) + (config.latent_dim,)} it returned {got}")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{source}: the networks failed on a batch of two {c}x{h}x{w} images "
                          f"({type(e).__name__}: {_first_line(e)})") from None
    finally:
        encoder.train(modes[0])
        decoder.train(modes[1])
