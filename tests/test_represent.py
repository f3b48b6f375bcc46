import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAE, ModelConfig, RunConfig, TrainConfig
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.fit import fit
from vaekit.generate import manifold, traverse
from vaekit.representation import (OPTIONAL_PROJECTIONS, balanced_subset, knn_accuracy, label_propagation,
                                   probe_accuracy, project_2d)

from .conftest import DATA_DIR, REPO, seeded

DATA = ["--data-dir", str(DATA_DIR)]


def clusters(n_per_class=100, classes=3, dims=4, spread=0.3, seed=0):
    g = seeded(seed)
    centres = torch.randn(classes, dims, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dims, generator=g), labels


def test_knn_and_linear_probes_on_separable_clusters():
    train_x, train_y = clusters(seed=0)
    test_x, test_y = train_x + 0.05 * torch.randn(train_x.shape, generator=seeded(2)), train_y
    assert knn_accuracy(train_x, train_y, test_x, test_y) == {1: 1.0, 5: 1.0, 10: 1.0}
    assert probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    shuffled = train_y[torch.randperm(len(train_y), generator=seeded(3))]
    assert probe_accuracy(train_x, shuffled, test_x, test_y) < 0.6  # no signal, no accuracy


def test_knn_majority_vote_with_ties():
    train = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert knn_accuracy(train, labels, torch.tensor([[0.1]]), torch.tensor([0]),
                        ks=(1, 2, 3)) == {1: 1.0, 2: 1.0, 3: 0.0}


def test_balanced_subset_and_label_propagation():
    x, y = clusters(n_per_class=200, classes=4, spread=0.5)
    chosen = balanced_subset(y, 8, seed=0)
    assert torch.bincount(y[chosen]).tolist() == [2, 2, 2, 2] and torch.equal(chosen, balanced_subset(y, 8, seed=0))
    test_x, test_y = x[::7] + 0.1, y[::7]
    assert (label_propagation(x, chosen, y[chosen], test_x) == test_y).float().mean() == 1.0
    # a collapsed dimension (variance ~1e-18) must not swamp the distances, as standardizing it would
    tiny = lambda n, seed: 1e-9 * torch.randn(n, 1, generator=seeded(seed))  # noqa: E731
    with_collapsed = torch.cat([x, tiny(len(x), 5)], 1)
    test_collapsed = torch.cat([test_x, tiny(len(test_x), 6)], 1)
    assert (label_propagation(with_collapsed, chosen, y[chosen], test_collapsed) == test_y).float().mean() == 1.0


def test_pca_projection_keeps_the_two_widest_directions():
    x = torch.zeros(100, 5, dtype=torch.float64)
    x[:, 3] = torch.linspace(-1, 1, 100)
    points = project_2d(x + 1e-3 * torch.randn(100, 5, generator=seeded(0), dtype=torch.float64), "pca")
    assert points.shape == (100, 2) and abs(np.corrcoef(points[:, 0], x[:, 3])[0, 1]) > 0.99


def test_traverse_and_manifold_shapes_and_values():
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden_dims=(16,), latent_dim=3)).eval()
    x = torch.rand(1, 28, 28)
    rows = traverse(model, x, [2, 0], steps=5)
    assert rows.shape == (10, 1, 28, 28)
    mu = model.encode(x[None]).mode()[0]
    z = mu.clone()
    z[2] = -3.0
    torch.testing.assert_close(rows[0], model.pixel_means(model.decode(z[None]))[0])
    grid = manifold(model, (0, 2), n=4)
    assert grid.shape == (16, 1, 28, 28)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "seed"
    fit(RunConfig(model=ModelConfig(hidden_dims=(200,), latent_dim=8), train=TrainConfig(epochs=3)), out,
        data_dir=DATA_DIR)
    return out


def test_embed_writes_npz_and_csv(seed_run, tmp_path, capsys):
    assert main(["embed", str(seed_run), "mnist:test", "-o", str(tmp_path / "z.npz"), *DATA]) == 0
    with np.load(tmp_path / "z.npz") as latents:
        assert latents["mu"].shape == latents["logvar"].shape == (10_000, 8)
        assert latents["labels"][:3].tolist() == [7, 2, 1]
    lines = (tmp_path / "z.csv").read_text().splitlines()
    assert len(lines) == 10_001 and lines[0].startswith("index,name,label,mu_0") and lines[1].split(",")[2] == "7"


def test_probe_reports_real_accuracies(seed_run, capsys):
    assert main(["probe", str(seed_run), "--json", "--no-pixels", "--labels", "100", *DATA]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["knn"]["5"] > 0.9 and result["linear"] > 0.8
    assert result["few_labels"]["100"]["label_propagation"] > 0.6


def test_traverse_manifold_latents_and_gif(seed_run, tmp_path, capsys):
    assert main(["traverse", str(seed_run), "--rows", "4", "--steps", "7", "-o", str(tmp_path / "t.png"), *DATA]) == 0
    picture = np.array(Image.open(tmp_path / "t.png"))
    grid = (4 * (2 + 4 * 30), 4 * (2 + 7 * 30))  # the images at the default scale, 4, below and right of the labels
    assert grid[0] + 20 < picture.shape[0] < grid[0] + 100 and grid[1] + 20 < picture.shape[1] < grid[1] + 100
    left = picture.shape[1] - grid[1]
    assert [bool((picture[-grid[0]:, :left][r * 120:(r + 1) * 120] < 20).any()) for r in range(4)] == [True] * 4
    # --image takes what interpolate's ends take: test image 5 by its index or as an image source
    assert main(["traverse", str(seed_run), "--rows", "4", "--steps", "7", "--image", "5",
                 "-o", str(tmp_path / "5.png"), *DATA]) == 0
    assert main(["traverse", str(seed_run), "--rows", "4", "--steps", "7", "--image", "mnist:test@5",
                 "-o", str(tmp_path / "test5.png"), *DATA]) == 0
    traversals = [np.array(Image.open(tmp_path / name))[-grid[0]:, -grid[1]:] for name in ("5.png", "test5.png")]
    assert np.array_equal(*traversals)  # the same images; only the caption names the image differently
    assert not np.array_equal(traversals[0], picture[-grid[0]:, -grid[1]:])
    assert main(["manifold", str(seed_run), "--side", "6", "-o", str(tmp_path / "m.png"), "--scale", "2", *DATA]) == 0
    picture = np.array(Image.open(tmp_path / "m.png"))
    assert 2 * (1 + 6 * 29) < picture.shape[0] < 2 * (1 + 6 * 29) + 100 and picture.max() == 255
    capsys.readouterr()
    for method in ("pca", "tsne"):
        assert main(["plot", "latents", str(seed_run), "--method", method, "--points", "600",
                     "-o", str(tmp_path / f"{method}.png"), *DATA]) == 0
        assert Image.open(tmp_path / f"{method}.png").size == (700, 600)
    stages = [line.split("] ")[1] for line in capsys.readouterr().err.splitlines()]
    assert stages == ["encoding 600 test images...", "PCA of 600 points in 8 dimensions...", "done",
                      "encoding 600 test images...",
                      "t-SNE of 600 points in 8 dimensions (the slow stage; --points sets its size)...", "done"]
    np.save(tmp_path / "two.npy", np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)]))
    assert main(["interpolate", str(seed_run), "--from", "3", "--to", f"{tmp_path / 'two.npy'}@1", "--steps", "6",
                 "-o", str(tmp_path / "walk.gif"), *DATA]) == 0
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.format == "GIF" and gif.n_frames == 10  # 6 forwards, 4 back


@pytest.mark.parametrize("method, module, command", [
    ("tsne", "sklearn.manifold", "t-SNE needs scikit-learn, which is not installed: pip install 'scikit-learn>=1.3' "),
    ("umap", "umap", "UMAP needs umap-learn, which is not installed: pip install 'umap-learn>=0.5' "),
])
def test_a_missing_projection_library_names_the_pip_command(method, module, command, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ConfigError) as info:
        project_2d(torch.randn(40, 3, generator=seeded(0)), method)
    assert str(info.value).startswith(command) and f"pip install -e '.[{method}]'" in str(info.value)


def test_each_optional_projection_is_an_extra_of_the_same_name():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for method, (_, _, requirement) in OPTIONAL_PROJECTIONS.items():
        assert extras[method] == [requirement]


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (Debian's chromium package) for the report test")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def test_report_renders_in_headless_chromium_with_every_image(seed_run, tmp_path, capsys):
    page = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", str(seed_run), "-o", str(page), "--iw-samples", "20", *DATA]) == 0
    stages = capsys.readouterr().err.splitlines()  # each stage on stderr as it begins, with the time so far
    assert [line.split("] ")[1] for line in stages] == [
        "test ELBO and NLL of 10,000 images (20 importance samples each)...",
        "samples, reconstructions, an interpolation and traversals...",
        "the latent space of 10,000 test images (PCA)...",
        "kNN probe on the latents of 60,000 training images...", "linear probe..."]
    seconds = [float(line.removeprefix("vaekit: [").split(" s]")[0]) for line in stages]
    assert seconds == sorted(seconds) and seconds[0] > 0
    text = page.read_text()
    # the config table shows what applies to an MLP with the normal prior on MNIST, and nothing else
    assert "<td>latent_dim</td>" in text and "<td>prior</td>" in text and "<td>pixel_groups</td>" in text
    for unused in ("validation", "conv_channels", "prior_components", "context_channels", "context_features"):
        assert f"<td>{unused}</td>" not in text
    assert "<h2>Latent space and probes</h2>" in text and "kNN, k=5" in text and "src=\"http" not in text
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    images = text.count("<img ")
    assert images >= 8 and f'data-images-loaded="{images}/{images}"' in dom
