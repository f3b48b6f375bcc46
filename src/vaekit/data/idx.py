"""The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), read strictly.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in row-major order, big-endian. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# type code -> big-endian dtype of the stored values
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def decompress_if_gzipped(data: bytes, source: str) -> bytes:
    """Return `data` gunzipped if it starts with the gzip magic, else unchanged."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: corrupt or truncated gzip data ({e})") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode raw (not gzipped) IDX bytes into a native-endian array; malformed input raises DataError."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (magic number starts {data[:2].hex()}, expected 0000)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
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
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_idx(decompress_if_gzipped(data, str(path)), str(path))


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
