import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.data import encode_idx, parse_idx, read_idx
from vaekit.data.idx import IDX_TYPES
from vaekit.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_every_type(dtype):
    array = (np.arange(60).reshape(3, 4, 5) - 20).astype(dtype)
    decoded = parse_idx(encode_idx(array))
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, array)


def test_values_are_big_endian_on_disk():
    data = encode_idx(np.array([1, 256], dtype=np.int32))
    assert data[:4] == bytes([0, 0, 0x0C, 1])
    assert data[4:8] == (2).to_bytes(4, "big")
    assert data[8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


def test_reads_gzipped_and_raw_files(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(encode_idx(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)


def test_parsed_array_is_writable_and_native():
    out = parse_idx(encode_idx(np.array([1.5, -2.0], dtype=np.float32)))
    assert out.flags.writeable and out.dtype.isnative


@pytest.mark.parametrize("data, message", [
    (b"", "only 0 bytes"),
    (b"\x01\x00\x08\x01", "magic number starts 0100"),
    (b"\x00\x00\x07\x01", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "truncated: shape (3,) of uint8 needs 3 bytes, found 2"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "has trailing bytes"),
    (b"\x00\x00\x0c\x01\x00\x00\x00\x02\x00\x00\x00\x01", "shape (2,) of int32 needs 8 bytes, found 4"),
])
def test_malformed_bytes_raise_clear_errors(data, message):
    with pytest.raises(DataError, match="x.idx") as info:
        parse_idx(data, "x.idx")
    assert message in str(info.value)


def test_huge_declared_shape_is_rejected_without_allocating():
    header = bytes([0, 0, 0x08, 4]) + b"\xff\xff\xff\xff" * 4
    with pytest.raises(DataError, match="truncated"):
        parse_idx(header + b"\x00" * 10)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros((10, 10), np.uint8)))[:-12])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.idx")


def test_encode_rejects_unsupported_dtype():
    with pytest.raises(DataError, match="cannot store dtype"):
        encode_idx(np.zeros(3, dtype=np.uint16))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_data_error(data):
    try:
        array = parse_idx(data)
    except DataError:
        return
    assert encode_idx(array) == data[:4] + data[4:]  # a successful parse is exact


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(IDX_TYPES)), st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_corrupting_a_valid_file_never_gives_a_wrong_shape(code, shape, data):
    dtype = IDX_TYPES[code].newbyteorder("=")
    good = encode_idx(np.zeros(shape, dtype=dtype))
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(DataError):
        parse_idx(good[:cut])
