import math

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal

from vaekit.likelihoods import (MIN_LOG_STD, continuous_bernoulli_log_norm, negative_log_likelihood, output_channels,
                               pixel_means)

from .conftest import seeded, train


def test_bernoulli_matches_torch_distributions():
    g = seeded(0)
    logits, x = torch.randn(3, 1, 4, 4, generator=g) * 3, torch.bernoulli(torch.full((3, 1, 4, 4), 0.5), generator=g)
    expected = -Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(negative_log_likelihood(logits, x, "bernoulli"), expected)


def test_continuous_bernoulli_matches_torch_distributions():
    g = seeded(1)
    logits = torch.cat([torch.randn(2, 1, 4, 4, generator=g) * 4, torch.full((1, 1, 4, 4), 1e-5)])
    x = torch.rand(3, 1, 4, 4, generator=g)
    expected = -ContinuousBernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(negative_log_likelihood(logits, x, "continuous-bernoulli"), expected,
                               rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(pixel_means(logits, "continuous-bernoulli"), ContinuousBernoulli(logits=logits).mean,
                               rtol=1e-4, atol=1e-4)
    assert continuous_bernoulli_log_norm(torch.tensor(0.0)) == pytest.approx(math.log(2))


def test_gaussian_is_a_density_with_a_floored_deviation():
    mean_logits = torch.zeros(2, 1, 3, 3)
    log_std = torch.full((2, 1, 3, 3), -20.0)  # asks for a tiny deviation: floored at 1/64
    params = torch.cat([mean_logits, log_std], dim=1)
    assert output_channels("gaussian", 1) == 2 and params.shape[1] == 2
    x = torch.full((2, 1, 3, 3), 0.5)
    expected = -Normal(0.5, math.exp(MIN_LOG_STD)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(negative_log_likelihood(params, x, "gaussian"), expected)
    assert negative_log_likelihood(params, x, "gaussian")[0] < 0  # a density: negative NLL is possible
    torch.testing.assert_close(pixel_means(params, "gaussian"), torch.full((2, 1, 3, 3), 0.5))


def test_gaussian_shared_appends_one_learned_deviation():
    from vaekit import ModelConfig, RunConfig
    from vaekit.fit import build_model

    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(16,), latent_dim=3, likelihood="gaussian-shared")))
    params = model.decode(torch.randn(4, 3, generator=seeded(2)))
    assert params.shape == (4, 2, 28, 28)
    assert torch.equal(params[:, 1], torch.full((4, 28, 28), math.log(0.1)))
    x = torch.rand(4, 1, 28, 28, generator=seeded(3))
    mean = torch.sigmoid(params[:, :1])
    expected = ((x - mean).pow(2).sum((1, 2, 3)) / (2 * 0.1**2) + 784 * (math.log(0.1) + 0.5 * math.log(2 * math.pi)))
    torch.testing.assert_close(negative_log_likelihood(params, x, "gaussian-shared"), expected)


def test_gaussian_shared_learns_the_reconstruction_error(mnist_train):
    """Trained on real MNIST, the shared deviation moves from 0.1 to the root-mean-square error of the
    decoder's means, the value that maximises the likelihood (Rybkin et al. 2021)."""
    from vaekit import ModelConfig, RunConfig, TrainConfig

    config = RunConfig(model=ModelConfig(hidden_dims=(200,), latent_dim=10, likelihood="gaussian-shared"),
                       train=TrainConfig(epochs=6))
    images = mnist_train.images[:10_000]
    model = train(images, config, 6)[0]
    x = images[:2000].float() / 255
    with torch.no_grad():
        posterior = model.encode(x)
        means = model.pixel_means(model.decode(posterior.rsample(torch.randn(posterior.mu.shape, generator=seeded(4)))))
    rmse = (means - x).pow(2).mean().sqrt().item()
    sigma = model.log_std.exp().item()
    assert sigma != pytest.approx(0.1, abs=0.01)  # it moved
    assert sigma == pytest.approx(rmse, rel=0.15), (sigma, rmse)
