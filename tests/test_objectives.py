import torch
import torch.nn.functional as F

from vaekit import VAE, ModelConfig, negative_elbo
from vaekit.objectives import bernoulli_nll

from .conftest import seeded


def test_bernoulli_nll_is_summed_bce_per_image():
    g = seeded(0)
    logits = torch.randn(4, 1, 28, 28, generator=g) * 3
    x = torch.rand(4, 1, 28, 28, generator=g)
    p = torch.sigmoid(logits)
    manual = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_nll(logits, x), manual, rtol=1e-5, atol=1e-3)
    # the seed's formulation (sigmoid, then BCE summed over the batch) gives the same total
    seed_total = F.binary_cross_entropy(p, x, reduction="sum")
    torch.testing.assert_close(bernoulli_nll(logits, x).sum(), seed_total, rtol=1e-5, atol=1e-2)


def test_bernoulli_nll_stays_finite_where_the_sigmoid_saturates():
    logits = torch.full((1, 1, 2, 2), 200.0)
    x = torch.zeros(1, 1, 2, 2)
    torch.testing.assert_close(bernoulli_nll(logits, x), torch.tensor([800.0]))


def test_bernoulli_nll_broadcasts_over_importance_samples():
    logits = torch.randn(5, 3, 1, 4, 4, generator=seeded(1))
    x = torch.rand(3, 1, 4, 4, generator=seeded(2))
    out = bernoulli_nll(logits, x)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out[2], bernoulli_nll(logits[2], x))


def test_negative_elbo_is_reconstruction_plus_kl_per_sample():
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=5))
    x = torch.rand(7, 1, 28, 28, generator=seeded(0))
    eps = torch.randn(7, 5, generator=seeded(1))
    terms = negative_elbo(x, *model(x, eps), eps)
    assert terms.loss.shape == terms.reconstruction.shape == terms.kl.shape == (7,)
    torch.testing.assert_close(terms.loss, terms.reconstruction + terms.kl)
    q = model.encode(x)
    torch.testing.assert_close(terms.kl, q.kl())
    torch.testing.assert_close(terms.reconstruction, bernoulli_nll(model.decode(q.rsample(eps)), x))
    terms.loss.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
