"""A file-format fuzzer: every file vaekit reads, mutated, must be read correctly or refused with a DataError.

Compressed files: every truncation, random bit flips anywhere (header included), and forged headers
(fields replaced and every checksum recomputed, as an attacker could). Readers: mutated and forged
.npy, .npz, IDX (raw and gzipped) and PNG files. Each case must end, in bounded time, in one of the
outcome classes counted below; any other exception fails the test. Deterministic (derandomized
hypothesis), on one thread; `test_zz_summary` prints the counts (see them with -s or -rA).
"""

from __future__ import annotations

import collections
import copy
import gzip
import io
import json
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit import ModelConfig, RunConfig, TrainConfig
from vaekit.compress import MAGIC, BitsBackCoder, compress_images, decompress_images, model_fingerprint, pack, unpack
from vaekit.config import DataConfig
from vaekit.data import encode_idx, read_images
from vaekit.errors import DataError

from .conftest import train

OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SECONDS_PER_CASE = 3.0  # a bound far above any case's time, to catch a hang or a runaway decode
FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


@pytest.fixture(scope="module")
def model(mnist_train):
    """A tiny threshold-binarized model: 1 epoch on 300 images."""
    torch.manual_seed(0)
    config = RunConfig(DataConfig(binarize="threshold"), ModelConfig(hidden_dims=(32,), latent_dim=4),
                       TrainConfig(epochs=1))
    return train(mnist_train.images[:300], config, 1)[0].eval()


@pytest.fixture(scope="module")
def original(mnist_test):
    """Six thresholded test digits as 0/255 uint8 (N, 28, 28)."""
    return np.where(mnist_test.images[:6, 0].numpy() > 127, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def compressed(model, original) -> bytes:
    return compress_images(model, original, "npy", "threshold", 0)[0]


@pytest.fixture(scope="module")
def compressed_v1(model, original) -> bytes:
    """The same images in format 1 (no file digest)."""
    bits = (original != 0).astype(np.uint8).reshape(len(original), -1)
    payload = BitsBackCoder(model).encode(bits).astype("<u4").tobytes()
    import hashlib

    header = {"format_version": 1, "model_fingerprint": model_fingerprint(model), "precision": 8,
              "count": len(bits), "shape": [1, 28, 28],
              "layout": {"container": "npy", "shape": list(original.shape), "dtype": "|u1", "one": 255},
              "images_sha256": hashlib.sha256(bits.tobytes()).hexdigest(), "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest()}
    encoded = json.dumps(header, sort_keys=True).encode()
    return MAGIC + len(encoded).to_bytes(4, "little") + encoded + payload


def decompress_case(model, data: bytes, original: np.ndarray, kind: str) -> str:
    """Decompress `data`: 'exact' (the original back), 'refused' (DataError), or 'different' (a valid file whose
    header says so, e.g. a forged one); any other exception propagates and fails the test."""

    def attempt() -> str:
        images, _ = decompress_images(model, data, "fuzz")
        return "exact" if images.dtype == original.dtype and np.array_equal(images, original) else "different"

    return counted_outcome(kind, attempt)


def counted_outcome(kind: str, attempt) -> str:
    """attempt()'s outcome, or 'refused' where it raised a one-line DataError; within SECONDS_PER_CASE, and counted
    under `kind`."""
    start = time.monotonic()
    try:
        outcome = attempt()
    except DataError as e:
        assert "\n" not in str(e)
        outcome = "refused"
    assert time.monotonic() - start < SECONDS_PER_CASE
    OUTCOMES[kind][outcome] += 1
    return outcome


def test_every_truncation_is_refused(model, original, compressed, compressed_v1):
    for kind, data in (("compressed: truncations", compressed), ("compressed v1: truncations", compressed_v1)):
        for length in range(len(data)):
            assert decompress_case(model, data[:length], original, kind) == "refused"
        assert decompress_case(model, data, original, kind) == "exact"


def flips(size: int, header_end: int):
    """1 to 4 (byte, bit) flips, half of them in the magic, length and header."""
    position = st.one_of(st.integers(0, header_end - 1), st.integers(0, size - 1))
    return st.lists(st.tuples(position, st.integers(0, 7)), min_size=1, max_size=4, unique=True)


def flipped(data: bytes, changes) -> bytes:
    out = bytearray(data)
    for byte, bit in changes:
        out[byte] ^= 1 << bit
    return bytes(out)


def header_end(data: bytes) -> int:
    return 12 + int.from_bytes(data[8:12], "little")


@fuzz(1200)
@given(data=st.data())
def test_bit_flips_are_refused_never_silently_wrong(model, original, compressed, data):
    changes = data.draw(flips(len(compressed), header_end(compressed)))
    outcome = decompress_case(model, flipped(compressed, changes), original, "compressed: bit flips")
    assert outcome == "refused"  # a flip that leaves the bytes valid would need a SHA-256 collision


@fuzz(400)
@given(data=st.data())
def test_format_1_bit_flips_are_refused_or_exact(model, original, compressed_v1, data):
    """Format 1 has no checksum over its header; its fields' strict checks must still catch what they can.
    A flip to another valid value (a different "one") is counted as 'different': that is why format 2 exists."""
    changes = data.draw(flips(len(compressed_v1), header_end(compressed_v1)))
    decompress_case(model, flipped(compressed_v1, changes), original, "compressed v1: bit flips")


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
              st.sampled_from(["", "npy", "idx", "|u1", "|U1", "<f8", "<c16", "|O", "|b1", "<i8", "a" * 64]),
              st.integers(-3, 300)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
FIELDS = ["format_version", "model_fingerprint", "precision", "count", "shape", "initial_words", "images_sha256",
          "layout", "layout.container", "layout.shape", "layout.dtype", "layout.one", "extra", "layout.extra"]


@fuzz(400)
@given(fields=st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES), min_size=1, max_size=3),
       drop=st.lists(st.sampled_from(FIELDS), max_size=1))
def test_forged_headers_are_refused_or_decode_as_they_say(model, original, compressed, fields, drop):
    """Fields replaced with any JSON and every checksum recomputed: a DataError, or images of exactly the shape
    and dtype the forged header declares (a self-consistent file cannot be told from a real one)."""
    header, words = unpack(compressed, "x")
    header = copy.deepcopy({k: v for k, v in header.items() if k not in ("payload_bytes", "payload_sha256")})
    for field, value in fields:
        *parent, key = field.split(".")
        target = header[parent[0]] if parent else header
        if isinstance(target, dict):
            target[key] = value
    for field in drop:
        *parent, key = field.split(".")
        target = header[parent[0]] if parent else header
        if isinstance(target, dict):
            target.pop(key, None)
    try:
        data = pack(words, header)
    except (TypeError, ValueError):  # not JSON-serializable as drawn: nothing to test
        return
    outcome = decompress_case(model, data, original, "compressed: forged headers")
    if outcome == "different":
        images, _ = decompress_images(model, data, "x")
        assert list(images.shape) == header["layout"]["shape"] and images.dtype.str == header["layout"]["dtype"]


def test_a_deeply_nested_header_is_refused(model, original):
    encoded = b"[" * 100_000 + b"]" * 100_000
    data = MAGIC + (60_000).to_bytes(4, "little") + encoded[:60_000] + bytes(32)
    assert decompress_case(model, data, original, "compressed: forged headers") == "refused"


# --- readers ----------------------------------------------------------------------------------------


def read_case(path, kind: str) -> str:
    """read_images on a file: 'read' (a valid uint8 ImageSet) or 'refused' (a one-line DataError)."""

    def attempt() -> str:
        images = read_images(path)
        assert images.images.dtype == torch.uint8 and images.images.ndim == 4 and len(images) > 0
        return "read"

    return counted_outcome(kind, attempt)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


SAMPLE = (np.arange(4 * 8 * 8) % 256).astype(np.uint8).reshape(4, 8, 8)
mutations = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1,
                                        max_size=4)),
    st.tuples(st.just("cut"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=16))),
)


def mutate(data: bytes, mutation) -> bytes:
    name, arg = mutation
    if name == "flip":
        return flipped(data, [(byte % len(data), bit) for byte, bit in arg])
    if name == "cut":
        return data[: arg % (len(data) + 1)]
    at, extra = arg
    at %= len(data) + 1
    return data[:at] + extra + data[at:]


def containers() -> dict[str, bytes]:
    images = io.BytesIO()
    np.savez(images, images=SAMPLE, labels=np.arange(4))
    deflated = io.BytesIO()
    np.savez_compressed(deflated, x=SAMPLE.astype(np.float32) / 255)
    png = io.BytesIO()
    Image.fromarray(SAMPLE[0]).save(png, format="PNG")
    png16 = io.BytesIO()
    Image.fromarray(SAMPLE[0].astype(np.uint16) * 257).save(png16, format="PNG")
    return {"x.npy": npy_bytes(SAMPLE), "f.npy": npy_bytes(SAMPLE.astype(">f8") / 255), "x.npz": images.getvalue(),
            "c.npz": deflated.getvalue(), "x-idx3-ubyte": encode_idx(SAMPLE),
            "x-idx3-ubyte.gz": gzip.compress(encode_idx(SAMPLE), mtime=0), "x.png": png.getvalue(),
            "x16.png": png16.getvalue()}


CONTAINERS = containers()


@fuzz(800)
@given(name=st.sampled_from(sorted(CONTAINERS)), mutation=mutations)
def test_mutated_input_files_are_read_or_refused(scratch, name, mutation):
    path = scratch / name
    path.write_bytes(mutate(CONTAINERS[name], mutation))
    read_case(path, f"readers: mutated {name.split('.')[-1] if '.' in name else 'idx'}")


def npy_with_header(shape, descr: str, payload: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode() + b" "
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


@fuzz(300)
@given(shape=st.lists(st.integers(0, 10**12) | st.integers(1, 9), max_size=5).map(tuple),
       descr=st.sampled_from(["|u1", "<f4", ">f8", "|b1", "<i8", "<c8", "|O", "<U3", "|V4", "<M8[s]", "<f16", "x"]),
       payload=st.binary(max_size=512), fill=st.booleans(), zipped=st.booleans())
def test_forged_npy_headers_are_read_or_refused_without_allocating(scratch, shape, descr, payload, fill, zipped):
    """A header claiming up to 10^60 elements must be refused from its size alone, bare or inside an .npz;
    with `fill`, a small declared size gets exactly its bytes (zeros), so some files are valid."""
    if fill:
        size = int(np.prod(shape, dtype=object) or 0) * (np.dtype(descr).itemsize if descr != "x" else 1)
        payload = bytes(size) if size <= 4096 else payload
    data = npy_with_header(shape, descr, payload)
    if zipped:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("images.npy", data)
        (scratch / "forged.npz").write_bytes(buffer.getvalue())
        read_case(scratch / "forged.npz", "readers: forged npy headers")
    else:
        (scratch / "forged.npy").write_bytes(data)
        read_case(scratch / "forged.npy", "readers: forged npy headers")


@fuzz(300)
@given(code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
       dims=st.lists(st.integers(1, 8), min_size=3, max_size=3) | st.lists(st.integers(0, 2**32 - 1)
                                                                            | st.integers(0, 30), max_size=4),
       payload=st.binary(max_size=600), zeros=st.integers(0, 3 * 2**20), gzipped=st.booleans(), fill=st.booleans())
def test_forged_idx_headers_are_read_or_refused(scratch, code, dims, payload, zeros, gzipped, fill):
    """Declared shapes up to 2^128 bytes; gzipped, up to 3 MB of zeros after the header (a small bomb); with
    `fill`, a small declared size gets exactly its bytes, so some files are valid."""
    if fill:
        size = int(np.prod(dims, dtype=object) or 0) * {0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        payload, zeros = (bytes(size), 0) if size <= 4096 else (payload, zeros)
    data = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    path = scratch / ("forged-idx.gz" if gzipped else "forged-idx")
    path.write_bytes(gzip.compress(data + bytes(zeros), compresslevel=1, mtime=0) if gzipped else data)
    read_case(path, "readers: forged idx headers")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@fuzz(300)
@given(width=st.integers(1, 2**31 - 1) | st.integers(1, 64), height=st.integers(1, 2**31 - 1) | st.integers(1, 64),
       depth_color=st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 4), (8, 6), (16, 6), (8, 3)]),
       zero_rows=st.integers(0, 4096))
def test_forged_png_headers_are_read_or_refused(scratch, width, height, depth_color, zero_rows):
    """Valid chunks (CRCs right) declaring any size, with an IDAT of zeros: a decompression bomb when large."""
    depth, color = depth_color
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    row = 1 + max(1, width * channels * depth // 8)
    idat = zlib.compress(bytes(min(row * zero_rows, 2**22)), 1)
    chunks = [png_chunk(b"IHDR", ihdr)]
    if color == 3:
        chunks.append(png_chunk(b"PLTE", bytes(range(48))))
    data = b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    (scratch / "forged.png").write_bytes(data)
    read_case(scratch / "forged.png", "readers: forged png headers")


def test_zz_summary(capsys):
    """Print the cases run and their outcome classes; nothing outside the known classes happened."""
    total = sum(sum(c.values()) for c in OUTCOMES.values())
    with capsys.disabled():
        print(f"\nfile fuzzer: {total} cases")
        for kind, counts in sorted(OUTCOMES.items()):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"  {kind}: {sum(counts.values())} cases, {outcomes}")
    for kind, counts in OUTCOMES.items():
        assert set(counts) <= {"exact", "refused", "different", "read"}
        if not kind.startswith(("compressed v1", "compressed: forged")):
            assert counts["different"] == 0, kind  # no silent wrong output where a checksum covers the file
