"""The hierarchical VAE family: Gaussian latent layers with top-down inference (no loss code, no I/O).

A bottom-up deterministic pass reads the image once; a top-down pass then draws the layers from the top,
each one's prior and posterior computed from a deterministic state that carries every layer drawn so far
(Sonderby et al. 2016, "Ladder Variational Autoencoders", Fig. 2b; the residual state and the posterior
read from [state, bottom-up features] as in Child 2021, "Very Deep VAEs", Sec. 3). The pixels are decoded
from the final state, so they depend on every layer, and a flat latent [z1 (top), ..., zL] decodes
deterministically.

    bottom-up:  d_L = MLP(x), widths hidden_dims;  d_l = d_{l+1} + Block(d_{l+1})   (every d_l: W = hidden_dims[-1])
    top-down:   q(z1|x) = N(head(d_1)),  p(z1) = N(0, I),  s = Block(z1)
                for l = 2..L: p(z_l|z_<l) = N(head(s)),  q(z_l|x, z_<l) = N(head(s, d_l)),  s = s + Block(s, z_l)
    pixels:     likelihood parameters = MLP(s), widths reversed(hidden_dims)

With `architecture` resnet the two pixel paths are convolutional (vaekit.models.resnet): d_L = SiLU(linear(trunk(x)))
and the pixels = the resnet decoder of norm(s), each of width hidden_dims[-1] on the latent side; the layers
between stay as above.

Every log-variance is soft-bounded, the priors' below more tightly than the posteriors' (see LOGVAR_MIN for why):
smooth, near the identity in between, so that a variance cannot overflow nor a prior's precision exp(-logvar)
blow up the KL between two layers. The training recipe matters as much: see BENCHMARKS.md (lr 2e-3, KL warm-up).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import objectives
from ..config import ModelConfig
from ..errors import ConfigError
from .architectures import decoder_channels
from .base import LatentUsage, LatentVariableModel
from .posterior import DiagonalGaussian
from .resnet import ResNetDecoder, feature_stem

# Log-variances are soft-bounded (`_soft_clamp`): a posterior's to (LOGVAR_MIN, LOGVAR_MAX), std in (0.018, 2.7),
# a lower layer's prior's to (PRIOR_LOGVAR_MIN, LOGVAR_MAX), std above 0.135. The KL between two layers multiplies
# the squared distance of their means by the prior's precision exp(-logvar): with priors as sharp as the
# posteriors (std 0.018, precision 3,000) one bad step made that KL explode (on MNIST a 4-layer model at lr 2e-3
# had epochs with a mean loss of 1e9 nats, a 5-layer one 3e5; at lr 6e-3 both diverged), while with the prior's
# precision at most e^4 = 55 the 4-layer model trained at 6e-3 (8 epochs on 10,000 images, measured once). The
# top prior is N(0, 1) and the layers below are scaled by the nets that read them, so no layer needs a deviation
# above 2.7 (the upper bound is soft: 2.0025 at most).
LOGVAR_MIN, PRIOR_LOGVAR_MIN, LOGVAR_MAX = -8.0, -4.0, 2.0


def _soft_clamp(logvar: torch.Tensor, low: float = LOGVAR_MIN) -> torch.Tensor:
    """logvar pushed smoothly into (low, LOGVAR_MAX) by two softplus bends: near-identity in between
    (0 -> -0.13), and a gradient that fades towards the bounds instead of stopping at them."""
    logvar = LOGVAR_MAX - F.softplus(LOGVAR_MAX - logvar)
    return low + F.softplus(logvar - low)


def _activation() -> nn.Module:
    return nn.SiLU()


def _mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by the activation (but the last, unless asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(_activation())
    return nn.Sequential(*layers)


class HVAEOutput(NamedTuple):
    """One top-down pass, flat over the layers (top first), each (..., D) but recon_params (..., C', H, W):
    the samples z, each layer's posterior q(z_l|x, z_<l) and prior p(z_l|z_<l) (the top's is N(0, I))."""

    recon_params: torch.Tensor
    z: torch.Tensor
    posterior_mu: torch.Tensor
    posterior_logvar: torch.Tensor
    prior_mu: torch.Tensor
    prior_logvar: torch.Tensor

    @property
    def posterior(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.posterior_mu.float(), self.posterior_logvar.float())

    @property
    def prior(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.prior_mu.float(), self.prior_logvar.float())


class HVAE(LatentVariableModel):
    """x (B, C, H, W) in [0, 1] -> bottom-up features -> top-down layers z1 (top) ... zL -> likelihood parameters.

    config.latent_layers gives the layer sizes, top first (latent_dim is their sum). config.hidden_dims are
    the widths of the MLP from the pixels to the bottom-up features and, reversed, of the MLP from the final
    top-down state back to the pixels, as in the VAE's encoder and decoder; the last entry W is the width of
    every deterministic feature and state between the stochastic layers (each block there is W -> W -> out).
    With the resnet architecture, a resnet trunk and decoder (config.width, config.blocks) replace the two MLPs.
    The top prior is N(0, I); the likelihood is any registered one.
    """

    family = "hvae"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if len(config.latent_layers) < 2 or sum(config.latent_layers) != config.latent_dim:
            raise ConfigError(f"the hvae family needs two or more latent layers summing to latent_dim "
                              f"({config.latent_dim}), got {list(config.latent_layers)}")
        c, h, w = config.input_shape
        sizes, width = config.latent_layers, config.hidden_dims[-1]
        self.output_shape = (decoder_channels(config), h, w)
        self.convolutional = config.architecture == "resnet"  # else the MLPs, on flattened pixels
        if self.convolutional:
            self.stem = feature_stem(config, width)  # x (B, C, H, W) -> d_L (B, W)
        else:
            self.stem = _mlp([c * h * w, *config.hidden_dims], last_activation=True)  # x -> d_L
        # d_l = d_{l+1} + up[l](d_{l+1}), for l = L-1 .. 1: up[i] makes layer i's features (index 0 is the top)
        # Every network that reads a residual stream (d, s) reads it through a LayerNorm ("pre-norm"): its output
        # is then bounded by its own weights, however far the stream drifted. Without, one run at lr 2e-3 saw a
        # few Adam steps move the weights of the deep bottom-up and top-down stacks coherently enough to throw
        # every mean to 1e9 and the loss to inf at epoch 19 (with clip_grad 100 and bounded variances).
        self.up = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), *_mlp([width, width, width], True))
                                for _ in sizes[:-1])
        # posterior heads: act(norm(state_in(s) + feature_in(d_l))) -> (mu, logvar); the top's reads d_1 alone
        self.feature_in = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in sizes)
        self.state_in = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in sizes[1:])
        self.posterior_norm = nn.ModuleList(nn.LayerNorm(width) for _ in sizes)
        self.posterior_out = nn.ModuleList(nn.Linear(width, 2 * n) for n in sizes)
        # priors of the layers below the top: act(norm(s)) -> W -> (mu, logvar)
        self.prior_head = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), _activation(),
                                                      *_mlp([width, width, 2 * n], False)) for n in sizes[1:])
        # the state: s = top_in(z1); s = s + merge[l](norm(s), z_l) below
        self.top_in = _mlp([sizes[0], width, width], last_activation=False)
        self.merge_norm = nn.ModuleList(nn.LayerNorm(width) for _ in sizes[1:])
        self.merge = nn.ModuleList(_mlp([width + n, width, width], last_activation=False) for n in sizes[1:])
        if self.convolutional:  # (..., W) -> (..., C', H, W)
            self.out = nn.Sequential(nn.LayerNorm(width), _activation(),
                                     ResNetDecoder(width, self.output_shape, config.width, config.blocks))
        else:
            out_dims = [width, *reversed(config.hidden_dims[:-1])]
            self.out = nn.Sequential(nn.LayerNorm(width), _activation(),
                                     *_mlp([*out_dims, self.output_shape[0] * h * w], False))
        for name, parameter in self.likelihood.extra_parameters().items():
            self.register_parameter(name, parameter)

    # --- shape ---------------------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[tuple[str, slice], ...]:
        bounds, start = [], 0
        for i, n in enumerate(self.config.latent_layers):
            bounds.append((f"z{i + 1}", slice(start, start + n)))
            start += n
        return tuple(bounds)

    # --- the two passes ------------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """feature_in(d_l) for each layer, top first, each (B, W): all the posterior needs of x."""
        d = self.stem(x if self.convolutional else x.reshape(len(x), -1))
        features = [d]
        for block in reversed(self.up):
            d = d + block(d)
            features.append(d)
        return [head(f) for head, f in zip(self.feature_in, reversed(features))]

    def _posterior(self, i: int, features: torch.Tensor, state: torch.Tensor | None) -> DiagonalGaussian:
        h = features if state is None else self.state_in[i - 1](state) + features
        mu, logvar = self.posterior_out[i](F.silu(self.posterior_norm[i](h))).float().chunk(2, dim=-1)
        return DiagonalGaussian(mu, _soft_clamp(logvar))

    def _prior(self, i: int, state: torch.Tensor) -> DiagonalGaussian:
        mu, logvar = self.prior_head[i - 1](state).float().chunk(2, dim=-1)
        return DiagonalGaussian(mu, _soft_clamp(logvar, PRIOR_LOGVAR_MIN))

    def _step(self, i: int, state: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """The state after layer i's sample z: top_in(z1) for the top, s + merge(s, z_i) below."""
        if state is None:
            return self.top_in(z)
        return state + self.merge[i - 1](torch.cat([self.merge_norm[i - 1](state), z], dim=-1))

    def top_down(self, features: list[torch.Tensor] | None, eps: torch.Tensor | None = None,
                 z: torch.Tensor | None = None, draw_from_prior: bool = False) -> tuple[torch.Tensor, list]:
        """The final state and, per layer, (z_l, q_l, p_l). Each layer's z is the posterior's rsample of eps
        (or its mean, when eps is None), the prior's (draw_from_prior), or given in the flat z (..., D)."""
        state, record = None, []
        need_prior = features is not None or draw_from_prior  # decoding a given z needs no prior
        for i, (_, part) in enumerate(self.layers):
            prior = self._prior(i, state) if i > 0 and need_prior else None
            posterior = None
            if features is not None:  # (B, W) features broadcast against a state of (S, B, W)
                posterior = self._posterior(i, features[i], state)
            if z is not None:
                z_i = z[..., part]
            else:
                source = prior if draw_from_prior else posterior
                if source is None:  # drawn from the top layer's prior, N(0, I)
                    z_i = eps[..., part]
                else:
                    z_i = source.mu if eps is None else source.rsample(eps[..., part])
            record.append((z_i, posterior, prior))
            state = self._step(i, state, z_i)
        return state, record

    def _output(self, x: torch.Tensor, features: list[torch.Tensor], eps: torch.Tensor | None,
                amp_dtype: torch.dtype | None = None) -> HVAEOutput:
        if amp_dtype is None:  # as the caller runs it (the trainer may hold an autocast of its own)
            state, record = self.top_down(features, eps)
            recon_params = self._pixels(state)
        else:
            with torch.autocast(x.device.type, dtype=amp_dtype):
                state, record = self.top_down(features, eps)
                recon_params = self._pixels(state)
        z, q_mu, q_logvar, p_mu, p_logvar = [], [], [], [], []
        for z_i, q, p in record:  # the top's posterior is (B, n) where z is (S, B, n)
            z.append(z_i)
            q_mu.append(q.mu.expand_as(z_i))
            q_logvar.append(q.logvar.expand_as(z_i))
            p_mu.append(torch.zeros_like(z_i) if p is None else p.mu)
            p_logvar.append(torch.zeros_like(z_i) if p is None else p.logvar)
        return HVAEOutput(recon_params, *(torch.cat(t, dim=-1) for t in (z, q_mu, q_logvar, p_mu, p_logvar)))

    def _pixels(self, state: torch.Tensor) -> torch.Tensor:
        params = self.out(state)
        params = params if self.convolutional else params.unflatten(-1, self.output_shape)
        return self.likelihood.finish(params, self)

    # --- training and evaluation ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> HVAEOutput:
        """The top-down pass for the flat noise eps, (B, D) or (S, B, D): one N(0, 1) value per latent dim."""
        return self._output(x, self.bottom_up(x), eps)

    def objective(self, x, output: HVAEOutput, eps, *, kl_weight=1.0, free_bits=0.0) -> torch.Tensor:
        """-ELBO summed over the batch, each layer's KL in closed form given the samples above (Sonderby et al.
        2016, Eq. 7-8) and floored per dimension at free_bits nats (batch mean); or, for eps (S, B, D), the
        negative IWAE bound (Burda et al. 2016, Eq. 8) with kl_weight on log p(z) - log q(z|x)."""
        posterior, prior, params = output.posterior, output.prior, output.recon_params.float()
        if eps.dim() == 3:
            z = output.z.float()
            log_w = -self.likelihood.nll(params, x) + kl_weight * (prior.log_prob(z) - posterior.log_prob(z))
            return objectives.negative_iwae_bound(log_w)
        kl = objectives.floored_kl(posterior.kl_per_dim(prior), free_bits)
        return self.likelihood.batch_nll(params, x) + kl_weight * kl

    def elbo(self, x, eps, frozen=None):
        output = self(x, eps)
        reconstruction = self.likelihood.nll(output.recon_params.float(), x)
        kl = output.posterior.kl(output.prior)
        return objectives.ELBOTerms(reconstruction + kl, reconstruction, kl)

    def iw_context(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.bottom_up(x)

    def log_weights(self, x, context, eps, amp_dtype=None, frozen=None) -> torch.Tensor:
        """log p(x|z) + sum_l [log p(z_l|z_<l) - log q(z_l|x, z_<l)], (S, B), for eps (S, B, D). With amp_dtype
        the per-sample networks (the top-down pass and the pixel MLP) multiply under autocast, as training does;
        every layer's mean and log-variance, the samples z and the densities stay fp32."""
        output = self._output(x, context, eps, amp_dtype)
        z = output.z
        return (-self.likelihood.nll(output.recon_params.float(), x) + output.prior.log_prob(z)
                - output.posterior.log_prob(z))

    # --- latents and images --------------------------------------------------------------------------
    def _mean_path(self, x: torch.Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """(posterior, prior), flat (B, D), along the posterior-mean path: each layer given the means above."""
        _, record = self.top_down(self.bottom_up(x))
        q = [r[1] for r in record]
        p = [DiagonalGaussian(torch.zeros_like(q[0].mu), torch.zeros_like(q[0].logvar))] + [r[2] for r in record[1:]]
        return (DiagonalGaussian(torch.cat([g.mu for g in q], -1), torch.cat([g.logvar for g in q], -1)),
                DiagonalGaussian(torch.cat([g.mu for g in p], -1), torch.cat([g.logvar for g in p], -1)))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Each layer's posterior given the posterior means of the layers above, flat (B, D)."""
        return self._mean_path(x)[0]

    def usage(self, x: torch.Tensor) -> LatentUsage:
        posterior, prior = self._mean_path(x)
        return LatentUsage(posterior.mu, posterior.kl_per_dim(prior))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(z1) p(z2|z1) ... p(zL|z_<L), flat (n, D): the top from N(0, I), each layer below from
        its conditional prior, all from one (n, D) standard-normal draw of `generator`."""
        parameter = next(self.parameters())
        eps = torch.randn(n, self.latent_dim, generator=generator, device=parameter.device, dtype=parameter.dtype)
        _, record = self.top_down(None, eps, draw_from_prior=True)
        return torch.cat([r[0] for r in record], dim=-1)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Likelihood parameters (..., C', H, W) for flat latents z (..., D): the top-down state with every
        layer's z given, then the pixel MLP."""
        state, _ = self.top_down(None, z=z)
        return self._pixels(state)
