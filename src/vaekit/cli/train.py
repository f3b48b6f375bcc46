"""`vaekit train`: train a VAE into a run directory, or continue one."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import registry
from ..config import (BINARIZE_MODES, COMPILE_MODES, FAMILIES, LATENT_SHAPES, LIKELIHOODS, PIXEL_GROUPS, PRECISIONS,
                      PRIORS, RECIPE_MIN_BATCH, RECIPE_MIN_STEPS, SCHEDULES, DataConfig, ModelConfig, RunConfig,
                      TrainConfig)
from ..errors import ConfigError
from .args import (add_data_dir_argument, add_device_argument, architecture_name, image_size, non_empty_path,
                   non_empty_text, non_negative_float, non_negative_int, positive_float, positive_int, seed_int,
                   unit_fraction, warn)

if TYPE_CHECKING:
    from ..data import ImageSet

HELP = """\
Train a VAE and write a run directory: config.json, checkpoint.safetensors, model.safetensors,
metrics.jsonl, samples_<epoch>.png and reconstruction_<epoch>.png after every epoch, loss.png at
the end. A run killed at any moment keeps its last finished epoch; --resume RUN continues it and
ends with the same weights an uninterrupted run would have. Ctrl-C stops at once, keeping what was
saved.

--data is a built-in dataset (mnist, fashion-mnist, dsprites: vaekit's generated dSprites, 737,280
64x64 binary images, made on first use and streamed) or your own images: an IDX, .npy or .npz file,
or a folder of PNG/JPEG/TIFF/WebP/BMP images, read at any depth (a folder of only subfolders: one
class per subfolder). Colour, grayscale, palette, 16-bit and float images are read by their format's
range (an alpha channel is dropped). Images of differing sizes need --image-size S or HxW: the
shorter side is resized and the centre cropped; --channels 1 or 3 converts. From your own images a
seeded fraction (--validation, default 0.1) is held out as the test set.

The model defaults to the seed tutorial's 784-400-20 MLP. The optimisation defaults to vaekit's
recipe, tuned for time to quality: 4 epochs at batch 128, Adam with lr 6e-3 and beta2 0.98, a 5%
linear warm-up (at least 20 steps) and cosine decay. It beats the seed's 10-epoch test loss in well
under half the time. On your own images the recipe is sized to them: a small set gets a batch down
to 64 and more epochs, for at least 400 steps; images of more than 784 values a lower peak rate
(6e-3 x sqrt(784 / values)). --recipe seed gives the tutorial's own (lr 1e-3 constant, Adam
defaults, 10 epochs); flags given explicitly override either recipe.

--tensorboard also logs every epoch to RUN/tensorboard (`tensorboard --logdir RUN`): the losses,
rate, distortion, KL per latent dimension, learning rate, active units and epoch time, and the
samples and reconstruction grids. It needs the tensorboard package (pip install tensorboard).

A run whose first epoch failed takes new settings with --resume: until it has finished an epoch,
`vaekit train --resume RUN --lr 1e-3` (or any other training flag) starts it again.

examples:
  vaekit train --out runs/seed
  vaekit train --recipe seed --out runs/seed-as-written
  vaekit train --data fashion-mnist --epochs 20 --out runs/fashion
  vaekit train --data my_digits/ --out runs/mine          # the recipe sized to your images
  vaekit train --data photos/ --image-size 32 --architecture conv --out runs/photos
                                                     # photos of any size, as 32x32 colour
  vaekit train --hidden 512 256 --latent 32 --binarize dynamic --out runs/deeper
  vaekit train --architecture conv --prior vamp --binarize dynamic --epochs 100 --out runs/best
  vaekit train --data photos.npy --architecture resnet --likelihood discretized-logistic-mixture --out runs/colour
                                                     # colour images of 32 to 128 pixels (docs/colour-images.md)
  PYTHONPATH=. vaekit train --architecture my_resnet:build --out runs/resnet
                                                     # your own networks (docs/own-networks.md)
  vaekit train --family hvae --latent 16 32 --binarize dynamic --out runs/ladder   # two latent layers, top first
  vaekit train --iwae 50 --binarize dynamic --out runs/iwae
  vaekit train --binarize threshold --pixel-groups 7 --epochs 30 --out runs/ctx   # for vaekit compress
  vaekit train --kl-warmup 10 --free-bits 0.25 --out runs/no-collapse
  vaekit train --data dsprites --latent 6 --tc-beta 6 --epochs 1 --out runs/tc   # beta-TCVAE
                                                     # (docs/disentanglement.md)
  vaekit train --data normal_parts/ --likelihood gaussian-shared --standardize --epochs 50 --out runs/parts
                                                     # an anomaly detector (docs/anomaly-detection.md)
  vaekit train --tensorboard --out runs/watched      # then: tensorboard --logdir runs/watched
  vaekit train --nproc 2 --out runs/two             # 2 processes, global batch 128 (docs/distributed.md)
  torchrun --nproc_per_node 2 -m vaekit train --out runs/two                # the same, by torchrun
  vaekit train --resume runs/deeper                  # continue after a crash or Ctrl-C
  vaekit train --resume runs/deeper --epochs 40      # or train it longer
  vaekit train --resume runs/big --lr 1e-3           # start again a run whose first epoch failed
"""

TRAIN_FLAGS = ("epochs", "batch_size", "lr", "schedule", "warmup", "beta2", "seed", "clip_grad", "compile", "precision",
               "beta", "kl_warmup", "free_bits", "iw_samples", "tc_beta")
MODEL_FLAGS = ("family", "architecture", "conv_channels", "width", "blocks", "latent_shape", "likelihood",
               "likelihood_components", "prior", "prior_components", "pixel_groups", "context_channels",
               "context_features")
CONFIG_FLAGS = ("data", "image_size", "channels", "hidden", "latent", "binarize", "validation", "standardize", "recipe",
                *MODEL_FLAGS, *TRAIN_FLAGS)


def register(subparsers) -> None:
    defaults = RunConfig()
    recipe = defaults.train
    p = subparsers.add_parser("train", help="train a VAE into a run directory", description=HELP)
    p.add_argument("--data", type=non_empty_text,
                   help="mnist (default), fashion-mnist, dsprites, or a path to your images")
    add_data_dir_argument(p)
    p.add_argument("--validation", type=unit_fraction, metavar="FRACTION",
                   help=f"fraction of your own images held out as the test set (default "
                        f"{defaults.data.validation:g}); a built-in dataset has its own test split")
    p.add_argument("--image-size", type=image_size, metavar="S|HxW",
                   help="make every image this size: the shorter side resized, the centre cropped (needed when your "
                        "images differ in size); later commands fit new images the same way")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="1: grayscale (BT.601 luma), 3: colour (gray repeated); default: as read (colour if any "
                        "image is)")
    p.add_argument("--standardize", action="store_true", default=None,
                   help="see every image at zero mean and unit variance (global contrast normalization); "
                        "the run applies it to everything it scores or encodes later. Best for anomaly detection")
    p.add_argument("--hidden", type=positive_int, nargs="+", metavar="SIZE",
                   help="hidden layer sizes, input side first (default 400)")
    p.add_argument("--family", choices=FAMILIES,
                   help="the model family: vae (one latent layer, the default) or hvae (a hierarchy of latent "
                        "layers with top-down inference, Ladder VAE)")
    p.add_argument("--latent", type=positive_int, nargs="+", metavar="N",
                   help=f"latent dimensions (default {defaults.model.latent_dim}); for a hierarchical family one size "
                        "per layer, top first (--family hvae --latent 16 32)")
    p.add_argument("--architecture", type=architecture_name, metavar="NAME",
                   help="the encoder and decoder: mlp (the seed's, default), conv, resnet (residual blocks, for "
                        "colour or gray images of 32 to 128 pixels), or your own builder "
                        "package.module:function, importable (on PYTHONPATH), called as build(config) -> (encoder, "
                        "decoder); see docs/own-networks.md")
    p.add_argument("--conv-channels", type=positive_int, nargs="+", metavar="C",
                   help="conv: channels of the stride-2 layers (default 32 64); --hidden sets the dense layer")
    p.add_argument("--width", type=positive_int, metavar="W",
                   help=f"resnet: channels at full resolution, twice as many at half, four times below "
                        f"(default {defaults.model.width})")
    p.add_argument("--blocks", type=positive_int, metavar="N",
                   help=f"resnet: residual blocks at each resolution (default {defaults.model.blocks}); the image is "
                        "halved until its shorter side is 4 to 7 pixels (32, 64 and 128 to 4)")
    p.add_argument("--latent-shape", choices=LATENT_SHAPES,
                   help="resnet: dense (default: a vector of --latent values) or spatial (--latent / 16 channels on "
                        "the 4x4 grid at the bottom, for 32, 64 or 128 pixels; --latent a multiple of 16)")
    p.add_argument("--likelihood", choices=LIKELIHOODS,
                   help="pixel likelihood: bernoulli (default), continuous-bernoulli, gaussian (a deviation per "
                        "pixel), gaussian-shared (one learned deviation), or for 8-bit pixels discretized-logistic "
                        "or discretized-logistic-mixture (PixelCNN++'s; eval reports their bits/dim)")
    p.add_argument("--likelihood-components", type=positive_int, metavar="K",
                   help=f"discretized-logistic-mixture: logistics per pixel "
                        f"(default {defaults.model.likelihood_components})")
    p.add_argument("--pixel-groups", type=int, choices=PIXEL_GROUPS,
                   help="1 (default): pixels independent given z; 4, 7 or 16: decode pixels in interleaved groups, "
                        "each conditioned on the ones before (lower NLL and smaller compressed files on binary images)")
    p.add_argument("--context-channels", type=positive_int,
                   help="--pixel-groups: channels of the context convolution "
                        f"(default {defaults.model.context_channels})")
    p.add_argument("--context-features", type=non_negative_int, metavar="M",
                   help="--pixel-groups: channels per pixel the decoder passes to the context besides its logit, "
                        "a wider path from z to each pixel (default 0; 4 gives a lower NLL, BENCHMARKS.md)")
    p.add_argument("--prior", choices=PRIORS, help="normal (default) or vamp (Tomczak & Welling 2018)")
    p.add_argument("--prior-components", type=positive_int, help="vamp: pseudo-inputs (default 500)")
    p.add_argument("--beta", type=non_negative_float, help="weight of the KL term (default 1: the ELBO)")
    p.add_argument("--tc-beta", type=non_negative_float, metavar="B",
                   help="beta-TCVAE (Chen et al. 2018): weight the KL's total correlation by B, its other terms by "
                        "--beta (default: off, the ELBO)")
    p.add_argument("--kl-warmup", type=non_negative_int, metavar="EPOCHS",
                   help="raise the KL weight linearly from 0 over this many epochs (default 0)")
    p.add_argument("--free-bits", type=non_negative_float, metavar="NATS",
                   help="floor on each latent dimension's KL (default 0: off)")
    p.add_argument("--iwae", dest="iw_samples", type=positive_int, metavar="K",
                   help="train on the IWAE bound with K samples per image (default 1: the ELBO)")
    p.add_argument("--recipe", choices=("vaekit", "seed"),
                   help="optimisation defaults: vaekit's (fast, the default) or the seed tutorial's")
    p.add_argument("--epochs", type=positive_int,
                   help=f"default {recipe.epochs}; on a small set of your own, enough for {RECIPE_MIN_STEPS} steps")
    p.add_argument("--batch-size", type=positive_int,
                   help=f"default {recipe.batch_size}; on a small set of your own, down to {RECIPE_MIN_BATCH}")
    p.add_argument("--lr", type=positive_float,
                   help=f"peak Adam learning rate (default {recipe.lr:g}, for short runs; 1e-3 for hundreds of epochs; "
                        "on your own images of more than 784 values, scaled by sqrt(784 / values))")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"the learning rate after warm-up: {' or '.join(SCHEDULES)} (default {recipe.schedule})")
    p.add_argument("--warmup", type=unit_fraction,
                   help=f"fraction of steps of linear warm-up (default {recipe.warmup:g}, and at least "
                        f"{recipe.warmup_min_steps} steps)")
    p.add_argument("--beta2", type=unit_fraction, help=f"Adam's second-moment decay (default {recipe.beta2:g})")
    p.add_argument("--clip-grad", type=non_negative_float, metavar="NORM",
                   help="clip the gradients' global L2 norm (default 0: no clipping)")
    p.add_argument("--seed", type=seed_int, help=f"default {recipe.seed}")
    p.add_argument("--binarize", choices=BINARIZE_MODES,
                   help="targets: none (grayscale, as the seed; default), dynamic (Bernoulli per epoch) or threshold")
    p.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile the loss: on, off, or auto (the default: "
                   "on CUDA, and on CPU for runs long enough to repay the compile time)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="default auto: bf16 autocast where the hardware has native bf16, else fp32")
    add_device_argument(p)
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="train with N processes on this machine (torch's elastic launcher, as torchrun --standalone "
                        "--nproc_per_node N); --batch-size stays the global batch (docs/distributed.md)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log every epoch to RUN/tensorboard: scalars and image grids (needs: pip install "
                        "tensorboard); with --resume, the log goes on from the run's last finished epoch")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--out", type=non_empty_path, metavar="RUN",
                       help="run directory to create (default runs/<data>-<date>-<time>)")
    group.add_argument("--resume", type=non_empty_path, metavar="RUN",
                       help="continue this run from its last finished epoch (--epochs may raise its total); "
                            "a run with no finished epoch starts again, taking any training flag given")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import runs
    from ..distributed import launch, launched, world
    from ..fit import fit, restart, resume

    if args.nproc is not None and args.nproc > 1 and not launched():
        from ..devices import resolve_device
        from ..distributed import check_nproc

        check_nproc(args.nproc, resolve_device(args.device))  # refused once, here, not in every process
        extra = [] if args.out or args.resume else ["--out", str(default_out(args))]  # one name for every process
        return launch(args.nproc, [*args.argv, *extra])

    options = dict(data_dir=args.data_dir, device=args.device, progress=sys.stderr.isatty(), log=log,
                   tensorboard=args.tensorboard)
    if args.resume:
        given = [f"--{name.replace('_', '-')}" for name in CONFIG_FLAGS
                 if getattr(args, name) is not None and name != "epochs"]
        if given and runs.has_finished_epoch(args.resume):
            raise ConfigError(f"--resume continues a run with its own config once it has finished an epoch; drop "
                              f"{', '.join(given)} (only --epochs, --data-dir, --device, --threads and --tensorboard "
                              "may be given)")
        if given:  # no finished epoch: nothing is lost by starting again with these settings
            recorded = runs.read_config(args.resume)
            kept = recorded.model.input_shape[1:] if args.data is None else None  # the same data: its size
            images = own_images(args.data or recorded.data.name, args.image_size or kept)
            config = build_config(args, images, base=recorded)
            result = restart(args.resume, config, images=images, **options)
        else:
            result = resume(args.resume, epochs=args.epochs, **options)
    else:
        images = own_images(args.data, args.image_size)
        config = build_config(args, images)
        out = world().broadcast(args.out or default_out(args))  # the main process's clock names the run
        result = fit(config, out, images=images, **options)
    if not world().is_main():
        return 0
    last = result.metrics[-1]
    print(f"run saved to {result.path}: test loss {last['test_loss']:.3f} nats per image; "
          f"see samples_{last['epoch']}.png, reconstruction_{last['epoch']}.png and loss.png")
    return 0


def default_out(args) -> Path:
    """The run directory when --out is not given: runs/<data>-<date>-<time>."""
    return Path("runs") / f"{Path(args.data or 'mnist').name}-{time.strftime('%Y%m%d-%H%M%S')}"


def log(line: str) -> None:
    """Training's log: epoch lines on stdout, its warnings ("warning: ...", such as a posterior collapse) on
    stderr, so that stdout stays the run's record and a script sees warnings where it sees errors."""
    if line.startswith("warning: "):
        print(f"vaekit: {line}", file=sys.stderr)
    else:
        print(line)


def own_images(data: str | None, size: tuple[int, int] | None = None) -> ImageSet | None:
    """The user's images when --data is a path (read here, once: they size the model), fitted to `size`
    (--image-size) as they are read; None for a built-in. Data too big for memory (or a cache) is opened
    from its cache (prepared now if need be), to be streamed."""
    from ..data import is_builtin, read_images
    from ..data.sources import has_splits

    if data is None or has_splits(data):
        return None
    if is_builtin(data):
        raise ConfigError(f"--data {data}: give the dataset's name ({data.partition(':')[0]}); "
                          "vaekit trains on its train split and tests on its test split")
    from ..data.convert import is_cache, open_images, should_stream

    path = Path(data).resolve()  # the data is checked before a run directory is made
    if is_cache(path) or should_stream(path):
        return open_images(path, progress=sys.stderr.isatty(),
                           log=lambda line: print(f"vaekit: {line}", file=sys.stderr))
    return read_images(path, size=size, warn=warn)


def build_config(args, images: ImageSet | None = None, base: RunConfig | None = None) -> RunConfig:
    """The RunConfig the flags describe: the recipe's values, overridden by every flag given. `images`:
    the user's images read from --data (`own_images`), which set the model's input shape. `base`: the
    config whose values the flags override (a run's own, to restart it), instead of the defaults."""
    from ..data import dsprites_set

    if images is None and args.validation is not None:
        raise ConfigError(f"--validation holds out a share of your own images; {args.data or 'mnist'} has a test "
                          "split of its own: drop --validation")
    defaults = base or RunConfig()
    source = args.data or defaults.data.name
    data = str(Path(source).resolve()) if images is not None else source
    kept = base.model.input_shape if base is not None and args.data is None else None  # restarting on the same data
    generated = images is None and source == dsprites_set.NAME  # dSprites: its size, and the recipe sized to it
    channels, height, width = kept or (images.shape if images is not None else
                                       dsprites_set.SHAPE if generated else RunConfig().model.input_shape)
    height, width = args.image_size or (height, width)
    input_shape = (args.channels or channels, height, width)
    validation = args.validation if args.validation is not None else defaults.data.validation
    if args.recipe == "seed":
        recipe = TrainConfig.seed_settings()
    elif base is not None and args.recipe is None:
        recipe = base.train
    elif images is not None:  # vaekit's recipe, sized to the images (about the count that trains)
        from ..data.sources import held_out_count

        recipe = TrainConfig.for_data(max(1, len(images) - held_out_count(len(images), validation)),
                                      math.prod(input_shape))
    elif generated:
        recipe = TrainConfig.for_data(dsprites_set.count(), math.prod(input_shape))
    else:
        recipe = TrainConfig()
    family = registry.FAMILIES.get(args.family or defaults.model.family)
    if base is None and args.family:  # the family's own starting points, where the flags leave a choice
        model = dataclasses.replace(defaults.model, family=family.name, **dict(family.model_defaults))
        defaults = dataclasses.replace(defaults, model=model)
        if args.recipe is None and family.recipe:
            overrides = dict(family.recipe)
            if "lr" in overrides:  # scaled as vaekit's recipe scales its own rate to the images
                overrides["lr"] = float(f"{overrides['lr'] * recipe.lr / TrainConfig().lr:.2g}")
            recipe = dataclasses.replace(recipe, **overrides)
    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    latent_dim, latent_layers = latent_sizes(args.latent, family.name, defaults.model)
    return RunConfig(
        data=DataConfig(name=data, binarize=args.binarize or defaults.data.binarize, validation=validation,
                        standardize=bool(args.standardize) or (base is not None and base.data.standardize)),
        model=dataclasses.replace(defaults.model, input_shape=input_shape,
                                  hidden_dims=tuple(args.hidden or defaults.model.hidden_dims),
                                  latent_dim=latent_dim, latent_layers=latent_layers,
                                  **{name: tuple(v) if isinstance(v, list) else v
                                     for name in MODEL_FLAGS if (v := getattr(args, name)) is not None}),
        train=dataclasses.replace(recipe, **given),
    )


def latent_sizes(latent: list[int] | None, family: str, defaults: ModelConfig) -> tuple[int, tuple[int, ...]]:
    """(latent_dim, latent_layers) for --latent under `family`: one size for a family of one latent layer, one
    per layer (top first) for a hierarchical one; without --latent, the sizes of `defaults` where they fit."""
    hierarchical = registry.FAMILIES.get(family).hierarchical
    if latent is None:
        if not hierarchical:
            return defaults.latent_dim, ()
        if len(defaults.latent_layers) < 2:
            raise ConfigError(f"--family {family} needs --latent with one size per latent layer, top first, at "
                              "least two (e.g. --latent 16 32)")
        return defaults.latent_dim, defaults.latent_layers
    sizes = " ".join(map(str, latent))
    if hierarchical and len(latent) < 2:
        raise ConfigError(f"the {family} family has at least two latent layers: --latent takes one size per layer, "
                          f"top first (e.g. --latent 16 32), got one: --latent {sizes}")
    if not hierarchical and len(latent) != 1:
        hierarchies = [name for name in registry.FAMILIES.names() if registry.FAMILIES.get(name).hierarchical]
        raise ConfigError(f"the {family} family has one latent layer: --latent takes one size, got {len(latent)} "
                          f"(--latent {sizes})" + (f"; one size per layer is for --family {' or '.join(hierarchies)}"
                                                    if hierarchies else ""))
    return sum(latent), tuple(latent) if hierarchical else ()
