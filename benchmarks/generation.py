"""Generation side by side with pythae (issue #25 item 3): the same seed architecture (784-400-20 MLP, ReLU,
Bernoulli likelihood on grayscale pixels, Adam 1e-3, batch 128, 10 epochs) trained in both tools, then each
tool's own samplers measured with vaekit's metric (vaekit.quality.image_quality: FD-classifier, precision,
recall in the shipped classifier's features, `--samples` samples against the 10,000 test images).

    pip install 'vaekit[benchmarks]'   # pythae: a benchmark-only dependency, never imported by vaekit
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/generation.py --data mnist --grids docs/images

pythae: Normal, GaussianMixture (10 components, and `gmm-K`: K components), MAF and Two-Stage samplers on
pythae's VAE, each with pythae's own defaults except the training budget of MAF and Two-Stage
(`--sampler-epochs`, Adam 1e-3, batch 128). vaekit: prior, gmm, flow and two-stage on vaekit's seed model
(`vaekit train --recipe seed`, or --run), then vaekit's best generation pipelines (`--best`, CANDIDATES): a
model vaekit trains with the seed's optimisation (`--recipe seed`: 10 epochs, Adam 1e-3, batch 128) but its
own stronger parts (a conv architecture, a VampPrior, a two-layer hierarchy), and a sampler fitted to it (on a
hierarchy, on every layer's code together). Every decoder outputs Bernoulli means; the samples measured are
those means. Prints one JSON object (progress on stderr); times are CPU seconds of this process at one thread.
Runs already trained in --workdir are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402

from vaekit.data import load_split, to_unit  # noqa: E402
from vaekit.generate import sample_many  # noqa: E402
from vaekit.quality import image_quality  # noqa: E402
from vaekit.rng import make_generator  # noqa: E402
from vaekit.runs import load_run  # noqa: E402
from vaekit.samplers.base import SamplerConfig  # noqa: E402
from vaekit.samplers.store import fit_sampler, load_sampler, training_latents  # noqa: E402

VAEKIT_SAMPLERS = ("prior", "gmm", "flow", "two-stage")
PYTHAE_SAMPLERS = ("normal", "gmm", "maf", "two-stage")  # and gmm-K: pythae's GMM with K components
# vaekit's best generation pipelines: name -> (`vaekit train --recipe seed` flags beyond --data, the sampler)
CANDIDATES = {
    "seed+gmm-50": ((), {"name": "gmm", "components": 50}),
    "conv+gmm-50": (("--architecture", "conv"), {"name": "gmm", "components": 50}),
    "vamp+gmm-50": (("--prior", "vamp"), {"name": "gmm", "components": 50}),
    "vamp+prior": (("--prior", "vamp"), {"name": "prior"}),
    "hvae+gmm-50": (("--family", "hvae", "--latent", "16", "32"), {"name": "gmm", "components": 50}),
}
METRICS = ("fd_classifier", "precision", "recall", "density", "confidence", "class_coverage")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def log(what: dict) -> None:
    print(json.dumps(what), file=sys.stderr, flush=True)


def vaekit(*argv: str) -> None:
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "vaekit", *argv, "--threads", "1"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


# --- pythae -------------------------------------------------------------------------------------------------

def pythae_networks(latent_dim: int = 20, hidden: int = 400):
    """The seed's encoder and decoder in pythae's interface (pythae's own default MLP is 784-512-latent)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
            self.mu = nn.Linear(hidden, latent_dim)
            self.logvar = nn.Linear(hidden, latent_dim)

        def forward(self, x):
            h = self.body(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

    return Encoder(), Decoder()


def pythae_trainer_config(workdir: Path, epochs: int, seed: int):
    from pythae.trainers import BaseTrainerConfig

    return BaseTrainerConfig(output_dir=str(workdir), num_epochs=epochs, learning_rate=1e-3,
                             per_device_train_batch_size=128, per_device_eval_batch_size=1000, seed=seed,
                             no_cuda=True)


def train_pythae(train: torch.Tensor, test: torch.Tensor, workdir: Path, epochs: int, seed: int):
    from pythae.models import VAE, VAEConfig
    from pythae.pipelines import TrainingPipeline

    torch.manual_seed(seed)
    encoder, decoder = pythae_networks()
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"),
                encoder=encoder, decoder=decoder)
    pipeline = TrainingPipeline(training_config=pythae_trainer_config(workdir, epochs, seed), model=model)
    pipeline(train_data=train, eval_data=test)
    model = pipeline.trainer._best_model if hasattr(pipeline.trainer, "_best_model") else model
    return model.eval()


def pythae_test_loss(model, test: torch.Tensor) -> float:
    """pythae's own loss (BCE summed over pixels + KL, per image) on the test set, one posterior draw."""
    from pythae.data.datasets import DatasetOutput

    torch.manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for chunk in test.split(1000):
            total += model(DatasetOutput(data=chunk)).loss.item() * len(chunk)
    return total / len(test)


def pythae_sampler(name: str, model, train: torch.Tensor, test: torch.Tensor, workdir: Path, epochs: int,
                   seed: int):
    from pythae.samplers import (GaussianMixtureSampler, GaussianMixtureSamplerConfig, MAFSampler,
                                 MAFSamplerConfig, NormalSampler, TwoStageVAESampler, TwoStageVAESamplerConfig)

    torch.manual_seed(seed)
    if name == "normal":
        return NormalSampler(model)
    if name == "gmm" or name.startswith("gmm-"):
        components = 10 if name == "gmm" else int(name[4:])
        sampler = GaussianMixtureSampler(model, GaussianMixtureSamplerConfig(n_components=components))
        sampler.fit(train)
        return sampler
    config = pythae_trainer_config(workdir / name, epochs, seed)
    if name == "maf":
        sampler = MAFSampler(model, MAFSamplerConfig())
    else:
        sampler = TwoStageVAESampler(model, TwoStageVAESamplerConfig())
    sampler.fit(train, eval_data=test, training_config=config)
    return sampler


# --- the benchmark ------------------------------------------------------------------------------------------

def measure(real: torch.Tensor, fake: torch.Tensor, data: str) -> dict:
    quality = image_quality(real, fake.clamp(0, 1).reshape(-1, 1, 28, 28), data)
    return {k: quality[k] for k in METRICS}


def grid_pick(drawn: torch.Tensor, seed: int, n: int = 64) -> torch.Tensor:
    """n of the samples, picked at random: pythae's GMM sampler (scikit-learn's GaussianMixture.sample) returns
    each batch grouped by component, so its first 64 would show one or two components only."""
    return drawn[torch.randperm(len(drawn), generator=make_generator(seed))[:n]]


def pythae_sampler_name(text: str) -> str:
    if text in PYTHAE_SAMPLERS or (text.startswith("gmm-") and text[4:].isdigit() and int(text[4:]) > 0):
        return text
    raise argparse.ArgumentTypeError(f"choose from {', '.join(PYTHAE_SAMPLERS)} or gmm-K, got {text!r}")


def finished_epochs(path: Path) -> int:
    try:
        return len((path / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def trained_run(workdir: Path, tag: str, data: str, flags: tuple[str, ...], epochs: int, result: dict) -> Path:
    """The run `vaekit train --recipe seed --data DATA --epochs EPOCHS FLAGS` in workdir/vaekit-TAG-DATA: trained
    here, or reused when it is there (waited for while another process, started earlier, still trains it)."""
    path = workdir / f"vaekit-{tag}-{data}"
    if not path.exists():
        _, wall, _ = timed(lambda: vaekit("train", "--recipe", "seed", "--data", data, "--epochs", str(epochs),
                                          *flags, "--out", str(path)))
        result.setdefault("vaekit_train_wall_s", {})[tag] = wall
    deadline = time.monotonic() + 4 * 3600
    while finished_epochs(path) < epochs:
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} has {finished_epochs(path)} of {epochs} epochs: resume or remove it")
        log({"waiting_for": str(path), "epochs": finished_epochs(path)})
        time.sleep(60)
    return path


def vaekit_pipeline(run, config: SamplerConfig, latents, test, args) -> tuple[dict, torch.Tensor]:
    """One vaekit pipeline: the run's prior, or the sampler of `config` fitted on its training latents (`latents`
    when already read), timed; `args.samples` draws, timed; their quality. The row and the draws."""
    row = {}
    if config.name == "prior":
        sampler = load_sampler(run, "prior")
    else:
        fitted, row["fit_wall_s"], row["fit_cpu_s"] = timed(lambda: fit_sampler(run, config, latents=latents))
        sampler = fitted.sampler.eval()
    drawn, row["sample_wall_s"], row["sample_cpu_s"] = timed(
        lambda: sample_many(run.model, args.samples, make_generator(args.seed), sampler))
    row.update(measure(test, drawn, args.data))
    return row, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "fashion-mnist"), default="mnist")
    parser.add_argument("--run", type=Path, default=None, help="vaekit's trained seed run (default: train it)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-runs/generation"))
    parser.add_argument("--epochs", type=int, default=10, help="the VAEs' training epochs (both tools)")
    parser.add_argument("--sampler-epochs", type=int, default=10,
                        help="passes over the latents for MAF / flow and Two-Stage / two-stage (both tools)")
    parser.add_argument("--pythae", nargs="*", type=pythae_sampler_name, default=[*PYTHAE_SAMPLERS, "gmm-50"],
                        help=f"pythae's samplers: {', '.join(PYTHAE_SAMPLERS)}, gmm-K (default: all, and gmm-50)")
    parser.add_argument("--vaekit", nargs="*", choices=VAEKIT_SAMPLERS, default=list(VAEKIT_SAMPLERS))
    parser.add_argument("--best", nargs="*", choices=tuple(CANDIDATES), default=list(CANDIDATES),
                        help="vaekit's best generation pipelines to run (default: all)")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grids", type=Path, default=None, help="write 64-image grids of each tool's best here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    train_set, test_set = load_split(args.data, "train"), load_split(args.data, "test")
    train, test = to_unit(train_set.images), to_unit(test_set.images)
    result = {"machine": machine(), "data": args.data, "samples": args.samples, "epochs": args.epochs,
              "sampler_epochs": args.sampler_epochs, "vaekit": {}, "pythae": {}}
    draws = {}

    # pythae: the same architecture, trained by pythae, and its samplers
    model, wall, cpu = timed(lambda: train_pythae(train, test, args.workdir / "pythae", args.epochs, args.seed))
    result["pythae_train"] = {"wall_s": wall, "cpu_s": cpu}
    result["pythae_test_loss"] = round(pythae_test_loss(model, test), 2)
    log({"pythae_train": result["pythae_train"], "pythae_test_loss": result["pythae_test_loss"]})
    for name in args.pythae:
        row = {}
        sampler, row["fit_wall_s"], row["fit_cpu_s"] = timed(
            lambda: pythae_sampler(name, model, train, test, args.workdir / "pythae-samplers",  # noqa: B023
                                   args.sampler_epochs, args.seed))
        torch.manual_seed(args.seed)
        with torch.no_grad():
            drawn, row["sample_wall_s"], row["sample_cpu_s"] = timed(
                lambda: sampler.sample(num_samples=args.samples, batch_size=1000))  # noqa: B023
        row.update(measure(test, drawn, args.data))
        result["pythae"][name], draws[("pythae", name)] = row, grid_pick(drawn, args.seed)
        log({"pythae": {name: row}})

    # vaekit: the seed model and its samplers
    run_path = args.run or trained_run(args.workdir, "seed", args.data, (), args.epochs, result)
    run = load_run(run_path)
    result["vaekit_test_loss"] = run.metrics[-1]["test_loss"] if run.metrics else None
    latents = training_latents(run)
    for name in args.vaekit:
        config = SamplerConfig(name) if name in ("prior", "gmm") else SamplerConfig(name, epochs=args.sampler_epochs)
        row, drawn = vaekit_pipeline(run, config, latents, test, args)
        result["vaekit"][name], draws[("vaekit", name)] = row, grid_pick(drawn, args.seed)
        log({"vaekit": {name: row}})

    # vaekit's best generation pipelines: a stronger model trained with the same recipe, and a sampler fitted to it
    for name in args.best:
        flags, sampler_fields = CANDIDATES[name]
        tag = name.split("+")[0]
        candidate = run if tag == "seed" else load_run(
            trained_run(args.workdir, tag, args.data, flags, args.epochs, result))
        known = latents if candidate is run else None  # the seed model's latents, read once
        row, drawn = vaekit_pipeline(candidate, SamplerConfig(**sampler_fields), known, test, args)
        row = {"train_flags": " ".join(flags), "sampler": sampler_fields,
               "test_loss": candidate.metrics[-1]["test_loss"] if candidate.metrics else None, **row}
        result["vaekit"][name], draws[("vaekit", name)] = row, grid_pick(drawn, args.seed)
        log({"vaekit": {name: row}})

    best = {tool: min(result[tool], key=lambda s: result[tool][s]["fd_classifier"])  # noqa: B023
            for tool in ("vaekit", "pythae") if result[tool]}
    result["best"] = {tool: {"sampler": s, "fd_classifier": result[tool][s]["fd_classifier"]}
                      for tool, s in best.items()}
    if args.grids is not None and best:
        from vaekit.plots import save_image_grid

        # each tool's best, and the samplers it is judged against: both GMMs of as many components
        shown = {(tool, s) for tool, s in best.items()} | {key for key in draws if key[1].startswith("gmm")}
        args.grids.mkdir(parents=True, exist_ok=True)
        result["grids"] = {}
        for tool, s in sorted(shown):
            path = args.grids / f"generation-{args.data}-{tool}-{s.replace('+', '-')}.png"
            save_image_grid(path, draws[(tool, s)].clamp(0, 1).reshape(-1, 1, 28, 28), scale=2)
            result["grids"][f"{tool} {s}"] = str(path)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
