import torch
from torch.distributions import Normal, kl_divergence

from vaekit import VAE, DiagonalGaussian, ModelConfig
from vaekit.models import Decoder, Encoder, standard_normal_log_prob

from .conftest import seeded


def test_encoder_and_decoder_shapes():
    encoder = Encoder(784, (400,), 20)
    mu, logvar = encoder(torch.rand(5, 784))
    assert mu.shape == logvar.shape == (5, 20)
    assert Decoder(20, (400,), 784)(torch.randn(3, 7, 20)).shape == (3, 7, 784)


def test_seed_sized_model_has_the_seeds_parameter_count():
    model = VAE()
    # fc1 784x400, fc21+fc22 400x20 twice, fc3 20x400, fc4 400x784, with biases: the seed's 652,824
    assert sum(p.numel() for p in model.parameters()) == 652_824


def test_vae_maps_images_to_image_shaped_logits():
    model = VAE(ModelConfig(hidden_dims=(64, 32), latent_dim=4))
    x = torch.rand(6, 1, 28, 28)
    recon_logits, mu, logvar = model(x, torch.zeros(6, 4))
    assert recon_logits.shape == x.shape and mu.shape == (6, 4)
    # eps = 0 decodes the posterior mean
    torch.testing.assert_close(recon_logits, model.decode(model.encode(x).mode()))


def test_forward_draws_reproducibly_from_a_generator():
    model = VAE(ModelConfig(hidden_dims=(16,), latent_dim=3))
    x = torch.rand(4, 1, 28, 28)
    a, _, _ = model(x, generator=seeded(5))
    b, _, _ = model(x, generator=seeded(5))
    c, _, _ = model(x, generator=seeded(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reparameterized_sample_matches_formula_and_carries_gradients():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    eps = torch.randn(4, 3, generator=seeded(0))
    z = DiagonalGaussian(mu, logvar).rsample(eps)
    torch.testing.assert_close(z, mu + eps * torch.exp(0.5 * logvar))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    assert logvar.grad.abs().sum() > 0


def test_many_samples_have_the_posterior_moments():
    q = DiagonalGaussian(torch.tensor([[1.0, -2.0]]), torch.log(torch.tensor([[0.25, 4.0]])))
    z = q.sample(seeded(1), n=200_000)
    assert z.shape == (200_000, 1, 2)
    torch.testing.assert_close(z.mean(0), q.mu, atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), q.std, atol=0.02, rtol=0)


def test_kl_matches_torch_distributions():
    g = seeded(3)
    mu, logvar = torch.randn(8, 20, generator=g) * 2, torch.randn(8, 20, generator=g)
    q = DiagonalGaussian(mu, logvar)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(q.kl_per_dim(), expected)
    torch.testing.assert_close(q.kl(), expected.sum(-1))
    assert torch.all(q.kl() >= 0)
    assert torch.allclose(DiagonalGaussian(torch.zeros(2, 5), torch.zeros(2, 5)).kl(), torch.zeros(2))


def test_log_probs_match_torch_distributions():
    g = seeded(4)
    mu, logvar, z = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    q = DiagonalGaussian(mu, logvar)
    torch.testing.assert_close(q.log_prob(z), Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1))
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
