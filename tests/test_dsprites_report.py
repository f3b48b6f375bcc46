"""The report's picture of known factors (dSprites runs only): per-factor traversals and the latent x factor mutual
information, whose numbers are `vaekit disentanglement`'s for the same seed and sample count; `--plot` alone."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import RunConfig, TrainConfig, fit
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig
from vaekit.data import ImageSet, dsprites, dsprites_set
from vaekit.dsprites_scores import factor_picture
from vaekit.runs import load_run

from .tiny_run import make_tiny_run

SUBSET = dsprites.Factors(scale=(2, 5), orientation=(0, 10), x=tuple(range(0, 32, 4)), y=tuple(range(0, 32, 4)))


@pytest.fixture(scope="module")
def dsprites_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dsprites")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dsprites_set, "FACTORS", SUBSET)
        config = RunConfig(data=DataConfig(name="dsprites"),
                           model=ModelConfig(input_shape=(1, 64, 64), hidden_dims=(32,), latent_dim=4),
                           train=TrainConfig(epochs=2, batch_size=64))
        return fit(config, directory / "run", data_dir=directory, device="cpu").path, directory


def factor_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="factor-data">(.*?)</script>', page).group(1))


def test_the_report_draws_the_factors_with_the_disentanglement_numbers(dsprites_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dsprites_set, "FACTORS", SUBSET)
    run, data_dir = dsprites_run
    page = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(page), "--iw-samples", "2", "--samples", "400", "--data-dir",
                 str(data_dir), "--threads", "1"]) == 0
    text = page.read_text()
    assert "Factors of variation (dSprites)" in text and "Per-factor traversals" in text
    data = factor_data(text)
    capsys.readouterr()
    assert main(["disentanglement", str(run), "--json", "--samples", "400", "--threads", "1"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert data["mutual_information"] == scores["mutual_information"]  # the same draws, the same numbers
    assert data["mig_per_factor"] == scores["mig_per_factor"] and data["mig"] == scores["mig"]
    mi = np.array(data["mutual_information"])
    assert mi.shape == (4, 5) and data["latents"] == mi.argmax(axis=0).tolist()
    assert data["factors"] == ["shape", "scale", "orientation", "x", "y"] and data["samples"] == 400


def test_the_traversals_sweep_each_factors_top_latent_over_its_range(dsprites_run):
    run = load_run(dsprites_run[0], device="cpu")
    picture = factor_picture(run, seed=1, samples=300, steps=5)
    images, dims = picture["images"], picture["latents"]
    assert images.shape == (25, 1, 64, 64) and 0.0 <= images.min() and images.max() <= 1.0
    for k, (low, high) in enumerate(picture["ranges"]):
        assert low < high
        row = images[5 * k:5 * k + 5]
        # Decoding the same latents by hand: the base image's mean, the row's dimension swept low to high.
        base = torch.from_numpy(dsprites.render(np.array([[2, 3, 5, 15, 15]])) * np.uint8(255))[:, None]
        z = run.model.encode(run.inputs(ImageSet(base, None, "b"), for_latents=True)).mode().repeat(5, 1)
        z[:, dims[k]] = torch.linspace(low, high, 5)
        assert torch.allclose(row, run.model.pictures(z), atol=1e-6)
        assert not torch.equal(row[0], row[-1])


def test_disentanglement_plot_writes_the_heatmap(dsprites_run, tmp_path, capsys):
    plot = tmp_path / "mi.png"
    assert main(["disentanglement", str(dsprites_run[0]), "--samples", "200", "--threads", "1", "--plot",
                 str(plot)]) == 0
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
    assert main(["disentanglement", str(dsprites_run[0]), "--samples", "200", "--plot", str(tmp_path / "x.jpg")]) == 2


def test_a_run_on_mnist_gets_no_factor_section(tmp_path):
    run = make_tiny_run(tmp_path)
    page = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(page), "--iw-samples", "2", "--threads", "1"]) == 0
    text = page.read_text()
    assert "Factors of variation" not in text and "factor-data" not in text
    assert "Latent space and probes" in text  # the rest of the page is there
