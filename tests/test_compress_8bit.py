"""Bits-back coding of 8-bit images (vaekit.compress_8bit): exact round trips, the ELBO's cost, deterministic
probabilities, and the file's guarantees (format 4)."""

import json
import math

import numpy as np
import pytest
import torch

from vaekit import ModelConfig, RunConfig, TrainConfig
from vaekit.cli import main
from vaekit.compress import (BitsBackCoder, coder_for, compress_images, decompress_images, model_fingerprint, pack,
                             unpack)
from vaekit.compress_8bit import (CHUNK, EightBitCoder, channel_probs, eight_bit_values, logistic_cdfs, mixture_cdfs,
                                  update_weights, value_probs)
from vaekit.config import DataConfig
from vaekit.errors import ConfigError, DataError
from vaekit.evaluate import evaluate_elbo
from vaekit.fit import build_model
from vaekit.likelihoods import DiscretizedLogisticMixture, discretized_logistic_log_prob

from .conftest import train
from .tiny_run import mnist_npz

MIXTURE = dict(likelihood="discretized-logistic-mixture", likelihood_components=3)


@pytest.fixture(scope="module")
def gray(mnist_train, mnist_test):
    """A small mixture model trained 1 epoch on 3,000 MNIST images at 8 bits, and 40 test images (N, 28, 28)."""
    config = RunConfig(DataConfig(), ModelConfig(hidden_dims=(100,), latent_dim=8, **MIXTURE), TrainConfig(epochs=1))
    model = train(mnist_train.images[:3000], config, 1)[0].eval()
    return model, mnist_test.images[:40, 0].numpy()


def colour_model(likelihood: str, hidden: int = 16):
    """An untrained model of 3 x 6 x 5 colour images: codes exactly, at about 8 bits a value."""
    extra = MIXTURE if likelihood == MIXTURE["likelihood"] else {"likelihood": likelihood}
    return build_model(RunConfig(model=ModelConfig(input_shape=(3, 6, 5), hidden_dims=(hidden,), latent_dim=3,
                                                   **extra))).eval()


def colour_images(n: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 6, 5), dtype=np.uint8)


def elbo_bits(model, images: np.ndarray) -> float:
    x = torch.from_numpy(images.astype(np.float32) / 255).view(len(images), *model.config.input_shape)
    return evaluate_elbo(model, x, 0)["test_loss"] / math.log(2)


def coded_bits_per_image(model, images: np.ndarray) -> float:
    """Round-trip images through the coder, check it is exact, and return the payload's bits per image."""
    coder = coder_for(model)
    flat = images.reshape(len(images), -1)
    words = coder.encode(flat)
    assert np.array_equal(coder.decode(words, len(flat)), flat)
    return 32 * (words.size - coder.initial_words().size) / len(flat)


# --- the probabilities ------------------------------------------------------------------------------

def test_value_probabilities_are_the_likelihoods():
    """P(k) from the CDF at the bin edges is exp of the training likelihood's log P(k), for every k."""
    rng = np.random.default_rng(0)
    means = rng.uniform(-0.3, 1.3, size=50)
    log_scales = rng.uniform(-7.5, 1.0, size=50)
    probs = value_probs(logistic_cdfs(means, log_scales))  # (50, 256)
    k = torch.arange(256, dtype=torch.float64) / 255
    expected = discretized_logistic_log_prob(k, torch.from_numpy(means)[:, None],
                                             torch.from_numpy(log_scales)[:, None]).exp().numpy()
    assert probs.shape == (50, 256) and np.allclose(probs.sum(1), 1, atol=1e-12)
    assert np.allclose(probs, expected, rtol=1e-7, atol=1e-13)


def test_channels_coded_one_after_another_give_the_mixture_likelihood():
    """prod_c p(x_c | x_<c), as the coder computes it, is the mixture's p(x) (channels share the component)."""
    torch.manual_seed(0)
    likelihood = DiscretizedLogisticMixture(4)
    params = torch.randn(1, 4 * 7, 2, 3, dtype=torch.float64)  # K (1 + 2C) channels, C = 3
    params[:, 16:] = params[:, 16:] - 1.5  # narrower logistics, so the components disagree (not so narrow that
    # some value falls 1e-16 below its mass: P(k) is a difference of CDFs, exact to 1e-16, not relatively)
    x = torch.randint(0, 256, (1, 3, 2, 3)).double() / 255
    weights, cdfs = mixture_cdfs(*likelihood.split(params))
    values = (x[0] * 255).round().long().reshape(3, -1).numpy()
    log_p = 0.0
    for c in range(3):
        probs = channel_probs(weights, cdfs[c])
        log_p += np.log(probs[np.arange(6), values[c]]).sum()
        weights = update_weights(weights, cdfs[c], values[c])
    assert log_p == pytest.approx(-likelihood.nll(params, x).item(), rel=1e-9)


@pytest.mark.parametrize("size", [1, 7, CHUNK, 200])
def test_probabilities_do_not_depend_on_the_batch(size):
    """A value's CDF is computed by the same instructions wherever it lies in the arrays: computed alone, or
    in batches of any size (as an image's pixels are), the bits are the same."""
    rng = np.random.default_rng(size)
    means, log_scales = rng.normal(0.5, 0.6, size=(2, 3, 401)), rng.uniform(-8, 2, size=(2, 3, 401))
    whole = logistic_cdfs(means, log_scales)
    for start in range(0, 401, size):
        part = slice(start, start + size)
        alone = logistic_cdfs(np.ascontiguousarray(means[..., part]), np.ascontiguousarray(log_scales[..., part]))
        assert np.array_equal(alone, whole[..., part, :])
    weights = rng.dirichlet(np.ones(3), size=401)
    mixed = channel_probs(weights, whole[0])
    for start in range(0, 401, size):
        part = slice(start, start + size)
        assert np.array_equal(channel_probs(np.ascontiguousarray(weights[part]),
                                            np.ascontiguousarray(whole[0][:, part])), mixed[part])


def test_an_images_probabilities_do_not_depend_on_what_else_is_coded(gray):
    model, images = gray
    a, b = coder_for(model), coder_for(model)
    assert isinstance(a, EightBitCoder)
    bins = np.arange(8) * 30
    for x, y in zip(a.components(bins), b.components(bins)):
        assert np.array_equal(x, y)
    flat = images.reshape(len(images), -1)
    assert np.array_equal(a.posterior_probs(flat[5]), b.posterior_probs(flat[5]))
    # the words of images 0..9 coded alone are the first stack states of 0..39 coded together: each image's
    # numbers are computed alone, so a longer batch only adds to the stack
    assert np.array_equal(a.encode(flat[:10]), b.encode(flat[:10]))
    assert np.array_equal(a.decode(a.encode(flat), 40), flat)


# --- costs and round trips ---------------------------------------------------------------------------

def test_grayscale_round_trip_costs_about_the_elbo(gray):
    model, images = gray
    coded = coded_bits_per_image(model, images)
    assert coded == pytest.approx(elbo_bits(model, images), rel=0.03)
    assert coded / 784 < 2.5  # a model that learnt something: PNG takes 2.7 bits/dim on these images


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "discretized-logistic-mixture"])
def test_colour_round_trip_costs_about_the_elbo(likelihood):
    model, images = colour_model(likelihood), colour_images()
    coded = coded_bits_per_image(model, images)
    assert coded == pytest.approx(elbo_bits(model, images), rel=0.03)


@pytest.mark.parametrize("array", [
    colour_images(5).astype(np.uint16),
    colour_images(5).astype(np.int32).reshape(5, 90),
    colour_images(5).astype(">i8"),
    (colour_images(5) / 255).astype(np.float32),
    colour_images(5) / 255,
    (colour_images(5) / 255).astype(np.float16),
    colour_images(5) > 127,
])
def test_8bit_arrays_come_back_exactly_in_their_dtype_and_shape(array):
    model = colour_model("discretized-logistic")
    data, stats = compress_images(model, array, "npy", "none", 0)
    assert stats["exact"] and stats["pixel_bits"] == 8
    out, container = decompress_images(model, data)
    assert container == "npy" and out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array)


@pytest.mark.parametrize("array,found", [
    (np.full((2, 90), 256, np.int32), "from 256 to 256"),
    (np.full((2, 90), -1, np.int16), "from -1 to -1"),
    (np.zeros((2, 90), np.int8), "int8"),
    (np.full((2, 90), 0.5, np.float32), "not all k / 255"),
    (np.full((2, 90), 2.0), "not all k / 255"),
    (np.full((2, 90), np.nan), "NaN"),
])
def test_arrays_an_8bit_run_could_not_restore_are_refused_in_one_line(array, found):
    with pytest.raises(DataError, match=found) as error:
        eight_bit_values(array, "x.npy")
    assert "\n" not in str(error.value)


def test_shards_decode_and_bytes_depend_only_on_the_images():
    model, images = colour_model("discretized-logistic-mixture"), colour_images(9)
    one, _ = compress_images(model, images, "npy", "none", 0)
    three, _ = compress_images(model, images, "npy", "none", 0, shards=3)
    assert compress_images(model, images, "npy", "none", 0)[0] == one
    header, _ = unpack(three, "x")
    assert header["format_version"] == 4 and len(header["shards"]) == 3 and header["pixel_bits"] == 8
    assert len(unpack(one, "x")[0]["shards"]) == 1
    for data in (one, three):
        assert np.array_equal(decompress_images(model, data)[0], images)


def test_binary_files_are_written_as_before():
    """A Bernoulli run still writes format 2 with no pixel_bits: its files do not change."""
    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(8,), latent_dim=2))).eval()
    header, _ = unpack(compress_images(model, np.zeros((3, 28, 28), np.uint8), "npy", "threshold", 0)[0], "x")
    assert header["format_version"] == 2 and "pixel_bits" not in header
    with pytest.raises(ConfigError, match="BitsBackCoder codes 1-bit pixels"):
        BitsBackCoder(colour_model("discretized-logistic"))
    with pytest.raises(ConfigError, match="EightBitCoder codes 8-bit pixels"):
        EightBitCoder(model)


# --- the file's guarantees -----------------------------------------------------------------------------

def refuses(model, data: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match) as error:
        decompress_images(model, data, "f.vkbb")
    assert "\n" not in str(error.value)


def repack(data: bytes, change) -> bytes:
    """The file with its header changed by `change` and every checksum recomputed (a forged file)."""
    header, words = unpack(data, "x")
    change(header)
    for key in ("format_version", "payload_bytes", "payload_sha256"):
        header.pop(key)
    return pack(words, header)


def test_corrupt_truncated_and_forged_files_are_refused():
    model, images = colour_model("discretized-logistic-mixture"), colour_images(6)
    data, _ = compress_images(model, images, "npy", "none", 0)
    for length in sorted({0, 5, 11, 12, 40, len(data) // 2, len(data) - 33, len(data) - 32, len(data) - 1}):
        refuses(model, data[:length], "truncated|not a vaekit|corrupt")
    rng = np.random.default_rng(0)
    for where in rng.integers(0, len(data), size=60):
        corrupt = bytearray(data)
        corrupt[where] ^= 1 << int(rng.integers(0, 8))
        refuses(model, bytes(corrupt), "corrupt|truncated|not a vaekit|newer")
    refuses(model, repack(data, lambda h: h.update(pixel_bits=1)), "pixel_bits must be 8")
    refuses(model, repack(data, lambda h: h.update(shards=[])), "shards must be 1 to")
    refuses(model, repack(data, lambda h: h["layout"].update(one=254)), "layout.one must be 255")
    refuses(model, repack(data, lambda h: h.pop("pixel_bits")), "shards must be 2 to")  # read as format 3
    other = colour_model("discretized-logistic-mixture", hidden=17)
    assert model_fingerprint(other) != model_fingerprint(model)
    refuses(other, data, "was compressed with another model")


def test_a_file_from_a_newer_vaekit_is_refused():
    model, images = colour_model("discretized-logistic"), colour_images(2)
    data, _ = compress_images(model, images, "npy", "none", 0)
    header, words = unpack(data, "x")
    raw = json.dumps({**header, "format_version": 5}).encode()
    refuses(model, data[:8] + len(raw).to_bytes(4, "little") + raw + data[12 + int.from_bytes(data[8:12], "little"):],
            "format 5 is newer than this vaekit's 4")


def test_cli_compresses_8bit_images_and_gives_them_back(tmp_path, mnist_train, capsys):
    npz, run = mnist_npz(tmp_path / "small.npz", 300), tmp_path / "run"
    assert main(["train", "--data", str(npz), "--likelihood", "discretized-logistic", "--hidden", "50", "--latent",
                 "4", "--epochs", "1", "--threads", "1", "--out", str(run)]) == 0
    images = mnist_train.images[:30, 0].numpy()
    np.save(tmp_path / "d.npy", images)
    capsys.readouterr()
    assert main(["compress", str(run), str(tmp_path / "d.npy"), "-o", str(tmp_path / "d.vkbb")]) == 0
    out = capsys.readouterr().out
    assert "compressed 30 images" in out and "bits per dim (8-bit values)" in out
    assert main(["decompress", str(run), str(tmp_path / "d.vkbb"), "-o", str(tmp_path / "back.npy")]) == 0
    back = np.load(tmp_path / "back.npy")
    assert back.dtype == np.uint8 and np.array_equal(back, images)


def test_every_truncation_and_random_bit_flips_of_an_8bit_file_are_refused():
    model, images = colour_model("discretized-logistic-mixture"), colour_images(4)
    data, _ = compress_images(model, images, "npy", "none", 0)
    for length in range(len(data)):
        refuses(model, data[:length], "truncated|not a vaekit|corrupt")
    rng = np.random.default_rng(1)
    end = 12 + int.from_bytes(data[8:12], "little")
    for _ in range(300):  # 1 to 4 flips, half of them in the magic, length and header
        corrupt = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            where = int(rng.integers(0, end if rng.random() < 0.5 else len(data)))
            corrupt[where] ^= 1 << int(rng.integers(0, 8))
        if bytes(corrupt) != data:
            refuses(model, bytes(corrupt), "corrupt|truncated|not a vaekit|newer")
    assert np.array_equal(decompress_images(model, data)[0], images)
