"""`vaekit compress` and `decompress` under torchrun (issue #23): each process codes a contiguous shard of the images
on its own ANS stack, and the main process writes one format-3 file; one process still writes format 2, byte for
byte as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vaekit import load_run
from vaekit.cli import main
from vaekit.compress import BitsBackCoder, compress_images, decompress_images, pack, unpack
from vaekit.errors import DataError

from .test_distributed import torchrun, vaekit
from .tiny_run import is_one_error_line, make_tiny_run

OLD = Path(__file__).resolve().parent / "data" / "format5"
N_DIGITS = 41  # two shards of 21 and 20 images


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny run, 41 thresholded MNIST digits (0/255, .npy) and their file compressed by 2 processes."""
    folder = tmp_path_factory.mktemp("ddpcompress")
    run = make_tiny_run(folder)
    images = np.load(folder / "small.npz")["images"][:N_DIGITS]
    np.save(folder / "digits.npy", np.where(images > 127, 255, 0).astype(np.uint8))
    result = vaekit("compress", str(run), "digits.npy", "-o", "two.vkbb", cwd=folder,
                    launcher=torchrun("--standalone", "--nproc_per_node", "2", "-m", "vaekit"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("compressed 41 images") == 1  # the main process prints
    return run, folder / "digits.npy", folder / "two.vkbb"


def test_two_processes_write_one_format_3_file_that_decompresses_exactly(coded, tmp_path, capsys):
    run, digits, two = coded
    data = two.read_bytes()
    header, words = unpack(data, "two.vkbb")
    assert header["format_version"] == 3 and header["count"] == N_DIGITS and "initial_words" not in header
    assert [shard["count"] for shard in header["shards"]] == [21, 20]
    assert sum(shard["payload_bytes"] for shard in header["shards"]) == 4 * words.size
    # the file depends on the images and the shard count only: one process cutting 2 shards writes the same bytes
    loaded = load_run(run)
    images = np.load(digits)
    same, _ = compress_images(loaded.model, images, "npy", loaded.config.data.binarize, loaded.config.train.seed,
                              shards=2)
    assert same == data
    assert main(["decompress", str(run), str(two), "-o", str(tmp_path / "one.npy")]) == 0
    assert "decompressed 41 images" in capsys.readouterr().out
    back = np.load(tmp_path / "one.npy")
    assert back.dtype == images.dtype and np.array_equal(back, images)
    shared = vaekit("decompress", str(run), str(two), "-o", "shared.npy", cwd=tmp_path,
                    launcher=torchrun("--standalone", "--nproc_per_node", "2", "-m", "vaekit"))
    assert shared.returncode == 0, shared.stderr
    assert (tmp_path / "shared.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
    # shard 1's stack starts from its own initial words: decoding it as shard 0 fails the initial-bits check
    count, initial, payload_bytes = (header["shards"][1][key] for key in ("count", "initial_words", "payload_bytes"))
    coder = BitsBackCoder(loaded.model, header["precision"])
    assert not np.array_equal(coder.initial_words(initial, 1), coder.initial_words(initial, 0))
    assert np.array_equal(coder.decode(words[-payload_bytes // 4:], count, initial, shard=1), (images[21:] != 0)
                          .reshape(count, -1))


def test_one_process_still_writes_format_2_byte_for_byte(tmp_path, monkeypatch):
    """ten.vkbb was written by the vaekit before format 3 existed (tests/data/format5)."""
    monkeypatch.chdir(OLD)
    assert main(["compress", "run", "ten.npy", "-o", str(tmp_path / "ten.vkbb")]) == 0
    assert (tmp_path / "ten.vkbb").read_bytes() == (OLD / "ten.vkbb").read_bytes()
    assert unpack((OLD / "ten.vkbb").read_bytes(), "ten.vkbb")[0]["format_version"] == 2


def forged(data: bytes, change) -> bytes:
    """`data` with its header changed by `change(header)` and every checksum recomputed."""
    header, words = unpack(data, "x")
    header = {k: v for k, v in header.items() if k not in ("payload_bytes", "payload_sha256")}
    change(header)
    return pack(words, header)


def set_shard(k: int, key: str, value):
    def change(header):
        header["shards"][k][key] = value
    return change


@pytest.mark.parametrize("change,message", [
    (set_shard(0, "count", 20), "its 2 shards hold 40 images, but it claims 41"),
    (set_shard(1, "payload_bytes", 10**6), "shards' payloads add up to"),
    (set_shard(0, "payload_bytes", 4), "shards' payloads add up to"),
    (set_shard(0, "count", 0), "shards must be 2 to 512 objects"),
    (set_shard(1, "initial_words", "3"), "shards must be 2 to 512 objects"),
    (set_shard(1, "payload_bytes", 6), "shards must be 2 to 512 objects"),
    (set_shard(1, "extra", 1), "shards must be 2 to 512 objects"),
    (lambda header: header["shards"].pop(), "shards must be 2 to 512 objects"),
    (lambda header: header.update(shards={"count": 41}), "shards must be 2 to 512 objects"),
    (lambda header: header.update(initial_words=3), "fields initial_words missing or unknown"),
    (lambda header: header.update(format_version=2), "fields initial_words, shards missing or unknown"),
])
def test_corrupt_format_3_headers_are_refused_in_one_line(coded, tmp_path, capsys, change, message):
    run, _, two = coded
    (tmp_path / "bad.vkbb").write_bytes(forged(two.read_bytes(), change))
    assert main(["decompress", str(run), str(tmp_path / "bad.vkbb"), "-o", str(tmp_path / "out.npy")]) == 3
    err = capsys.readouterr().err
    assert is_one_error_line(err) and message in err, err
    assert not (tmp_path / "out.npy").exists()


def test_a_shard_claiming_more_images_than_its_bits_is_refused(coded):
    """Counts and lengths that add up, moved so that shard 1 claims 33 images in one word: each shard keeps the
    bit-per-image promise."""
    run, _, two = coded
    data = two.read_bytes()
    words = unpack(data, "x")[1]

    def move(header):
        header["shards"][0].update(count=8, payload_bytes=4 * (words.size - 1))
        header["shards"][1].update(count=33, payload_bytes=4)

    with pytest.raises(DataError, match="shard 1 claims 33 images and 3 initial words in a payload of 1 words"):
        decompress_images(load_run(run).model, forged(data, move))


def test_a_shard_that_fails_to_decode_on_one_process_stops_both_with_exit_3(coded, tmp_path):
    """Shard 1 forged to start from 4 initial words: process 1's decoding does not end on them; the processes agree
    on the failure before they gather, so neither waits for the other."""
    run, _, two = coded
    (tmp_path / "bad.vkbb").write_bytes(forged(two.read_bytes(), set_shard(1, "initial_words", 4)))
    result = vaekit("decompress", str(run), "bad.vkbb", "-o", "out.npy", cwd=tmp_path,
                    launcher=torchrun("--standalone", "--nproc_per_node", "2", "-m", "vaekit"))
    assert result.returncode != 0 and "exitcode  : 3 " in result.stderr, result.stderr  # torchrun's report
    for line in ("vaekit: error (process 1 of 2): bad.vkbb (shard 2 of 2): decoding did not end on the initial "
                 "bits: the file does not match this model or is corrupt",
                 "vaekit: error: another process of the job could not decode its shards (it says why)"):
        assert result.stderr.count(line) == 1, result.stderr  # the two processes' lines may interleave
    assert "vaekit/" not in result.stderr  # no traceback through vaekit (torchrun prints its own after the lines)
    assert not (tmp_path / "out.npy").exists()
