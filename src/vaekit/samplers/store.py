"""Fitting a sampler to a run, and its files: RUN/samplers/NAME.json (what was fitted, to which weights) and
RUN/samplers/NAME.safetensors (its state). Both are written together atomically and read strictly."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .. import __version__
from ..atomic import atomic_write_files
from ..errors import ConfigError, RunError
from ..models.base import model_fingerprint
from ..representation import embed
from ..rng import derive_seed, make_generator
from ..runs import Run
from ..validation import MAX_JSON_BYTES, check_tensors, is_number, parse_json, read_bounded, state_spec
from . import SAMPLERS
from .base import LatentSampler, SamplerConfig
from .prior import PriorSampler

SAMPLER_DIR = "samplers"
SAMPLER_FORMAT = 1
LATENT_CHUNK = 10_000  # training images converted to model inputs at a time: memory stays bounded


@dataclass
class FittedSampler:
    """A sampler just fitted, and the record its JSON file holds."""

    sampler: LatentSampler
    record: dict[str, Any]


def sampler_files(run_path: str | Path, name: str) -> tuple[Path, Path]:
    """(RUN/samplers/NAME.json, RUN/samplers/NAME.safetensors)."""
    folder = Path(run_path) / SAMPLER_DIR
    return folder / f"{name}.json", folder / f"{name}.safetensors"


def fit_command(run_path: str | Path, name: str) -> str:
    return f"vaekit fit-sampler {run_path} --sampler {name}"


@torch.no_grad()
def training_latents(run: Run, data_dir: str | Path | None = None, progress: bool = False) -> torch.Tensor:
    """The posterior means (N, D) of the run's training images, the whole flat latent (every layer of a
    hierarchy, top first), read as `vaekit embed` reads them (`Run.inputs(for_latents=True)`)."""
    from ..data import load_train_test

    data = run.config.data
    train, _ = load_train_test(data.name, data.validation, run.config.train.seed, data_dir, progress=progress,
                               standardize=data.standardize)
    means = [embed(run.model, run.inputs(train.subset(slice(start, start + LATENT_CHUNK)), for_latents=True),
                   layer="all")[0].cpu() for start in range(0, len(train), LATENT_CHUNK)]
    return torch.cat(means)


def fit_sampler(run: Run, config: SamplerConfig, latents: torch.Tensor | None = None,
                data_dir: str | Path | None = None, progress: bool = False) -> FittedSampler:
    """Fit the sampler of `config` to the run's training posterior means (`training_latents`, unless given)."""
    spec = SAMPLERS.get(config.name)
    if not spec.fitted:
        raise ConfigError(f"the {config.name} sampler has nothing to fit")
    run.model.require("embed")
    run.model.require("sample")
    if latents is None:
        latents = training_latents(run, data_dir, progress)
    if latents.ndim != 2 or latents.shape[1] != run.model.latent_dim:
        raise ValueError(f"latents must be (N, {run.model.latent_dim}), got {tuple(latents.shape)}")
    sampler = SAMPLERS.load(config.name)(config, run.model.latent_dim)
    generator = make_generator(derive_seed(config.seed, "sampler", config.name))
    start = time.perf_counter()
    try:
        stats = sampler.fit(latents.float().cpu(), generator, progress)
    except ValueError as e:
        raise ConfigError(f"cannot fit the {config.name} sampler: {e}") from None
    seconds = time.perf_counter() - start
    record = {"format_version": SAMPLER_FORMAT, "vaekit_version": __version__, "sampler": config.to_dict(),
              "latent_dim": run.model.latent_dim, "model_fingerprint": model_fingerprint(run.model),
              "fitted_on": {"latents": len(latents), "seconds": round(seconds, 3), **stats},
              "fit_id": secrets.token_hex(8)}
    return FittedSampler(sampler, record)


def save_sampler(run_path: str | Path, fitted: FittedSampler) -> tuple[Path, Path]:
    """Write the sampler's two files into the run, together (replacing an earlier fit of the same sampler)."""
    json_path, tensor_path = sampler_files(run_path, fitted.sampler.name)
    state = {name: t.detach().cpu().contiguous() for name, t in fitted.sampler.state_dict().items()}
    metadata = {"format_version": str(SAMPLER_FORMAT), "fit_id": fitted.record["fit_id"]}
    atomic_write_files({json_path: (json.dumps(fitted.record, indent=2) + "\n").encode(),
                        tensor_path: save_safetensors(state, metadata=metadata)})
    return json_path, tensor_path


def load_sampler(run: Run, name: str) -> LatentSampler | PriorSampler:
    """The sampler `name` of the run, on the model's device: the prior, or one fitted by `vaekit fit-sampler`
    to these very weights (RunError naming the command that fits it, if it is not)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS.names())}")
    if not SAMPLERS.get(name).fitted:
        return SAMPLERS.load(name)(run.model)
    json_path, tensor_path = sampler_files(run.path, name)
    if not json_path.is_file() or not tensor_path.is_file():
        raise RunError(f"{run.path} has no fitted {name} sampler; fit one with `{fit_command(run.path, name)}`")
    try:
        record = check_record(parse_json(read_bounded(json_path, MAX_JSON_BYTES)), name, run.model.latent_dim)
    except (OSError, ValueError, ConfigError) as e:
        raise RunError(f"{json_path}: unreadable ({e}); fit it again with `{fit_command(run.path, name)}`") from None
    if record["model_fingerprint"] != model_fingerprint(run.model):
        raise RunError(f"{json_path} was fitted to other weights than the run's (trained further since?); "
                       f"fit it again with `{fit_command(run.path, name)}`")
    sampler = SAMPLERS.load(name)(SamplerConfig.from_dict(record["sampler"]), run.model.latent_dim)
    expected = state_spec(sampler.state_dict())
    try:
        data = read_bounded(tensor_path, sum(t.nbytes for t in sampler.state_dict().values()) + (1 << 20))
        state = load_safetensors(data)
        header = parse_json(data[8:8 + int.from_bytes(data[:8], "little")])
        if header.get("__metadata__", {}).get("fit_id") != record["fit_id"]:
            raise ValueError(f"it is not the state {json_path.name} records (another fit's)")
        check_tensors(state, expected, "tensors")
        sampler.load_state_dict(state)
        sampler.check()
    except (OSError, SafetensorError, ValueError, AttributeError) as e:
        raise RunError(f"{tensor_path}: unreadable ({e}); fit it again with `{fit_command(run.path, name)}`") from None
    return sampler.to(next(run.model.parameters()).device).eval()


def check_record(record: Any, name: str, latent_dim: int) -> dict:
    """A sampler's JSON record, checked field by field; ValueError naming the first bad one."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    known = {"format_version", "vaekit_version", "sampler", "latent_dim", "model_fingerprint", "fitted_on", "fit_id"}
    if set(record) != known:
        raise ValueError(f"expected the fields {', '.join(sorted(known))}")
    version = record["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SAMPLER_FORMAT:
        raise ValueError(f"format_version must be 1 to {SAMPLER_FORMAT} (a newer vaekit wrote it?), got {version!r}")
    config = SamplerConfig.from_dict(record["sampler"])
    if config.name != name:
        raise ValueError(f"it holds a {config.name} sampler, not {name}")
    if record["latent_dim"] != latent_dim or isinstance(record["latent_dim"], bool):
        raise ValueError(f"latent_dim must be the model's {latent_dim}, got {record['latent_dim']!r}")
    for key in ("model_fingerprint", "fit_id"):
        if not isinstance(record[key], str) or not record[key].isascii() or not record[key].isalnum():
            raise ValueError(f"{key} must be hexadecimal text")
    fitted_on = record["fitted_on"]
    if not isinstance(fitted_on, dict) or not all(isinstance(v, bool) or is_number(v) for v in fitted_on.values()):
        raise ValueError("fitted_on must be an object of numbers")
    return record
