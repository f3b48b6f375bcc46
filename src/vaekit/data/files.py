"""Opening input files vaekit did not write: regular files only, and every decoded size bounded before it is allocated.

A FIFO would block a read forever and /dev/zero never ends, so inputs must be regular files (checked on the
open file descriptor, not the name, so nothing can swap the file in between). Compressed containers (gzip,
.npz members, images) decode to at most MAX_DECODED_BYTES, and an image to at most MAX_IMAGE_PIXELS pixels;
sizes a header declares are checked against these bounds and against the bytes actually there before
anything of that size is allocated. Raw files (IDX, .npy) must hold exactly what their header declares, so
their memory is bounded by their size on disk.
"""

from __future__ import annotations

import math
import os
import stat
import tokenize
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError

MAX_DECODED_BYTES = 256 * 2**20  # what a gzip stream, an .npz member or a folder of images may decode to
MAX_IMAGE_PIXELS = 2**24  # one image: 4096 x 4096
GZIP_MAGIC = b"\x1f\x8b"


def display(path: str | Path) -> str:
    """A path as text that can always be printed: undecodable bytes of a file name become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def open_input(path: str | Path) -> BinaryIO:
    """An input file opened for binary reading; DataError if it is missing, unreadable or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as e:
        raise DataError(f"{display(path)}: cannot read ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a file")
        raise DataError(f"{display(path)}: is {kind}, not a regular file; vaekit reads inputs from regular files")
    return os.fdopen(fd, "rb")


def read_input(path: str | Path) -> bytes:
    """All bytes of a regular input file (see open_input)."""
    with open_input(path) as f:
        try:
            return f.read()
        except OSError as e:
            raise DataError(f"{display(path)}: cannot read ({e.strerror or e})") from None


def gunzip(data: bytes, source: str, limit: int = MAX_DECODED_BYTES, prefix: bool = False) -> bytes:
    """The gzip stream `data` (one member or several) decompressed, never past `limit` bytes.

    More than `limit` bytes is a DataError, unless `prefix`, which returns the first `limit` bytes
    (to read a header before deciding how much to decode).
    """
    out = bytearray()
    rest = data
    try:
        while rest:
            stream = zlib.decompressobj(wbits=31)
            pending = rest
            while not stream.eof:
                chunk = stream.decompress(pending, limit + 1 - len(out))
                out += chunk
                if len(out) > limit:
                    if prefix:
                        return bytes(out[:limit])
                    raise DataError(f"{source}: decompresses to more than {limit} bytes, the most vaekit reads from "
                                    "a compressed file")
                pending = stream.unconsumed_tail
                if not chunk and not pending:
                    break
            if not stream.eof:
                raise DataError(f"{source}: corrupt or truncated gzip data (the stream ends early)")
            rest = stream.unused_data.lstrip(b"\0")  # gzip allows zero padding after a member
            if rest and not rest.startswith(GZIP_MAGIC):
                raise DataError(f"{source}: corrupt gzip data (trailing bytes after the stream)")
    except zlib.error as e:
        raise DataError(f"{source}: corrupt or truncated gzip data ({e})") from None
    return bytes(out)


def read_npy_header(f: BinaryIO, available: int, source: str, limit: int | None = None) -> tuple[tuple, np.dtype]:
    """Shape and dtype from the header of the .npy stream `f`, checked against the `available` bytes of the
    stream (and `limit`, if given) before any array of that size exists; `f` is left after the header."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # 3.0 only adds UTF-8 field names of structured dtypes, which are never images
            raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
    except (ValueError, SyntaxError, TypeError, OverflowError, RecursionError, EOFError, OSError,
            tokenize.TokenError) as e:  # numpy parses the header with Python's tokenizer
        raise DataError(f"{source}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{source}: holds Python objects, which vaekit does not load (pickle is never used)")
    needed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on hostile headers
    found = available - f.tell()
    if needed > found:
        raise DataError(f"{source}: truncated .npy: shape {shape} of {dtype} needs {needed} bytes, found {found}")
    if limit is not None and needed > limit:
        raise DataError(f"{source}: an array of {needed} bytes is more than {limit}, the most vaekit decodes from "
                        "a compressed file")
    return shape, dtype
