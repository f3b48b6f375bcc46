"""Anomaly detection with a trained VAE: per-image scores, thresholds, and the ROC of a labelled test.

A VAE trained on normal images gives unlikely inputs a high negative log-likelihood. The scores,
all per image in nats (higher is more anomalous):

- elbo: the negative ELBO, reconstruction plus KL, from one seeded posterior sample; the cheapest
  full-likelihood score, and unlike a reconstruction error it keeps the KL (PyOD's VAE drops it).
- iwae: the importance-weighted estimate of -log p(x) with K samples (Burda et al. 2016): tighter,
  and K times the cost.
- recon: -log p(x | z = posterior mean), the reconstruction term alone.
- mse: the squared error of the posterior-mean reconstruction, summed over pixels (not in nats), the
  score of reconstruction-based detectors such as PyOD's VAE.
- complexity: the elbo score less the image's length as a PNG file at an exchange rate of nats per bit
  (Serrà et al. 2020, vaekit.complexity): the likelihood corrected for how simple the image is.
- ratio: the elbo score minus a background model's (Ren et al. 2019, vaekit.background): a model trained
  on the training images with a share of their pixels replaced by noise, which learns what every image
  shares and not what the normal ones show.

Likelihood scores share a known failure (Nalisnick et al. 2019): images simpler than the normal class,
such as a 1 against a model of 8s, or MNIST's digits against a model of Fashion-MNIST, get a higher
likelihood than the normal images themselves. The complexity and ratio scores and the typical-set rule
are the published remedies (docs/anomaly-detection.md measures them).

Several runs can score as one detector, one run per kind of normal image (say, per digit); it often
detects what none of them was trained on better than one run trained on all of it. Two rules combine
their scores (MIXTURE_RULES):

- density (`mixture_scores`): the equal-weight mixture of their densities, in nats.
- typical (`typical_scores`): each run's score measured against the scores it gives its own held-out
  normal images, in their standard deviations, and the smallest taken: an image is normal if it is
  typical for some run. Kinds differ in how likely their images are (a 1 is simpler than an 8), and
  under the density rule a simple image of no kind can pass for the likeliest kind.
- typical-set (`typical_scores(..., two_sided=True)`): the same distance taken both ways, so an image
  far likelier than a run's normal images is anomalous too (Nalisnick et al.'s typicality test); it
  applies to a single run as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from .acceleration import accumulator_dtype
from .background import ratio_scores
from .choices import MIXTURE_RULES, SCORE_METHODS  # noqa: F401 (MIXTURE_RULES: re-exported)
from .complexity import LN2, complexity_scores, png_bits
from .config import RunConfig
from .distributed import World
from .evaluate import EVAL_BATCH, importance_weighted_nll
from .models import LatentVariableModel
from .rng import derive_seed, make_generator

MIXTURE_METHODS = ("elbo", "iwae", "recon")  # scores in nats: -log of a density (mse is not one)
# what runs scored as one mixture must share: their scores are then densities of the same inputs
_MIXTURE_MUST_MATCH = {"image size": lambda c: tuple(c.model.input_shape), "likelihood": lambda c: c.model.likelihood,
                       "--standardize": lambda c: c.data.standardize, "--binarize": lambda c: c.data.binarize}


@torch.no_grad()
def anomaly_scores(model: LatentVariableModel, x: torch.Tensor, method: str = "elbo", seed: int = 0,
                   iw_samples: int = 100, batch_size: int = EVAL_BATCH, progress: bool = False,
                   world: World | None = None, background: LatentVariableModel | None = None,
                   complexity_rate: float = LN2) -> torch.Tensor:
    """Per-image anomaly scores (N,) in nats for model inputs x (N, C, H, W); higher is more anomalous.
    `background`: the background model the ratio score needs (vaekit.background); `complexity_rate`: the
    nats per bit of compressed length the complexity score subtracts (vaekit.complexity; ln 2 is Serrà et al.'s).

    `world` (vaekit.distributed): the processes share the batches out whole and gather the scores in order, the
    single process's bit for bit (each image's noise is drawn with all of it, whoever scores it)."""
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown score {method!r}; choose one of {', '.join(SCORE_METHODS)}")
    if (method == "ratio") != (background is not None):
        raise ValueError("the ratio score needs a background model, and only it takes one")
    if method in ("complexity", "ratio"):
        scores = anomaly_scores(model, x, "elbo", seed, iw_samples, batch_size, progress, world)
        if method == "complexity":
            return complexity_scores(scores, png_bits(x), complexity_rate).to(scores.device)
        return ratio_scores(scores, anomaly_scores(background, x, "elbo", seed, iw_samples, batch_size, progress,
                                                   world))
    model.require("score")
    world = world or World()
    if method == "iwae":
        return importance_weighted_nll(model, x, iw_samples, seed, progress=progress, world=world)
    was_training = model.training
    model.eval()
    # all the noise at once: an image's score then does not depend on the batch it is scored in
    eps_all = torch.randn(len(x), model.latent_dim,
                          generator=make_generator(derive_seed(seed, "score-noise"), x.device), device=x.device)
    frozen = model.freeze()
    out = torch.empty(len(x), dtype=accumulator_dtype(x.device), device=x.device)
    mine = world.blocks(len(x), batch_size)
    for start in tqdm(range(mine.start, mine.stop, batch_size), desc=f"scoring ({method})", unit="batch",
                      leave=False, disable=not progress):
        batch = x[start:start + batch_size]
        if method in ("recon", "mse"):
            params = model.decode(model.encode(batch).mode(), batch)
            out[start:start + batch_size] = (model.likelihood.nll(params, batch)
                                             if method == "recon" else
                                             (model.pixel_means(params) - batch).pow(2).sum((-3, -2, -1)))
        else:
            eps = eps_all[start:start + batch_size]
            out[start:start + batch_size] = model.elbo(batch, eps, frozen).loss
    model.train(was_training)
    return world.gather(out[mine]) if world.distributed else out


def mixture_scores(member_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Scores under the equal-weight mixture of several models, from each one's scores of the same images.

    A member's score s_m(x) in nats is -log p_m(x); the mixture's is -log((1/M) sum_m p_m(x)), computed
    in float64 without leaving log space. An image is normal to the mixture if any member finds it likely.
    """
    if not member_scores:
        raise ValueError("a mixture needs at least one member's scores")
    stacked = torch.stack([s.double() for s in member_scores])
    return math.log(len(member_scores)) - torch.logsumexp(-stacked, 0)


def typical_reference(reference_scores: torch.Tensor) -> tuple[float, float]:
    """What the typical rule needs of a member: the mean and standard deviation of its scores of its own
    held-out normal images. ValueError if they have no spread."""
    reference = reference_scores.double()
    spread = reference.std().item() if len(reference) > 1 else 0.0
    if not spread > 0:
        raise ValueError(f"a member's reference scores need a spread: got {len(reference)} images "
                         f"with standard deviation {spread:g}")
    return reference.mean().item(), spread


def typical_scores(member_scores: Sequence[torch.Tensor], references: Sequence[tuple[float, float]],
                   two_sided: bool = False) -> torch.Tensor:
    """Scores under the most typical member: min over members m of (s_m(x) - mean_m) / std_m, or with
    `two_sided` of |s_m(x) - mean_m| / std_m.

    member_scores[m] are member m's scores of the images; references[m] is `typical_reference` of its
    scores of its own held-out normal images, whose mean and standard deviation put its scores in
    common units. One-sided (the typical rule), an image is normal if some member finds it as likely as
    that member's own normal images, or likelier. Two-sided (the typical-set rule), if some member finds
    it neither much less nor much more likely than its own normal images: the typicality test of
    Nalisnick et al. 2019 ("Detecting out-of-distribution inputs to deep generative models using
    typicality", eq. 4, one image at a time), which catches the images a model finds far too likely (a
    blank image). With one member, the distance of its score from its normal scores' mean.
    """
    if not member_scores or len(member_scores) != len(references):
        raise ValueError(f"typical scores need each member's scores and its reference, got "
                         f"{len(member_scores)} and {len(references)}")
    distance = torch.abs if two_sided else (lambda z: z)
    return torch.stack([distance((scores.double() - mean) / spread)
                        for scores, (mean, spread) in zip(member_scores, references)]).min(0).values


def check_mixable(configs: dict[str, RunConfig], method: str, density: bool = True) -> None:
    """ValueError unless runs (named by the keys) can score the same inputs as one mixture with `method`.

    Their scores must be densities of the same thing: the same image size, pixel likelihood and input
    preparation (standardization and binarization), and, for the density rule (`density`), a score in nats;
    the typical rules measure each run's scores in their own units, and take any score.
    """
    if density and method not in MIXTURE_METHODS:
        raise ValueError(f"a mixture of runs needs a score in nats ({', '.join(MIXTURE_METHODS)}), not {method}")
    (first_name, first), *others = configs.items()
    for name, config in others:
        for what, get in _MIXTURE_MUST_MATCH.items():
            if get(config) != get(first):
                raise ValueError(f"{name} cannot join a mixture with {first_name}: its {what} is {get(config)!r}, "
                                 f"not {get(first)!r}")


def check_background(config: RunConfig, background: RunConfig, name: str) -> None:
    """ValueError unless the background run `name` scores the same inputs as a run of `config`: a ratio of
    two densities needs the same image size, pixel likelihood and input preparation."""
    for what, get in _MIXTURE_MUST_MATCH.items():
        if get(background) != get(config):
            raise ValueError(f"the background run {name} must share the run's {what}: it has {get(background)!r}, "
                             f"the run {get(config)!r}")


def calibrate(scores: torch.Tensor, quantile: float, seed: int = 0) -> dict:
    """A threshold at the `quantile` of normal images' scores, and the false-positive rate it implies.

    The normal scores are split in two at random (seeded): the threshold is fitted on one half and its
    false-positive rate measured on the other, so the rate is an honest estimate rather than 1 - quantile
    by construction.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if len(scores) < 4:
        raise ValueError(f"calibration needs at least 4 normal images, got {len(scores)}")
    order = torch.randperm(len(scores), generator=make_generator(derive_seed(seed, "calibration-split")))
    fit, check = scores[order[: len(scores) // 2]], scores[order[len(scores) // 2:]]
    threshold = torch.quantile(fit.double(), quantile).item()
    return {"threshold": threshold, "quantile": quantile,
            "false_positive_rate": (check > threshold).double().mean().item(),
            "fitted_on": len(fit), "measured_on": len(check)}


TAIL_SCORES = 10  # fitted scores above a quantile for the threshold to be more than the largest few scores


def quantile_support(fitted_on: int, quantile: float) -> str | None:
    """A sentence saying that `calibrate`'s threshold rests on too few scores, if fewer than TAIL_SCORES
    of the `fitted_on` scores are expected above the `quantile` (fitted_on * (1 - quantile))."""
    needed = math.ceil(TAIL_SCORES / (1 - quantile) - 1e-9)  # 1e-9: 10 / (1 - 0.99) is 1000.0000000000009
    if fitted_on >= needed:
        return None
    return (f"the {quantile} quantile was fitted on {fitted_on} normal images (half of those given; the other half "
            f"measure its false-positive rate), and only {fitted_on * (1 - quantile):.2g} of them lie above it, too "
            f"few to place it reliably; {TAIL_SCORES} above it take {needed:,} (about {2 * needed:,} normal images in "
            "all): give more, or a lower --quantile")


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that an anomaly scores above a normal image (ties count 1/2).

    The Mann-Whitney U statistic from average ranks, exact with ties.
    """
    scores, is_anomaly = scores.double().cpu(), is_anomaly.bool().cpu()
    n_pos, n_neg = int(is_anomaly.sum()), int((~is_anomaly).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both anomalies and normal images")
    ranks = _average_ranks(scores)
    return ((ranks[is_anomaly].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def roc_curve(scores: torch.Tensor, is_anomaly: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """False- and true-positive rates (each (T+1,), from 0 to 1) as the threshold sweeps down the scores."""
    scores, is_anomaly = scores.double().cpu(), is_anomaly.bool().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores, labels = scores[order], is_anomaly[order].double()
    last_of_tie = torch.ones(len(scores), dtype=torch.bool)
    last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]  # one point per distinct threshold
    tp, fp = torch.cumsum(labels, 0)[last_of_tie], torch.cumsum(1 - labels, 0)[last_of_tie]
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, fp / fp[-1].clamp(min=1)]), torch.cat([zero, tp / tp[-1].clamp(min=1)])


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty(len(values), dtype=torch.float64)
    starts = torch.ones(len(values), dtype=torch.bool)
    starts[1:] = sorted_values[1:] != sorted_values[:-1]
    group = torch.cumsum(starts, 0) - 1  # tie group of each sorted position
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64)
    group_mean = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, positions)
    group_mean /= torch.bincount(group).double()
    ranks[order] = group_mean[group]
    return ranks
