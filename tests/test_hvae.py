"""The hierarchical VAE family (vaekit.models.hvae): its contract, its numbers, and every command on a tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_split, resume
from vaekit.cli import main
from vaekit.errors import ConfigError, TrainingError
from vaekit.evaluate import importance_weighted_nll
from vaekit.generate import traverse
from vaekit.models import build_model
from vaekit.models.hvae import HVAE, LOGVAR_MAX, LOGVAR_MIN, PRIOR_LOGVAR_MIN, HVAEOutput
from vaekit.models.posterior import DiagonalGaussian
from vaekit.runs import load_run

from .conftest import DATA_DIR
from .tiny_run import is_one_error_line, mnist_npz

CONFIG = ModelConfig(family="hvae", hidden_dims=(48, 32), latent_dim=6, latent_layers=(2, 4))
IMAGES = 300


def model(config: ModelConfig = CONFIG, seed: int = 0) -> HVAE:
    torch.manual_seed(seed)
    return build_model(config)


def images(n: int = 8) -> torch.Tensor:
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def mnist_images(n: int) -> torch.Tensor:
    return load_split("mnist", "test", DATA_DIR).images[:n].float() / 255


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    return mnist_npz(tmp_path_factory.mktemp("data") / "small.npz", IMAGES)


def tiny_config(small_npz, epochs: int) -> RunConfig:
    return RunConfig(DataConfig(name=str(small_npz)), CONFIG, TrainConfig(epochs=epochs, batch_size=64))


@pytest.fixture(scope="module")
def trained(small_npz, tmp_path_factory):
    """A tiny hvae run: two layers (2 + 4 latents), 2 epochs on 300 MNIST images."""
    return fit(tiny_config(small_npz, 2), tmp_path_factory.mktemp("runs") / "hvae", device="cpu").path


def test_shapes_and_layers():
    m, x = model(), images()
    assert m.layers == (("z1", slice(0, 2)), ("z2", slice(2, 6)))
    out = m(x, torch.randn(8, 6))
    assert isinstance(out, HVAEOutput) and out.recon_params.shape == (8, 1, 28, 28)
    assert all(t.shape == (8, 6) for t in out[1:])
    assert not out.prior_mu[:, :2].any() and not out.prior_logvar[:, :2].any()  # the top's prior is N(0, I)
    many = m(x, torch.randn(5, 8, 6))
    assert many.recon_params.shape == (5, 8, 1, 28, 28) and all(t.shape == (5, 8, 6) for t in many[1:])
    assert m.log_weights(x, m.iw_context(x), torch.randn(5, 8, 6)).shape == (5, 8)
    assert m.encode(x).mu.shape == (8, 6) and m.decode(torch.randn(3, 4, 6)).shape == (3, 4, 1, 28, 28)
    usage = m.usage(x)
    assert usage.means.shape == usage.kl_per_dim.shape == (8, 6)
    # other image shapes are honoured (flattened C*H*W), and a Gaussian likelihood gets its 2 channels
    rgb = model(ModelConfig(family="hvae", input_shape=(3, 8, 8), hidden_dims=(16,), latent_dim=5,
                            latent_layers=(2, 3), likelihood="gaussian"))
    assert rgb(torch.rand(4, 3, 8, 8), torch.randn(4, 5)).recon_params.shape == (4, 6, 8, 8)
    with pytest.raises(ConfigError, match="two or more latent layers"):
        HVAE(ModelConfig(hidden_dims=(16,), latent_dim=4))


def test_the_layer_kl_in_closed_form_matches_a_monte_carlo_estimate():
    m = model()
    with torch.no_grad():
        # make the lower layer's prior and posterior differ clearly from each other and from N(0, 1)
        for p in m.parameters():
            p.mul_(3)
        out = m(images(2), torch.randn(2, 6, generator=torch.Generator().manual_seed(2)))
    q = DiagonalGaussian(out.posterior_mu[0, 2:], out.posterior_logvar[0, 2:])
    p = DiagonalGaussian(out.prior_mu[0, 2:], out.prior_logvar[0, 2:])
    z = q.rsample(torch.randn(200_000, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    q64 = DiagonalGaussian(q.mu.double(), q.logvar.double())
    p64 = DiagonalGaussian(p.mu.double(), p.logvar.double())
    monte_carlo = (q64.log_prob(z) - p64.log_prob(z)).mean().item()
    closed = q.kl(p).item()
    assert closed > 1.0  # a real KL, not ~0
    assert monte_carlo == pytest.approx(closed, rel=0.02)


def test_log_variances_stay_in_their_bounds_however_large_the_weights():
    m = model()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(50)
        out = m(images(), torch.randn(8, 6, generator=torch.Generator().manual_seed(9)))
    for logvar, low in ((out.posterior_logvar, LOGVAR_MIN), (out.prior_logvar[:, 2:], PRIOR_LOGVAR_MIN)):
        assert torch.isfinite(logvar).all() and logvar.min() >= low and logvar.max() <= LOGVAR_MAX + 0.01  # soft
        assert logvar.min() < low + 0.5 or logvar.max() > LOGVAR_MAX - 0.5  # the weights did push them to a bound
    assert torch.isfinite(m.objective(images(), out, torch.randn(8, 6)))


def test_objective_elbo_free_bits_and_kl_weight():
    m, x, eps = model(), images(), torch.randn(8, 6, generator=torch.Generator().manual_seed(4))
    out = m(x, eps)
    terms = m.elbo(x, eps)
    assert terms.loss.shape == (8,)
    assert m.objective(x, out, eps).item() == pytest.approx(terms.loss.sum().item(), rel=1e-5)
    kl = out.posterior.kl_per_dim(out.prior)
    assert terms.kl.sum().item() == pytest.approx(kl.sum().item(), rel=1e-5)
    # kl_weight scales the whole KL; free bits floor each dimension's batch-mean KL
    half = m.objective(x, out, eps, kl_weight=0.5).item()
    assert half == pytest.approx((terms.reconstruction.sum() + 0.5 * terms.kl.sum()).item(), rel=1e-5)
    floor = kl.mean(0).max().item() + 1.0
    floored = m.objective(x, out, eps, free_bits=floor).item()
    assert floored == pytest.approx(terms.reconstruction.sum().item() + floor * 6 * 8, rel=1e-5)


def test_the_iwae_bound_is_tighter_than_the_elbo_and_the_nll_estimate_falls_with_k(trained):
    m, x = load_run(trained).model, mnist_images(64).round()
    with torch.no_grad():
        eps = torch.randn(1, 64, 6, generator=torch.Generator().manual_seed(5))
        one = m.objective(x, m(x, eps), eps).item()  # one sample: the ELBO with a sampled KL, from log_weights
        assert one == pytest.approx(-m.log_weights(x, m.iw_context(x), eps).sum().item(), rel=1e-5)
        elbos = torch.stack([m.elbo(x, torch.randn(64, 6, generator=torch.Generator().manual_seed(s))).loss
                             for s in range(20)]).mean().item()
        eps = torch.randn(20, 64, 6, generator=torch.Generator().manual_seed(6))
        iwae = m.objective(x, m(x, eps), eps).item() / 64
    assert iwae < elbos - 0.1  # -bound: lower is tighter
    nll = [importance_weighted_nll(m, x, k, seed=0).mean().item() for k in (1, 10, 100)]
    assert nll[0] > nll[1] > nll[2]
    assert nll[0] - nll[2] > 0.5


def test_sample_prior_repeats_for_the_same_generator_and_draws_lower_layers_from_their_priors():
    m = model()
    a = m.sample_prior(5, torch.Generator().manual_seed(7))
    b = m.sample_prior(5, torch.Generator().manual_seed(7))
    c = m.sample_prior(5, torch.Generator().manual_seed(8))
    assert a.shape == (5, 6) and torch.equal(a, b) and not torch.equal(a, c)
    eps = torch.randn(5, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[:, :2], eps[:, :2])  # the top from N(0, I)
    with torch.no_grad():
        prior = m._prior(1, m.top_in(a[:, :2]))
    assert torch.allclose(a[:, 2:], prior.mu + prior.std * eps[:, 2:])


def test_every_layer_reaches_the_picture(trained):
    m = load_run(trained).model
    x = mnist_images(1)[0]
    rows = traverse(m, x, dims=[0, 5], steps=5, span=3.0)  # a top dim, then a bottom one
    assert rows.shape == (10, 1, 28, 28)
    for row in (rows[:5], rows[5:]):
        assert (row[0] - row[-1]).abs().max() > 1e-3
    with torch.no_grad():
        z = m.encode(x[None]).mode()
        assert torch.equal(m.decode(z), m.decode(z))  # a flat latent decodes deterministically


def test_bitwise_resume(small_npz, tmp_path):
    reference = fit(tiny_config(small_npz, 2), tmp_path / "reference", device="cpu").path

    def stop_after_one(state):
        if state.epoch == 1:
            raise RuntimeError("stop")

    with pytest.raises(TrainingError, match="stopped training after epoch 1"):
        fit(tiny_config(small_npz, 2), tmp_path / "stopped", device="cpu", callbacks=[stop_after_one])
    resumed = resume(tmp_path / "stopped", device="cpu").path
    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_on_a_hvae_run(trained, small_npz, tmp_path, capsys):
    data = ["--data-dir", DATA_DIR]
    code, out, err = run_cli(capsys, "eval", trained, "--iw-samples", 10, "--json", *data)
    assert code == 0, err
    result = json.loads(out)
    assert set(result["kl_per_layer"]) == {"z1", "z2"} and len(result["kl_per_dim"]) == 6
    # along the posterior-mean path (what usage() reads), so close to the sampled ELBO's KL but not equal
    assert sum(result["kl_per_layer"].values()) == pytest.approx(sum(result["kl_per_dim"]), rel=1e-5)
    assert sum(result["kl_per_layer"].values()) == pytest.approx(result["kl"], rel=0.2)
    assert result["nll"] < result["test_loss"]
    pictures = {"sample": ["-n", 4], "reconstruct": ["-n", 4, *data], "interpolate": ["--from", 0, "--to", 1, *data],
                "traverse": ["--rows", 3, *data], "manifold": ["--side", 5, *data]}
    for command, extra in pictures.items():
        png = tmp_path / f"{command}.png"
        code, _, err = run_cli(capsys, command, trained, "-o", png, *extra)
        assert code == 0, err
        assert Image.open(png).size[0] > 28
    # embed gives the top layer by default, any layer on request; traverse keeps to a layer when asked
    for layer, dims in ((None, 2), ("z2", 4), ("all", 6)):
        code, _, err = run_cli(capsys, "embed", trained, small_npz, "-o", tmp_path / "e.npz",
                               *(["--layer", layer] if layer else []))
        assert code == 0, err
        with np.load(tmp_path / "e.npz") as embedded:
            assert embedded["mu"].shape == embedded["logvar"].shape == (IMAGES, dims)
    code, _, err = run_cli(capsys, "embed", trained, small_npz, "-o", tmp_path / "e.npz", "--layer", "z3")
    assert code == 2 and is_one_error_line(err) and "z1, z2" in err
    code, out, err = run_cli(capsys, "traverse", trained, "--layer", "z2", "-o", tmp_path / "t2.png", *data)
    assert code == 0, err
    shown = [int(d) for d in out.split("dimensions ")[1].split(" of layer")[0].split(", ")]
    assert sorted(shown) == [2, 3, 4, 5]
    code, out, err = run_cli(capsys, "probe", trained, "--json", *data)
    assert code == 0, err
    assert 0 <= json.loads(out)["linear"] <= 1
    for method in (["--method", "elbo"], ["--method", "iwae", "--iw-samples", 5]):
        code, _, err = run_cli(capsys, "score", trained, small_npz, *method, "-o", tmp_path / "s.csv")
        assert code == 0, err
        assert len((tmp_path / "s.csv").read_text().splitlines()) == IMAGES + 1
    code, out, err = run_cli(capsys, "calibrate", trained, small_npz)
    assert code == 0, err
    assert math.isfinite(json.loads((trained / "threshold.json").read_text())["threshold"])
    code, _, err = run_cli(capsys, "report", trained, "-o", tmp_path / "r.html", "--iw-samples", 5, *data)
    assert code == 0, err
    assert (tmp_path / "r.html").stat().st_size > 10_000
    code, _, err = run_cli(capsys, "compress", trained, small_npz, "-o", tmp_path / "c.bin")
    assert code == 2 and is_one_error_line(err) and "not available for the hvae family" in err
