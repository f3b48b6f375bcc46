"""A tiny trained run (300 MNIST test images, a 784-32-4 MLP, 1 epoch) for tests that doctor run directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_split

from .conftest import DATA_DIR

N_IMAGES = 300


def mnist_npz(path: Path, images: int = N_IMAGES) -> Path:
    """The first `images` MNIST test images and their labels as a user's own .npz at `path`."""
    mnist = load_split("mnist", "test", DATA_DIR)
    np.savez(path, images=mnist.images[:images].squeeze(1).numpy(), labels=mnist.labels[:images].numpy())
    return path


def make_tiny_run(directory: Path, images: int = N_IMAGES) -> Path:
    """Train the tiny run into directory/run (its images in directory/small.npz); returns the run's path."""
    data = mnist_npz(directory / "small.npz", images)
    config = RunConfig(data=DataConfig(name=str(data)), model=ModelConfig(hidden_dims=(32,), latent_dim=4),
                       train=TrainConfig(epochs=1, batch_size=64))
    return fit(config, directory / "run", device="cpu").path


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of `run` at destination, to doctor."""
    shutil.copytree(run, destination)
    return destination


def is_one_error_line(err: str) -> bool:
    """What a refused command may print on stderr: exactly one error line, last; before it only vaekit's own
    warnings (a deprecated spelling, say) and stage lines (`vaekit: [ 1.2 s] ...`), never a traceback."""
    lines = err.split("\n")[:-1]
    return (err.endswith("\n") and bool(lines) and lines[-1].startswith(("vaekit: error: ", "vaekit: interrupted"))
            and all(line.startswith(("vaekit: warning: ", "vaekit: [")) for line in lines[:-1]))
