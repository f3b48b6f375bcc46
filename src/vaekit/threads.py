"""How many CPU threads torch computes with: the default policy, $VAEKIT_THREADS, and applying a choice.

torch's own default is one thread per core, and its OpenMP threads spin while they wait for each
other. On a machine where anything else runs, a descheduled thread stalls the rest at every
barrier: the issue #20 measurement was 43 s per MNIST epoch against 4.9 s with one thread.
BENCHMARKS.md ("Threads") compares the candidates quiet and under a competing job.

The default ("auto") is load-aware: one thread per physical core that was at least half idle over
0.1 s when the command started (/proc/stat), at least one. On a quiet 2-core machine that is two
threads (torch's own speed); beside another job, one. It had the best worst case of the candidates
measured (BENCHMARKS.md): torch's default was 16-21x slower beside a competing training, and
OpenMP's passive waiting cost 2.2x on a quiet machine. A job that starts competing later is caught
by the progress line's "the CPU is busy" note (`BusyMonitor`).

In float32 the thread count moves results in their last digits (tests/test_threads.py), so a
checkpoint records the count it was trained with and `vaekit train --resume` goes on with it
unless the user chose one (`threads_chosen_by_user`); pass --threads N for runs that must match
bit for bit across machines and loads.

Nothing here imports torch at module level: the CLI's --help stays instant.
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
IDLE_SAMPLE_SECONDS = 0.1  # the load-aware default looks at the CPUs this long when a command starts
IDLE_FRACTION = 0.5  # a CPU at least this idle over that time counts as free
_chosen_by_user = False  # set_threads was given a count
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
    value = int(text) if text.isascii() and text.isdigit() else None  # not int(): it takes '١', '+2' and '1_0'
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


def idle_cpus(cpus: list[int], sample_seconds: float = IDLE_SAMPLE_SECONDS) -> int | None:
    """How many of `cpus` were at least IDLE_FRACTION idle over `sample_seconds` (/proc/stat); None where the
    kernel does not say."""

    def ticks() -> dict[int, tuple[int, int]]:  # per CPU: (idle + iowait, total) since boot
        times = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and name[3:].isdigit():
                values = [int(f) for f in fields[:8]]
                times[int(name[3:])] = (values[3] + values[4], sum(values))
        return times

    try:
        before = ticks()
        time.sleep(sample_seconds)
        after = ticks()
    except (OSError, ValueError, IndexError):
        return None
    return sum(1 for cpu in cpus if cpu in before and cpu in after and after[cpu][1] > before[cpu][1]
               and (after[cpu][0] - before[cpu][0]) / (after[cpu][1] - before[cpu][1]) >= IDLE_FRACTION)


def default_threads() -> int:
    """The "auto" thread count: one per physical core among the usable CPUs that are idle now, at least one;
    under torchrun, that shared among the processes on this machine ($LOCAL_WORLD_SIZE)."""
    cpus = usable_cpus()
    cores = physical_cores(cpus)
    idle = idle_cpus(cpus)
    share = os.environ.get("LOCAL_WORLD_SIZE", "1").strip()
    share = int(share) if share.isascii() and share.isdigit() and int(share) >= 1 else 1
    return max(1, (cores if idle is None else min(cores, idle)) // share)


def threads_chosen_by_user() -> bool:
    """Whether the thread count in use was chosen by the user (--threads N, $VAEKIT_THREADS or $OMP_NUM_THREADS)
    rather than by the default policy, which may pick another count another time."""
    from_env = os.environ.get(ENV_VAR, "").strip().lower() not in ("", AUTO)  # VAEKIT_THREADS=auto chooses nothing
    return _chosen_by_user or from_env or omp_num_threads() is not None


def omp_num_threads() -> int | None:
    """The thread count $OMP_NUM_THREADS gives torch (its first, outermost level), or None where it is unset or
    not a count: OpenMP then ignores it (libgomp with a note on stderr), and torch uses every core."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isascii() and first.isdigit() and int(first) >= 1 else None


def waits_passively() -> bool:
    """Whether torch's OpenMP threads were told to sleep while they wait (as far as the environment says)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def choose_threads(requested: int | str | None = None) -> int | None:
    """The thread count to use: `requested`, else $VAEKIT_THREADS, else None when $OMP_NUM_THREADS is set
    (torch already follows it), else `default_threads()`."""
    if requested is None and os.environ.get(ENV_VAR, "").strip():
        requested = parse_threads(os.environ[ENV_VAR], f"${ENV_VAR}")
    if requested is None and omp_num_threads() is not None:
        return None
    if requested is None or requested == AUTO:
        return default_threads()
    return requested


def set_threads(threads: int | str | None = None, warn=None) -> int:
    """Make torch compute with `threads` CPU threads (a count, 'auto', or None for $VAEKIT_THREADS or the
    default); returns the count in use. `warn(line)` hears about more threads than usable CPUs, and about an
    $OMP_NUM_THREADS that is not a count."""
    garbage = os.environ.get("OMP_NUM_THREADS")
    if garbage is not None and omp_num_threads() is None:
        del os.environ["OMP_NUM_THREADS"]  # before torch loads OpenMP, which would print its own note and ignore it
        if garbage.strip() and threads is None and not os.environ.get(ENV_VAR, "").strip():
            (warn or _stderr)(f"warning: $OMP_NUM_THREADS={garbage[:40]!r} is not a thread count; vaekit "
                              "chooses as if it were unset (--threads N sets one)")
    import torch

    if isinstance(threads, str):
        threads = parse_threads(threads, "threads")
    elif threads is not None and (type(threads) is not int or not 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"threads: expected a thread count from 1 to {MAX_THREADS} or 'auto', got {threads!r}")
    global _chosen_by_user
    _chosen_by_user = type(threads) is int
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
