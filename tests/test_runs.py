import dataclasses
import json

import pytest
import torch

from vaekit import VAE, DataConfig, ModelConfig, RunConfig, TrainConfig, load_run
from vaekit.errors import RunError
from vaekit.runs import create_run, read_metrics, read_threshold, save_weights, write_metrics, write_threshold

SMALL = RunConfig(model=ModelConfig(hidden_dims=(16,), latent_dim=3))


def make_run(path, config=SMALL):
    create_run(path, config)
    torch.manual_seed(0)
    model = VAE(config.model)
    save_weights(path, model, epoch=1)
    write_metrics(path, [{"epoch": 1, "train_loss": 200.0, "test_loss": 190.0}])
    return model


def test_round_trip(tmp_path):
    model = make_run(tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert run.config == SMALL and run.metrics == [{"epoch": 1, "train_loss": 200.0, "test_loss": 190.0}]
    for name, tensor in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], tensor)
    document = json.loads((tmp_path / "r" / "config.json").read_text())
    assert document["format_version"] == 9 and document["model"]["hidden_dims"] == [16]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_an_older_run_reads_with_independent_pixels_and_raw_images(tmp_path, version):
    make_run(tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    document = json.loads(path.read_text())
    del document["train"]["warmup_min_steps"]  # formats 1 to 4 warmed up over the fraction of steps alone
    if version < 4:
        del document["model"]["context_features"]  # formats 1 to 3 had no context features
    if version < 3:
        del document["data"]["standardize"]  # formats 1 and 2 had no standardization
    if version == 1:
        for key in ("pixel_groups", "context_channels"):  # format 1 had no pixel context
            del document["model"][key]
    path.write_text(json.dumps({**document, "format_version": version}))
    assert load_run(tmp_path / "r").config == dataclasses.replace(
        SMALL, train=dataclasses.replace(SMALL.train, warmup_min_steps=0))


def test_a_format_6_run_reads_without_likelihood_components(tmp_path):
    make_run(tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    document = json.loads(path.read_text())
    del document["model"]["likelihood_components"]  # format 7 added it, with the mixture likelihoods
    path.write_text(json.dumps({**document, "format_version": 6}))
    assert load_run(tmp_path / "r").config == SMALL and SMALL.model.likelihood_components == 10


# config.json exactly as the first vaekit wrote it (run format 1 before bf16, schedules, conv models and priors):
# the seed's MLP, Adam at lr 1e-3 with PyTorch's defaults, constant, fp32.
FIRST_FORMAT_1 = {"format_version": 1, "vaekit_version": "0.1.0", "data": {"name": "mnist", "binarize": "none"},
                  "model": {"input_shape": [1, 28, 28], "hidden_dims": [16], "latent_dim": 3},
                  "train": {"epochs": 10, "batch_size": 128, "lr": 0.001, "seed": 1}}


def test_a_first_format_1_run_reads_with_the_behaviour_it_was_trained_with(tmp_path):
    model = make_run(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text(json.dumps(FIRST_FORMAT_1))
    run = load_run(tmp_path / "r")
    assert run.config == RunConfig(data=DataConfig(resize="aspect"), model=ModelConfig(hidden_dims=(16,),
                                                                                       latent_dim=3),
                                   train=TrainConfig.seed_settings(precision="fp32", warmup_min_steps=0))
    assert all(torch.equal(run.model.state_dict()[name], t) for name, t in model.state_dict().items())
    # a later format-1 document kept what it wrote: only the missing fields take the old behaviour
    later = {**FIRST_FORMAT_1, "train": {**FIRST_FORMAT_1["train"], "schedule": "cosine", "warmup": 0.05}}
    (tmp_path / "r" / "config.json").write_text(json.dumps(later))
    train = load_run(tmp_path / "r").config.train
    assert (train.schedule, train.warmup, train.beta2, train.precision) == ("cosine", 0.05, 0.999, "fp32")


def test_an_existing_run_is_never_overwritten(tmp_path):
    make_run(tmp_path / "r")
    before = (tmp_path / "r" / "config.json").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        create_run(tmp_path / "r", RunConfig())
    assert (tmp_path / "r" / "config.json").read_bytes() == before


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "is not a run directory (no such directory)"),
    (lambda p: p.mkdir(), "is not a run directory (no config.json)"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{nope")), "config.json: unreadable"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text(json.dumps(
        {"format_version": 1, **SMALL.to_dict(), "model": {**SMALL.to_dict()["model"], "latent": 3}}))),
     "unknown key(s): latent"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"format_version": 1}')),
     "missing key(s): data, model, train"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text(json.dumps({"format_version": 1, **SMALL.to_dict()}))),
     "no model.safetensors"),
])
def test_bad_run_directories(tmp_path, setup, message):
    path = tmp_path / "r"
    setup(path)
    with pytest.raises(RunError) as info:
        load_run(path)
    assert message in str(info.value)


def test_a_run_from_a_newer_vaekit_is_refused(tmp_path):
    make_run(tmp_path / "r")
    config_path = tmp_path / "r" / "config.json"
    document = json.loads(config_path.read_text())
    document.update(format_version=99, vaekit_version="9.0.0")
    config_path.write_text(json.dumps(document))
    with pytest.raises(RunError, match=r"written by vaekit 9\.0\.0 \(run format 99\).*upgrade vaekit"):
        load_run(tmp_path / "r")


def test_weights_that_do_not_match_the_config(tmp_path):
    make_run(tmp_path / "r")
    config_path = tmp_path / "r" / "config.json"
    document = json.loads(config_path.read_text())
    document["model"]["latent_dim"] = 5
    config_path.write_text(json.dumps(document))
    with pytest.raises(RunError, match=r"weights do not match the run's config \(encoder.head.weight is"):
        load_run(tmp_path / "r")


def test_corrupt_weights(tmp_path):
    make_run(tmp_path / "r")
    weights = tmp_path / "r" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RunError, match="model.safetensors: unreadable"):
        load_run(tmp_path / "r")


def test_torn_metrics_line_is_reported(tmp_path):
    make_run(tmp_path / "r")
    (tmp_path / "r" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo')
    with pytest.raises(RunError, match="metrics.jsonl:2: not a JSON line"):
        read_metrics(tmp_path / "r")


def test_a_metric_past_a_floats_range_is_refused_and_nan_kept(tmp_path):
    make_run(tmp_path / "r")
    row = {"epoch": 1, "train_loss": 1.5, "test_loss": 2.5}
    for bad in ({"test_loss": 10**400}, {"kl_per_dim": [0.5, -10**400]}, {"kl_per_layer": {"z": 10**400}}):
        (tmp_path / "r" / "metrics.jsonl").write_text(json.dumps({**row, **bad}) + "\n")
        with pytest.raises(RunError, match="metrics.jsonl: .*must (be|map)"):
            read_metrics(tmp_path / "r")  # OverflowError, exit 70, in the report's plots before
    (tmp_path / "r" / "metrics.jsonl").write_text(json.dumps({**row, "test_loss": float("nan")}) + "\n")
    assert str(read_metrics(tmp_path / "r")[0]["test_loss"]) == "nan"  # a diverged epoch is still recorded


def test_threshold_round_trip_and_corrupt_threshold_files(tmp_path):
    calibration = {"threshold": 2.5, "method": "elbo", "references": {"/runs/a": [10.0, 2.0], "/runs/b": [110.0, 10.0]}}
    write_threshold(tmp_path, calibration)
    assert read_threshold(tmp_path) == calibration
    assert read_threshold(tmp_path / "nothing") is None
    for bad in ({"method": "elbo"}, {**calibration, "threshold": "high"},
                {**calibration, "references": {"/runs/a": [10.0, 0.0]}},
                {**calibration, "references": {"/runs/a": [1.0]}}, {**calibration, "references": [[10.0, 2.0]]},
                # ints past a float's range (JSON reads up to 4,300 digits): OverflowError, exit 70, before
                {**calibration, "threshold": 10**400}, {**calibration, "references": {"/runs/a": [10**400, 2.0]}},
                {**calibration, "complexity_rates": {".": -10**400}}, {**calibration, "quantile": 10**400}):
        write_threshold(tmp_path, bad)
        with pytest.raises(RunError, match="threshold.json: unreadable .*; run vaekit calibrate again"):
            read_threshold(tmp_path)


def test_the_run_store_loads_without_evaluation_or_scoring():
    # runs.py holds files, formats and migration; the evaluation drivers (recorded_nll) live in evaluate.py
    import subprocess
    import sys

    code = ("import sys, vaekit.runs; "
            "print(sorted(m for m in sys.modules if m in ('vaekit.evaluate', 'vaekit.anomaly')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import vaekit.evaluate
    import vaekit.runs

    assert not hasattr(vaekit.runs, "recorded_nll") and callable(vaekit.evaluate.recorded_nll)


def test_an_integer_of_thousands_of_digits_is_named_in_vaekit_words(tmp_path):
    """Python's json refuses an int literal past 4,300 digits with advice to call sys.set_int_max_str_digits(); a
    run's files are read by users, not programmers: one line that says what the file holds."""
    from vaekit.runs import read_config
    from vaekit.validation import parse_json

    with pytest.raises(ValueError, match="holds an integer of 5,000 digits") as caught:
        parse_json('{"epochs": ' + "9" * 5000 + "}")
    assert "set_int_max_str_digits" not in str(caught.value)
    assert parse_json('[-' + "9" * 4300 + "]")[0] == -int("9" * 4300)  # up to Python's limit, read as before
    create_run(tmp_path / "r", RunConfig())
    document = json.loads((tmp_path / "r" / "config.json").read_text())
    document["train"]["epochs"] = 12345
    text = json.dumps(document).replace('"epochs": 12345', '"epochs": ' + "1" * 5000)
    (tmp_path / "r" / "config.json").write_text(text)
    with pytest.raises(RunError) as caught:
        read_config(tmp_path / "r")
    assert "5,000 digits" in str(caught.value) and "set_int_max_str_digits" not in str(caught.value)
