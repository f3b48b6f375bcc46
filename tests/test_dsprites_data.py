"""`--data dsprites` and the sources dsprites:train / dsprites:test: generated once into a data directory, checked by
hash, streamed a batch at a time, a fixed test split, shape labels. On a 1,536-image factor subset (the full set
takes 9 s to draw and 5 s to hash; its measurements are in docs/disentanglement.md)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import RunConfig, TrainConfig, fit, resume
from vaekit.callbacks import CallbackError
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig
from vaekit.data import dsprites, dsprites_file, dsprites_set, read_images
from vaekit.data.sources import load_held_out, load_train_test
from vaekit.data.streamed import StreamedSet

from .tiny_run import is_one_error_line

SUBSET = dsprites.Factors(scale=(5,), orientation=(0, 10), x=tuple(range(0, 32, 2)), y=tuple(range(0, 32, 2)))
N = 3 * 2 * 16 * 16


@pytest.fixture(autouse=True)
def small_set(monkeypatch):
    monkeypatch.setattr(dsprites_set, "FACTORS", SUBSET)


def config(epochs=1):
    return RunConfig(data=DataConfig(name="dsprites"),
                     model=ModelConfig(input_shape=(1, 64, 64), hidden_dims=(32,), latent_dim=4),
                     train=TrainConfig(epochs=epochs, batch_size=64))


def test_first_use_generates_the_file_into_the_data_dir_then_finds_it(tmp_path, monkeypatch):
    calls = []
    real = dsprites_set.generate
    monkeypatch.setattr(dsprites_set, "generate", lambda progress=False: calls.append(progress) or real(progress))
    train, test = load_train_test("dsprites", 0.1, 0, tmp_path, stream=True)
    again, _ = load_train_test("dsprites", 0.1, 5, tmp_path, stream=True)
    assert len(calls) == 1
    path = dsprites_file.path_in(tmp_path / "dsprites")
    assert path.stat().st_size == 64 + N * 512
    assert isinstance(train, StreamedSet) and isinstance(test, StreamedSet)
    assert (len(train), len(test), train.shape) == (N, N // 10, (1, 64, 64))
    assert train.name == "dsprites:train" and test.classes == ("square", "ellipse", "heart")
    # The test split is fixed (not the run's seed): the same positions for seed 0 and seed 5.
    assert np.array_equal(test.positions, dsprites_set.test_positions(N))
    assert np.array_equal(again.positions, train.positions)
    # Every image is the one drawn from its factors; the label is its shape.
    positions = np.array([0, 1, 17, N // 3, N - 1])
    factors = dsprites_set.factor_indices(positions)
    assert factors[:, 0].tolist() == [0, 0, 0, 1, 2] and factors[-1].tolist() == [2, 5, 10, 30, 30]
    images = train.subset(torch.from_numpy(positions)).read(0, len(positions))
    assert images.dtype == torch.uint8 and set(images.unique().tolist()) == {0, 255}
    assert np.array_equal(images[:, 0].numpy(), dsprites.render(factors) * 255)
    assert train.labels[positions].tolist() == [0, 0, 0, 1, 2]


def test_without_a_data_dir_it_is_generated_in_the_user_cache_and_found_in_any_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dsprites_set.open_file()
    assert (dsprites_set.home() / dsprites_file.FILE_NAME).is_file()
    assert dsprites_set.find_file(tmp_path / "elsewhere") == dsprites_set.home() / dsprites_file.FILE_NAME


def test_the_sources_read_the_splits(tmp_path):
    test = read_images("dsprites:test", tmp_path)
    assert test.images.shape == (N // 10, 1, 64, 64) and test.name == "dsprites:test"
    assert torch.equal(test.labels, torch.from_numpy(dsprites_set.factor_indices(dsprites_set.test_positions(N))[:, 0]))
    assert torch.equal(load_held_out("dsprites", 0.1, 3, tmp_path).images, test.images)
    assert len(read_images("dsprites:train", tmp_path)) == N  # a subset fits in memory


def test_the_full_training_split_is_refused_in_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(dsprites_set, "FACTORS", dsprites.Factors())
    with pytest.raises(Exception, match="737,280 images .3.0 GB of pixels.") as error:
        read_images("dsprites:train", tmp_path)
    assert type(error.value).__name__ == "DataError"
    assert not (tmp_path / "dsprites").exists()  # refused before anything was generated


def test_a_doctored_file_is_a_one_line_data_error(tmp_path, capsys):
    run = fit(config(), tmp_path / "run", data_dir=tmp_path, device="cpu").path
    path = dsprites_file.path_in(tmp_path / "dsprites")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", str(run), "--data-dir", str(tmp_path), "--threads", "1"]) == 3
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "do not match their SHA-256" in err


def test_the_cli_trains_on_dsprites_streamed_sized_to_it(tmp_path, capsys):
    assert main(["train", "--data", "dsprites", "--data-dir", str(tmp_path), "--epochs", "1", "--hidden", "32",
                 "--latent", "4", "--threads", "1", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["name"] == "dsprites" and saved["data"]["binarize"] == "none"
    assert saved["model"]["input_shape"] == [1, 64, 64]
    # the recipe sized to the set: 1,536 images of 4,096 pixels get batch 64 and lr 0.006 * sqrt(784 / 4096)
    assert saved["train"]["batch_size"] == 64 and saved["train"]["lr"] == 0.0026
    assert saved["data"]["background"] == 0.0  # black borders
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--data-dir", str(tmp_path), "--threads", "1", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert evaluation["test_loss"] == pytest.approx(first["test_loss"], rel=1e-6)
    assert main(["embed", str(tmp_path / "run"), "dsprites:test", "--data-dir", str(tmp_path), "--threads", "1",
                 "-o", str(tmp_path / "z.npz")]) == 0
    embedded = np.load(tmp_path / "z.npz")
    assert embedded["labels"].tolist() == dsprites_set.factor_indices(dsprites_set.test_positions(N))[:, 0].tolist()


def test_a_resumed_run_ends_with_the_uninterrupted_weights_bit_for_bit(tmp_path):
    straight = fit(config(epochs=2), tmp_path / "straight", data_dir=tmp_path, device="cpu")
    def stop(epoch):
        raise RuntimeError("stopped")

    with pytest.raises(CallbackError):
        fit(config(epochs=2), tmp_path / "halves", data_dir=tmp_path, device="cpu", callbacks=[stop])
    halves = resume(tmp_path / "halves", epochs=2, data_dir=tmp_path, device="cpu")
    a, b = load_file(straight.path / "model.safetensors"), load_file(halves.path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["test_loss"] for m in straight.metrics] == [m["test_loss"] for m in halves.metrics]


def test_the_file_is_written_block_by_block_as_encode_gives_it_and_never_half(tmp_path):
    blocks = [dsprites.packed_block(s, 0, 0) for s in range(3)]
    path = dsprites_file.write(tmp_path / "a.vksprites", iter(blocks), 3 * 1024)
    assert path.read_bytes() == bytes(dsprites_file.encode(np.concatenate(blocks)))
    with pytest.raises(ValueError, match="generated 2048 packed images, expected 3072"):
        dsprites_file.write(tmp_path / "b.vksprites", iter(blocks[:2]), 3 * 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vksprites"]  # no temporary file left


def test_commands_holding_the_training_split_read_a_fixed_bounded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(dsprites_set, "IN_MEMORY_TRAIN", 500)
    train, test = load_train_test("dsprites", 0.1, 0, tmp_path)
    again, _ = load_train_test("dsprites", 0.1, 7, tmp_path)
    assert train.images.shape == (500, 1, 64, 64) and len(test) == N // 10
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    chosen = np.sort(np.random.default_rng(dsprites_set.TEST_SEED + 1).choice(N, 500, replace=False))
    assert np.array_equal(train.images[:, 0].numpy(), dsprites.render(dsprites_set.factor_indices(chosen)) * 255)


def test_a_data_dir_it_cannot_write_into_is_one_line_not_a_crash(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "dsprites"))

    monkeypatch.setattr(dsprites_file.tempfile, "mkstemp", refuse)  # as in a read-only folder (tests may run as root)
    assert main(["train", "--data", "dsprites", "--data-dir", str(tmp_path), "--epochs", "1", "--threads", "1",
                 "--out", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "cannot write the generated dSprites" in err and "Permission denied" in err
    assert not (tmp_path / "run").exists() and list((tmp_path / "dsprites").iterdir()) == []
