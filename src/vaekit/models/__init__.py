"""Models: nn.Modules only. The contract every family keeps is vaekit.models.base; the loss lives in
vaekit.objectives, I/O in vaekit.runs."""

from .base import LatentVariableModel, build_model, check_size, model_fingerprint, parameter_count
from .conv import ConvDecoder, ConvEncoder
from .mlp import Decoder, Encoder
from .posterior import DiagonalGaussian, mixture_log_prob, standard_normal_log_prob
from .vae import VAE

__all__ = ["VAE", "ConvDecoder", "ConvEncoder", "Decoder", "DiagonalGaussian", "Encoder", "LatentVariableModel",
           "build_model", "check_size", "mixture_log_prob", "model_fingerprint", "parameter_count",
           "standard_normal_log_prob"]
