"""Latent samplers (vaekit.samplers): EM recovers a known mixture, fits repeat, samples are not grouped, the
files round-trip and doctored ones are refused with one line, and the commands work end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.cli import main
from vaekit.errors import ConfigError, RunError
from vaekit.runs import load_run
from vaekit.samplers.base import SamplerConfig
from vaekit.samplers.gmm import GaussianMixture
from vaekit.samplers.store import fit_sampler, load_sampler, sampler_files, save_sampler, training_latents

from .tiny_run import copy_run, is_one_error_line, make_tiny_run

MEANS = torch.tensor([[-4.0, 0.0], [4.0, 1.0], [0.0, 6.0]])
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
COVS = torch.stack([torch.tensor([[1.0, 0.6], [0.6, 1.0]]), torch.tensor([[0.5, 0.0], [0.0, 2.0]]),
                    torch.tensor([[1.5, -0.4], [-0.4, 0.4]])])


def known_mixture(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    component = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, generator=g)
    scale = torch.linalg.cholesky(COVS)
    return MEANS[component] + (scale[component] @ eps[:, :, None])[:, :, 0], component


def matched(fitted_means: torch.Tensor) -> torch.Tensor:
    """For each true component, the fitted component nearest to it."""
    return torch.cdist(MEANS, fitted_means).argmin(1)


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_em_recovers_a_known_mixture(covariance):
    x, _ = known_mixture(6000)
    gmm = GaussianMixture(SamplerConfig("gmm", components=3, covariance=covariance), 2)
    stats = gmm.fit(x, torch.Generator().manual_seed(0))
    order = matched(gmm.means)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert torch.allclose(gmm.means[order], MEANS, atol=0.1)
    assert torch.allclose(gmm.weights[order], WEIGHTS, atol=0.02)
    scales = gmm.scales[order]
    covs = scales @ scales.transpose(1, 2) if covariance == "full" else torch.diag_embed(scales ** 2)
    expected = COVS if covariance == "full" else torch.diag_embed(COVS.diagonal(dim1=1, dim2=2))
    assert torch.allclose(covs, expected, atol=0.12)
    # the mixture's log-likelihood agrees with torch.distributions'
    all_covs = (gmm.scales @ gmm.scales.transpose(1, 2) if covariance == "full"
                else torch.diag_embed(gmm.scales ** 2))
    truth = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gmm.weights),
                                                  torch.distributions.MultivariateNormal(gmm.means, all_covs))
    assert gmm.log_prob(x[:50]) == pytest.approx(truth.log_prob(x[:50]), abs=1e-4)
    assert stats["converged"] and stats["log_likelihood"] == pytest.approx(gmm.log_prob(x).mean().item(), abs=1e-3)


def test_a_fit_repeats_and_its_samples_come_out_shuffled():
    x, _ = known_mixture(3000)
    fits = [GaussianMixture(SamplerConfig("gmm", components=3), 2) for _ in range(2)]
    for gmm in fits:
        gmm.fit(x, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(fits[0].state_dict().values(), fits[1].state_dict().values()))
    z = fits[0].sample(1000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(z, fits[0].means).argmin(1)
    changes = (nearest[1:] != nearest[:-1]).sum().item()
    assert changes > 400  # grouped by component, there would be 2; independent draws give about 620
    counts = torch.bincount(matched(fits[0].means)[torch.cdist(z, MEANS).argmin(1)], minlength=3) / 1000
    assert counts.sum() == pytest.approx(1.0)
    assert torch.cdist(z, MEANS).argmin(1).bincount(minlength=3).div(1000).sub(WEIGHTS).abs().max() < 0.05


@pytest.mark.parametrize("name", ["flow", "two-stage"])
def test_neural_samplers_learn_a_correlated_gaussian(name):
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    x = torch.randn(4000, 3, generator=g) @ torch.linalg.cholesky(cov).T * 2 + 3
    sampler = fit_class(name)(SamplerConfig(name, epochs=15, hidden=32, layers=4) if name == "flow"
                              else SamplerConfig(name, epochs=40, hidden=32), 3)
    stats = sampler.fit(x, torch.Generator().manual_seed(0))
    z = sampler.sample(4000, torch.Generator().manual_seed(1))
    assert torch.allclose(z.mean(0), x.mean(0), atol=0.25)
    assert all(math.isfinite(v) for v in stats.values())
    if name == "flow":
        assert torch.allclose(torch.cov(z.T), torch.cov(x.T), atol=0.6)
    else:  # a second-stage VAE learns the correlations slowly (gamma shrinks over training), but it learns them
        assert torch.allclose(z.var(0), x.var(0), rtol=0.35)
        assert torch.corrcoef(z.T)[0, 1] > 0.3 and stats["gamma"] < 0.9
        assert stats["negative_elbo"] < 1.5 * (math.log(2 * math.pi) + 1)  # better than independent Gaussians


def fit_class(name):
    from vaekit.samplers import SAMPLERS

    return SAMPLERS.load(name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("samplers"))


@pytest.fixture(scope="module")
def fitted_run(tiny, tmp_path_factory):
    """A copy of the tiny run with every fitted sampler stored (small fits)."""
    path = copy_run(tiny, tmp_path_factory.mktemp("fitted") / "run")
    run = load_run(path)
    latents = training_latents(run)
    for config in (SamplerConfig("gmm", components=3), SamplerConfig("flow", epochs=2, hidden=16, layers=2),
                   SamplerConfig("two-stage", epochs=2, hidden=16)):
        save_sampler(path, fit_sampler(run, config, latents=latents))
    return path


def test_training_latents_are_the_posterior_means_of_the_training_images(tiny):
    run = load_run(tiny)
    latents = training_latents(run)
    assert latents.shape == (270, 4)  # 300 images, 10% held out
    from vaekit.data import load_train_test

    train, _ = load_train_test(run.config.data.name, 0.1, run.config.train.seed)
    assert torch.allclose(latents[:5], run.model.encode(run.inputs(train.subset(slice(0, 5)), True)).mu, atol=1e-6)


@pytest.mark.parametrize("name", ["gmm", "flow", "two-stage"])
def test_samplers_round_trip_through_their_files(fitted_run, name):
    run = load_run(fitted_run)
    loaded = load_sampler(run, name)
    again = load_sampler(run, name)
    a = loaded.sample(50, torch.Generator().manual_seed(3))
    assert a.shape == (50, 4) and torch.isfinite(a).all()
    assert torch.equal(a, again.sample(50, torch.Generator().manual_seed(3)))
    record = json.loads(sampler_files(fitted_run, name)[0].read_text())
    assert record["sampler"]["name"] == name and record["fitted_on"]["latents"] == 270


def test_an_unfitted_sampler_names_the_command_that_fits_it(tiny, tmp_path, capsys):
    code = main(["sample", str(tiny), "--sampler", "flow", "-o", str(tmp_path / "s.png"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 4 and is_one_error_line(err)
    assert f"vaekit fit-sampler {tiny} --sampler flow" in err


def doctor_json(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("damage,message", [
    (lambda r: r["sampler"].update(components="10"), "components"),
    (lambda r: r["sampler"].update(components=10**6), "components"),
    (lambda r: r.update(format_version=99), "format_version"),
    (lambda r: r.update(latent_dim=5), "latent_dim"),
    (lambda r: r.update(model_fingerprint="0" * 64), "other weights"),
    (lambda r: r.update(fit_id="abc123"), "another fit"),
    (lambda r: r["sampler"].update(epochs=3), "no field"),
    (lambda r: r.update(extra=1), "fields"),
])
def test_a_doctored_record_is_refused(fitted_run, tmp_path, damage, message):
    path = copy_run(fitted_run, tmp_path / "run")
    doctor_json(sampler_files(path, "gmm")[0], damage)
    with pytest.raises(RunError, match=message) as e:
        load_sampler(load_run(path), "gmm")
    assert "fit-sampler" in str(e.value)


@pytest.mark.parametrize("damage,message", [
    (lambda s: s.update(weights=torch.tensor([0.5, 0.5, 0.5])), "sum to 1"),
    (lambda s: s.update(means=s["means"] * float("nan")), "non-finite"),
    (lambda s: s.update(means=s["means"][:2]), "means"),
    (lambda s: s.update(scales=(s["scales"].transpose(1, 2) + torch.eye(4)).contiguous()), "lower-triangular"),
    (lambda s: s.update(scales=-s["scales"]), "positive"),
])
def test_doctored_tensors_are_refused(fitted_run, tmp_path, damage, message):
    path = copy_run(fitted_run, tmp_path / "run")
    tensors = sampler_files(path, "gmm")[1]
    fit_id = json.loads(sampler_files(path, "gmm")[0].read_text())["fit_id"]
    state = load_file(tensors)
    damage(state)
    save_file(state, tensors, metadata={"format_version": "1", "fit_id": fit_id})
    with pytest.raises(RunError, match=message):
        load_sampler(load_run(path), "gmm")


def test_a_truncated_tensor_file_is_one_error_line(fitted_run, tmp_path, capsys):
    path = copy_run(fitted_run, tmp_path / "run")
    tensors = sampler_files(path, "flow")[1]
    tensors.write_bytes(tensors.read_bytes()[:100])
    code = main(["sample", str(path), "--sampler", "flow", "-o", str(tmp_path / "s.png"), "--threads", "1"])
    assert code == 4 and is_one_error_line(capsys.readouterr().err)


def test_sampler_config_is_strict():
    with pytest.raises(ConfigError):
        SamplerConfig("gmm", components=0)
    with pytest.raises(ConfigError):
        SamplerConfig("gmm", covariance="spherical")
    with pytest.raises(ConfigError):
        SamplerConfig.from_dict({"name": "gmm", "hidden": 3})
    assert SamplerConfig("gmm").to_dict() == {"name": "gmm", "components": 10, "covariance": "full",
                                              "iterations": 100, "seed": 0}


def test_fit_sample_and_quality_end_to_end(tiny, tmp_path, capsys):
    path = copy_run(tiny, tmp_path / "run")
    assert main(["fit-sampler", str(path), "--sampler", "gmm", "--components", "3", "--threads", "1"]) == 0
    assert "fitted the gmm sampler" in capsys.readouterr().out
    assert main(["fit-sampler", str(path), "--sampler", "flow", "--components", "3", "--threads", "1"]) == 2
    assert "does not apply" in capsys.readouterr().err
    out = tmp_path / "gmm.png"
    assert main(["sample", str(path), "--sampler", "gmm", "-n", "16", "-o", str(out), "--threads", "1"]) == 0
    assert out.stat().st_size > 0 and "gmm sampler" in capsys.readouterr().out
    assert main(["quality", str(path), "--threads", "1", "-n", "200"]) == 2  # its data is an .npz: which classifier?
    assert "--classifier" in capsys.readouterr().err
    for sampler in ("prior", "gmm"):
        assert main(["quality", str(path), "--sampler", sampler, "--classifier", "mnist", "-n", "200", "--json",
                     "--threads", "1"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["samples"] == 200 and result["references"] == 30 and result["sampler"] == sampler
        assert all(math.isfinite(result[k]) for k in ("fd_classifier", "precision", "recall", "mmd2"))
        assert 0 <= result["precision"] <= 1 and 0.1 <= result["confidence"] <= 1


def test_a_hierarchy_is_fitted_on_its_whole_flat_latent(tmp_path):
    from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit

    from .tiny_run import mnist_npz

    config = RunConfig(DataConfig(name=str(mnist_npz(tmp_path / "small.npz"))),
                       ModelConfig(family="hvae", hidden_dims=(48, 32), latent_dim=6, latent_layers=(2, 4)),
                       TrainConfig(epochs=1, batch_size=64))
    run = load_run(fit(config, tmp_path / "run", device="cpu").path)
    fitted = fit_sampler(run, SamplerConfig("gmm", components=2))
    assert fitted.sampler.means.shape == (2, 6)  # both layers, top first
    save_sampler(run.path, fitted)
    z = load_sampler(run, "gmm").sample(8, torch.Generator().manual_seed(0))
    pictures = run.model.pictures(z)
    assert pictures.shape == (8, 1, 28, 28) and torch.isfinite(pictures).all()


def test_report_shows_the_samplers_samples(fitted_run, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(fitted_run), "--sampler", "flow", "--iw-samples", "2", "-o", str(page),
                 "--threads", "1"]) == 0
    assert "64 samples from the flow sampler" in page.read_text()
    capsys.readouterr()
