"""Shared by the benchmark scripts: paths, the machine's description, matmul speed, subprocess JSON."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"
SEED_SCRIPT = REPO.parent / "shared" / "bench" / "seed_vae.py"
BENCHMARK_DATA = ("mnist", "fashion-mnist")  # the built-in datasets the quality benchmarks take (--data)


def on_data(config, name: str):
    """A RunConfig with its data replaced by the built-in dataset `name`, everything else kept."""
    from dataclasses import replace

    return config if config.data.name == name else replace(config, data=replace(config.data, name=name))


def runs_folder(out: Path, data: str) -> Path:
    """Where a benchmark keeps its runs: `out` for MNIST (as before), out/<dataset> for any other dataset."""
    return out if data == "mnist" else out / data


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_gflops(shapes: list[tuple[int, int, int]], device: str = "cpu", seconds: float = 1.0) -> float:
    """Sustained fp32 GFLOP/s over a round of (m, k) @ (k, n) products of the given shapes."""
    import torch

    pairs = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def round_():
        for a, b in pairs:
            a @ b

    for _ in range(10):
        round_()
    sync(device)
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        round_()
        rounds += 1
    sync(device)
    return flops * rounds / (time.perf_counter() - start) / 1e9


def sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_measured(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[int, str, str, float]:
    """Run a command; return its exit code, stdout, stderr and its own peak resident memory in MB."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return process.returncode, out.read(), err.read(), usage.ru_maxrss / 1024


def run_json(argv: list[str], env: dict | None = None) -> dict:
    """Run a command that prints one JSON object as its last line; return it, with the command's own
    peak memory added as "peak_rss_mb" (exit on failure)."""
    code, out, err, peak_mb = run_measured(argv, env=env)
    if code != 0:
        sys.exit(f"benchmark step failed: {' '.join(argv)}\n{err[-2000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": round(peak_mb, 1)}


def median(values: list[float]) -> float:
    return statistics.median(values)
