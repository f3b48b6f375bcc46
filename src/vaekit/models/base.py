"""The model-family contract: what every part of vaekit asks of a model, and nothing more.

A family (vaekit.registry.FAMILIES) is one subclass of `LatentVariableModel`. Written once, it trains with
bitwise resume, evaluates (the -ELBO terms, the importance-sampled NLL, diagnostics), samples,
reconstructs, interpolates, traverses, embeds, probes, reports and scores, because those commands call
only the methods below. What a family cannot serve it says in `unsupported`, and the command stops with
that line (exit 2).

The latent, as every command sees it, is one flat vector per image, (..., D) with D = `latent_dim`: a
hierarchical family lays its layers side by side in it, top first (`layers`). Noise is drawn by the caller
in that shape from seeded generators, (B, D) or (S, B, D) for S samples per image, and passed in, so a
family never owns a random stream: that is what makes runs repeat and resume bit for bit.

Training calls `objective(x, model(x, eps), eps, ...)`: the forward pass goes through `__call__`, so a
DistributedDataParallel wrapper sees it, and the loss is a pure function of its outputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn

from .. import likelihoods
from ..config import CUSTOM_ARCHITECTURE, MAX_PARAMETERS, ModelConfig
from ..errors import ConfigError
from ..registry import ARCHITECTURES, FAMILIES
from .posterior import DiagonalGaussian

if TYPE_CHECKING:
    from ..objectives import ELBOTerms

# every use a command makes of a model, what it is called in a refusal, and the contract methods it needs
USES = {
    "train": ("train", ("forward", "objective")),
    "tc": ("train with the beta-TCVAE objective (--tc-beta)", ("forward", "tc_objective")),
    "eval": ("evaluate the ELBO", ("elbo", "usage")),
    "nll": ("estimate the importance-sampled NLL", ("iw_context", "log_weights")),
    "sample": ("sample", ("sample_prior", "decode")),
    "reconstruct": ("reconstruct", ("encode", "decode")),
    "interpolate": ("interpolate", ("encode", "decode")),
    "traverse": ("traverse its latents", ("encode", "usage", "decode")),
    "manifold": ("draw a manifold", ("usage", "decode")),
    "embed": ("embed images", ("encode",)),
    "score": ("score images", ("elbo", "encode", "decode")),
    "compress": ("compress images", ()),
}


class LatentUsage(NamedTuple):
    """What the diagnostics read of a batch: the posterior means (B, D), and each dimension's KL to its
    prior (B, D) where that has a closed form (else None)."""

    means: torch.Tensor
    kl_per_dim: torch.Tensor | None


class LatentVariableModel(nn.Module):
    """A VAE family: images (B, C, H, W) in [0, 1], a flat latent (B, D), pixel-likelihood parameters."""

    family: ClassVar[str] = ""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.likelihood = likelihoods.get(config.likelihood, config)

    # --- shape ---------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """D, the length of the flat latent vector (all layers)."""
        return self.config.latent_dim

    @property
    def layers(self) -> tuple[tuple[str, slice], ...]:
        """(name, slice of the flat latent) per stochastic layer, top first. One layer: ("z", all of it)."""
        return (("z", slice(0, self.latent_dim)),)

    def layer(self, name: str | None) -> tuple[str, slice]:
        """The layer called `name` (None: the top one, what `embed` gives by default; "all": the whole flat
        latent); ConfigError if none is."""
        if name is None:
            return self.layers[0]
        if name == "all":
            return "all", slice(0, self.latent_dim)
        for layer in self.layers:
            if layer[0] == name:
                return layer
        raise ConfigError(f"no latent layer {name!r}: this {self.family} model's layers are "
                          + ", ".join(n for n, _ in self.layers))

    def unsupported(self, use: str) -> str | None:
        """Why this model cannot serve `use` (one of USES), or None if it can: by default, because the family
        does not implement a method the use needs, and bits-back coding only where a family provides it."""
        what, needs = USES[use]
        missing = [name for name in needs if getattr(type(self), name) is getattr(LatentVariableModel, name)]
        if missing:
            return f"the {self.family} family cannot {what}: it does not implement {', '.join(missing)}"
        if use == "compress":
            return f"bits-back coding is not available for the {self.family} family"
        return None

    def require(self, use: str) -> None:
        """ConfigError with `unsupported`'s reason, if there is one."""
        reason = self.unsupported(use)
        if reason:
            raise ConfigError(reason)

    # --- training and evaluation ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> Any:
        """The forward pass for the noise eps (B, D) or (S, B, D); what `objective` takes as `output`."""
        raise NotImplementedError

    def objective(self, x: torch.Tensor, output: Any, eps: torch.Tensor, *, kl_weight: torch.Tensor | float = 1.0,
                  free_bits: float = 0.0) -> torch.Tensor:
        """The training loss summed over the batch, from `forward`'s output: -ELBO with the KL weighted by
        kl_weight and floored per dimension at free_bits nats, or the negative IWAE bound when eps is (S, B, D)."""
        raise NotImplementedError

    def tc_objective(self, x: torch.Tensor, output: Any, eps: torch.Tensor, *, dataset_size: int,
                     kl_weight: torch.Tensor | float, tc_weight: torch.Tensor | float) -> torch.Tensor:
        """The beta-TCVAE objective (vaekit.total_correlation) from `forward`'s output for eps (B, D): a (4,)
        tensor [loss summed over the batch, then its mutual information, total correlation and dimension-wise KL
        summed over the batch], with the total correlation weighted by tc_weight and the other two by kl_weight."""
        raise NotImplementedError

    def freeze(self) -> Any:
        """What evaluation computes once for weights that will not change (given back to `elbo`, `log_weights`)."""
        return None

    def elbo(self, x: torch.Tensor, eps: torch.Tensor, frozen: Any = None) -> ELBOTerms:
        """The -ELBO terms per image for one posterior sample per image, eps (B, D)."""
        raise NotImplementedError

    def iw_context(self, x: torch.Tensor) -> Any:
        """What `log_weights` needs of a chunk of images that does not depend on the samples."""
        raise NotImplementedError

    def log_weights(self, x: torch.Tensor, context: Any, eps: torch.Tensor, amp_dtype: torch.dtype | None = None,
                    frozen: Any = None) -> torch.Tensor:
        """log p(x, z_s) - log q(z_s|x), (S, B), for the samples z_s made from eps (S, B, D): the importance
        weights of the IWAE bound. With amp_dtype, only the decoder may run under autocast."""
        raise NotImplementedError

    # --- latents and images --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) over the flat latent, (B, D): for a hierarchy, each layer's posterior given the posterior
        means of the layers above (the code that embed, reconstruct and interpolate read)."""
        raise NotImplementedError

    def usage(self, x: torch.Tensor) -> LatentUsage:
        """Posterior means and per-dimension KLs of a batch, for the diagnostics."""
        raise NotImplementedError

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), (n, D)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Likelihood parameters (..., C', H, W) for latents z (..., D); x, where given, is the image whose
        likelihood is wanted (a decoder with pixel context conditions on it)."""
        raise NotImplementedError

    def pictures(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] to show for latents z (..., D)."""
        return self.pixel_means(self.decode(z, generator=generator))

    def pixel_means(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z] in [0, 1] from likelihood parameters."""
        return self.likelihood.means(params)


# ModelConfig fields added after run format 5, left out of a fingerprint while they hold these values: a
# model that could be written before them keeps the fingerprint its compressed files name
_FINGERPRINT_NEW_FIELDS = {"family": "vae", "latent_layers": (), "likelihood_components": 10, "width": 32, "blocks": 2,
                           "latent_shape": "dense"}


def fingerprint_config(config: ModelConfig) -> str:
    """The JSON of `config` that a model fingerprint hashes."""
    fields = {key: value for key, value in config.__dict__.items()
              if not (key in _FINGERPRINT_NEW_FIELDS and value == _FINGERPRINT_NEW_FIELDS[key])}
    return json.dumps(fields, sort_keys=True)


def build_model(config: ModelConfig) -> LatentVariableModel:
    """The model of `config`'s family (vaekit.registry.FAMILIES), freshly initialised from torch's global RNG."""
    return FAMILIES.load(config.family)(config)


def model_fingerprint(model: LatentVariableModel) -> str:
    """SHA-256 of the model's config and weights: a compressed file names the model it needs, and a
    recorded evaluation the weights it measured."""
    digest = hashlib.sha256(fingerprint_config(model.config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def parameter_count(config: ModelConfig) -> int:
    """How many parameters the model of `config` has, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(config).parameters())


def check_size(config: ModelConfig) -> None:
    """ConfigError if the model of `config` would have more than MAX_PARAMETERS parameters: checked before it is
    built. A model whose networks come from the user (a builder, or Python) is bounded by what the user's code
    builds: counted where it can be built on the meta device, else not checked here."""
    if config.architecture not in ARCHITECTURES:
        if config.architecture == CUSTOM_ARCHITECTURE:
            return
        from .architectures import load_builder

        load_builder(config.architecture)  # one that cannot be imported is said now
        try:
            count = parameter_count(config)
        except ConfigError:
            return  # the builder does not build on the meta device; it is checked when it builds for real
    else:
        count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ConfigError(f"the model would have {count:,} parameters, more than vaekit's bound of {MAX_PARAMETERS:,} "
                          "(about 400 MB); make --hidden, --width, --latent, --prior-components or the images smaller")
