"""The VAE: an encoder, a decoder and a prior, built from a ModelConfig, and nothing else (no loss, no I/O)."""

from __future__ import annotations

import hashlib
import json
import math

import torch
from torch import nn

from ..config import MAX_PARAMETERS, ModelConfig
from ..errors import ConfigError
from ..likelihoods import output_channels, pixel_means
from ..rng import make_generator
from . import conv, mlp
from .context import PixelContext
from .posterior import DiagonalGaussian, mixture_log_prob, standard_normal_log_prob

# architecture name -> build(input_shape, hidden_dims, latent_dim, out_channels, conv_channels) -> (encoder, decoder)
ARCHITECTURES = {"mlp": mlp.build, "conv": conv.build}


class VAE(nn.Module):
    """x (B, C, H, W) in [0, 1] -> q(z|x) -> z (B, D) -> likelihood parameters (B, C', H, W).

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes". The prior is N(0, I) or a VampPrior,
    a mixture of the posteriors of learned pseudo-inputs (Tomczak & Welling 2018).
    """

    def __init__(self, config: ModelConfig = ModelConfig()):  # noqa: B008  (frozen, so one shared default is safe)
        super().__init__()
        self.config = config
        c, h, w = config.input_shape
        self.encoder, self.decoder = ARCHITECTURES[config.architecture](
            config.input_shape, config.hidden_dims, config.latent_dim,
            output_channels(config.likelihood, c) * (1 + config.context_features), config.conv_channels)
        if config.prior == "vamp":
            # pseudo-inputs live in logit space; sigmoid keeps them images in [0, 1] (the paper's hardtanh)
            self.pseudo_inputs = nn.Parameter(torch.randn(config.prior_components, c, h, w) * 0.1)
        if config.pixel_groups > 1:
            self.context = PixelContext(config.pixel_groups, c, config.context_channels, config.context_features)
        if config.likelihood == "gaussian-shared":
            # one log standard deviation for all pixels, learned with the rest; starts at 0.1
            self.log_std = nn.Parameter(torch.full((), math.log(0.1)))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def analytic_kl(self) -> bool:
        """Whether KL(q || p) has a closed form (the standard normal prior), rather than a sampled one."""
        return self.config.prior == "normal"

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for a batch of images (B, C, H, W)."""
        mu, logvar = self.encoder(x)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Likelihood parameters (..., C', H, W) for latents z (..., D); see vaekit.likelihoods.

        With pixel groups (vaekit.models.context) the pixels also depend on each other: given the images x
        (broadcastable to the output), each group's parameters are conditioned on x's earlier groups, which
        is what the likelihood of x needs; without x, on earlier groups sampled from `generator` (default: seeded
        with 0, so pictures repeat).
        """
        params = self.decoder(z)
        if self.config.pixel_groups > 1:
            if x is not None:
                return self.context(params, x)
            return self.context.sample(params, generator or make_generator(0, params.device))
        if self.config.likelihood == "gaussian-shared":
            params = torch.cat([params, self.log_std.to(params.dtype).expand_as(params)], dim=-3)
        return params

    def pictures(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] to show for latents z (..., D): E[x|z]; for a pixel-group model, whose mean has
        no closed form, a binary image drawn group by group (from `generator`, default seeded with 0).
        Its groups' probabilities side by side would mix soft first-group pixels with crisp later ones."""
        if self.config.pixel_groups > 1:
            params = self.decoder(z)
            return self.context.draw(params, generator or make_generator(0, params.device))
        return self.pixel_means(self.decode(z))

    def pixel_means(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z] in [0, 1] from decoder outputs: the image to show."""
        return pixel_means(params, self.config.likelihood)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension, (...,)."""
        if self.config.prior == "normal":
            return standard_normal_log_prob(z)
        components = self.encode(torch.sigmoid(self.pseudo_inputs))
        return mixture_log_prob(z, components.mu, components.logvar)

    @torch.no_grad()
    def frozen_prior_log_prob(self):
        """`prior_log_prob` for a model that will not change: the VampPrior's components computed once.

        For evaluation, where log p(z) is asked for thousands of times with the same weights.
        """
        if self.config.prior == "normal":
            return standard_normal_log_prob
        components = self.encode(torch.sigmoid(self.pseudo_inputs))
        return lambda z: mixture_log_prob(z, components.mu, components.logvar)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), (n, D)."""
        device = next(self.parameters()).device
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device)
        if self.config.prior == "normal":
            return eps
        components = self.encode(torch.sigmoid(self.pseudo_inputs))
        k = torch.randint(len(components.mu), (n,), generator=generator, device=device)
        return DiagonalGaussian(components.mu[k], components.logvar[k]).rsample(eps)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_params, mu, logvar) for x, with z = mu + std * eps; eps (B, D) or (S, B, D) for S samples
        per image, drawn from `generator` if not given."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if eps is None else posterior.rsample(eps)
        return self.decode(z, x), posterior.mu, posterior.logvar


def model_fingerprint(model: VAE) -> str:
    """SHA-256 of the model's config and weights: a compressed file names the model it needs, and a
    recorded evaluation the weights it measured."""
    digest = hashlib.sha256(json.dumps(model.config.__dict__, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def parameter_count(config: ModelConfig) -> int:
    """How many parameters the VAE of `config` has, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(config).parameters())


def check_size(config: ModelConfig) -> None:
    """ConfigError if the VAE of `config` would have more than MAX_PARAMETERS parameters: checked before it is built."""
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ConfigError(f"the model would have {count:,} parameters, more than vaekit's bound of {MAX_PARAMETERS:,} "
                          "(about 400 MB); make --hidden, --latent, --prior-components or the images smaller")
