"""Shared fixtures: an isolated environment (no network, a temp cache dir) and fake or real data."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import DATASETS, DataFile, DatasetSpec, encode_idx, load_split

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"  # the bundled MNIST files
SESSION_THREADS = torch.get_num_threads()  # torch's count when the tests start, before any command changes it


@pytest.fixture(scope="session", autouse=True)
def session_threads():
    """The thread pin of `isolated` (below), for the whole session: module- and session-scoped fixtures (a
    reference run trained once, in this process or a subprocess) are set up before any function-scoped fixture,
    so without this they train at the load-dependent default count while the tests they serve are pinned."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("VAEKIT_THREADS"):
        yield
        return
    os.environ["VAEKIT_THREADS"] = str(SESSION_THREADS)
    yield
    os.environ.pop("VAEKIT_THREADS", None)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The cache-dir isolation of `isolated` (below), for the whole session, for the same reason as
    `session_threads`: a module-scoped fixture that trains on --data dsprites otherwise found the user's own
    ~/.cache/vaekit/dsprites (the whole set, from any real use) before the subset its test generates."""
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "VAEKIT_DATA_DIR")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("session-cache"))
    os.environ.pop("VAEKIT_DATA_DIR", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache dir, no $VAEKIT_DATA_DIR, and no network beyond loopback."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("VAEKIT_DATA_DIR", raising=False)
    # The CLI's default thread count follows the machine's load (vaekit.threads); tests that compare a CLI
    # run, often in a subprocess, with one in this process pin it to this session's count, so that float32
    # sums are split alike (tests/test_threads.py clears it to test the default). A test whose command set
    # another count (--threads, fuzzed) leaves torch as it found it.
    if not os.environ.get("OMP_NUM_THREADS"):
        monkeypatch.setenv("VAEKIT_THREADS", str(SESSION_THREADS))
    real_urlopen = urllib.request.urlopen

    def loopback_only(url, *args, **kwargs):
        full = url if isinstance(url, str) else url.full_url
        if urllib.parse.urlparse(full).hostname not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"a test tried to reach the network: {full}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", loopback_only)
    yield
    torch.set_num_threads(SESSION_THREADS)


@pytest.fixture(scope="session")
def mnist_test():
    return load_split("mnist", "test", DATA_DIR)


@pytest.fixture(scope="session")
def mnist_train():
    return load_split("mnist", "train", DATA_DIR)


def train(images: torch.Tensor, config, epochs: int) -> tuple[torch.nn.Module, list[float]]:
    """A model built from `config` and trained `epochs` epochs on `images` (binarized by the config's rule),
    with its per-epoch training losses."""
    from vaekit import Trainer
    from vaekit.fit import build_model

    model = build_model(config)
    trainer = Trainer(model, images, config.train, config.data.binarize)
    losses = [trainer.train_epoch() for _ in range(epochs)]
    return model, losses


def train_thresholded(images: torch.Tensor, epochs: int, pixel_groups: int = 1) -> torch.nn.Module:
    """A small model (200 hidden, 10 latents) trained on real MNIST images thresholded at 127."""
    from vaekit import ModelConfig, RunConfig, TrainConfig
    from vaekit.config import DataConfig

    config = RunConfig(DataConfig(binarize="threshold"),
                       ModelConfig(hidden_dims=(200,), latent_dim=10, pixel_groups=pixel_groups),
                       TrainConfig(epochs=epochs))
    return train(images, config, epochs)[0].eval()


@pytest.fixture(scope="session")
def thresholded_plain(mnist_train):
    """Independent pixels given z: 2 epochs on 20k images."""
    return train_thresholded(mnist_train.images[:20_000], 2)


@pytest.fixture(scope="session")
def thresholded_context(mnist_train):
    """Seven pixel groups: 1 epoch on 10k images, a quarter of the plain model's training."""
    return train_thresholded(mnist_train.images[:10_000], 1, pixel_groups=7)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def fake_split_files(n: int, seed: int, shape=(28, 28)) -> tuple[bytes, bytes]:
    """Raw IDX bytes of n random images and n labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return encode_idx(images), encode_idx(labels)


@pytest.fixture
def fake_dataset(monkeypatch):
    """Register a small built-in dataset "fake" (raw IDX bytes in .raw) with mirrors set per test."""
    raw = {}
    for split, n, seed in (("train", 64, 1), ("test", 16, 2)):
        prefix = "train" if split == "train" else "t10k"
        images, labels = fake_split_files(n, seed)
        raw[f"{prefix}-images-idx3-ubyte.gz"] = images
        raw[f"{prefix}-labels-idx1-ubyte.gz"] = labels

    def make(mirrors=()):
        md5 = {name: hashlib.md5(data).hexdigest() for name, data in raw.items()}
        spec = DatasetSpec(
            name="fake", title="Fake", mirrors=tuple(mirrors),
            splits={
                "train": (DataFile("train-images-idx3-ubyte.gz", md5["train-images-idx3-ubyte.gz"]),
                          DataFile("train-labels-idx1-ubyte.gz", md5["train-labels-idx1-ubyte.gz"])),
                "test": (DataFile("t10k-images-idx3-ubyte.gz", md5["t10k-images-idx3-ubyte.gz"]),
                         DataFile("t10k-labels-idx1-ubyte.gz", md5["t10k-labels-idx1-ubyte.gz"])),
            },
            classes=tuple(str(i) for i in range(10)), licence="test data",
        )
        monkeypatch.setitem(DATASETS, "fake", spec)
        return spec

    make.raw = raw
    return make


def write_files(directory: Path, files: dict[str, bytes], compress: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if compress:
            (directory / name).write_bytes(gz(data))
        else:
            (directory / name.removesuffix(".gz")).write_bytes(data)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
