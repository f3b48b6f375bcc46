"""What every subcommand shares: one-line argument errors, checked argument types, common options,
image references and deprecated spellings. vaekit.cli.vocabulary lists every option and what it means."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import DEVICE_CHOICES
from ..choices import INVERT_MODES
from ..config import ARCHITECTURES, BUILDER_PATTERN, MAX_IW_SAMPLES, MAX_PICTURES, MAX_SEED, MAX_SIDE
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as ConfigError) rather than usage plus message."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._arguments = list(sys.argv[1:] if args is None else args)  # subcommands get theirs from the parent
        namespace, extras = super().parse_known_args(args, namespace)
        given = vars(namespace).pop("_deprecated_aliases", [])
        for option, value, instead in {alias.dest: (option, value, alias) for option, value, alias in given}.values():
            if getattr(namespace, instead.dest) != value:  # the current spelling came after, with another value
                DeprecatedAlias.disagree(self, option, value, instead, getattr(namespace, instead.dest))
        return namespace, extras

    def error(self, message: str):
        if "arguments are required" in message:  # perhaps swallowed by an option that takes one or more words
            given = getattr(self, "_arguments", [])
            greedy = [o for a in self._actions if a.nargs == "+" for o in a.option_strings if o in given]
            positionals = [a.metavar or a.dest for a in self._actions if not a.option_strings]
            if greedy and positionals:
                message += f" ({greedy[0]} takes every word up to the next option: put it after {positionals[-1]})"
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def _number(parse, expected: str, ok):
    """An argparse type: `parse` the text, and reject values for which `ok` is false, naming what was expected."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


# every integer flag fits torch's int64; sizes have tighter bounds in vaekit.config
positive_int = _number(int, "a positive integer", lambda v: 0 < v <= MAX_SEED)
non_negative_int = _number(int, "a non-negative integer", lambda v: 0 <= v <= MAX_SEED)
seed_int = _number(int, f"a seed from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED)
iw_count = _number(int, f"a positive integer up to {MAX_IW_SAMPLES:,}", lambda v: 1 <= v <= MAX_IW_SAMPLES)
picture_count = _number(int, f"a count from 1 to {MAX_PICTURES:,}", lambda v: 1 <= v <= MAX_PICTURES)
MAX_SCALE = 32  # --scale: 32x already makes a 28x28 image 896 pixels a side
picture_scale = _number(int, f"a scale from 1 to {MAX_SCALE}", lambda v: 1 <= v <= MAX_SCALE)
finite_float = _number(float, "a finite number", lambda v: abs(v) < float("inf"))
positive_float = _number(float, "a positive number", lambda v: 0 < v < float("inf"))
non_negative_float = _number(float, "a non-negative number", lambda v: 0 <= v < float("inf"))
unit_fraction = _number(float, "a number in [0, 1)", lambda v: 0 <= v < 1)


def image_size(text: str) -> tuple[int, int]:
    """An argparse type: --image-size S (square) or HxW, as (H, W), each side from 1 to MAX_SIDE."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        sides = [int(p) for p in parts]
        if all(1 <= side <= MAX_SIDE for side in sides):
            return (sides[0], sides[-1])
    raise argparse.ArgumentTypeError(f"expected a size S or HxW (sides from 1 to {MAX_SIDE:,}), got {text!r}")


def non_empty_path(text: str) -> Path:
    """An argparse type: a Path, refusing the empty string (which would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def non_empty_text(text: str) -> str:
    """An argparse type: any text but the empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name or a path, got an empty string")
    return text


def architecture_name(text: str) -> str:
    """An argparse type: a built-in architecture (vaekit.registry.ARCHITECTURES) or a builder "package.module:function"
    (checked in form only: it is imported when the model is built, vaekit.models.architectures)."""
    if text in ARCHITECTURES or BUILDER_PATTERN.match(text):
        return text
    raise argparse.ArgumentTypeError(f"expected {', '.join(ARCHITECTURES)}, or your own builder as "
                                     f"package.module:function, got {text!r}")


def file_name(expected: str, *suffixes: str):
    """An argparse type for an output file: a Path whose suffix (any case) is one of `suffixes`, naming what was
    expected, and that can become a regular file (OutputError now, not after minutes of work: atomic.check_target)."""
    from ..atomic import check_target

    def convert(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        check_target(path)
        return path

    return convert


png_path = file_name("a .png file name", ".png")
png_or_gif_path = file_name("a .png or .gif file name", ".png", ".gif")
html_path = file_name("an .html file name", ".html", ".htm")


@dataclass(frozen=True)
class ImageRef:
    """One image named on the command line: test-set image `index` (source None), or image `index` of `source`."""

    source: str | None
    index: int

    def __str__(self) -> str:
        return str(self.index) if self.source is None else f"{self.source}@{self.index}"


IMAGE_HELP = "a test-set index, or an image source (its first image, or image N with SOURCE@N)"


def image_reference(text: str) -> ImageRef:
    """An argparse type: a test-set index (`3`), an image source (`digit.png`, its first image) or image N of a
    source (`mnist:train@3`); `reference_image` reads it. Indices are ASCII digits (not `²`); one past any
    dataset's size (and Python's int-parsing limit) is kept as 10**18, which check_index then refuses."""
    if _is_index(text):
        return ImageRef(None, _index(text))
    source, at, index = text.rpartition("@")
    if not at or (not _is_index(index) and Path(text).exists()):  # a file whose name holds '@': its first image
        return ImageRef(text, 0)
    if not source or not _is_index(index):
        raise argparse.ArgumentTypeError(f"expected a test index, SOURCE or SOURCE@N, got {text!r}")
    return ImageRef(source, _index(index))


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _index(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else 10 ** 18


def reference_image(run, args, flag: str, ref: ImageRef, test_set) -> torch.Tensor:
    """The image `ref` names (from `image_reference`) as one model input (C, H, W) of `run`.

    test_set() gives the run's test inputs (called only for a test index); flag names the option in errors."""
    if ref.source is None:
        x = test_set()
        check_index(flag, ref.index, len(x), "the test set")
    else:
        x, _, _ = model_inputs(run, ref.source, args.data_dir, invert=args.invert)
        check_index(flag, ref.index, len(x), ref.source, prefix=f"{ref.source}@")
    return x[ref.index]


class DeprecatedAlias(argparse.Action):
    """A former spelling of an option, hidden from --help: stores its value where the current spelling
    (`instead`, as the note names it) does, after a one-line note on stderr."""

    def __init__(self, option_strings, dest, instead: str, **kwargs):
        self.instead = instead
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"vaekit: warning: {parser.prog} {option_string} is deprecated and will be removed: "
              f"use {self.instead.format(value=values)}", file=sys.stderr)
        current = getattr(namespace, self.dest, None)
        before = [value for _, value, alias in getattr(namespace, "_deprecated_aliases", []) if alias.dest == self.dest]
        if current != values and (current != before[-1] if before else
                                  current is not None and current != parser.get_default(self.dest)):
            self.disagree(parser, option_string, values, self, current)  # the current spelling came first
        setattr(namespace, self.dest, values)
        namespace._deprecated_aliases = [*getattr(namespace, "_deprecated_aliases", []), (option_string, values, self)]

    @staticmethod
    def disagree(parser, option: str, value, alias: DeprecatedAlias, other) -> None:
        """ConfigError: a former spelling and the current one were both given, with different values."""
        raise ConfigError(f"{parser.prog}: {option} {value} and {alias.instead.format(value=other)} disagree: "
                          f"give only {alias.instead.format(value=other)}")


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=non_empty_path, metavar="RUN",
                        help="a run directory written by `vaekit train`, or a pretrained run: pretrained:mnist "
                             "(`vaekit pretrained list`)")


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="look here first for DATASET/ folders (then $VAEKIT_DATA_DIR, ./data, the package's copy, "
                             "/usr/share/datasets, the cache dir)")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help=f"{', '.join(DEVICE_CHOICES)} (auto: cuda, then mps, then cpu); default auto")


def add_scale_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=picture_scale, default=None, metavar="S",
                        help="repeat each pixel S times across and down (default: images about 96 pixels a side, "
                             "the picture at most 1,600)")


def check_picture_count(name: str, count: int) -> None:
    """ConfigError if a picture would hold more than MAX_PICTURES images (each one decoded in memory)."""
    if count > MAX_PICTURES:
        raise ConfigError(f"{name} asks for {count:,} images in one picture; at most {MAX_PICTURES:,}")


def threads_value(text: str) -> int | str:
    """An argparse type: 'auto' or a thread count (vaekit.threads.parse_threads), naming what was expected."""
    from ..threads import parse_threads

    try:
        return parse_threads(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--threads: ")) from None


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads N|auto: the CPU threads torch computes with (applied by cli.main before the command runs)."""
    parser.add_argument("--threads", type=threads_value, default=None, metavar="N",
                        help="CPU threads to compute with (default: $VAEKIT_THREADS, else $OMP_NUM_THREADS, else "
                             "auto: one per physical core, idle threads sleeping rather than spinning)")


def check_index(name: str, index: int, size: int, what: str, prefix: str = "") -> None:
    """ConfigError unless 0 <= index < size (`prefix` goes before the index in the message: `SOURCE@`)."""
    if not 0 <= index < size:
        shown = "a number past any dataset's size" if index >= 10 ** 18 else f"{prefix}{index}"
        raise ConfigError(f"{name} {shown} is out of range: {what} has {size} images (0 to {size - 1})")


def open_run(args):
    """The run named by args.run, loaded on args.device."""
    from ..devices import resolve_device
    from ..runs import load_run

    return load_run(args.run, resolve_device(args.device))


def test_inputs(run, args):
    """The run's test images (its dataset's test split, or its held-out share of the user's images) as
    model inputs, binarized as in training, on the run's device."""
    return test_data(run, args)[0]


def test_data(run, args, for_latents: bool = False):
    """`test_inputs` (or, for_latents, `latent_inputs`), and the test ImageSet they came from (for its labels)."""
    test = run.held_out(args.data_dir)
    return run.inputs(test, for_latents), test  # standardizes only the images used, not the training split


def model_inputs(run, source: str, data_dir, for_latents: bool = False,
                 invert: str = "off") -> tuple[torch.Tensor, list[str], list]:
    """Images from any source as the run's model inputs (`Run.inputs`), with a name and a label (or None) per image:
    a folder's images fitted to the run's size as they are read, all of them prepared as the run's own
    (`data.preparation`), with `invert` (--invert) for their polarity; what was inverted or dropped is said on stderr.

    for_latents: prepared for reading codes (`latent_inputs`) rather than for scoring or coding them.
    """
    from ..data import read_images
    from ..data.preparation import prepare

    preparation = run.preparation(invert)
    images = read_images(source, data_dir, size=preparation.size, resize=preparation.resize, warn=warn)
    prepared = prepare(images, preparation)
    if note := prepared.note():
        warn(f"{source}: {note}")
    x = run.inputs(prepared.images, for_latents)
    names = list(images.names) if images.names is not None else [str(i) for i in range(len(images))]
    labels = images.labels.tolist() if images.labels is not None else [None] * len(images)
    return x, names, labels


def warn(line: str) -> None:
    """A warning about the images read, one line on stderr."""
    print(f"vaekit: warning: {line}", file=sys.stderr)


def add_invert_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """--invert auto|on|off: the polarity of the images a command reads, against the run's training images."""
    parser.add_argument("--invert", choices=INVERT_MODES, default=default,
                        help="dark-on-light images given to a run trained on light-on-dark ones (or the reverse): "
                             "auto inverts those whose border says so, on inverts every image, off none (a warning "
                             f"says what auto would do); default {default}")


def stage_log(started: float | None = None):
    """A log for the stages of a long command: each line on stderr as it begins, with the seconds since
    `started` (default now), as "vaekit: [ 12.3 s] t-SNE of 5,000 points...", so a quiet minute is explained."""
    began = time.perf_counter() if started is None else started

    def log(line: str) -> None:
        print(f"vaekit: [{time.perf_counter() - began:5.1f} s] {line}", file=sys.stderr, flush=True)

    return log
