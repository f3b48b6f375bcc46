import math

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal

from vaekit.likelihoods import MIN_LOG_STD, continuous_bernoulli_log_norm, negative_log_likelihood, output_channels, pixel_means

from .conftest import seeded


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
    torch.testing.assert_close(negative_log_likelihood(logits, x, "continuous-bernoulli"), expected, rtol=1e-4, atol=1e-3)
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
