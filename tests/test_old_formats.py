"""What earlier vaekit versions wrote keeps working: a run of format 5 and a compressed file, both written by the
vaekit before the open core (commit 36bdf57, tests/data/format5), load, evaluate to the numbers that vaekit gave,
resume, and decompress byte for byte (the model fingerprint of a format-5 model is unchanged)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit import load_run
from vaekit.cli import main
from vaekit.cli.args import model_inputs

OLD = Path(__file__).resolve().parent / "data" / "format5"
# `vaekit eval run --json --iw-samples 50 --precision fp32` by the vaekit of commit 36bdf57
EXPECTED = {"test_loss": 540.0133239746094, "reconstruction": 539.6738800048828, "kl": 0.3394424468278885,
            "active_units": 1, "kl_per_dim": [0.28277460038661956, 0.056667844951152804], "nll": 537.2051643699612}


@pytest.fixture
def old(tmp_path, monkeypatch):
    copy = shutil.copytree(OLD, tmp_path / "format5")
    monkeypatch.chdir(copy)  # the run names its data relative to where it was trained
    return copy


def test_a_format_5_run_loads_and_evaluates_as_before(old, capsys):
    run = load_run(old / "run")
    assert run.config.model.family == "vae" and run.config.model.latent_layers == ()
    assert main(["eval", "run", "--json", "--iw-samples", "50", "--precision", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value, rel=1e-6), key


def test_a_format_5_compressed_file_decompresses(old, capsys):
    assert main(["decompress", "run", "ten.vkbb", "-o", "back.npy"]) == 0
    assert np.array_equal(np.load(old / "back.npy"), np.load(old / "ten.npy"))


def test_a_format_5_run_resumes(old):
    assert json.loads((old / "run" / "config.json").read_text())["format_version"] == 5
    assert main(["train", "--resume", "run", "--epochs", "3"]) == 0
    run = load_run(old / "run")
    assert [m["epoch"] for m in run.metrics] == [1, 2, 3] and run.config.train.epochs == 3
    assert run.config.train.warmup_min_steps == 20  # format 5 had the floor; it is kept, not reset


def test_a_format_5_run_prepares_new_images_as_before(old, capsys):
    """Before format 8 a run resized only images of its own aspect ratio and knew no background: so it still does,
    and --invert auto inverts nothing (a folder of differing sizes of its aspect ratio is now read, where it failed)."""
    run = load_run(old / "run")
    assert (run.config.data.resize, run.config.data.background) == ("aspect", None)
    np.save(old / "wide.npy", np.zeros((2, 28, 40), np.uint8))
    assert main(["score", "run", "wide.npy"]) == 3
    assert "resizing would distort them (different aspect ratio)" in capsys.readouterr().err
    (old / "pages").mkdir()
    Image.new("L", (56, 56), 255).save(old / "pages" / "white.png")  # a white page: no background to judge it by
    Image.new("L", (28, 28), 0).save(old / "pages" / "black.png")
    assert main(["embed", "run", "pages", "-o", "codes.npz"]) == 0
    assert "invert" not in capsys.readouterr().err
    x, names, _ = model_inputs(run, "pages", None, invert="auto")
    assert names == ["black.png", "white.png"] and x[0].max() == 0 and x[1].min() == 1  # as given
