"""vaekit.threads: --threads on every compute command, the default policy, and the busy-CPU detector."""

import dataclasses

import numpy as np
import pytest
import torch

from vaekit import threads
from vaekit.cli import COMPUTE_COMMANDS, build_parser, main
from vaekit.errors import ConfigError
from vaekit.runs import load_checkpoint

# The fewest arguments each compute command parses with (files need not exist: parsing only).
MINIMAL_ARGS = {
    "train": [], "eval": ["r"], "sample": ["r", "-o", "s.png"], "reconstruct": ["r", "-o", "s.png"],
    "interpolate": ["r", "--from", "0", "--to", "1", "-o", "s.png"], "traverse": ["r", "-o", "s.png"],
    "manifold": ["r", "-o", "s.png"], "embed": ["r", "x.png", "-o", "e.npz"], "probe": ["r"],
    "plot": ["loss", "r", "-o", "s.png"], "report": ["r", "-o", "r.html"], "score": ["r", "x.png"],
    "calibrate": ["r"], "compress": ["r", "x.png", "-o", "c.vkz"], "decompress": ["r", "c.vkz", "-o", "out"],
    "fit-sampler": ["r", "--sampler", "gmm"], "quality": ["r"], "disentanglement": ["r"],
    "explore": ["r"],
}


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Each test starts without thread settings in the environment and leaves torch's thread count as it was."""
    for name in (threads.ENV_VAR, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_chosen_by_user", False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_every_subcommand_is_a_compute_command_with_minimal_args():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    # `data` is a group of file commands (data prepare converts a dataset to a cache with numpy), not a compute one;
    # `pretrained` lists and copies files
    assert set(subcommands) - {"data", "pretrained"} == set(COMPUTE_COMMANDS) == set(MINIMAL_ARGS)


@pytest.mark.parametrize("command", COMPUTE_COMMANDS)
def test_threads_is_accepted_by_every_compute_command(command):
    parser = build_parser()
    assert parser.parse_args([command, *MINIMAL_ARGS[command]]).threads is None
    assert parser.parse_args([command, *MINIMAL_ARGS[command], "--threads", "3"]).threads == 3
    assert parser.parse_args([command, *MINIMAL_ARGS[command], "--threads", "auto"]).threads == "auto"


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "2.5", "1025", "99999999999999999999", "١", "+2", "1_0"])
def test_bad_thread_counts_are_one_line_and_exit_2(bad, capsys):
    assert main(["sample", "r", "-o", "s.png", f"--threads={bad}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "--threads" in err and "from 1 to 1024" in err and repr(bad) in err


def test_bad_environment_value_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv(threads.ENV_VAR, "lots")
    assert main(["eval", "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "vaekit: error: $VAEKIT_THREADS: expected a thread count from 1 to 1024 or 'auto', got 'lots'"


@pytest.mark.parametrize("count", [1, 2])
def test_main_applies_the_thread_count_before_the_command_runs(count, tmp_path, capsys):
    torch.set_num_threads(3)
    assert main(["eval", str(tmp_path / "missing"), "--threads", str(count)]) == 4  # fails after the setup
    assert torch.get_num_threads() == count


def test_environment_variable_applies_and_the_flag_wins(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    main(["eval", str(tmp_path / "missing")])
    assert torch.get_num_threads() == 2
    main(["eval", str(tmp_path / "missing"), "--threads", "1"])
    assert torch.get_num_threads() == 1


def test_omp_num_threads_is_left_to_torch(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(3)
    main(["eval", str(tmp_path / "missing")])
    assert torch.get_num_threads() == 3  # torch read $OMP_NUM_THREADS at start-up; vaekit does not override it


def test_auto_uses_the_load_aware_default(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    torch.set_num_threads(3)
    main(["eval", str(tmp_path / "missing"), "--threads", "auto"])
    assert torch.get_num_threads() == 1


def test_more_threads_than_cpus_warns_but_applies(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(threads, "usable_cpus", lambda: [0, 1])
    main(["eval", str(tmp_path / "missing"), "--threads", "3"])
    assert torch.get_num_threads() == 3
    err = capsys.readouterr().err
    assert "vaekit: warning: 3 threads on 2 usable CPU(s)" in err


def test_python_api(monkeypatch):
    import vaekit

    assert vaekit.set_threads(1) == 1 and torch.get_num_threads() == 1
    assert vaekit.set_threads("2") == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv(threads.ENV_VAR, "1")
    assert vaekit.set_threads() == 1 and torch.get_num_threads() == 1
    for bad in (0, -3, True, 2.0, "many"):
        with pytest.raises(ConfigError, match="thread count from 1 to 1024"):
            vaekit.set_threads(bad)


def test_parse_threads():
    assert threads.parse_threads(" 4 ") == 4
    assert threads.parse_threads("AUTO") == "auto"
    assert threads.parse_threads("1024") == 1024
    with pytest.raises(ConfigError, match=r"^\$VAEKIT_THREADS: .* got '0'$"):
        threads.parse_threads("0", "$VAEKIT_THREADS")


def test_default_is_one_thread_per_idle_physical_core(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 2)
    for idle, expected in ((2, 2), (1, 1), (0, 1), (5, 2), (None, 2)):  # None: /proc/stat unreadable
        monkeypatch.setattr(threads, "idle_cpus", lambda cpus, idle=idle: idle)
        assert threads.default_threads() == expected
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: 1)
    main(["eval", str(tmp_path / "missing")])
    assert torch.get_num_threads() == 1 and not threads.threads_chosen_by_user()
    main(["eval", str(tmp_path / "missing"), "--threads", "2"])
    assert torch.get_num_threads() == 2 and threads.threads_chosen_by_user()
    monkeypatch.setenv(threads.ENV_VAR, "auto")
    main(["eval", str(tmp_path / "missing")])
    assert torch.get_num_threads() == 1 and not threads.threads_chosen_by_user()
    monkeypatch.setenv(threads.ENV_VAR, "2")
    assert threads.threads_chosen_by_user()
    capsys.readouterr()


def test_resume_goes_on_with_the_thread_count_the_run_was_trained_with(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: 1)  # busy when the run starts: auto picks one thread
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 2)
    data = tmp_path / "small.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hidden", "16", "--epochs", "1", "--out", str(run)]) == 0
    assert load_checkpoint(run)[1]["threads"] == 1
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: 2)  # quiet now: auto would pick two
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "(1 CPU thread(s))" in capsys.readouterr().out and torch.get_num_threads() == 1
    assert load_checkpoint(run)[1]["threads"] == 1
    assert main(["train", "--resume", str(run), "--epochs", "3", "--threads", "2"]) == 0  # the user's choice wins
    assert "(2 CPU thread(s))" in capsys.readouterr().out and load_checkpoint(run)[1]["threads"] == 2


def test_idle_cpus_reads_proc_stat(monkeypatch):
    samples = iter([  # cpu0 stays idle, cpu1 is busy for the whole sample, cpu2 is not ours
        "cpu  1 2 3 4 5 6 7 8\ncpu0 100 0 0 900 0 0 0 0\ncpu1 100 0 0 900 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n",
        "cpu  1 2 3 4 5 6 7 8\ncpu0 101 0 0 909 0 0 0 0\ncpu1 110 0 0 900 0 0 0 0\ncpu2 5 0 0 5 0 0 0 0\n",
    ])
    real_path = threads.Path
    monkeypatch.setattr(threads, "Path", lambda p: type("Stat", (), {"read_text": lambda self: next(samples)})()
                        if p == "/proc/stat" else real_path(p))
    assert threads.idle_cpus([0, 1], sample_seconds=0) == 1
    monkeypatch.setattr(threads, "Path", lambda p: real_path("/nonexistent/stat"))
    assert threads.idle_cpus([0, 1], sample_seconds=0) is None


def test_physical_cores_counts_hyper_threads_once(monkeypatch, tmp_path):
    for cpu, core in enumerate([0, 1, 0, 1]):  # two cores with two hyper-threads each
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    real_path = threads.Path
    monkeypatch.setattr(threads, "Path", lambda p: real_path(str(p).replace("/sys/devices/system/cpu", str(tmp_path))))
    assert threads.physical_cores([0, 1, 2, 3]) == 2
    assert threads.physical_cores([0, 2]) == 1
    assert threads.physical_cores([0, 7]) == 2  # no topology for cpu7: count the CPUs


@pytest.mark.parametrize(("rate", "best", "cpu", "wall", "busy"), [
    (10.0, 0.0, 20.0, 10.0, False),   # first window, two threads fully fed
    (10.0, 12.0, 20.0, 10.0, False),  # a little slower than the best: noise
    (5.9, 12.0, 20.0, 10.0, True),    # just under half the best
    (6.1, 12.0, 20.0, 10.0, False),   # just over
    (2.5, 12.0, 19.0, 10.0, True),    # spinning threads burn CPU, but the rate collapsed
    (10.0, 0.0, 5.5, 10.0, False),    # no quieter window yet; the process got 55% of a CPU
    (10.0, 0.0, 4.5, 10.0, True),     # 45%: even its main thread waits for other jobs
    (2.5, 12.0, 1.0, 1.9, False),     # too short a window to judge
    (0.0, 12.0, 0.0, 10.0, False),
])
def test_cpu_is_busy(rate, best, cpu, wall, busy):
    assert threads.cpu_is_busy(rate, best, cpu, wall) is busy


def test_busy_hint():
    assert threads.busy_hint(2.46, 2, passive=False) == "2.5 batch/s, the CPU is busy: try --threads 1"
    assert threads.busy_hint(2.46, 2, passive=True) == "2.5 batch/s, the CPU is busy: other jobs are using it"
    assert threads.busy_hint(2.46, 1, passive=False) == "2.5 batch/s, the CPU is busy: other jobs are using it"


def test_busy_monitor_judges_windows_against_the_best(monkeypatch):
    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["cpu"])
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monitor = threads.BusyMonitor(threads=2, window_seconds=2.0)

    def run(steps, seconds, cpu_per_wall):
        hint = None
        for _ in range(steps):
            clock["wall"] += seconds / steps
            clock["cpu"] += cpu_per_wall * seconds / steps
            hint = monitor.step()
        return hint

    assert run(40, 2.0, 2.0) is None and monitor.best_rate == pytest.approx(20.0)
    assert run(10, 2.0, 1.9) == "5.0 batch/s, the CPU is busy: try --threads 1"
    assert run(5, 1.0, 1.9) == "5.0 batch/s, the CPU is busy: try --threads 1"  # kept until the window closes
    monitor.start()
    assert monitor.hint is None and monitor.best_rate == pytest.approx(20.0)  # a new epoch keeps the best
    assert run(36, 2.0, 2.0) is None


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_thread_count_changes_the_numbers_only_in_the_last_digits(mnist_train, precision):
    """One and two threads split float32 reductions differently: after 8 steps the losses agree to 1e-7 and the
    weights to 5e-5 (Adam's normalised steps enlarge rounding), bit for bit under bf16 autocast where the CPU
    has it natively (as measured on an AVX512-BF16 Xeon)."""
    from vaekit import RunConfig, Trainer
    from vaekit.acceleration import has_native_bf16
    from vaekit.fit import build_model

    config = RunConfig()
    train = dataclasses.replace(config.train, precision=precision)
    results = []
    for count in (1, 2):
        torch.set_num_threads(count)
        model = build_model(config)
        loss = Trainer(model, mnist_train.images[:1024], train, config.data.binarize).train_epoch()
        results.append((loss, model.state_dict()))
    (loss1, weights1), (loss2, weights2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-7, abs=0)
    for name in weights1:
        torch.testing.assert_close(weights1[name], weights2[name], rtol=1e-3, atol=5e-5)
    if precision == "auto" and has_native_bf16(torch.device("cpu")):
        assert all(torch.equal(weights1[name], weights2[name]) for name in weights1)


@pytest.mark.parametrize("garbage", ["abc", "0", "-3", "1.5"])
def test_an_omp_num_threads_that_is_not_a_count_is_set_aside_with_a_warning(monkeypatch, tmp_path, capsys, garbage):
    """OpenMP ignores such a value (libgomp with a note on stderr) and torch takes every core, the issue #20
    slowdown; vaekit counted it as the user's choice and left torch so."""
    monkeypatch.setenv("OMP_NUM_THREADS", garbage)
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    torch.set_num_threads(3)
    assert main(["eval", str(tmp_path / "missing")]) == 4
    assert torch.get_num_threads() == 1 and not threads.threads_chosen_by_user()
    assert capsys.readouterr().err.splitlines()[0] == (
        f"vaekit: warning: $OMP_NUM_THREADS={garbage!r} is not a thread count; vaekit chooses as if it were unset "
        "(--threads N sets one)")


def test_a_bad_omp_num_threads_is_gone_before_openmp_reads_it(tmp_path):
    """In a fresh process libgomp printed its own 'Invalid value' line before vaekit's one error line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "abc"}
    env.pop(threads.ENV_VAR, None)
    done = subprocess.run([sys.executable, "-m", "vaekit", "eval", str(tmp_path / "missing")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4
    assert [line.split(":")[1] for line in done.stderr.splitlines()] == [" warning", " error"]


def test_valid_omp_num_threads_values_are_the_users_choice(monkeypatch):
    for value, count in (("2", 2), (" 1 ", 1), ("3,2", 3), ("", None), ("x,2", None), ("٣", None)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert threads.omp_num_threads() == count


def test_resume_does_not_take_more_threads_than_this_machine_has(monkeypatch, tmp_path, capsys):
    """A checkpoint from a bigger machine (or doctored to 1024) resumed with that many threads on 2 CPUs."""
    import sys

    fit_module = sys.modules["vaekit.fit"]  # vaekit.fit is also the function
    data = tmp_path / "small.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hidden", "16", "--epochs", "1", "--out", str(run),
                 "--threads", "2"]) == 0
    monkeypatch.setattr(threads, "_chosen_by_user", False)
    monkeypatch.setattr(fit_module, "usable_cpus", lambda: [0])
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out, err = capsys.readouterr()
    assert torch.get_num_threads() == 1 and "(1 CPU thread(s))" in out
    assert (f"vaekit: warning: {run}/checkpoint.safetensors was trained with 2 CPU threads, more than the 1 usable "
            "here; going on with 1, so its numbers may differ in the last digits (--threads 2 keeps them, slowly)"
            in err.splitlines())


def test_the_epoch_line_says_when_the_cpu_was_busy(monkeypatch, tmp_path, capsys):
    data = tmp_path / "small.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8))
    judged = []
    monkeypatch.setattr(threads, "cpu_is_busy", lambda *numbers: judged.append(numbers) or len(judged) == 2)
    assert main(["train", "--data", str(data), "--hidden", "16", "--epochs", "2", "--out", str(tmp_path / "run"),
                 "--threads", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "busy" not in lines[0]
    assert lines[1].endswith("batch/s, the CPU is busy: other jobs are using it)")  # one thread: nothing to shed
    rate, best, cpu, wall = judged[-1]
    assert best == judged[0][0] > 0 and rate > 0 and wall > 0 and cpu >= 0  # judged against the first epoch
