"""The dataset cache: prepared once, streamed by training with the in-memory path's exact weights, refused in one
line when damaged, never left half-written, and keyed by the content and the options."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_split
from vaekit.cli import main
from vaekit.data import encode_idx, read_images
from vaekit.data.cache import HEADER, HEADER_SIZE, CacheFile
from vaekit.data.convert import (PrepareOptions, cache_dir, key_of, plan_of, prepare, should_stream,
                                 stream_above)
from vaekit.data.streamed import PreparedInputs, StreamedImages, open_streamed
from vaekit.errors import ConfigError, DataError
from vaekit.runs import NLL_FILE

from .conftest import DATA_DIR
from .tiny_run import is_one_error_line

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv("VAEKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("VAEKIT_STREAM_ABOVE", raising=False)


@pytest.fixture(scope="module")
def mnist():
    return load_split("mnist", "test", DATA_DIR)


def small_npy(path: Path, mnist, count: int = 300) -> Path:
    np.save(path, mnist.images[:count, 0].numpy())
    return path


def test_a_prepared_npy_holds_the_same_images(tmp_path, mnist):
    source = small_npy(tmp_path / "a.npy", mnist)
    path, written = prepare(source, directory=tmp_path / "c")
    assert written and path.parent == tmp_path / "c" and path.suffix == ".vkds"
    assert prepare(source, directory=tmp_path / "c") == (path, False)  # found again, not converted again
    streamed = open_streamed(path)
    assert len(streamed) == 300 and streamed.shape == (1, 28, 28) and streamed.labels is None
    assert torch.equal(streamed.materialize().images, read_images(source).images)
    assert torch.equal(read_images(path).images, mnist.images[:300])  # a cache is an input like any other


def test_folders_idx_and_npz_keep_their_labels_and_names(tmp_path, mnist):
    folder = tmp_path / "digits"
    for i in range(12):
        (folder / f"class{mnist.labels[i].item()}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.images[i, 0].numpy()).save(folder / f"class{mnist.labels[i].item()}" / f"{i:02d}.png")
    (tmp_path / "x.idx").write_bytes(encode_idx(mnist.images[:50, 0].numpy()))
    np.savez(tmp_path / "x.npz", images=mnist.images[:40, 0].numpy(), labels=mnist.labels[:40].numpy())
    for source in (folder, tmp_path / "x.idx", tmp_path / "x.npz"):
        expected = read_images(source)
        got = open_streamed(prepare(source, directory=tmp_path / "c")[0])
        assert torch.equal(got.materialize().images, expected.images), source
        assert (got.labels is None) == (expected.labels is None)
        if expected.labels is not None:
            assert torch.equal(got.labels, expected.labels)
        assert got.names == expected.names and got.classes == expected.classes and got.name == expected.name


def test_colour_images_and_a_target_shape(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 8, 12, 3), dtype=np.uint8)  # N x H x W x C
    np.save(tmp_path / "rgb.npy", images)
    native = open_streamed(prepare(tmp_path / "rgb.npy", directory=tmp_path / "c")[0])
    assert native.shape == (3, 8, 12)
    assert torch.equal(native.materialize().images, torch.from_numpy(images).permute(0, 3, 1, 2))
    gray = open_streamed(prepare(tmp_path / "rgb.npy", PrepareOptions(shape=(1, 4, 6)), tmp_path / "c")[0])
    assert gray.shape == (1, 4, 6) and gray.cache.meta["options"] == {"shape": [1, 4, 6]}


def weights_of(run) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_training_from_the_cache_gives_the_in_memory_weights_bit_for_bit(tmp_path, mnist, monkeypatch, binarize):
    source = small_npy(tmp_path / "a.npy", mnist, 400)
    config = RunConfig(data=DataConfig(name=str(source), binarize=binarize, standardize=binarize == "none"),
                       model=ModelConfig(hidden_dims=(32,), latent_dim=4),
                       train=TrainConfig(epochs=2, batch_size=48))  # 360 training images: a short last batch
    assert not should_stream(source)
    in_memory = fit(config, tmp_path / "memory", device="cpu")
    monkeypatch.setenv("VAEKIT_STREAM_ABOVE", "0")
    assert should_stream(source)
    streamed = fit(config, tmp_path / "streamed", device="cpu")
    assert list(cache_dir().glob("*.vkds"))  # prepared on first use, in the cache dir
    a, b = weights_of(in_memory), weights_of(streamed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop(in_memory.metrics) == drop(streamed.metrics)
    assert in_memory.metrics[-1]["test_loss"] > 0


def test_a_streamed_epoch_cuts_the_in_memory_batches(tmp_path, mnist):
    streamed = open_streamed(prepare(small_npy(tmp_path / "a.npy", mnist, 101), directory=tmp_path)[0])
    in_memory = mnist.images[:101]
    split = torch.tensor([3, 5, 8, 13, 21, 34, 55, 89, 90, 91, 92, 100])
    part = streamed.subset(split)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))
    shuffled, expected = StreamedImages(part, torch.device("cpu"))[order], in_memory[split][order]
    batches = [shuffled[i * 5:(i + 1) * 5] for i in range(3)]  # read ahead after each: 5, 5, then the last 2
    assert [len(b) for b in batches] == [5, 5, 2]
    assert torch.equal(torch.cat(batches), expected)
    assert torch.equal(shuffled[2:4], expected[2:4])  # out of turn: read directly


def test_data_over_the_line_is_streamed_and_built_in_datasets_never(tmp_path, mnist, monkeypatch):
    source = small_npy(tmp_path / "a.npy", mnist, 100)
    assert stream_above() == 256 * 2**20 and not should_stream(source) and not should_stream("mnist:train")
    monkeypatch.setenv("VAEKIT_STREAM_ABOVE", str(100 * 784 - 1))
    assert should_stream(source) and not should_stream("mnist:train")
    monkeypatch.setenv("VAEKIT_STREAM_ABOVE", str(100 * 784))
    assert not should_stream(source)
    monkeypatch.setenv("VAEKIT_STREAM_ABOVE", "1e9")
    with pytest.raises(ConfigError, match="VAEKIT_STREAM_ABOVE must be a number of bytes"):
        stream_above()


def test_the_key_changes_with_the_content_and_the_options_not_the_name(tmp_path, mnist):
    a = small_npy(tmp_path / "a.npy", mnist, 50)
    same = small_npy(tmp_path / "same.npy", mnist, 50)
    images = mnist.images[:50, 0].numpy().copy()
    images[49, 27, 27] ^= 1  # one bit of one pixel
    np.save(tmp_path / "b.npy", images)
    key = key_of(plan_of(a), PrepareOptions())
    assert key_of(plan_of(same), PrepareOptions()) == key
    assert key_of(plan_of(tmp_path / "b.npy"), PrepareOptions()) != key
    assert key_of(plan_of(a), PrepareOptions(shape=(1, 14, 14))) != key
    paths = {prepare(s, o, tmp_path / "c")[0] for s, o in ((a, PrepareOptions()), (same, PrepareOptions()),
                                                          (tmp_path / "b.npy", PrepareOptions()),
                                                          (a, PrepareOptions(shape=(1, 14, 14))))}
    assert len(paths) == 3


def doctor(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def consistent_header(path: Path, **fields) -> None:
    """Rewrite header fields with a matching header checksum: a doctored file that passes the checksum."""
    raw = bytearray(path.read_bytes()[:HEADER.size])
    names = ("magic", "version", "n", "c", "h", "w", "has_labels", "block", "meta_bytes", "key")
    values = dict(zip(names, HEADER.unpack(bytes(raw))))
    values.update(fields)
    packed = HEADER.pack(*(values[n] for n in names))
    doctor(path, 0, packed + struct.pack("<I", zlib.crc32(packed)))


DAMAGE = {
    "truncated": (lambda p: os.truncate(p, p.stat().st_size - 1), "truncated"),
    "cut to the header": (lambda p: os.truncate(p, 100), "truncated"),
    "empty": (lambda p: os.truncate(p, 0), "shorter than a header"),
    "trailing bytes": (lambda p: p.open("ab").write(b"\0"), "trailing bytes"),
    "magic": (lambda p: doctor(p, 0, b"PK"), "magic"),
    "header byte": (lambda p: doctor(p, 20, b"\x07"), "header checksum"),
    "padding": (lambda p: doctor(p, HEADER_SIZE - 1, b"\x01"), "padding"),
    "a pixel": (lambda p: doctor(p, HEADER_SIZE + 300 * 784 - 1, b"\x01"), "checksum of images"),
    "a label": (lambda p: doctor(p, HEADER_SIZE + 300 * 784 + 8, b"\x09"), "labels' checksum"),
    "metadata": (lambda p: doctor(p, p.stat().st_size - 3, b"\x00"), "metadata's checksum"),
    "more images declared": (lambda p: consistent_header(p, n=301), "header declares"),
    "a huge count": (lambda p: consistent_header(p, n=2**62), "header declares"),
    "no channels": (lambda p: consistent_header(p, c=0), "header declares"),
    "another version": (lambda p: consistent_header(p, version=99), "format version 99"),
    "a shorter image": (lambda p: consistent_header(p, w=27), "header declares"),
}


@pytest.fixture(scope="module")
def a_cache(tmp_path_factory, mnist):
    folder = tmp_path_factory.mktemp("prepared")
    np.savez(folder / "a.npz", images=mnist.images[:300, 0].numpy(), labels=mnist.labels[:300].numpy())
    return prepare(folder / "a.npz", directory=folder)[0]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_refused_in_one_line(tmp_path, a_cache, damage, capsys):
    bad = tmp_path / "bad.vkds"
    bad.write_bytes(a_cache.read_bytes())
    change, message = DAMAGE[damage]
    change(bad)
    with pytest.raises(DataError, match=message):
        CacheFile(bad)
    code = main(["train", "--data", str(bad), "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3 and is_one_error_line(err) and "not a usable vaekit dataset cache" in err
    assert not (tmp_path / "run").exists()


def test_a_file_that_shrinks_after_opening_is_a_data_error(tmp_path, a_cache):
    bad = tmp_path / "bad.vkds"
    bad.write_bytes(a_cache.read_bytes())
    streamed = open_streamed(bad)
    os.truncate(bad, HEADER_SIZE + 100 * 784)
    with pytest.raises(DataError, match="the file shrank"):
        streamed.read(0, 300)


def test_an_interrupted_prepare_leaves_nothing(tmp_path, mnist, monkeypatch):
    import vaekit.data.convert as preparing

    source = small_npy(tmp_path / "a.npy", mnist, 300)
    monkeypatch.setattr(preparing, "CHUNK_BYTES", 784 * 50)
    real = preparing._native_chunks

    def stopped(plan):
        for i, chunk in enumerate(real(plan)):
            if i == 3:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(preparing, "_native_chunks", stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, directory=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


KILLABLE = """
import sys, time
import vaekit.data.convert as preparing
preparing.CHUNK_BYTES = 784 * 10
real = preparing._native_chunks
def slow(plan):
    for i, chunk in enumerate(real(plan)):
        if i == 2:
            print("writing", flush=True)
        time.sleep(0.05)
        yield chunk
preparing._native_chunks = slow
preparing.prepare(sys.argv[1], directory=sys.argv[2])
"""


def test_a_killed_prepare_leaves_no_cache_and_the_next_one_cleans_up(tmp_path, mnist):
    source = small_npy(tmp_path / "a.npy", mnist, 300)
    out = tmp_path / "c"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(source), str(out)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline() == "writing\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    left = list(out.iterdir())
    assert [p.name.startswith(".") and p.name.endswith(".tmp") for p in left] == [True]  # a temp, no cache
    assert not list(out.glob("*.vkds"))
    path, written = prepare(source, directory=out)
    assert written and sorted(out.iterdir()) == [path]  # the dead writer's temp is gone
    assert torch.equal(open_streamed(path).materialize().images, mnist.images[:300])


def test_the_cli_prepares_and_trains_from_the_cache(tmp_path, mnist, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = small_npy(tmp_path / "a.npy", mnist, 200)
    assert main(["data", "prepare", str(source), "--out", "caches"]) == 0
    line = capsys.readouterr().out.strip()
    path = Path(line.split(": ", 1)[1].split(" (")[0])
    assert line.startswith("prepared: caches/") and "(200 images of 1x28x28" in line and path.exists()
    assert main(["data", "prepare", str(source), "--out", "caches"]) == 0
    assert capsys.readouterr().out.startswith("already prepared: ")
    assert main(["train", "--threads", "1", "--data", str(path), "--epochs", "1", "--batch-size", "64",
                 "--out", "run"]) == 0
    assert main(["eval", "run", "--threads", "1", "--json"]) == 0
    assert '"test_loss"' in capsys.readouterr().out
    assert main(["data", "prepare", "missing.npy"]) == 3
    assert is_one_error_line(capsys.readouterr().err)
    Path("a-file").write_text("")
    assert main(["data", "prepare", str(source), "--out", "a-file/caches"]) == 5
    assert is_one_error_line(capsys.readouterr().err)


def test_preparing_streams_its_input(tmp_path, monkeypatch):
    """A raw array is converted a chunk at a time: the chunks the writer sees are bounded by CHUNK_BYTES."""
    import vaekit.data.convert as preparing

    np.save(tmp_path / "big.npy", np.zeros((1000, 16, 16), dtype=np.float32))
    monkeypatch.setattr(preparing, "CHUNK_BYTES", 16 * 16 * 4 * 64)
    sizes = [len(images) for images, _ in preparing.chunks_of(plan_of(tmp_path / "big.npy"), PrepareOptions())]
    assert max(sizes) == 64 and sum(sizes) == 1000



def test_eval_reads_a_streamed_run_by_slices_and_gets_the_in_memory_numbers(tmp_path, mnist, monkeypatch, capsys):
    import vaekit.cli.evaluate as evaluating
    from vaekit.data.streamed import PreparedInputs

    source = small_npy(tmp_path / "a.npy", mnist, 300)
    config = RunConfig(data=DataConfig(name=str(source), binarize="threshold"),
                       model=ModelConfig(hidden_dims=(32,), latent_dim=4), train=TrainConfig(epochs=1, batch_size=64))
    run = fit(config, tmp_path / "run", device="cpu").path
    assert main(["eval", str(run), "--threads", "1", "--json", "--iw-samples", "20"]) == 0
    in_memory = capsys.readouterr().out
    seen = []
    real = evaluating.streamed_test_inputs
    monkeypatch.setattr(evaluating, "streamed_test_inputs", lambda *a: seen.append(real(*a)) or seen[-1])
    monkeypatch.setenv("VAEKIT_STREAM_ABOVE", "0")
    (run / NLL_FILE).unlink()  # estimated again, not read from the record
    assert main(["eval", str(run), "--threads", "1", "--json", "--iw-samples", "20"]) == 0
    assert isinstance(seen[0], PreparedInputs) and len(seen[0]) == 30
    assert capsys.readouterr().out == in_memory and '"nll"' in in_memory


@pytest.mark.parametrize("method", ["elbo", "iwae"])
def test_score_reads_a_cache_by_slices_and_gets_the_in_memory_scores(tmp_path, mnist, monkeypatch, capsys, method):
    import vaekit.data.streamed as streaming

    source = small_npy(tmp_path / "a.npy", mnist, 300)
    config = RunConfig(data=DataConfig(name=str(source), standardize=True),
                       model=ModelConfig(hidden_dims=(32,), latent_dim=4), train=TrainConfig(epochs=1, batch_size=64))
    run = str(fit(config, tmp_path / "run", device="cpu").path)
    cache = str(prepare(source, directory=tmp_path / "c")[0])
    options = ["--threads", "1", "--method", method, "--iw-samples", "5", "--extremes", str(tmp_path / "x.png")]
    assert main(["score", run, str(source), "-o", str(tmp_path / "a.csv"), *options]) == 0
    read = []
    monkeypatch.setattr(streaming, "PreparedInputs", lambda *a: read.append(1) or PreparedInputs(*a))
    assert main(["score", run, cache, "-o", str(tmp_path / "b.csv"), *options]) == 0
    assert read == [1]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
