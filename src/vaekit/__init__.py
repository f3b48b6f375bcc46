"""vaekit: variational autoencoders on image data.

    from vaekit import RunConfig, TrainConfig, fit, load_run
"""

__version__ = "0.1.0"

from .threads import prefer_passive_wait  # noqa: E402

prefer_passive_wait()  # before anything loads torch: OpenMP reads its wait policy once (vaekit.threads)

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .data import ImageSet, load_split  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .evaluate import evaluate_elbo  # noqa: E402
from .fit import fit, resume  # noqa: E402
from .generate import interpolate, reconstruct, sample  # noqa: E402
from .models import VAE, DiagonalGaussian  # noqa: E402
from .objectives import ELBOTerms, negative_elbo  # noqa: E402
from .runs import Run, load_run  # noqa: E402
from .threads import set_threads  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = [
    "VAE", "DataConfig", "DiagonalGaussian", "ELBOTerms", "ImageSet", "ModelConfig", "Run", "RunConfig",
    "TrainConfig", "Trainer", "VaekitError", "__version__", "evaluate_elbo", "fit", "interpolate",
    "load_run", "load_split", "negative_elbo", "reconstruct", "resume", "sample", "set_threads",
]
