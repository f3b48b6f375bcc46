"""--architecture resnet (vaekit.models.resnet): shapes at 32, 64 and 128 pixels with dense and spatial latents,
every likelihood, a short training on synthetic colour images whose loss falls, a bitwise resume, eval, sample
and embed through the CLI, the hierarchical family on resnet paths, and sizes it cannot take refused in one line."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_run, resume
from vaekit.callbacks import CallbackError
from vaekit.cli import main
from vaekit.config import resnet_bottom, resnet_stages
from vaekit.errors import ConfigError
from vaekit.evaluate import EVAL_BATCH, IW_ROWS, chunk_rows
from vaekit.runs import FORMAT_VERSION
from vaekit.models import build_model
from vaekit.models.architectures import check_networks, decoder_channels
from vaekit.models.base import fingerprint_config
from vaekit.registry import LIKELIHOODS

from .tiny_run import is_one_error_line

SMALL = {"architecture": "resnet", "width": 8, "blocks": 1}  # a CPU test's resnet


def colour_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    """n images (N, 3, side, side) uint8: a disc of one random colour on a background of another."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    images = np.empty((n, 3, side, side), np.uint8)
    for i in range(n):
        background, foreground = g.integers(0, 256, (2, 3))
        cy, cx = g.integers(side // 4, 3 * side // 4, 2)
        r = g.integers(side // 8, side // 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        images[i] = np.where(disc, foreground[:, None, None], background[:, None, None])
    return images


@pytest.fixture(scope="module")
def colour_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("colour") / "discs.npy"
    np.save(path, colour_images(300, 32))
    return path


@pytest.mark.parametrize("shape, latent_shape, latent_dim, bottom", [
    ((3, 32, 32), "dense", 20, (4, 4)), ((3, 32, 32), "spatial", 64, (4, 4)), ((3, 64, 64), "dense", 32, (4, 4)),
    ((3, 64, 64), "spatial", 16, (4, 4)), ((1, 128, 128), "spatial", 48, (4, 4)), ((3, 128, 96), "dense", 8, (8, 6)),
    ((1, 28, 28), "spatial", 98, (7, 7))])
def test_shapes(shape, latent_shape, latent_dim, bottom):
    config = ModelConfig(input_shape=shape, latent_dim=latent_dim, latent_shape=latent_shape,
                         likelihood="discretized-logistic", **{**SMALL, "width": 4})
    stages = resnet_stages(*shape[1:])
    assert resnet_bottom(*shape[1:]) == bottom and shape[1] == bottom[0] * 2 ** stages and 4 <= min(bottom) <= 7
    model = build_model(config)
    check_networks(model.encoder, model.decoder, config, "resnet")  # (B, C, H, W) -> (B, D); (S, B, D) -> ...
    torch.manual_seed(0)
    x = torch.rand(2, *shape)
    mu, logvar = model.encoder(x)
    assert mu.shape == logvar.shape == (2, latent_dim)
    out = model.decoder(torch.randn(3, 2, latent_dim))
    assert out.shape == (3, 2, decoder_channels(config), *shape[1:]) == (3, 2, 2 * shape[0], *shape[1:])
    assert model.encoder.trunk(x).shape == (2, 4 * 4, *bottom)  # width x 4 at the bottom grid
    if latent_shape == "spatial":  # (mu, logvar) are the head's (D / (h w), h, w) maps, flattened channel first
        head = model.encoder.head(model.encoder.trunk(x))
        assert head.shape == (2, 2 * latent_dim // (bottom[0] * bottom[1]), *bottom)
        assert torch.equal(mu, head[:, : head.shape[1] // 2].flatten(1))


def test_every_likelihood_trains_a_step():
    for name in LIKELIHOODS.names():
        config = ModelConfig(input_shape=(3, 16, 16), latent_dim=8, likelihood=name, likelihood_components=3, **SMALL)
        torch.manual_seed(0)
        model = build_model(config)
        x = torch.from_numpy(colour_images(4, 16)).float() / 255
        eps = torch.randn(4, 8)
        loss = model.objective(x, model(x, eps), eps)
        loss.backward()
        assert torch.isfinite(loss), name
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
        with torch.no_grad():  # importance samples: eps (S, B, D)
            weights = model.log_weights(x, model.iw_context(x), torch.randn(5, 4, 8))
        assert weights.shape == (5, 4) and torch.isfinite(weights).all(), name


def train_config(npy, epochs: int, **model) -> RunConfig:
    return RunConfig(DataConfig(name=str(npy)),
                     ModelConfig(**{"input_shape": (3, 32, 32), "latent_dim": 16, "likelihood": "discretized-logistic",
                                    **SMALL, **model}),
                     TrainConfig.for_data(270, 3 * 32 * 32, epochs=epochs, batch_size=32))


def stop_after_first(epoch) -> None:
    raise ValueError("stop")


def test_training_on_colour_images_lowers_the_loss_and_resumes_bitwise(colour_npy, tmp_path):
    run = fit(train_config(colour_npy, 3), tmp_path / "whole", device="cpu")
    losses = [m["test_loss"] for m in run.metrics]
    # 8-bit colour: 3,072 values of about 10 bits each untrained (a logistic of scale 1 over [0, 1]); 3 epochs of
    # 9 steps take it well under (measured: 20,293 after the first epoch, 17,843 after the third: 9.5 -> 8.4 bits/dim)
    assert losses[0] < 21_700 and losses[-1] < 0.92 * losses[0], losses
    with pytest.raises(CallbackError):  # stopped after its first epoch
        fit(train_config(colour_npy, 3), tmp_path / "parts", device="cpu", callbacks=[stop_after_first])
    resumed = resume(tmp_path / "parts", device="cpu")
    assert [m["test_loss"] for m in resumed.metrics] == losses
    whole, parts = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "parts"))
    assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole)
    reloaded = load_run(tmp_path / "whole")
    assert reloaded.config.model.architecture == "resnet" and reloaded.config.model.width == 8


def test_eval_sample_embed_through_the_cli(colour_npy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(colour_npy), "--architecture", "resnet", "--width", "8", "--blocks", "1",
                 "--latent-shape", "spatial", "--latent", "32", "--likelihood", "discretized-logistic-mixture",
                 "--likelihood-components", "2", "--epochs", "1", "--batch-size", "64", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION and config["model"]["latent_shape"] == "spatial"
    assert {k: config["model"][k] for k in ("architecture", "width", "blocks", "latent_shape", "latent_dim")} == {
        "architecture": "resnet", "width": 8, "blocks": 1, "latent_shape": "spatial", "latent_dim": 32}
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "4", "--images", "20", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < evaluation["bits_per_dim"] < 12 and evaluation["nll"] <= evaluation["test_loss"] + 1.0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "s.png") as picture:
        assert picture.mode == "RGB"  # colour samples come out
    assert main(["embed", str(run), str(colour_npy), "-o", str(tmp_path / "e.npz")]) == 0
    mu = np.load(tmp_path / "e.npz")["mu"]
    assert mu.shape == (300, 32) and np.isfinite(mu).all() and mu.std(axis=0).max() > 0  # codes differ by image


def test_the_hierarchy_on_resnet_paths(colour_npy, tmp_path):
    config = train_config(colour_npy, 2, family="hvae", latent_dim=24, latent_layers=(8, 16), hidden_dims=(64,))
    run = fit(config, tmp_path / "ladder", device="cpu")
    losses = [m["test_loss"] for m in run.metrics]
    assert losses[-1] < losses[0] < 21_700, losses
    model = run.model
    assert type(model.stem[0]).__name__ == "ResNetTrunk" and type(model.out[-1]).__name__ == "ResNetDecoder"
    with torch.no_grad():
        assert model.decode(model.sample_prior(3, torch.Generator().manual_seed(0))).shape == (3, 2 * 3, 32, 32)


def test_the_default_fingerprint_and_in_effect_leave_the_resnet_out():
    assert "width" not in fingerprint_config(ModelConfig()) and "latent_shape" not in fingerprint_config(ModelConfig())
    assert '"width": 16' in fingerprint_config(ModelConfig(architecture="resnet", width=16))
    resnet = RunConfig(model=ModelConfig(architecture="resnet")).in_effect()["model"]
    assert {"width", "blocks", "latent_shape"} <= set(resnet) and "conv_channels" not in resnet


@pytest.mark.parametrize("model, message", [
    ({"input_shape": (3, 36, 36)}, "a resnet model halves 36x36 images 3 times (until the shorter side is 4 to 7 "
                                   "pixels), so both sides must divide by 8, got 36x36; resize the images (to 32 or "
                                   "40 pixels on that side, say)"),
    ({"input_shape": (3, 6, 32)}, "a resnet model needs images of at least 8x8 pixels, got 6x32"),
    ({"input_shape": (3, 32, 32), "latent_shape": "spatial", "latent_dim": 20},
     "a spatial latent lies on the resnet's 4x4 grid: --latent must be a multiple of 16 (channels x 4 x 4), got 20; "
     "try 16 or 32"),
    ({"architecture": "conv", "latent_shape": "spatial"}, "model.latent_shape spatial needs the resnet architecture, "
                                                          "not conv"),
    ({"family": "hvae", "latent_layers": (16, 16), "latent_dim": 32, "input_shape": (3, 32, 32),
      "latent_shape": "spatial"}, "the hvae family's latent layers are vectors: model.latent_shape must be dense"),
    ({"width": 2000}, "model.width must be at most 1,024, got 2,000"),
    ({"blocks": 0}, "model.blocks must be a positive integer, got 0"),
    ({"latent_shape": "round"}, "model.latent_shape must be one of dense, spatial, got 'round'"),
])
def test_bad_settings_are_refused(model, message):
    with pytest.raises(ConfigError) as caught:
        ModelConfig(**{"architecture": "resnet", **model})
    assert str(caught.value) == message


def test_the_cli_refuses_a_size_it_cannot_halve_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "odd.npy", colour_images(20, 36))
    code = main(["train", "--data", str(tmp_path / "odd.npy"), "--architecture", "resnet", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and is_one_error_line(err) and "both sides must divide by 8, got 36x36" in err, err
    assert not (tmp_path / "run").exists()


def test_evaluation_chunks_shrink_with_the_images_they_decode():
    """MNIST's models keep their chunks; large colour images decode fewer at a time (memory: vaekit.evaluate)."""
    def rows(shape, likelihood, most, device="cpu"):
        model = build_model(ModelConfig(input_shape=shape, likelihood=likelihood, latent_dim=16,
                                        **{**SMALL, "width": 4}))
        return chunk_rows(model, most, torch.device(device))

    cpu = IW_ROWS["cpu"]
    assert rows((1, 28, 28), "bernoulli", EVAL_BATCH) == EVAL_BATCH and rows((1, 28, 28), "bernoulli", cpu) == cpu
    assert rows((1, 28, 28), "discretized-logistic-mixture", cpu) == cpu  # 23,520 values per image
    # 70 parameters per pixel (10 x (a weight, and a mean and a scale per channel)): 2 ** 26 values a chunk on a CPU
    assert [rows((3, s, s), "discretized-logistic-mixture", cpu) for s in (32, 64, 128)] == [
        2 ** 26 // (70 * s * s) for s in (32, 64, 128)] == [936, 234, 58]
    assert rows((3, 64, 64), "discretized-logistic-mixture", IW_ROWS["cuda"], "cuda") == 2 ** 31 // (70 * 64 * 64)


def test_groupnorm_groups_hold_several_channels():
    """A group of one channel (InstanceNorm) zeroes a flat colour; vaekit.models.resnet._norm keeps 8 or more."""
    from vaekit.models.resnet import _norm

    groups = {c: _norm(c).num_groups for c in (4, 8, 12, 16, 32, 64, 128, 256, 512)}
    assert groups == {4: 1, 8: 1, 12: 1, 16: 2, 32: 4, 64: 8, 128: 16, 256: 32, 512: 32}
    torch.manual_seed(0)
    flat = torch.rand(2, 16, 1, 1).expand(2, 16, 8, 8)  # two images, each channel constant over the image
    normalized = _norm(16)(flat)
    assert (normalized[0] - normalized[1]).abs().max() > 0.5  # the two colours still differ after the norm
    assert torch.nn.GroupNorm(16, 16)(flat).abs().max() < 1e-4  # where one channel a group zeroes them (float error)


def test_a_resnet_too_large_is_refused_before_it_is_built():
    from vaekit.models import check_size

    with pytest.raises(ConfigError, match="the model would have 6,308,603,947 parameters, more than vaekit's bound"):
        check_size(ModelConfig(input_shape=(3, 128, 128), architecture="resnet", width=1024))  # counted on meta
