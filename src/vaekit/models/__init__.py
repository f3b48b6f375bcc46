"""Models: nn.Modules only. The loss lives in vaekit.objectives, I/O in vaekit.runs."""

from .mlp import Decoder, Encoder
from .posterior import DiagonalGaussian, standard_normal_log_prob
from .vae import VAE

__all__ = ["VAE", "Decoder", "DiagonalGaussian", "Encoder", "standard_normal_log_prob"]
