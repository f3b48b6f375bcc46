"""A dataset cache: one file of uint8 images that training reads batch by batch, so a dataset need not fit in memory.

Layout (integers little-endian):

    header    HEADER_SIZE bytes: the struct HEADER (magic, version, image count n, C, H, W, whether labels
              follow, images per checksum block, the metadata's length, the key), the CRC-32 of those bytes,
              then zeros
    images    n x C x H x W uint8, row-major, from byte HEADER_SIZE
    labels    n int64, if the header says so
    checksums one CRC-32 per block of `block` images (the last block may be shorter), then one of the labels
              (0 without labels) and one of the metadata
    metadata  JSON: the source's name, its class names, each image's name (or null), the preparation options

The file's size must be exactly what the header declares, and every checksum must match: a truncated,
doctored or half-written cache is a DataError naming the first problem, never a crash. The file is written
under a temporary name and renamed only once complete and synced (`write_cache`), so a killed conversion
leaves no file under a cache's name. Images are read with positioned reads into fresh buffers (`CacheFile.read`),
never through a memory map: pages of a mapping that a read touches count in the process's RSS, so reading an
epoch through one would grow it to the file's size, while the page cache behind `pread` does not.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError, OutputError
from ..validation import parse_json
from .files import MAX_IMAGE_PIXELS, display, open_input

MAGIC = b"VKDSET\r\n"  # \r\n: a text-mode copy that rewrites line ends is caught by the magic itself
VERSION = 1
SUFFIX = ".vkds"
HEADER_SIZE = 4096
HEADER = struct.Struct("<8sIQIIIIIQ32s")  # magic, version, n, c, h, w, has_labels, block, meta_bytes, key
CRC = struct.Struct("<I")
BLOCK_BYTES = 1 << 20  # images per checksum block: about a mebibyte of them
MAX_CHANNELS = 4
MAX_IMAGES = 1 << 40
MAX_META_BYTES = 256 << 20  # the metadata holds a name per image of a folder: 500,000 names are ~20 MB
VERIFY_CHUNK = 64 << 20  # bytes read at once while checking the checksums


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


class CacheFile:
    """An open cache file, its header and checksums checked: `n` images of `shape` (C, H, W), `labels` (int64 array
    or None), `meta` (dict), read by position with `read`. `verify` also checks every block of images against its
    checksum (one sequential pass over the file; `progress` shows a bar)."""

    def __init__(self, path: str | Path, verify: bool = True, progress: bool = False):
        self.path = Path(path)
        self.source = display(self.path)
        self._file = open_input(self.path)
        try:
            self._open(verify, progress)
        except BaseException:
            self._file.close()
            raise

    def _fail(self, what: str):
        raise DataError(f"{self.source}: not a usable vaekit dataset cache ({what}); delete it and prepare the data "
                        "again (vaekit data prepare)")

    def _open(self, verify: bool, progress: bool) -> None:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_SIZE)
        if len(head) < HEADER.size + CRC.size:
            self._fail(f"{size} bytes, shorter than a header")
        magic, version, n, c, h, w, has_labels, block, meta_bytes, key = HEADER.unpack_from(head)
        if magic != MAGIC:
            self._fail(f"magic {magic!r}, expected {MAGIC!r}")
        if (stored := CRC.unpack_from(head, HEADER.size)[0]) != crc32(head[:HEADER.size]):
            self._fail(f"header checksum {stored:08x} does not match its contents")
        if version != VERSION:
            self._fail(f"format version {version}; this vaekit reads version {VERSION}")
        if len(head) < HEADER_SIZE:
            self._fail(f"{size} bytes, truncated inside its {HEADER_SIZE}-byte header")
        if any(head[HEADER.size + CRC.size:]):
            self._fail("the header's padding is not zeros")
        if not (1 <= n <= MAX_IMAGES and 1 <= c <= MAX_CHANNELS and h >= 1 and w >= 1 and h * w <= MAX_IMAGE_PIXELS
                and has_labels in (0, 1) and block >= 1 and meta_bytes <= MAX_META_BYTES):
            self._fail(f"header declares {n} images of {c}x{h}x{w}, labels {has_labels}, blocks of {block}, "
                       f"{meta_bytes} bytes of metadata")
        self.n, self.shape, self.block, self.key = n, (c, h, w), block, key
        self.item = c * h * w
        self.blocks = math.ceil(n / block)
        self.labels_at = HEADER_SIZE + n * self.item
        self.checksums_at = self.labels_at + 8 * n * has_labels
        meta_at = self.checksums_at + CRC.size * (self.blocks + 2)
        if size != meta_at + meta_bytes:
            self._fail(f"{size} bytes, but its header declares {meta_at + meta_bytes} "
                       f"({'truncated' if size < meta_at + meta_bytes else 'trailing bytes'})")
        checksums = np.frombuffer(self._pread(CRC.size * (self.blocks + 2), self.checksums_at), dtype="<u4")
        self._block_crcs = checksums[:-2]
        labels = self._pread(8 * n * has_labels, self.labels_at)
        if has_labels and crc32(labels) != checksums[-2]:
            self._fail("the labels' checksum does not match")
        meta = self._pread(meta_bytes, meta_at)
        if crc32(meta) != checksums[-1]:
            self._fail("the metadata's checksum does not match")
        self.meta = self._check_meta(meta)
        self.labels = None
        if has_labels:
            self.labels = np.frombuffer(labels, dtype="<i8").astype(np.int64)
            high = len(self.meta["classes"]) - 1 if self.meta["classes"] else np.iinfo(np.int64).max
            if self.labels.min() < 0 or self.labels.max() > high:
                self._fail(f"labels from {self.labels.min()} to {self.labels.max()}, outside 0 to {high}")
        if verify:
            self.verify(progress)

    def _check_meta(self, raw: bytes) -> dict:
        try:
            meta = parse_json(raw)
        except ValueError as e:  # not UTF-8, not JSON, nested too deeply, an integer of thousands of digits
            self._fail(f"metadata is not JSON ({e})")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            self._fail("metadata is not an object with a name")
        classes, names, options = meta.get("classes"), meta.get("names"), meta.get("options")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            self._fail("metadata's classes are not a list of names")
        if names is not None and (not isinstance(names, list) or len(names) != self.n
                                  or not all(isinstance(s, str) for s in names)):
            self._fail(f"metadata's names are not {self.n} names")
        if not isinstance(options, dict):
            self._fail("metadata's options are not an object")
        return meta

    def _pread(self, nbytes: int, offset: int) -> bytes:
        data = os.pread(self._file.fileno(), nbytes, offset) if nbytes else b""
        if len(data) != nbytes:
            self._fail(f"{len(data)} bytes at offset {offset}, expected {nbytes}: the file shrank")
        return data

    def verify(self, progress: bool = False) -> None:
        """Check every block of images against its checksum, reading the file once in VERIFY_CHUNK pieces."""
        per_read = max(1, VERIFY_CHUNK // (self.block * self.item)) * self.block  # whole blocks per read
        buffer = np.empty(per_read * self.item, dtype=np.uint8)
        view = memoryview(buffer)
        with tqdm(total=self.n * self.item, unit="B", unit_scale=True, desc="checking the cache", leave=False,
                  disable=not progress) as bar:
            for start in range(0, self.n, per_read):
                count = min(per_read, self.n - start)
                self._read_into(view[:count * self.item], HEADER_SIZE + start * self.item)
                for b in range(0, count, self.block):
                    piece = view[b * self.item:min(b + self.block, count) * self.item]
                    index = (start + b) // self.block
                    if crc32(piece) != self._block_crcs[index]:
                        self._fail(f"the checksum of images {start + b} to {start + b + len(piece) // self.item - 1} "
                                   "does not match: the file was changed or damaged")
                bar.update(count * self.item)

    def _read_into(self, view: memoryview, offset: int) -> None:
        got = os.preadv(self._file.fileno(), [view], offset)
        if got != len(view):
            self._fail(f"{got} bytes at offset {offset}, expected {len(view)}: the file shrank")

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The images at `positions` (any order, int64), as a new uint8 array (len(positions), C, H, W).

        Reads in file order, one `preadv` per run of consecutive positions, then puts each image where asked.
        """
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), *self.shape), dtype=np.uint8)
        if not len(positions):
            return out
        if positions.min() < 0 or positions.max() >= self.n:
            raise IndexError(f"positions outside 0 to {self.n - 1}")
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        in_order = out if (order == np.arange(len(order))).all() else np.empty_like(out)
        view = memoryview(in_order.reshape(-1))
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for start, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(ordered)]):
            self._read_into(view[start * self.item:stop * self.item], HEADER_SIZE + int(ordered[start]) * self.item)
        if in_order is not out:
            out[order] = in_order
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CacheFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_cache(path: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], shape: tuple[int, int, int],
                has_labels: bool, meta_of, key: bytes, total: int | None = None, progress: bool = False) -> Path:
    """Write a cache of the uint8 image chunks (k, C, H, W) with their labels (k,) (or None) to `path`, atomically:
    a temporary file beside it, synced, renamed into place only when complete. `meta_of()` gives the metadata
    once every chunk is read (a folder's names are known by then). If `path` appeared meanwhile (another process
    prepared the same data), it is kept and ours dropped: the name is the content's key, so both hold the same.
    `total`: the image count expected, for the progress bar."""
    c, h, w = shape
    item = c * h * w
    block = max(1, BLOCK_BYTES // item)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise OutputError(f"cannot write {display(temp)}: {e.strerror or e}") from None
    labels: list[np.ndarray] = []
    crcs: list[int] = []
    pending, filled = 0, 0  # the running CRC of the block being filled, and its images so far
    n = 0
    try:
        with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="image", desc="preparing", leave=False,
                                           disable=not progress) as bar:
            f.write(bytes(HEADER_SIZE))
            for images, chunk_labels in chunks:
                if images.dtype != np.uint8 or images.shape[1:] != shape:
                    raise ValueError(f"a chunk of {images.dtype} {images.shape}, expected uint8 (k, {c}, {h}, {w})")
                data = memoryview(np.ascontiguousarray(images).reshape(-1))
                f.write(data)
                offset = 0
                while offset < len(images):  # split the chunk at block boundaries
                    take = min(block - filled, len(images) - offset)
                    pending = zlib.crc32(data[offset * item:(offset + take) * item], pending)
                    filled += take
                    offset += take
                    if filled == block:
                        crcs.append(pending & 0xFFFFFFFF)
                        pending, filled = 0, 0
                if has_labels:
                    labels.append(np.asarray(chunk_labels, dtype="<i8"))
                n += len(images)
                bar.update(len(images))
            if filled:
                crcs.append(pending & 0xFFFFFFFF)
            if n == 0:
                raise DataError("no images to prepare")
            label_bytes = np.concatenate(labels).tobytes() if has_labels else b""
            meta = json.dumps(meta_of(), ensure_ascii=False).encode("utf-8")
            f.write(label_bytes)
            f.write(np.asarray([*crcs, crc32(label_bytes) if has_labels else 0, crc32(meta)], dtype="<u4").tobytes())
            f.write(meta)
            fields = HEADER.pack(MAGIC, VERSION, n, c, h, w, int(has_labels), block, len(meta), key)
            f.seek(0)
            f.write(fields + CRC.pack(crc32(fields)))
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            temp.unlink()
        else:
            os.rename(temp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {display(path)}: {e.strerror or e}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(directory: Path, name: str) -> None:
    """Delete temporary files of caches named `name` left by writers that were killed (their process is gone)."""
    if not directory.is_dir():
        return
    for temp in directory.glob(f".{name}.*.tmp"):
        pid = temp.name[len(name) + 2:-4]
        if pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
