"""Run configuration as frozen dataclasses, checked on construction, with strict dict round trips.

A run directory's config.json is `RunConfig.to_dict()`; `RunConfig.from_dict` rebuilds it and
rejects unknown, missing and wrongly typed keys, so a typo never passes silently and an old config
is never read with today's defaults (vaekit.runs migrates older run formats explicitly).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .errors import ConfigError

BINARIZE_MODES = ("none", "dynamic", "threshold")
RESIZE_MODES = ("crop", "aspect")  # vaekit.data.preparation: shorter side and centre crop; same aspect ratio only
LATENT_SHAPES = ("dense", "spatial")  # resnet only: a latent vector, or one on the bottom grid (vaekit.models.resnet)
CUSTOM_ARCHITECTURE = "custom"  # networks given in Python (vaekit.models.architectures)
# the registries' names when this module loads (built-in choices, for --help); validation asks the registries
FAMILIES = registry.FAMILIES.names()
ARCHITECTURES = registry.ARCHITECTURES.names()
LIKELIHOODS = registry.LIKELIHOODS.names()
PRIORS = registry.PRIORS.names()
PIXEL_GROUPS = (1, 4, 7, 16)  # see vaekit.models.context
BUILDER_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

# Upper bounds on every size a config can ask for: a config.json from anywhere, or a flag such as
# `--hidden 1000000000`, is refused here, before any memory is allocated, with a message naming the bound.
# Each is far above any VAE vaekit is meant for (the seed's model: 784-400-20, 650k parameters).
MAX_LAYERS = 32  # hidden_dims, conv_channels
MAX_WIDTH = 65_536  # a hidden layer
MAX_CONV_CHANNELS = 4_096
MAX_LATENT = 4_096  # all layers together
MAX_LATENT_LAYERS = 16
MAX_PRIOR_COMPONENTS = 10_000  # VampPrior pseudo-inputs (each one an image of parameters)
MAX_LIKELIHOOD_COMPONENTS = 256  # a pixel likelihood's mixture components (each one 1 + 2C decoder channels)
MAX_CONTEXT_CHANNELS = 1_024
MAX_CONTEXT_FEATURES = 64
MAX_CHANNELS = 64  # image channels
MAX_SIDE = 16_384  # image height or width
MAX_INPUT_DIM = 2 ** 24  # pixels times channels
MAX_EPOCHS = 1_000_000
MAX_BATCH = 65_536
MAX_IW_ROWS = 2 ** 18  # train.iw_samples x train.batch_size: the decoded samples of one training step
# train.batch_size ** 2 x model.latent_dim under --tc-beta: the pairwise densities of one step (autograd keeps a few)
MAX_TC_PAIRS = 2 ** 26
MAX_SEED = 2 ** 63 - 1  # seeds are int64 in torch
MAX_IW_SAMPLES = 1_000_000  # importance samples per image in an estimate (memory is bounded for any; time is not)
MAX_PICTURES = 10_000  # images in one picture: samples, interpolation steps, grid sides
MAX_BLOCKS = 32  # residual blocks at each resolution
RESNET_MIN_SIDE = 8  # a resnet halves an image at least once, down to a side of 4 to 7
MAX_PARAMETERS = 100_000_000  # the whole model (400 MB in fp32; Adam's state triples it), vaekit.models.check_size


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _number_in(name: str, value: float, low: float, high: float, low_inclusive: bool = False,
               high_inclusive: bool = False) -> None:
    """ConfigError unless `value` is a number between low and high (exclusive unless told)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        brackets = ("[" if low_inclusive else "(") + f"{low}, {high}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{name} must be a number in {brackets}, got {value!r}")


def _non_negative_int(name: str, value: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer{unit}, got {value!r}")


def _positive_int(name: str, value: int, most: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    _at_most(name, value, most)


def _at_most(name: str, value: int, most: int | None, why: str = "") -> None:
    if most is not None and value > most:
        raise ConfigError(f"{name} must be at most {most:,}{why}, got {value:,}")


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on and how pixels become targets."""

    name: str = "mnist"  # a built-in dataset (vaekit.data.DATASETS), or the path of the user's images
    binarize: str = "none"  # none: grayscale in [0, 1]; dynamic: Bernoulli draw per epoch; threshold: > 127
    validation: float = 0.1  # for a path: the seeded fraction of images held out (built-ins have a test split)
    standardize: bool = False  # each image to zero mean and unit variance first (vaekit.data.standardize)
    # how images of another size become the model's (vaekit.data.preparation): crop (the shorter side resized, the
    # centre cropped) or aspect (the same aspect ratio only, runs before format 8)
    resize: str = "crop"
    # the training images' mean border brightness in [0, 1], measured when training starts, which new images'
    # polarity is judged against (vaekit.data.preparation); None: not measured (runs before format 8)
    background: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"data.name must be a dataset name or a path, got {self.name!r}")
        _choice("data.binarize", self.binarize, BINARIZE_MODES)
        _number_in("data.validation", self.validation, 0, 1)
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"data.standardize must be true or false, got {self.standardize!r}")
        _choice("data.resize", self.resize, RESIZE_MODES)
        if self.background is not None:
            _number_in("data.background", self.background, 0, 1, low_inclusive=True, high_inclusive=True)


@dataclass(frozen=True)
class ModelConfig:
    """The model: its family, encoder and decoder architecture, latent size, pixel likelihood and prior.

    family: vae (one latent, the default) or hvae (latent_layers, top first); see vaekit.registry.FAMILIES.
    mlp: input -> hidden_dims -> latent, mirrored by the decoder (the seed's model by default).
    conv: strided 4x4 convolutions with conv_channels, then one dense layer of hidden_dims[0].
    resnet: residual blocks (blocks at each resolution) from width channels, halving the image down to a side of
    4 to 7, to a dense latent or a spatial one on that grid (latent_shape; vaekit.models.resnet).
    "package.module:function": the user's builder (vaekit.models.architectures); "custom": networks given
    in Python.
    """

    family: str = "vae"
    input_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    architecture: str = "mlp"
    hidden_dims: tuple[int, ...] = (400,)
    conv_channels: tuple[int, ...] = (32, 64)  # conv only
    latent_dim: int = 20  # the whole latent vector: for a hierarchy, the sum of latent_layers
    latent_layers: tuple[int, ...] = ()  # a hierarchical family's layer sizes, top first; () for one latent
    likelihood: str = "bernoulli"  # see vaekit.likelihoods for what each one's numbers mean
    likelihood_components: int = 10  # discretized-logistic-mixture only: logistics per pixel (PixelCNN++'s 10)
    prior: str = "normal"  # normal: N(0, I); vamp: mixture of posteriors of learned pseudo-inputs
    prior_components: int = 500  # vamp only
    # 1: pixels independent given z. 4, 7 or 16: decoded in that many interleaved groups, each conditioned on
    # the groups before it through a small convolution of context_channels (vaekit.models.context)
    pixel_groups: int = 1
    context_channels: int = 32
    # pixel groups: channels per pixel the decoder passes to the context besides its logit (0: the logit only)
    context_features: int = 0
    width: int = 32  # resnet: channels at full resolution (x2 at half, x4 below)
    blocks: int = 2  # resnet: residual blocks at each resolution
    latent_shape: str = "dense"  # resnet: dense (a vector) or spatial (latent_dim / (h w) channels on the h x w grid)

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3:
            raise ConfigError(f"model.input_shape must be (channels, height, width), got {self.input_shape!r}")
        for i, size in enumerate(self.input_shape):
            _positive_int(f"model.input_shape[{i}]", size, MAX_CHANNELS if i == 0 else MAX_SIDE)
        _at_most("model's input (channels x height x width)", self.input_dim, MAX_INPUT_DIM)
        _choice("model.family", self.family, registry.FAMILIES.names())
        family = registry.FAMILIES.get(self.family)
        if not isinstance(self.architecture, str) or not (
                self.architecture in registry.ARCHITECTURES or self.architecture == CUSTOM_ARCHITECTURE
                or BUILDER_PATTERN.match(self.architecture)):
            raise ConfigError(f"model.architecture must be one of {', '.join(registry.ARCHITECTURES.names())}, "
                              f"{CUSTOM_ARCHITECTURE}, or a builder 'package.module:function', "
                              f"got {self.architecture!r}")
        if family.architectures is not None and self.architecture not in family.architectures:
            raise ConfigError(f"the {self.family} family takes model.architecture "
                              f"{' or '.join(family.architectures)}, not {self.architecture}")
        if not self.hidden_dims:
            raise ConfigError("model.hidden_dims needs at least one size")
        _at_most("the number of model.hidden_dims", len(self.hidden_dims), MAX_LAYERS)
        for i, size in enumerate(self.hidden_dims):
            _positive_int(f"model.hidden_dims[{i}]", size, MAX_WIDTH)
        if not self.conv_channels:
            raise ConfigError("model.conv_channels needs at least one size")
        _at_most("the number of model.conv_channels", len(self.conv_channels), MAX_LAYERS)
        for i, size in enumerate(self.conv_channels):
            _positive_int(f"model.conv_channels[{i}]", size, MAX_CONV_CHANNELS)
        _positive_int("model.latent_dim", self.latent_dim, MAX_LATENT)
        _at_most("the number of model.latent_layers", len(self.latent_layers), MAX_LATENT_LAYERS)
        for i, size in enumerate(self.latent_layers):
            _positive_int(f"model.latent_layers[{i}]", size, MAX_LATENT)
        if family.hierarchical and len(self.latent_layers) < 2:
            raise ConfigError(f"the {self.family} family needs at least two latent layers (--latent takes one size "
                              f"per layer, top first, e.g. --latent 16 32), got {list(self.latent_layers)}")
        if not family.hierarchical and self.latent_layers:
            raise ConfigError(f"the {self.family} family has one latent layer: --latent takes one size "
                              f"(model.latent_layers must be empty), got {list(self.latent_layers)}")
        if self.latent_layers and sum(self.latent_layers) != self.latent_dim:
            raise ConfigError(f"model.latent_dim must be the sum of model.latent_layers ({sum(self.latent_layers)}), "
                              f"got {self.latent_dim}")
        _choice("model.likelihood", self.likelihood, registry.LIKELIHOODS.names())
        _positive_int("model.likelihood_components", self.likelihood_components, MAX_LIKELIHOOD_COMPONENTS)
        _choice("model.prior", self.prior, registry.PRIORS.names())
        if family.priors is not None and self.prior not in family.priors:
            raise ConfigError(f"the {self.family} family takes model.prior {' or '.join(family.priors)}, "
                              f"not {self.prior}")
        _positive_int("model.prior_components", self.prior_components, MAX_PRIOR_COMPONENTS)
        _choice("model.pixel_groups", self.pixel_groups, PIXEL_GROUPS)
        _positive_int("model.context_channels", self.context_channels, MAX_CONTEXT_CHANNELS)
        _non_negative_int("model.context_features", self.context_features)
        _at_most("model.context_features", self.context_features, MAX_CONTEXT_FEATURES)
        if self.context_features and self.pixel_groups == 1:
            raise ConfigError("model.context_features needs pixel_groups of 4 or more: without groups there is no "
                              "context to pass features to")
        if self.pixel_groups > 1 and not registry.LIKELIHOODS.get(self.likelihood).binary:
            binary = [spec.name for spec in map(registry.LIKELIHOODS.get, registry.LIKELIHOODS.names()) if spec.binary]
            raise ConfigError(f"model.pixel_groups {self.pixel_groups} needs a binary likelihood "
                              f"({', '.join(binary)}), not {self.likelihood}")
        if self.pixel_groups > 1 and not family.pixel_context:
            raise ConfigError(f"the {self.family} family has no pixel context: model.pixel_groups must be 1")
        scale = 2 ** len(self.conv_channels)
        if self.architecture == "conv" and (self.input_shape[1] % scale or self.input_shape[2] % scale):
            raise ConfigError(f"a conv model with {len(self.conv_channels)} stride-2 layers needs image sides that "
                              f"divide by {scale}, got {self.input_shape[1]}x{self.input_shape[2]}")
        _positive_int("model.width", self.width, MAX_CONV_CHANNELS // 4)
        _positive_int("model.blocks", self.blocks, MAX_BLOCKS)
        _choice("model.latent_shape", self.latent_shape, LATENT_SHAPES)
        if self.architecture == "resnet":
            self._check_resnet(family)
        elif self.latent_shape != "dense":
            raise ConfigError(f"model.latent_shape {self.latent_shape} needs the resnet architecture, not "
                              f"{self.architecture}")

    def _check_resnet(self, family) -> None:
        """ConfigError unless a resnet can take images of this size (and the latent its shape)."""
        h, w = self.input_shape[1:]
        if min(h, w) < RESNET_MIN_SIDE:
            raise ConfigError(f"a resnet model needs images of at least {RESNET_MIN_SIDE}x{RESNET_MIN_SIDE} pixels, "
                              f"got {h}x{w}")
        stages = resnet_stages(h, w)
        if h % 2 ** stages or w % 2 ** stages:
            side = min(h, w) >> stages << stages
            raise ConfigError(f"a resnet model halves {h}x{w} images {stages} times (until the shorter side is 4 to "
                              f"7 pixels), so both sides must divide by {2 ** stages}, got {h}x{w}; resize the images "
                              f"(to {side} or {side + 2 ** stages} pixels on that side, say)")
        if self.latent_shape == "spatial":
            if family.hierarchical:
                raise ConfigError(f"the {self.family} family's latent layers are vectors: model.latent_shape must be "
                                  "dense")
            bh, bw = resnet_bottom(h, w)
            if self.latent_dim % (bh * bw):
                low = max(1, self.latent_dim // (bh * bw)) * bh * bw
                raise ConfigError(f"a spatial latent lies on the resnet's {bh}x{bw} grid: --latent must be a multiple "
                                  f"of {bh * bw} (channels x {bh} x {bw}), got {self.latent_dim}; "
                                  f"try {low} or {low + bh * bw}")

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


def resnet_stages(height: int, width: int) -> int:
    """How many times a resnet halves an image: until its shorter side is 4 to 7 pixels (32, 64, 128 -> 4; 28 -> 7)."""
    return max(0, (min(height, width) // 4).bit_length() - 1)


def resnet_bottom(height: int, width: int) -> tuple[int, int]:
    """The (h, w) grid at the bottom of a resnet for images of height x width (sides dividing by 2 ** stages)."""
    stages = resnet_stages(height, width)
    return height >> stages, width >> stages


SCHEDULES = ("constant", "cosine")
# Below MNIST's 23.45 warm-up steps (5% of one epoch of 469 batches), so that no MNIST run at batch 128 changes.
WARMUP_MIN_STEPS = 20
# TrainConfig.for_data: the recipe on data other than MNIST's 60,000 images of 784 pixels
RECIPE_MIN_STEPS = 400  # optimizer steps a run takes at least, when a smaller batch or more epochs allow
RECIPE_MIN_BATCH = 64  # not 32: bf16 autocast on an AVX512-BF16 CPU dies of SIGFPE on a 32 x 49,152 matmul (torch 2.13)
RECIPE_MAX_EPOCHS = 100
RECIPE_PIXELS = 784  # the input size the peak rate was tuned at
COMPILE_MODES = ("auto", "on", "off")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: Adam over shuffled minibatches, with an optional warm-up and cosine decay.

    The defaults are tuned for time to quality on the seed's model (benchmarks/train_speed.py);
    `TrainConfig.seed_settings()` gives the seed tutorial's own: lr 1e-3, constant, 10 epochs.
    """

    epochs: int = 4
    batch_size: int = 128
    lr: float = 6e-3
    schedule: str = "cosine"  # after warm-up: constant, or cosine decay to 0 at the last step
    warmup: float = 0.05  # fraction of all steps over which the learning rate rises linearly from 0
    # a warm-up lasts at least this many steps (or all of them, if fewer), so that on small data it is never
    # shorter than one step (whose rate would overshoot the peak); 0: the fraction alone (runs before format 5)
    warmup_min_steps: int = WARMUP_MIN_STEPS
    beta2: float = 0.98  # Adam's second-moment decay; the seed's (PyTorch's default) is 0.999
    seed: int = 1
    clip_grad: float = 0.0  # clip the gradients' global L2 norm to this; 0 = no clipping
    # the objective: -ELBO = reconstruction + beta * KL, or the IWAE bound on iw_samples samples
    beta: float = 1.0  # weight of the KL term (Higgins et al. 2017); 1 is the ELBO
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to beta (Bowman et al. 2016)
    free_bits: float = 0.0  # floor, in nats, on each latent dimension's batch-mean KL (Kingma et al. 2016)
    iw_samples: int = 1  # posterior samples per image in the IWAE bound (Burda et al. 2016); 1 is the ELBO
    # beta-TCVAE (Chen et al. 2018): the total correlation's weight, the KL's other two terms keeping beta; None: off
    tc_beta: float | None = None
    compile: str = "auto"  # torch.compile the loss: auto (where it pays), on, off
    precision: str = "auto"  # auto (bf16 autocast on CUDA, else fp32), fp32, bf16

    def __post_init__(self) -> None:
        _positive_int("train.epochs", self.epochs, MAX_EPOCHS)
        _positive_int("train.batch_size", self.batch_size, MAX_BATCH)
        _number_in("train.lr", self.lr, 0, 10)
        _number_in("train.warmup", self.warmup, 0, 1, low_inclusive=True, high_inclusive=False)
        _non_negative_int("train.warmup_min_steps", self.warmup_min_steps, " (steps)")
        _number_in("train.beta2", self.beta2, 0, 1)
        _non_negative_int("train.seed", self.seed)
        _at_most("train.seed", self.seed, MAX_SEED)
        _number_in("train.clip_grad", self.clip_grad, 0, math.inf, low_inclusive=True)
        _number_in("train.beta", self.beta, 0, math.inf, low_inclusive=True)
        _non_negative_int("train.kl_warmup", self.kl_warmup, " (epochs)")
        _at_most("train.kl_warmup", self.kl_warmup, MAX_EPOCHS)
        _number_in("train.free_bits", self.free_bits, 0, math.inf, low_inclusive=True)
        _positive_int("train.iw_samples", self.iw_samples)
        _at_most("train.iw_samples", self.iw_samples, MAX_IW_ROWS // self.batch_size,
                 f" at batch size {self.batch_size} (samples x batch size at most {MAX_IW_ROWS:,}, for memory)")
        if self.free_bits and self.iw_samples > 1:
            raise ConfigError("train.free_bits applies to the ELBO; it cannot combine with iw_samples > 1")
        if self.tc_beta is not None:
            _number_in("train.tc_beta", self.tc_beta, 0, math.inf, low_inclusive=True)
            if self.iw_samples > 1 or self.free_bits:
                raise ConfigError("train.tc_beta (beta-TCVAE) decomposes the ELBO's KL; it cannot combine with "
                                  + ("iw_samples > 1" if self.iw_samples > 1 else "free_bits"))
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.compile", self.compile, COMPILE_MODES)
        _choice("train.precision", self.precision, PRECISIONS)

    @classmethod
    def for_data(cls, train_images: int, input_dim: int, **overrides: Any) -> TrainConfig:
        """vaekit's recipe sized for a training set of `train_images` images of `input_dim` values each.

        The recipe was tuned on MNIST (60,000 training images of 784 values), which gets it unchanged, as
        does any set of 12,800 or more images of up to 784 values. A smaller set gets a smaller batch
        (down to 64), then more epochs (up to 100), for at least 400 optimizer steps: the warm-up and the
        decay need steps, not epochs. A larger image gets a peak rate scaled by sqrt(784 / input_dim):
        Adam moves every weight by about the rate each step, so a unit that sums D inputs moves by about
        rate * sqrt(D) when their updates are uncorrelated, and by up to rate * D (benchmarks/defaults.py).
        """
        recipe = cls()
        batch = recipe.batch_size
        while batch > RECIPE_MIN_BATCH and recipe.epochs * math.ceil(train_images / batch) < RECIPE_MIN_STEPS:
            batch //= 2
        epochs = min(max(recipe.epochs, math.ceil(RECIPE_MIN_STEPS / math.ceil(train_images / batch))),
                     RECIPE_MAX_EPOCHS)
        lr = float(f"{recipe.lr * min(1.0, math.sqrt(RECIPE_PIXELS / input_dim)):.2g}")  # 2 digits, as in config.json
        return dataclasses.replace(recipe, **{"batch_size": batch, "epochs": epochs, "lr": lr, **overrides})

    @classmethod
    def seed_settings(cls, **overrides: Any) -> TrainConfig:
        """The seed tutorial's optimisation: Adam(lr=1e-3) with PyTorch's defaults, 10 epochs, batch 128."""
        return cls(**{"epochs": 10, "lr": 1e-3, "schedule": "constant", "warmup": 0.0, "beta2": 0.999, **overrides})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved as the run directory's config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.standardize and registry.LIKELIHOODS.get(self.model.likelihood).discrete_8bit:
            raise ConfigError(f"the {self.model.likelihood} likelihood models 8-bit pixel values; data.standardize "
                              "(--standardize) moves them off that grid: drop one of them")
        if self.train.free_bits and not registry.PRIORS.get(self.model.prior).closed_form_kl:
            closed = [n for n in registry.PRIORS.names() if registry.PRIORS.get(n).closed_form_kl]
            raise ConfigError(f"train.free_bits needs the {' or '.join(closed)} prior (a closed-form KL per "
                              f"dimension): the {self.model.prior} prior's KL has no per-dimension terms")
        if self.train.tc_beta is not None:
            if self.model.prior != "normal":
                raise ConfigError("train.tc_beta (beta-TCVAE) needs the normal prior, whose dimensions are independent "
                                  f"(the dimension-wise KL): this run's prior is {self.model.prior}")
            pairs = self.train.batch_size ** 2 * self.model.latent_dim
            if pairs > MAX_TC_PAIRS:
                raise ConfigError(f"train.tc_beta: batch size {self.train.batch_size} squared times "
                                  f"{self.model.latent_dim} latents is {pairs:,} pairwise densities per step, over "
                                  f"{MAX_TC_PAIRS:,} (memory); use a smaller batch")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def in_effect(self) -> dict[str, dict[str, Any]]:
        """`to_dict()` without the fields that have no effect on this run (config.json keeps them all): the
        held-out fraction of a built-in dataset (it has a test split), an MLP's conv channels, the VampPrior's
        components under the normal prior, a mixture likelihood's components under any other likelihood, the
        context of pixel groups without groups, and free bits where the objective cannot have them (the IWAE
        bound, a VampPrior)."""
        from .data.sources import has_splits  # vaekit.data loads torch: not when the CLI only builds its parser

        model = self.model
        architecture = (registry.ARCHITECTURES.get(model.architecture).fields
                        if model.architecture in registry.ARCHITECTURES else ())
        prior = registry.PRIORS.get(model.prior)
        likelihood = registry.LIKELIHOODS.get(model.likelihood)
        unused = {
            "data": {"validation"} if has_splits(self.data.name) else set(),
            "model": {f for spec in map(registry.ARCHITECTURES.get, registry.ARCHITECTURES.names())
                      for f in spec.fields if f not in architecture}
            | {f for spec in map(registry.PRIORS.get, registry.PRIORS.names()) for f in spec.fields
               if f not in prior.fields}
            | {f for spec in map(registry.LIKELIHOODS.get, registry.LIKELIHOODS.names()) for f in spec.fields
               if f not in likelihood.fields}
            | ({"context_channels", "context_features"} if model.pixel_groups == 1 else set())
            | ({"latent_layers"} if not model.latent_layers else set()),
            "train": {"free_bits"} if self.train.iw_samples > 1 or not prior.closed_form_kl else set(),
        }
        return {section: {key: value for key, value in fields.items() if key not in unused[section]}
                for section, fields in self.to_dict().items()}

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Rebuild from `to_dict()` output; unknown keys or wrong types raise ConfigError."""
        return _from_dict(cls, data, "config")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(data) - names), sorted(names - set(data))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}")
    if missing:
        raise ConfigError(f"{where} is missing key(s): {', '.join(missing)}")
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in names}
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Check `value` against a field's type hint, turning JSON lists into tuples."""
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):  # X | None
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return None if value is None else _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{where} must have {len(item_types)} items, got {len(value)}")
        return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an int past a float's range (JSON reads up to 4,300 digits)
            text = str(value)
            raise ConfigError(f"{where} must be a number a float can hold, got an integer of {len(text):,} digits "
                              f"({text[:20]}...)") from None
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} at {where}")  # a programming error
