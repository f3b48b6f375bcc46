"""Converting a dataset once into a cache file (vaekit.data.cache), streaming its input, and finding it again.

A cache's name is its key: a SHA-256 of the input's content (every byte of the file, or of every image file of a
folder with its path) and of the preparation options, so the same data prepared the same way is found again,
and changed data or other options make a new cache. Raw arrays (.npy, uncompressed IDX) and folders of images are
read a chunk of images at a time, so preparing 500,000 images needs the memory of one chunk, not of the dataset;
other inputs (.npz, gzipped IDX, single images, built-in splits) are bounded in size anyway and are read whole.

Caches live in $VAEKIT_CACHE_DIR, else $XDG_CACHE_HOME/vaekit/datasets, else ~/.cache/vaekit/datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .cache import SUFFIX, remove_stale_temps, write_cache
from .files import MAX_DECODED_BYTES, display, open_input, read_npy_header
from .idx import IDX_TYPES, MAX_HEADER_BYTES, parse_idx
from .imageset import ImageSet
from .sources import (IMAGE_SUFFIXES, SIXTEEN_BIT_MODES, _to_nchw, _to_uint8, conform, folder_files, is_builtin,
                      read_image_file, read_images)

KEY_VERSION = 1  # part of every key: a change in how caches are made makes new ones
CHUNK_BYTES = 32 << 20  # input bytes converted at once
# Data whose decoded pixels exceed this is trained from a cache, streamed; below it, in memory as before. In memory,
# training holds the pixels twice (the split and the epoch's shuffled copy) and the test split as floats; this is
# also the most vaekit decodes into memory from compressed inputs and folders (files.MAX_DECODED_BYTES).
STREAM_ABOVE = MAX_DECODED_BYTES
STREAM_ABOVE_VARIABLE = "VAEKIT_STREAM_ABOVE"
CACHE_DIR_VARIABLE = "VAEKIT_CACHE_DIR"


@dataclass(frozen=True)
class PrepareOptions:
    """How images are prepared before they are cached; part of the cache's key. shape: the (C, H, W) to convert
    them to (`sources.conform`), or None to keep their own."""

    shape: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        return {"shape": list(self.shape) if self.shape is not None else None}


@dataclass
class Plan:
    """What an input holds, learnt without decoding it: how to stream it, its count and (C, H, W), and the digest
    of its content."""

    source: str
    kind: str  # "raw" (an array file read by rows), "folder", or "memory" (read whole)
    count: int
    shape: tuple[int, int, int]
    digest: bytes = b""
    has_labels: bool = False
    path: Path | None = None
    offset: int = 0  # raw: where the values start
    dtype: np.dtype | None = None  # raw: the stored values' dtype
    row_shape: tuple[int, ...] = ()  # raw: one image as stored
    files: list[Path] = field(default_factory=list)  # folder
    labels: torch.Tensor | None = None  # folder
    classes: tuple[str, ...] = ()
    images: ImageSet | None = None  # memory


def cache_dir() -> Path:
    """Where caches are kept unless told otherwise (see the module's docstring)."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return Path(os.environ[CACHE_DIR_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaekit" / "datasets"


def stream_above() -> int:
    """The decoded size in bytes above which data is streamed from a cache: $VAEKIT_STREAM_ABOVE, or STREAM_ABOVE."""
    text = os.environ.get(STREAM_ABOVE_VARIABLE, "").strip()
    if not text:
        return STREAM_ABOVE
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"${STREAM_ABOVE_VARIABLE} must be a number of bytes (0 streams every dataset of your own), "
                          f"got {text!r}")
    return int(text)


def is_cache(source: str | Path) -> bool:
    return not is_builtin(str(source)) and Path(source).suffix == SUFFIX


def decoded_bytes(source: str | Path) -> int | None:
    """An estimate of the bytes the images of `source` decode to, from headers alone; None where that is unknown
    without decoding (those inputs are bounded in size anyway, and read into memory)."""
    if is_builtin(str(source)):
        return None
    path = Path(source)
    try:
        if path.is_dir():
            files, _, _ = folder_files(path)
            return len(files) * math.prod(_image_header(files[0])[0])
        plan = _raw_plan(path) if path.is_file() else None
    except DataError:
        return None  # reading it says what is wrong
    return plan.count * math.prod(plan.shape) if plan else None


def should_stream(source: str | Path) -> bool:
    """Whether vaekit trains on `source` from a cache rather than in memory: a cache file always, another input when
    it decodes to more than `stream_above()` bytes. Built-in datasets never are (MNIST's pixels are 47 MB)."""
    if is_cache(source):
        return True
    estimate = decoded_bytes(source)
    return estimate is not None and estimate > stream_above()


def plan_of(source: str | Path, data_dir=None, progress: bool = False) -> Plan:
    """The Plan of any input vaekit reads, with the digest of its content (which reads all of it once)."""
    text = display(source)
    path = Path(source)
    if not is_builtin(str(source)) and path.is_dir():
        return _folder_plan(path, progress)
    plan = _raw_plan(path) if not is_builtin(str(source)) and path.is_file() else None
    if plan is not None:
        plan.digest = _file_digest(path, progress)
        return plan
    images = read_images(source, data_dir)
    digest = hashlib.sha256()
    digest.update(json.dumps([images.name, list(images.classes), images.names, list(images.images.shape)]).encode())
    digest.update(images.images.numpy().tobytes())
    if images.labels is not None:
        digest.update(images.labels.numpy().astype("<i8").tobytes())
    return Plan(text, "memory", len(images), images.shape, digest.digest(), images.labels is not None,
                classes=images.classes, images=images)


def _raw_plan(path: Path) -> Plan | None:
    """The Plan (without digest) of a .npy file or an uncompressed IDX file that can be read by rows, else None."""
    source = display(path)
    with open_input(path) as f:
        size = os.fstat(f.fileno()).st_size
        if path.suffix.lower() == ".npy":
            shape, dtype = read_npy_header(f, size, source)
            offset = f.tell()
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            fortran = read_header(f)[1]
            if fortran and len(shape) > 1:
                return None  # column-major: not readable by rows
        elif path.suffix.lower() not in (".npz", *IMAGE_SUFFIXES):
            head = f.read(MAX_HEADER_BYTES)
            if head[:2] == b"\x1f\x8b":
                return None  # gzipped IDX: bounded by MAX_DECODED_BYTES, read whole
            parse_idx(head[:4], source, header_only=True)
            offset = 4 + 4 * head[3]
            if len(head) < offset:
                raise DataError(f"{source}: truncated IDX header ({len(head)} bytes, header needs {offset})")
            shape = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(head[3]))
            dtype = IDX_TYPES[head[2]]
            needed = math.prod(shape) * dtype.itemsize
            if size - offset != needed:
                what = "truncated" if size - offset < needed else "has trailing bytes"
                raise DataError(f"{source}: IDX data {what}: shape {shape} of {dtype.name} needs {needed} bytes, "
                                f"found {size - offset}")
        else:
            return None
    if len(shape) < 2 or shape[0] == 0:
        return None  # not images: reading it whole says why
    image_shape = _to_nchw(np.zeros((1, *shape[1:]), dtype=np.uint8), source).shape[1:]
    return Plan(source, "raw", shape[0], image_shape, path=path, offset=offset, dtype=dtype, row_shape=shape[1:])


def _file_digest(path: Path, progress: bool) -> bytes:
    digest = hashlib.sha256()
    with open_input(path) as f, tqdm(total=os.fstat(f.fileno()).st_size, unit="B", unit_scale=True,
                                     desc="reading", leave=False, disable=not progress) as bar:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.digest()


def _image_header(path: Path) -> tuple[tuple[int, int, int], bool]:
    """((C, H, W), palette) of an image file from its header, without decoding it: C as `read_image_file` makes it
    (a palette image's C is only known by decoding, and is given as 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_input(path) as f, Image.open(f) as image:
            width, height = image.size
            gray = image.mode in ("1", "L", "I", "F", *SIXTEEN_BIT_MODES)
            return (1 if gray else 3, height, width), image.mode == "P"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{display(path)}: unreadable image ({e})") from None


def _folder_plan(path: Path, progress: bool) -> Plan:
    """A folder's Plan: its files listed, each read once for the digest (a chunk at a time) and its header (size
    and channels); a palette image is decoded to learn whether its colours are grays."""
    files, labels, classes = folder_files(path)
    digest = hashlib.sha256()
    channels, size = 1, None
    for f in tqdm(files, unit="file", desc="reading", leave=False, disable=not progress):
        name = os.fsencode(f.relative_to(path))
        with open_input(f) as handle:
            size_on_disk = os.fstat(handle.fileno()).st_size
            digest.update(len(name).to_bytes(8, "little") + name + size_on_disk.to_bytes(8, "little"))
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
        (c, height, width), palette = _image_header(f)
        channels = max(channels, read_image_file(f).shape[0] if palette else c)
        if size is None:
            size = (height, width)
        elif (height, width) != size:
            raise DataError(f"{display(path)}: images in one folder must share a size: {display(files[0].name)} is "
                            f"{size[1]}x{size[0]}, {display(f.relative_to(path))} is {width}x{height}")
    return Plan(display(path), "folder", len(files), (channels, *size), digest.digest(), labels is not None,
                path=path, files=files, labels=labels, classes=classes)


def key_of(plan: Plan, options: PrepareOptions) -> bytes:
    """The cache's key: the content's digest and the options, hashed."""
    text = json.dumps({"version": KEY_VERSION, "content": plan.digest.hex(), "options": options.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).digest()


def cache_name(key: bytes) -> str:
    return f"{key.hex()[:40]}{SUFFIX}"


def chunks_of(plan: Plan, options: PrepareOptions) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The plan's images as uint8 (k, C, H, W) chunks with their labels (or None), converted by `options`."""
    for images, labels in _native_chunks(plan):
        if options.shape is not None:
            images = conform(ImageSet(torch.from_numpy(images), None, plan.source), options.shape).images.numpy()
        yield images, labels


def _native_chunks(plan: Plan) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    if plan.kind == "memory":
        images, labels = plan.images.images.numpy(), plan.images.labels
        step = max(1, CHUNK_BYTES // math.prod(plan.shape))
        for start in range(0, len(images), step):
            yield images[start:start + step], None if labels is None else labels[start:start + step].numpy()
    elif plan.kind == "raw":
        row_bytes = math.prod(plan.row_shape) * plan.dtype.itemsize
        rows = max(1, CHUNK_BYTES // max(1, row_bytes))
        with open_input(plan.path) as f:
            f.seek(plan.offset)
            for start in range(0, plan.count, rows):
                count = min(rows, plan.count - start)
                data = bytearray(count * row_bytes)  # writable, so the arrays made from it are
                if f.readinto(data) != len(data):
                    raise DataError(f"{plan.source}: changed while it was being prepared (shorter than it was)")
                array = np.frombuffer(data, dtype=plan.dtype).reshape(count, *plan.row_shape)
                images = _to_nchw(_to_uint8(array.astype(plan.dtype.newbyteorder("="), copy=False), plan.source),
                                  plan.source)
                yield np.ascontiguousarray(images), None
    else:
        step = max(1, CHUNK_BYTES // math.prod(plan.shape))
        for start in range(0, plan.count, step):
            batch = []
            for f in plan.files[start:start + step]:
                image = read_image_file(f)
                if image.shape[0] != plan.shape[0]:
                    image = np.repeat(image, plan.shape[0], axis=0)
                if image.shape != plan.shape:
                    raise DataError(f"{display(f)}: changed while the folder was being prepared")
                batch.append(image)
            labels = None if plan.labels is None else plan.labels[start:start + step].numpy()
            yield np.stack(batch), labels


def meta_of(plan: Plan, options: PrepareOptions) -> dict:
    names = None
    if plan.kind == "folder":
        names = [display(f.relative_to(plan.path)) for f in plan.files]
    elif plan.kind == "memory" and plan.images.names is not None:
        names = list(plan.images.names)
    return {"name": plan.source, "classes": list(plan.classes), "names": names, "options": options.to_dict()}


def prepare(source: str | Path, options: PrepareOptions = PrepareOptions(), directory: str | Path | None = None,
            data_dir=None, progress: bool = False) -> tuple[Path, bool]:
    """The cache of `source` prepared with `options` in `directory` (default `cache_dir()`): found if it exists,
    else written (atomically, streaming the input). Returns its path and whether it was written now."""
    if is_cache(source):
        raise DataError(f"{display(source)} is already a vaekit dataset cache")
    plan = plan_of(source, data_dir, progress)
    directory = Path(directory) if directory is not None else cache_dir()
    path = directory / cache_name(key_of(plan, options))
    if path.exists():
        return path, False
    remove_stale_temps(directory, path.name)
    shape = options.shape or plan.shape
    write_cache(path, chunks_of(plan, options), shape, plan.has_labels, lambda: meta_of(plan, options),
                key_of(plan, options), total=plan.count, progress=progress)
    return path, True


def open_images(source: str | Path, data_dir=None, progress: bool = False, log=None):
    """The images of `source` as training reads them: a StreamedSet of its cache (found, or prepared now) if
    `should_stream`, else an ImageSet in memory (`sources.read_images`). `log` gets a line saying which cache."""
    from .streamed import open_streamed

    if is_cache(source):
        return open_streamed(source, progress)
    if should_stream(source):
        path, written = prepare(source, data_dir=data_dir, progress=progress)
        images = open_streamed(path, progress)
        if log is not None:
            c, h, w = images.shape
            how = "prepared now" if written else "found"
            log(f"{display(source)}: {len(images):,} images of {c}x{h}x{w}, more than {stream_above():,} bytes of "
                f"pixels: training streams them from the cache {display(path)} ({how})")
        return images
    return read_images(source, data_dir)
