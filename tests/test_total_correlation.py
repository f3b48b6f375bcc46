"""beta-TCVAE (--tc-beta): the MWS estimator against brute force, the objective against the ELBO, training."""

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import ModelConfig, RunConfig, TrainConfig, fit, resume
from vaekit.callbacks import CallbackError
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.likelihoods import Bernoulli
from vaekit.models.posterior import standard_normal_log_prob
from vaekit.objectives import training_loss
from vaekit.runs import read_config
from vaekit.total_correlation import mws_decomposition, tc_training_loss

from .tiny_run import is_one_error_line


def brute_force_log_aggregate(z, mu, logvar):
    """log (1/N) sum_n q(z_i|n) and log prod_d (1/N) sum_n q(z_id|n), one sample and one posterior at a time."""
    joint, marginals = [], []
    for zi in z:
        per_dim = [[torch.distributions.Normal(m[d], torch.exp(0.5 * lv[d])).log_prob(zi[d]).exp().item()
                    for m, lv in zip(mu, logvar)] for d in range(len(zi))]
        joint.append(math.log(np.mean(np.prod(np.array(per_dim), axis=0))))
        marginals.append(sum(math.log(np.mean(row)) for row in per_dim))
    return torch.tensor(joint, dtype=torch.float64), torch.tensor(marginals, dtype=torch.float64)


def test_mws_on_the_whole_set_is_the_exact_aggregate_posterior_offset_by_log_n():
    g = torch.Generator().manual_seed(0)
    n, d = 12, 3
    mu, logvar = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2))
    mu[:, 1] = mu[:, 0] * 2 + 0.1 * mu[:, 1]  # correlated dimensions: a clearly positive TC
    logvar = 0.3 * logvar - 3  # narrow posteriors: the aggregate keeps the correlation
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, d, generator=g, dtype=torch.float64)
    joint, marginals = brute_force_log_aggregate(z, mu, logvar)
    terms = mws_decomposition(z, mu, logvar, dataset_size=n)
    exact_tc = joint - marginals
    assert exact_tc.mean() > 0.5
    torch.testing.assert_close(terms.total_correlation, exact_tc + (d - 1) * math.log(n))
    own = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    torch.testing.assert_close(terms.mutual_information, own - joint + math.log(n))
    torch.testing.assert_close(terms.dimension_kl, marginals - standard_normal_log_prob(z) - d * math.log(n))


def test_a_factorized_aggregate_posterior_has_no_total_correlation():
    """Posteriors on a full grid (every combination of per-dimension means, one variance): q(z) is exactly the
    product of its marginals, so the exact TC is 0 at every z and MWS over the whole set reads (D - 1) log N."""
    levels = torch.tensor([-1.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    mu = torch.tensor(list(itertools.product(levels, levels, levels)), dtype=torch.float64)  # (64, 3)
    logvar = torch.full_like(mu, math.log(0.3))
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    n, d = mu.shape
    joint, marginals = brute_force_log_aggregate(z[:5], mu, logvar)
    torch.testing.assert_close(joint, marginals)  # the brute force agrees: no TC
    tc = mws_decomposition(z, mu, logvar, dataset_size=n).total_correlation
    torch.testing.assert_close(tc, torch.full((n,), (d - 1) * math.log(n), dtype=torch.float64))


@pytest.mark.parametrize("block", [1 << 18, 40])  # one block (m = 13); blocks of 5 rows of m = 8, the last one of 3
def test_the_hand_written_backward_matches_autograd_on_the_whole_block_of_pairs(monkeypatch, block):
    monkeypatch.setattr("vaekit.total_correlation.BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(3)
    m, d = (8, 3) if block == 40 else (13, 4)
    mu0 = torch.randn(m, d, generator=g, dtype=torch.float64)
    logvar0 = torch.randn(m, d, generator=g, dtype=torch.float64) - 1
    eps = torch.randn(m, d, generator=g, dtype=torch.float64)
    weights = torch.randn(3, m, generator=g, dtype=torch.float64)  # every term in the loss, with its own weights

    def gradients(plain):
        mu, logvar = mu0.clone().requires_grad_(), logvar0.clone().requires_grad_()
        z = mu + torch.exp(0.5 * logvar) * eps
        loss = sum((w * term).sum() for w, term in zip(weights, mws_decomposition(z, mu, logvar, 1000, plain)))
        return (loss.detach(), *torch.autograd.grad(loss, (mu, logvar)))

    for ours, autograd in zip(gradients(False), gradients(True)):
        torch.testing.assert_close(ours, autograd, rtol=1e-10, atol=1e-10)
    assert gradients(True)[1].abs().max() > 0.1  # the gradients compared are not all ~0
    mu, logvar = mu0[:5, :2].clone().requires_grad_(), logvar0[:5, :2].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: mws_decomposition(a + torch.exp(0.5 * b) * eps[:5, :2], a, b, 50, plain=False), (mu, logvar))


def batch(seed=0, b=16, d=4):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 1, 4, 4, generator=g) > 0.5).float()
    return (x, torch.randn(b, 1, 4, 4, generator=g), torch.randn(b, d, generator=g),
            torch.randn(b, d, generator=g) - 1, torch.randn(b, d, generator=g))


def test_tc_beta_equal_to_beta_is_the_elbo_with_a_sampled_kl():
    x, logits, mu, logvar, eps = batch()
    for beta in (1.0, 4.0):
        out = tc_training_loss(x, logits, mu, logvar, eps, likelihood=Bernoulli(), dataset_size=1000,
                               kl_weight=beta, tc_weight=beta)
        elbo = training_loss(x, logits, mu, logvar, eps, prior_log_prob=standard_normal_log_prob, kl_weight=beta)
        torch.testing.assert_close(out[0], elbo)
    heavier = tc_training_loss(x, logits, mu, logvar, eps, likelihood=Bernoulli(), dataset_size=1000,
                               kl_weight=1.0, tc_weight=6.0)
    torch.testing.assert_close(heavier[0] - out[0] + 3.0 * (out[1] + out[3]), 2.0 * out[2])  # 6 - 4 = 2 more TC
    assert out[2] > 0


def test_the_three_terms_add_up_to_the_sampled_kl():
    _, _, mu, logvar, eps = batch(1, b=32, d=5)
    z = mu + torch.exp(0.5 * logvar) * eps
    terms = mws_decomposition(z, mu, logvar, dataset_size=500)
    own = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    torch.testing.assert_close(sum(terms), own - standard_normal_log_prob(z))


def test_config_refusals_and_old_runs(tmp_path):
    with pytest.raises(ConfigError, match="needs the normal prior"):
        RunConfig(model=ModelConfig(prior="vamp"), train=TrainConfig(tc_beta=6.0))
    with pytest.raises(ConfigError, match="cannot combine with iw_samples > 1"):
        TrainConfig(tc_beta=6.0, iw_samples=5)
    with pytest.raises(ConfigError, match="cannot combine with free_bits"):
        TrainConfig(tc_beta=6.0, free_bits=0.5)
    with pytest.raises(ConfigError, match="tc_beta"):
        TrainConfig(tc_beta=-1.0)
    with pytest.raises(ConfigError, match="use a smaller batch"):
        RunConfig(model=ModelConfig(latent_dim=64), train=TrainConfig(tc_beta=6.0, batch_size=2048))
    document = RunConfig().to_dict()
    del document["train"]["tc_beta"]
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 8, **document}))
    assert read_config(tmp_path).train.tc_beta is None  # a run before format 9 trained on the plain ELBO


def blobs(path, n=300, side=8):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side] / side
    centres = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
    np.save(path, (np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 0.02) * 255).astype(np.uint8))
    return path


def test_a_short_tc_run_logs_its_terms_and_resumes_bit_for_bit(tmp_path):
    data = blobs(tmp_path / "blobs.npy")
    config = RunConfig(model=ModelConfig(input_shape=(1, 8, 8), hidden_dims=(32,), latent_dim=4),
                       train=TrainConfig(epochs=2, batch_size=32, tc_beta=6.0))
    config = RunConfig(data=dataclasses.replace(config.data, name=str(data)), model=config.model, train=config.train)
    whole = fit(config, tmp_path / "whole")
    rows = whole.metrics
    for row in rows:
        mi, tc, dwkl = row["train_mutual_information"], row["train_total_correlation"], row["train_dimension_kl"]
        assert all(map(math.isfinite, (mi, tc, dwkl)))
        # the MWS offsets (module docstring) with N = 270 training images, D = 4
        assert mi >= math.log(270) - 1 and tc >= 3 * math.log(270) - 1 and dwkl <= -4 * math.log(270) + 20
    plain = fit(RunConfig(data=config.data, model=config.model, train=TrainConfig(epochs=2, batch_size=32)),
                tmp_path / "plain")
    assert "train_total_correlation" not in plain.metrics[0]
    assert rows[0]["train_loss"] != plain.metrics[0]["train_loss"]
    with pytest.raises(CallbackError):  # stopped after its first epoch, then continued
        fit(config, tmp_path / "halves", callbacks=[stop_after_the_first_epoch])
    resumed = resume(tmp_path / "halves")
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "halves" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_total_correlation"] for r in resumed.metrics] == [r["train_total_correlation"] for r in rows]


def stop_after_the_first_epoch(epoch):
    if epoch.epoch == 1:
        raise ValueError("stop")


def test_the_cli_takes_tc_beta_and_a_family_without_it_refuses_in_one_line(tmp_path, capsys):
    data = blobs(tmp_path / "blobs.npy", n=100)
    assert main(["train", "--data", str(data), "--epochs", "1", "--tc-beta", "6", "--beta", "1", "--latent", "2",
                 "--hidden", "16", "--threads", "1", "--out", str(tmp_path / "tc")]) == 0
    assert json.loads((tmp_path / "tc" / "config.json").read_text())["train"]["tc_beta"] == 6.0
    capsys.readouterr()
    code = main(["train", "--data", str(data), "--epochs", "1", "--tc-beta", "6", "--family", "hvae",
                 "--threads", "1", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert code == 2 and is_one_error_line(err) and "cannot train with the beta-TCVAE objective" in err, err


def test_torch_compile_leaves_the_blockwise_densities_to_run_as_they_are():
    """Traced by torch.compile, the Function's loops unrolled into a graph that took minutes to compile on CPU (a
    2-epoch run did not finish in 15 minutes); it runs eagerly inside compiled code instead, with the same numbers."""
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    g = torch.Generator().manual_seed(0)
    mu, logvar, eps = (torch.randn(40, 4, generator=g) for _ in range(3))

    def terms(mu, logvar, eps):
        return torch.stack(mws_decomposition(mu + torch.exp(0.5 * logvar) * eps, mu, logvar, 1000, plain=False))

    torch._dynamo.reset()
    compiled = torch.compile(terms, backend=capture)(mu, logvar, eps)
    torch.testing.assert_close(compiled, terms(mu, logvar, eps))
    assert graphs and not any("logsumexp" in str(graph.graph) for graph in graphs)
    assert any("exp" in str(graph.graph) for graph in graphs)  # the code around it is compiled
