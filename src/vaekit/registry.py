"""The named parts a run config chooses from: model families, encoder/decoder architectures, priors and
pixel likelihoods. One registry each, in a module that imports nothing heavy.

Config validation reads these (vaekit.config), the CLI builds its choices from them, and the model code
resolves a name to its implementation through them; nothing else tests the names. An entry is a spec: the
name, where its implementation lives ("module:attribute", imported on first use, so `vaekit --help` never
loads torch), and what config validation needs to know about it.

Adding a family, prior or likelihood is one module with its code and one `register(...)` here (or, from a
user's own code, `vaekit.registry.FAMILIES.register(FamilySpec(...))` before the config is built); see
docs/write-your-own-family.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class FamilySpec:
    """A model family: how its latents are laid out and which other choices it accepts."""

    name: str
    target: str  # "module:Class", a subclass of vaekit.models.base.LatentVariableModel
    summary: str
    hierarchical: bool = False  # latents in model.latent_layers (at least 2, top first), else one model.latent_dim
    priors: tuple[str, ...] | None = None  # the priors it accepts (None: any)
    architectures: tuple[str, ...] | None = None  # the built-in architectures it accepts (None: any, and builders)
    pixel_context: bool = True  # whether it takes model.pixel_groups > 1
    # what `vaekit train --family NAME` starts from, where the flags leave a choice: ModelConfig fields, and
    # TrainConfig fields over vaekit's recipe (the learning rate scaled as the recipe scales its own)
    model_defaults: tuple[tuple[str, Any], ...] = ()
    recipe: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class PriorSpec:
    """A prior p(z) over the (top) latent."""

    name: str
    target: str  # "module:Class", a vaekit.priors.Prior
    summary: str
    fields: tuple[str, ...] = ()  # ModelConfig fields only this prior reads
    closed_form_kl: bool = False  # KL(q || p) per latent dimension in closed form: free bits and KL per dimension


@dataclass(frozen=True)
class LikelihoodSpec:
    """A pixel likelihood p(x|z)."""

    name: str
    target: str  # "module:Class", a vaekit.likelihoods.Likelihood
    summary: str
    binary: bool = False  # a distribution over {0, 1} pixels: what bits-back coding and pixel groups need
    discrete_8bit: bool = False  # a distribution over the 256 values k / 255: its NLL gives 8-bit bits/dim
    fields: tuple[str, ...] = ()  # ModelConfig fields only this likelihood reads


@dataclass(frozen=True)
class ArchitectureSpec:
    """A built-in encoder/decoder pair, built as `build(config) -> (encoder, decoder)`."""

    name: str
    target: str  # "module:function"
    summary: str
    fields: tuple[str, ...] = ()  # ModelConfig fields only this architecture reads


S = TypeVar("S")


class Registry(Generic[S]):
    """Specs by name, in registration order."""

    def __init__(self, kind: str, *specs: S):
        self.kind = kind
        self._specs: dict[str, S] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: S) -> S:
        name = spec.name  # type: ignore[attr-defined]
        if name in self._specs:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._specs[name] = spec
        return spec

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> S:
        """The spec of `name`; KeyError if there is none (config validation names the choices first)."""
        return self._specs[name]

    def load(self, name: str) -> Any:
        """The implementation of `name`, imported now."""
        return import_target(self.get(name).target)  # type: ignore[attr-defined]


def import_target(target: str) -> Any:
    """The attribute named by "package.module:attribute"."""
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


FAMILIES: Registry[FamilySpec] = Registry(
    "model family",
    FamilySpec("vae", "vaekit.models.vae:VAE", "one diagonal-Gaussian latent (Kingma & Welling 2014)"),
    FamilySpec("hvae", "vaekit.models.hvae:HVAE",
               "a hierarchy of Gaussian latents with top-down inference (Ladder VAE, Sonderby et al. 2016)",
               hierarchical=True, priors=("normal",), architectures=("mlp", "resnet"), pixel_context=False,
               # benchmarks/nll.py's hvae: 82.08 nats (K=5000) after 150 epochs; at lr 6e-3 without a KL
               # warm-up it collapses to its top layer
               model_defaults=(("latent_layers", (8, 16, 32, 64)), ("latent_dim", 120), ("hidden_dims", (512, 256))),
               recipe=(("lr", 2e-3), ("kl_warmup", 10), ("clip_grad", 100.0))),
)

PRIORS: Registry[PriorSpec] = Registry(
    "prior",
    PriorSpec("normal", "vaekit.priors:StandardNormal", "N(0, I)", closed_form_kl=True),
    PriorSpec("vamp", "vaekit.priors:VampPrior",
              "a mixture of the posteriors of learned pseudo-inputs (Tomczak & Welling 2018)",
              fields=("prior_components",)),
)

LIKELIHOODS: Registry[LikelihoodSpec] = Registry(
    "likelihood",
    LikelihoodSpec("bernoulli", "vaekit.likelihoods:Bernoulli", "one logit per pixel", binary=True),
    LikelihoodSpec("continuous-bernoulli", "vaekit.likelihoods:ContinuousBernoulli",
                   "the normalised Bernoulli density on [0, 1] (Loaiza-Ganem & Cunningham 2019)"),
    LikelihoodSpec("gaussian", "vaekit.likelihoods:Gaussian", "a mean and a deviation per pixel"),
    LikelihoodSpec("gaussian-shared", "vaekit.likelihoods:GaussianShared",
                   "a mean per pixel, one learned deviation (Rybkin et al. 2021)"),
    LikelihoodSpec("discretized-logistic", "vaekit.likelihoods:DiscretizedLogistic",
                   "a logistic per pixel discretized to the 256 8-bit values (Salimans et al. 2017)",
                   discrete_8bit=True),
    LikelihoodSpec("discretized-logistic-mixture", "vaekit.likelihoods:DiscretizedLogisticMixture",
                   "a mixture of likelihood_components discretized logistics per pixel (PixelCNN++)",
                   discrete_8bit=True, fields=("likelihood_components",)),
)

ARCHITECTURES: Registry[ArchitectureSpec] = Registry(
    "architecture",
    ArchitectureSpec("mlp", "vaekit.models.mlp:from_config", "the seed's multilayer perceptrons"),
    ArchitectureSpec("conv", "vaekit.models.conv:from_config", "strided 4x4 convolutions and a dense layer",
                     fields=("conv_channels",)),
    ArchitectureSpec("resnet", "vaekit.models.resnet:from_config",
                     "residual blocks with GroupNorm, for colour or gray images of 32 to 128 pixels",
                     fields=("width", "blocks", "latent_shape")),
)
