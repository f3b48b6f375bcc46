"""Hardware-dependent speed-ups, each with a plain fallback: torch.compile, and bf16 where it is native."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


def has_native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware (so bf16 autocast is a real speed-up).

    CUDA from compute capability 8.0 (Ampere); x86 CPUs with AVX512-BF16 or AMX. Elsewhere bf16 is
    emulated and slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, present since torch 2.2
        if probe is not None:
            return bool(probe())
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting (auto, fp32, bf16), or None for plain fp32.

    auto picks bf16 where the device multiplies it natively: matmuls at up to twice the fp32 rate,
    accumulated in fp32. Callers keep weights, optimizer state and losses in fp32.
    """
    if precision == "bf16" or (precision == "auto" and has_native_bf16(device)):
        return torch.bfloat16
    return None


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of sums and estimates: float64, except on Apple's MPS, which has none (float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def compile_with_fallback(fn: Callable, mode: str | None = None) -> Callable:
    """`torch.compile(fn)` that falls back to `fn` for good if compiling fails (no C++ compiler, say).

    Compilation happens lazily, at the first call, so that is where a failure surfaces.
    """
    compiled = torch.compile(fn, mode=mode, dynamic=False)
    state = {"failed": False}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not state["failed"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # torch raises many types here (BackendCompilerFailed, InductorError, ...)
                state["failed"] = True
                first_line = (str(e).splitlines() or [""])[0][:200]
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {first_line}); continuing without it",
                              RuntimeWarning, stacklevel=2)
        return fn(*args, **kwargs)

    call.is_compiled = lambda: not state["failed"]
    return call
