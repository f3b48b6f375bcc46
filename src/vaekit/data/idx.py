"""The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), read strictly.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in row-major order, big-endian. Files may be gzipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import GZIP_MAGIC, MAX_DECODED_BYTES, display, gunzip, read_input

# type code -> big-endian dtype of the stored values
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_HEADER_BYTES = 4 + 4 * 255


def decompress_if_gzipped(data: bytes, source: str, limit: int = MAX_DECODED_BYTES) -> bytes:
    """Return `data` gunzipped (to at most `limit` bytes) if it starts with the gzip magic, else unchanged."""
    return gunzip(data, source, limit) if data.startswith(GZIP_MAGIC) else data


def declared_bytes(head: bytes, source: str) -> int:
    """The size of the IDX file whose first bytes are `head`, as its header declares it (checked as parse_idx does)."""
    parse_idx(head[:4], source, header_only=True)
    header = 4 + 4 * head[3]
    if len(head) < header:
        raise DataError(f"{source}: truncated IDX header ({len(head)} bytes, header needs {header})")
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(head[3]))
    return header + math.prod(shape) * IDX_TYPES[head[2]].itemsize


def parse_idx(data: bytes, source: str = "<bytes>", header_only: bool = False) -> np.ndarray | None:
    """Decode raw (not gzipped) IDX bytes into a native-endian array; malformed input raises DataError.
    With `header_only`, check just the first 4 bytes (magic, type code, dimensions) and return None."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (magic number starts {data[:2].hex()}, expected 0000)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    if header_only:
        return None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, header needs {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on hostile headers
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX data {what}: shape {shape} of {dtype.name} needs {expected} bytes, found {found}"
        )
    try:
        values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    except ValueError:  # an empty array whose other dimensions multiply past what numpy can index
        raise DataError(f"{source}: IDX shape {shape} is too large for an array") from None
    return values.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw; a gzipped one is decoded only as far as its header declares."""
    source = display(path)
    data = read_input(path)
    if data.startswith(GZIP_MAGIC):
        needed = declared_bytes(gunzip(data, source, MAX_HEADER_BYTES, prefix=True), source)
        if needed > MAX_DECODED_BYTES:
            raise DataError(f"{source}: its IDX header declares {needed} bytes, more than {MAX_DECODED_BYTES}, the "
                            "most vaekit decodes from a compressed file")
        data = gunzip(data, source, limit=needed)
    return parse_idx(data, source)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as raw IDX bytes (the inverse of parse_idx)."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[codes[native]]).tobytes()
