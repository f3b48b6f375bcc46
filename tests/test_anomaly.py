import itertools
import json

import numpy as np
import pytest
import torch

from vaekit import VAE, ModelConfig
from vaekit.anomaly import anomaly_scores, auroc, calibrate, roc_curve
from vaekit.cli import main
from vaekit.data import fixed_binarization, standardize
from vaekit.runs import load_run

from .conftest import DATA_DIR, seeded


def brute_force_auroc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_counting_with_ties():
    g = np.random.default_rng(0)
    for _ in range(20):
        scores = torch.tensor(g.integers(0, 6, 40), dtype=torch.float64)  # many ties
        labels = torch.tensor(g.integers(0, 2, 40)).bool()
        if labels.all() or not labels.any():
            continue
        assert auroc(scores, labels) == pytest.approx(brute_force_auroc(scores.tolist(), labels.tolist()))
    assert auroc(torch.tensor([1.0, 2, 3, 4]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([4.0, 3, 2, 1]), torch.tensor([0, 0, 1, 1])) == 0.0
    with pytest.raises(ValueError, match="needs both"):
        auroc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_roc_curve_runs_from_0_to_1_and_its_area_is_the_auroc():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, generator=g)
    labels = (scores + torch.randn(300, generator=g)) > 0.5
    fpr, tpr = roc_curve(scores, labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert torch.all(fpr[1:] >= fpr[:-1]) and torch.all(tpr[1:] >= tpr[:-1])
    assert torch.trapezoid(tpr, fpr).item() == pytest.approx(auroc(scores, labels), abs=1e-9)


def test_calibration_measures_its_false_positive_rate_on_held_out_scores():
    scores = torch.randn(20_000, generator=seeded(0), dtype=torch.float64)
    result = calibrate(scores, 0.99, seed=1)
    assert result["threshold"] == pytest.approx(2.326, abs=0.06)  # the normal's 99% quantile
    assert result["false_positive_rate"] == pytest.approx(0.01, abs=0.003)
    assert result["fitted_on"] == result["measured_on"] == 10_000
    with pytest.raises(ValueError, match="quantile"):
        calibrate(scores, 1.0)


def test_scores_are_deterministic_and_rank_noise_above_digits(mnist_test):
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=4))
    x = mnist_test.images[:50].float() / 255
    for method in ("elbo", "iwae", "recon"):
        a = anomaly_scores(model, x, method, seed=3, iw_samples=10)
        assert a.shape == (50,) and torch.equal(a, anomaly_scores(model, x, method, seed=3, iw_samples=10))
    torch.testing.assert_close(anomaly_scores(model, x, "elbo", seed=3, batch_size=7),
                               anomaly_scores(model, x, "elbo", seed=3), rtol=1e-5, atol=1e-3)


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory, mnist_train):
    """A run trained on 1s only: the normal class."""
    folder = tmp_path_factory.mktemp("ones")
    ones = mnist_train.images[mnist_train.labels == 1][:3000, 0].numpy()
    np.save(folder / "ones.npy", ones)
    out = folder / "run"
    assert main(["train", "--data", str(folder / "ones.npy"), "--epochs", "3", "--hidden", "128", "--latent", "8",
                 "--out", str(out)]) == 0
    return out


def test_score_and_calibrate_end_to_end(digit_run, tmp_path, capsys, mnist_test):
    assert main(["calibrate", str(digit_run), "--quantile", "0.95"]) == 0
    stored = json.loads((digit_run / "threshold.json").read_text())
    assert stored["method"] == "elbo" and stored["quantile"] == 0.95 and 0 < stored["false_positive_rate"] < 0.2
    capsys.readouterr()
    assert main(["score", str(digit_run), "mnist:test", "--data-dir", str(DATA_DIR), "-o", str(tmp_path / "s.csv")]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,name,label,score,anomaly" and len(lines) == 10_001
    rows = [line.split(",") for line in lines[1:]]
    labels = torch.tensor([int(r[2]) for r in rows])
    scores = torch.tensor([float(r[3]) for r in rows])
    flags = torch.tensor([int(r[4]) for r in rows])
    assert torch.equal(flags, (scores > stored["threshold"]).long())
    assert auroc(scores, labels != 1) > 0.95  # every other digit is an anomaly to a model of 1s
    assert flags[labels == 1].float().mean() < 0.2 and flags[labels != 1].float().mean() > 0.7


def test_score_jsonl_and_names_from_a_folder(digit_run, tmp_path, mnist_test):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, digit in enumerate(mnist_test.images[:3, 0].numpy()):
        Image.fromarray(digit).resize((56, 56)).save(folder / f"d{i}.png")  # resized back to 28x28
    assert main(["score", str(digit_run), str(folder), "--threshold", "100", "-o", str(tmp_path / "s.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["d0.png", "d1.png", "d2.png"]
    assert all(r["anomaly"] == int(r["score"] > 100) for r in rows)


def test_score_errors(digit_run, tmp_path, capsys):
    assert main(["score", str(digit_run), "mnist:test", "-o", str(tmp_path / "s.txt")]) == 2
    assert "-o must end in .csv or .jsonl" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", np.zeros((2, 28, 40), np.uint8))
    assert main(["score", str(digit_run), str(tmp_path / "wide.npy")]) == 3
    assert "resizing would distort them" in capsys.readouterr().err


def test_standardized_run_scores_what_it_was_trained_on_and_separates_better(tmp_path, capsys, mnist_train, mnist_test):
    """8 is the hardest normal digit: thin digits (1, 7) pass for 8s by having few lit pixels. Standardizing
    every image (train and score alike) takes that away: AUROC 0.86 -> 0.95 after 15 epochs here."""
    np.save(tmp_path / "eights.npy", mnist_train.images[mnist_train.labels == 8][:3000, 0].numpy())
    aurocs = {}
    for flags in ([], ["--standardize"]):
        out = tmp_path / f"run{len(flags)}"
        assert main(["train", "--data", str(tmp_path / "eights.npy"), "--epochs", "15", "--hidden", "128",
                     "--latent", "8", "--likelihood", "gaussian-shared", *flags, "--out", str(out)]) == 0
        assert main(["score", str(out), "mnist:test", "--data-dir", str(DATA_DIR), "--threshold", "0",
                     "-o", str(tmp_path / "s.csv")]) == 0
        rows = [line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
        scores = torch.tensor([float(r[3]) for r in rows])
        aurocs[len(flags)] = auroc(scores, mnist_test.labels != 8)
    run = load_run(out)
    assert run.config.data.standardize
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0  # the held-out images, standardized as in training
    assert json.loads(capsys.readouterr().out)["test_loss"] == pytest.approx(run.metrics[-1]["test_loss"], abs=1e-3)
    expected = anomaly_scores(run.model, fixed_binarization(standardize(mnist_test.images), "none", 1), "elbo", seed=1)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-4, atol=1e-2)  # the CSV's digits
    assert aurocs[1] > 0.93 and aurocs[1] > aurocs[0] + 0.04, aurocs
    capsys.readouterr()
    assert main(["compress", str(out), "mnist:test", "-o", str(tmp_path / "x.vkz")]) == 2
    assert "trained on standardized images" in capsys.readouterr().err
