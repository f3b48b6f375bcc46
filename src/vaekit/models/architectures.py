"""Encoder/decoder pairs from a config: the built-in architectures, and a user's own builder.

`model.architecture` is a built-in name (vaekit.registry.ARCHITECTURES), "custom" (networks given in
Python: `VAE(config, encoder=..., decoder=...)`), or an importable builder "package.module:function".
A builder is called as `build(config)` with the run's ModelConfig and returns (encoder, decoder):

- the encoder maps images (B, C, H, W) to the posterior's (mu, logvar), each (B, D);
- the decoder maps latents (..., D) to likelihood parameters (..., C', H, W), C' = `decoder_channels(config)`.

Only the builder's name is stored in config.json; loading the run imports it again (nothing is pickled).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import likelihoods
from ..config import BUILDER_PATTERN, CUSTOM_ARCHITECTURE, ModelConfig
from ..errors import ConfigError
from ..registry import ARCHITECTURES, import_target

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
                          "build them; pass the model: load_run(path, model=VAE(config, encoder=..., decoder=...))")
    builder = load_builder(config.architecture)
    try:
        pair = builder(config)
    except ConfigError:
        raise
    except Exception as e:  # the user's code: any failure is reported as theirs, in one line
        raise ConfigError(f"--architecture {config.architecture}: the builder failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(m, nn.Module) for m in pair)):
        raise ConfigError(f"--architecture {config.architecture}: a builder returns (encoder, decoder), two "
                          f"torch.nn.Modules; got {type(pair).__name__}")
    return pair


def load_builder(name: str):
    """The builder function named "package.module:function"; ConfigError in one line if it cannot be had."""
    if not BUILDER_PATTERN.match(name):
        raise ConfigError(f"model.architecture must be one of {', '.join(ARCHITECTURES.names())}, or a builder "
                          f"'package.module:function', got {name!r}")
    module = name.partition(":")[0]
    if module.split(".")[0] in _REFUSED_MODULES:
        raise ConfigError(f"--architecture {name}: a builder comes from the user's own module, not from "
                          f"{module.split('.')[0]}")
    try:
        builder = import_target(name)
    except ImportError as e:
        raise ConfigError(f"--architecture {name}: cannot import {module} ({e}); is it installed, or on "
                          "PYTHONPATH?") from None
    except AttributeError:
        raise ConfigError(f"--architecture {name}: {module} has no {name.partition(':')[2]}") from None
    except Exception as e:  # importing runs the user's module
        raise ConfigError(f"--architecture {name}: importing {module} failed ({type(e).__name__}: {e})") from None
    if not callable(builder):
        raise ConfigError(f"--architecture {name}: {name.partition(':')[2]} is not a function")
    return builder


# A config.json read from elsewhere names the builder to import: never one of Python's own modules (say
# os:system), whose functions would run with the config as their argument.
_REFUSED_MODULES = frozenset(__import__("sys").stdlib_module_names) | {"torch", "numpy", "vaekit"}


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
        params = decoder(torch.zeros(2, config.latent_dim))
        want = (2, decoder_channels(config), h, w)
        if not torch.is_tensor(params) or tuple(params.shape) != want:
            got = tuple(params.shape) if torch.is_tensor(params) else type(params).__name__
            raise ConfigError(f"{source}: the decoder must map (B, {config.latent_dim}) latents to (B, "
                              f"{want[1]}, {h}, {w}) likelihood parameters ({config.likelihood}); for a batch "
                              f"of 2 it returned {got}")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{source}: the networks failed on a batch of two {c}x{h}x{w} images "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'})") from None
    finally:
        encoder.train(modes[0])
        decoder.train(modes[1])
