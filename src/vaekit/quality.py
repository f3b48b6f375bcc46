"""Sample quality in the feature space of a small classifier vaekit ships (vaekit.classifier): how far a model's
samples lie from real images, and how much of the real images' variety they cover.

The protocol (`QUALITY_PROTOCOL`): n samples (default 10,000) decoded to their pixel means in [0, 1], against
the run's held-out images (the test split: 10,000 for MNIST) in [0, 1], both seen through the classifier's 128
penultimate features (ReLU activations). Nothing here is FID: there are no Inception weights, and an
Inception network on 28x28 digits measures little. Numbers from different classifiers are not comparable.

- FD-classifier: the Frechet distance between Gaussians fitted to the two sets of features (the formula
  of FID, Heusel et al. 2017, in this classifier's space). 0 for identical statistics.
- precision and recall (Kynkaanniemi et al. 2019): each real feature vector gets a ball reaching its k-th
  nearest real neighbour (k = 3, the paper's); precision is the share of samples inside some real ball
  (are samples realistic?), recall the share of real images inside some sample ball (is the data covered?).
  density (Naeem et al. 2020) is the mean count of real balls holding a sample, over k (about 1 for samples
  like the real images). Both are fooled where bad samples fall together: uniform noise, which the MNIST
  classifier reads as one class, lands inside the large balls of real outliers (precision 0.94, density
  0.66; recall 0, class coverage 0.1, FD-classifier 650). Read them beside recall and class coverage.
- MMD^2: the unbiased squared maximum mean discrepancy with the cubic polynomial kernel
  k(a, b) = (a.b / F + 1)^3 (the kernel of KID, Binkowski et al. 2018). It compares the two distributions of
  features through their first three moments, with no Gaussian assumption and no bias from the sample
  count, so it is the number to trust for small n; 0 in expectation for the same distribution.
- confidence: the classifier's mean top-class probability on the samples (readable digits score high).
- class coverage: the overlap of the samples' predicted-class histogram with the real images'
  (sum over classes of the smaller share; 1 = the same class balance, 0.1 = one class only).
"""

from __future__ import annotations

from typing import Any

import torch

QUALITY_K = 3
QUALITY_SAMPLES = 10_000
MAX_QUALITY_SAMPLES = 100_000  # held in memory as pixels: 100,000 MNIST samples are 314 MB
QUALITY_PROTOCOL = ("{n:,} samples (pixel means in [0, 1]) against {m:,} held-out images (in [0, 1]), in the "
                    "128 penultimate features of vaekit's {classifier} classifier; precision and recall with "
                    f"k = {QUALITY_K}; MMD^2 with the cubic polynomial kernel")
BLOCK = 1000  # rows of a distance or kernel matrix computed at a time: memory stays BLOCK * N


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to features a (N, F), b (M, F)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt eigenvalues of S_a^(1/2) S_b S_a^(1/2), symmetric PSD: no complex sqrtm
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return ((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root).clamp_min(0).item()


def kth_neighbour_radii(x: torch.Tensor, k: int = QUALITY_K) -> torch.Tensor:
    """The distance (N,) from each row of x (N, F) to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"k = {k} neighbours need more than {k} points, got {len(x)}")
    radii = []
    for start in range(0, len(x), BLOCK):
        d = torch.cdist(x[start:start + BLOCK], x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0: the point itself
    return torch.cat(radii)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = QUALITY_K) -> tuple[float, float, float]:
    """Improved precision and recall of samples `fake` (M, F) against `real` (N, F) (Kynkaanniemi et al. 2019),
    and density (Naeem et al. 2020): the mean number of real balls a sample lies in, over k."""
    real, fake = real.float(), fake.float()
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    balls = []  # per sample: how many real balls hold it
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(fake), BLOCK):
        d = torch.cdist(fake[start:start + BLOCK], real)  # (B, N)
        balls.append((d <= real_radii).sum(1))
        covered |= (d <= fake_radii[start:start + BLOCK, None]).any(0)
    balls = torch.cat(balls)
    return (balls > 0).float().mean().item(), covered.float().mean().item(), balls.double().mean().item() / k


def mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD^2 between features a (N, F) and b (M, F) with k(x, y) = (x.y / F + 1)^3."""
    a, b = a.double(), b.double()
    features = a.shape[1]

    def kernel_sum(x: torch.Tensor, y: torch.Tensor, same: bool) -> float:
        total = 0.0
        for start in range(0, len(x), BLOCK):
            block = (x[start:start + BLOCK] @ y.T / features + 1) ** 3
            total += block.sum().item()
            if same:  # leave out k(x_i, x_i)
                total -= block.diagonal(offset=start).sum().item()
        return total

    n, m = len(a), len(b)
    if n < 2 or m < 2:
        raise ValueError("MMD^2 needs at least two points in each set")
    return (kernel_sum(a, a, True) / (n * (n - 1)) + kernel_sum(b, b, True) / (m * (m - 1))
            - 2 * kernel_sum(a, b, False) / (n * m))


def class_coverage(fake_probs: torch.Tensor, real_probs: torch.Tensor) -> float:
    """sum_c min(share of samples predicted c, share of real images predicted c)."""
    classes = real_probs.shape[1]
    fake = torch.bincount(fake_probs.argmax(1), minlength=classes).double() / len(fake_probs)
    real = torch.bincount(real_probs.argmax(1), minlength=classes).double() / len(real_probs)
    return torch.minimum(fake, real).sum().item()


def feature_quality(real_features: torch.Tensor, real_probs: torch.Tensor, fake_features: torch.Tensor,
                    fake_probs: torch.Tensor, k: int = QUALITY_K) -> dict[str, Any]:
    """Every metric of the module docstring, from the classifier's features (N, F) and probabilities (N, C)."""
    precision, recall, density = precision_recall(real_features, fake_features, k)
    return {"fd_classifier": frechet_distance(real_features, fake_features), "precision": precision, "recall": recall,
            "density": density,
            "mmd2": mmd2(real_features, fake_features), "confidence": fake_probs.max(1).values.mean().item(),
            "class_coverage": class_coverage(fake_probs, real_probs)}


def image_quality(real: torch.Tensor, fake: torch.Tensor, classifier: str = "mnist", k: int = QUALITY_K,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """The metrics of images `fake` against images `real`, each (N, 1, 28, 28) in [0, 1], through the named
    shipped classifier: what `vaekit quality` reports, callable on any model's samples (a benchmark's)."""
    from .classifier import INPUT_SHAPE, classify, load_classifier

    for what, x in (("real", real), ("fake", fake)):
        if tuple(x.shape[1:]) != INPUT_SHAPE:
            raise ValueError(f"the classifier reads {INPUT_SHAPE} images; the {what} images are {tuple(x.shape[1:])}")
    model, note = load_classifier(classifier, device)
    real_features, real_probs = classify(model, real)
    fake_features, fake_probs = classify(model, fake)
    result = feature_quality(real_features, real_probs, fake_features, fake_probs, k)
    result.update(samples=len(fake), references=len(real), k=k, classifier=classifier,
                  classifier_test_accuracy=note.get("test_accuracy"))
    return result


def run_quality(run, sampler: str = "prior", n: int = QUALITY_SAMPLES, seed: int = 0, classifier: str | None = None,
                data_dir=None, k: int = QUALITY_K) -> dict[str, Any]:
    """The metrics of `n` samples of a run (vaekit.runs.Run) drawn through `sampler`, against its held-out images,
    in the classifier of its dataset (or the one named): what `vaekit quality RUN` prints."""
    from .classifier import CLASSIFIERS
    from .data import to_unit
    from .errors import ConfigError
    from .generate import sample_many
    from .rng import derive_seed, make_generator
    from .samplers.store import load_sampler

    if not QUALITY_K < n <= MAX_QUALITY_SAMPLES:
        raise ConfigError(f"-n must be from {QUALITY_K + 1} to {MAX_QUALITY_SAMPLES:,} samples, got {n:,}")
    name = classifier or run.config.data.name
    if name not in CLASSIFIERS:
        raise ConfigError(f"vaekit ships classifiers for {', '.join(CLASSIFIERS)}; this run trained on "
                          f"{run.config.data.name}: pass --classifier with the one whose images yours resemble")
    drawn_from = load_sampler(run, sampler)
    device = next(run.model.parameters()).device
    fake = sample_many(run.model, n, make_generator(derive_seed(seed, "quality", sampler), device), drawn_from)
    real = to_unit(run.held_out(data_dir).images)
    try:
        result = image_quality(real, fake, name, k, device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    result.update(sampler=sampler, seed=seed,
                  protocol=QUALITY_PROTOCOL.format(n=len(fake), m=len(real), classifier=name))
    return result
