"""Epoch callbacks in fit, resume and restart, and TensorBoard logging (`vaekit train --tensorboard`)."""

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, resume
from vaekit.callbacks import CallbackError, TensorBoardCallback, epoch_scalars
from vaekit.cli import main
from vaekit.errors import ConfigError, Interrupted
from vaekit.runs import load_checkpoint, read_config, read_metrics
from vaekit.train import learning_rate

from .tiny_run import is_one_error_line, mnist_npz

N_IMAGES = 300  # 270 train, 30 test: 5 steps an epoch at batch 64


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    return mnist_npz(tmp_path_factory.mktemp("data") / "small.npz", N_IMAGES)


def tiny_config(data, epochs: int) -> RunConfig:
    return RunConfig(data=DataConfig(name=str(data)), model=ModelConfig(hidden_dims=(32,), latent_dim=4),
                     train=TrainConfig(epochs=epochs, batch_size=64))


class Recorder:
    """Keeps what it is shown; draws from torch's global generator and the epoch's images, as a callback may."""

    def __init__(self):
        self.seen, self.rows, self.resumed_at, self.closed = [], [], [], 0

    def __call__(self, epoch):
        self.seen.append(epoch.epoch)
        self.rows.append(dict(epoch.metrics))
        assert dict(epoch.history[-1]) == dict(epoch.metrics) and len(epoch.history) == epoch.epoch
        with pytest.raises(TypeError):
            epoch.metrics["test_loss"] = 0.0  # read-only
        torch.randn(1000)  # the global stream is not training's
        assert epoch.samples().shape == (64, 1, 28, 28) and epoch.reconstructions().shape == (16, 1, 28, 28)

    def resumed(self, epoch):
        self.resumed_at.append(epoch.epoch)

    def close(self):
        self.closed += 1


def stop_at(n: int):
    def stopper(epoch):
        if epoch.epoch == n:
            raise ValueError(f"enough\nat {n}")
    return stopper


def as_rows(rows):
    return [{k: list(v) if isinstance(v, tuple) else v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_callback_sees_every_epoch_once_across_a_stop_and_resume_and_training_stays_bitwise(small_npz, tmp_path):
    reference = fit(tiny_config(small_npz, 3), tmp_path / "reference", device="cpu").path
    recorder, out = Recorder(), tmp_path / "run"
    with pytest.raises(CallbackError) as stopped:
        fit(tiny_config(small_npz, 3), out, device="cpu", callbacks=[recorder, stop_at(2)])
    message = str(stopped.value)
    assert "\n" not in message  # one line, even from a multi-line exception
    assert message.startswith("callback stop_at.<locals>.stopper stopped training after epoch 2: "
                              "ValueError: enough at 2; ")
    assert message.endswith(f"{out} keeps its checkpoint of epoch 2; continue with: vaekit train --resume {out}")
    assert stopped.value.exit_code == 6
    assert load_checkpoint(out)[1]["epoch"] == 2 and len(read_metrics(out)) == 2  # what was committed stays
    assert (recorder.seen, recorder.resumed_at, recorder.closed) == ([1, 2], [], 1)

    resume(out, device="cpu", callbacks=[recorder])
    assert (recorder.seen, recorder.resumed_at, recorder.closed) == ([1, 2, 3], [2], 2)
    assert as_rows(recorder.rows) == as_rows(read_metrics(out))
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # callbacks leave training bitwise
    assert as_rows(read_metrics(reference)) == as_rows(read_metrics(out))


def test_a_callback_that_fails_to_close_is_reported_and_never_hides_the_error_that_stopped_training(small_npz,
                                                                                                  tmp_path):
    class BadClose:
        def __call__(self, epoch):
            pass

        def close(self):
            raise OSError("disk gone")

    with pytest.raises(CallbackError, match=r"^callback .*BadClose failed to close: OSError: disk gone$"):
        fit(tiny_config(small_npz, 1), tmp_path / "a", device="cpu", callbacks=[BadClose()])
    with pytest.raises(CallbackError, match="stopper stopped training after epoch 1: ValueError"):
        fit(tiny_config(small_npz, 1), tmp_path / "b", device="cpu", callbacks=[stop_at(1), BadClose()])


def test_a_keyboard_interrupt_in_a_callback_is_a_clean_interrupt(small_npz, tmp_path):
    def interrupt(epoch):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="keeps its 1 finished epoch"):
        fit(tiny_config(small_npz, 2), tmp_path / "run", device="cpu", callbacks=[interrupt])
    assert load_checkpoint(tmp_path / "run")[1]["epoch"] == 1


def cli_train(*args) -> int:
    """`vaekit train --tensorboard`: a tiny run into --out, or a --resume."""
    model = [] if "--resume" in args else ["--hidden", "32", "--latent", "4", "--batch-size", "64"]
    return main(["train", *model, "--tensorboard", *map(str, args)])


def events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_logs_every_epoch_once_matching_metrics_and_pngs_across_resumes(small_npz, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli_train("--data", small_npz, "--epochs", 2, "--out", out) == 0
    # a gap, as a kill between epoch 3's checkpoint and its logging leaves: epoch 3 trained without --tensorboard
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    assert cli_train("--resume", out, "--epochs", 4) == 0  # logs epoch 3 again, then 4, purging the duplicate
    capsys.readouterr()
    metrics = read_metrics(out)
    accumulator = events(out)
    tags = accumulator.Tags()
    assert sorted(tags["images"]) == ["reconstruction", "samples"]
    assert sorted(tags["scalars"]) == sorted([
        "loss/train", "loss/test", "test/rate", "test/distortion", "test/active_units", "train/learning_rate",
        "train/seconds", "kl_per_dim/0", "kl_per_dim/1", "kl_per_dim/2", "kl_per_dim/3"])
    recorded = {"loss/train": "train_loss", "loss/test": "test_loss", "test/rate": "test_kl",
                "test/distortion": "test_reconstruction", "test/active_units": "active_units",
                "train/seconds": "seconds"}
    for tag, key in recorded.items():
        points = accumulator.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3, 4], tag  # each epoch once: no gap, no duplicate
        assert [p.value for p in points] == [np.float32(row[key]) for row in metrics], tag
    for d in range(4):
        assert [p.value for p in accumulator.Scalars(f"kl_per_dim/{d}")] == [
            np.float32(row["kl_per_dim"][d]) for row in metrics]
    # each epoch's last step, on the schedule of the session that trained it (--epochs 2, then 3, then 4)
    config = read_config(out).train
    assert [p.value for p in accumulator.Scalars("train/learning_rate")] == [
        np.float32(learning_rate(config, 5 * epoch - 1, 5 * total))
        for epoch, total in ((1, 2), (2, 2), (3, 3), (4, 4))]
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"] - 50  # it learned: the curve is a real one
    for tag, png in (("samples", "samples_{}.png"), ("reconstruction", "reconstruction_{}.png")):
        logged = accumulator.Images(tag)
        assert [image.step for image in logged] == [1, 2, 3, 4]
        for image in logged:
            written = np.asarray(Image.open(out / png.format(image.step)))
            shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
            assert np.array_equal(shown, written), (tag, image.step)


def test_tensorboard_without_the_package_is_one_line_naming_pip_and_makes_no_run(small_npz, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    out = tmp_path / "run"
    assert cli_train("--data", small_npz, "--epochs", 1, "--out", out) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "pip install tensorboard" in err, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        TensorBoardCallback()


def test_a_tensorboard_that_cannot_write_stops_a_resume_in_one_line_keeping_the_run(small_npz, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--hidden", "32", "--latent", "4", "--epochs", "1",
                 "--out", str(out)]) == 0
    (out / "tensorboard").write_text("not a directory")
    capsys.readouterr()
    assert cli_train("--resume", out, "--epochs", 2) == 6
    err = capsys.readouterr().err
    assert is_one_error_line(err), err
    assert "callback TensorBoardCallback stopped training after epoch 1: " in err
    assert f"{out} keeps its checkpoint of epoch 1; continue with: vaekit train --resume {out}" in err
    assert load_checkpoint(out)[1]["epoch"] == 1


def test_epoch_scalars_name_every_dimension_in_order():
    from vaekit.callbacks import read_only

    row = {"train_loss": 1.0, "test_loss": 2.0, "test_kl": 0.5, "test_reconstruction": 1.5, "active_units": 3,
           "kl_per_dim": [0.1 * d for d in range(12)], "seconds": 0.25}
    state = type("State", (), {"metrics": read_only(row), "learning_rate": 1e-3})()
    scalars = epoch_scalars(state)
    assert [t for t in scalars if t.startswith("kl_per_dim/")] == [f"kl_per_dim/{d:02d}" for d in range(12)]
    assert scalars["kl_per_dim/11"] == pytest.approx(1.1) and scalars["test/rate"] == 0.5
    assert scalars["train/learning_rate"] == 1e-3 and len(scalars) == 7 + 12
    assert json.dumps(dict(read_only(row))) == json.dumps(row)  # read-only rows hold the same values


def test_epoch_scalars_of_a_prior_without_per_dimension_kl_and_of_a_hierarchy():
    def state(row):
        return type("State", (), {"metrics": row, "learning_rate": 1e-3})()

    row = {"epoch": 1, "train_loss": 100.0, "test_loss": 99.0, "test_kl": 20.0, "test_reconstruction": 79.0,
           "active_units": 3, "seconds": 1.5, "kl_per_dim": None}  # a VampPrior's row
    scalars = epoch_scalars(state(row))
    assert scalars["loss/test"] == 99.0 and not any(tag.startswith("kl_per_dim/") for tag in scalars)
    layered = {**row, "kl_per_dim": [1.0, 2.0, 3.0], "kl_per_layer": {"z1": 1.0, "z2": 5.0}}
    scalars = epoch_scalars(state(layered))
    assert scalars["kl_per_layer/z2"] == 5.0 and scalars["kl_per_dim/2"] == 3.0
