"""The out-of-distribution remedies on constructed cases: input complexity (PNG lengths), the likelihood ratio
against a background model, and the two-sided typicality rule."""

import io
import math

import pytest
import torch
from PIL import Image

from vaekit.anomaly import typical_reference, typical_scores
from vaekit.background import perturb, ratio_scores
from vaekit.complexity import LN2, complexity_scores, fit_rate, png_bits
from vaekit.runs import check_threshold


def png_length(array) -> int:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=9)
    return 8 * len(buffer.getvalue())


def test_png_bits_is_the_length_of_each_image_as_a_png_file():
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (1, 1, 28, 28), generator=generator, dtype=torch.uint8)
    flat = torch.full((1, 1, 28, 28), 200, dtype=torch.uint8)
    x = torch.cat([noise, flat]).float() / 255
    bits = png_bits(x)
    assert bits.dtype == torch.float64
    assert bits.tolist() == [png_length(noise[0, 0].numpy()), png_length(flat[0, 0].numpy())]
    # noise cannot be compressed below 8 bits a pixel; a flat image is little more than the headers
    assert bits[0] > 8 * 784 > 5 * bits[1]


def test_png_bits_of_colour_and_of_other_channel_counts():
    generator = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (2, 3, 8, 8), generator=generator, dtype=torch.uint8)
    assert png_bits(rgb.float() / 255).tolist() == [png_length(image.permute(1, 2, 0).numpy()) for image in rgb]
    two = torch.randint(0, 256, (1, 2, 8, 8), generator=generator, dtype=torch.uint8)
    assert png_bits(two.float() / 255).tolist() == [png_length(two[0].reshape(16, 8).numpy())]
    with pytest.raises(ValueError, match="N, C, H, W"):
        png_bits(torch.zeros(8, 8))


def test_complexity_scores_are_the_nll_less_the_compressed_length_at_a_rate():
    nll = torch.tensor([100 * math.log(2), 50 * math.log(2)])  # nats
    bits = torch.tensor([30.0, 80.0])
    # Serra et al.'s S = -log2 p(x) - L(x) in bits: 70 and -30, here in nats
    torch.testing.assert_close(complexity_scores(nll, bits), torch.tensor([70.0, -30.0], dtype=torch.float64) * LN2)
    torch.testing.assert_close(complexity_scores(nll, bits, rate=0.5), nll.double() - bits.double() / 2)
    with pytest.raises(ValueError, match="one length per score"):
        complexity_scores(nll, torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        complexity_scores(nll, bits, rate=float("inf"))


def test_fit_rate_is_the_least_squares_slope_of_the_nll_on_the_lengths():
    bits = torch.tensor([100.0, 200.0, 300.0, 400.0])
    nll = 0.08 * bits + torch.tensor([1.0, -1.0, -1.0, 1.0])  # a slope of 0.08 nats a bit, plus a symmetric wobble
    assert fit_rate(nll, bits) == pytest.approx(0.08, abs=1e-12)
    assert fit_rate(torch.tensor([5.0, 1.0]), torch.tensor([10.0, 20.0])) == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="differing compressed lengths"):
        fit_rate(torch.tensor([1.0, 2.0]), torch.tensor([50.0, 50.0]))
    with pytest.raises(ValueError, match="two or more"):
        fit_rate(torch.tensor([1.0]), torch.tensor([50.0]))


def test_complexity_undoes_the_advantage_of_simple_images():
    """A model that prices every image at a rate of nats per bit of its PNG length, plus a fit term, ranks images
    by the fit alone once corrected at the fitted rate: the simple image it fits badly scores above the complex
    one it fits well, where by likelihood alone it is the more normal."""
    generator = torch.Generator().manual_seed(2)
    noise = torch.randint(0, 256, (3, 1, 28, 28), generator=generator, dtype=torch.uint8).float() / 255
    flat = torch.zeros(1, 1, 28, 28)
    half = noise[:1].clone()
    half[..., 14:] = 0  # half noise, half flat: a length between the two
    x = torch.cat([noise, flat, half])
    bits = png_bits(x)
    fit = torch.tensor([2.0, 3.0, 1.0, 40.0, 2.0], dtype=torch.float64)  # nats: the flat image fits badly
    nll = 0.06 * bits + fit
    assert nll[3] < nll[:3].min()  # by likelihood alone the flat image is the most normal
    rate = fit_rate(nll[[0, 1, 2, 4]], bits[[0, 1, 2, 4]])  # on the normal images only
    scores = complexity_scores(nll, bits, rate)
    assert scores.argmax() == 3 and scores[3] - scores[:3].max() > 30


def test_perturb_replaces_the_given_share_of_values_with_uniform_noise():
    images = torch.full((200, 1, 28, 28), 7, dtype=torch.uint8)
    out = perturb(images, 0.2, torch.Generator().manual_seed(0))
    changed = (out != images).double().mean().item()
    assert 0.19 < changed < 0.21  # 0.2 replaced, of which 1/256 by a 7 again
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, perturb(images, 0.2, torch.Generator().manual_seed(0)))  # seeded
    assert torch.equal(perturb(images, 0.0, torch.Generator().manual_seed(0)), images)
    replaced = perturb(images, 1.0, torch.Generator().manual_seed(0)).double()
    assert abs(replaced.mean().item() - 127.5) < 1 and replaced.max() == 255 and replaced.min() == 0
    with pytest.raises(ValueError, match="rate"):
        perturb(images, 1.5, torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        perturb(images.float(), 0.1, torch.Generator())


def test_ratio_scores_are_the_difference_of_the_two_nlls():
    torch.testing.assert_close(ratio_scores(torch.tensor([10.0, 3.0]), torch.tensor([4.0, 5.0])),
                               torch.tensor([6.0, -2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="background score per score"):
        ratio_scores(torch.ones(2), torch.ones(3))


def test_the_typical_set_rule_flags_images_too_likely_as_well_as_too_unlikely():
    reference = typical_reference(torch.tensor([90.0, 100.0, 110.0]))  # mean 100, std 10
    scores = torch.tensor([100.0, 130.0, 60.0, 95.0])
    one_sided = typical_scores([scores], [reference])
    two_sided = typical_scores([scores], [reference], two_sided=True)
    torch.testing.assert_close(one_sided, torch.tensor([0.0, 3.0, -4.0, -0.5], dtype=torch.float64))
    torch.testing.assert_close(two_sided, torch.tensor([0.0, 3.0, 4.0, 0.5], dtype=torch.float64))
    # several members: the smallest distance, so an image typical for one member is normal
    other = typical_reference(torch.tensor([55.0, 60.0, 65.0]))  # mean 60, std 5
    mixed = typical_scores([scores, scores], [reference, other], two_sided=True)
    torch.testing.assert_close(mixed, torch.tensor([0.0, 3.0, 0.0, 0.5], dtype=torch.float64))


def test_threshold_json_checks_the_new_fields():
    record = {"threshold": 1.0, "method": "complexity", "complexity_rates": {"/runs/a": 0.05}}
    assert check_threshold(dict(record)) == record
    assert check_threshold({"threshold": 1.0, "method": "ratio", "background": "/runs/b"})["background"] == "/runs/b"
    assert check_threshold({"threshold": 1.0, "method": "elbo", "combine": "typical-set"})["combine"] == "typical-set"
    for bad, match in [({"complexity_rates": {"/runs/a": float("nan")}}, "complexity_rates"),
                       ({"complexity_rates": [0.05]}, "complexity_rates"),
                       ({"complexity_rates": {"/runs/a": "0.05"}}, "complexity_rates"),
                       ({"background": 3}, "background"), ({"combine": "typical-sets"}, "combine")]:
        with pytest.raises(ValueError, match=match):
            check_threshold({**record, **bad})
