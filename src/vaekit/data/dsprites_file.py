"""The generated dSprites set on disk: every image bit-packed, checked by hash on every open.

Layout (integers little-endian):

    header  HEADER: magic, format version, the generator's version, image count, bytes per image, the SHA-256 of
            the images, then the CRC-32 of those bytes
    images  count x PACKED_BYTES uint8 (np.packbits of each image's rows), DeepMind's order

The file's size must be exactly what the header says, the generator's version the one this vaekit draws with,
and the images must hash to the header's SHA-256: a truncated, doctored or stale file is a DataError naming the
problem, never a crash. The file is written once, under a temporary name renamed into place (vaekit.atomic), by
one process at a time (a lock file beside it: two first uses at once generate it once). A process that has checked
a file does not hash it again while its identity, size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, check_target, new_file_mode
from ..errors import DataError
from . import dsprites
from .files import display, open_input

MAGIC = b"VKSPRT\r\n"
VERSION = 1
GENERATOR_VERSION = 1  # bump when dsprites.py draws any pixel differently
HEADER = struct.Struct("<8sIIQI32s")  # magic, version, generator version, count, bytes per image, sha256
CRC = struct.Struct("<I")
FILE_NAME = f"dsprites-v{GENERATOR_VERSION}.vksprites"
LOCK_NAME = ".dsprites.lock"
RACY_SECONDS = 2.0
HASH_CHUNK = 64 << 20


def path_in(directory: str | Path) -> Path:
    return Path(directory) / FILE_NAME


def encode(packed: np.ndarray) -> bytearray:
    """The file's bytes for (COUNT, PACKED_BYTES) packed images (one copy of the images, not two)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != dsprites.PACKED_BYTES:
        raise ValueError(f"expected (N, {dsprites.PACKED_BYTES}) packed images, found {packed.shape}")
    head = HEADER.pack(MAGIC, VERSION, GENERATOR_VERSION, len(packed), dsprites.PACKED_BYTES,
                       hashlib.sha256(packed).digest())
    out = bytearray(len(head) + CRC.size + packed.nbytes)
    out[:len(head)] = head
    out[len(head):len(head) + CRC.size] = CRC.pack(zlib.crc32(head) & 0xFFFFFFFF)
    out[len(head) + CRC.size:] = memoryview(packed).cast("B")
    return out


def read(path: str | Path, count: int = dsprites.COUNT) -> np.ndarray:
    """(count, PACKED_BYTES) packed images from a file written by `encode`, every check passed."""
    packed = np.empty((count, dsprites.PACKED_BYTES), dtype=np.uint8)
    _check(path, count, packed)
    return packed


_verified: set[tuple] = set()  # (path, device, inode, size, mtime_ns, count) of files this process has checked


def verify(path: str | Path, count: int = dsprites.COUNT) -> int:
    """Every check `read` makes, reading the images a chunk at a time into one reused buffer (bounded memory);
    returns the byte offset of the first image. Once per process for an unchanged file (a report opens it several
    times, 1.5 s of hashing each)."""
    try:
        stat = os.stat(path)
        key = (str(Path(path).resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, count)
    except OSError:
        key = None  # _check names the problem
    if key is None or key not in _verified:
        _check(path, count, None)
        # not a file written in the last seconds: a change within the file system's clock tick could keep its
        # modification time (git's "racily clean" files)
        if key is not None and time.time() - stat.st_mtime > RACY_SECONDS:
            _verified.add(key)
    return HEADER.size + CRC.size


def _check(path: str | Path, count: int, out: np.ndarray | None) -> None:
    """The checks of `read`; the images go into `out` if given, else through a HASH_CHUNK buffer."""
    source = display(Path(path))

    def fail(what: str):
        raise DataError(f"{source}: not a usable vaekit dSprites file ({what}); delete it and it will be generated "
                        "again")

    with open_input(Path(path)) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER.size + CRC.size)
        if len(head) < HEADER.size + CRC.size:
            fail(f"{size} bytes, shorter than a header")
        magic, version, generator, n, per_image, digest = HEADER.unpack_from(head)
        if magic != MAGIC:
            fail("wrong magic")
        if CRC.unpack_from(head, HEADER.size)[0] != zlib.crc32(head[:HEADER.size]) & 0xFFFFFFFF:
            fail("header checksum mismatch")
        if version != VERSION or generator != GENERATOR_VERSION:
            fail(f"format {version}, generator {generator}; this vaekit reads format {VERSION}, generator "
                 f"{GENERATOR_VERSION}")
        if n != count or per_image != dsprites.PACKED_BYTES:
            fail(f"{n} images of {per_image} bytes, expected {count} of {dsprites.PACKED_BYTES}")
        if size != len(head) + n * per_image:
            fail(f"{size} bytes, the header declares {len(head) + n * per_image}")
        total = n * per_image
        buffer = memoryview(out).cast("B") if out is not None else memoryview(bytearray(min(HASH_CHUNK, total)))
        hasher = hashlib.sha256()
        offset = 0
        while offset < total:
            view = buffer[offset:offset + HASH_CHUNK] if out is not None else buffer[:min(HASH_CHUNK, total - offset)]
            got = f.readinto(view)
            if not got:
                fail("file ended early")
            hasher.update(view[:got])
            offset += got
    if hasher.digest() != digest:
        fail("the images do not match their SHA-256")


def ensure(directory: str | Path, progress: bool = False, log=None, generate=dsprites.packed_blocks,
           count: int = dsprites.COUNT) -> Path:
    """The set's file in `directory`, generated and written there first if there is none (not checked here).
    `generate(progress=...)` gives the packed images as one array or as blocks in order (streamed to the file)."""
    path = path_in(directory)
    if path.exists():
        return path
    with _generating(Path(directory)):
        if not path.exists():  # another process may have written it while this one waited
            if log:
                log(f"generating dSprites ({count:,} images) into {display(path)}")
            write(path, generate(progress=progress), count)
    return path


@contextmanager
def _generating(directory: Path):
    """One process at a time generates into `directory`: an exclusive lock on a lock file there (none where the
    platform has no fcntl; the rename into place still keeps any file whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(directory / LOCK_NAME, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:  # gone again: whoever waited on it finds the set written (ensure looks again) or writes it
            (directory / LOCK_NAME).unlink(missing_ok=True)
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def write(path: str | Path, blocks, count: int) -> Path:
    """Write the file of `count` packed images given as blocks (k, PACKED_BYTES) (or one array), in bounded memory:
    into a temporary file beside `path`, the header (which holds the images' SHA-256) last, synced, renamed into
    place only when complete (as vaekit.atomic does for whole files)."""
    path = Path(path)
    check_target(path)
    blocks = [blocks] if isinstance(blocks, np.ndarray) else blocks
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(HEADER.size + CRC.size))
            hasher, n = hashlib.sha256(), 0
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=np.uint8)
                if block.ndim != 2 or block.shape[1] != dsprites.PACKED_BYTES:
                    raise ValueError(f"expected (k, {dsprites.PACKED_BYTES}) packed images, found {block.shape}")
                hasher.update(block)
                f.write(memoryview(block).cast("B"))
                n += len(block)
            if n != count:
                raise ValueError(f"generated {n} packed images, expected {count}")
            head = HEADER.pack(MAGIC, VERSION, GENERATOR_VERSION, n, dsprites.PACKED_BYTES, hasher.digest())
            f.seek(0)
            f.write(head + CRC.pack(zlib.crc32(head) & 0xFFFFFFFF))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, new_file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def load(directory: str | Path, progress: bool = False, log=None, generate=dsprites.generate_packed,
         count: int = dsprites.COUNT) -> np.ndarray:
    """The full set's packed images from `directory`, generated and written there on first use (`generate` and
    `count`: tests pass a smaller set)."""
    path = path_in(directory)
    if path.exists():
        return read(path, count)
    if log:
        log(f"generating dSprites ({count:,} images) into {display(path)}")
    packed = generate(progress=progress)
    if packed.shape != (count, dsprites.PACKED_BYTES):
        raise ValueError(f"generated {packed.shape} packed images, expected ({count}, {dsprites.PACKED_BYTES})")
    atomic_write_bytes(path, encode(packed))
    return packed
