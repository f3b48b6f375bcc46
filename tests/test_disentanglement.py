"""The disentanglement scores on constructed codes whose scores are known."""

import math

import numpy as np
import pytest

from vaekit import disentanglement as dis

SIZES = (3, 6, 10, 8, 8)


def grid(sizes=SIZES):
    """Every factor combination once: the factors are exactly independent, so MI between them is exactly 0."""
    return np.stack([g.ravel() for g in np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")], axis=1)


def rotate(codes, a, b, angle=math.pi / 4):
    z = (codes - codes.mean(0)) / codes.std(0)
    out = z.copy()
    c, s = math.cos(angle), math.sin(angle)
    out[:, a], out[:, b] = c * z[:, a] - s * z[:, b], s * z[:, a] + c * z[:, b]
    return out


def split(n, seed=0):
    order = np.random.default_rng(seed).permutation(n)
    return order[: n * 2 // 3], order[n * 2 // 3:]


def test_mutual_information_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 7, 3000), rng.integers(0, 5, 3000)
    b = np.where(rng.random(3000) < 0.5, a % 5, b)
    assert dis.mutual_information(a, b) == pytest.approx(metrics.mutual_info_score(a, b), rel=1e-12)
    assert dis.entropy(a) == pytest.approx(metrics.mutual_info_score(a, a), rel=1e-12)


def test_discretize_uses_equal_width_bins_over_the_range():
    codes = np.array([[0.0], [0.49], [0.51], [1.0], [2.0]])
    assert dis.discretize(codes, 2)[:, 0].tolist() == [1, 1, 1, 2, 2]


def test_mig_of_a_perfect_code_is_one_and_permuting_it_changes_nothing():
    factors = grid()
    codes = factors * 0.3 + 1.0
    assert dis.mig(codes, factors)["mig"] == pytest.approx(1.0, abs=1e-12)
    assert dis.mig(codes[:, [3, 1, 4, 0, 2]], factors)["mig"] == pytest.approx(1.0, abs=1e-12)
    # An extra code of pure noise does not lower it: MIG looks at the top two codes per factor.
    noisy = np.concatenate([codes, np.random.default_rng(0).normal(size=(len(codes), 1))], axis=1)
    assert dis.mig(noisy, factors)["mig"] > 0.99


def test_mig_of_a_rotated_code_loses_the_rotated_factors():
    factors = grid()
    result = dis.mig(rotate(factors.astype(float), 3, 4), factors)
    # A 45 degree turn of x and y makes two codes carry each factor equally: their gaps are 0.
    assert result["per_factor"][3] == pytest.approx(0.0, abs=1e-12)
    assert result["per_factor"][4] == pytest.approx(0.0, abs=1e-12)
    assert result["mig"] == pytest.approx(0.6, abs=1e-12)
    assert dis.mig(rotate(factors.astype(float), 3, 4, 0.2), factors)["mig"] < 0.95


def test_mig_of_noise_is_near_zero_and_a_missing_factor_counts_zero():
    factors = grid()
    assert dis.mig(np.random.default_rng(0).normal(size=factors.shape), factors)["mig"] < 0.01
    codes = factors.astype(float)
    codes[:, 2] = 0.0
    result = dis.mig(codes, factors)
    assert result["per_factor"][2] == 0.0
    assert result["mig"] == pytest.approx(0.8, abs=1e-12)


def test_mig_with_more_factor_values_than_bins_is_below_one():
    # 40 orientations into 20 equal bins: two values per bin, so the code keeps log 20 of the log 40 nats.
    factors = np.arange(40).repeat(3)[:, None]
    assert dis.mig(factors.astype(float), factors)["mig"] == pytest.approx(math.log(20) / math.log(40), rel=1e-12)


def test_mig_refuses_a_constant_factor_and_bad_shapes():
    with pytest.raises(ValueError, match="one value"):
        dis.mig(np.random.default_rng(0).normal(size=(10, 2)), np.zeros((10, 1), dtype=int))
    with pytest.raises(ValueError, match="same N"):
        dis.mig(np.zeros((10, 2)), np.zeros((9, 1), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        dis.mig(np.zeros((10, 2)), np.zeros((10, 1)))


def sampled_codes(sizes=(6, 8, 8), repeat=4):
    """A perfect stochastic code of a grid of factors: latent k = factor k's value at spacing 1, posterior standard
    deviation 0.05, so each value's posteriors stand apart and every latent holds its factor's log |v| nats."""
    factors = np.repeat(grid(sizes), repeat, axis=0)
    return factors.astype(float), np.full(factors.shape, 2 * math.log(0.05)), factors


def test_mixture_entropy_of_one_wide_gaussian_and_of_separate_narrow_ones():
    rng = np.random.default_rng(0)
    mu, logvar = np.zeros(4000), np.zeros(4000)  # every component N(0, 1): the entropy of N(0, 1)
    assert dis.mixture_entropy(rng.standard_normal(4000), mu, logvar) == pytest.approx(
        0.5 * math.log(2 * math.pi * math.e), abs=0.03)
    centres = np.repeat(np.arange(8.0) * 10, 500)  # 8 far-apart N(c, 0.1^2): log 8 + the entropy of one of them
    draws = centres + 0.1 * rng.standard_normal(4000)
    assert dis.mixture_entropy(draws, centres, np.full(4000, 2 * math.log(0.1))) == pytest.approx(
        math.log(8) + 0.5 * math.log(2 * math.pi * math.e * 0.01), abs=0.03)


def test_sampled_mig_of_perfect_permuted_rotated_and_noise_codes():
    mu, logvar, factors = sampled_codes()
    result = dis.sampled_mig(mu, logvar, factors, np.random.default_rng(0))
    np.testing.assert_allclose(result["mutual_information"].diagonal(), np.log([6, 8, 8]), atol=0.02)
    assert result["mig"] > 0.98
    assert dis.sampled_mig(mu[:, [2, 0, 1]], logvar, factors, np.random.default_rng(0))["mig"] == pytest.approx(
        result["mig"], abs=0.01)
    turned = rotate(mu, 1, 2) * mu[:, 1:].std()  # x and y at 45 degrees, the same spread as before
    rotated = dis.sampled_mig(turned, logvar, factors, np.random.default_rng(0))
    assert rotated["per_factor"][1:].max() < 0.1 and rotated["per_factor"][0] > 0.98
    noise = dis.sampled_mig(np.random.default_rng(1).standard_normal(mu.shape), logvar, factors,
                            np.random.default_rng(0))
    assert noise["mig"] < 0.05


def test_a_wide_posterior_whose_mean_follows_a_factor_costs_the_sampled_mig_nothing():
    """The difference from `mig`: a latent whose mean moves a little with x while its posterior is the prior
    (an unused latent, as trained models leave them) has the same histogram information as the used one, and no
    information once sampled."""
    mu, logvar, factors = sampled_codes()
    leaky_mu = np.concatenate([mu, 0.01 * mu[:, 1:2]], axis=1)
    leaky_logvar = np.concatenate([logvar, np.zeros((len(mu), 1))], axis=1)
    assert dis.mig(leaky_mu, factors)["per_factor"][1] == pytest.approx(0.0, abs=1e-12)
    sampled = dis.sampled_mig(leaky_mu, leaky_logvar, factors, np.random.default_rng(0))
    assert sampled["per_factor"][1] > 0.95
    assert sampled["mutual_information"][3, 1] < 0.02


def test_sampled_mig_refuses_a_bad_logvar():
    mu, logvar, factors = sampled_codes(repeat=1)
    with pytest.raises(ValueError, match="logvar"):
        dis.sampled_mig(mu, logvar[:, :2], factors, np.random.default_rng(0))
    with pytest.raises(ValueError, match="logvar"):
        dis.sampled_mig(mu, np.where(mu > 3, np.nan, logvar), factors, np.random.default_rng(0))


def test_dci_from_importance_of_known_matrices():
    assert dis.dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0), abs=1e-8)
    assert dis.dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-8)
    # One code for both factors: no disentanglement, perfect completeness.
    d, c = dis.dci_from_importance(np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-8) and c == pytest.approx(1.0, abs=1e-8)


def test_lasso_matches_scikit_learn():
    linear = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    y = x @ np.array([1.0, -0.5, 0.0, 0.02, 0.0, 2.0]) + 0.1 * rng.normal(size=500)
    x, y = x - x.mean(0), y - y.mean()
    reference = linear.Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(x, y).coef_
    np.testing.assert_allclose(dis.lasso(x, y, 0.05, iterations=10_000, tol=1e-14), reference, atol=1e-8)


@pytest.mark.parametrize("kind, low, high", [("perfect", 0.99, 1.0), ("permuted", 0.99, 1.0),
                                             ("rotated", 0.6, 0.9), ("noise", 0.0, 0.01)])
def test_dci_lasso_on_constructed_codes(kind, low, high):
    factors = grid()
    codes = {"perfect": factors.astype(float), "permuted": factors[:, [3, 1, 4, 0, 2]].astype(float),
             "rotated": rotate(factors.astype(float), 3, 4),
             "noise": np.random.default_rng(0).normal(size=factors.shape)}[kind]
    train, test = split(len(factors))
    result = dis.dci(codes[train], factors[train], codes[test], factors[test])
    assert low - 1e-9 <= result["disentanglement"] <= high
    assert low - 1e-9 <= result["completeness"] <= high
    assert result["informativeness"] == pytest.approx(0.0 if kind == "noise" else 1.0, abs=0.02)


def test_dci_lasso_with_a_missing_factor_loses_informativeness():
    factors = grid()
    codes = factors.astype(float)
    codes[:, 2] = np.random.default_rng(0).normal(size=len(codes))
    train, test = split(len(factors))
    result = dis.dci(codes[train], factors[train], codes[test], factors[test])
    assert result["informativeness"] == pytest.approx(0.8, abs=0.02)
    assert result["importance"][:, 2].sum() == pytest.approx(0.0, abs=0.02)


def test_dci_gradient_boosted_trees_on_a_perfect_and_a_rotated_code():
    pytest.importorskip("sklearn.ensemble")
    sizes = (3, 4, 5)
    factors = np.tile(grid(sizes), (4, 1))
    train, test = split(len(factors))
    perfect = dis.dci(factors[train].astype(float), factors[train], factors[test].astype(float), factors[test], "gbt")
    assert perfect["disentanglement"] > 0.99 and perfect["completeness"] > 0.99
    assert perfect["informativeness"] == 1.0
    codes = rotate(factors.astype(float), 1, 2)
    rotated = dis.dci(codes[train], factors[train], codes[test], factors[test], "gbt")
    assert rotated["disentanglement"] < 0.9


def representation(kind, sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)

    def represent(factors):
        z = factors / (np.asarray(sizes) - 1.0)
        if kind == "permuted":
            return z[:, [3, 1, 4, 0, 2]]
        if kind == "rotated":
            return rotate(np.concatenate([z, grid(sizes) / (np.asarray(sizes) - 1.0)]), 3, 4)[: len(z)]
        if kind == "noise":
            return rng.normal(size=z.shape)
        if kind == "missing":
            return np.delete(z, 2, axis=1)
        return z

    return represent


@pytest.mark.parametrize("kind", ["perfect", "permuted"])
def test_factor_vae_score_of_a_perfect_code_is_one(kind):
    result = dis.factor_vae_score(representation(kind), SIZES, np.random.default_rng(1), train=300, evaluate=200,
                                  variance_samples=1000)
    assert result["train_accuracy"] == 1.0 and result["eval_accuracy"] == 1.0


def test_factor_vae_score_of_rotated_noise_and_missing_codes():
    def score(kind):
        return dis.factor_vae_score(representation(kind), SIZES, np.random.default_rng(1), train=600, evaluate=600,
                                    variance_samples=1000)["eval_accuracy"]

    # Turned x and y: the classifier can give the shared codes to one factor each at best, about half right.
    assert 0.7 < score("rotated") < 0.9
    assert score("noise") < 0.3  # chance is 1/5
    # No code holds factor 2: its votes go where the classifier sends them, wrong: at most 4/5.
    assert score("missing") <= 0.8 + 0.03


def test_factor_vae_score_leaves_collapsed_codes_out():
    perfect = representation("perfect")

    def with_collapsed(factors):  # a code that barely moves, as a collapsed one does, is not a candidate
        return np.concatenate([perfect(factors), 0.01 * perfect(factors)[:, :1]], axis=1)

    result = dis.factor_vae_score(with_collapsed, SIZES, np.random.default_rng(1), train=200, evaluate=100,
                                  variance_samples=1000)
    assert result["active"].tolist() == [True] * 5 + [False]
    assert result["eval_accuracy"] == 1.0
    unpruned = dis.factor_vae_score(with_collapsed, SIZES, np.random.default_rng(1), train=200, evaluate=100,
                                    variance_samples=1000, prune=0.0)
    assert unpruned["active"].all()


def test_scores_are_deterministic_for_a_seed():
    protocol = dis.Protocol(mig_samples=2000, dci_train=1000, dci_test=500, factor_vae_train=100,
                            factor_vae_eval=100, factor_vae_variance_samples=500)
    a = dis.scores(representation("rotated"), SIZES, seed=3, protocol=protocol)
    b = dis.scores(representation("rotated"), SIZES, seed=3, protocol=protocol)
    assert a["mig"]["mig"] == b["mig"]["mig"] and a["factor_vae"]["eval_accuracy"] == b["factor_vae"]["eval_accuracy"]
    assert a["dci"]["disentanglement"] == b["dci"]["disentanglement"]
    assert 0.4 < a["mig"]["mig"] < 0.7


def test_protocol_is_checked():
    with pytest.raises(ValueError, match="dci_estimator"):
        dis.Protocol(dci_estimator="forest")
    with pytest.raises(ValueError, match="bins"):
        dis.Protocol(bins=1)
