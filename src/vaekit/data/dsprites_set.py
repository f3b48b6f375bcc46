"""vaekit's dSprites as a built-in dataset: `--data dsprites`, and the sources `dsprites:train`, `dsprites:test`.

The images live in their hash-checked packed file (`dsprites_file`, 377 MB for the 737,280 images), found in the
data directories (`datasets.search_dirs`, in DIR/dsprites/) or generated on first use into the first of --data-dir,
$VAEKIT_DATA_DIR and the user cache dir. They are never unpacked all at once (3 GB as uint8): `PackedSprites` reads
the images a batch asks for with positioned reads and unpacks only those, behind the interface a StreamedSet reads
a cache through (`shape`, `read(positions)`), so training streams them exactly as it streams a big .vkds cache
(same seeded order, same read-ahead, bitwise resume).

Splits (dSprites has none; the disentanglement literature trains on every image and scores on freshly drawn ones):
`train` is every image; `test` a fixed seeded sample of TEST_SIZE of them (the same for every run), so the test
ELBO measures fit, not generalization. Labels: the shape (0 square, 1 ellipse, 2 heart), so embed, probe and the
report colour by it; every image's five factor indices follow from its position (`factor_indices`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import dsprites, dsprites_file
from .datasets import DATA_DIR_ENV, cache_dir, search_dirs
from .files import MAX_DECODED_BYTES, display, open_input
from .imageset import ImageSet

NAME = "dsprites"
SPLITS = ("train", "test")
SHAPE = (1, dsprites.SIZE, dsprites.SIZE)  # (C, H, W)
TEST_SIZE = 10_000  # the test split: a fixed sample of the set (at most a tenth of a smaller set)
TEST_SEED = 27  # the seed of that sample (issue #27); not the run's: every run has the same test split
IN_MEMORY_TRAIN = 20_000  # commands that hold the training split in memory (probes, fit-sampler) read this many;
# as float inputs (the probes' features) they are 328 MB
FACTORS = dsprites.Factors()  # the images the set holds; tests put a smaller subset here


def count(factors: dsprites.Factors | None = None) -> int:
    """The number of images in the set."""
    return math.prod(len(values) for values in (factors or FACTORS).lists())


def factor_indices(positions: np.ndarray, factors: dsprites.Factors | None = None) -> np.ndarray:
    """(N,) positions in the set -> (N, 5) int64 factor indices (the set's own mixed radix, y fastest)."""
    lists = (factors or FACTORS).lists()
    rest = np.asarray(positions, dtype=np.int64).reshape(-1).copy()
    out = np.empty((len(rest), len(lists)), dtype=np.int64)
    for k in range(len(lists) - 1, -1, -1):
        out[:, k] = np.asarray(lists[k], dtype=np.int64)[rest % len(lists[k])]
        rest //= len(lists[k])
    return out


def generate(progress: bool = False, factors: dsprites.Factors | None = None):
    """The set's packed images: the full set as blocks drawn one at a time (`dsprites.packed_blocks`, for
    `dsprites_file.write` to stream), a subset as one (N, PACKED_BYTES) array."""
    factors = factors or FACTORS
    if factors == dsprites.Factors():
        return dsprites.packed_blocks(progress)
    images = dsprites.render(factors.indices())
    return np.packbits(images, axis=-1).reshape(len(images), dsprites.PACKED_BYTES)


class PackedSprites:
    """The packed file at `path`, checked once (header, size, SHA-256; `dsprites_file.verify`), read by position:
    `read(positions)` gives uint8 (k, 1, 64, 64) images of 0 and 255. Positioned reads into fresh buffers, never
    a memory map (whose touched pages would count in the process's RSS, as `cache.CacheFile` explains)."""

    def __init__(self, path: str | Path, n: int):
        self.path, self.n, self.shape = Path(path), n, SHAPE
        self._start = dsprites_file.verify(self.path, n)
        self._file = open_input(self.path)

    def read(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.n):
            raise IndexError(f"dSprites positions outside 0 to {self.n - 1}")
        size, fd = dsprites.PACKED_BYTES, self._file.fileno()
        data = b"".join(os.pread(fd, size, self._start + p * size) for p in positions.tolist())
        if len(data) != len(positions) * size:
            raise DataError(f"{display(self.path)}: changed while being read; delete it and it will be generated again")
        packed = np.frombuffer(data, dtype=np.uint8).reshape(-1, size)
        return (dsprites.unpack(packed) * np.uint8(255))[:, None]


def find_file(data_dir: str | Path | None = None) -> Path | None:
    """The first DIR/dsprites/<file> in the data directories, or None."""
    for directory in search_dirs(data_dir):
        path = dsprites_file.path_in(directory / NAME)
        if path.is_file():
            return path
    return None


def home(data_dir: str | Path | None = None) -> Path:
    """Where the set is generated when no data directory has it: --data-dir, else $VAEKIT_DATA_DIR, else the user
    cache dir (where built-in datasets are downloaded), in its dsprites/ folder."""
    base = data_dir or os.environ.get(DATA_DIR_ENV) or cache_dir()
    return Path(base) / NAME


def open_file(data_dir: str | Path | None = None, progress: bool = False, log=None) -> PackedSprites:
    """The set's file, found or generated now (with a progress bar under `progress`), checked."""
    n = count()
    path = find_file(data_dir)
    if path is None:
        directory = home(data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create {display(directory)} for the generated dSprites ({e.strerror or e})") \
                from None
        try:
            path = dsprites_file.ensure(directory, progress, log, generate=generate, count=n)
        except OSError as e:  # an unwritable folder, a full disk: the temporary file is gone, nothing was replaced
            raise DataError(f"cannot write the generated dSprites into {display(directory)} ({e.strerror or e}); "
                            "give a writable --data-dir") from None
    return PackedSprites(path, n)


def test_positions(n: int) -> np.ndarray:
    """The test split's sorted positions: a fixed seeded sample of min(TEST_SIZE, n // 10) (at least 1)."""
    size = min(TEST_SIZE, max(1, n // 10))
    return np.sort(np.random.default_rng(TEST_SEED).choice(n, size, replace=False)).astype(np.int64)


def streamed_splits(data_dir: str | Path | None = None, progress: bool = False, log=None):
    """The train and test splits as StreamedSets (read a batch at a time), labelled by shape."""
    from .streamed import StreamedSet

    images = open_file(data_dir, progress, log)
    labels = torch.from_numpy(factor_indices(np.arange(images.n))[:, 0])

    def split(name: str, positions: np.ndarray) -> StreamedSet:
        return StreamedSet(images, positions, labels[torch.from_numpy(positions)], f"{NAME}:{name}", dsprites.SHAPES)

    return split("train", np.arange(images.n, dtype=np.int64)), split("test", test_positions(images.n))


def load_split(split: str, data_dir: str | Path | None = None, progress: bool = False) -> ImageSet:
    """One split in memory: the test split; the training split only where its pixels fit MAX_DECODED_BYTES (the
    full one is 3 GB: refused in one line)."""
    if split not in SPLITS:
        raise DataError(f"dSprites has no split {split!r}; splits: {', '.join(SPLITS)}")
    if split == "train" and count() * math.prod(SHAPE) > MAX_DECODED_BYTES:
        raise DataError(f"{NAME}:train is {count():,} images ({count() * math.prod(SHAPE) / 1e9:.1f} GB of pixels), "
                        f"more than the {MAX_DECODED_BYTES:,} bytes vaekit reads into memory at once; use {NAME}:test "
                        f"({TEST_SIZE:,} of them), or train on --data {NAME}, which streams them")
    return streamed_splits(data_dir, progress)[SPLITS.index(split)].materialize()


def in_memory_train(train, seed: int = TEST_SEED) -> ImageSet:
    """At most IN_MEMORY_TRAIN images of the streamed training split, a fixed seeded sample, in memory."""
    if len(train) <= IN_MEMORY_TRAIN:
        return train.materialize()
    chosen = np.sort(np.random.default_rng(seed + 1).choice(len(train), IN_MEMORY_TRAIN, replace=False))
    return train.subset(torch.from_numpy(chosen)).materialize()
