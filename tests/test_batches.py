import math

import torch

from vaekit.data import binarize, epoch_order, fixed_binarization, prepare, standardize, to_unit

from .conftest import seeded


def test_pixels_scale_to_unit_interval_not_minus_one_to_one():
    images = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8).view(1, 1, 1, 5)
    x = to_unit(images)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([0, 1, 127, 128, 255]) / 255.0)
    assert x.min() >= 0 and x.max() <= 1


def test_threshold_is_above_127():
    images = torch.tensor([0, 127, 128, 255], dtype=torch.uint8).view(1, 1, 1, 4)
    assert prepare(images, "threshold").flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_dynamic_binarization_is_seeded_bernoulli():
    x = torch.full((20_000,), 0.3)
    a = binarize(x, "dynamic", seeded(1))
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 0.01
    assert torch.equal(a, binarize(x, "dynamic", seeded(1)))
    assert not torch.equal(a, binarize(x, "dynamic", seeded(2)))


def test_fixed_binarization_repeats():
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8, generator=seeded(0))
    assert torch.equal(fixed_binarization(images, "dynamic", 3), fixed_binarization(images, "dynamic", 3))
    assert not torch.equal(fixed_binarization(images, "dynamic", 3), fixed_binarization(images, "dynamic", 4))
    torch.testing.assert_close(fixed_binarization(images, "none", 3), to_unit(images))


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a = epoch_order(1000, seed=1, epoch=1)
    assert torch.equal(a.sort().values, torch.arange(1000))
    assert torch.equal(a, epoch_order(1000, seed=1, epoch=1))
    assert not torch.equal(a, epoch_order(1000, seed=1, epoch=2))
    assert not torch.equal(a, epoch_order(1000, seed=2, epoch=1))


def test_latent_inputs_use_the_mean_of_dynamic_binarizations():
    from vaekit.data import latent_inputs

    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=seeded(0))
    torch.testing.assert_close(latent_inputs(images, "dynamic", 1), to_unit(images))
    torch.testing.assert_close(latent_inputs(images, "threshold", 1), prepare(images, "threshold"))


def test_standardize_sees_every_image_at_the_same_contrast():
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    images[0, 0, 10:14, 10:20] = 255  # 40 lit pixels on black
    images[1, 0, 10:14, 10:20] = 60  # the same shape, faint
    images[2] = 77  # constant
    images[3, 0, 5, 5] = 255  # one lit pixel: z = sqrt(783) = 28, clipped
    out = standardize(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    p = 40 / 784
    to_uint8 = lambda z: round((z + 1) * 255 / 8)  # noqa: E731  z in [-1, 7] -> 0..255
    assert out[0, 0, 12, 12] == to_uint8(math.sqrt((1 - p) / p)) == 169
    assert out[0, 0, 0, 0] == to_uint8(-math.sqrt(p / (1 - p))) == 24
    assert torch.equal(out[0], out[1])
    assert (out[2] == 32).all()  # z = 0
    assert out[3, 0, 5, 5] == 255 and out[3, 0, 0, 0] == to_uint8(-1 / math.sqrt(783))
