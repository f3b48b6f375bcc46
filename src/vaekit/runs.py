"""A run directory: config.json, model.safetensors and metrics.jsonl, written atomically, read strictly.

    RUN/config.json             {"format_version", "vaekit_version", "data", "model", "train"}
    RUN/checkpoint.safetensors  model, optimizer state, epoch and metrics so far: the run's commit point
    RUN/model.safetensors       the bare model's state_dict, with format, version and epoch as metadata
    RUN/metrics.jsonl           one JSON object per finished epoch

Each epoch writes the checkpoint first and the other files after it, each atomically (temp file,
fsync, rename). A run killed at any moment therefore holds a complete checkpoint of its last
finished epoch, and resuming rewrites whatever came after it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import __version__, pretrained
from .atomic import atomic_write_bytes, atomic_write_text
from .config import MAX_EPOCHS, MAX_IW_SAMPLES, RunConfig
from .data import ImageSet, as_seen, fixed_binarization, latent_inputs, load_held_out
from .data.preparation import Preparation, prepare
from .errors import ConfigError, RunError
from .models import LatentVariableModel, build_model, check_size
from .validation import (MAX_JSON_BYTES, MAX_METRICS_BYTES, check_epoch, check_metrics, check_tensors, finite_number,
                         is_finite_number, parse_json, read_bounded, state_spec)

FORMAT_VERSION = 9  # 2 added model.pixel_groups, model.context_channels; 3 data.standardize; 4 model.context_features;
# 5 train.warmup_min_steps; 6 model.family, model.latent_layers; 7 model.likelihood_components;
# 8 data.resize, data.background, model.width, model.blocks, model.latent_shape; 9 train.tc_beta
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
THRESHOLD_FILE = "threshold.json"
NLL_FILE = "nll-blocks.jsonl"  # the finished blocks of `vaekit eval --iw-samples`, so a stopped one resumes
MAX_RECORDED_NLL = 1e15  # nats per image: past any real image's -log p(x), and sums of 10**9 of them stay finite


def create_run(path: str | Path, config: RunConfig) -> Path:
    """Start a run directory at `path` by writing its config; refuses to overwrite an existing run.

    The config is written to a temp file and hard-linked into place, which fails if config.json exists:
    of two processes creating the same run at once, exactly one gets it and the other a RunError.
    """
    path = Path(path)
    taken = RunError(f"{path} already holds a run; choose another --out, or continue it with --resume {path}")
    if os.path.lexists(path / CONFIG_FILE) and not (path / CONFIG_FILE).is_file():  # a directory, FIFO, dangling link
        raise RunError(f"{path / CONFIG_FILE} is not a regular file, so {path} is no run to resume or reuse; "
                       "remove it, or choose another --out")
    if (path / CONFIG_FILE).exists():
        raise taken
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} exists and is not a directory")
    document = {"format_version": FORMAT_VERSION, "vaekit_version": __version__, **config.to_dict()}
    text = json.dumps(document, indent=2) + "\n"
    staged = atomic_write_text(path / f".{CONFIG_FILE}.{secrets.token_hex(8)}.new", text)  # a name of its own
    try:
        os.link(staged, path / CONFIG_FILE)
    except FileExistsError:
        raise taken from None
    except OSError as e:
        raise RunError(f"cannot create the run {path}: {e.strerror or e}") from None
    finally:
        staged.unlink(missing_ok=True)
    return path


def save_weights(path: str | Path, model: LatentVariableModel, epoch: int) -> Path:
    """Write the model's state_dict to RUN/model.safetensors atomically."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"format_version": str(FORMAT_VERSION), "vaekit_version": __version__, "epoch": str(epoch)}
    return atomic_write_bytes(Path(path) / WEIGHTS_FILE, save_safetensors(state, metadata=metadata))


def write_config(path: str | Path, config: RunConfig) -> Path:
    """(Re)write RUN/config.json atomically."""
    document = {"format_version": FORMAT_VERSION, "vaekit_version": __version__, **config.to_dict()}
    return atomic_write_text(Path(path) / CONFIG_FILE, json.dumps(document, indent=2) + "\n")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write RUN/checkpoint.safetensors atomically: training state tensors plus JSON metadata."""
    state = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {"format_version": str(FORMAT_VERSION), "vaekit_version": __version__, "meta": json.dumps(meta)}
    return atomic_write_bytes(Path(path) / CHECKPOINT_FILE, save_safetensors(state, metadata=metadata))


def has_finished_epoch(path: str | Path) -> bool:
    """Whether the run at `path` has finished an epoch: it holds a checkpoint, which the first finished epoch
    writes first, or the weights or metrics written after it (a run whose checkpoint was lost or replaced by
    something else still holds what it trained, which a restart would overwrite)."""
    return any(os.path.lexists(Path(path) / name) for name in (CHECKPOINT_FILE, WEIGHTS_FILE, METRICS_FILE))


def load_checkpoint(path: str | Path, max_bytes: int = 4 << 30) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The checkpoint of the run at `path` (tensors, metadata), or None if it has none yet.

    The metadata is checked here (an epoch count, its metrics, the optimizer's param groups); the tensors,
    which need the model and optimizer to check, by `vaekit.fit` before it loads them. `max_bytes`: the
    largest file read (the caller knows the model's size).
    """
    checkpoint = Path(path) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        return None
    try:
        data = read_bounded(checkpoint, max_bytes)
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = parse_json(data[8:8 + header_len]).get("__metadata__", {})
        version = metadata.get("format_version", "0")
        if not isinstance(version, str) or not version.isascii() or not version.isdigit():
            raise ValueError(f"format_version must be a number, got {version!r}")
        if int(version) > FORMAT_VERSION:
            raise RunError(f"{checkpoint} was written by vaekit {metadata.get('vaekit_version')}; upgrade vaekit")
        meta = parse_json(metadata["meta"])
        if not isinstance(meta, dict):
            raise ValueError("its meta must be a JSON object")
        epoch = check_epoch(meta.get("epoch"), MAX_EPOCHS, "meta.epoch")
        if len(check_metrics(meta.get("metrics"), "meta.metrics")) != epoch:
            raise ValueError(f"meta.metrics must have a row for each of its {epoch} epochs")
        if not isinstance(meta.get("param_groups"), list) or not isinstance(meta.get("next_epoch_seeds"), dict):
            raise ValueError("meta needs param_groups (a list) and next_epoch_seeds (an object)")
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"{checkpoint}: unreadable ({e}); the run cannot be resumed from it") from None
    return tensors, meta



def write_threshold(path: str | Path, calibration: dict) -> Path:
    """Store an anomaly threshold and how it was fitted as RUN/threshold.json."""
    pretrained.refuse_shipped(path, "calibrating")
    return atomic_write_text(Path(path) / THRESHOLD_FILE, json.dumps(calibration, indent=2) + "\n")


def read_threshold(path: str | Path) -> dict | None:
    """The run's calibrated anomaly threshold, or None if it has none."""
    threshold_path = Path(path) / THRESHOLD_FILE
    if not threshold_path.is_file():
        return None
    try:
        calibration = check_threshold(parse_json(read_bounded(threshold_path, MAX_JSON_BYTES)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"{threshold_path}: unreadable ({e}); run vaekit calibrate again") from None
    return calibration


def check_threshold(calibration) -> dict:
    """A threshold.json document, checked field by field; ValueError naming the first bad one."""
    from .choices import MIXTURE_RULES, SCORE_METHODS

    if not isinstance(calibration, dict):
        raise ValueError("expected a JSON object")
    finite_number(calibration.get("threshold"), "threshold")
    if calibration.get("method") not in SCORE_METHODS:
        raise ValueError(f"method must be one of {', '.join(SCORE_METHODS)}, got {calibration.get('method')!r}")
    if calibration.get("combine", "density") not in MIXTURE_RULES:
        raise ValueError(f"combine must be one of {', '.join(MIXTURE_RULES)}, got {calibration.get('combine')!r}")
    mixture = calibration.get("mixture", [])
    if not isinstance(mixture, list) or not all(isinstance(name, str) for name in mixture):
        raise ValueError(f"mixture must be a list of run paths, got {mixture!r}")
    background = calibration.get("background")
    if background is not None and not isinstance(background, str):
        raise ValueError(f"background must be a run's path, got {background!r}")
    rates = calibration.get("complexity_rates", {})
    if not isinstance(rates, dict) or not all(is_finite_number(v) for v in rates.values()):
        raise ValueError(f"complexity_rates must map runs to finite numbers, got {rates!r}")
    k = calibration.get("iw_samples")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_IW_SAMPLES):
        raise ValueError(f"iw_samples must be null or an integer from 1 to {MAX_IW_SAMPLES:,}, got {k!r}")
    for name in ("quantile", "false_positive_rate"):
        if name in calibration and not 0 <= finite_number(calibration[name], name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {calibration[name]!r}")
    references = calibration.get("references", {})
    if not isinstance(references, dict):
        raise ValueError(f"references must be an object, got {references!r}")
    for pair in references.values():  # the typical rule's, by run
        if (not isinstance(pair, list) or len(pair) != 2 or not all(is_finite_number(v) for v in pair)
                or not pair[1] > 0):
            raise ValueError(f"a reference needs a finite mean and a positive spread, got {pair!r}")
    return calibration


def read_nll_blocks(record: str | Path, key: dict) -> dict[int, dict]:
    """The finished blocks in a record of `evaluate.nll_blocks` whose fields match `key`, by the block's
    first image: each row as written, its "nll" a list of per-image floats. A line torn by a kill, not a
    block, or holding anything but finite numbers within MAX_RECORDED_NLL, is skipped (its block is estimated again)."""
    record = Path(record)
    if not record.is_file():
        return {}
    try:
        text = read_bounded(record, MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return {}  # unreadable: the evaluation starts over
    done = {}
    for line in text.splitlines():
        try:
            row = parse_json(line)
            if all(row.get(name) == value for name, value in key.items()):
                start = row["start"]
                if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                    continue
                nll = [finite_number(v, "nll") for v in row["nll"]]
                if any(abs(v) > MAX_RECORDED_NLL for v in nll):  # finite, but their mean would not be
                    continue
                done[start] = {**row, "nll": nll}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return done


def append_nll_block(record: str | Path, key: dict, start: int, nll: list[float]) -> None:
    """Append one finished block to the record (its own line, after ending a line a kill tore)."""
    record = Path(record)
    torn = False
    if record.is_file() and record.stat().st_size > 0:
        with open(record, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(record, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps({**key, "start": start, "nll": nll}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Delete the temp files a killed process left in a run directory (never a finished file)."""
    stale = [p for p in Path(path).glob(".*.tmp") if p.is_file()]
    for p in stale:
        try:
            p.unlink(missing_ok=True)
        except OSError as e:  # a read-only run: resuming it cannot write anything either
            raise RunError(f"cannot clear the stale temp file {p} ({e.strerror or e}); "
                           "is the run directory read-only?") from None
    return stale


def write_metrics(path: str | Path, rows: list[dict]) -> Path:
    """Rewrite RUN/metrics.jsonl with `rows`, atomically (it is small; a torn append is worse)."""
    return atomic_write_text(Path(path) / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in rows))


def read_config(path: str | Path) -> RunConfig:
    """The RunConfig of the run at `path` (or named `pretrained:NAME`); RunError if it is missing, malformed or
    too new."""
    path = pretrained.resolve(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a run directory (no such directory)")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunError(f"{path} is not a run directory (" + (f"its {CONFIG_FILE} is not a regular file"
                       if os.path.lexists(config_path) else f"no {CONFIG_FILE}") + ")")
    try:
        document = parse_json(read_bounded(config_path, MAX_JSON_BYTES))
    except (OSError, ValueError) as e:
        raise RunError(f"{config_path}: unreadable ({e})") from None
    if not isinstance(document, dict):
        raise RunError(f"{config_path}: expected a JSON object")
    version = document.pop("format_version", None)
    written_by = document.pop("vaekit_version", "an unknown version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RunError(f"{config_path}: missing or invalid format_version")
    if version > FORMAT_VERSION:
        raise RunError(f"{path} was written by vaekit {written_by} (run format {version}); "
                       f"this vaekit {__version__} reads run format {FORMAT_VERSION} or older; upgrade vaekit")
    try:
        config = RunConfig.from_dict(migrate_config(document, version))
        check_size(config.model)  # before anything builds it
    except ConfigError as e:
        raise RunError(f"{config_path}: {e}") from None
    return pretrained.with_own_data(path, config)


# The fields each run format added, with what a config written before them meant: the behaviour vaekit had
# before the field existed. Format 1 grew fields as the first features landed (the Adam defaults, a constant
# learning rate, fp32, the MLP with a Bernoulli likelihood and the N(0, I) prior, the ELBO came first), so a
# format-1 config may hold some of its entry's fields and lack others.
ADDED_BY_FORMAT = {
    2: {"data": {"validation": 0.1},
        "model": {"architecture": "mlp", "conv_channels": [32, 64], "likelihood": "bernoulli", "prior": "normal",
                  "prior_components": 500, "pixel_groups": 1, "context_channels": 32},
        "train": {"schedule": "constant", "warmup": 0.0, "beta2": 0.999, "clip_grad": 0.0, "beta": 1.0,
                  "kl_warmup": 0, "free_bits": 0.0, "iw_samples": 1, "compile": "auto", "precision": "fp32"}},
    3: {"data": {"standardize": False}},  # per-image standardization
    4: {"model": {"context_features": 0}},  # decoder features passed to the pixel context
    5: {"train": {"warmup_min_steps": 0}},  # a warm-up of the fraction alone, even when shorter than one step
    6: {"model": {"family": "vae", "latent_layers": []}},  # model families (vaekit.registry.FAMILIES)
    7: {"model": {"likelihood_components": 10}},  # no run before it had a mixture likelihood: any value serves
    8: {"data": {"resize": "aspect", "background": None},  # same-aspect resizing only; no polarity statistics
        "model": {"width": 32, "blocks": 2, "latent_shape": "dense"}},  # the resnet's: no run before it had one
    9: {"train": {"tc_beta": None}},  # the plain (beta-weighted) ELBO, no beta-TCVAE
}


def migrate_config(document: dict, version: int) -> dict:
    """A config document of run format `version` brought to the current format: each later format's fields
    that the document lacks take their meaning from before that format."""
    for added_in, sections in ADDED_BY_FORMAT.items():
        if version < added_in:
            document = {**document, **{section: {**fields, **document[section]} for section, fields in sections.items()
                                       if isinstance(document.get(section), dict)}}
    return document


def read_metrics(path: str | Path) -> list[dict]:
    """The per-epoch rows of RUN/metrics.jsonl (empty if the run has none yet)."""
    metrics_path = pretrained.resolve(path) / METRICS_FILE
    if not metrics_path.is_file():
        return []
    try:
        text = read_bounded(metrics_path, MAX_METRICS_BYTES).decode("utf-8")
    except (OSError, ValueError) as e:
        raise RunError(f"{metrics_path}: unreadable ({e})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(parse_json(line, allow_nan=True))
        except ValueError:
            raise RunError(f"{metrics_path}:{number}: not a JSON line") from None
    try:
        return check_metrics(rows)
    except ValueError as e:
        raise RunError(f"{metrics_path}: {e}") from None


def load_model(path: str | Path, config: RunConfig, device: torch.device | str = "cpu",
               model: LatentVariableModel | None = None) -> LatentVariableModel:
    """The model of the run at `path`, built from `config` (or the `model` given, of the same config: networks
    made in Python) and filled with its saved weights."""
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise RunError(f"{path} has no {WEIGHTS_FILE} (training has not finished an epoch)")
    model = given_model(model, config) or build_model(config.model)  # its size is bounded (read_config checked it)
    expected_bytes = sum(t.nbytes for t in model.state_dict().values())
    try:
        state = load_safetensors(read_bounded(weights_path, expected_bytes + (1 << 20)))
    except (OSError, SafetensorError, ValueError) as e:
        raise RunError(f"{weights_path}: unreadable ({e})") from None
    check_state_matches(model, state, weights_path)
    model.load_state_dict(state)
    return model.to(device).eval()


def check_state_matches(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """RunError naming the first difference between saved weights and the model the config describes, or
    the first non-finite weight (`validation.check_tensors`)."""
    try:
        check_tensors(state, state_spec(model.state_dict()), "weights")
    except ValueError as e:
        raise RunError(f"{source}: {e}") from None


@dataclass
class Run:
    """A loaded run: where it is, its config, its trained model and its per-epoch metrics."""

    path: Path
    config: RunConfig
    model: LatentVariableModel
    metrics: list[dict] = field(default_factory=list)

    def preparation(self, invert: str = "off") -> Preparation:
        """How new images become this run's inputs (`data.preparation`): its size and channels, fitted as it was
        trained, and `invert` (auto, on, off) against its training images' background."""
        data = self.config.data
        return Preparation(self.config.model.input_shape, data.resize, data.background, invert)

    def inputs(self, images: ImageSet, for_latents: bool = False, invert: str = "off") -> torch.Tensor:
        """`images` as this run's model takes them, on its device: prepared (`data.preparation`: its size and channels,
        inverted as `invert` says), standardized (if it was trained so) and binarized as in its training, with its
        seed.

        for_latents: prepared for reading codes (`data.latent_inputs`) rather than for scoring or coding.
        So `anomaly_scores(run.model, run.inputs(load_split("mnist", "test")))` scores as `vaekit score` does.
        """
        data = self.config.data
        prepared = as_seen(prepare(images, self.preparation(invert)).images, data.standardize)
        to_inputs = latent_inputs if for_latents else fixed_binarization
        device = next(self.model.parameters()).device
        return to_inputs(prepared.images.to(device), data.binarize, self.config.train.seed)

    def held_out(self, data_dir: str | Path | None = None) -> ImageSet:
        """The images this run was tested on: its dataset's test split, or the seeded share of the user's images
        it held out (never the training split), in its size and channels."""
        data = self.config.data
        return load_held_out(data.name, data.validation, self.config.train.seed, data_dir,
                             preparation=self.preparation())


def load_run(path: str | Path, device: torch.device | str = "cpu", model: LatentVariableModel | None = None) -> Run:
    """Load the run directory at `path` (config, weights, metrics) for use; `path` may name a run shipped with vaekit,
    `pretrained:mnist` (`vaekit.pretrained`). `model`: for a run whose networks were given in Python
    (model.architecture "custom"), the same model again, which gets the saved weights."""
    path = pretrained.resolve(path)
    config = read_config(path)
    return Run(path, config, load_model(path, config, device, model), read_metrics(path))


def given_model(model: LatentVariableModel | None, config: RunConfig) -> LatentVariableModel | None:
    """`model` if it is one for `config` (ConfigError naming the first difference if not), or None."""
    if model is None:
        return None
    if not isinstance(model, LatentVariableModel):
        raise ConfigError(f"model must be a vaekit model (a VAE, or another vaekit.models.LatentVariableModel), "
                          f"got {type(model).__name__}")
    if model.config != config.model:
        ours, theirs = config.model.__dict__, model.config.__dict__
        key = next(k for k in ours if ours[k] != theirs[k])
        raise ConfigError(f"the model given is not this run's: its model.{key} is {theirs[key]!r}, the run's "
                          f"{ours[key]!r}")
    return model
