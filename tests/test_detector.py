import csv
import json

import numpy as np
import pytest
import torch

from vaekit import Detector, load_run
from vaekit.anomaly import anomaly_scores, auroc, calibrate, mixture_scores, typical_reference, typical_scores
from vaekit.background import perturb
from vaekit.complexity import LN2, fit_rate, png_bits
from vaekit.cli import main
from vaekit.data import ImageSet, load_train_test
from vaekit.errors import ConfigError, RunError

from .tiny_run import copy_run


def train_on(folder, images, name):
    np.save(folder / f"{name}.npy", images)
    out = folder / name
    assert main(["train", "--data", str(folder / f"{name}.npy"), "--epochs", "3", "--hidden", "64", "--latent", "4",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_train):
    """Two small runs: one of 1s, one of 7s (1,000 images each, 100 of them held out)."""
    folder = tmp_path_factory.mktemp("detector")
    pick = {d: mnist_train.images[mnist_train.labels == d][:1000, 0].numpy() for d in (1, 7)}
    return train_on(folder, pick[1], "ones"), train_on(folder, pick[7], "sevens")


@pytest.fixture(scope="module")
def test_digits(mnist_test):
    return ImageSet(mnist_test.images[:300], mnist_test.labels[:300], "the first 300 test digits")


def test_calibrate_score_save_and_load_from_python(runs, test_digits, tmp_path):
    ones = load_run(runs[0])
    detector = Detector(ones, method="elbo")
    assert detector.threshold is None and detector.score(test_digits).anomaly is None
    record = detector.calibrate(quantile=0.9)  # on the run's 100 held-out 1s
    held_out = load_train_test(ones.config.data.name, ones.config.data.validation, ones.config.train.seed)[1]
    assert len(held_out) == 100
    expected = calibrate(anomaly_scores(ones.model, ones.inputs(held_out), "elbo", ones.config.train.seed), 0.9,
                         ones.config.train.seed)
    assert {k: record[k] for k in expected} == expected
    assert record["data"] == "the run's held-out images" and record["mixture"] == [] and record["iw_samples"] is None
    assert detector.threshold == record["threshold"] and (record["fitted_on"], record["measured_on"]) == (50, 50)

    result = detector.score(test_digits)
    x = ones.inputs(test_digits)
    assert torch.equal(result.scores, anomaly_scores(ones.model, x, "elbo", ones.config.train.seed))
    assert torch.equal(detector.score(x).scores, result.scores)  # model inputs, as the ImageSet gives them
    assert torch.equal(result.anomaly, result.scores > record["threshold"]) and result.threshold == record["threshold"]
    is_one = test_digits.labels == 1
    assert auroc(result.scores, ~is_one) > 0.95
    assert result.anomaly[~is_one].double().mean() > 0.7 > result.anomaly[is_one].double().mean()

    assert detector.save() == runs[0] / "threshold.json"
    assert json.loads((runs[0] / "threshold.json").read_text()) == record
    again = Detector.load(runs[0])  # a fresh object, from the run directory
    assert (again.method, again.combine, again.threshold) == ("elbo", "density", record["threshold"])
    loaded = again.score(test_digits)
    assert torch.equal(loaded.scores, result.scores) and torch.equal(loaded.anomaly, result.anomaly)

    # the CLI calls exactly this: its scores are these, rounded, and its decisions the same
    out = tmp_path / "scores.csv"
    np.save(tmp_path / "digits.npy", test_digits.images[:, 0].numpy())
    assert main(["score", str(runs[0]), str(tmp_path / "digits.npy"), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [float(r["score"]) for r in rows] == [round(s, 4) for s in result.scores.tolist()]
    assert [int(r["anomaly"]) for r in rows] == result.anomaly.int().tolist()

    # another method needs a threshold of its own; with one it decides by it
    with pytest.raises(ConfigError, match="calibrated for --method elbo, not recon"):
        Detector.load(runs[0], method="recon")
    recon = Detector.load(runs[0], method="recon", threshold=50.0).score(test_digits)
    assert torch.equal(recon.anomaly, recon.scores > 50.0) and recon.threshold == 50.0


def test_a_two_run_mixture_from_python(runs, test_digits):
    ones, sevens = load_run(runs[0]), load_run(runs[1])
    x = ones.inputs(test_digits)
    each = [anomaly_scores(r.model, x, "elbo", r.config.train.seed) for r in (ones, sevens)]
    density = Detector(ones, [runs[1]])  # a run, and a path loaded on its device
    assert density.mixture_names == [str(runs[1].resolve())]
    assert torch.equal(density.scores(test_digits), mixture_scores(each))

    normal = ImageSet(test_digits.images[(test_digits.labels == 1) | (test_digits.labels == 7)], None, "1s and 7s")
    typical = Detector(ones, [sevens], combine="typical")
    record = typical.calibrate(normal, quantile=0.9, data="ones and sevens")
    references = []
    for r in (ones, sevens):  # each run's reference: its scores of its own 100 held-out images
        held_out = load_train_test(r.config.data.name, r.config.data.validation, r.config.train.seed)[1]
        references.append(typical_reference(anomaly_scores(r.model, r.inputs(held_out), "elbo", r.config.train.seed)))
    assert record["references"] == {".": list(references[0]), str(runs[1].resolve()): list(references[1])}
    assert (record["combine"], record["data"], record["mixture"]) == ("typical", "ones and sevens",
                                                                       [str(runs[1].resolve())])
    scores = typical.score(test_digits)
    torch.testing.assert_close(scores.scores, typical_scores(each, references), rtol=0, atol=1e-9)
    is_normal = (test_digits.labels == 1) | (test_digits.labels == 7)
    assert auroc(scores.scores, ~is_normal) > 0.9

    typical.save()
    loaded = Detector.load(runs[0], [runs[1]])  # the calibrated rule, and its stored references
    assert (loaded.combine, loaded.threshold) == ("typical", record["threshold"])
    assert torch.equal(loaded.score(test_digits).scores, scores.scores)
    with pytest.raises(ConfigError, match="calibrated for --mixture .*sevens; pass --threshold"):
        Detector.load(runs[0])
    with pytest.raises(ConfigError, match="calibrated for --combine typical, not density"):
        Detector.load(runs[0], [runs[1]], combine="density")


def test_bad_choices_are_typed_errors(runs):
    with pytest.raises(ConfigError, match="unknown score 'nll'"):
        Detector(runs[0], method="nll")
    with pytest.raises(ConfigError, match="--combine typical combines the runs of --mixture"):
        Detector(runs[0], combine="typical")
    with pytest.raises(ConfigError, match="needs a score in nats"):
        Detector(runs[0], [runs[1]], method="mse")
    with pytest.raises(ConfigError, match="iw_samples must be an integer"):
        Detector(runs[0], iw_samples=0)
    with pytest.raises(ConfigError, match="finite"):
        Detector(runs[0], threshold=float("nan"))
    with pytest.raises(RunError, match="no calibration to save"):
        Detector(runs[0]).save()
    with pytest.raises(RunError, match="not a run directory"):
        Detector(runs[0].parent / "missing")
    with pytest.raises(ConfigError, match="at least 4 normal images"):
        Detector(runs[0], method="elbo").calibrate(torch.zeros(3, 1, 28, 28))
    with pytest.raises(ConfigError, match="differing compressed lengths"):
        Detector(runs[0]).calibrate(torch.zeros(8, 1, 28, 28))  # complexity: the rate needs lengths that vary


def test_the_default_detector_corrects_the_elbo_for_complexity_and_stores_its_rate(runs, test_digits, tmp_path):
    ones = load_run(runs[0])
    detector = Detector(ones)  # what `vaekit calibrate RUN` picks
    assert (detector.method, detector.combine) == ("complexity", "density")
    held_out = ones.inputs(ones.held_out())
    record = detector.calibrate(quantile=0.9)
    rate = fit_rate(anomaly_scores(ones.model, held_out, "elbo", ones.config.train.seed), png_bits(held_out))
    assert 0 < rate < LN2  # a Bernoulli of gray pixels prices a bit of complexity below a discrete likelihood's
    assert record["complexity_rates"] == {".": rate} and "combine" not in record  # "." the run itself
    expected = calibrate(anomaly_scores(ones.model, held_out, "complexity", ones.config.train.seed,
                                        complexity_rate=rate), 0.9, ones.config.train.seed)
    assert {k: record[k] for k in expected} == expected
    x = ones.inputs(test_digits)
    result = detector.score(test_digits)
    torch.testing.assert_close(result.scores, anomaly_scores(ones.model, x, "elbo", ones.config.train.seed).double()
                               - rate * png_bits(x), rtol=0, atol=1e-9)
    assert auroc(result.scores, test_digits.labels != 1) > 0.95
    detector.save()
    again = Detector.load(runs[0])  # the rate comes back from threshold.json, not from the held-out images
    assert (again.method, again.threshold) == ("complexity", record["threshold"])
    assert torch.equal(again.score(test_digits).scores, result.scores)
    copied = copy_run(runs[0], tmp_path / "copied")  # a copied calibrated run keeps its rate: not keyed by a path
    moved = Detector.load(copied, data_dir=tmp_path / "no-data")
    assert moved.complexity_rates(moved.calibration) == {".": rate}
    assert torch.equal(moved.score(test_digits).scores, result.scores)
    old = {**record, "complexity_rates": {str(runs[0].resolve()): rate}}  # as threshold.json was written before "."
    assert Detector(ones).complexity_rates(old) == {".": rate}


def test_the_typical_set_rule_scores_one_run_by_its_distance_from_normal(runs, test_digits):
    ones = load_run(runs[0])
    detector = Detector(ones, method="elbo", combine="typical-set")
    record = detector.calibrate(quantile=0.9)
    held_out_scores = anomaly_scores(ones.model, ones.inputs(ones.held_out()), "elbo", ones.config.train.seed)
    mean, spread = typical_reference(held_out_scores)
    assert record["combine"] == "typical-set" and record["references"] == {".": [mean, spread]}
    elbo = anomaly_scores(ones.model, ones.inputs(test_digits), "elbo", ones.config.train.seed).double()
    torch.testing.assert_close(detector.score(test_digits).scores, ((elbo - mean) / spread).abs(), rtol=0, atol=1e-9)
    # two-sided: an image far likelier than normal 1s (a blank one) is as anomalous as its distance says
    blank = detector.score(torch.zeros(1, 1, 28, 28)).scores
    assert blank.item() > 1
    detector.save()
    assert Detector.load(runs[0]).combine == "typical-set"  # calibrated for one run, so no --mixture needed


def test_the_likelihood_ratio_against_a_background_run(runs, test_digits, mnist_train, tmp_path):
    ones_images = mnist_train.images[mnist_train.labels == 1][:1000]
    background = train_on(tmp_path, perturb(ones_images, 0.2, torch.Generator().manual_seed(0))[:, 0].numpy(),
                          "background")
    ones, bg = load_run(runs[0]), load_run(background)
    with pytest.raises(ConfigError, match="needs --background"):
        Detector(ones, method="ratio")
    with pytest.raises(ConfigError, match="for --method ratio"):
        Detector(ones, method="elbo", background=bg)
    detector = Detector(ones, method="ratio", background=background)
    record = detector.calibrate(quantile=0.9)
    assert record["background"] == str(background.resolve())
    x = ones.inputs(test_digits)
    seed = ones.config.train.seed
    torch.testing.assert_close(detector.score(test_digits).scores,
                               anomaly_scores(ones.model, x, "elbo", seed).double()
                               - anomaly_scores(bg.model, x, "elbo", seed).double(), rtol=0, atol=1e-9)
    detector.save()
    again = Detector.load(runs[0])  # the background run comes back from threshold.json
    assert again.background_name == str(background.resolve()) and again.threshold == record["threshold"]
    with pytest.raises(ConfigError, match="calibrated with the background run"):
        Detector.load(runs[0], background=runs[1])
    mismatched = train_on(tmp_path, ones_images[:300, 0, :14, :14].numpy(), "small")
    with pytest.raises(ConfigError, match="must share the run's image size"):
        Detector(ones, method="ratio", background=mismatched)


def test_a_threshold_json_from_before_the_new_detectors_keeps_its_meaning(runs, test_digits, tmp_path):
    """Files written before complexity was the default hold "method" and no "combine": elbo by the density rule."""
    old = copy_run(runs[0], tmp_path / "old")
    (old / "threshold.json").write_text(json.dumps({
        "threshold": 150.0, "quantile": 0.99, "false_positive_rate": 0.01, "fitted_on": 50, "measured_on": 50,
        "method": "elbo", "iw_samples": None, "data": "the run's held-out images", "mixture": []}))
    detector = Detector.load(old)
    assert (detector.method, detector.combine, detector.threshold, detector.background) == (
        "elbo", "density", 150.0, None)
    run = load_run(old)
    expected = anomaly_scores(run.model, run.inputs(test_digits), "elbo", run.config.train.seed)
    result = detector.score(test_digits)
    assert torch.equal(result.scores, expected) and torch.equal(result.anomaly, expected > 150.0)


def test_the_cli_calibrates_and_scores_with_a_background_run(runs, mnist_train, tmp_path, capsys):
    noised = perturb(mnist_train.images[mnist_train.labels == 1][:1000], 0.2, torch.Generator().manual_seed(0))
    background = train_on(tmp_path, noised[:, 0].numpy(), "noised")
    run = copy_run(runs[0], tmp_path / "ones")
    capsys.readouterr()
    assert main(["calibrate", str(run), "--method", "ratio", "--background", str(background), "--quantile", "0.9"]) == 0
    assert "(ratio, quantile 0.9)" in capsys.readouterr().out
    stored = json.loads((run / "threshold.json").read_text())
    assert stored["method"] == "ratio" and stored["background"] == str(background.resolve())
    np.save(tmp_path / "digits.npy", mnist_train.images[:200, 0].numpy())
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), str(tmp_path / "digits.npy"), "-o", str(out)]) == 0  # the stored background
    scores = torch.tensor([float(r["score"]) for r in csv.DictReader(out.open())])
    expected = Detector(run, method="ratio", background=background).scores(
        ImageSet(mnist_train.images[:200], None, "digits"))
    torch.testing.assert_close(scores, expected.float(), rtol=0, atol=1e-3)
    assert main(["score", str(run), str(tmp_path / "digits.npy"), "--method", "elbo"]) == 2
    assert "calibrated for --method ratio, not elbo" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--method", "ratio"]) == 2
    assert "--method ratio needs --background RUN" in capsys.readouterr().err
