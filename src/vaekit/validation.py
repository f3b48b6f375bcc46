"""Checking what is read from a run directory before anything uses it.

A run directory may come from anywhere (people share them), so nothing in it is trusted: every tensor
is checked by name, shape, dtype and finiteness against what the run's config builds, every JSON
field by type and range, and every file's size against a bound, before the values reach torch. The
functions here raise ValueError naming what was expected and what was found; vaekit.runs turns that
into a RunError naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

MAX_JSON_BYTES = 1 << 20  # config.json, threshold.json
MAX_METRICS_BYTES = 64 << 20  # metrics.jsonl: a row per epoch (~0.6 KB with 20 latents); parsed, 64 MB peaks at ~0.6 GB


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of `path`, or ValueError if it holds more than `limit` (read no further than that)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than the {limit:,} bytes vaekit reads from such a file")
    return data


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


MAX_INT_DIGITS = 4300  # Python's own limit on converting a digit string to an int (sys.get_int_max_str_digits)


def parse_int(text: str) -> int:
    """A JSON integer literal, or ValueError in vaekit's words for one longer than Python converts (whose own
    message advises sys.set_int_max_str_digits(), advice for a programmer, not for a file's reader)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"holds an integer of {len(text.lstrip('-')):,} digits, more than any number vaekit reads")
    return int(text)


def parse_json(text: str | bytes, allow_nan: bool = False) -> Any:
    """A JSON document, strictly: ValueError (never RecursionError) for malformed or absurdly nested text
    and, unless `allow_nan`, for the NaN and Infinity that Python's json would accept."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 text ({e})") from None
    try:
        return json.loads(text, parse_constant=None if allow_nan else _reject_constant, parse_int=parse_int)
    except RecursionError:  # json recurses once per level of nesting
        raise ValueError("nested too deeply") from None


def is_number(value: Any) -> bool:
    """A JSON number (int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fits_float(value: Any) -> bool:
    """A JSON number a float can hold (NaN and the infinities too; an int past a float's range not)."""
    if not is_number(value):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def is_finite_number(value: Any) -> bool:
    """A JSON number that is finite as a float: an int past a float's range (JSON allows 4,300 digits) is not."""
    try:
        return is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


def finite_number(value: Any, what: str) -> float:
    """`value` as a float, or ValueError unless it is a finite JSON number."""
    if not is_finite_number(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_tensors(found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                  what: str = "tensors") -> None:
    """ValueError unless `found` holds exactly the tensors `expected` names, each of its (shape, dtype), all finite."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what} do not match the run's config (missing: {_names(missing)}; "
                         f"unexpected: {_names(unexpected)})")
    for name, (shape, dtype) in expected.items():
        tensor = found[name]
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
            raise ValueError(f"{what} do not match the run's config ({name} is {tensor.dtype} {tuple(tensor.shape)}, "
                             f"the config gives {dtype} {tuple(shape)})")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or infinity)")


def _names(names: list[str], most: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def state_spec(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of each tensor of a state_dict, its names prefixed."""
    return {prefix + name: (tuple(t.shape), t.dtype) for name, t in state.items()}


ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")  # what torch's Adam keeps per parameter (amsgrad off)


def adam_spec(parameters: list[torch.Tensor], prefix: str = "optimizer.") -> dict[str, tuple[tuple[int, ...],
                                                                                            torch.dtype]]:
    """(shape, dtype) of each tensor of Adam's state after a step, named `{prefix}{index}.{name}` as checkpoints do."""
    spec = {}
    for index, p in enumerate(parameters):
        spec[f"{prefix}{index}.exp_avg"] = (tuple(p.shape), p.dtype)
        spec[f"{prefix}{index}.exp_avg_sq"] = (tuple(p.shape), p.dtype)
        spec[f"{prefix}{index}.step"] = ((), torch.float32)
    return spec


def check_adam_values(tensors: Mapping[str, torch.Tensor], steps: int, prefix: str = "optimizer.") -> None:
    """ValueError unless Adam's state is one it could have reached: second moments >= 0, and every
    parameter's step count equal to `steps`, the steps of the epochs the checkpoint says are done."""
    for name, t in tensors.items():
        if not name.startswith(prefix):
            continue
        if name.endswith(".exp_avg_sq") and bool((t < 0).any()):
            raise ValueError(f"{name} holds negative values (a second moment is never negative)")
        if name.endswith(".step") and float(t) != steps:
            raise ValueError(f"{name} is {float(t):g}, but the epochs done take {steps} steps")


GROUP_SETTINGS = ("betas", "eps", "weight_decay", "amsgrad", "maximize")  # must equal what the config builds


def check_param_groups(groups: Any, fresh: list[dict]) -> list[dict]:
    """The optimizer's param groups to load: `fresh` (what the run's config builds on this device) with the
    saved learning rate, after checking the saved groups are of that optimizer. ValueError otherwise."""
    if not isinstance(groups, list) or len(groups) != len(fresh):
        raise ValueError(f"param_groups must be a list of {len(fresh)} group(s), got {_short(groups)}")
    loaded = []
    for i, (group, own) in enumerate(zip(groups, fresh)):
        if not isinstance(group, dict):
            raise ValueError(f"param_groups[{i}] must be an object, got {_short(group)}")
        if group.get("params") != own["params"]:
            raise ValueError(f"param_groups[{i}].params must be {own['params']}, got {_short(group.get('params'))}")
        for key in GROUP_SETTINGS:
            value = group.get(key)
            value = tuple(value) if isinstance(value, list) else value
            if value != own[key] or type(value) is not type(own[key]):
                raise ValueError(f"param_groups[{i}].{key} is {_short(group.get(key))}; the run's config gives "
                                 f"{own[key]!r}")
        lr = finite_number(group.get("lr"), f"param_groups[{i}].lr")
        if lr < 0:
            raise ValueError(f"param_groups[{i}].lr must not be negative, got {lr}")
        loaded.append({**own, "lr": lr})
    return loaded


def check_epoch(value: Any, most: int, what: str = "epoch") -> int:
    """`value` as an epoch count in [1, most]; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{what} must be an integer from 1 to {most}, got {_short(value)}")
    return value


METRIC_NUMBERS = ("train_loss", "test_loss", "test_reconstruction", "test_kl", "seconds", "train_mutual_information",
                  "train_total_correlation", "train_dimension_kl")


def check_metrics(rows: Any, what: str = "metrics") -> list[dict]:
    """The per-epoch metric rows, checked: a list of objects whose epochs count 1, 2, 3..., losses
    are numbers, active_units a count and kl_per_dim a list of numbers (or null). ValueError otherwise."""
    if not isinstance(rows, list):
        raise ValueError(f"{what} must be a list of rows, got {_short(rows)}")
    for number, row in enumerate(rows, 1):
        where = f"{what} row {number}"
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be an object, got {_short(row)}")
        if row.get("epoch") != number or isinstance(row.get("epoch"), bool):
            raise ValueError(f"{where}: epoch must be {number}, got {_short(row.get('epoch'))}")
        for key in METRIC_NUMBERS:
            if key in row and not fits_float(row[key]):
                raise ValueError(f"{where}: {key} must be a number, got {_short(row[key])}")
        for key in ("train_loss", "test_loss"):
            if key not in row:
                raise ValueError(f"{where} has no {key}")
        units = row.get("active_units", 0)
        if isinstance(units, bool) or not isinstance(units, int) or units < 0:
            raise ValueError(f"{where}: active_units must be a non-negative integer, got {_short(units)}")
        kl = row.get("kl_per_dim")
        if kl is not None and (not isinstance(kl, list) or not all(fits_float(v) for v in kl)):
            raise ValueError(f"{where}: kl_per_dim must be a list of numbers or null, got {_short(kl)}")
        layers = row.get("kl_per_layer")
        if layers is not None and (not isinstance(layers, dict) or not all(
                isinstance(k, str) and (v is None or fits_float(v)) for k, v in layers.items())):
            raise ValueError(f"{where}: kl_per_layer must map layer names to numbers, got {_short(layers)}")
    return rows


def _short(value: Any, most: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most] + "..."
