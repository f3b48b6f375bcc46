import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vaekit import ModelConfig, RunConfig, TrainConfig
from vaekit.cli import main
from vaekit.compress import (MAGIC, BitsBackCoder, compress_images, decompress_images, model_fingerprint, pack,
                             unpack)
from vaekit.config import DataConfig
from vaekit.data import encode_idx
from vaekit.errors import ConfigError, DataError
from vaekit.evaluate import evaluate_elbo
from vaekit.fit import build_model, fit


@pytest.fixture(scope="module")
def thresholded(thresholded_plain, mnist_test):
    """A small model trained for 2 epochs on thresholded MNIST, and 60 thresholded test images as 0/1."""
    bits = (mnist_test.images[:60] > 127).reshape(60, -1).numpy().astype(np.uint8)
    return thresholded_plain, bits


def coded_bits_per_image(model, bits: np.ndarray) -> float:
    """Round-trip `bits` (N, 784) through the coder, check it is exact, and return the bits per image."""
    coder = BitsBackCoder(model)
    words = coder.encode(bits)
    assert np.array_equal(coder.decode(words, len(bits)), bits)
    return 32 * (words.size - coder.initial_words().size) / len(bits)


def test_round_trip_costs_about_the_elbo(thresholded):
    model, bits = thresholded
    elbo_bits = evaluate_elbo(model, torch.from_numpy(bits).float().view(-1, 1, 28, 28), 0)["test_loss"] / np.log(2)
    assert coded_bits_per_image(model, bits) == pytest.approx(elbo_bits, rel=0.03)  # BB-ANS costs the ELBO


def test_pixel_groups_code_group_by_group_at_their_smaller_elbo(thresholded, thresholded_context):
    plain, bits = thresholded
    elbo_bits = evaluate_elbo(thresholded_context, torch.from_numpy(bits).float().view(-1, 1, 28, 28), 0)["test_loss"]
    coded = coded_bits_per_image(thresholded_context, bits)
    assert coded == pytest.approx(elbo_bits / np.log(2), rel=0.03)
    assert coded < 0.85 * coded_bits_per_image(plain, bits)  # with a quarter of the plain model's training


def test_context_features_code_exactly(thresholded):
    """A decoder that passes features to the pixel context (untrained here) codes and decodes exactly."""
    _, bits = thresholded
    torch.manual_seed(0)
    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4, pixel_groups=4,
                                                    context_features=2))).eval()
    elbo_bits = evaluate_elbo(model, torch.from_numpy(bits[:8]).float().view(-1, 1, 28, 28), 0)["test_loss"] / np.log(2)
    assert coded_bits_per_image(model, bits[:8]) == pytest.approx(elbo_bits, rel=0.03)


def test_probabilities_and_bytes_are_reproducible(thresholded):
    model, bits = thresholded
    a, b = BitsBackCoder(model), BitsBackCoder(model)
    assert np.array_equal(a.posterior_probs(bits[3]), b.posterior_probs(bits[3]))
    assert np.array_equal(a.encode(bits), b.encode(bits))
    # an image's probabilities do not depend on what else is coded: each is computed alone
    logits_a, logits_b = a.decoder_logits(np.arange(10) * 20), b.decoder_logits(np.arange(10) * 20)
    assert np.array_equal(a.group_probs(0, logits_a, torch.zeros_like(logits_a)),
                          b.group_probs(0, logits_b, torch.zeros_like(logits_b)))


@pytest.mark.parametrize("array", [
    lambda bits: bits.reshape(-1, 28, 28) * np.uint8(255),
    lambda bits: bits.reshape(-1, 28, 28).astype(np.float32),
    lambda bits: bits.reshape(-1, 28, 28).astype(bool),
    lambda bits: bits.reshape(-1, 784).astype(np.int64),
])
def test_binary_arrays_come_back_exactly(thresholded, array):
    model, bits = thresholded
    images = array(bits)
    data, stats = compress_images(model, images, "npy", "threshold", 0)
    assert stats["exact"]
    out, container = decompress_images(model, data)
    assert container == "npy" and out.dtype == images.dtype and out.shape == images.shape
    assert np.array_equal(out, images)


def test_grayscale_input_round_trips_its_binarization(thresholded, mnist_test):
    model, _ = thresholded
    gray = mnist_test.images[:20, 0].numpy()
    data, stats = compress_images(model, gray, "npy", "threshold", 0)
    out, _ = decompress_images(model, data)
    assert not stats["exact"] and np.array_equal(out, np.where(gray > 127, 255, 0).astype(np.uint8))


def test_wrong_model_truncation_and_corruption_are_errors(thresholded):
    model, bits = thresholded
    data, _ = compress_images(model, bits.reshape(-1, 28, 28), "idx", "threshold", 0)
    other = build_model(RunConfig(model=ModelConfig(hidden_dims=(200,), latent_dim=10)))
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(DataError, match="was compressed with another model"):
        decompress_images(other, data)
    with pytest.raises(DataError, match="truncated"):
        decompress_images(model, data[:-7])
    for where, message in ((-5, "SHA-256 does not match"), (-40, "SHA-256 does not match"), (20, "corrupt")):
        corrupt = bytearray(data)  # the file's digest, the payload, the header
        corrupt[where] ^= 0x10
        with pytest.raises(DataError, match=message):
            decompress_images(model, bytes(corrupt))
    with pytest.raises(DataError, match="not a vaekit compressed file"):
        unpack(b"PK\x03\x04" + data[4:], "x")
    with pytest.raises(DataError, match="corrupt or truncated header"):
        unpack(data[:30], "x")


def test_codable_models_only():
    with pytest.raises(ConfigError, match="needs a Bernoulli likelihood"):
        BitsBackCoder(build_model(RunConfig(model=ModelConfig(hidden_dims=(8,), latent_dim=2, likelihood="gaussian"))))
    with pytest.raises(ConfigError, match="needs the N\\(0, I\\) prior"):
        BitsBackCoder(build_model(RunConfig(model=ModelConfig(hidden_dims=(8,), latent_dim=2, prior="vamp",
                                                              prior_components=3))))


@pytest.fixture(scope="module")
def threshold_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "run"
    from .conftest import DATA_DIR

    fit(RunConfig(DataConfig(binarize="threshold"), ModelConfig(hidden_dims=(100,), latent_dim=8),
                  TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    return out


def test_cli_idx_in_idx_out_byte_for_byte(threshold_run, tmp_path, mnist_test, capsys):
    binary = np.where(mnist_test.images[:40, 0].numpy() > 127, 255, 0).astype(np.uint8)
    source = tmp_path / "digits-idx3-ubyte"
    source.write_bytes(encode_idx(binary))
    (tmp_path / "digits-idx3-ubyte.gz").write_bytes(gzip.compress(source.read_bytes()))
    for name in ("digits-idx3-ubyte", "digits-idx3-ubyte.gz"):
        assert main(["compress", str(threshold_run), str(tmp_path / name), "-o", str(tmp_path / "c.vkbb")]) == 0
        assert main(["decompress", str(threshold_run), str(tmp_path / "c.vkbb"), "-o", str(tmp_path / "out")]) == 0
        assert (tmp_path / "out").read_bytes() == source.read_bytes()
    assert "bits per pixel" in capsys.readouterr().out
    assert main(["decompress", str(threshold_run), str(tmp_path / "c.vkbb"), "-o", str(tmp_path / "out.npy")]) == 2
    assert "give -o an IDX name" in capsys.readouterr().err


def test_cli_bytes_are_the_same_in_another_process(threshold_run, tmp_path, mnist_test):
    np.save(tmp_path / "d.npy", (mnist_test.images[:30, 0].numpy() > 127))
    assert main(["compress", str(threshold_run), str(tmp_path / "d.npy"), "-o", str(tmp_path / "a.vkbb")]) == 0
    subprocess.run([sys.executable, "-m", "vaekit", "compress", str(threshold_run), str(tmp_path / "d.npy"),
                    "-o", str(tmp_path / "b.vkbb")], check=True, capture_output=True)
    assert (tmp_path / "a.vkbb").read_bytes() == (tmp_path / "b.vkbb").read_bytes()


def test_pixel_group_files_are_the_same_in_another_process_and_decode_there(thresholded_context, tmp_path,
                                                                             mnist_test):
    from vaekit.runs import create_run, save_weights

    run = tmp_path / "ctx"
    create_run(run, RunConfig(DataConfig(binarize="threshold"), thresholded_context.config))
    save_weights(run, thresholded_context, epoch=1)
    digits = mnist_test.images[100:130, 0].numpy() > 127
    np.save(tmp_path / "d.npy", digits)
    assert main(["compress", str(run), str(tmp_path / "d.npy"), "-o", str(tmp_path / "a.vkbb")]) == 0
    for command, out in (("compress", "b.vkbb"), ("decompress", "back.npy")):
        source = tmp_path / ("d.npy" if command == "compress" else "a.vkbb")
        subprocess.run([sys.executable, "-m", "vaekit", command, str(run), str(source), "-o", str(tmp_path / out)],
                       check=True, capture_output=True)
    assert (tmp_path / "a.vkbb").read_bytes() == (tmp_path / "b.vkbb").read_bytes()
    assert np.array_equal(np.load(tmp_path / "back.npy"), digits)


def test_cli_errors(threshold_run, tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.zeros((3, 14, 14), np.uint8))
    assert main(["compress", str(threshold_run), str(tmp_path / "small.npy"), "-o", str(tmp_path / "x")]) == 3
    assert "do not match the model's (1, 28, 28)" in capsys.readouterr().err
    (tmp_path / "junk.vkbb").write_bytes(b"VAEKITBB\x05\x00\x00\x00{\"a\"")
    assert main(["decompress", str(threshold_run), str(tmp_path / "junk.vkbb"), "-o", str(tmp_path / "o.npy")]) == 3
    assert "corrupt or truncated header" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


# --- the file format: version 1 still read, every header field checked, lossless means lossless -----


def v1_file(model, images: np.ndarray, **extra) -> bytes:
    """A compressed file as vaekit wrote it before format 2: no file digest, no initial_words."""
    bits = (images != 0).astype(np.uint8).reshape(len(images), -1)
    words = BitsBackCoder(model).encode(bits)
    payload = words.astype("<u4").tobytes()
    one = images[images != 0].flat[0].item()
    header = {"format_version": 1, "model_fingerprint": model_fingerprint(model), "precision": 8,
              "count": len(bits), "shape": [1, 28, 28],
              "layout": {"container": "npy", "shape": list(images.shape), "dtype": images.dtype.str, "one": one},
              "images_sha256": hashlib.sha256(bits.tobytes()).hexdigest(), "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), **extra}
    encoded = json.dumps(header, sort_keys=True).encode()
    return MAGIC + len(encoded).to_bytes(4, "little") + encoded + payload


def repack(data: bytes, change) -> bytes:
    """`data` with its header changed by `change(header)` and every checksum recomputed: a forged file."""
    header, words = unpack(data, "x")
    header = {k: v for k, v in header.items() if k not in ("payload_bytes", "payload_sha256")}
    change(header)
    return pack(words, header)


def test_format_1_files_still_decompress_and_their_headers_are_checked(thresholded):
    model, bits = thresholded
    images = bits[:12].reshape(-1, 28, 28) * np.uint8(255)
    old = v1_file(model, images)
    out, container = decompress_images(model, old)
    assert container == "npy" and out.dtype == np.uint8 and np.array_equal(out, images)
    # the flips the issue found in format 1, which its payload checksum does not cover, are now refused
    for before, after, field in ((b'"one": 255', b'"one": 355', "layout.one"), (b'"|u1"', b'"|U1"', "layout.dtype"),
                                 (b'"count": 12', b'"count": 92', "layout.shape")):
        assert before in old
        with pytest.raises(DataError, match=f"corrupt header: {field} must be"):
            decompress_images(model, old.replace(before, after))
    with pytest.raises(DataError, match="corrupt header: fields extra missing or unknown"):
        decompress_images(model, v1_file(model, images, extra=1))


def test_a_small_file_claiming_millions_of_images_is_refused_at_once(thresholded):
    model, bits = thresholded
    data, _ = compress_images(model, bits[:20].reshape(-1, 28, 28), "npy", "threshold", 0)
    assert len(data) < 2500

    def claim(header):
        header["count"] = 10**7
        header["layout"]["shape"][0] = 10**7

    forged = repack(data, claim)  # checksums recomputed: only the count check stands in the way
    with pytest.raises(DataError, match="claims 10000000 images, but its payload of [0-9]+ bytes holds at most"):
        decompress_images(model, forged)


@pytest.mark.parametrize("field,value", [
    ("format_version", "2"), ("format_version", 2.0), ("format_version", True), ("format_version", 0),
    ("model_fingerprint", 7), ("model_fingerprint", "ab"), ("precision", "8"), ("precision", 0), ("precision", 17),
    ("precision", 8.0), ("count", -3), ("count", "20"), ("count", None), ("shape", [1, 28]), ("shape", "1x28x28"),
    ("shape", [1, 28, 28.0]), ("images_sha256", None), ("initial_words", -1), ("initial_words", 1.5),
    ("initial_words", 10**9), ("layout", []), ("layout.container", "png"), ("layout.container", 3),
    ("layout.dtype", "|U1"), ("layout.dtype", "|O"), ("layout.dtype", "<c16"), ("layout.dtype", "<f16"),
    ("layout.dtype", ["u1"]), ("layout.shape", [20, 783]), ("layout.shape", [20, 28, -28]),
    ("layout.shape", [20] + [1] * 40 + [784]), ("layout.one", 355), ("layout.one", "255"), ("layout.one", 0),
    ("layout.one", None), ("layout.one", 1.5), ("shape", [1, 28, 28, 1]),
])
def test_every_wrongly_typed_header_field_is_refused(thresholded, field, value):
    model, bits = thresholded
    data, _ = compress_images(model, bits[:20].reshape(-1, 28, 28) * np.uint8(255), "npy", "threshold", 0)

    def change(header):
        *parents, key = field.split(".")
        (header[parents[0]] if parents else header)[key] = value

    with pytest.raises(DataError):
        decompress_images(model, repack(data, change))


@pytest.mark.parametrize("values,dtype", [
    ([0, 2**64 - 1], np.uint64), ([0, 2**53 + 1], np.int64), ([0, -(2**63)], np.int64), ([0, -1], np.int8),
    ([0.0, 0.1], np.float16), ([0.0, 3e38], np.float32), ([0.0, -7.25], np.float64), ([0, 1], ">i4"),
])
def test_binary_arrays_of_any_value_come_back_bit_for_bit(thresholded, values, dtype):
    model, bits = thresholded
    images = np.where(bits[:10].reshape(-1, 28, 28) != 0, np.array(values[1], dtype), np.array(values[0], dtype))
    data, stats = compress_images(model, images, "npy", "threshold", 0)
    out, _ = decompress_images(model, data)
    assert stats["exact"] and out.dtype == images.dtype and out.tobytes() == images.tobytes()


@pytest.mark.parametrize("make,found", [
    (lambda b: np.where(b, np.nan, 0.0), "NaN or infinite"),
    (lambda b: np.where(b, np.inf, 0.0), "NaN or infinite"),
    (lambda b: np.where(b, 1.0, -0.0), "negative zeros"),
    (lambda b: b.astype(np.complex128), "dtype complex128"),
    (lambda b: b.astype(np.longdouble), "dtype float128"),
    (lambda b: b.astype("U1"), "dtype <U1"),
    (lambda b: b.astype("S1"), "dtype |S1"),
    (lambda b: b.astype(object), "dtype object"),
    (lambda b: b.astype("M8[s]"), "dtype datetime64"),
    (lambda b: b.astype(np.int8) * np.int8(3) + b[::-1].astype(np.int8), "in a dtype that holds 255"),
])
def test_arrays_compress_could_not_restore_are_refused_in_one_line(thresholded, make, found):
    model, bits = thresholded
    images = make(bits[:10].reshape(-1, 28, 28).astype(bool))
    with pytest.raises(DataError, match=f"{found}") as error:
        compress_images(model, images, "npy", "threshold", 0)
    assert "\n" not in str(error.value)


def test_cli_refuses_a_complex_array_with_exit_3(threshold_run, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((3, 28, 28), np.complex64))
    assert main(["compress", str(threshold_run), str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.vkbb")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compress takes bool, integer or float arrays" in err
    assert not (tmp_path / "c.vkbb").exists()


def test_images_cheaper_than_a_bit_still_keep_the_files_promise():
    """A model sure that every pixel is 0, with q = p(z): blank images cost almost nothing, so compress pads
    the stack's initial words until the payload holds a bit per image, and the file still decodes."""
    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(8,), latent_dim=2))).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.decoder.head.bias.fill_(-30.0)
    blank = np.zeros((3000, 28, 28), np.uint8)
    data, _ = compress_images(model, blank, "npy", "threshold", 0)
    header, words = unpack(data, "x")
    assert header["initial_words"] > BitsBackCoder(model).base_initial_words()
    assert 32 * words.size >= 3000
    out, _ = decompress_images(model, data)
    assert np.array_equal(out, blank) and out.dtype == np.uint8
