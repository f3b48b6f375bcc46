"""The runs shipped with vaekit (vaekit.pretrained): they load and decode as their manifest says, their names work
in the CLI and the Python API, commands that would write into them refuse, copies are runs of one's own, and a
doctored manifest or file is a one-line error."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

import vaekit
from vaekit import pretrained
from vaekit.cli import main
from vaekit.errors import RunError
from vaekit.generate import sample
from vaekit.runs import load_run, write_threshold

from .tiny_run import is_one_error_line

NAMES = ("mnist", "fashion-mnist", "mnist-anomaly", "mnist-compress")


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A copy of the shipped runs and manifest that the module reads instead of its own: safe to doctor."""
    root = tmp_path / "shipped"
    shutil.copytree(pretrained.RUNS_DIR, root / "runs")
    shutil.copy(pretrained.MANIFEST, root / "manifest.json")
    monkeypatch.setattr(pretrained, "RUNS_DIR", root / "runs")
    monkeypatch.setattr(pretrained, "MANIFEST", root / "manifest.json")
    return root


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_manifest_lists_every_run_with_its_files_small_and_intact():
    manifest = pretrained.read_manifest()
    assert tuple(manifest["runs"]) == NAMES
    total = 0
    for name, run in manifest["runs"].items():
        assert run["commands"][-1].startswith("vaekit ") and "--threads 1" in run["commands"][-1]
        files = pretrained.verified_files(name)  # sizes and SHA-256 as recorded
        assert set(files) == set(run["files"]) and "checkpoint.safetensors" not in files
        assert sum(map(len, files.values())) < 4 << 20  # a few MB at most, no optimizer state
        total += sum(map(len, files.values()))
    assert total < 16 << 20
    assert {"vaekit", "torch", "cpu"} <= set(manifest["made_with"])


def test_pretrained_mnist_loads_and_decodes_as_its_manifest_says(capsys):
    numbers = pretrained.entry("mnist")["numbers"]
    code, out, err = run_cli(["eval", "pretrained:mnist", "--images", "500", "--json", "--threads", "1"], capsys)
    assert code == 0, err
    result = json.loads(out)
    # the manifest's number was measured by the same command; other CPUs may round bf16 differently
    assert result["test_loss"] == pytest.approx(numbers["test_loss_first_500"], abs=0.5)
    assert 80 < result["test_loss"] < 110 and result["active_units"] >= 15
    run = vaekit.load_run("pretrained:mnist")  # the Python API takes the name too
    assert run.path == pretrained.RUNS_DIR / "mnist" and run.config.model.latent_dim == 20
    pictures = sample(run.model, 64, torch.Generator().manual_seed(0))
    assert pictures.shape == (64, 1, 28, 28)
    ink = pictures.flatten(1).mean(1)  # each sample a digit: some ink on a dark background, not blank nor full
    assert ((ink > 0.03) & (ink < 0.4)).all() and pictures.std() > 0.2


def test_names_work_in_cli_commands(tmp_path, capsys):
    code, _, err = run_cli(["sample", "pretrained:mnist", "--sampler", "gmm", "-n", "16", "-o", tmp_path / "s.png",
                            "--threads", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "s.png").stat().st_size > 1000
    test = vaekit.load_split("mnist", "test")
    chosen = torch.cat([torch.nonzero(test.labels == 4)[:20, 0], torch.nonzero(test.labels != 4)[:20, 0]])
    np.save(tmp_path / "x.npy", test.images[chosen, 0].numpy())
    code, out, err = run_cli(["score", "pretrained:mnist-anomaly", tmp_path / "x.npy", "--threads", "1"], capsys)
    assert code == 0, err
    flags = [int(line.rsplit(",", 1)[1]) for line in out.splitlines()[1:]]  # its calibrated threshold decides
    assert len(flags) == 40 and sum(flags[:20]) <= 3 and sum(flags[20:]) >= 10
    code, out, err = run_cli(["compress", "pretrained:mnist-compress", tmp_path / "x.npy", "-o", tmp_path / "x.vkbb",
                              "--threads", "1"], capsys)
    assert code == 0, err
    bits = (tmp_path / "x.vkbb").stat().st_size * 8 / 40
    assert 40 < bits < 300  # ~0.13 bits per pixel on the test set; 40 images also carry the coder's fixed cost
    code, out, err = run_cli(["decompress", "pretrained:mnist-compress", tmp_path / "x.vkbb", "-o",
                              tmp_path / "y.npy", "--threads", "1"], capsys)
    assert code == 0, err
    decoded = np.load(tmp_path / "y.npy")
    assert ((decoded > 0) == (test.images[chosen, 0].numpy() > 127)).all() and decoded.max() > 0  # thresholded


@pytest.mark.parametrize("argv", [
    ["calibrate", "pretrained:mnist-anomaly"],
    ["fit-sampler", "pretrained:mnist", "--sampler", "gmm"],
    ["train", "--resume", "pretrained:mnist", "--epochs", "11"],
])
def test_commands_that_write_into_a_run_refuse_a_pretrained_one(argv, capsys):
    before = pretrained.verified_files(argv[2] if argv[0] == "train" else argv[1])
    code, out, err = run_cli([*argv, "--threads", "1"], capsys)
    assert code == 4 and out == "" and is_one_error_line(err)
    way_out = "vaekit pretrained list --json" if argv[0] == "train" else "vaekit pretrained copy"  # no optimizer ships
    assert "is a pretrained run shipped with vaekit" in err and way_out in err
    assert pretrained.verified_files(argv[2] if argv[0] == "train" else argv[1]) == before


def test_the_shipped_directory_itself_is_refused_too(capsys):
    code, _, err = run_cli(["calibrate", pretrained.RUNS_DIR / "mnist-anomaly", "--threads", "1"], capsys)
    assert code == 4 and "pretrained:mnist-anomaly is a pretrained run" in err


def test_copy_makes_a_run_of_ones_own_and_never_replaces(tmp_path, capsys):
    target = tmp_path / "mine"
    code, out, err = run_cli(["pretrained", "copy", "pretrained:mnist-anomaly", target], capsys)
    assert code == 0, err
    shipped = pretrained.verified_files("mnist-anomaly")
    assert pretrained.DATA_FILE in shipped  # it ships its training 4s, so its held-out set reads anywhere
    for relative, data in shipped.items():
        assert (target / relative).read_bytes() == data or relative == "config.json"  # which names its own copy
    copied, original = load_run(target), load_run("pretrained:mnist-anomaly")
    assert pretrained.shipped_name(copied.path) is None and copied.config.model.likelihood == "gaussian-shared"
    assert copied.config.data.name == str(target.resolve() / pretrained.DATA_FILE)
    assert original.config.data.name == str(pretrained.RUNS_DIR / "mnist-anomaly" / pretrained.DATA_FILE)
    held_out = original.held_out()  # the validation share of the 4s it trained on, from any folder
    assert len(held_out) == round(0.1 * 5842) and torch.equal(copied.held_out().images, held_out.images)
    assert not list(tmp_path.glob(".*"))  # no staging folder left
    code, out, err = run_cli(["pretrained", "copy", "mnist", target], capsys)
    assert code == 4 and is_one_error_line(err) and "already exists" in err
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(["pretrained", "copy", "mnist", tmp_path / "empty"], capsys)
    assert code == 4 and not list((tmp_path / "empty").iterdir())


def test_copy_into_vaekits_own_files_is_refused_and_leaves_the_shipped_runs_intact(shipped, tmp_path, capsys):
    (tmp_path / "link").symlink_to(shipped / "runs" / "mnist")  # a path that reaches a shipped run by a link
    for target in (shipped / "runs" / "mine", shipped / "runs" / "mnist" / "mine", tmp_path / "link" / "mine",
                   pretrained.ROOT / "mine", pretrained.ROOT.parent / "mine"):
        code, out, err = run_cli(["pretrained", "copy", "mnist", target], capsys)
        assert code == 4 and is_one_error_line(err) and "inside vaekit's own files" in err, (target, err)
        assert not target.exists()
    assert sorted(p.name for p in (shipped / "runs").iterdir()) == sorted(NAMES)
    assert pretrained.verified_files("mnist").keys() == pretrained.entry("mnist")["files"].keys()


def test_list_shows_each_run_with_its_numbers(capsys):
    code, out, err = run_cli(["pretrained", "list", "--json"], capsys)
    assert code == 0, err
    listed = json.loads(out)["runs"]
    assert list(listed) == list(NAMES)
    assert listed["mnist-anomaly"]["numbers"]["auroc_4s_vs_other_digits"] > 0.9
    assert listed["mnist-compress"]["numbers"]["bits_per_pixel"] < 0.2
    assert all(0 < run["bytes"] < 4 << 20 for run in listed.values())
    code, out, err = run_cli(["pretrained", "list"], capsys)
    assert code == 0 and all(f"pretrained:{name}" in out for name in NAMES)


def test_an_unknown_name_lists_the_known_ones(capsys):
    code, out, err = run_cli(["eval", "pretrained:mnits", "--threads", "1"], capsys)
    assert code == 4 and is_one_error_line(err)
    assert "no pretrained run pretrained:mnits" in err and all(f"pretrained:{name}" in err for name in NAMES)
    for name in ("pretrained:../mnist", "pretrained:", "pretrained:MNIST", "pretrained:mnist/../mnist"):
        code, out, err = run_cli(["eval", name, "--threads", "1"], capsys)
        assert code == 4 and is_one_error_line(err) and f"no pretrained run {name};" in err
    code, out, err = run_cli(["eval", "pretrained:" + "m" * 5000, "--threads", "1"], capsys)
    assert code == 4 and is_one_error_line(err) and "m" * 40 + "...(5,000 characters)" in err and len(err) < 400


def test_doctored_weights_are_refused(shipped, capsys):
    weights = shipped / "runs" / "mnist" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # one bit of one weight
    weights.write_bytes(bytes(data))
    code, out, err = run_cli(["sample", "pretrained:mnist", "-o", shipped / "s.png", "--threads", "1"], capsys)
    assert code == 4 and is_one_error_line(err) and "SHA-256" in err and "model.safetensors" in err
    with pytest.raises(RunError, match="damaged"):
        load_run("pretrained:mnist")
    with pytest.raises(RunError, match="damaged"):
        pretrained.copy("mnist", shipped / "copy")
    assert not (shipped / "copy").exists()


def test_an_added_or_missing_file_is_refused(shipped):
    (shipped / "runs" / "mnist-compress" / "threshold.json").write_text("{}")
    with pytest.raises(RunError, match="not one of the files"):
        load_run("pretrained:mnist-compress")
    (shipped / "runs" / "mnist" / "metrics.jsonl").unlink()
    with pytest.raises(RunError, match="missing"):
        load_run("pretrained:mnist")


@pytest.mark.parametrize("doctor", [
    lambda m: "{not json",
    lambda m: json.dumps({**m, "manifest_version": 99}),
    lambda m: json.dumps({**m, "runs": {"../up": m["runs"]["mnist"]}}),
    lambda m: json.dumps({**m, "runs": {"mnist": {**m["runs"]["mnist"], "files": {
        **m["runs"]["mnist"]["files"], "../../x.json": {"bytes": 1, "sha256": "0" * 64}}}}}),
    lambda m: json.dumps({**m, "runs": {"mnist": {**m["runs"]["mnist"], "files": {
        **m["runs"]["mnist"]["files"], "model.safetensors": {"bytes": 10 ** 12, "sha256": "0" * 64}}}}}),
    lambda m: json.dumps({**m, "runs": {"mnist": {**m["runs"]["mnist"], "numbers": {"nll": float("nan")}}}}),
])
def test_a_doctored_manifest_is_refused_in_one_line(shipped, doctor, capsys):
    manifest = shipped / "manifest.json"
    manifest.write_text(doctor(json.loads(manifest.read_text())))
    code, out, err = run_cli(["eval", "pretrained:mnist", "--threads", "1"], capsys)
    assert code == 4 and out == "" and is_one_error_line(err) and "manifest.json" in err


def test_a_manifest_naming_other_bytes_is_refused(shipped):
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["runs"]["mnist"]["files"]["config.json"]["sha256"] = hashlib.sha256(b"other").hexdigest()
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="config.json: its SHA-256"):
        load_run("pretrained:mnist")


def test_the_python_api_refuses_to_write_into_a_pretrained_run():
    run = load_run("pretrained:mnist-anomaly")
    with pytest.raises(RunError, match="vaekit pretrained copy mnist-anomaly DIR"):
        write_threshold(run.path, {"threshold": 0.0, "method": "elbo"})  # what Detector.save calls
    with pytest.raises(RunError, match="cannot be continued"):
        vaekit.resume("pretrained:mnist", epochs=11)
    assert pretrained.verified_files("mnist-anomaly")  # untouched
