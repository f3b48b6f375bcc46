"""Sample-quality metrics (vaekit.quality) on constructed cases, in the shipped classifiers' features."""

from __future__ import annotations

import pytest
import torch

from vaekit.classifier import CLASSIFIERS, classify, load_classifier
from vaekit.data import to_unit
from vaekit.quality import class_coverage, feature_quality, frechet_distance, image_quality, mmd2, precision_recall


@pytest.fixture(scope="module")
def test_features(mnist_test):
    model, _ = load_classifier("mnist")
    return classify(model, to_unit(mnist_test.images[:4000]))


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 2.0, 1.5]) + torch.tensor(
        [1.0, 0.0, -2.0])
    # diagonal covariances: ||mu_a - mu_b||^2 + sum (sigma_a - sigma_b)^2 = 5 + (1 + 0 + 1) = 7
    assert frechet_distance(a, b) == pytest.approx(7.0, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_the_shipped_classifiers_load_and_classify_their_test_sets(mnist_test):
    for name in CLASSIFIERS:
        _, note = load_classifier(name)
        assert note["data"] == name and note["test_accuracy"] > 0.88
    model, note = load_classifier("mnist")
    _, probs = classify(model, to_unit(mnist_test.images[:1000]))
    accuracy = (probs.argmax(1) == mnist_test.labels[:1000]).float().mean().item()
    assert accuracy > 0.97 and note["test_accuracy"] > 0.98


def test_test_set_against_itself_is_near_zero_and_noise_is_far(test_features):
    features, probs = test_features
    halves = feature_quality(features[:2000], probs[:2000], features[2000:], probs[2000:])
    same = feature_quality(features, probs, features, probs)
    noise_images = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise_features, noise_probs = classify(load_classifier("mnist")[0], noise_images)
    noise = feature_quality(features[:2000], probs[:2000], noise_features, noise_probs)
    assert same["fd_classifier"] < 1e-3 and same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["class_coverage"] == pytest.approx(1.0)
    assert halves["fd_classifier"] < 0.01 * noise["fd_classifier"]
    assert halves["precision"] > 0.65 and halves["recall"] > 0.65  # k = 3 balls of one half hold most of the other
    assert noise["recall"] < 0.01
    assert noise["class_coverage"] < 0.3  # uniform noise reads as one class (and fools precision: see vaekit.quality)
    assert abs(halves["mmd2"]) < 0.01 * noise["mmd2"]
    assert halves["class_coverage"] > 0.95


def test_a_shuffled_set_keeps_its_distance(test_features):
    """The metrics see a set of images, not their order nor their labels: the same images shuffled (their labels
    with them, or not at all) measure the same."""
    features, probs = test_features
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(1))
    plain = feature_quality(features[:2000], probs[:2000], features[2000:], probs[2000:])
    shuffled = feature_quality(features[:2000], probs[:2000], features[2000:][order], probs[2000:][order])
    for key, value in plain.items():
        assert shuffled[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def test_one_class_of_samples_covers_a_tenth_and_is_imprecise_about_nothing(mnist_test, test_features):
    features, probs = test_features
    ones = mnist_test.labels[:4000] == 1
    result = feature_quality(features, probs, features[ones], probs[ones])
    assert result["precision"] == 1.0  # every one is a real image
    assert result["recall"] < 0.25  # but only the ones are covered
    assert result["class_coverage"] == pytest.approx(ones.float().mean().item(), abs=0.01)


def test_precision_and_recall_of_a_subset():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 4, generator=g)
    precision, recall, density = precision_recall(real, real[real[:, 0] > 1])  # one tail of the data
    assert precision == 1.0 and recall < 0.35 and density > 0.5


def test_mmd2_is_unbiased_for_the_same_distribution():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3000, 16, generator=g), torch.randn(3000, 16, generator=g)
    assert abs(mmd2(a, b)) < 0.01 < mmd2(a, b + 0.5)


def test_class_coverage_is_the_histogram_overlap():
    real = torch.eye(4)[torch.tensor([0, 1, 2, 3])]
    fake = torch.eye(4)[torch.tensor([0, 0, 1, 1])]
    assert class_coverage(fake, real) == pytest.approx(0.5)


def test_image_quality_refuses_other_shapes():
    with pytest.raises(ValueError, match="28"):
        image_quality(torch.rand(10, 1, 28, 28), torch.rand(10, 3, 32, 32))
