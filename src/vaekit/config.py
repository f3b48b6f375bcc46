"""Run configuration as frozen dataclasses, checked on construction, with strict dict round trips.

A run directory's config.json is `RunConfig.to_dict()`; `RunConfig.from_dict` rebuilds it and
rejects unknown keys and wrongly typed values, so a typo never passes silently. Keys missing from
an older config take today's defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

BINARIZE_MODES = ("none", "dynamic", "threshold")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on and how pixels become targets."""

    name: str = "mnist"  # a built-in dataset (vaekit.data.DATASETS)
    binarize: str = "none"  # none: grayscale in [0, 1]; dynamic: Bernoulli draw per epoch; threshold: > 127

    def __post_init__(self) -> None:
        if self.binarize not in BINARIZE_MODES:
            raise ConfigError(f"data.binarize must be one of {', '.join(BINARIZE_MODES)}, got {self.binarize!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The VAE's shape: an MLP encoder input -> hidden_dims -> latent, mirrored by the decoder."""

    input_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    hidden_dims: tuple[int, ...] = (400,)
    latent_dim: int = 20

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3:
            raise ConfigError(f"model.input_shape must be (channels, height, width), got {self.input_shape!r}")
        for i, size in enumerate(self.input_shape):
            _positive_int(f"model.input_shape[{i}]", size)
        if not self.hidden_dims:
            raise ConfigError("model.hidden_dims needs at least one size")
        for i, size in enumerate(self.hidden_dims):
            _positive_int(f"model.hidden_dims[{i}]", size)
        _positive_int("model.latent_dim", self.latent_dim)

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: Adam for a number of epochs over shuffled minibatches."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 1

    def __post_init__(self) -> None:
        _positive_int("train.epochs", self.epochs)
        _positive_int("train.batch_size", self.batch_size)
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and 0 < self.lr < 10):
            raise ConfigError(f"train.lr must be a number in (0, 10), got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"train.seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved as the run directory's config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Rebuild from `to_dict()` output; unknown keys or wrong types raise ConfigError."""
        return _from_dict(cls, data, "config")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}")
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in names if name in data}
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Check `value` against a field's type hint, turning JSON lists into tuples."""
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{where} must have {len(item_types)} items, got {len(value)}")
        return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} at {where}")  # a programming error
