"""Hooks for watching training: what a callback sees after each epoch, and TensorBoard logging as one.

A callback is any callable `callback(epoch)`, called with an `Epoch` after every epoch that `fit`,
`resume` or `restart` trains, once that epoch's checkpoint is committed. It may also have
`resumed(epoch)`, called once when a run resumes, with the last committed epoch (a kill between the
checkpoint and the callbacks would otherwise leave that epoch unseen), and `close()`, called when
training ends, however it ends. A callback that raises stops training; the committed checkpoint stays.

Callbacks read; they must not change the model or draw from training's random streams (training draws
only from generators seeded per epoch, so torch's global generator is theirs to use).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .config import RunConfig
from .errors import ConfigError, TrainingError, VaekitError
from .generate import reconstruct, sample
from .models import VAE
from .plots import image_grid
from .rng import make_generator

N_SAMPLES = 64  # images in each samples_<epoch>.png
N_RECONSTRUCTIONS = 8  # test images in each reconstruction_<epoch>.png
TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard: TensorBoardCallback's event files
TENSORBOARD_INSTALL = "pip install tensorboard (or pip install 'vaekit[tensorboard]')"

Callback = Callable[["Epoch"], Any]


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity, never tensor by tensor
class Epoch:
    """What a callback sees after a committed epoch: read it, never change it (the model is the one training goes
    on with)."""

    epoch: int  # 1-based, the epoch just committed
    metrics: Mapping[str, Any]  # its row of metrics.jsonl
    history: tuple[Mapping[str, Any], ...]  # every row so far, this epoch's last
    learning_rate: float  # the rate of the epoch's last optimizer step
    model: VAE
    run: Path
    config: RunConfig
    sample_seed: int  # the seed of the prior draws in every samples_<epoch>.png
    test_inputs: torch.Tensor  # (N_RECONSTRUCTIONS, C, H, W): the test images in reconstruction_<epoch>.png

    def samples(self) -> torch.Tensor:
        """The images of samples_<epoch>.png (N_SAMPLES, C, H, W): the same prior draws every epoch."""
        return sample(self.model, N_SAMPLES, make_generator(self.sample_seed, self.test_inputs.device))

    def reconstructions(self) -> torch.Tensor:
        """The images of reconstruction_<epoch>.png (2 N_RECONSTRUCTIONS, C, H, W): the inputs, then their
        reconstructions."""
        return torch.cat([self.test_inputs, reconstruct(self.model, self.test_inputs)])


def read_only(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A metrics row that a callback cannot change (its lists become tuples)."""
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})


class CallbackError(TrainingError):
    """A callback raised: training stops after the epoch it was called for, whose checkpoint stays."""


def notify(callbacks: Sequence[Callback], state: Epoch, hook: str = "__call__") -> None:
    """Call each callback's `hook` (where it has one) with `state`; the first that raises stops training with a
    CallbackError saying what the run keeps."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is None:
            continue
        try:
            method(state)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            raise CallbackError(f"{describe(callback)} stopped training after epoch {state.epoch}: {reason(e)}; "
                                f"{state.run} keeps its checkpoint of epoch {state.epoch}; continue with: "
                                f"vaekit train --resume {shlex.quote(str(state.run))}") from e


@contextmanager
def closing(callbacks: Sequence[Callback]):
    """Close every callback that has `close()` when the block ends. A failing close is reported only when the
    block itself succeeded: it never hides the error that ended training."""
    try:
        yield
    except BaseException:
        for callback in callbacks:
            try:
                _close(callback)
            except Exception:  # the error already on its way out is the one to report
                pass
        raise
    for callback in callbacks:
        try:
            _close(callback)
        except Exception as e:
            raise CallbackError(f"{describe(callback)} failed to close: {reason(e)}") from e


def _close(callback: Callback) -> None:
    if (close := getattr(callback, "close", None)) is not None:
        close()


def describe(callback: Callback) -> str:
    """The callback's name for an error line: its function's or class's qualified name."""
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    return f"callback {name}"


def reason(error: BaseException) -> str:
    """An exception as one line: a vaekit error's message, anything else's type and message."""
    text = " ".join(str(error).split())
    if isinstance(error, VaekitError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def with_tensorboard(callbacks: Iterable[Callback] | None, tensorboard: bool) -> list[Callback]:
    """`callbacks` as a list, with a TensorBoardCallback added when asked (which checks tensorboard is installed)."""
    chosen = list(callbacks or ())
    if tensorboard and not any(isinstance(c, TensorBoardCallback) for c in chosen):
        chosen.append(TensorBoardCallback())
    return chosen


def summary_writer_class():
    """torch's SummaryWriter, or a ConfigError naming the pip command when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"TensorBoard logging needs the tensorboard package, which is not installed: "
                          f"{TENSORBOARD_INSTALL}") from None
    return SummaryWriter


def epoch_scalars(state: Epoch) -> dict[str, float]:
    """The scalars TensorBoardCallback logs for an epoch, by tag: the metrics row and the learning rate."""
    row = state.metrics
    scalars = {"loss/train": row["train_loss"], "loss/test": row["test_loss"],
               "test/rate": row["test_kl"], "test/distortion": row["test_reconstruction"],
               "test/active_units": row["active_units"], "train/learning_rate": state.learning_rate,
               "train/seconds": row["seconds"]}
    per_dim = row.get("kl_per_dim") or []  # none where the prior has no closed-form KL (a VampPrior)
    width = len(str(len(per_dim) - 1))  # zero-padded, so TensorBoard lists the dimensions in order
    scalars.update({f"kl_per_dim/{d:0{width}d}": kl for d, kl in enumerate(per_dim)})
    scalars.update({f"kl_per_layer/{name}": kl for name, kl in (row.get("kl_per_layer") or {}).items()
                    if kl is not None})
    return scalars


class TensorBoardCallback:
    """Logs every epoch to TensorBoard: `epoch_scalars` and the samples and reconstruction grids of the epoch's PNGs.

    Event files go to `log_dir` (default RUN/tensorboard). The writer opens at the first epoch it sees with
    `purge_step` at that epoch, so a resumed run's events replace whatever a killed run wrote after its checkpoint:
    no duplicate points, and (with `resumed`) no gap.
    """

    def __init__(self, log_dir: str | Path | None = None):
        self._writer_class = summary_writer_class()  # fails here, before training, when tensorboard is missing
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer = None

    def __call__(self, state: Epoch) -> None:
        if self.writer is None:
            self.writer = self._writer_class(str(self.log_dir or state.run / TENSORBOARD_DIR), purge_step=state.epoch)
        for tag, value in epoch_scalars(state).items():
            self.writer.add_scalar(tag, value, state.epoch)
        for tag, images, nrow in (("samples", state.samples(), 8),
                                  ("reconstruction", state.reconstructions(), len(state.test_inputs))):
            grid = image_grid(images, nrow=nrow)  # (H, W) or (H, W, 3) uint8, as in the PNG
            self.writer.add_image(tag, grid, state.epoch, dataformats="HW" if grid.ndim == 2 else "HWC")
        self.writer.flush()  # a killed run keeps every epoch it logged

    def resumed(self, state: Epoch) -> None:
        """Log the resumed run's last committed epoch again: a kill after its checkpoint may have come before it
        was logged, and purging from it drops anything logged after it."""
        self(state)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
