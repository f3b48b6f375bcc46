"""The process group: which of the job's processes this is, and the few collectives training and evaluation need.

vaekit runs under PyTorch's own engine: `torchrun --nproc_per_node N -m vaekit train ...` (or `vaekit train
--nproc N`, which starts the same processes through torch's elastic launcher, `launch`) sets RANK, WORLD_SIZE
and LOCAL_RANK; `joined` then opens the process group (gloo on CPU, NCCL on CUDA with one GPU per process,
chosen by LOCAL_RANK) and `world()` answers who this process is. A single process is the world of size 1:
every collective below is then the identity, and training runs today's code path (nanoGPT's pattern: the
loop asks the world object, the I/O runs on the main process only).

The semantics of a distributed run (docs/distributed.md has the whole list):
- `--batch-size` is the global batch. Every process cuts its slice (`World.split`) of each global batch, which
  is cut from the epoch's one shuffled order (vaekit.data.batches.epoch_order, a function of (seed, epoch)).
- A process's noise and binarization are the ones the single process draws for the same images: every
  process draws the global batch's from the (seed, epoch) streams and keeps its slice, so N processes match one
  process at the same global batch up to floating-point summation order.
- Only the main process (rank 0) writes; a process that waits for it learns of its failure (`World.on_main`).
- A process that dies makes the others fail at their next collective (gloo and NCCL see the closed
  connection) or, if it hangs instead, after TIMEOUT; the elastic launcher also stops the rest of the job
  as soon as one process exits with an error.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

from .errors import ConfigError, TrainingError, VaekitError

# A collective that waits longer than this for a process that hangs (rather than dies) fails: longer than the
# main process's per-epoch work (test evaluation, checkpoint, images) on any dataset vaekit trains.
TIMEOUT = datetime.timedelta(minutes=10)
# Evaluation's processes meet only to gather their shares, which may differ by many NLL blocks (a resumed
# evaluation, a large K): the timeout then only bounds a hang.
EVALUATION_TIMEOUT = datetime.timedelta(hours=24)
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun (and `launch`) set for each process
MONITOR_SECONDS = 0.5  # how often `launch` checks its processes: one that fails stops the rest this soon
SHUTDOWN_SECONDS = 10  # after SIGTERM, how long `launch` gives the other processes before SIGKILL

T = TypeVar("T")


class PeerFailed(VaekitError):
    """The main process failed at a step the others wait for (it reports why): raised on the others, quietly."""

    quiet = True  # the CLI prints nothing for it on a process other than the main one

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class World:
    """This process's place among the job's: rank (0 is the main process), size, and its rank on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def is_main(self) -> bool:
        """Whether this is the process that writes (run directory, checkpoints, metrics, images, TensorBoard)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the processes (a new tensor; `tensor` itself in a world of one)."""
        if not self.distributed:
            return tensor
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    def all(self, flag: torch.Tensor) -> torch.Tensor:
        """Whether a 0-dim boolean `flag` is true on every process (every process gets the same answer)."""
        if not self.distributed:
            return flag
        flag = flag.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return flag.bool()

    def min(self, value: torch.Tensor) -> torch.Tensor:
        """The smallest of a 0-dim tensor over the processes."""
        if not self.distributed:
            return value
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return value

    def broadcast(self, value: T) -> T:
        """The main process's `value` (any picklable object), on every process."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[..., T], *args) -> T:
        """`work(*args)` on the main process, its result on every process (the others wait for it: a barrier). If
        it raises, the main process raises it and the others PeerFailed with the same exit code, instead of
        waiting for a collective that never comes."""
        if not self.distributed:
            return work(*args)
        result, error = None, None
        if self.is_main():
            try:
                result = work(*args)
            except BaseException as e:  # noqa: BLE001  (told to the others, then raised as it was)
                error = e
        code = self.broadcast(None if error is None else getattr(error, "exit_code", 130 if isinstance(
            error, KeyboardInterrupt) else 1))
        if error is not None:
            raise error
        if code is not None:
            raise PeerFailed("the main process failed", code)
        return self.broadcast(result)

    def split(self, n: int) -> slice:
        """This process's part of `n` items (a global batch, a set of test images): contiguous parts in rank
        order, as equal as can be, the first `n % size` parts one item longer (a part may be empty when
        n < size)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def blocks(self, n: int, block: int) -> slice:
        """This process's items of `n`, cut in blocks of `block` (batches, NLL blocks) and shared out whole by
        `split`: each block is computed as one process computes it, so the gathered results are the same."""
        mine = self.split(math.ceil(n / block))
        return slice(min(mine.start * block, n), min(mine.stop * block, n))

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """Every process's `part` (split along the first dimension by `split`), concatenated in rank order."""
        if not self.distributed:
            return part
        sizes = [torch.zeros((), dtype=torch.long, device=part.device) for _ in range(self.size)]
        torch.distributed.all_gather(sizes, torch.tensor(len(part), device=part.device))
        longest = max(int(s) for s in sizes)
        padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype, device=part.device)
        padded[:len(part)] = part
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)])


def world() -> World:
    """The current process's World: from the open process group, else the world of one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return World()
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """Whether this process was started by torchrun (or `launch`) as one of several."""
    return all(name in os.environ for name in LAUNCH_ENV) and env_int("WORLD_SIZE") > 1


def env_int(name: str, default: int = 0) -> int:
    """An integer the launcher set in the environment; ConfigError if it is not one."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.strip().isdigit()):
        raise ConfigError(f"${name} must be a non-negative integer (torchrun sets it), got {text!r}")
    return int(text)


def backend_for(device: torch.device) -> str:
    """gloo on CPU, NCCL on CUDA; Apple's MPS has no collective backend, so it runs in one process."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise ConfigError(f"--device {device.type} runs in one process only (torch has no process-group backend "
                      "for it); use --device cpu or cuda with torchrun or --nproc")


def check_nproc(nproc: int, device: torch.device) -> None:
    """ConfigError unless `nproc` processes fit this machine: one per usable CPU, or one per GPU on CUDA (NCCL
    allows no two processes on one GPU); a typo of 1000000 would start a million processes."""
    from .threads import usable_cpus

    backend_for(device)  # a device without a backend (mps) is refused first
    if device.type == "cuda":
        limit, what = torch.cuda.device_count(), "CUDA device(s)"
    else:
        limit, what = len(usable_cpus()), "usable CPU(s)"
    if nproc > limit:
        raise ConfigError(f"--nproc {nproc}: this machine has {limit} {what}, and each process needs its own; "
                          f"give at most {limit} (several machines: torchrun --nnodes, docs/distributed.md)")


@contextmanager
def joined(device: torch.device, timeout: datetime.timedelta = TIMEOUT):
    """Open the process group for this launched process (a no-op otherwise), close it when the block ends.
    `timeout`: how long a collective waits for a process that does not come."""
    if not launched() or torch.distributed.is_initialized():
        yield world()
        return
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, timeout=timeout)
    try:
        yield world()
        # leave together: a process that tears its group down while another still works (the main one writing
        # loss.png) was seen to abort in gloo's teardown ("terminate called without an active exception")
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def is_peer_failure(error: BaseException) -> bool:
    """Whether an exception from a collective means another process of the job died or timed out."""
    if isinstance(error, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                  "Timed out", "timed out", "NCCL", "gloo"))


def peer_failure(error: BaseException, what: str) -> TrainingError:
    """The one-line error for a collective that failed because another process stopped."""
    text = str(error).lower()
    why = ("its connection closed" if "connection" in text or "broken pipe" in text
           else "a collective timed out" if "timed out" in text or "timeout" in text else type(error).__name__)
    return TrainingError(f"another process of the job stopped {what} ({why})")


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m vaekit *argv` as `nproc` processes on this machine through torch's elastic launcher, as
    `torchrun --standalone --nproc_per_node nproc -m vaekit *argv` does; returns the job's exit code.

    A process that fails stops the others within MONITOR_SECONDS (they get SIGTERM, then SIGKILL after
    SHUTDOWN_SECONDS). Each process prints its own one-line error; a process killed by a signal is named here.
    """
    import logging
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:  # the processes say what failed
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=MONITOR_SECONDS, shutdown_timeout=SHUTDOWN_SECONDS)
    try:
        elastic_launch(config, sys.executable)("-m", "vaekit", *argv)
    except SignalException:  # SIGTERM or Ctrl-C: the processes were stopped too, and the main one said so
        return 130
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode  # the process printed its error
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        raise TrainingError(f"process {rank} of {nproc} was killed by {name}, so the job stopped; a run keeps its "
                            "last finished epoch (continue with --resume RUN and the same --nproc)") from None
    return 0
