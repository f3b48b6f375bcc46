"""The model-family contract: a family written outside vaekit (docs/examples/isotropic_family.py) plugs in through
the registry and runs through training, resume, evaluation and the latent commands; the registries are what config
validation consults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_run, resume
from vaekit.callbacks import CallbackError
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.evaluate import importance_weighted_nll
from vaekit.models import DiagonalGaussian, build_model
from vaekit.registry import FAMILIES, LIKELIHOODS, PRIORS, FamilySpec

from .conftest import DATA_DIR
from .tiny_run import is_one_error_line, mnist_npz

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
SPEC = FamilySpec("isotropic", "isotropic_family:IsotropicVAE", "one posterior variance per image",
                  priors=("normal",), architectures=("mlp",), pixel_context=False)


@pytest.fixture
def isotropic(monkeypatch):
    """The worked family of docs/write-your-own-family.md, registered for one test."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(FAMILIES, "_specs", dict(FAMILIES._specs))
    FAMILIES.register(SPEC)
    return SPEC


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    return mnist_npz(tmp_path_factory.mktemp("data") / "small.npz", 400)


def config_of(data: Path, epochs: int = 2) -> RunConfig:
    return RunConfig(DataConfig(str(data)), ModelConfig(family="isotropic", hidden_dims=(64,), latent_dim=6),
                     TrainConfig(epochs=epochs, batch_size=64))


def stop_after_first(epoch) -> None:
    raise ValueError("stop")


def weights(run) -> dict[str, torch.Tensor]:
    return run.model.state_dict()


def test_a_family_from_outside_trains_resumes_bitwise_and_serves_the_commands(isotropic, small_npz, tmp_path, capsys):
    whole = fit(config_of(small_npz), tmp_path / "whole", device="cpu")
    with pytest.raises(CallbackError):  # stopped after its first epoch
        fit(config_of(small_npz), tmp_path / "stopped", device="cpu", callbacks=[stop_after_first])
    resumed = resume(tmp_path / "stopped", device="cpu")
    assert all(torch.equal(weights(whole)[k], t) for k, t in weights(resumed).items())
    assert whole.metrics[-1]["test_loss"] < whole.metrics[0]["test_loss"]  # it learns

    run = load_run(tmp_path / "whole")
    assert type(run.model).__name__ == "IsotropicVAE" and run.config.model.family == "isotropic"
    posterior = run.model.encode(run.inputs(run.held_out(DATA_DIR))[:5])
    assert torch.equal(posterior.logvar, posterior.logvar[:, :1].expand(-1, 6))  # one variance per image
    x = run.inputs(run.held_out(DATA_DIR))[:20]
    nll = importance_weighted_nll(run.model, x, 50, seed=0)
    elbo = run.model.elbo(x, torch.randn(20, 6, generator=torch.Generator().manual_seed(0))).loss.double()
    assert nll.mean() < elbo.mean() and torch.isfinite(nll).all()  # the IWAE bound is the tighter

    out = tmp_path / "out"
    out.mkdir()
    for argv in (["eval", str(run.path), "--iw-samples", "20", "--images", "30"],
                 ["sample", str(run.path), "-n", "4", "-o", str(out / "s.png")],
                 ["traverse", str(run.path), "--rows", "2", "--steps", "3", "-o", str(out / "t.png")],
                 ["embed", str(run.path), f"{small_npz}", "-o", str(out / "e.npz")],
                 ["score", str(run.path), f"{small_npz}"]):
        assert main(argv) == 0, argv
    assert np.load(out / "e.npz")["mu"].shape == (400, 6)
    capsys.readouterr()
    assert main(["compress", str(run.path), str(small_npz), "-o", str(out / "c.vkbb")]) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "not available for the isotropic family" in err


def test_a_run_of_an_unregistered_family_is_refused_in_one_line(isotropic, small_npz, tmp_path, capsys, monkeypatch):
    fit(config_of(small_npz, epochs=1), tmp_path / "run", device="cpu")
    monkeypatch.setattr(FAMILIES, "_specs", {k: v for k, v in FAMILIES._specs.items() if k != "isotropic"})
    assert main(["sample", str(tmp_path / "run"), "-n", "2", "-o", str(tmp_path / "s.png")]) == 4
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "model.family must be one of vae, hvae, got 'isotropic'" in err


def test_config_validation_consults_the_registries(isotropic):
    with pytest.raises(ConfigError, match="the isotropic family takes model.prior normal, not vamp"):
        ModelConfig(family="isotropic", prior="vamp")
    with pytest.raises(ConfigError, match="the isotropic family takes model.architecture mlp, not conv"):
        ModelConfig(family="isotropic", architecture="conv")
    with pytest.raises(ConfigError, match="has one latent layer"):
        ModelConfig(latent_layers=(4, 4), latent_dim=8)
    with pytest.raises(ConfigError, match="needs at least two latent layers"):
        ModelConfig(family="hvae", latent_dim=8)
    with pytest.raises(ConfigError, match="sum of model.latent_layers"):
        ModelConfig(family="hvae", latent_layers=(4, 8), latent_dim=10)
    assert set(LIKELIHOODS.names()) == {"bernoulli", "continuous-bernoulli", "gaussian", "gaussian-shared",
                                        "discretized-logistic", "discretized-logistic-mixture"}
    assert set(PRIORS.names()) == {"normal", "vamp"}


def test_gaussian_kl_between_two_posteriors_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g) * 0.5)
    p = DiagonalGaussian(torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g) * 0.5)
    z = q.sample(g, n=200_000)
    estimate = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(q.kl(p), estimate, atol=0.02, rtol=0.01)
    zero = DiagonalGaussian(torch.zeros(3, 5), torch.zeros(3, 5))
    torch.testing.assert_close(q.kl(zero), q.kl())  # against N(0, I) it is the closed form vaekit always had
    assert torch.allclose(q.kl(q), torch.zeros(3), atol=1e-6)


def test_build_model_follows_the_family_and_a_model_of_another_config_is_refused(small_npz, tmp_path):
    from vaekit.models import VAE

    assert type(build_model(ModelConfig())) is VAE
    config = RunConfig(DataConfig(str(small_npz)), ModelConfig(hidden_dims=(16,), latent_dim=3),
                       TrainConfig(epochs=1, batch_size=64))
    other = VAE(ModelConfig(hidden_dims=(16,), latent_dim=4))
    with pytest.raises(ConfigError, match="the model given is not this run's: its model.latent_dim is 4"):
        load_run(fit(config, tmp_path / "r", device="cpu").path, model=other)
    assert math.isfinite(load_run(tmp_path / "r").metrics[-1]["test_loss"])


def test_a_family_without_a_method_a_command_needs_is_refused_in_one_line(isotropic, small_npz, tmp_path, capsys,
                                                                          monkeypatch):
    from isotropic_family import IsotropicVAE

    from vaekit.models import LatentVariableModel

    fit(config_of(small_npz, epochs=1), tmp_path / "run", device="cpu")
    monkeypatch.setattr(IsotropicVAE, "log_weights", LatentVariableModel.log_weights)  # as if never written
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--images", "20"]) == 0  # the ELBO needs no importance weights
    assert main(["eval", str(tmp_path / "run"), "--images", "20", "--iw-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err)
    assert ("the isotropic family cannot estimate the importance-sampled NLL: it does not implement log_weights"
            in err)


def test_networks_that_draw_from_the_global_generator_resume_bitwise(small_npz, tmp_path):
    """Dropout in a user's networks draws from torch's global generator, which each epoch seeds from (seed, epoch)."""
    from vaekit.models import VAE
    from vaekit.models.mlp import Decoder

    class DropoutEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                                           torch.nn.Dropout(0.3), torch.nn.Linear(32, 6))

        def forward(self, x):
            return self.net(x).chunk(2, dim=-1)

    def model():
        torch.manual_seed(0)
        return VAE(ModelConfig(latent_dim=3), encoder=DropoutEncoder(), decoder=Decoder(3, (32,), 784, (1, 28, 28)))

    config = RunConfig(DataConfig(str(small_npz)), model().config, TrainConfig(epochs=2, batch_size=64))
    whole = fit(config, tmp_path / "whole", device="cpu", model=model())
    torch.manual_seed(123)  # the caller's own use of the global generator changes nothing
    with pytest.raises(CallbackError):
        fit(config, tmp_path / "stopped", device="cpu", model=model(), callbacks=[stop_after_first])
    torch.rand(5)
    resumed = resume(tmp_path / "stopped", device="cpu", model=model())
    assert all(torch.equal(weights(whole)[k], t) for k, t in weights(resumed).items())
