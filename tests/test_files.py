"""Untrusted input files: regular files only, bounded decoding (bombs fail fast), scaling by a format's range."""

import gzip
import io
import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from vaekit.data import encode_idx, read_array, read_idx, read_images
from vaekit.data import files as files_module
from vaekit.data.files import MAX_DECODED_BYTES, display, gunzip
from vaekit.errors import DataError


def refused(source, fragment: str, seconds: float = 5.0) -> str:
    """Read `source`, expect a one-line DataError containing `fragment`, within `seconds`."""
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        read_images(source)
    assert time.monotonic() - start < seconds
    message = str(error.value)
    assert fragment in message and "\n" not in message
    return message


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "images.npy"
    os.mkfifo(fifo)
    refused(fifo, "is a FIFO, not a regular file")
    os.rename(fifo, tmp_path / "images-idx3-ubyte")
    refused(tmp_path / "images-idx3-ubyte", "is a FIFO")
    with pytest.raises(DataError, match="is a FIFO"):
        read_array(tmp_path / "images-idx3-ubyte")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused(device, "is a device, not a regular file")


def test_a_gzip_bomb_as_idx_is_refused_after_decoding_its_header_only(tmp_path):
    """A valid IDX header declaring 2 GB, then zeros: 2 MB of gzip. Only the header is decoded."""
    header = bytes([0, 0, 8, 3]) + (2_700_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    stream = io.BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb", mtime=0) as f:
        f.write(header)
        block = bytes(2**20)
        for _ in range(2_000):
            f.write(block)
    (tmp_path / "bomb-idx3-ubyte.gz").write_bytes(stream.getvalue())
    refused(tmp_path / "bomb-idx3-ubyte.gz", f"declares 2116800016 bytes, more than {MAX_DECODED_BYTES}")


def test_gzip_that_holds_more_than_its_header_declares_stops_at_the_declared_size(tmp_path):
    good = encode_idx(np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "long.gz").write_bytes(gzip.compress(good + bytes(10**6)))
    with pytest.raises(DataError, match=f"decompresses to more than {len(good)} bytes"):
        read_idx(tmp_path / "long.gz")
    (tmp_path / "ok.gz").write_bytes(gzip.compress(good[:20]) + gzip.compress(good[20:]))  # two members
    assert read_idx(tmp_path / "ok.gz").shape == (3, 4, 4)


def test_gunzip_is_bounded_and_strict():
    data = gzip.compress(bytes(1000))
    assert gunzip(data, "x", 1000) == bytes(1000)
    assert gunzip(data, "x", 10, prefix=True) == bytes(10)
    with pytest.raises(DataError, match="more than 999 bytes"):
        gunzip(data, "x", 999)
    with pytest.raises(DataError, match="trailing bytes"):
        gunzip(data + b"junk", "x")
    assert gunzip(data + bytes(7), "x") == bytes(1000)  # zero padding after a member is allowed


def npy_header(shape, dtype="|u1") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b"\x93NUMPY\x01\x00" + stream.getvalue()[8:] if not stream.getvalue().startswith(b"\x93") else \
        stream.getvalue()


def test_a_npy_header_claiming_a_trillion_elements_is_refused_before_allocating(tmp_path):
    (tmp_path / "huge.npy").write_bytes(npy_header((10**6, 10**6)) + bytes(1000))
    refused(tmp_path / "huge.npy", "truncated .npy: shape (1000000, 1000000) of uint8 needs 1000000000000 bytes, "
                                   "found 1000")
    with pytest.raises(DataError, match="needs 1000000000000 bytes"):
        read_array(tmp_path / "huge.npy")


def test_an_npz_member_that_would_decode_past_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("vaekit.data.sources.MAX_DECODED_BYTES", 10_000)
    np.savez_compressed(tmp_path / "big.npz", images=np.zeros((20, 28, 28), np.uint8))
    refused(tmp_path / "big.npz", "decodes to 15808 bytes, more than 10000")
    # a member whose .npy header claims more than the zip member holds
    with zipfile.ZipFile(tmp_path / "lie.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", npy_header((10**5, 28, 28)) + bytes(100))
    refused(tmp_path / "lie.npz", "truncated .npy: shape (100000, 28, 28)")


def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    """12000 x 12000 pixels in a 140 KB PNG: refused before decoding (PIL would only warn)."""
    Image.new("L", (12000, 12000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    refused(tmp_path / "bomb.png", "a 12000x12000 image is more than 16777216 pixels")
    folder = tmp_path / "six"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes((tmp_path / "bomb.png").read_bytes())
    refused(folder, "0.png: a 12000x12000 image is more than 16777216 pixels")


def test_a_folder_decodes_at_most_the_bound_in_all(tmp_path, monkeypatch):
    monkeypatch.setattr("vaekit.data.sources.MAX_DECODED_BYTES", 5 * 64 * 64)
    for i in range(6):
        Image.fromarray(np.full((64, 64), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    refused(tmp_path, "5.png: a 64x64 image is more than the")
    (tmp_path / "5.png").unlink()
    assert len(read_images(tmp_path)) == 5


def test_16_bit_png_is_scaled_by_its_range_not_clipped(tmp_path):
    gradient = (np.arange(256 * 256, dtype=np.int64).reshape(256, 256)).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    pixels = read_images(tmp_path / "g16.png").images.numpy().ravel()
    assert np.array_equal(pixels, np.rint(gradient.ravel().astype(np.float64) * 255 / 65535).astype(np.uint8))
    assert len(np.unique(pixels)) == 256 and abs(pixels.mean() - 127.5) < 0.01


def test_float_tiff_in_0_1_is_scaled_by_255(tmp_path):
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "f.tif")
    pixels = read_images(tmp_path / "f.tif").images.numpy()[0, 0]
    assert np.array_equal(pixels, np.rint(values.astype(np.float64) * 255).astype(np.uint8))
    assert len(np.unique(pixels)) == 256
    Image.fromarray(values * 2).save(tmp_path / "over.tif")
    refused(tmp_path / "over.tif", "a float image must hold finite values in [0, 1], found 0 to 2")


def test_32_bit_integer_images_hold_8_bit_values_or_are_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 200, np.int32)).save(tmp_path / "i.tif")
    assert read_images(tmp_path / "i.tif").images.unique().tolist() == [200]
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "big.tif")
    refused(tmp_path / "big.tif", "a 32-bit integer image must hold values in [0, 255], found 70000 to 70000")


def test_non_utf8_file_names_are_read_and_named_printably(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(raw)
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(raw.decode("utf-8", "surrogateescape") + "/\xff.png".encode(
        "latin-1").decode("utf-8", "surrogateescape"))
    folder = os.fsdecode(raw)
    images = read_images(folder)
    assert images.names == ("\ufffd.png",) and images.name.endswith("caf\ufffd")
    images.name.encode("utf-8")  # printable: no lone surrogates left
    assert display(os.fsdecode(b"a\xffb")) == "a\ufffdb"
    with pytest.raises(DataError) as error:
        read_images(os.fsdecode(raw + b"/missing\xfe.npy"))
    str(error.value).encode("utf-8")


def test_the_bound_is_large_enough_for_real_datasets():
    assert files_module.MAX_DECODED_BYTES >= 60_000 * 28 * 28 * 4  # MNIST's training set as float32


def test_an_empty_idx_whose_other_dimensions_overflow_is_refused(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (0, 3_036_988_439, 3_037_012_561))
    (tmp_path / "e-idx").write_bytes(header)
    refused(tmp_path / "e-idx", "is too large for an array")


def test_a_single_image_comes_back_writable(tmp_path):
    """PIL's arrays are read-only, and torch warns (two lines on stderr) when it wraps one."""
    from vaekit.data.sources import read_image_file

    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(tmp_path / "one.png")
    assert read_image_file(tmp_path / "one.png").flags.writeable
    assert read_images(tmp_path / "one.png").images.sum().item() == 3 * 64
