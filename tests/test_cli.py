"""The `vaekit` command end to end, in-process through main() and once through the console script."""

import dataclasses
import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main
from vaekit.data import DATASETS, MNIST, datasets, sources

from .conftest import DATA_DIR

DATA = ["--data-dir", str(DATA_DIR)]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The seed config trained for 2 epochs on the full bundled MNIST, through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "seed"
    assert main(["train", "--epochs", "2", "--out", str(out), *DATA]) == 0
    return out


def test_train_writes_a_complete_run_and_learns(trained, capsys):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "loss.png"} <= names
    assert {"samples_1.png", "samples_2.png", "reconstruction_1.png", "reconstruction_2.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["test_loss"] < rows[0]["test_loss"] < 135
    assert rows[1]["test_loss"] < 120  # the seed's loop reaches 115.6 after two epochs

    code, out, err = run_cli(capsys, "eval", trained, "--json", *DATA)
    assert code == 0
    result = json.loads(out)
    assert {"test_loss", "reconstruction", "kl", "active_units", "kl_per_dim", "bits_per_dim_basis"} == set(result)
    assert result["bits_per_dim_basis"] == "none"  # a Bernoulli on grey pixels: a cross-entropy, no bits/dim
    assert result["active_units"] == 20 and len(result["kl_per_dim"]) == 20
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)
    assert result["test_loss"] == pytest.approx(rows[1]["test_loss"], abs=1e-6)  # same seed, same numbers
    assert result["test_loss"] == pytest.approx(result["reconstruction"] + result["kl"])


def test_eval_with_importance_samples(trained, capsys):
    code, out, _ = run_cli(capsys, "eval", trained, "--iw-samples", 20, "--json", *DATA)
    assert code == 0
    result = json.loads(out)
    assert result["iw_samples"] == 20
    assert result["test_loss"] - 8 < result["nll"] < result["test_loss"] - 1  # a tighter bound than the ELBO

    # each finished block of 1,000 test images is recorded; a stopped evaluation goes on from there
    record = trained / "nll-blocks.jsonl"
    lines = record.read_text().splitlines()
    assert len(lines) == 10 and [json.loads(line)["start"] for line in lines] == list(range(0, 10_000, 1000))
    record.write_text("\n".join(lines[:3]) + "\n" + lines[3][:50])  # three blocks, then a line torn by a kill
    code, out, err = run_cli(capsys, "eval", trained, "--iw-samples", 20, "--json", *DATA)
    assert code == 0 and "3 of 10 blocks of 1000 images already estimated" in err
    assert json.loads(out)["nll"] == result["nll"]  # the blocks redone are the same blocks
    assert len([json.loads(line) for line in record.read_text().splitlines()[4:]]) == 7  # the torn line left alone
    code, out, err = run_cli(capsys, "eval", trained, "--iw-samples", 20, "--json", *DATA)
    assert "10 of 10 blocks" in err and json.loads(out)["nll"] == result["nll"]  # asked again: read back
    # another K, or other weights, are not mixed in
    other = [json.dumps({**json.loads(line), "weights": "0" * 64}) for line in record.read_text().splitlines()[4:]]
    record.write_text("\n".join(other) + "\n")
    code, out, err = run_cli(capsys, "eval", trained, "--iw-samples", 20, "--json", *DATA)
    assert "already estimated" not in err and json.loads(out)["nll"] == result["nll"]
    code, out, err = run_cli(capsys, "eval", trained, "--iw-samples", 10, "--json", *DATA)
    assert "already estimated" not in err and json.loads(out)["nll"] > result["nll"]  # fewer samples: a looser bound


def test_eval_of_the_first_images_shares_its_blocks_with_the_whole_test_set(trained, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("nll-blocks.jsonl"))
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", 20, "--images", 1500, "--json", *DATA)
    assert code == 0 and "already estimated" not in err
    quick = json.loads(out)
    assert quick["images"] == 1500 and quick["iw_samples"] == 20
    rows = [json.loads(line) for line in (run / "nll-blocks.jsonl").read_text().splitlines()]
    assert [(r["start"], len(r["nll"]), r["images"]) for r in rows] == [(0, 1000, 10_000), (1000, 500, 10_000)]
    assert quick["nll"] == pytest.approx(np.mean(rows[0]["nll"] + rows[1]["nll"]), abs=1e-9)
    whole = json.loads(run_cli(capsys, "eval", trained, "--iw-samples", 20, "--json", *DATA)[1])
    assert "images" not in whole and whole["test_loss"] != quick["test_loss"]  # the ELBO, too, of 1,500 images
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", 20, "--json", *DATA)
    assert "1 of 10 blocks of 1000 images already estimated" in err  # the block of 500 is done again, whole
    assert json.loads(out)["nll"] == whole["nll"]
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", 20, "--images", 1200)
    assert code == 0 and "2 of 2 blocks of 1000 images already estimated" in err  # the whole blocks serve
    assert out.startswith("on the first 1,200 of the 10,000 test images\n")
    code, _, err = run_cli(capsys, "eval", run, "--images", 10_001)
    assert_one_line_error(code, err, 2, "--images 10001 is more than the 10,000 test images")


def test_eval_prints_a_table(trained, capsys):
    code, out, _ = run_cli(capsys, "eval", trained, *DATA)
    assert code == 0 and "test loss" in out and "KL" in out


def test_sample_grid(trained, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "sample", trained, "-n", 16, "-o", tmp_path / "s.png", "--seed", 3)
    assert code == 0
    image = np.array(Image.open(tmp_path / "s.png"))
    assert image.shape == (4 * (2 + 2 * 30), 4 * (2 + 8 * 30))  # 28-pixel images shown 112 pixels a side
    run_cli(capsys, "sample", trained, "-n", 16, "-o", tmp_path / "t.png", "--seed", 3)
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "t.png").read_bytes()


def test_reconstruct_grid(trained, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "reconstruct", trained, "-n", 8, "-o", tmp_path / "r.png", *DATA)
    assert code == 0
    image = np.array(Image.open(tmp_path / "r.png")).astype(float)[::4, ::4]  # the default scale, 4
    assert image.shape == (2 + 2 * 30, 2 + 8 * 30)
    top, bottom = image[2:30, 2:30], image[32:60, 2:30]
    assert np.corrcoef(top.ravel(), bottom.ravel())[0, 1] > 0.8  # the reconstruction looks like the input


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_strip(trained, tmp_path, capsys, method):
    path = tmp_path / f"{method}.png"
    code, _, _ = run_cli(capsys, "interpolate", trained, "--from", 0, "--to", 1, "--steps", 10,
                         "--method", method, "-o", path, *DATA)
    assert code == 0 and np.array(Image.open(path)).shape == (4 * 32, 4 * (2 + 10 * 30))  # 302x32 was too small
    code, _, _ = run_cli(capsys, "interpolate", trained, "--from", 0, "--to", 1, "--steps", 10,
                         "--method", method, "-o", tmp_path / "small.png", "--scale", 1, *DATA)
    small = np.array(Image.open(tmp_path / "small.png"))
    assert code == 0 and small.shape == (32, 2 + 10 * 30)
    np.testing.assert_array_equal(np.array(Image.open(path))[::4, ::4], small)  # each pixel repeated, nearest


def assert_one_line_error(code, err, expected_code, fragment):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaekit: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize("argv, code, fragment", [
    (["train", "--epochs", "0"], 2, "--epochs: expected a positive integer, got '0'"),
    (["train", "--epochs", "-3"], 2, "--epochs: expected a positive integer, got '-3'"),
    (["train", "--batch-size", "0"], 2, "--batch-size: expected a positive integer, got '0'"),
    (["train", "--batch-size", "-1"], 2, "--batch-size: expected a positive integer"),
    (["train", "--lr", "abc"], 2, "--lr: expected a positive number"),
    (["train", "--binarize", "otsu"], 2, "invalid choice: 'otsu'"),
    (["train", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["train", "--warmup", "1.5"], 2, "--warmup: expected a number in [0, 1)"),
    (["train", "--recipe", "slow"], 2, "invalid choice: 'slow'"),
    (["eval", "somewhere", "--iw-samples", "0"], 2, "--iw-samples: expected a positive integer"),
    (["sample", "nowhere", "-o", "x.jpg"], 2, "expected a .png file name"),
    (["fly"], 2, "invalid choice: 'fly'"),
])
def test_bad_arguments(capsys, tmp_path, monkeypatch, argv, code, fragment):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(*run_cli(capsys, *argv)[::2], code, fragment)


def test_missing_data_file(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data here, and the test cache is empty
    with socket.socket() as s:  # a loopback port nobody listens on: the mirror refuses the connection
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(MNIST, mirrors=(dead,)))
    monkeypatch.setattr(datasets, "BUNDLED_DIR", tmp_path / "not-installed")  # as if the package had no copy
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--data-dir", tmp_path / "empty")
    assert_one_line_error(code, err, 3, "MNIST files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                          "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz not found in ")
    assert "could not download MNIST file train-images-idx3-ubyte.gz" in err and "Connection refused" in err
    assert str(tmp_path / "empty" / "mnist") in err
    assert "pass --data-dir DIR, or set $VAEKIT_DATA_DIR to DIR" in err
    assert not (tmp_path / "r").exists()
    # eval needs only the test split: only its files are looked for, named, and downloaded
    code, _, err = run_cli(capsys, "eval", trained)
    assert_one_line_error(code, err, 3, "MNIST files t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz not found")
    assert "train-" not in err


def test_eval_from_another_directory_reads_only_the_test_split(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data: the copy inside the package serves
    opened = []
    real_read_checked = datasets.read_checked
    monkeypatch.setattr(datasets, "read_checked", lambda path, file: opened.append(path.name) or
                        real_read_checked(path, file))
    code, out, _ = run_cli(capsys, "eval", trained, "--json")
    assert code == 0 and opened == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert json.loads(out)["test_loss"] == pytest.approx(
        json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])["test_loss"], abs=1e-6)


def test_corrupt_data_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    for f in DATA_DIR.joinpath("mnist").glob("*.gz"):
        shutil.copy(f, folder / f.name)
    broken = folder / "train-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-100])
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--data-dir", tmp_path / "d")
    assert_one_line_error(code, err, 3, "train-labels-idx1-ubyte.gz: corrupt or truncated gzip")


def test_not_a_run_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for sub in (["eval"], ["sample", "-o", tmp_path / "x.png"], ["reconstruct", "-o", tmp_path / "x.png"]):
        code, _, err = run_cli(capsys, sub[0], tmp_path / "empty", *sub[1:])
        assert_one_line_error(code, err, 4, "is not a run directory (no config.json)")
    assert not (tmp_path / "x.png").exists()


def test_index_out_of_range(trained, capsys, tmp_path):
    code, _, err = run_cli(capsys, "interpolate", trained, "--from", 0, "--to", 10000, "-o", tmp_path / "i.png", *DATA)
    assert_one_line_error(code, err, 2, "--to 10000 is out of range: the test set has 10000 images (0 to 9999)")
    code, _, err = run_cli(capsys, "reconstruct", trained, "-n", 10001, "-o", tmp_path / "i.png", *DATA)
    assert_one_line_error(code, err, 2, "argument -n: expected a count from 1 to 10,000, got '10001'")
    assert not (tmp_path / "i.png").exists()


def test_existing_run_is_not_overwritten(trained, capsys):
    before = (trained / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", "--epochs", 1, "--out", trained, *DATA)
    assert_one_line_error(code, err, 4, "already holds a run")
    assert (trained / "model.safetensors").read_bytes() == before


def test_unwritable_output(trained, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    code, _, err = run_cli(capsys, "sample", trained, "-o", blocker / "s.png")
    assert_one_line_error(code, err, 5, f"cannot write {blocker / 's.png'}: {blocker} is a file, not a directory")


def test_console_script_has_no_traceback(tmp_path):
    exe = shutil.which("vaekit") or sys.executable
    argv = [exe] if exe.endswith("vaekit") else [exe, "-m", "vaekit"]
    result = subprocess.run([*argv, "eval", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [f"vaekit: error: {tmp_path / 'missing'} is not a run directory "
                                                  "(no such directory)"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("make, fragment", [
    (lambda d: np.save(d / "x.npy", np.full((10, 8, 8), 2.0)), "float images must be in [0, 1]"),
    (lambda d: np.save(d / "x.npy", np.zeros((10, 7), np.uint8)), "rows of 7 pixels are not square images"),
    (lambda d: np.save(d / "x.npy", np.zeros((10, 8, 8), np.complex64)), "got dtype complex64"),
    (lambda d: (d / "x.npy").write_bytes(b"\x93NUMPY garbage"), "not a readable .npy array"),
    (lambda d: (d / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"), "unreadable image"),
    (lambda d: (d / "x.idx").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02"), "truncated IDX header"),
    (lambda d: (d / "x").mkdir(), "no images found"),
])
def test_bad_user_data(capsys, tmp_path, make, fragment):
    make(tmp_path)
    source = next(p for p in tmp_path.iterdir() if p.name.startswith("x"))
    code, _, err = run_cli(capsys, "train", "--data", source, "--out", tmp_path / "run")
    assert_one_line_error(code, err, 3, fragment)
    assert not (tmp_path / "run").exists()  # nothing written


def test_training_on_a_folder_of_images(capsys, tmp_path, mnist_train, monkeypatch):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, digit in enumerate(mnist_train.images[:300, 0].numpy()):
        Image.fromarray(digit).save(folder / f"{i:03d}.png")
    reads = []
    read_folder = sources.read_folder
    monkeypatch.setattr(sources, "read_folder", lambda path, **kw: reads.append(path) or read_folder(path, **kw))
    out = tmp_path / "run"
    code, out_text, err = run_cli(capsys, "train", "--data", folder, "--epochs", 3, "--hidden", 64, "--latent", 4,
                                  "--batch-size", 32, "--out", out)
    assert code == 0, err
    assert reads == [folder]  # read once: the same images size the model and are trained on
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["name"] == str(folder) and config["model"]["input_shape"] == [1, 28, 28]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] < 545  # learns; the held-out 30 images are its test set
    code, text, _ = run_cli(capsys, "eval", out, "--json")
    assert code == 0 and json.loads(text)["test_loss"] == pytest.approx(rows[-1]["test_loss"], abs=1e-6)
    code, _, err = run_cli(capsys, "interpolate", out, "--from", 0, "--to", 30, "-o", tmp_path / "i.png")
    assert_one_line_error(code, err, 2, "--to 30 is out of range: the test set has 30 images (0 to 29)")


def test_unwritable_run_directory(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "train", "--out", blocker / "run", "--epochs", 1, *DATA)
    assert_one_line_error(code, err, 5, "cannot write")


@pytest.mark.parametrize("data", [[], ["--data", "mnist"], ["--data", "fashion-mnist"]])
def test_validation_is_refused_for_a_dataset_with_a_test_split(capsys, tmp_path, data):
    code, _, err = run_cli(capsys, "train", *data, "--validation", 0.3, "--out", tmp_path / "r")
    name = data[1] if data else "mnist"
    assert_one_line_error(code, err, 2, f"--validation holds out a share of your own images; {name} has a test "
                                        "split of its own: drop --validation")
    assert not (tmp_path / "r").exists()


def test_a_split_name_is_not_a_training_set(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "mnist:test", "--out", tmp_path / "r")
    assert_one_line_error(code, err, 2, "give the dataset's name (mnist)")


def test_collapse_warning_is_printed_once(capsys, tmp_path, mnist_train):
    np.save(tmp_path / "digits.npy", mnist_train.images[:4000, 0].numpy())
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "digits.npy", "--beta", 16, "--epochs", 3,
                             "--hidden", 128, "--batch-size", 128, "--out", tmp_path / "run")
    assert code == 0, err
    assert err.count("vaekit: warning: posterior collapse: only ") == 1  # a warning: stderr, not the log on stdout
    assert "posterior collapse" not in out and out.count("epoch ") == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["active_units"] < 10 and len(rows[-1]["kl_per_dim"]) == 20
