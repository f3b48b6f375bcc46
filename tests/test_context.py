"""Pixel groups (vaekit.models.context): causality, teacher forcing against group-by-group decoding,
sampling, and the likelihood gain on real thresholded MNIST."""

import pytest
import torch

from vaekit import ModelConfig, RunConfig
from vaekit.config import PIXEL_GROUPS
from vaekit.data import fixed_binarization
from vaekit.errors import ConfigError
from vaekit.evaluate import evaluate_elbo
from vaekit.fit import build_model
from vaekit.models.context import SCHEMES


def context_model(groups: int, features: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4, pixel_groups=groups,
                                                    context_features=features))).eval()
    for p in model.context.parameters():  # large weights, so that every input visibly moves the output
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_every_configurable_scheme_exists():
    assert sorted(SCHEMES) == sorted(PIXEL_GROUPS)


@pytest.mark.parametrize("groups", sorted(SCHEMES))
def test_schemes_partition_the_image(groups):
    covered = torch.zeros(28, 28, dtype=torch.int64)
    for stride, row, col in SCHEMES[groups]:
        covered[row::stride, col::stride] += 1
    assert torch.equal(covered, torch.ones(28, 28, dtype=torch.int64))


@pytest.mark.parametrize("groups, features", [(g, 0) for g in SCHEMES if g > 1] + [(7, 3)])
def test_a_group_sees_only_the_groups_before_it(groups, features):
    model = context_model(groups, features)
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    logits = model.decode(z, x)
    lattices = model.context.lattices
    for k, (stride, row, col) in enumerate(lattices):
        flipped = x.clone()
        flipped[..., row::stride, col::stride] = 1 - flipped[..., row::stride, col::stride]
        changed = model.decode(z, flipped) != logits
        for j, (s, r, c) in enumerate(lattices):
            # flipping group k's pixels moves no logit of groups 0..k, and some logit of a later group
            assert bool(changed[..., r::s, c::s].any()) == (j > k), (k, j)


@pytest.mark.parametrize("features", [0, 3])
def test_teacher_forcing_equals_group_by_group_decoding(features):
    model = context_model(7, features)
    x = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    logits, known = model.decoder(z), torch.zeros_like(x)
    assert logits.shape == (2, 1 + features, 28, 28)  # the logits, then the features for the context
    for k, (stride, row, col) in enumerate(model.context.lattices):
        group = model.context.group_logits(k, logits, known)
        torch.testing.assert_close(group, model.decode(z, x)[..., row::stride, col::stride])
        known[..., row::stride, col::stride] = x[..., row::stride, col::stride]
    # S posterior samples per image (IWAE, importance-sampled NLL) broadcast against the images
    zs = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(3))
    many = model.decode(zs, x)
    assert many.shape == (5, 2, 1, 28, 28)
    torch.testing.assert_close(many[3], model.decode(zs[3], x))


def test_sampling_is_seeded():
    model = context_model(4)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    a = model.decode(z, generator=torch.Generator().manual_seed(5))
    b = model.decode(z, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(model.decode(z), model.decode(z))
    assert not torch.equal(a, model.decode(z, generator=torch.Generator().manual_seed(6)))


def test_pictures_of_a_pixel_group_model_are_its_seeded_binary_draws():
    model = context_model(7)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    drawn = model.pictures(z, torch.Generator().manual_seed(5))
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(drawn, model.pictures(z, torch.Generator().manual_seed(5)))
    assert torch.equal(model.pictures(z), model.pictures(z))  # default seed: pictures repeat
    # the draws are the images whose group logits decode() reports for the same generator state
    logits = model.decode(z, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(logits, model.decode(z, drawn))
    plain = build_model(RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4))).eval()
    assert torch.equal(plain.pictures(z), torch.sigmoid(plain.decode(z)))  # E[x|z] without pixel groups


def test_context_features_widen_the_path_from_z_to_each_pixel():
    """The features reach the logits only through the context's mixers, and do move them."""
    model = context_model(4, features=2)
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    decoded = model.decoder(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    logits = model.context(decoded, x)
    moved = decoded.clone()
    moved[:, 1:] += 1.0  # the features only
    changed = model.context(moved, x) != logits
    stride, row, col = model.context.lattices[0]
    assert not changed[..., row::stride, col::stride].any() and changed.any()
    with pytest.raises(ConfigError, match="context_features needs pixel_groups of 4 or more"):
        ModelConfig(context_features=2)
    with pytest.raises(ConfigError, match="context_features must be a non-negative integer"):
        ModelConfig(pixel_groups=4, context_features=-1)


def test_pixel_groups_need_a_bernoulli_likelihood():
    with pytest.raises(ConfigError, match=r"needs a binary likelihood \(bernoulli\)"):
        ModelConfig(pixel_groups=4, likelihood="gaussian")
    with pytest.raises(ConfigError, match="model.pixel_groups must be one of 1, 4, 7, 16"):
        ModelConfig(pixel_groups=5)


def test_context_lowers_the_nll_of_thresholded_mnist(thresholded_plain, thresholded_context, mnist_test):
    """The same encoder and decoder on real thresholded digits: seeing the pixels decoded before each
    group, the model beats the plain one by a wide margin with a quarter of its training."""
    x_test = fixed_binarization(mnist_test.images[:2000], "threshold", 0)
    plain = evaluate_elbo(thresholded_plain, x_test, 0)["test_loss"]
    context = evaluate_elbo(thresholded_context, x_test, 0)["test_loss"]
    assert plain > 90 and context < plain - 12, (plain, context)
