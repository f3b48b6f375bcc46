"""Images that stay in a cache file (vaekit.data.cache) and are read a batch at a time, in bounded memory.

A StreamedSet is an ImageSet whose pixels are on disk: a split of a cache is the file's positions it holds.
Training takes `StreamedSet.images` where it takes an ImageSet's tensor: indexing it with the epoch's order gives
the shuffled images lazily, and slicing that reads one batch (the next one is read ahead on a thread while the
model steps), so the batches are exactly those the in-memory path cuts from its one gather: same order, same
pixels, same weights. The held-out split is read the same way, slice by slice (`held_out_inputs`).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batches import fixed_binarization, standardize as standardize_images
from .cache import CacheFile
from .imageset import ImageSet

_reader: ThreadPoolExecutor | None = None  # one thread reads ahead for every streamed epoch


def _read_ahead() -> ThreadPoolExecutor:
    global _reader
    if _reader is None:
        _reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaekit-read-ahead")
    return _reader


@dataclass(frozen=True, eq=False)
class StreamedSet:
    """Images of `cache` at `positions` (int64, the file's image indices), with labels (N,) or None, where they
    came from, class names and image names as an ImageSet has them; `standardize`: seen per-image standardized
    (`batches.standardize`, applied to each batch read)."""

    cache: CacheFile  # or any reader with `shape` and `read(positions)` (dsprites_set.PackedSprites)
    positions: np.ndarray
    labels: torch.Tensor | None
    name: str
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None
    standardize: bool = False

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.cache.shape

    @property
    def images(self) -> StreamedImages:
        """The images as training takes them (see the module's docstring), read onto the CPU."""
        return StreamedImages(self, torch.device("cpu"))

    def subset(self, indices: torch.Tensor | slice) -> StreamedSet:
        """The images at `indices` (with their labels and names), as a new set; nothing is read."""
        index = indices if isinstance(indices, slice) else indices.numpy()
        names = None
        if self.names is not None:
            names = (self.names[indices] if isinstance(indices, slice)
                     else tuple(self.names[i] for i in indices.tolist()))
        labels = None if self.labels is None else self.labels[indices]
        return dataclasses.replace(self, positions=self.positions[index], labels=labels, names=names)

    def standardized(self, standardize: bool) -> StreamedSet:
        """The set as a run sees it (`sources.as_seen`)."""
        return dataclasses.replace(self, standardize=True) if standardize else self

    def read(self, start: int, stop: int, order: np.ndarray | None = None) -> torch.Tensor:
        """uint8 (k, C, H, W): this set's images start to stop, or those of `order` (indices into this set)."""
        chosen = self.positions[start:stop] if order is None else self.positions[order[start:stop]]
        x = torch.from_numpy(self.cache.read(chosen))
        return standardize_images(x) if self.standardize else x

    def materialize(self) -> ImageSet:
        """All of the set's images in memory, as an ImageSet (for commands that hold a split whole)."""
        return ImageSet(self.read(0, len(self)), self.labels, self.name, self.classes, self.names)


def open_streamed(path: str | Path, progress: bool = False) -> StreamedSet:
    """All images of the cache file at `path`, checked (`CacheFile`), as a StreamedSet."""
    cache = CacheFile(path, progress=progress)
    meta = cache.meta
    labels = None if cache.labels is None else torch.from_numpy(cache.labels)
    names = tuple(meta["names"]) if meta["names"] is not None else None
    return StreamedSet(cache, np.arange(cache.n, dtype=np.int64), labels, meta["name"], tuple(meta["classes"]), names)


class StreamedImages:
    """A StreamedSet as training holds an ImageSet's tensor: its length, its `device` (where batches go), `.to`,
    and indexing by an epoch's order, which gives the lazily shuffled images (`Shuffled`)."""

    def __init__(self, images: StreamedSet, device: torch.device):
        self.set, self.device = images, torch.device(device)

    def __len__(self) -> int:
        return len(self.set)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.set), *self.set.shape)

    def to(self, device) -> StreamedImages:
        return StreamedImages(self.set, device)

    def __getitem__(self, order: torch.Tensor) -> Shuffled:
        return Shuffled(self.set, order.cpu().numpy(), self.device)


class Shuffled:
    """The images of a set in `order`, read when sliced: `shuffled[a:b]` is `images[order][a:b]`, moved to
    `device`. After each slice the next one of the same length is read ahead on a thread."""

    def __init__(self, images: StreamedSet, order: np.ndarray, device: torch.device):
        self.set, self.order, self.device = images, order, device
        self._ahead: tuple[int, int, Future] | None = None

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, part: slice) -> torch.Tensor:
        start, stop, step = part.indices(len(self.order))
        if step != 1:
            raise IndexError("a streamed epoch is read in slices of step 1")
        stop = max(start, stop)
        if self._ahead is not None and self._ahead[:2] == (start, stop):
            batch = self._ahead[2].result()
        else:
            batch = self.set.read(start, stop, self.order)
        self._ahead = None
        if stop < len(self.order):
            following = (stop, min(len(self.order), 2 * stop - start))
            self._ahead = (*following, _read_ahead().submit(self.set.read, *following, self.order))
        return batch.to(self.device)


class PreparedInputs:
    """A held-out StreamedSet as model inputs, prepared slice by slice when sliced: `inputs[a:b]` is
    `fixed_binarization` of images a to b. For binarizations that act pixel by pixel (none, threshold), this is
    what the whole split prepared at once would give; evaluation reads its inputs by slices (`len`, `device`)."""

    def __init__(self, images: StreamedSet, binarize: str, seed: int, device: torch.device):
        self.set, self.binarize, self.seed, self.device = images, binarize, seed, torch.device(device)

    def __len__(self) -> int:
        return len(self.set)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.set), *self.set.shape)

    def __getitem__(self, part: slice | list[int] | torch.Tensor) -> torch.Tensor:
        """Inputs a to b of a slice, or those at a list of indices (in that order)."""
        if isinstance(part, slice):
            start, stop, step = part.indices(len(self.set))
            if step != 1:
                raise IndexError("streamed inputs are read in slices of step 1")
            images = self.set.read(start, max(start, stop))
        else:
            order = np.asarray(part.tolist() if isinstance(part, torch.Tensor) else part, dtype=np.int64).reshape(-1)
            if len(order) and (order.min() < 0 or order.max() >= len(self.set)):
                raise IndexError(f"indices outside 0 to {len(self.set) - 1}")
            images = self.set.read(0, len(order), order)
        return fixed_binarization(images.to(self.device), self.binarize, self.seed)


def held_out_inputs(images: ImageSet | StreamedSet, binarize: str, seed: int, device: torch.device):
    """A run's held-out images as its model inputs (`fixed_binarization`): a tensor, or for a StreamedSet, read by
    slices (`PreparedInputs`); except under dynamic binarization, whose one draw over the whole split is read
    whole."""
    if isinstance(images, StreamedSet):
        if binarize != "dynamic":
            return PreparedInputs(images, binarize, seed, device)
        images = images.materialize()
    return fixed_binarization(images.images.to(device), binarize, seed)


def streamed_held_out(name: str, validation: float, seed: int, data_dir=None,
                      standardize: bool = False) -> StreamedSet | None:
    """The held-out split of a run's data as a StreamedSet, when training streamed it (`prepare.should_stream`):
    the same seeded share `sources.load_held_out` holds out; None for data held in memory."""
    from . import dsprites_set
    from .datasets import DATASETS
    from .convert import open_images, should_stream
    from .sources import validation_split

    if name == dsprites_set.NAME:
        return dsprites_set.streamed_splits(data_dir)[1].standardized(standardize)
    if name in DATASETS or not should_stream(name):
        return None
    images = open_images(name, data_dir).standardized(standardize)
    return images.subset(validation_split(len(images), validation, seed, images.name)[1])


def streamed_inputs(config, source: str, device: torch.device) -> tuple[PreparedInputs, list[str], list] | None:
    """A dataset cache given to a command as INPUT, as model inputs of the run whose config is `config`, read by
    slices (`PreparedInputs`), with a name and a label (or None) per image; None for any other input, for images
    of another shape than the model's, and under dynamic binarization (one draw over all the images at once)."""
    from .convert import is_cache

    data = config.data
    if not is_cache(source) or data.binarize == "dynamic":
        return None
    images = open_streamed(source)
    if images.shape != config.model.input_shape:
        return None  # converted in memory as any other input (`sources.conform`)
    images = images.standardized(data.standardize)
    names = list(images.names) if images.names is not None else [str(i) for i in range(len(images))]
    labels = images.labels.tolist() if images.labels is not None else [None] * len(images)
    return PreparedInputs(images, data.binarize, config.train.seed, device), names, labels
