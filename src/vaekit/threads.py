"""How many CPU threads torch computes with: the default policy, $VAEKIT_THREADS, and applying a choice.

torch's own default is one thread per core, and its OpenMP threads spin while they wait for each
other. On a machine where anything else runs, a descheduled thread stalls the rest at every
barrier: the issue #20 measurement was 43 s per MNIST epoch against 4.9 s with one thread.
BENCHMARKS.md ("Threads") compares the candidates quiet and under a competing job.

The default ("auto"): one thread per physical core among the CPUs this process may use, with
OpenMP's waiting made passive (`prefer_passive_wait`, OMP_WAIT_POLICY=PASSIVE, set by `import
vaekit` before torch loads): a waiting thread sleeps instead of spinning, so it neither burns a
CPU another job needs nor stalls when that job holds the CPU. It had the best worst case of the
candidates measured, and a fixed count keeps a run's numbers independent of the machine's load
(one and two threads differ in the last float32 digits: tests/test_threads.py).

Nothing here imports torch at module level: `import vaekit` calls `prefer_passive_wait` before it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .errors import ConfigError

ENV_VAR = "VAEKIT_THREADS"
AUTO = "auto"
MAX_THREADS = 1024  # a sanity bound on what anyone could mean; larger values are typos
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # a user's own choice of OpenMP waiting
# Throughput has collapsed when it falls below this fraction of the run's best so far, or when the process
# got less than this fraction of one CPU (even its main thread waits for other jobs).
BUSY_RATE_FRACTION = 0.5
BUSY_CPU_FRACTION = 0.5
BUSY_MIN_SECONDS = 2.0  # judge no window shorter than this: start-up and the first steps are noisy


def parse_threads(text: str, source: str = "--threads") -> int | str:
    """'auto' or a thread count in 1..MAX_THREADS; ConfigError naming `source` otherwise."""
    text = text.strip()
    if text.lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"{source}: expected a thread count from 1 to {MAX_THREADS} or 'auto', got {text!r}")
    return value


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, or every CPU where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """How many distinct physical cores `cpus` sit on (hyper-threads share one); len(cpus) if unknown."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def default_threads() -> int:
    """The "auto" thread count: one per physical core among the CPUs this process may use."""
    return physical_cores(usable_cpus())


def prefer_passive_wait() -> bool:
    """Make OpenMP's idle threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE), unless the user chose a
    wait policy or torch is already loaded (OpenMP reads the setting once, when torch loads). Returns
    whether waiting is passive. Call it before importing torch; `import vaekit` does.
    """
    if "torch" not in sys.modules and not any(os.environ.get(name) for name in WAIT_SETTINGS):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return waits_passively()


def waits_passively() -> bool:
    """Whether torch's OpenMP threads were told to sleep while they wait (as far as the environment says)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def choose_threads(requested: int | str | None = None) -> int | None:
    """The thread count to use: `requested`, else $VAEKIT_THREADS, else None when $OMP_NUM_THREADS is set
    (torch already follows it), else `default_threads()`."""
    if requested is None and os.environ.get(ENV_VAR, "").strip():
        requested = parse_threads(os.environ[ENV_VAR], f"${ENV_VAR}")
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    if requested is None or requested == AUTO:
        return default_threads()
    return requested


def set_threads(threads: int | str | None = None, warn=None) -> int:
    """Make torch compute with `threads` CPU threads (a count, 'auto', or None for $VAEKIT_THREADS or the
    default); returns the count in use. `warn(line)` hears about more threads than usable CPUs."""
    import torch

    if isinstance(threads, str):
        threads = parse_threads(threads, "threads")
    elif threads is not None and (type(threads) is not int or not 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"threads: expected a thread count from 1 to {MAX_THREADS} or 'auto', got {threads!r}")
    count = choose_threads(threads)
    if count is None:
        return torch.get_num_threads()
    usable = len(usable_cpus())
    if count > usable:
        (warn or _stderr)(f"warning: {count} threads on {usable} usable CPU(s): they will wait for each other "
                          f"(--threads {usable} or fewer avoids that)")
    torch.set_num_threads(count)
    return count


def cpu_is_busy(rate: float, best_rate: float, cpu_seconds: float, wall_seconds: float) -> bool:
    """Whether a stretch of `wall_seconds` computing at `rate` steps/s, using `cpu_seconds` of process CPU time
    (all threads), ran on a busy CPU: under half the best rate seen so far, or under half a CPU's time.

    The CPU test needs no history but misses spinning OpenMP threads, which burn CPU time while they
    wait; the rate test catches those, once a quieter stretch has set `best_rate` (0: none yet).
    """
    if wall_seconds < BUSY_MIN_SECONDS or rate <= 0:
        return False
    slower = best_rate > 0 and rate < BUSY_RATE_FRACTION * best_rate
    starved = cpu_seconds < BUSY_CPU_FRACTION * wall_seconds
    return slower or starved


def busy_hint(rate: float, threads: int, passive: bool, unit: str = "batch/s") -> str:
    """The progress note for a busy CPU: the rate, and what to do about it. One thread beats several only
    where waiting threads spin (BENCHMARKS.md, "Threads")."""
    advice = "try --threads 1" if threads > 1 and not passive else "other jobs are using it"
    return f"{rate:.1f} {unit}, the CPU is busy: {advice}"


class BusyMonitor:
    """Watches a loop's throughput window by window and says when the CPU became busy (`cpu_is_busy`).

    `step(n)` after each n steps; it returns the hint while the current window looks busy, else None.
    The best rate persists across `start()`s, so a later epoch is judged against the run's best.
    """

    def __init__(self, threads: int, window_seconds: float = BUSY_MIN_SECONDS):
        self.threads = threads
        self.passive = waits_passively()
        self.window_seconds = window_seconds
        self.best_rate = 0.0
        self.hint: str | None = None
        self.start()

    def start(self, threads: int | None = None) -> None:
        """Open a new window (a new epoch), with the thread count now in use if it changed."""
        self.threads = threads or self.threads
        self._wall, self._cpu, self._steps, self.hint = time.perf_counter(), time.process_time(), 0, None

    def step(self, n: int = 1) -> str | None:
        self._steps += n
        wall = time.perf_counter() - self._wall
        if wall >= self.window_seconds:
            rate = self._steps / wall
            busy = cpu_is_busy(rate, self.best_rate, time.process_time() - self._cpu, wall)
            self.hint = busy_hint(rate, self.threads, self.passive) if busy else None
            self.best_rate = max(self.best_rate, rate)
            self._wall, self._cpu, self._steps = time.perf_counter(), time.process_time(), 0
        return self.hint


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
