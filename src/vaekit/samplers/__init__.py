"""Samplers of a trained model's latent space: where `vaekit sample` draws its z from.

The prior N(0, I) is what a VAE is trained to match, but the posteriors of the training images do not fill
it (the "holes" problem), so decoded prior draws are often blurry or no digit at all. A sampler fitted after
training on the training images' posterior means (ex-post density estimation, Ghosh et al. 2020; Dai & Wipf
2019) draws codes where the decoder has learned to draw. `prior` needs no fitting; the others are fitted with
`vaekit fit-sampler` and stored in RUN/samplers/ (vaekit.samplers.store).

This module imports nothing heavy: the CLI builds its choices from SAMPLERS.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its name, where its class lives ("module:Class"), and whether it is fitted (and stored)."""

    name: str
    target: str
    summary: str
    fitted: bool = True
    options: tuple[str, ...] = ()  # the SamplerConfig fields it reads


SAMPLERS: Registry[SamplerSpec] = Registry(
    "sampler",
    SamplerSpec("prior", "vaekit.samplers.prior:PriorSampler", "the model's own prior (default)", fitted=False),
    SamplerSpec("gmm", "vaekit.samplers.gmm:GaussianMixture",
                "a Gaussian mixture on the training posterior means, fitted by EM (Ghosh et al. 2020)",
                options=("components", "covariance", "iterations")),
    SamplerSpec("flow", "vaekit.samplers.flow:CouplingFlow",
                "a RealNVP coupling flow trained on the training posterior means (Dinh et al. 2017)",
                options=("epochs", "hidden", "layers")),
    SamplerSpec("two-stage", "vaekit.samplers.twostage:TwoStageVAE",
                "a second small VAE on the training posterior means (Dai & Wipf 2019)",
                options=("epochs", "hidden")),
)
COVARIANCES = ("full", "diagonal")
