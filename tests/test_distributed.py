"""vaekit under torch.distributed (issue #23): two CPU processes on gloo, launched as a user launches them
(`vaekit train --nproc 2`, torchrun, two torchrun "nodes" on loopback).

Every launch starts three Pythons on a shared 2-core machine, so the tests share runs (module fixtures) and
keep them tiny. Faults are injected by tests/faults/sitecustomize.py, which Python imports at start-up in
every process of a job when that folder leads PYTHONPATH; vaekit itself reads no test variable.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from vaekit import load_split
from vaekit.cli import main
from vaekit.distributed import World

from .conftest import DATA_DIR, SESSION_THREADS

SRC = Path(__file__).resolve().parents[1] / "src"
FAULTS = Path(__file__).resolve().parent / "faults"
N_IMAGES = 2200  # 1,210 held out (--validation 0.55): two of the NLL's 1,000-image blocks
TRAIN = ["--hidden", "32", "--latent", "4", "--batch-size", "128", "--validation", "0.55"]


def vaekit(*args: str, cwd: Path, fault: str | None = None, launcher: tuple[str, ...] = ("-m", "vaekit"),
           timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run `python <launcher> args` in a fresh environment (PYTHONPATH to this checkout, the session's threads)."""
    path = [str(SRC)] + ([str(FAULTS)] if fault else [])
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # the thread count the tests' own in-process commands use (conftest), even in a module fixture, which runs
    # before that is set: a 1,000-image batch's sums depend on it, and results are compared across runs
    environment.update(PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1", VAEKIT_THREADS=str(SESSION_THREADS),
                       **env,
                       **({"VAEKIT_TEST_FAULT": fault} if fault else {}))
    return subprocess.run([sys.executable, *launcher, *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def torchrun(*args: str) -> tuple[str, ...]:
    return ("-m", "torch.distributed.run", *args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mnist = load_split("mnist", "test", DATA_DIR)
    np.savez(folder / "small.npz", images=mnist.images[:N_IMAGES].squeeze(1).numpy(),
             labels=mnist.labels[:N_IMAGES].numpy())
    return folder / "small.npz"


@pytest.fixture(scope="module")
def two_process_run(data) -> Path:
    """2 epochs in 2 processes at global batch 128 (`vaekit train --nproc 2`)."""
    result = vaekit("train", "--data", str(data), *TRAIN, "--epochs", "2", "--out", "run2", "--nproc", "2",
                    cwd=data.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("epoch ") == 2  # only the main process logs
    return data.parent / "run2"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def vaekit_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vaekit: ") and "warning" not in line]


def test_split_cuts_every_batch_in_rank_order():
    for n in (0, 1, 3, 64, 127, 128):
        for size in (1, 2, 3, 5):
            parts = [World(rank, size).split(n) for rank in range(size)]
            assert [i for part in parts for i in range(part.start, part.stop)] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_two_processes_match_one_at_the_same_global_batch(two_process_run, data, tmp_path, capsys):
    """The same seed gives both the same per-epoch order of images (epoch_order, cut into the same global batches)
    and each image the same noise. What differs is the order of floating-point sums: each process sums its 64
    images' gradients and DDP adds the two halves, where one process sums 128 at once (and this CPU's bf16
    autocast rounds each half's products before the halves are added). So the numbers are not bit for bit
    equal: when written, epoch 1's test loss differed by 7e-7 relative (519.67191 against 519.67229), and after
    a second epoch at the recipe's peak learning rate by 1e-4 (358.678 against 358.712)."""
    assert main(["train", "--data", str(data), *TRAIN, "--epochs", "2", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    assert json.loads((two_process_run / "config.json").read_text()) == json.loads(
        (tmp_path / "one" / "config.json").read_text())  # global batch 128, the same schedule
    one, two = metrics(tmp_path / "one"), metrics(two_process_run)
    for name in ("train_loss", "test_loss", "test_reconstruction"):
        assert two[0][name] == pytest.approx(one[0][name], rel=1e-4), name
    assert two[0]["test_kl"] == pytest.approx(one[0]["test_kl"], abs=1e-4 * one[0]["test_loss"])  # a small term
    assert two[0]["test_loss"] != one[0]["test_loss"]  # if they become equal, the docstring's reason is gone
    assert two[1]["test_loss"] == pytest.approx(one[1]["test_loss"], rel=1e-3)  # rounding grows as training goes


def test_a_killed_process_stops_the_job_and_resume_ends_bitwise_equal(two_process_run, data):
    stamp = data.parent / "killed-at"
    began = time.time()
    killed = vaekit("train", "--data", str(data), *TRAIN, "--epochs", "2", "--out", "killed", "--nproc", "2",
                    cwd=data.parent, fault="kill:1:2:3", VAEKIT_TEST_FAULT_TIME=str(stamp))
    ended = time.time()
    assert killed.returncode != 0
    assert ended - float(stamp.read_text()) < 60, ended - began
    assert "killed by SIGKILL" in killed.stderr and "Traceback" not in killed.stderr
    run = data.parent / "killed"
    assert [row["epoch"] for row in metrics(run)] == [1]  # the checkpoint of epoch 1 stays
    resumed = vaekit("train", "--resume", "killed", "--nproc", "2", cwd=data.parent)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = load_file(run / "checkpoint.safetensors"), load_file(two_process_run / "checkpoint.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(ours[name].equal(theirs[name]) for name in ours)  # weights and Adam's moments, bit for bit
    assert metrics(run)[-1]["test_loss"] == metrics(two_process_run)[-1]["test_loss"]


def test_a_nan_on_one_process_stops_both_with_one_line(data):
    result = vaekit("train", "--data", str(data), *TRAIN, "--epochs", "1", "--out", "nan", "--nproc", "2",
                    cwd=data.parent, fault="nan:1:1:2")
    assert result.returncode == 6
    lines = vaekit_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: training stopped: the loss became non-finite "
                                                   "at epoch 1, step 2 of 8"), result.stderr
    assert "Traceback" not in result.stderr
    advice = lines[0].split("start again with new settings: ")[1]  # run by hand: it restarts the run under DDP
    assert advice.startswith("vaekit train --resume nan --lr ") and advice.endswith(" --nproc 2")


def test_vamp_prior_and_pixel_groups_train_under_ddp_on_two_nodes(data):
    """Every parameter gets a gradient at every step through the loss (the VampPrior's pseudo-inputs outside the
    DDP forward, the pixel context's weights): no "Expected to have finished reduction", even at a step where
    one process has no image (it computes one with weight 0). Launched as two
    single-process torchrun "nodes" on loopback with the c10d rendezvous a multi-machine job uses; on one host
    both would take the rendezvous store's address for their own, so is_host says which one serves it."""
    with socket.socket() as probe:  # a port free now (the host node binds it a moment later)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [subprocess.Popen(
        [sys.executable, *torchrun("--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                                   "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "vamp",
                                   "--rdzv-conf", f"is_host={int(node == 0)}", "-m", "vaekit"),
         "train", "--data", str(data), *TRAIN, "--epochs", "1", "--prior", "vamp", "--prior-components", "8",
         "--pixel-groups", "4", "--binarize", "threshold", "--out", "vamp",
         "--batch-size", "989"],  # 990 training images: the last batch's 1 image leaves process 1 with none
        cwd=data.parent, env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in range(2)]
    try:
        outputs = [node.communicate(timeout=120) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "reduction" not in "".join(err for _, err in outputs)
    assert sum(out.count("epoch   1/1") for out, _ in outputs) == 1  # one process logs
    assert metrics(data.parent / "vamp")[0]["epoch"] == 1


def test_distributed_nll_equals_one_process(two_process_run, tmp_path, capsys):
    """Each 1,000-image block is seeded by its first image: the two processes' blocks are the single process's."""
    single = shutil.copytree(two_process_run, tmp_path / "single")  # each evaluation records its own blocks
    shared = shutil.copytree(two_process_run, tmp_path / "shared")
    assert main(["eval", str(single), "--iw-samples", "8", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    result = vaekit("eval", str(shared), "--iw-samples", "8", "--json", cwd=tmp_path,
                    launcher=torchrun("--standalone", "--nproc_per_node", "2", "-m", "vaekit"))
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)  # one JSON line: the main process prints
    assert got["nll"] == expected["nll"] and got["test_loss"] == expected["test_loss"]
    starts = sorted(json.loads(line)["start"] for line in (shared / "nll-blocks.jsonl").read_text().splitlines())
    assert starts == [0, 1000]  # one block each, both recorded


@pytest.mark.parametrize("command", [
    ("score", "--method", "iwae", "--iw-samples", "4", "-o", "scores.csv"),  # 5 chunks of 512 images, 3 + 2
    ("embed", "-o", "codes.npz"),  # 3 batches of 1,000 images, 2 + 1
])
def test_distributed_score_and_embed_equal_one_process(two_process_run, data, tmp_path, capsys, command):
    name, *options = command
    output = options[-1]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert main([name, str(two_process_run), str(data), *options[:-1], str(one / output)]) == 0
    capsys.readouterr()
    result = vaekit(name, str(two_process_run), str(data), *options[:-1], str(two / output), cwd=tmp_path,
                    launcher=torchrun("--standalone", "--nproc_per_node", "2", "-m", "vaekit"))
    assert result.returncode == 0, result.stderr
    for written in sorted(one.iterdir()):  # scores.csv; codes.npz and codes.csv
        assert (two / written.name).read_bytes() == written.read_bytes(), written.name


def under_torchrun(monkeypatch, rank: int = 1, size: int = 2) -> None:
    """This process's environment as torchrun sets it (no process group is opened by the refusals below)."""
    for name, value in (("RANK", rank), ("WORLD_SIZE", size), ("LOCAL_RANK", rank), ("LOCAL_WORLD_SIZE", size)):
        monkeypatch.setenv(name, str(value))


def test_one_process_commands_a_stray_nproc_and_too_many_processes_are_refused_in_one_line(monkeypatch, capsys):
    under_torchrun(monkeypatch, rank=0)
    assert main(["sample", "some-run", "-o", "x.png"]) == 2
    assert capsys.readouterr().err == ("vaekit: error: vaekit sample runs in one process; under torchrun only "
                                       "train, eval, score, embed, compress, decompress share their work between "
                                       "processes\n")
    assert main(["train", "--nproc", "4", "--out", "x"]) == 2
    assert "--nproc 4 starts its own processes; under torchrun drop it" in capsys.readouterr().err
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert main(["train", "--nproc", str(10 ** 12), "--device", "cpu", "--out", "x"]) == 2  # a typo: no launch
    assert capsys.readouterr().err.startswith(f"vaekit: error: --nproc {10 ** 12}: this machine has ")
    under_torchrun(monkeypatch, rank=1)  # another process than the main one names itself
    assert main(["sample", "some-run", "-o", "x.png"]) == 2
    assert capsys.readouterr().err.startswith("vaekit: error (process 1 of 2): vaekit sample runs in one process")


def test_under_torchrun_cuda_is_the_local_rank_gpu_and_auto_threads_are_shared(monkeypatch):
    from vaekit import devices, threads

    under_torchrun(monkeypatch, rank=3, size=4)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 2)
    assert devices.one_per_process(devices.torch.device("cuda")) == devices.torch.device("cuda", 1)  # 3 mod 2
    assert devices.one_per_process(devices.torch.device("cuda", 0)) == devices.torch.device("cuda", 0)  # as named
    assert devices.one_per_process(devices.torch.device("cpu")) == devices.torch.device("cpu")
    monkeypatch.setattr(threads, "usable_cpus", lambda: list(range(8)))
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 8)
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: 8)
    assert threads.default_threads() == 2  # 8 idle cores shared by the 4 processes on this machine
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: 3)
    assert threads.default_threads() == 1


def test_blocks_share_whole_blocks_in_order():
    for n, block, size in ((2200, 1000, 2), (2200, 512, 2), (999, 1000, 2), (5000, 1000, 3), (0, 10, 2)):
        parts = [World(rank, size).blocks(n, block) for rank in range(size)]
        assert [i for part in parts for i in range(part.start, part.stop)] == list(range(n))
        assert all(part.start % block == 0 for part in parts if part.start < n)
    assert World(0, 2).blocks(2200, 512) == slice(0, 1536) and World(1, 2).blocks(2200, 512) == slice(1536, 2200)


def test_a_failure_of_the_main_process_stops_the_others_with_its_exit_code(two_process_run, data):
    """The main process creates the run directory; the others wait for it and learn that it failed."""
    result = vaekit("train", "--data", str(data), *TRAIN, "--out", two_process_run.name, "--nproc", "2",
                    cwd=data.parent)
    assert result.returncode == 4
    assert vaekit_lines(result.stderr) == [f"vaekit: error: {two_process_run.name} already holds a run; choose "
                                           f"another --out, or continue it with --resume {two_process_run.name}"]


def test_each_process_takes_its_slice_of_the_single_process_batches_and_noise(mnist_test):
    """In-process, with a process group of one that the Trainer is told is a world of two (its collectives then
    reduce over one process): rank 0 and rank 1 see, step by step, the two halves of the single process's
    batch, with the same dynamic binarization and noise; and the order changes from epoch to epoch."""
    import torch

    from vaekit.config import ModelConfig, TrainConfig
    from vaekit.models import build_model
    from vaekit.train import Trainer

    images = mnist_test.images[:300]
    config = TrainConfig(epochs=2, batch_size=64)
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        seen = {}
        for rank, size in ((0, 1), (0, 2), (1, 2)):
            torch.manual_seed(0)
            trainer = Trainer(build_model(ModelConfig(hidden_dims=(16,), latent_dim=2)), images, config, "dynamic",
                              World(rank, size))
            calls, loss = [], trainer._batch_loss
            trainer._batch_loss = lambda x, eps, w, calls=calls, loss=loss: calls.append((x, eps)) or loss(x, eps, w)
            trainer.train_epoch()
            trainer.train_epoch()
            seen[rank, size] = calls
    finally:
        torch.distributed.destroy_process_group()
    assert len(seen[0, 1]) == len(seen[0, 2]) == len(seen[1, 2]) == 2 * 5  # global steps: 5 per epoch
    for (x, eps), (x0, eps0), (x1, eps1) in zip(seen[0, 1], seen[0, 2], seen[1, 2]):
        assert len(x0) == len(x1) or len(x0) == len(x1) + 1
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([eps0, eps1]), eps)
    assert not torch.equal(seen[0, 1][0][0], seen[0, 1][5][0])  # epoch 2 has another order
