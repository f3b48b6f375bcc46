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


# --- discretized logistics (8-bit data) -------------------------------------------------------------------------

ALL_VALUES = torch.arange(256, dtype=torch.float64).reshape(256, 1, 1, 1) / 255  # every 8-bit value, as x = k / 255
EXTREME_MEANS = (-40.0, -3.0, -0.2, 0.0, 1e-4, 0.3, 0.5, 0.999, 1.0, 1.3, 60.0)
EXTREME_LOG_SCALES = (-30.0, -9.0, -7.0, -5.0, -2.0, 0.0, 2.0, 9.0, 40.0)  # beyond both clamps, and between


def logistic_grid(dtype=torch.float64) -> torch.Tensor:
    """Parameters (P, 1, 2, 1, 1) of one-pixel images: every extreme mean with every extreme log-scale."""
    means, log_scales = torch.meshgrid(torch.tensor(EXTREME_MEANS), torch.tensor(EXTREME_LOG_SCALES), indexing="ij")
    return torch.stack([means.flatten(), log_scales.flatten()], 1).to(dtype).reshape(-1, 1, 2, 1, 1)


def exact_log_prob(k: int, mean: float, log_scale: float) -> float:
    """log P(k) by the definition, in 60-digit arithmetic: F(upper edge) - F(lower edge), edges at +-inf."""
    import mpmath

    mpmath.mp.dps = 60
    s = mpmath.e ** mpmath.mpf(min(max(log_scale, -7 - math.log(2)), 10.0))  # the likelihood's clamps

    def cdf(edge, sign=1):  # sign -1: the survival function, which keeps its digits in the right tail
        return mpmath.mpf(1) / (1 + mpmath.e ** (-sign * (edge - mpmath.mpf(mean)) / s))

    upper = mpmath.mpf(k + 0.5) / 255 if k < 255 else mpmath.inf
    lower = mpmath.mpf(k - 0.5) / 255 if k > 0 else -mpmath.inf
    if k / 255 < mean:
        return float(mpmath.log(cdf(upper) - cdf(lower)))
    return float(mpmath.log(cdf(lower, -1) - cdf(upper, -1)))


def test_discretized_logistic_sums_to_one_over_the_256_values_even_at_extreme_parameters():
    from vaekit.likelihoods import DiscretizedLogistic

    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        nll = DiscretizedLogistic().nll(logistic_grid(dtype), ALL_VALUES.to(dtype))  # (P, 256)
        assert nll.shape == (len(EXTREME_MEANS) * len(EXTREME_LOG_SCALES), 256) and torch.isfinite(nll).all()
        assert (nll >= -tolerance).all()  # a probability: never above 1
        total = torch.logsumexp(-nll.double(), dim=1)
        assert total.abs().max() < tolerance, total.abs().max()


def test_discretized_logistic_matches_the_definition_in_high_precision():
    """Against F(k/255 + 1/510) - F(k/255 - 1/510) in 60 digits, with the edge bins open: in both tails, where
    the difference of two sigmoids underflows in float32, and at the edges."""
    from vaekit.likelihoods import discretized_logistic_log_prob

    g = seeded(5)
    cases = [(0, 0.0, -5.0), (255, 1.0, -5.0), (0, 0.9, -3.0), (255, 0.1, -3.0), (128, 0.0, -4.0),  # far tails
             (1, 0.0, -8.0), (254, 1.0, -8.0), (100, 100 / 255, -7.7), (3, 0.5, 9.0), (200, -2.0, 0.5)]
    cases += [(int(k), float(m), float(s)) for k, m, s in zip(torch.randint(0, 256, (30,), generator=g),
                                                              torch.rand(30, generator=g) * 1.4 - 0.2,
                                                              torch.rand(30, generator=g) * 7 - 7)]
    k, mean, log_scale = (torch.tensor(column, dtype=torch.float64) for column in zip(*cases))
    expected = torch.tensor([exact_log_prob(*case) for case in cases], dtype=torch.float64)
    got64 = discretized_logistic_log_prob(k / 255, mean, log_scale)
    torch.testing.assert_close(got64, expected, rtol=1e-9, atol=1e-9)
    got32 = discretized_logistic_log_prob((k / 255).float(), mean.float(), log_scale.float())
    torch.testing.assert_close(got32.double(), expected, rtol=1e-5, atol=2e-5)
    assert expected.min() < -100  # the far tails were tested: probabilities below 1e-43, finite in float32 too


def test_discretized_logistic_agrees_with_pixelcnn_fallback_where_that_would_apply():
    """PixelCNN++ replaces a bin's mass below 1e-5 by the density at its centre times its width; where the
    logistic is wide against a bin, the two agree, and the exact form needs no switch between them."""
    from vaekit.likelihoods import discretized_logistic_log_prob

    x = torch.tensor([128.0, 204.0, 230.0, 120.0]) / 255  # values on the 8-bit grid
    mean, log_scale = torch.tensor([0.0, 0.0, 0.1, 0.95]), torch.full((4,), math.log(0.04))
    s = log_scale.exp()
    naive = torch.sigmoid((x + 0.5 / 255 - mean) / s) - torch.sigmoid((x - 0.5 / 255 - mean) / s)
    assert (naive < 1e-5).all()  # where PixelCNN++ falls back
    z = (x - mean) / s
    log_density = -z - log_scale - 2 * torch.nn.functional.softplus(-z)  # the logistic's density at the centre
    torch.testing.assert_close(discretized_logistic_log_prob(x, mean, log_scale), log_density - math.log(255),
                               atol=1e-3, rtol=0)


def test_discretized_logistic_gradients_stay_finite_at_extreme_parameters():
    from vaekit.likelihoods import DiscretizedLogistic, DiscretizedLogisticMixture

    g = seeded(6)
    x = torch.randint(0, 256, (4, 3, 5, 5), generator=g).float() / 255
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0  # both edges
    for likelihood in (DiscretizedLogistic(), DiscretizedLogisticMixture(4)):
        params = torch.randn(4, likelihood.output_channels(3), 5, 5, generator=g) * 200  # means, scales e^+-200
        params.requires_grad_(True)
        nll = likelihood.nll(params, x)
        nll.sum().backward()
        assert torch.isfinite(nll).all() and (nll >= 0).all()
        assert torch.isfinite(params.grad).all()
        means = likelihood.means(params.detach())
        assert torch.isfinite(means).all() and means.min() >= 0 and means.max() <= 1


def test_discretized_logistic_means_are_the_expected_values_of_k_over_255():
    from vaekit.likelihoods import DiscretizedLogistic, DiscretizedLogisticMixture

    for likelihood in (DiscretizedLogistic(), DiscretizedLogisticMixture(3)):
        params = torch.randn(6, 1, likelihood.output_channels(1), 1, 1, generator=seeded(7), dtype=torch.float64)
        params[:, :, -1] -= 3  # narrower scales than the default's
        probabilities = torch.exp(-likelihood.nll(params, ALL_VALUES))  # (6, 256)
        expected = (probabilities * ALL_VALUES.flatten()).sum(1)
        torch.testing.assert_close(likelihood.means(params).flatten(), expected, rtol=0, atol=1e-7)
    assert DiscretizedLogistic().means(torch.tensor([[[[0.5]], [[-9.0]]]])).item() == pytest.approx(0.5)
    # every extreme, and scales on both sides of 1/255, where the sum switches from its window to the midpoint rule
    params = torch.cat([logistic_grid(), torch.stack([torch.rand(3000, generator=seeded(10), dtype=torch.float64) * 1.4
                                                      - 0.2, torch.linspace(-8.5, -3.5, 3000, dtype=torch.float64)],
                                                     1).reshape(-1, 1, 2, 1, 1)])
    expected = (torch.exp(-DiscretizedLogistic().nll(params, ALL_VALUES)) * ALL_VALUES.flatten()).sum(1)
    for dtype, tolerance in ((torch.float64, 1e-7), (torch.float32, 1e-6)):
        means = DiscretizedLogistic().means(params.to(dtype)).flatten().double()
        torch.testing.assert_close(means, expected, rtol=0, atol=tolerance)


def test_mixture_of_one_is_the_single_logistic_and_a_mixture_sums_to_one_over_colour_pixels():
    from vaekit.likelihoods import DiscretizedLogistic, DiscretizedLogisticMixture, output_channels

    assert output_channels("discretized-logistic", 3) == 6
    assert output_channels("discretized-logistic-mixture", 3) == 10 * 7  # K (1 + 2C), PixelCNN++'s K = 10
    g = seeded(8)
    single = torch.randn(5, 2, 4, 4, generator=g)
    x = torch.randint(0, 256, (5, 1, 4, 4), generator=g).float() / 255
    with_logit = torch.cat([torch.randn(5, 1, 4, 4, generator=g), single], dim=1)  # any logit: weight 1
    torch.testing.assert_close(DiscretizedLogisticMixture(1).nll(with_logit, x), DiscretizedLogistic().nll(single, x))
    # two channels, three components: the joint mass over all 65,536 colours of a pixel is 1
    mixture = DiscretizedLogisticMixture(3)
    params = torch.randn(1, mixture.output_channels(2), 1, 1, generator=g, dtype=torch.float64) * 2
    a, b = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    colours = torch.stack([a.flatten(), b.flatten()], 1).reshape(-1, 2, 1, 1).double() / 255
    assert torch.logsumexp(-mixture.nll(params, colours), 0).item() == pytest.approx(0, abs=1e-10)
    # and it is the mixture of the components' joint (channel-independent) masses, by hand
    log_w = torch.log_softmax(params[0, :3, 0, 0], 0)
    means, log_scales = params[0, 3:9, 0, 0].reshape(3, 2), params[0, 9:, 0, 0].reshape(3, 2)
    one = colours[1234:1235]
    by_hand = torch.logsumexp(torch.stack([log_w[k] - DiscretizedLogistic().nll(
        torch.cat([means[k], log_scales[k]]).reshape(1, 4, 1, 1), one)[0] for k in range(3)]), 0)
    assert -mixture.nll(params, one).item() == pytest.approx(by_hand.item(), abs=1e-12)


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "discretized-logistic-mixture"])
def test_a_tiny_mnist_training_lowers_the_discretized_loss(mnist_train, mnist_test, likelihood):
    from vaekit import ModelConfig, RunConfig, TrainConfig
    from vaekit.evaluate import evaluate_elbo
    from vaekit.fit import build_model

    config = RunConfig(model=ModelConfig(hidden_dims=(64,), latent_dim=8, likelihood=likelihood,
                                         likelihood_components=3), train=TrainConfig(epochs=2, batch_size=64))
    x = mnist_test.images[:200].float() / 255
    torch.manual_seed(0)
    before = evaluate_elbo(build_model(config), x, 0)["test_loss"]
    torch.manual_seed(0)
    model, losses = train(mnist_train.images[:600], config, 2)
    after = evaluate_elbo(model, x, 0)["test_loss"]
    assert losses[1] < losses[0] and after < before - 200, (before, after, losses)  # about 1,420 nats at the start
    assert after > 0  # a probability of 8-bit images: never more than 1


def test_discretized_likelihoods_are_refused_on_standardized_data_and_accepted_on_binarized():
    from vaekit import ModelConfig, RunConfig
    from vaekit.config import DataConfig
    from vaekit.errors import ConfigError

    with pytest.raises(ConfigError, match="models 8-bit pixel values; data.standardize"):
        RunConfig(DataConfig(standardize=True), ModelConfig(likelihood="discretized-logistic"))
    RunConfig(DataConfig(binarize="threshold"), ModelConfig(likelihood="discretized-logistic-mixture"))
    with pytest.raises(ConfigError, match="model.likelihood_components must be at most 256"):
        ModelConfig(likelihood="discretized-logistic-mixture", likelihood_components=257)
    with pytest.raises(ConfigError, match="model.likelihood_components must be a positive integer"):
        ModelConfig(likelihood_components=0)
    with pytest.raises(ConfigError, match="needs a binary likelihood"):
        ModelConfig(likelihood="discretized-logistic", pixel_groups=4)
