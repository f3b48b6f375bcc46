"""Your own networks: a builder "module:function" from a module outside vaekit, through train, a kill and
--resume, load_run, sample, score, embed and eval; networks given in Python; and every way a builder can
be wrong, each said in one line. Also the train CLI's --family and --latent, and docs/examples/my_resnet.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_run, resume
from vaekit.cli import build_parser, main
from vaekit.cli.train import build_config
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE

from .tiny_run import is_one_error_line, mnist_npz

REPO = Path(__file__).resolve().parents[1]

# A user's module, outside the package: a conv encoder and an MLP decoder that keep the contract
# (vaekit.models.architectures). MY_NETS_DIE_AT=N kills the process (SIGKILL) in its Nth training step.
MY_NETS = '''
import os
import signal

from torch import nn

from vaekit.models.architectures import decoder_channels


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        c, h, w = config.input_shape
        self.body = nn.Sequential(nn.Conv2d(c, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(8 * (h // 2) * (w // 2), 2 * config.latent_dim))
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == int(os.environ.get("MY_NETS_DIE_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)
        mu, logvar = self.body(x).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        c, h, w = config.input_shape
        self.out = (decoder_channels(config), h, w)
        self.body = nn.Sequential(nn.Linear(config.latent_dim, 32), nn.ReLU(),
                                  nn.Linear(32, self.out[0] * h * w))

    def forward(self, z):
        return self.body(z).view(*z.shape[:-1], *self.out)


def build(config):
    return Encoder(config), Decoder(config)


def build_for_real(config):
    import torch
    torch.ones(1).item()  # fails on the meta device, where vaekit first counts a model's parameters
    return build(config)
'''

# builders that break the contract, one way each
BROKEN_NETS = '''
import torch
from torch import nn

from my_nets import Decoder, Encoder

not_a_function = 3


def raises(config):
    raise RuntimeError("no GPU here\\nsecond line")


def one_module(config):
    return nn.Linear(1, 1)


class WideEncoder(Encoder):
    def forward(self, x):
        mu, logvar = super().forward(x)
        return mu, torch.cat([logvar, logvar], dim=-1)


def wide_encoder(config):
    return WideEncoder(config), Decoder(config)


class FlatDecoder(Decoder):
    def forward(self, z):
        return self.body(z).view(-1, *self.out)  # (B, D) only: (S, B, D) comes out (S * B, ...)


def flat_decoder(config):
    return Encoder(config), FlatDecoder(config)


class NarrowDecoder(Decoder):
    def forward(self, z):
        return super().forward(z)[..., :-1]


def narrow_decoder(config):
    return Encoder(config), NarrowDecoder(config)
'''


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """my_nets.py and broken_nets.py in a folder of their own, importable here and in subprocesses."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_nets.py").write_text(MY_NETS)
    (folder / "broken_nets.py").write_text(BROKEN_NETS)
    (folder / "fails_on_import.py").write_text("import not_a_package_anywhere_xyz\n")
    for name in ("my_nets", "broken_nets", "fails_on_import"):
        sys.modules.pop(name, None)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    yield folder
    for name in ("my_nets", "broken_nets", "fails_on_import"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """300 MNIST test images as a user's own .npz (30 held out as its test set)."""
    return mnist_npz(tmp_path_factory.mktemp("data") / "small.npz", 300)


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise


def epochs_of(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_builder_from_outside_trains_is_killed_resumes_bitwise_and_serves_every_command(
        own_module, small_npz, tmp_path, capsys):
    train = ["train", "--architecture", "my_nets:build", "--data", small_npz, "--latent", 4, "--epochs", 2,
             "--batch-size", 32]
    reference = tmp_path / "reference"
    code, _, err = cli(capsys, *train, "--out", reference)
    assert code == 0, err
    assert epochs_of(reference) == [1, 2]
    losses = [json.loads(line)["test_loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert losses[1] < 0.7 * losses[0] < 400  # it learns: 487.9 then 283.7 nats here

    # the same run, killed (SIGKILL) in the 3rd step of its second epoch: 270 images at batch 32, 9 steps an epoch
    killed = tmp_path / "killed"
    done = subprocess.run([sys.executable, "-m", "vaekit", *map(str, train), "--out", killed], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MY_NETS_DIE_AT": "12"})
    assert done.returncode == -9, done.stderr[-2000:]
    assert epochs_of(killed) == [1]
    code, _, err = cli(capsys, "train", "--resume", killed)
    assert code == 0, err
    assert epochs_of(killed) == [1, 2]
    assert_same_weights(weights(reference), weights(killed))
    assert load_file(killed / "checkpoint.safetensors").keys() == load_file(reference / "checkpoint.safetensors").keys()

    # the builder's name is what the run records, and nothing is pickled
    config = json.loads((killed / "config.json").read_text())
    assert config["model"]["architecture"] == "my_nets:build" and config["model"]["latent_dim"] == 4
    files = {p.name for p in killed.iterdir()}
    assert {p.suffix for p in killed.iterdir()} <= {".json", ".safetensors", ".jsonl", ".png"}, files

    run = load_run(killed)
    assert type(run.model.encoder).__module__ == "my_nets"
    assert_same_weights({k: v for k, v in run.model.state_dict().items()}, weights(reference))

    code, out, err = cli(capsys, "sample", killed, "-n", 4, "-o", tmp_path / "s.png", "--seed", 1)
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, out, err = cli(capsys, "score", killed, small_npz, "-o", tmp_path / "scores.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and [r["label"] for r in rows[:3]] == [7, 2, 1]
    assert np.mean([r["score"] for r in rows]) == pytest.approx(losses[1], rel=0.1)  # -ELBO: 277.2 here
    code, out, err = cli(capsys, "embed", killed, small_npz, "-o", tmp_path / "z.npz")
    assert code == 0, err
    with np.load(tmp_path / "z.npz") as z:
        assert z["mu"].shape == (300, 4)
    for argv in (["reconstruct", "-n", 4, "-o", tmp_path / "r.png"],
                 ["traverse", "--rows", 2, "-o", tmp_path / "t.png"],
                 ["interpolate", "--from", 0, "--to", 1, "--steps", 3, "-o", tmp_path / "i.png"],
                 ["calibrate", "--quantile", "0.9"]):
        code, out, err = cli(capsys, argv[0], killed, *argv[1:])
        assert code == 0, (argv, err)
    assert json.loads((killed / "threshold.json").read_text())["fitted_on"] == 15  # half its 30 held-out images
    code, out, err = cli(capsys, "eval", killed, "--iw-samples", 8, "--json")
    assert code == 0, err
    result = json.loads(out)
    recorded = json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])["test_loss"]
    assert result["test_loss"] == pytest.approx(recorded, abs=1e-6)  # the same numbers as training measured
    assert result["iw_samples"] == 8 and result["nll"] < result["test_loss"]

    # a config.json naming a builder that is gone, or one of Python's own functions, is refused at load time
    for name, fragment in (("gone_nets:build", "cannot import gone_nets (No module named 'gone_nets')"),
                           ("os:system", "a builder comes from the user's own module, not from os"),
                           ("my_nets:nowhere", "my_nets has no nowhere")):
        doctored = tmp_path / name.replace(":", "-")
        shutil.copytree(killed, doctored)
        document = json.loads((doctored / "config.json").read_text())
        document["model"]["architecture"] = name
        (doctored / "config.json").write_text(json.dumps(document))
        code, out, err = cli(capsys, "eval", doctored)
        assert code == 4 and is_one_error_line(err) and fragment in err, err
        with pytest.raises(Exception, match="config.json"):
            load_run(doctored)


def test_networks_given_in_python(own_module, small_npz, tmp_path, capsys):
    import my_nets

    config = RunConfig(data=DataConfig(name=str(small_npz)), model=ModelConfig(latent_dim=4),
                       train=TrainConfig(epochs=2, batch_size=32, schedule="constant", warmup=0.0))

    def model():
        torch.manual_seed(7)  # the user's networks are initialised by the user
        return VAE(config.model, encoder=my_nets.Encoder(config.model), decoder=my_nets.Decoder(config.model))

    whole = fit(config, tmp_path / "whole", model=model())
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["model"]["architecture"] == "custom"
    assert whole.config.model.architecture == "custom"

    # one epoch, then resumed to two with the model given again: a constant rate, so the same steps
    one = RunConfig(data=config.data, model=config.model, train=TrainConfig(**{**config.train.__dict__, "epochs": 1}))
    fit(one, tmp_path / "split", model=model())
    resumed = resume(tmp_path / "split", epochs=2, model=model())
    assert [row["epoch"] for row in resumed.metrics] == [1, 2]
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "split"))

    again = load_run(tmp_path / "whole", model=model())
    assert_same_weights(again.model.state_dict(), weights(tmp_path / "whole"))
    with pytest.raises(ConfigError, match=r"networks were given in Python .* load_run\(path, model=VAE"):
        load_run(tmp_path / "whole")
    code, _, err = cli(capsys, "eval", tmp_path / "whole")
    assert code == 2 and is_one_error_line(err) and "model.architecture custom" in err
    wrong = VAE(ModelConfig(latent_dim=5), encoder=my_nets.Encoder(ModelConfig(latent_dim=5)),
                decoder=my_nets.Decoder(ModelConfig(latent_dim=5)))
    with pytest.raises(ConfigError, match="its model.latent_dim is 5, the run's 4"):
        load_run(tmp_path / "whole", model=wrong)
    with pytest.raises(ConfigError, match="give both an encoder and a decoder"):
        VAE(config.model, encoder=my_nets.Encoder(config.model))
    with pytest.raises(ConfigError, match=r"the encoder must return \(mu, logvar\), each of shape \(B, 5\)"):
        VAE(ModelConfig(latent_dim=5), encoder=my_nets.Encoder(config.model), decoder=my_nets.Decoder(config.model))


@pytest.mark.parametrize("architecture, fragment", [
    ("no_such_nets:build", "--architecture no_such_nets:build: cannot import no_such_nets (No module named "
                           "'no_such_nets'); is it installed, or on PYTHONPATH?"),
    ("fails_on_import:build", "importing fails_on_import failed (ModuleNotFoundError: No module named "
                              "'not_a_package_anywhere_xyz')"),
    ("broken_nets:nothing", "--architecture broken_nets:nothing: broken_nets has no nothing"),
    ("broken_nets:not_a_function", "not_a_function is not a function"),
    ("broken_nets:raises", "the builder failed (RuntimeError: no GPU here)"),
    ("broken_nets:one_module", "a builder returns (encoder, decoder), two torch.nn.Modules; got Linear"),
    ("broken_nets:wide_encoder", "the encoder must return (mu, logvar), each of shape (B, 4) for --latent 4; for a "
                                 "batch of 2 it returned (2, 4), (2, 8)"),
    ("broken_nets:narrow_decoder", "the decoder must map (B, 4) latents to (B, 1, 28, 28) likelihood parameters "
                                   "(bernoulli); for (2, 4) it returned (2, 1, 28, 27)"),
    ("broken_nets:flat_decoder", "the decoder must map (S, B, 4) latents to (S, B, 1, 28, 28) likelihood parameters "
                                 "(bernoulli); for (3, 2, 4) it returned (6, 1, 28, 28)"),
    ("os:system", "--architecture os:system: a builder comes from the user's own module, not from os"),
    ("torch.nn:Linear", "not from torch"),
    ("__main__:main", "not from __main__"),
])
def test_a_wrong_builder_is_one_line_before_any_run_directory(own_module, small_npz, tmp_path, capsys, architecture,
                                                              fragment):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--architecture", architecture, "--data", small_npz, "--latent", 4,
                       "--epochs", 1, "--out", out)
    assert code == 2 and is_one_error_line(err) and fragment in err, err
    assert not out.exists()


def test_a_module_beside_you_but_not_on_the_path_is_named(tmp_path, capsys, monkeypatch, small_npz):
    (tmp_path / "beside_nets.py").write_text(MY_NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    code, _, err = cli(capsys, "train", "--architecture", "beside_nets:build", "--data", small_npz, "--out", "run")
    assert code == 2 and is_one_error_line(err)
    assert "beside_nets.py is in this folder, but Python does not look here: run with PYTHONPATH=." in err


@pytest.mark.parametrize("text", ["resnet50", "my nets:build", "my_nets", "my_nets:", ":build", "my-nets:build",
                                  "custom", "a.:b"])
def test_an_architecture_of_neither_form_is_refused_by_the_parser(capsys, text):
    code, _, err = cli(capsys, "train", "--architecture", text)
    assert code == 2 and is_one_error_line(err)
    assert (f"argument --architecture: expected mlp, conv, resnet, or your own builder as package.module:function, "
            f"got {text!r}") in err


def parsed(*argv):
    return build_parser().parse_args(["train", *map(str, argv)])


def test_family_and_latent_layers_make_the_config():
    config = build_config(parsed("--family", "hvae", "--latent", 16, 32)).model
    assert (config.family, config.latent_layers, config.latent_dim) == ("hvae", (16, 32), 48)
    config = build_config(parsed("--latent", 12)).model
    assert (config.family, config.latent_layers, config.latent_dim) == ("vae", (), 12)
    assert build_config(parsed()).model == ModelConfig()
    assert build_config(parsed("--family", "vae")).model == ModelConfig()
    # restarting a run keeps its layers unless --latent is given again
    base = build_config(parsed("--family", "hvae", "--latent", 8, 8, 16))
    config = build_config(parsed("--lr", "1e-3"), base=base).model
    assert (config.family, config.latent_layers, config.latent_dim) == ("hvae", (8, 8, 16), 32)
    config = build_config(parsed("--family", "vae"), base=base).model
    assert (config.family, config.latent_layers, config.latent_dim) == ("vae", (), 32)


def test_a_family_brings_its_benchmarked_model_and_recipe_where_the_flags_leave_a_choice():
    from vaekit.cli.train import build_config

    config = build_config(parsed("--family", "hvae"))  # benchmarks/nll.py's hvae: 82.08 nats
    assert (config.model.latent_layers, config.model.latent_dim, config.model.hidden_dims) == ((8, 16, 32, 64), 120,
                                                                                               (512, 256))
    assert (config.train.lr, config.train.kl_warmup, config.train.clip_grad) == (2e-3, 10, 100.0)
    config = build_config(parsed("--family", "hvae", "--latent", 16, 32, "--hidden", 64, "--lr", "1e-3"))
    assert (config.model.latent_layers, config.model.hidden_dims, config.train.lr) == ((16, 32), (64,), 1e-3)
    assert config.train.kl_warmup == 10
    seed = build_config(parsed("--family", "hvae", "--recipe", "seed"))
    assert (seed.train.lr, seed.train.kl_warmup) == (1e-3, 0)  # the seed's recipe is the seed's


@pytest.mark.parametrize("argv, fragment", [
    (["--latent", 16, 32], "the vae family has one latent layer: --latent takes one size, got 2 (--latent 16 32); "
                           "one size per layer is for --family hvae"),
    (["--family", "hvae", "--latent", 16], "the hvae family has at least two latent layers: --latent takes one size "
                                           "per layer, top first (e.g. --latent 16 32), got one: --latent 16"),
    (["--family", "hvae", "--latent", 16, 32, "--architecture", "conv"], "the hvae family takes model.architecture "
                                                                         "mlp or resnet, not conv"),
    (["--family", "ladder"], "argument --family: invalid choice: 'ladder'"),
    (["--latent", 4000, 4000, "--family", "hvae"], "model.latent_dim must be at most 4,096"),
])
def test_a_wrong_latent_count_is_one_line(capsys, tmp_path, argv, fragment):
    code, _, err = cli(capsys, "train", *argv, "--out", tmp_path / "run")
    assert code == 2 and is_one_error_line(err) and fragment in err, err
    assert not (tmp_path / "run").exists()


def test_family_and_latent_cannot_change_on_resume(capsys, tmp_path, small_npz):
    out = tmp_path / "run"
    assert cli(capsys, "train", "--data", small_npz, "--hidden", 16, "--latent", 2, "--epochs", 1, "--out", out)[0] == 0
    code, _, err = cli(capsys, "train", "--resume", out, "--family", "hvae", "--latent", 2, 2)
    assert code == 2 and is_one_error_line(err) and "drop --latent, --family" in err


def test_the_docs_resnet_example_trains(tmp_path, small_npz, monkeypatch, capsys):
    """docs/own-networks.md's example, imported from docs/examples as a user's file, for one short epoch."""
    examples = REPO / "docs" / "examples"
    monkeypatch.syspath_prepend(str(examples))
    sys.modules.pop("my_resnet", None)
    import my_resnet

    code, out, err = cli(capsys, "train", "--architecture", "my_resnet:build", "--data", small_npz, "--epochs", 1,
                         "--batch-size", 64, "--out", tmp_path / "resnet")
    assert code == 0, err
    run = load_run(tmp_path / "resnet")
    assert isinstance(run.model.encoder, my_resnet.Encoder) and isinstance(run.model.decoder, my_resnet.Decoder)
    assert run.metrics[0]["test_loss"] < 400  # 312.8 here; a blank guess (p = 0.5 per pixel) gives 543.4
    blocks = [m for m in run.model.modules() if isinstance(m, my_resnet.ResidualBlock)]
    assert len(blocks) == 4 and any(isinstance(m, torch.nn.GroupNorm) for m in blocks[0].modules())

    # and from Python, as the doc shows it
    config = ModelConfig(architecture="my_resnet:build", latent_dim=8, likelihood="gaussian")
    model = VAE(config)
    assert model.decoder(torch.zeros(3, 2, 8)).shape == (3, 2, 2, 28, 28)  # a mean and a deviation per pixel
    with pytest.raises(ConfigError, match=r"the builder failed \(ValueError: my_resnet halves the image twice"):
        VAE(ModelConfig(architecture="my_resnet:build", input_shape=(1, 30, 30)))
    sys.modules.pop("my_resnet", None)


def test_the_docs_listing_is_the_example_file():
    doc = (REPO / "docs" / "own-networks.md").read_text()
    listing = doc.split("## A worked example", 1)[1].split("```python\n", 1)[1].split("```\n", 1)[0]
    assert listing == (REPO / "docs" / "examples" / "my_resnet.py").read_text()


def test_a_builder_that_cannot_build_on_the_meta_device_trains_resumes_and_loads(own_module, small_npz, tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    train = ["train", "--architecture", "my_nets:build_for_real", "--data", small_npz, "--latent", 4]
    assert cli(capsys, *train, "--epochs", 1, "--out", out)[0] == 0
    code, _, err = cli(capsys, "train", "--resume", out, "--epochs", 2)
    assert code == 0, err
    assert epochs_of(out) == [1, 2]
    assert load_run(out).model.encoder.body[0].weight.shape == (8, 1, 4, 4)
