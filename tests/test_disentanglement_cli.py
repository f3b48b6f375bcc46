"""`vaekit disentanglement` end to end on a tiny run trained on generated dSprites."""

import json

import numpy as np
import pytest

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit
from vaekit.cli import main
from vaekit.data import dsprites


@pytest.fixture(scope="module")
def dsprites_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dsprites")
    numbers = np.random.default_rng(0).choice(dsprites.COUNT, 512, replace=False)
    np.save(directory / "dsprites.npy", dsprites.render(dsprites.indices_of(numbers)) * np.uint8(255))
    config = RunConfig(data=DataConfig(name=str(directory / "dsprites.npy")),
                       model=ModelConfig(input_shape=(1, 64, 64), hidden_dims=(32,), latent_dim=4),
                       train=TrainConfig(epochs=1, batch_size=64))
    return fit(config, directory / "run", device="cpu").path


def scores(run, capsys, *extra):
    assert main(["disentanglement", str(run), "--json", "--samples", "200", "--threads", "1", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_scores_of_a_trained_run_are_in_range_and_repeat_for_a_seed(dsprites_run, capsys):
    first = scores(dsprites_run, capsys)
    assert first["factors"] == ["shape", "scale", "orientation", "x", "y"]
    assert first["protocol"]["mig_samples"] == 200 and first["protocol"]["dci_test"] == 100
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae_score"):
        assert 0.0 <= first[key] <= 1.0, key
    assert np.array(first["mutual_information"]).shape == (4, 5)
    assert np.array(first["dci_importance"]).shape == (4, 5)
    # Four codes for five factors: the majority-vote classifier names at most four, so at most 4/5 of the votes.
    assert first["factor_vae_score"] <= 0.8 + 1e-9
    # Position is what a one-epoch MLP learns first: some code holds information about x and y.
    assert max(first["mig_per_factor"][3:]) > 0.0
    assert scores(dsprites_run, capsys) == first
    assert scores(dsprites_run, capsys, "--seed", "1")["mig"] != first["mig"]


def test_the_table_names_the_three_scores(dsprites_run, capsys):
    assert main(["disentanglement", str(dsprites_run), "--samples", "100", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "MIG" in out and "DCI (lasso)" in out and "FactorVAE score" in out


def test_too_few_samples_is_a_config_error(dsprites_run, capsys):
    assert main(["disentanglement", str(dsprites_run), "--samples", "1"]) == 2
    assert "--samples" in capsys.readouterr().err
