"""Interrupted, killed and failing training runs: what survives and how a run continues."""

import json
import math
import random
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import ModelConfig, RunConfig, TrainConfig, Trainer, fit, resume
from vaekit.cli import main
from vaekit.errors import RunError, TrainingError
from vaekit.fit import build_model, restart
from vaekit.runs import CHECKPOINT_FILE, load_checkpoint

from .conftest import DATA_DIR
from .tiny_run import is_one_error_line

SMALL = ["--hidden", "64", "--latent", "8", "--data-dir", str(DATA_DIR)]
SMALL_CONFIG = RunConfig(model=ModelConfig(hidden_dims=(64,), latent_dim=8), train=TrainConfig(epochs=3))


def vaekit(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def weights(run):
    return load_file(run / "model.safetensors")


def metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run of the small model, through the CLI in a subprocess."""
    out = tmp_path_factory.mktemp("ref") / "run"
    process = vaekit("train", "--epochs", 3, "--out", out, *SMALL)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return out


@pytest.mark.parametrize("attempt", [0, 1])
def test_sigkill_at_a_random_moment_then_resume_gives_the_same_weights(reference, tmp_path, attempt):
    out = tmp_path / "run"
    process = vaekit("train", "--epochs", 3, "--out", out, *SMALL)
    while not (out / "config.json").exists():  # the run exists from here on
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    delay = random.Random().uniform(0.0, 6.0)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    print(f"killed after {delay:.2f} s; checkpoint: {(out / CHECKPOINT_FILE).exists()}")
    resumed = vaekit("train", "--resume", out, "--data-dir", DATA_DIR)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, b = weights(reference), weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise
    assert metrics(out) == metrics(reference)
    assert not list(out.glob(".*.tmp"))  # what the kill left half-written is cleared
    assert load_file(out / CHECKPOINT_FILE).keys() == load_file(reference / CHECKPOINT_FILE).keys()


def train_until_first_epoch(out):
    """A long training subprocess, returned once its first epoch is committed."""
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN:
    # give the child the default disposition so that its Ctrl-C handling is what gets tested.
    process = vaekit("train", "--epochs", 50, "--out", out, *SMALL,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (out / "metrics.jsonl").exists():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    return process


def test_sigint_stops_at_once_and_keeps_finished_epochs(tmp_path):
    out = tmp_path / "run"
    process = train_until_first_epoch(out)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    stderr = process.stderr.read().strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("vaekit: interrupted: interrupted during epoch "), stderr
    assert f"continue with: vaekit train --resume {out}" in stderr[0]
    done = load_checkpoint(out)[1]["epoch"]
    assert f"keeps its {done} finished epoch(s)" in stderr[0]
    assert len(metrics(out)) == done >= 1
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"]


def test_ctrl_c_inside_generated_code_still_exits_130(tmp_path):
    """A Ctrl-C that lands in `exec(<string>)` code (a dataclass being built, say) and is handled
    must not turn `python -m vaekit`'s exit into a death by SIGINT (CPython's unhandled-interrupt mark)."""
    (tmp_path / "ctrl_c_in_exec.py").write_text(
        "import vaekit.cli\n"
        "class Parser:\n"
        "    def parse_args(self, argv):\n"
        "        exec('raise KeyboardInterrupt')\n"
        "vaekit.cli.build_parser = Parser\n"
        "raise SystemExit(vaekit.cli.main([]))\n")
    done = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "vaekit: interrupted"


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    process = train_until_first_epoch(out)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert "interrupted during epoch" in process.stderr.read()


def test_resume_of_a_finished_run_and_raising_its_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    fit(RunConfig(model=SMALL_CONFIG.model, train=TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    before = weights(out)
    assert main(["train", "--resume", str(out), "--data-dir", str(DATA_DIR)]) == 0
    assert "has already finished its 1 epochs" in capsys.readouterr().out
    assert all(torch.equal(before[k], t) for k, t in weights(out).items())
    run = resume(out, epochs=2, data_dir=DATA_DIR)
    assert [row["epoch"] for row in run.metrics] == [1, 2]
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    code = main(["train", "--resume", str(out), "--epochs", "1", "--data-dir", str(DATA_DIR)])
    assert code == 2 and "--epochs 1 is fewer than the 2 epochs" in capsys.readouterr().err


def test_resume_refuses_config_flags_once_an_epoch_is_finished(tmp_path, capsys):
    out = tmp_path / "run"
    fit(RunConfig(model=SMALL_CONFIG.model, train=TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    config = (out / "config.json").read_bytes()
    assert main(["train", "--resume", str(out), "--lr", "0.1", "--hidden", "5"]) == 2
    err = capsys.readouterr().err
    assert "drop --hidden, --lr (only --epochs, --data-dir, --device, --threads and --tensorboard may be given)" in err
    assert (out / "config.json").read_bytes() == config


def blobs(path, n=300, side=8):
    """n smooth seeded grayscale images: a bright blob on a dark ground, saved as .npy."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side] / side
    centres = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
    images = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 0.02)
    np.save(path, (images * 255).astype(np.uint8))
    return path


def test_a_run_whose_first_epoch_failed_restarts_as_its_error_says(tmp_path, capsys):
    data, out = blobs(tmp_path / "blobs.npy"), tmp_path / "my run"
    code = main(["train", "--data", str(data), "--hidden", "64", "--lr", "9", "--batch-size", "128", "--epochs", "2",
                 "--out", str(out), "--compile", "off"])
    err = capsys.readouterr().err
    assert code == 6 and is_one_error_line(err) and "became non-finite at epoch 1" in err, err
    assert err.startswith("vaekit: warning: each epoch is only 3 optimizer steps")  # the warning before it
    advice = err.strip().splitlines()[-1].split("so it can start again with new settings: ")[1]
    assert advice == f"vaekit train --resume '{out}' --lr 0.001"
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and load_checkpoint(out) is None

    assert main(shlex.split(advice)[1:]) == 0  # exactly what the error said to type
    log = "".join(capsys.readouterr())
    assert "warning: each epoch is only 3 optimizer steps (270 training images at batch 128; 6 in all), too few" in log
    rows = metrics(out)
    assert [row["epoch"] for row in rows] == [1, 2] and all(math.isfinite(row["test_loss"]) for row in rows)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    config = json.loads((out / "config.json").read_text())
    assert (config["train"]["lr"], config["model"]["hidden_dims"], config["model"]["latent_dim"]) == (0.001, [64], 20)
    assert (config["train"]["batch_size"], config["train"]["epochs"]) == (128, 2)  # as recorded
    assert config["model"]["input_shape"] == [1, 8, 8] and config["data"]["name"] == str(data)
    assert main(["train", "--resume", str(out), "--lr", "0.01"]) == 2  # now it has finished epochs
    assert "drop --lr" in capsys.readouterr().err


def test_only_a_run_without_a_finished_epoch_restarts(tmp_path):
    out = tmp_path / "run"
    fit(RunConfig(model=SMALL_CONFIG.model, train=TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    with pytest.raises(RunError, match="has finished epochs; it continues only with its own config"):
        restart(out, RunConfig(), data_dir=DATA_DIR)
    with pytest.raises(RunError, match="is not a run directory"):
        restart(tmp_path / "nothing", RunConfig(), data_dir=DATA_DIR)


def test_a_checkpoint_that_does_not_match_its_config(tmp_path):
    out = tmp_path / "run"
    fit(RunConfig(model=SMALL_CONFIG.model, train=TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    document = json.loads((out / "config.json").read_text())
    document["model"]["hidden_dims"] = [32]
    document["train"]["epochs"] = 2
    (out / "config.json").write_text(json.dumps(document))
    with pytest.raises(RunError, match=r"checkpoint.safetensors: weights do not match the run's config"):
        resume(out, data_dir=DATA_DIR)


def test_a_corrupt_checkpoint(tmp_path):
    out = tmp_path / "run"
    fit(RunConfig(model=SMALL_CONFIG.model, train=TrainConfig(epochs=1)), out, data_dir=DATA_DIR)
    checkpoint = out / CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(RunError, match="checkpoint.safetensors: unreadable"):
        resume(out, epochs=2, data_dir=DATA_DIR)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import vaekit.objectives

    real = vaekit.objectives.training_loss
    calls = {"n": 0}
    steps_per_epoch = 469

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == steps_per_epoch + 5 else loss  # epoch 2, step 5

    monkeypatch.setattr(vaekit.objectives, "training_loss", poisoned)
    out = tmp_path / "run"
    code = main(["train", "--epochs", "3", "--out", str(out), "--compile", "off", *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 6 and len(err) == 1
    assert ("training stopped: the loss became non-finite at epoch 2, step 5 of 469; lower the learning "
            "rate (--lr) or clip gradients (--clip-grad); " + f"{out} keeps its checkpoint of epoch 1") in err[0]
    assert load_checkpoint(out)[1]["epoch"] == 1 and len(metrics(out)) == 1
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_infinite_gradients_are_caught(mnist_train):
    config = RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4), train=TrainConfig(batch_size=100))
    model = build_model(config)
    model.decoder.head.bias.register_hook(lambda grad: grad * float("inf"))
    trainer = Trainer(model, mnist_train.images[:500], config.train, "none")
    with pytest.raises(TrainingError, match=r"the gradients became non-finite at epoch 1, step 1 of 5"):
        trainer.train_epoch()


def test_infinite_gradients_on_the_last_step_are_caught_before_saving(mnist_train):
    config = RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4), train=TrainConfig(batch_size=100))
    model = build_model(config)
    calls = {"n": 0}

    def poison_last(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 5 else grad

    model.decoder.head.bias.register_hook(poison_last)
    trainer = Trainer(model, mnist_train.images[:500], config.train, "none")
    with pytest.raises(TrainingError, match=r"the gradients became non-finite at epoch 1, step 5 of 5"):
        trainer.train_epoch()
    assert trainer.epoch == 0


def test_gradient_clipping_bounds_the_norm(mnist_train):
    config = RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4),
                       train=TrainConfig(batch_size=100, clip_grad=0.5))
    trainer = Trainer(build_model(config), mnist_train.images[:1000], config.train, "none")
    norms = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda: (norms.append(vaekit_grad_norm(trainer.model)), step())[1]
    trainer.train_epoch()
    assert len(norms) == 10 and max(norms) <= 0.5 + 1e-4 and min(norms) > 0.1


def vaekit_grad_norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
