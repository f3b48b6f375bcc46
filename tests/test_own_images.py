"""Issue 24's first must-show: a folder of the images users have (mixed sizes, RGB, JPEG, PNG, grayscale, RGBA, in
class subfolders at any depth) trains at --image-size 32, gives colour samples, and score and embed read the same
folder; and the issue's black-on-white "7" is inverted for a run of light digits on black."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_run, load_split
from vaekit.anomaly import anomaly_scores
from vaekit.cli import main
from vaekit.cli.args import model_inputs
from vaekit.generate import reconstruct
from vaekit.runs import create_run

from .conftest import DATA_DIR
from .tiny_run import is_one_error_line

ARCHITECTURE = ("--architecture", "resnet", "--width", 8, "--blocks", 1)  # GroupNorm residual blocks, small


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reddish(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (H, W, 3) uint8 picture: a bright red disc on a dark blue-green field, at a random place and size."""
    y, x = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    r = rng.uniform(0.2, 0.35) * min(height, width)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    picture = np.empty((height, width, 3), np.uint8)
    picture[...] = (20, 60, 50)
    picture[disc] = (230, 40, 30)
    return picture


def users_folder(root):
    """28 images in two class folders (one nested a level deeper), of 6 sizes and 5 kinds of file."""
    rng = np.random.default_rng(0)
    kinds = [("png", (40, 48)), ("jpg", (64, 64)), ("gray.png", (36, 32)), ("rgba.png", (50, 40)), ("jpg", (32, 44)),
             ("png", (100, 75))]
    for label in ("apples", "cherries"):
        for i in range(14):
            suffix, (height, width) = kinds[i % len(kinds)]
            folder = root / label / ("more" if i % 3 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(reddish(rng, height, width))
            if suffix == "gray.png":
                picture = picture.convert("L")
            elif suffix == "rgba.png":
                picture = picture.convert("RGBA")
                picture.putalpha(200)
            picture.save(folder / f"{label}_{i:02d}.{suffix.split('.')[-1]}")
    (root / ".hidden").mkdir()
    Image.fromarray(reddish(rng, 10, 10)).save(root / ".hidden" / "skipped.png")  # a hidden folder is no class
    return root


def test_a_folder_of_mixed_images_trains_samples_colour_and_is_scored_and_embedded(capsys, tmp_path):
    folder = users_folder(tmp_path / "fruit")
    code, _, err = run_cli(capsys, "train", "--data", folder, "--epochs", 1, "--out", tmp_path / "refused")
    assert code == 3 and is_one_error_line(err), err
    assert "differ in size" in err and "give --image-size 40x48 (the most common)" in err
    assert not (tmp_path / "refused").exists()

    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", folder, "--image-size", 32, *ARCHITECTURE,
                           "--hidden", 32, "--latent", 4, "--epochs", 1, "--batch-size", 2, "--validation", 0.25,
                           "--threads", 1, "--out", run)
    assert code == 0, err
    assert "vaekit: warning:" in err and "4 of 28 images have an alpha channel, which is dropped" in err
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["input_shape"] == [3, 32, 32] and config["data"]["resize"] == "crop"
    assert 0.1 < config["data"]["background"] < 0.3  # the dark blue-green field, measured on the training images

    code, _, err = run_cli(capsys, "sample", run, "-n", 16, "-o", tmp_path / "samples.png", "--scale", 1)
    assert code == 0, err
    samples = np.asarray(Image.open(tmp_path / "samples.png"))
    assert samples.ndim == 3 and samples.shape[2] == 3  # colour, not gray
    red, green, blue = (samples[..., c].astype(float).mean() for c in range(3))
    assert red > blue + 15 and red > green + 15  # the red discs show after one epoch (101, 76, 78 when written)

    code, _, err = run_cli(capsys, "score", run, folder, "-o", tmp_path / "scores.csv", "--threads", 1)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert len(rows) == 28 and all(np.isfinite(float(r["score"])) for r in rows)
    assert rows[0]["name"] == "apples/apples_01.jpg" and {r["label"] for r in rows} == {"0", "1"}
    assert "more/" in rows[-1]["name"] or any(r["name"].startswith("apples/more/") for r in rows)

    code, _, err = run_cli(capsys, "embed", run, folder, "-o", tmp_path / "codes.npz", "--threads", 1)
    assert code == 0, err
    with np.load(tmp_path / "codes.npz") as codes:
        assert codes["mu"].shape == (28, 4) and np.isfinite(codes["mu"]).all()
        assert codes["labels"].tolist() == [0] * 14 + [1] * 14


def test_channels_a_rectangular_size_resume_and_probe_on_a_mixed_folder(capsys, tmp_path):
    folder = users_folder(tmp_path / "fruit")
    run = tmp_path / "gray"
    code, _, err = run_cli(capsys, "train", "--data", folder, "--image-size", "16x24", "--channels", 1, "--hidden", 16,
                           "--latent", 2, "--epochs", 1, "--batch-size", 8, "--validation", 0.25, "--threads", 1,
                           "--out", run)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["model"]["input_shape"] == [1, 16, 24]
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", 2, "--threads", 1)  # reads the folder again
    assert code == 0, err
    assert [row["epoch"] for row in load_run(run).metrics] == [1, 2]
    code, out, err = run_cli(capsys, "probe", run, "--json", "--labels", 4, "--no-pixels", "--threads", 1)
    assert code == 0, err
    probes = json.loads(out)  # on the held-out quarter, fitted as the training images were
    assert 0 <= probes["linear"] <= 1 and set(probes["knn"]) == {"1", "5", "10"}
    code, _, err = run_cli(capsys, "train", "--resume", run, "--image-size", 32, "--threads", 1)
    assert code == 2 and "drop --image-size" in err, err
    unfinished = create_run(tmp_path / "unfinished", load_run(run).config)  # as if its first epoch had failed
    code, _, err = run_cli(capsys, "train", "--resume", unfinished, "--lr", "1e-3", "--threads", 1)
    assert code == 0, err  # starts again on the same folder, at the size and channels it was made with
    assert load_run(unfinished).config.model.input_shape == (1, 16, 24)


def seven(size: int = 200, ink: int = 0, paper: int = 255) -> Image.Image:
    """The issue's example: a thick "7" drawn in `ink` on `paper`, as a user would scan or draw it."""
    picture = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(picture)
    draw.line([(0.25 * size, 0.22 * size), (0.75 * size, 0.22 * size), (0.45 * size, 0.82 * size)], fill=ink,
              width=size // 10)
    return picture


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small MNIST run that has learnt digits well enough to draw a 7: 3,000 training images, 2 epochs."""
    directory = tmp_path_factory.mktemp("digits")
    mnist = load_split("mnist", "train", DATA_DIR)
    np.save(directory / "digits.npy", mnist.images[:3000, 0].numpy())
    config = RunConfig(data=DataConfig(name=str(directory / "digits.npy")),
                       model=ModelConfig(hidden_dims=(128,), latent_dim=8), train=TrainConfig(epochs=2, batch_size=64))
    return fit(config, directory / "run", device="cpu").path


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def test_a_black_on_white_seven_is_inverted_for_a_run_of_white_digits(capsys, tmp_path, digits_run):
    seven().save(tmp_path / "seven.png")
    run = load_run(digits_run)
    assert run.config.data.background < 0.01  # MNIST's black border, recorded at training
    auto, _, _ = model_inputs(run, str(tmp_path / "seven.png"), None, invert="auto")
    err = capsys.readouterr().err
    assert "1 of 1 images look dark on light, while the run was trained on light on dark: inverted them" in err
    kept, _, _ = model_inputs(run, str(tmp_path / "seven.png"), None, invert="off")
    assert "--invert auto inverts them" in capsys.readouterr().err
    assert auto.shape == (1, 1, 28, 28) and torch.allclose(auto, 1 - kept, atol=1e-6)
    assert auto[0, 0, 0].max() == 0 and auto.mean() < 0.3  # a light stroke on black, as the run's digits
    white_on_black, _, _ = model_inputs(run, _save(seven(ink=255, paper=0), tmp_path / "w.png"), None, invert="auto")
    assert torch.allclose(auto, white_on_black, atol=1.01 / 255)  # the same digit (up to rounding), not inverted
    assert capsys.readouterr().err == ""
    assert correlation(reconstruct(run.model, auto), auto) > 0.45  # 0.56 when written: the inverted 7 decodes to a 7
    # the run explains the inverted 7 ten times better than the white page as given (196 and 1,881 nats when written)
    scores = anomaly_scores(run.model, torch.cat([auto, kept]), "elbo", seed=1)
    assert scores[0] < scores[1] / 5

    code, _, err = run_cli(capsys, "interpolate", digits_run, "--from", tmp_path / "seven.png", "--to", 0,
                           "--steps", 4, "-o", tmp_path / "walk.png", "--threads", 1)
    assert code == 0 and "inverted them" in err, err
    code, _, err = run_cli(capsys, "interpolate", digits_run, "--from", tmp_path / "seven.png", "--to", 0,
                           "--steps", 4, "--invert", "off", "-o", tmp_path / "blob.png", "--threads", 1)
    assert code == 0 and "--invert auto inverts them" in err, err
    walk, blob = (np.asarray(Image.open(tmp_path / name).convert("L")) for name in ("walk.png", "blob.png"))
    assert walk.shape == blob.shape and not np.array_equal(walk, blob)


def _save(picture: Image.Image, path):
    picture.save(path)
    return str(path)
