"""Models: nn.Modules only. The loss lives in vaekit.objectives, I/O in vaekit.runs."""

from .conv import ConvDecoder, ConvEncoder
from .mlp import Decoder, Encoder
from .posterior import DiagonalGaussian, mixture_log_prob, standard_normal_log_prob
from .vae import ARCHITECTURES, VAE, check_size, model_fingerprint, parameter_count

__all__ = ["ARCHITECTURES", "VAE", "ConvDecoder", "ConvEncoder", "Decoder", "DiagonalGaussian", "Encoder",
           "check_size", "mixture_log_prob", "model_fingerprint", "parameter_count", "standard_normal_log_prob"]
