"""Training a run end to end: data, model, the epoch loop, and what each epoch writes to the run dir."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import runs
from .config import RunConfig
from .data import fixed_binarization, load_split
from .devices import resolve_device
from .errors import ConfigError
from .evaluate import evaluate_elbo
from .generate import reconstruct
from .models import VAE
from .plots import save_image_grid, save_loss_curve
from .rng import derive_seed, make_generator
from .train import Trainer

N_SAMPLES = 64  # images in each samples_<epoch>.png
N_RECONSTRUCTIONS = 8  # test images in each reconstruction_<epoch>.png


def build_model(config: RunConfig) -> VAE:
    """A freshly initialised VAE: the same weights for the same seed, whatever the device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        return VAE(config.model)


def fit(config: RunConfig, out: str | Path, *, data_dir: str | Path | None = None, device: str = "auto",
        progress: bool = False, log: Callable[[str], None] | None = None) -> runs.Run:
    """Train `config` into the run directory `out`; returns the finished run.

    After every epoch it writes model.safetensors, a metrics.jsonl line, samples_<epoch>.png and
    reconstruction_<epoch>.png; at the end, loss.png. `log` receives one line per epoch.
    """
    log = log or (lambda line: None)
    dev = resolve_device(device)
    train_set = load_split(config.data.name, "train", data_dir, progress=progress)
    test_set = load_split(config.data.name, "test", data_dir, progress=progress)
    if train_set.shape != config.model.input_shape:
        raise ConfigError(f"{train_set.name} images are {train_set.shape}, the model expects {config.model.input_shape}")
    out = runs.create_run(out, config)

    model = build_model(config).to(dev)
    trainer = Trainer(model, train_set.images.to(dev), config.train, config.data.binarize, config.model.latent_dim)
    test_x = fixed_binarization(test_set.images.to(dev), config.data.binarize, config.train.seed)
    prior_draws = make_generator(derive_seed(config.train.seed, "samples"), dev)
    prior_z = torch.randn(N_SAMPLES, config.model.latent_dim, generator=prior_draws, device=dev)

    metrics: list[dict] = []
    for epoch in range(1, config.train.epochs + 1):
        start = time.perf_counter()
        train_loss = trainer.train_epoch(progress=progress)
        seconds = time.perf_counter() - start
        test = evaluate_elbo(model, test_x, config.train.seed)
        metrics.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test["test_loss"],
                        "test_reconstruction": test["reconstruction"], "test_kl": test["kl"],
                        "seconds": seconds})
        runs.save_weights(out, model, epoch)
        runs.write_metrics(out, metrics)
        write_epoch_images(out, model, epoch, prior_z, test_x[:N_RECONSTRUCTIONS])
        log(f"epoch {epoch:3d}/{config.train.epochs}  train {train_loss:8.3f}  test {test['test_loss']:8.3f}  "
            f"({seconds:.2f} s)")
    save_loss_curve(out / "loss.png", metrics)
    return runs.Run(out, config, model.eval(), metrics)


def write_epoch_images(out: Path, model: VAE, epoch: int, prior_z: torch.Tensor, inputs: torch.Tensor) -> None:
    """samples_<epoch>.png (the same prior draws every epoch) and reconstruction_<epoch>.png (inputs above outputs)."""
    with torch.no_grad():
        save_image_grid(out / f"samples_{epoch}.png", torch.sigmoid(model.decode(prior_z)))
    save_image_grid(out / f"reconstruction_{epoch}.png", torch.cat([inputs, reconstruct(model, inputs)]),
                    nrow=len(inputs))
