import math

import pytest
import torch

from vaekit import VAE, ModelConfig, interpolate, reconstruct, sample
from vaekit.generate import slerp

from .conftest import seeded


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VAE(ModelConfig(hidden_dims=(32,), latent_dim=4)).eval()


def test_samples_are_probabilities_and_repeat_with_the_seed(model):
    a = sample(model, 6, seeded(1))
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, sample(model, 6, seeded(1)))
    assert not torch.equal(a, sample(model, 6, seeded(2)))


def test_reconstruction_decodes_the_posterior_mean(model):
    x = torch.rand(3, 1, 28, 28, generator=seeded(0))
    torch.testing.assert_close(reconstruct(model, x), torch.sigmoid(model.decode(model.encode(x).mu)))


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_ends_at_the_reconstructions(model, method):
    x = torch.rand(2, 1, 28, 28, generator=seeded(0))
    path = interpolate(model, x[0], x[1], steps=7, method=method)
    assert path.shape == (7, 1, 28, 28)
    ends = reconstruct(model, x)
    torch.testing.assert_close(path[0], ends[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(path[-1], ends[1], atol=1e-5, rtol=1e-5)


def test_slerp_keeps_the_norm_of_equal_length_vectors():
    a = torch.tensor([3.0, 0.0, 0.0])
    b = torch.tensor([0.0, 3.0, 0.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path.norm(dim=1), torch.full((5,), 3.0))
    torch.testing.assert_close(path[2], torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2), 0.0]))
    # parallel vectors: no arc, so a straight line
    torch.testing.assert_close(slerp(a, 2 * a, torch.tensor([0.5])), (1.5 * a)[None])
    # a zero end (the prior's centre) has no direction: a straight line too, not NaN
    torch.testing.assert_close(slerp(torch.zeros(3), b, torch.tensor([0.0, 0.25, 1.0])), torch.stack([0 * b, b / 4, b]))
    torch.testing.assert_close(slerp(a, torch.zeros(3), torch.tensor([0.5])), (a / 2)[None])


def test_unknown_interpolation_is_rejected(model):
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        interpolate(model, torch.rand(1, 28, 28), torch.rand(1, 28, 28), 3, "cubic")
