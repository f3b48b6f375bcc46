"""One vocabulary of options for every subcommand: each name, what it means, the value it takes, and the
subcommands that take it. A name means one thing everywhere; tests/test_vocabulary.py walks every parser
and checks each option against this table, so a new option, or an old one given to another command,
is added here first.

`value` is the argparse type (None: text as given), `metavar` the value's name as --help shows it
(None for switches and choices), `choices` the choices where they are the same everywhere. Where a
command's value differs in kind but not in meaning (the file type -o writes, the methods --method
offers), `per_command` says how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..choices import INTERPOLATIONS, INVERT_MODES, MIXTURE_RULES, PROJECTIONS, QUALITY_CLASSIFIERS, SCORE_METHODS
from ..config import (BINARIZE_MODES, COMPILE_MODES, FAMILIES, LATENT_SHAPES, LIKELIHOODS, PIXEL_GROUPS, PRECISIONS,
                      PRIORS, SCHEDULES)
from ..samplers import COVARIANCES, SAMPLERS
from .explore import port_number
from .args import (architecture_name, finite_float, html_path, image_reference, image_size, iw_count,
                   non_empty_path, non_empty_text, non_negative_float, non_negative_int, picture_count, picture_scale,
                   png_or_gif_path, png_path, positive_float, positive_int, seed_int, threads_value, unit_fraction)
from .plot import PLOTS
from .samplers import FITTED

TOP = "vaekit"  # the options before the subcommand
COMPUTE = ("train", "eval", "sample", "reconstruct", "interpolate", "traverse", "manifold", "embed", "probe", "plot",
           "report", "score", "calibrate", "compress", "decompress", "fit-sampler", "quality", "disentanglement",
           "explore")
ON_A_DEVICE = tuple(c for c in COMPUTE if c not in ("compress", "decompress"))  # bits-back coding runs on the CPU
READS_DATA = tuple(c for c in COMPUTE if c not in ("sample", "decompress", "disentanglement"))  # it draws its own
PICTURES = ("sample", "reconstruct", "interpolate", "traverse", "manifold")


@dataclass(frozen=True)
class Option:
    """One option (or positional argument) of the command line, as every subcommand that takes it spells it."""

    meaning: str
    commands: tuple[str, ...]
    value: Callable | None = None
    metavar: str | None = None
    nargs: str | None = None
    switch: bool = False  # takes no value
    choices: tuple | None = None
    per_command: dict[str, dict[str, Any]] = field(default_factory=dict)  # value, metavar or choices by command


def _output(value, metavar: str) -> dict[str, Any]:
    return {"value": value, "metavar": metavar}


# by option strings, as argparse lists them ("-o/--output")
OPTIONS: dict[str, Option] = {
    "--version": Option("print vaekit's version and exit", (TOP,), switch=True),
    "--debug": Option("show the full traceback of an error", (TOP,), switch=True),
    # where images come from
    "--data": Option("what to train on: a built-in dataset's name or a path to your images", ("train",),
                     non_empty_text, "DATA"),
    "--data-dir": Option("the folder searched first for built-in datasets' files", (*READS_DATA, "data prepare"), Path,
                         metavar="DATA_DIR"),
    "--validation": Option("the fraction of your own images held out as the test set", ("train",), unit_fraction,
                           metavar="FRACTION"),
    "--standardize": Option("see every image at zero mean and unit variance", ("train",), switch=True),
    "--binarize": Option("how pixels become training targets", ("train",), choices=BINARIZE_MODES),
    "--image-size": Option("the size every image is made: the shorter side resized, the centre cropped", ("train",),
                           image_size, "S|HxW"),
    "--channels": Option("the image channels: 1 (grayscale) or 3 (colour)", ("train",), int, choices=(1, 3)),
    "--invert": Option("the polarity of new images against the run's training images", (
        "score", "calibrate", "embed", "interpolate", "traverse"), choices=INVERT_MODES),
    # the model
    "--family": Option("the model family", ("train",), choices=FAMILIES),
    "--architecture": Option("the encoder and decoder networks: a built-in's name or a builder module:function",
                             ("train",), architecture_name, "NAME"),
    "--hidden": Option("hidden layer sizes", ("train",), positive_int, "SIZE", "+"),
    "--conv-channels": Option("channels of a conv model's stride-2 layers", ("train",), positive_int, "C", "+"),
    "--width": Option("a resnet's channels at full resolution (x2 at half, x4 below)", ("train",), positive_int,
                      "W"),
    "--blocks": Option("a resnet's residual blocks at each resolution", ("train",), positive_int, "N"),
    "--latent-shape": Option("a resnet's latent: a vector, or channels on its smallest grid", ("train",),
                             choices=LATENT_SHAPES),
    "--latent": Option("latent dimensions: one size, or one per latent layer, top first", ("train",), positive_int,
                       "N", "+"),
    "--likelihood": Option("the pixel likelihood", ("train",), choices=LIKELIHOODS),
    "--likelihood-components": Option("a mixture likelihood's logistics per pixel", ("train",), positive_int, "K"),
    "--prior": Option("the prior over the latents", ("train",), choices=PRIORS),
    "--prior-components": Option("a VampPrior's pseudo-inputs", ("train",), positive_int, "PRIOR_COMPONENTS"),
    "--pixel-groups": Option("interleaved pixel groups decoded in turn", ("train",), int, choices=PIXEL_GROUPS),
    "--context-channels": Option("channels of the pixel groups' context convolution", ("train",), positive_int,
                                 "CONTEXT_CHANNELS"),
    "--context-features": Option("channels per pixel passed to the pixel groups' context", ("train",),
                                 non_negative_int, "M"),
    # the objective and the optimisation
    "--beta": Option("the weight of the KL term", ("train",), non_negative_float, "BETA"),
    "--tc-beta": Option("the weight of the KL's total correlation (beta-TCVAE)", ("train",), non_negative_float, "B"),
    "--kl-warmup": Option("epochs over which the KL weight rises from 0", ("train",), non_negative_int, "EPOCHS"),
    "--free-bits": Option("the floor on each latent dimension's KL", ("train",), non_negative_float, "NATS"),
    "--iwae": Option("train on the IWAE bound with K samples per image", ("train",), positive_int, "K"),
    "--recipe": Option("the optimisation defaults", ("train",), choices=("vaekit", "seed")),
    "--epochs": Option("epochs to train (in all)", ("train", "fit-sampler"), positive_int, "EPOCHS"),
    "--batch-size": Option("images per training step", ("train",), positive_int, "BATCH_SIZE"),
    "--lr": Option("Adam's peak learning rate", ("train",), positive_float, "LR"),
    "--schedule": Option("the learning rate after warm-up", ("train",), choices=SCHEDULES),
    "--warmup": Option("the fraction of steps of linear learning-rate warm-up", ("train",), unit_fraction, "WARMUP"),
    "--beta2": Option("Adam's second-moment decay", ("train",), unit_fraction, "BETA2"),
    "--clip-grad": Option("the bound on the gradients' global L2 norm", ("train",), non_negative_float, "NORM"),
    "--seed": Option("the seed of the command's random draws", ("train", "sample", "fit-sampler", "quality",
                                                                "disentanglement"), seed_int, "SEED"),
    "--samples": Option("samples per disentanglement score", ("disentanglement", "report"), positive_int, "N"),
    "--estimator": Option("DCI's regressor", ("disentanglement",), choices=("lasso", "gbt")),
    "--plot": Option("also draw the latent x factor mutual information", ("disentanglement",), png_path, "FILE.png"),
    "--out": Option("where to write: the run directory to create, or the folder of a dataset cache",
                    ("train", "data prepare"), non_empty_path, "RUN", per_command={"data prepare": {"metavar": "DIR"}}),
    "--resume": Option("the run directory to continue", ("train",), non_empty_path, "RUN"),
    "--tensorboard": Option("also log every epoch to RUN/tensorboard", ("train",), switch=True),
    # how the numbers are computed
    "--compile": Option("torch.compile the loss", ("train",), choices=COMPILE_MODES),
    "--precision": Option("the arithmetic of the network's passes: fp32, or bf16 where native", ("train", "eval"),
                          choices=PRECISIONS),
    "--device": Option("the device to compute on", ON_A_DEVICE, metavar="DEVICE"),
    "--threads": Option("CPU threads torch computes with, or auto", COMPUTE, threads_value, "N"),
    "--nproc": Option("train with N processes on this machine (torch's elastic launcher)", ("train",),
                      positive_int, "N"),
    # what a command computes and writes
    "-o/--output": Option("the file to write (its type by its suffix)", (
        "sample", "reconstruct", "interpolate", "traverse", "manifold", "embed", "plot", "report", "score", "compress",
        "decompress"), per_command={
        "sample": _output(png_path, "FILE.png"), "reconstruct": _output(png_path, "FILE.png"),
        "interpolate": _output(png_or_gif_path, "FILE.png|FILE.gif"), "traverse": _output(png_path, "FILE.png"),
        "manifold": _output(png_path, "FILE.png"), "plot": _output(png_path, "FILE.png"),
        "embed": _output(Path, "FILE.npz"), "report": _output(html_path, "FILE.html"), "score": _output(Path, "FILE"),
        "compress": _output(Path, "FILE"), "decompress": _output(Path, "OUTPUT")}),
    "--json": Option("print one JSON object instead of a table", ("eval", "probe", "quality", "disentanglement",
                                                                 "pretrained list"),
                     switch=True),
    "-n": Option("how many images", ("sample", "reconstruct", "quality"), picture_count, "N",
                 per_command={"quality": {"value": positive_int}}),
    "--images": Option("use only the first N images of the test set", ("eval",), positive_int, "N"),
    "--iw-samples": Option("importance samples per image of the NLL estimate", ("eval", "report", "score", "calibrate"),
                           iw_count, "K"),
    "--method": Option("how the command computes its result; each command has its own methods", (
        "interpolate", "plot", "score", "calibrate"), per_command={
        "interpolate": {"choices": INTERPOLATIONS}, "plot": {"choices": PROJECTIONS},
        "score": {"choices": SCORE_METHODS}, "calibrate": {"choices": SCORE_METHODS}}),
    "--from": Option("the image a path starts from: a test index, SOURCE or SOURCE@N", ("interpolate",),
                     image_reference, "IMAGE"),
    "--to": Option("the image a path ends at: a test index, SOURCE or SOURCE@N", ("interpolate",), image_reference,
                   "IMAGE"),
    "--image": Option("the image to start from: a test index, SOURCE or SOURCE@N", ("traverse",), image_reference,
                      "IMAGE"),
    "--steps": Option("images along a path or a sweep, ends included", ("interpolate", "traverse"), picture_count,
                      "STEPS"),
    "--layer": Option("a hierarchical model's latent layer: z1 (the top) to zL, or all", ("embed", "probe", "traverse"),
                      metavar="NAME"),
    "--rows": Option("latent dimensions shown, one per row", ("traverse",), positive_int, "ROWS"),
    "--side": Option("images per side of a square grid", ("manifold",), positive_int, "SIDE"),
    "--scale": Option("pixel scale of output pictures", PICTURES, picture_scale, "S"),
    "--points": Option("test images shown in a scatter plot", ("plot",), positive_int, "POINTS"),
    "--labels": Option("label counts of the semi-supervised probes", ("probe",), positive_int, "N", "+"),
    "--no-pixels": Option("skip the raw-pixel reference probe", ("probe",), switch=True),
    # anomaly detection
    "--threshold": Option("flag anomaly scores above this", ("score",), finite_float, "THRESHOLD"),
    "--quantile": Option("the quantile of normal images' scores taken as the threshold", ("calibrate",), float,
                         "QUANTILE"),
    "--extremes": Option("also draw the most and least anomalous inputs", ("score",), png_path, "FILE.png"),
    "--mixture": Option("more runs that score with RUN as one detector", ("score", "calibrate"), Path, "RUN", "+"),
    "--combine": Option("how scores are measured against normal ones and --mixture's combined", ("score", "calibrate"),
                        choices=MIXTURE_RULES),
    "--background": Option("the background run of the ratio score", ("score", "calibrate"), Path, "RUN"),
    # samplers and sample quality
    "--sampler": Option("where the latents are drawn from: the prior, or a sampler fitted by fit-sampler",
                        ("sample", "manifold", "report", "quality", "fit-sampler"), choices=SAMPLERS.names(),
                        per_command={"fit-sampler": {"choices": FITTED}}),
    "--components": Option("a gmm sampler's mixture components", ("fit-sampler",), positive_int, "K"),
    "--covariance": Option("a gmm sampler's covariances", ("fit-sampler",), choices=COVARIANCES),
    "--classifier": Option("the shipped classifier whose features measure samples", ("quality",),
                           choices=QUALITY_CLASSIFIERS),
    # the explorer
    "--port": Option("the TCP port the explorer listens on (0: any free one)", ("explore",), port_number, "PORT"),
    "--host": Option("the address the explorer listens on", ("explore",), metavar="HOST"),
    "--map": Option("the 2-D map of the test images' posterior means", ("explore",), choices=PROJECTIONS),
    "--map-points": Option("test images on the explorer's map", ("explore",), positive_int, "N"),
    # compression
    "--latent-bits": Option("bits per latent dimension of the discretized latent", ("compress",), positive_int,
                            "BITS"),
}

# by dest; `nargs` "?" where the argument may be left out
POSITIONALS: dict[str, Option] = {
    "command": Option("the subcommand", (TOP,), metavar="COMMAND"),
    "run": Option("a run directory written by `vaekit train`, or pretrained:NAME",
                  tuple(c for c in COMPUTE if c != "train"), non_empty_path, "RUN",
                  per_command={"explore": {"nargs": "+"}}),
    "input": Option("images: a built-in split (mnist:test), an image file or array, or a folder", (
        "embed", "score", "calibrate", "compress", "data prepare"), metavar="INPUT",
        per_command={"calibrate": {"nargs": "?"}}),
    "file": Option("a file written by vaekit compress", ("decompress",), Path, "FILE"),
    "what": Option("what to draw", ("plot",), choices=PLOTS),
    "data_command": Option("what `vaekit data` does", ("data",), metavar="ACTION"),
    "pretrained_command": Option("what `vaekit pretrained` does", ("pretrained",), metavar="ACTION"),
    "name": Option("a pretrained run's name", ("pretrained copy",), metavar="NAME"),
    "target": Option("the run directory to create", ("pretrained copy",), non_empty_path, "DIR"),
}

# former spellings, still accepted with a one-line note on stderr: (command, option) -> what replaced it
DEPRECATED: dict[tuple[str, str], str] = {
    ("compress", "--precision"): "--latent-bits",  # --precision is fp32/bf16 everywhere else
    ("manifold", "-n"): "--side",  # -n is an image count everywhere else
    ("calibrate", "--data"): "input",  # score takes its images as INPUT; --data is what train trains on
}
