"""Choosing the device to compute on."""

from __future__ import annotations

import os

import torch

from .choices import DEVICE_CHOICES
from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; a named device must be available."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    }
    if name == "auto":
        return one_per_process(torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind])))
    kind = name.split(":", 1)[0]
    if kind not in available:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if not available[kind]:
        raise ConfigError(f"device {name!r} is not available on this machine")
    try:
        device = torch.device(name)
    except RuntimeError:  # "cpu:abc", "cuda:-1"
        raise ConfigError(f"invalid device {name!r}; give one of {', '.join(DEVICE_CHOICES)}, "
                          "optionally with an index (cuda:1)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)")
    return one_per_process(device)


def one_per_process(device: torch.device) -> torch.device:
    """Under torchrun, `cuda` (no index) is the GPU of this process's LOCAL_RANK, one GPU per process."""
    local_rank = os.environ.get("LOCAL_RANK", "").strip()
    if device.type != "cuda" or device.index is not None or not (local_rank.isascii() and local_rank.isdigit()):
        return device
    return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
