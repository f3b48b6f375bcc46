"""beta, KL warm-up, free bits, the IWAE training bound, the VampPrior and the conv model."""

import math

import pytest
import torch

from vaekit import VAE, ModelConfig, RunConfig, TrainConfig, Trainer
from vaekit.errors import ConfigError
from vaekit.evaluate import collapse_streak, collapse_warning, posterior_diagnostics
from vaekit.fit import build_model
from vaekit.models import DiagonalGaussian, mixture_log_prob, standard_normal_log_prob
from vaekit.objectives import negative_elbo, training_loss

from .conftest import seeded


def forward(model, x, eps):
    return model(x, eps)


def test_plain_training_loss_is_the_summed_negative_elbo():
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=5))
    x, eps = torch.rand(6, 1, 28, 28, generator=seeded(0)), torch.randn(6, 5, generator=seeded(1))
    out = model(x, eps)
    torch.testing.assert_close(training_loss(x, *out, eps), negative_elbo(x, *out, eps).loss.sum())
    terms = negative_elbo(x, *out, eps)
    torch.testing.assert_close(training_loss(x, *out, eps, kl_weight=0.25),
                               (terms.reconstruction + 0.25 * terms.kl).sum())


def test_free_bits_floor_each_dimensions_batch_mean_kl():
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=5))
    x, eps = torch.rand(6, 1, 28, 28, generator=seeded(0)), torch.randn(6, 5, generator=seeded(1))
    recon, mu, logvar = model(x, eps)
    per_dim = DiagonalGaussian(mu, logvar).kl_per_dim().mean(0)
    floor = per_dim.median().item()
    reconstruction = negative_elbo(x, recon, mu, logvar, eps).reconstruction.sum()
    expected = reconstruction + per_dim.clamp(min=floor).sum() * 6
    torch.testing.assert_close(training_loss(x, recon, mu, logvar, eps, free_bits=floor), expected)


def test_iwae_bound_with_one_sample_is_the_elbo_and_tightens_with_more():
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=3)).eval()
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3), generator=seeded(2))
    eps1 = torch.randn(1, 4, 3, generator=seeded(3))
    out = model(x, eps1)
    # one sample: the ELBO with its KL sampled at the same z (not the closed form)
    sampled_kl = negative_elbo(x, *model(x, eps1[0]), eps1[0], prior_log_prob=standard_normal_log_prob)
    torch.testing.assert_close(training_loss(x, *out, eps1), sampled_kl.loss.sum())
    eps = torch.randn(200, 4, 3, generator=seeded(4))
    with torch.no_grad():
        iwae = training_loss(x, *model(x, eps), eps) / 4
        elbo = sum(negative_elbo(x, *model(x, e), e).loss.mean() for e in eps) / len(eps)
    assert iwae < elbo - 0.5  # a tighter (lower) bound on -log p(x)


def test_vamp_prior_is_the_mixture_of_pseudo_input_posteriors():
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=3, prior="vamp", prior_components=7))
    assert model.pseudo_inputs.shape == (7, 1, 28, 28) and not model.analytic_kl
    z = torch.randn(5, 3, generator=seeded(0))
    q = model.encode(torch.sigmoid(model.pseudo_inputs))
    manual = torch.logsumexp(torch.stack([DiagonalGaussian(q.mu[k], q.logvar[k]).log_prob(z) for k in range(7)]), 0)
    torch.testing.assert_close(model.prior_log_prob(z), manual - math.log(7))
    torch.testing.assert_close(mixture_log_prob(z, q.mu, q.logvar), manual - math.log(7))
    torch.testing.assert_close(model.frozen_prior_log_prob()(z), manual - math.log(7))  # the evaluation shortcut
    draws = model.sample_prior(4, seeded(1))
    assert draws.shape == (4, 3) and torch.equal(draws, model.sample_prior(4, seeded(1)))


def test_mixture_log_prob_keeps_its_precision_for_sharp_far_components_and_under_autocast():
    """The matmul expansion subtracts terms of size sum(z^2 / var): with components at |mu| ~ 8 and
    std 0.02 those reach 1e7, which float32 would leave with errors of 0.3 nats."""
    g = seeded(3)
    mu = 8 * torch.randn(50, 10, generator=g)
    logvar = torch.full((50, 10), 2 * math.log(0.02))
    z = (mu[:6] + 0.02 * torch.randn(4, 6, 10, generator=g)).float()  # near components 0-5: (4, 6, 10)
    direct = torch.logsumexp(DiagonalGaussian(mu.double(), logvar.double()).log_prob(z.double().unsqueeze(-2)), -1)
    expected = (direct - math.log(50)).float()
    out = mixture_log_prob(z, mu, logvar)
    assert out.shape == (4, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no bf16 matmuls in the expansion
        torch.testing.assert_close(mixture_log_prob(z, mu, logvar), expected, atol=1e-4, rtol=0)


def test_conv_model_shapes_for_every_likelihood():
    for likelihood, channels in (("bernoulli", 1), ("continuous-bernoulli", 1), ("gaussian", 2)):
        model = VAE(ModelConfig(architecture="conv", hidden_dims=(64,), latent_dim=6, likelihood=likelihood))
        x = torch.rand(3, 1, 28, 28)
        recon, mu, logvar = model(x, torch.zeros(3, 6))
        assert recon.shape == (3, channels, 28, 28) and mu.shape == (3, 6)
        assert model.decode(torch.zeros(5, 3, 6)).shape == (5, 3, channels, 28, 28)  # importance samples
    with pytest.raises(ConfigError, match="divide by 4, got 30x30"):
        ModelConfig(architecture="conv", input_shape=(1, 30, 30))


def test_config_rejects_incompatible_objectives():
    with pytest.raises(ConfigError, match="free_bits needs the normal prior"):
        RunConfig(model=ModelConfig(prior="vamp"), train=TrainConfig(free_bits=0.5))
    with pytest.raises(ConfigError, match="cannot combine with iw_samples > 1"):
        TrainConfig(free_bits=0.5, iw_samples=5)


def test_kl_warmup_ramps_linearly_over_epochs(mnist_train):
    config = RunConfig(model=ModelConfig(hidden_dims=(16,), latent_dim=2), train=TrainConfig(batch_size=100,
                                                                                                kl_warmup=2, beta=0.5))
    trainer = Trainer(build_model(config), mnist_train.images[:1000], config.train, "none")
    assert trainer.kl_weight(0) == pytest.approx(0.5 / 20) and trainer.kl_weight(9) == pytest.approx(0.25)
    assert trainer.kl_weight(19) == pytest.approx(0.5) and trainer.kl_weight(100) == pytest.approx(0.5)


@pytest.mark.parametrize("options", [dict(iw_samples=5), dict(free_bits=0.5, kl_warmup=1), dict(beta=4.0)])
def test_every_objective_trains(mnist_train, options):
    config = RunConfig(model=ModelConfig(hidden_dims=(64,), latent_dim=8),
                       train=TrainConfig(batch_size=100, epochs=2, **options))
    trainer = Trainer(build_model(config), mnist_train.images[:3000], config.train, "none")
    losses = [trainer.train_epoch() for _ in range(2)]
    assert losses[1] < losses[0] < 545


def test_vamp_and_conv_models_train(mnist_train):
    for model_config in (ModelConfig(hidden_dims=(64,), latent_dim=8, prior="vamp", prior_components=20),
                         ModelConfig(architecture="conv", hidden_dims=(64,), conv_channels=(8, 16), latent_dim=8)):
        config = RunConfig(model=model_config, train=TrainConfig(batch_size=100))
        trainer = Trainer(build_model(config), mnist_train.images[:2000], config.train, "none")
        losses = [trainer.train_epoch() for _ in range(2)]
        assert losses[1] < losses[0] < 545, model_config


def test_diagnostics_find_collapsed_units():
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=4))
    with torch.no_grad():  # dimensions 2 and 3 ignore the input and sit at the prior: collapsed
        model.encoder.head.weight[[2, 3, 6, 7]] = 0
        model.encoder.head.bias[[2, 3, 6, 7]] = 0
        model.encoder.head.weight[:2] *= 50
    x = torch.rand(200, 1, 28, 28, generator=seeded(1))
    result = posterior_diagnostics(model, x)
    assert result["active_units"] == 2
    assert result["kl_per_dim"][2] == pytest.approx(0.0, abs=1e-6) and result["kl_per_dim"][0] > 0.1
    assert collapse_warning(result, 4) is None
    assert "only 1 of 4 latent dimensions are active" in collapse_warning({**result, "active_units": 1}, 4)
    assert "pixel-groups" not in collapse_warning({**result, "active_units": 1}, 4)
    assert "with --pixel-groups some of this is expected" in collapse_warning({**result, "active_units": 1}, 4, 7)


def test_collapse_streak_counts_the_latest_collapsed_epochs_after_the_warm_up():
    rows = [{"epoch": e + 1, "active_units": a} for e, a in enumerate([0, 0, 9, 3, 2, 4])]  # 10 latents
    assert collapse_streak(rows, 10) == 3  # epochs 4-6 (4 of 10 active is still fewer than half)
    assert collapse_streak(rows, 10, after_epoch=5) == 1
    assert collapse_streak(rows[:3], 10) == 0  # recovered at epoch 3
    assert collapse_streak(rows[:2], 10) == 2 and collapse_streak(rows[:2], 10, after_epoch=2) == 0
    assert collapse_streak([], 10) == 0
