import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAE, DataConfig, ModelConfig, RunConfig
from vaekit.anomaly import (anomaly_scores, auroc, calibrate, check_mixable, mixture_scores, quantile_support,
                            roc_curve, typical_reference, typical_scores)
from vaekit import detector
from vaekit.cli import main
from vaekit.data import fixed_binarization, load_train_test, standardize
from vaekit.plots import extremes_picture
from vaekit.runs import load_run

from .conftest import DATA_DIR, seeded


def brute_force_auroc(scores, labels):
    pos = [s for s, label in zip(scores, labels) if label]
    neg = [s for s, label in zip(scores, labels) if not label]
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


def test_mixture_scores_are_the_negative_log_of_the_mean_density():
    a = torch.tensor([1.0, 5.0, 700.0], dtype=torch.float64)
    b = torch.tensor([3.0, 5.0, 2.0], dtype=torch.float64)
    mixed = mixture_scores([a, b])
    expected = -torch.log((torch.exp(-a) + torch.exp(-b)) / 2)  # finite here: exp(-700) is tiny, not zero
    torch.testing.assert_close(mixed, expected)
    assert mixed[1].item() == pytest.approx(5.0)  # equal members: the member's own score
    assert mixed[2].item() == pytest.approx(2.0 + math.log(2))  # one member far less likely: the other plus log 2
    torch.testing.assert_close(mixture_scores([a]), a)
    with pytest.raises(ValueError, match="at least one"):
        mixture_scores([])


def test_typical_scores_measure_each_member_against_its_own_normal_scores():
    simple = torch.tensor([10.0, 12.0, 14.0])  # a member of simple images: low scores, std 2
    complex_ = torch.tensor([100.0, 110.0, 120.0])  # a member of complex ones: std 10
    images = [torch.tensor([12.0, 16.0, 60.0]), torch.tensor([200.0, 110.0, 130.0])]
    assert typical_reference(simple) == (12.0, 2.0) and typical_reference(complex_) == (110.0, 10.0)
    typical = typical_scores(images, [typical_reference(simple), typical_reference(complex_)])
    # (12-12)/2 = 0; min((16-12)/2, (110-110)/10) = 0; min((60-12)/2, (130-110)/10) = 2
    torch.testing.assert_close(typical, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    # the density rule calls the third image normal: 60 nats is far likelier than any complex image
    assert mixture_scores(images)[2] < 61
    with pytest.raises(ValueError, match="need a spread: got 3 images with standard deviation 0"):
        typical_reference(torch.full((3,), 5.0))
    with pytest.raises(ValueError, match="got 2 and 1"):
        typical_scores(images, [typical_reference(simple)])


def test_a_quantile_with_few_scores_above_it_is_flagged():
    assert quantile_support(1000, 0.99) is None and quantile_support(200, 0.95) is None  # 10 scores above each
    warning = quantile_support(999, 0.99)
    assert "fitted on 999 normal images" in warning and "only 10 of them lie above it" in warning  # 9.99
    assert "10 above it take 1,000 (about 2,000 normal images in all)" in quantile_support(7, 0.99)
    assert "only 0.07 of them" in quantile_support(7, 0.99)
    assert quantile_support(20, 0.5) is None and "take 20 (about 40" in quantile_support(19, 0.5)


def test_calibrating_on_few_images_warns_on_one_line(digit_run, tmp_path, capsys, mnist_train):
    run = tmp_path / "run"
    shutil.copytree(digit_run, run)  # the other tests keep digit_run's threshold
    few = tmp_path / "few.npy"
    np.save(few, mnist_train.images[mnist_train.labels == 1][-15:, 0].numpy())
    capsys.readouterr()
    assert main(["calibrate", str(run), str(few), "--quantile", "0.99"]) == 0
    out, err = capsys.readouterr()
    assert "threshold " in out and json.loads((run / "threshold.json").read_text())["fitted_on"] == 7
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: warning: the 0.99 quantile was fitted on 7 normal images")
    assert main(["calibrate", str(run), "--quantile", "0.9"]) == 0  # its 300 held-out images: 15 of 150 above
    assert capsys.readouterr().err == ""


def test_runs_mix_only_when_their_scores_are_densities_of_the_same_inputs():
    base = RunConfig(model=ModelConfig(likelihood="gaussian-shared"), data=DataConfig(standardize=True))
    check_mixable({"a": base, "b": base}, "elbo")
    with pytest.raises(ValueError, match="b cannot join a mixture with a: its --standardize is False, not True"):
        check_mixable({"a": base, "b": RunConfig(model=base.model)}, "elbo")
    with pytest.raises(ValueError, match="its likelihood is 'bernoulli'"):
        check_mixable({"a": base, "b": RunConfig(data=base.data)}, "iwae")
    with pytest.raises(ValueError, match="needs a score in nats"):
        check_mixable({"a": base, "b": base}, "mse")


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
    assert stored["method"] == "complexity" and stored["quantile"] == 0.95 and 0 < stored["false_positive_rate"] < 0.2
    assert list(stored["complexity_rates"]) == ["."] and "combine" not in stored  # ".": the run itself
    capsys.readouterr()
    assert main(["score", str(digit_run), "mnist:test", "--data-dir", str(DATA_DIR),
                 "-o", str(tmp_path / "s.csv"), "--extremes", str(tmp_path / "e.png")]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,name,label,score,anomaly" and len(lines) == 10_001
    rows = [line.split(",") for line in lines[1:]]
    labels = torch.tensor([int(r[2]) for r in rows])
    scores = torch.tensor([float(r[3]) for r in rows])
    flags = torch.tensor([int(r[4]) for r in rows])
    assert torch.equal(flags, (scores > stored["threshold"]).long())
    assert auroc(scores, labels != 1) > 0.95  # every other digit is an anomaly to a model of 1s
    assert flags[labels == 1].float().mean() < 0.2 and flags[labels != 1].float().mean() > 0.7
    # the extremes: the 16 highest scores above the 16 lowest, each captioned with its score and name
    chosen = torch.cat([torch.argsort(scores, descending=True)[:16], torch.argsort(scores)[:16].flip(0)])
    x = load_run(digit_run).inputs(mnist_test)
    expected = extremes_picture(x[chosen].float(), [round(s, 4) for s in scores[chosen].tolist()],
                                [str(i) for i in chosen.tolist()], 16)
    drawn = np.array(Image.open(tmp_path / "e.png"))
    assert drawn.shape == expected.shape and (drawn != expected).mean() < 0.01  # scores rounded in the CSV
    assert (labels[chosen[:16]] != 1).all() and (labels[chosen[16:]] == 1).all()


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
    assert main(["score", str(digit_run), str(tmp_path / "wide.npy")]) == 0  # run format 8: the centre 28x28 crop
    assert len(capsys.readouterr().out.splitlines()) == 3  # the header and 2 rows
    np.save(tmp_path / "two.npy", np.zeros((2, 2, 28, 28), np.uint8))
    assert main(["score", str(digit_run), str(tmp_path / "two.npy")]) == 3
    assert "need 1 or 3 channels" in capsys.readouterr().err


def test_standardized_run_scores_what_it_was_trained_on_and_separates_better(tmp_path, capsys, mnist_train, mnist_test):
    """8 is the hardest normal digit: thin digits (1, 7) pass for 8s by having few lit pixels. Standardizing
    every image (train and score alike) takes that away: AUROC 0.86 -> 0.95 after 15 epochs here."""
    np.save(tmp_path / "eights.npy", mnist_train.images[mnist_train.labels == 8][:3000, 0].numpy())
    aurocs = {}
    for flags in ([], ["--standardize"]):
        out = tmp_path / f"run{len(flags)}"
        capsys.readouterr()
        assert main(["train", "--data", str(tmp_path / "eights.npy"), "--epochs", "15", "--hidden", "128",
                     "--latent", "8", "--likelihood", "gaussian-shared", *flags, "--out", str(out)]) == 0
        if flags:  # collapsed (0 of 8 active) for its first 3 epochs, 8 of 8 from epoch 7: no warning
            active = [row["active_units"] for row in load_run(out).metrics]
            assert active[0] < 4 and min(active[-5:]) >= 4, active
            assert "posterior collapse" not in capsys.readouterr().out
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
    assert torch.equal(run.inputs(mnist_test), fixed_binarization(standardize(mnist_test.images), "none", 1))
    expected = anomaly_scores(run.model, run.inputs(mnist_test), "elbo", seed=1)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-4, atol=1e-2)  # the CSV's digits
    assert aurocs[1] > 0.93 and aurocs[1] > aurocs[0] + 0.04, aurocs
    capsys.readouterr()
    assert main(["compress", str(out), "mnist:test", "-o", str(tmp_path / "x.vkz")]) == 2
    assert "trained on standardized images" in capsys.readouterr().err


def read_scores(path) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores and decisions of a score CSV."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return torch.tensor([float(r[3]) for r in rows], dtype=torch.float64), torch.tensor([int(r[4]) for r in rows])


def test_a_mixture_of_one_class_runs_scores_as_one_detector(digit_run, tmp_path, capsys, monkeypatch, mnist_train,
                                                            mnist_test):
    """A run of 1s and a run of 7s, mixed: both digits are normal to the mixture, the other eight anomalies."""
    np.save(tmp_path / "sevens.npy", mnist_train.images[mnist_train.labels == 7][:3000, 0].numpy())
    sevens = tmp_path / "sevens"
    assert main(["train", "--data", str(tmp_path / "sevens.npy"), "--epochs", "3", "--hidden", "128", "--latent", "8",
                 "--out", str(sevens)]) == 0
    first1000 = tmp_path / "first1000.npy"
    np.save(first1000, mnist_test.images[:1000, 0].numpy())
    scores = {}
    for name, (run, extra) in {"ones": (digit_run, []), "sevens": (sevens, []),
                               "mixture": (digit_run, ["--mixture", str(sevens)])}.items():
        out = tmp_path / f"{name}.csv"
        assert main(["score", str(run), str(first1000), *extra, "--method", "elbo", "--threshold", "0",
                     "-o", str(out)]) == 0
        scores[name] = read_scores(out)[0]
    torch.testing.assert_close(scores["mixture"], mixture_scores([scores["ones"], scores["sevens"]]), atol=2e-4, rtol=0)
    anomalous = (mnist_test.labels[:1000] != 1) & (mnist_test.labels[:1000] != 7)
    aurocs = {name: auroc(s, anomalous) for name, s in scores.items()}
    assert aurocs["mixture"] > 0.95 and aurocs["mixture"] > max(aurocs["ones"], aurocs["sevens"]) + 0.03, \
        aurocs  # 0.966, 0.911

    # a threshold calibrated for the mixture is used by the mixture only
    normal = tmp_path / "normal.npy"
    np.save(normal,
            mnist_test.images[1000:][(mnist_test.labels[1000:] == 1) | (mnist_test.labels[1000:] == 7), 0].numpy())
    assert main(["calibrate", str(digit_run), str(normal), "--mixture", str(sevens), "--quantile", "0.95"]) == 0
    stored = json.loads((digit_run / "threshold.json").read_text())
    assert stored["mixture"] == [str(sevens.resolve())] and 0 < stored["false_positive_rate"] < 0.15
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens), "-o", str(tmp_path / "m.csv")]) == 0
    mixed, flags = read_scores(tmp_path / "m.csv")
    assert torch.equal(flags, (mixed > stored["threshold"]).long())
    assert flags[~anomalous].float().mean() < 0.15 and flags[anomalous].float().mean() > 0.6
    capsys.readouterr()
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens), str(sevens)]) == 2
    assert f"calibrated for --mixture {sevens.resolve()}; pass --threshold" in capsys.readouterr().err
    assert main(["score", str(digit_run), str(first1000)]) == 2
    assert f"calibrated for --mixture {sevens.resolve()}" in capsys.readouterr().err

    # the typical rule: each run's scores in standard deviations of its own held-out scores, the smallest
    assert main(["score", str(digit_run), str(first1000), "--combine", "typical", "--mixture", str(sevens),
                 "--threshold", "0", "-o", str(tmp_path / "t.csv")]) == 0
    references = []
    for path in (digit_run, sevens):
        run = load_run(path)
        _, held_out = load_train_test(run.config.data.name, run.config.data.validation, run.config.train.seed)
        assert len(held_out) == 300  # the validation share of the run's 3,000 images
        held_out_scores = anomaly_scores(run.model, run.inputs(held_out), "elbo", run.config.train.seed)
        references.append(typical_reference(held_out_scores))
    typical = read_scores(tmp_path / "t.csv")[0]
    torch.testing.assert_close(typical, typical_scores([scores["ones"], scores["sevens"]], references),
                               atol=1e-3, rtol=0)
    assert auroc(typical, anomalous) > 0.95, auroc(typical, anomalous)
    capsys.readouterr()
    assert main(["calibrate", str(digit_run), "--mixture", str(sevens), "--combine", "typical", "--data", str(normal),
                 "--quantile", "0.95"]) == 0  # --data: INPUT's former spelling, still accepted
    assert "vaekit: warning: vaekit calibrate --data is deprecated" in capsys.readouterr().err
    stored = json.loads((digit_run / "threshold.json").read_text())
    assert stored["data"] == str(normal)
    assert stored["combine"] == "typical" and 0 < stored["false_positive_rate"] < 0.15
    assert stored["references"] == {".": list(references[0]), str(sevens.resolve()): list(references[1])}
    (tmp_path / "sevens.npy").rename(tmp_path / "moved.npy")  # the stored references need no training data
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens),
                 "-o", str(tmp_path / "t2.csv")]) == 0
    assert torch.equal(read_scores(tmp_path / "t2.csv")[0], typical)  # the calibrated rule by default
    capsys.readouterr()
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens), "--method", "iwae",
                 "--combine", "typical", "--threshold", "0"]) != 0  # another method needs new references: from the data
    assert f"--combine typical measures {sevens} against its held-out images, which need its training data" in \
        capsys.readouterr().err
    (tmp_path / "moved.npy").rename(tmp_path / "sevens.npy")
    capsys.readouterr()
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens), "--combine", "density"]) == 2
    assert "calibrated for --combine typical, not density; pass --threshold" in capsys.readouterr().err
    assert main(["score", str(digit_run), str(first1000), "--combine", "typical", "--threshold", "0"]) == 2
    assert "--combine typical combines the runs of --mixture; give --mixture too" in capsys.readouterr().err
    calls = []
    real_member_scores = detector.member_scores
    monkeypatch.setattr(detector, "member_scores", lambda m, *a: calls.append(m.path) or real_member_scores(m, *a))
    assert main(["calibrate", str(digit_run), "--mixture", str(sevens), "--combine", "typical",
                 "--quantile", "0.95"]) == 0
    # the run's own held-out scores are the images calibrated on: scored once
    assert calls == [digit_run, sevens, sevens]
    stored = json.loads((digit_run / "threshold.json").read_text())
    assert stored["references"] == {".": list(references[0]), str(sevens.resolve()): list(references[1])}
    monkeypatch.undo()
    assert main(["calibrate", str(digit_run)]) == 0  # back to the run alone, for the other tests

    # runs whose scores are not densities of the same inputs do not mix
    other = tmp_path / "binarized"
    shutil.copytree(sevens, other)
    config = json.loads((other / "config.json").read_text())
    config["data"]["binarize"] = "dynamic"
    (other / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other} cannot join a mixture with {digit_run}: its --binarize is 'dynamic', not 'none'" in err, err
    assert main(["score", str(digit_run), str(first1000), "--mixture", str(sevens), "--method", "mse"]) == 2
    assert "needs a score in nats" in capsys.readouterr().err
    assert main(["score", str(digit_run), "--mixture", str(sevens), str(first1000)]) == 2  # took INPUT as a run
    assert "required: INPUT (--mixture takes every word up to the next option: put it after INPUT)" in \
        capsys.readouterr().err
