"""Disentanglement scores of a representation against known factors of variation: MIG, DCI, the FactorVAE score.

Pure compute on numpy arrays: `codes` is (N, D) float (a model's posterior means), `factors` (N, K) int (each
factor's value index, e.g. `vaekit.data.dsprites` indices). Each score follows its paper and, where the paper
leaves a choice open, google-research/disentanglement_lib (Locatello et al. 2019), so that numbers compare with
that study's:

- MIG (Chen et al. 2018, Sec. 4.1): every code is discretized into `bins` (20) equal-width bins over its range
  (disentanglement_lib's `_histogram_discretize`); the mutual information I(code_j; factor_k) is the plug-in
  estimate from the joint histogram, in nats; MIG is the mean over factors of (largest - second largest MI over
  codes) / H(factor_k). Protocol: 10,000 samples (disentanglement_lib's `num_train`).
- Sampled MIG (`sampled_mig`, reported beside MIG): the paper's own definition on the stochastic code, the
  mutual information between z_j ~ q(z_j|x) and each factor estimated from the posteriors' mixture densities as
  Chen et al.'s reference code does, on the same 10,000 images. Their MIG on dSprites also leaves the shape factor
  out (`vaekit.dsprites_scores` gives that mean too, "mig_chen").
- DCI (Eastwood & Williams 2018): one regressor per factor predicts it from all codes; the importance matrix
  R (D x K) holds each code's importance for each factor. Disentanglement = sum_j rho_j (1 - H_K(P_j.)),
  P_j. = R_j. / sum_k R_jk, rho_j = sum_k R_jk / sum R; completeness = sum_k rho_k (1 - H_D(P_.k)), with
  entropies in base K and D. Estimator `lasso` (the default, no dependency): a lasso on standardized codes
  predicting the standardized factor index (L1 weight alpha 0.05: a code correlated with a factor by less is
  ignored, so pure noise gets no importance at all), importance |w|, informativeness = mean test R^2 (clipped
  at 0), as in the paper's lasso variant; a linear model, so it treats the shape index as a number.
  Estimator `gbt` (needs scikit-learn): disentanglement_lib's
  GradientBoostingClassifier per factor, importance = feature_importances_, informativeness = mean test
  accuracy. Protocol: 10,000 training and 5,000 test samples.
- FactorVAE score (Kim & Mnih 2018, Sec. 4): each vote fixes one factor (uniformly chosen) at a random value,
  samples `batch` (64) observations that share it, divides each code's variance over the batch by its variance
  over the whole data (10,000 samples), and takes the code of least normalized variance; a majority-vote
  classifier maps each code to the factor it was most often chosen for; the score is its accuracy on 5,000 fresh
  votes (trained on 10,000). Codes whose global standard deviation is below 0.05 (collapsed to the prior) are
  left out, as disentanglement_lib's study configuration sets `prune_dims.threshold`; with none left the
  score is 0.

Random draws take a `numpy.random.Generator`: same seed, same scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("lasso", "gbt")
EPS = 1e-11  # added to importances before their entropies, as disentanglement_lib does


@dataclass(frozen=True)
class Protocol:
    """Sample counts and estimators of the three scores (defaults: disentanglement_lib's)."""

    mig_samples: int = 10_000
    bins: int = 20
    dci_train: int = 10_000
    dci_test: int = 5_000
    dci_estimator: str = "lasso"
    lasso_alpha: float = 0.05
    factor_vae_batch: int = 64
    factor_vae_train: int = 10_000
    factor_vae_eval: int = 5_000
    factor_vae_variance_samples: int = 10_000
    factor_vae_prune: float = 0.05

    def __post_init__(self):
        for name in ("mig_samples", "bins", "dci_train", "dci_test", "factor_vae_train", "factor_vae_eval",
                     "factor_vae_variance_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(f"{name} must be an integer of at least 2, got {getattr(self, name)!r}")
        if not isinstance(self.factor_vae_batch, int) or self.factor_vae_batch < 2:
            raise ValueError(f"factor_vae_batch must be an integer of at least 2, got {self.factor_vae_batch!r}")
        if not (isinstance(self.factor_vae_prune, float) and self.factor_vae_prune >= 0):
            raise ValueError(f"factor_vae_prune must be a non-negative float, got {self.factor_vae_prune!r}")
        if self.dci_estimator not in ESTIMATORS:
            raise ValueError(f"dci_estimator must be one of {', '.join(ESTIMATORS)}, got {self.dci_estimator!r}")
        if not (isinstance(self.lasso_alpha, float) and 0 < self.lasso_alpha < 1):
            raise ValueError(f"lasso_alpha must lie in (0, 1), got {self.lasso_alpha!r}")


DEFAULT_PROTOCOL = Protocol()
Represent = Callable[[np.ndarray], np.ndarray]  # (n, K) factor indices -> (n, D) codes (draws its own images)


def sample_factors(sizes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, K) int64 factor indices drawn uniformly and independently."""
    return np.stack([rng.integers(0, size, n) for size in sizes], axis=1).astype(np.int64)


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"expected codes (N, D) and factors (N, K) with the same N >= 2, found {codes.shape} and "
                         f"{factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer value indices, found {factors.dtype}")
    if not np.isfinite(codes).all():
        raise ValueError("codes hold non-finite values")
    return codes.astype(np.float64), factors.astype(np.int64)


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """(N, D) codes -> (N, D) bin numbers: `bins` equal-width bins over each code's range (disentanglement_lib)."""
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def _labels(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete label arrays of equal length."""
    a, b = _labels(a), _labels(b)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, (joint[nz] * np.log(joint[nz] / outer[nz])).sum()))


def entropy(labels: np.ndarray) -> float:
    """Plug-in entropy (nats) of a discrete label array."""
    p = np.bincount(_labels(labels)) / len(labels)
    return float(-(p * np.log(p)).sum())


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> dict:
    """MIG (Chen et al. 2018): {"mig", "per_factor" (K,), "mutual_information" (D, K) nats, "factor_entropy" (K,)}."""
    codes, factors = _check(codes, factors)
    binned = discretize(codes, bins)
    mi = np.array([[mutual_information(binned[:, j], factors[:, k]) for k in range(factors.shape[1])]
                   for j in range(codes.shape[1])])
    return _gaps(mi, factors)


def _gaps(mi: np.ndarray, factors: np.ndarray) -> dict:
    """MIG from the (D, K) mutual information of codes and factors: per factor, the gap between its two most
    informative codes over the factor's entropy, and their mean."""
    h = np.array([entropy(factors[:, k]) for k in range(factors.shape[1])])
    if (h <= 0).any():
        raise ValueError(f"factor {int(np.argmin(h))} takes one value only: its MIG is undefined")
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    per_factor = (top[0] - second) / h
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, "mutual_information": mi,
            "factor_entropy": h}


def mixture_entropy(samples: np.ndarray, mu: np.ndarray, logvar: np.ndarray, block: int = 1 << 22) -> float:
    """-mean_s log (1/M) sum_n N(samples_s; mu_n, exp(logvar_n)), in nats: the Monte Carlo entropy of a 1-D
    Gaussian mixture at draws from it (one per component, as Chen et al.'s `estimate_entropies`), each (M,)."""
    import torch

    from .models.posterior import pair_log_density

    x, m, lv = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (samples, mu, logvar))
    precision = torch.exp(-lv)
    rows = max(1, block // len(m))
    total = 0.0  # float64 sums
    for start in range(0, len(x), rows):
        pairs = pair_log_density(x[start:start + rows], m, lv, precision)[0]
        total += float(torch.logsumexp(pairs, dim=1).double().sum())
    return -(total / len(x) - float(np.log(len(m))))


def sampled_mig(mu: np.ndarray, logvar: np.ndarray, factors: np.ndarray, rng: np.random.Generator) -> dict:
    """MIG as Chen et al. (2018, Sec. 4.1) define it on the *stochastic* code, estimated as their reference code
    (rtqichen/beta-tcvae, metric_helpers/mi_metric.py) does, on N images' posteriors (mu, logvar) (N, D):
    I(z_j; v_k) = H(z_j) - sum_v p(v) H(z_j | v_k = v), each entropy the `mixture_entropy` of the posteriors
    q(z_j | x_n) of the images concerned (all N, or those with v_k = v) at one draw z_nj ~ q(z_j | x_n) each
    (drawn from `rng`); MI clamped at 0, gaps divided by the factor's entropy as in `mig`. Unlike `mig`, a latent
    whose mean still moves with a factor but whose posterior is as wide as the prior carries no information."""
    codes, factors = _check(mu, factors)
    logvar = np.asarray(logvar, dtype=np.float64)
    if logvar.shape != codes.shape or not np.isfinite(logvar).all():
        raise ValueError(f"logvar must be finite and shaped like mu {codes.shape}, found {logvar.shape}")
    z = codes + np.exp(0.5 * logvar) * rng.standard_normal(codes.shape)
    dims, n_factors = codes.shape[1], factors.shape[1]
    marginal = np.array([mixture_entropy(z[:, j], codes[:, j], logvar[:, j]) for j in range(dims)])
    conditional = np.zeros((dims, n_factors))
    for k in range(n_factors):
        for value in np.unique(factors[:, k]):
            group = factors[:, k] == value
            share = group.mean()
            for j in range(dims):
                conditional[j, k] += share * mixture_entropy(z[group, j], codes[group, j], logvar[group, j])
    return _gaps(np.maximum(marginal[:, None] - conditional, 0.0), factors)


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base `base`) of each row of non-negative weights, normalized per row (scipy.stats.entropy)."""
    p = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of a (D, K) importance matrix (Eastwood & Williams 2018, Sec. 3)."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    d, k = r.shape
    weights = r if r.sum() > 0 else np.ones_like(r)
    code_weight = weights.sum(axis=1) / weights.sum()
    factor_weight = weights.sum(axis=0) / weights.sum()
    per_code = 1.0 - _entropy_rows(r + EPS, k) if k > 1 else np.ones(d)
    per_factor = 1.0 - _entropy_rows(r.T + EPS, d) if d > 1 else np.ones(k)
    return float((per_code * code_weight).sum()), float((per_factor * factor_weight).sum())


def lasso(x: np.ndarray, y: np.ndarray, alpha: float, iterations: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """(D,) weights minimizing ||y - x w||^2 / (2N) + alpha ||w||_1 by cyclic coordinate descent (x, y centred)."""
    n, d = x.shape
    w = np.zeros(d)
    col_sq = (x * x).sum(axis=0) / n
    residual = y.astype(np.float64).copy()
    for _ in range(iterations):
        biggest = 0.0
        for j in range(d):
            if col_sq[j] == 0:
                continue
            rho = x[:, j] @ residual / n + col_sq[j] * w[j]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / col_sq[j]
            if new != w[j]:
                residual -= x[:, j] * (new - w[j])
                biggest = max(biggest, abs(new - w[j]))
                w[j] = new
        if biggest < tol:
            break
    return w


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def dci(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        estimator: str = "lasso", alpha: float = 0.05, seed: int = 0) -> dict:
    """DCI (Eastwood & Williams 2018): {"disentanglement", "completeness", "informativeness", "importance" (D, K)}.

    `estimator` lasso: informativeness is the mean test R^2; gbt (scikit-learn): the mean test accuracy."""
    codes, factors = _check(codes, factors)
    codes_test, factors_test = _check(codes_test, factors_test)
    if codes_test.shape[1] != codes.shape[1] or factors_test.shape[1] != factors.shape[1]:
        raise ValueError("training and test codes and factors must have the same widths")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    informativeness = []
    for k in range(factors.shape[1]):
        if estimator == "lasso":
            x, xt = _standardize(codes, codes_test)
            y, yt = _standardize(factors[:, k:k + 1].astype(np.float64), factors_test[:, k:k + 1].astype(np.float64))
            w = lasso(x, y[:, 0], alpha)
            importance[:, k] = np.abs(w)
            residual = yt[:, 0] - xt @ w
            total = ((yt[:, 0] - yt[:, 0].mean()) ** 2).sum()
            informativeness.append(max(0.0, 1.0 - (residual ** 2).sum() / total) if total > 0 else 0.0)
        else:
            from sklearn.ensemble import GradientBoostingClassifier

            model = GradientBoostingClassifier(random_state=seed).fit(codes, factors[:, k])
            importance[:, k] = np.abs(model.feature_importances_)
            informativeness.append(float((model.predict(codes_test) == factors_test[:, k]).mean()))
    d, c = dci_from_importance(importance)
    return {"disentanglement": d, "completeness": c, "informativeness": float(np.mean(informativeness)),
            "importance": importance}


def factor_vae_score(represent: Represent, sizes: tuple[int, ...], rng: np.random.Generator, batch: int = 64,
                     train: int = 10_000, evaluate: int = 5_000, variance_samples: int = 10_000,
                     prune: float = 0.05) -> dict:
    """The FactorVAE score (Kim & Mnih 2018): {"train_accuracy", "eval_accuracy", "votes" (D, K), "active" (D,)}."""
    global_var = np.var(np.asarray(represent(sample_factors(sizes, variance_samples, rng)), np.float64), axis=0,
                        ddof=1)
    active = (np.sqrt(global_var) >= prune) & (global_var > 0)  # prune 0 still leaves constant codes out
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "votes": np.zeros((len(global_var), len(sizes))),
                "active": active}

    def votes(count: int) -> np.ndarray:
        table = np.zeros((len(global_var), len(sizes)), dtype=np.int64)
        for _ in range(count):
            k = int(rng.integers(len(sizes)))
            factors = sample_factors(sizes, batch, rng)
            factors[:, k] = factors[0, k]
            codes = np.asarray(represent(factors), np.float64)
            local = np.var(codes, axis=0, ddof=1)
            j = int(np.flatnonzero(active)[np.argmin(local[active] / global_var[active])])
            table[j, k] += 1
        return table

    train_votes = votes(train)
    classifier = np.argmax(train_votes, axis=1)
    rows = np.arange(len(classifier))
    eval_votes = votes(evaluate)
    return {"train_accuracy": float(train_votes[rows, classifier].sum() / train_votes.sum()),
            "eval_accuracy": float(eval_votes[rows, classifier].sum() / eval_votes.sum()),
            "votes": train_votes, "active": active}


def mig_of(represent: Represent, sizes: tuple[int, ...], rng: np.random.Generator,
           protocol: Protocol = DEFAULT_PROTOCOL) -> tuple[dict, np.ndarray]:
    """`mig` of protocol.mig_samples factor draws from `rng` (the first draws `scores` makes), and the (N, D) codes."""
    factors = sample_factors(sizes, protocol.mig_samples, rng)
    codes = represent(factors)
    return mig(codes, factors, protocol.bins), codes


def scores(represent: Represent, sizes: tuple[int, ...], seed: int = 0, protocol: Protocol = DEFAULT_PROTOCOL) -> dict:
    """All three scores of a representation, every sample drawn from numpy's Generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    out = {"mig": mig_of(represent, sizes, rng, protocol)[0]}
    train, test = sample_factors(sizes, protocol.dci_train, rng), sample_factors(sizes, protocol.dci_test, rng)
    out["dci"] = dci(represent(train), train, represent(test), test, protocol.dci_estimator, protocol.lasso_alpha,
                     seed)
    out["factor_vae"] = factor_vae_score(represent, sizes, rng, protocol.factor_vae_batch, protocol.factor_vae_train,
                                         protocol.factor_vae_eval, protocol.factor_vae_variance_samples,
                                         protocol.factor_vae_prune)
    return out
