"""Untrusted run directories and absurd arguments (issue 21): each case found, as a regression test.

Every case must end in success or in one line on stderr with a documented exit code (2-6, 130), never
70 (a vaekit bug), a signal, or a run directory left half made.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.cli import main
from vaekit.cli.evaluate import json_ready
from vaekit.config import ModelConfig, RunConfig
from vaekit.errors import ConfigError, RunError
from vaekit.evaluate import importance_weighted_nll
from vaekit.models import check_size, parameter_count
from vaekit.runs import CHECKPOINT_FILE, WEIGHTS_FILE, create_run, load_run

from .tiny_run import copy_run, is_one_error_line, make_tiny_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny"))


def cli(capsys, *args) -> tuple[int, str]:
    """Exit code and stderr of `vaekit ARGS`, run in-process."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(code: int, err: str, expected: int, match: str = "") -> None:
    assert code == expected, err
    assert is_one_error_line(err), err
    assert match in err, err


def doctor_checkpoint(run: Path, change) -> None:
    """Rewrite RUN/checkpoint.safetensors with `change(tensors, metadata)` applied."""
    path = run / CHECKPOINT_FILE
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    metadata = header.get("__metadata__", {})
    tensors = load_file(path)
    change(tensors, metadata)
    save_file(tensors, path, metadata=metadata)


# 1. a doctored checkpoint: never a segfault, never a silently fresh Adam

@pytest.mark.parametrize("name", ["optimizer.0.exp_avg", "optimizer.0.exp_avg_sq", "optimizer.3.exp_avg"])
def test_one_element_optimizer_state_is_refused_not_a_segfault(tiny, tmp_path, capsys, name):
    run = copy_run(tiny, tmp_path / "run")
    doctor_checkpoint(run, lambda t, m: t.__setitem__(name, torch.zeros(1)))
    code, err = cli(capsys, "train", "--resume", run, "--epochs", 2)
    one_line(code, err, 4, f"{name} is torch.float32 (1,), the config gives torch.float32")
    assert not (run / "samples_2.png").exists()


def test_a_checkpoint_without_optimizer_state_is_refused(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path / "run")
    doctor_checkpoint(run, lambda t, m: [t.pop(k) for k in [k for k in t if k.startswith("optimizer.")]])
    code, err = cli(capsys, "train", "--resume", run, "--epochs", 2)
    one_line(code, err, 4, "missing: optimizer.0.exp_avg")


@pytest.mark.parametrize("what", ["nan weight", "inf moment", "negative moment", "step", "dtype", "lr", "betas",
                                  "epoch", "metrics"])
def test_doctored_checkpoint_values_are_refused(tiny, tmp_path, capsys, what):
    run = copy_run(tiny, tmp_path / "run")

    def change(tensors, metadata):
        meta = json.loads(metadata["meta"])
        if what == "nan weight":
            tensors["model.encoder.head.weight"][0, 0] = math.nan
        elif what == "inf moment":
            tensors["optimizer.1.exp_avg"][0] = math.inf
        elif what == "negative moment":
            tensors["optimizer.1.exp_avg_sq"][0] = -1.0
        elif what == "step":
            tensors["optimizer.2.step"] = torch.tensor(3.0)
        elif what == "dtype":
            tensors["optimizer.0.exp_avg"] = tensors["optimizer.0.exp_avg"].double()
        elif what == "lr":
            meta["param_groups"][0]["lr"] = "fast"
        elif what == "betas":
            meta["param_groups"][0]["betas"] = [0.5, 0.5]
        elif what == "epoch":
            meta["epoch"] = 10 ** 12
        elif what == "metrics":
            meta["metrics"] = [{"epoch": "one"}]
        metadata["meta"] = json.dumps(meta)

    doctor_checkpoint(run, change)
    code, err = cli(capsys, "train", "--resume", run, "--epochs", 2)
    one_line(code, err, 4, "checkpoint.safetensors")


def test_an_untouched_checkpoint_still_resumes(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path / "run")
    code, err = cli(capsys, "train", "--resume", run, "--epochs", 2)
    assert code == 0, err
    assert [row["epoch"] for row in load_run(run).metrics] == [1, 2]


# 4. non-finite numbers

def test_an_infinite_weight_is_refused_at_load(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path / "run")
    weights = load_file(run / WEIGHTS_FILE)
    weights["decoder.head.bias"][0] = math.inf
    save_file(weights, run / WEIGHTS_FILE)
    for args in (["calibrate", run], ["eval", run], ["sample", run, "-o", tmp_path / "s.png"]):
        code, err = cli(capsys, *args)
        one_line(code, err, 4, "decoder.head.bias holds 1 non-finite value(s)")
    assert not (run / "threshold.json").exists() and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("threshold", ["NaN", "Infinity", "true", '"130"', "null"])
def test_a_non_finite_or_non_number_threshold_file_is_refused(tiny, tmp_path, capsys, threshold):
    run = copy_run(tiny, tmp_path / "run")
    (run / "threshold.json").write_text(f'{{"threshold": {threshold}, "method": "elbo"}}')
    code, err = cli(capsys, "score", run, "mnist:test", "-o", tmp_path / "s.csv", "--data-dir", REPO / "data")
    one_line(code, err, 4, "threshold.json: unreadable")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_threshold_flag_must_be_finite(tiny, capsys, value):
    code, err = cli(capsys, "score", tiny, "mnist:test", f"--threshold={value}")
    one_line(code, err, 2, "expected a finite number")


def test_eval_json_never_prints_a_bare_nan():
    result = {"test_loss": math.nan, "kl": 1.5, "kl_per_dim": [0.5, math.inf], "active_units": 3}
    text = json.dumps(json_ready(result), allow_nan=False)
    assert json.loads(text) == {"test_loss": None, "kl": 1.5, "kl_per_dim": [0.5, None], "active_units": 3,
                                "non_finite": ["test_loss", "kl_per_dim[1]"]}
    assert "non_finite" not in json_ready({"test_loss": 1.0})


def test_eval_json_is_valid_json(tiny, capsys):
    assert main(["eval", str(tiny), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "non_finite" not in result and result["test_loss"] > 0


# 6. memory bombs: refused before any allocation, or done in bounded memory

@pytest.mark.parametrize("flags, match", [
    (["--hidden", "1000000000"], "model.hidden_dims[0] must be at most 65,536"),
    (["--latent", "1000000000"], "model.latent_dim must be at most 4,096"),
    (["--prior", "vamp", "--prior-components", "1000000000"], "model.prior_components must be at most 10,000"),
    (["--likelihood", "discretized-logistic-mixture", "--likelihood-components", "1000000000"],
     "model.likelihood_components must be at most 256"),
    (["--likelihood", "discretized-logistic-mixture", "--likelihood-components", "256", "--hidden", "2000"],
     "the model would have 1,"),  # 784 x 256 x 3 decoder outputs from 2,000 units
    (["--pixel-groups", "4", "--binarize", "threshold", "--context-channels", "1000000000"],
     "model.context_channels must be at most 1,024"),
    (["--iwae", "1000000000"], "train.iw_samples must be at most 2,048 at batch size 128"),
    (["--hidden", "60000", "60000"], "the model would have 7,297,920,824 parameters"),
    (["--batch-size", "1000000000"], "train.batch_size must be at most 65,536"),
    (["--epochs", "1000000000"], "train.epochs must be at most 1,000,000"),
    (["--seed", str(2 ** 63)], "expected a seed from 0 to 9223372036854775807"),
])
def test_huge_train_flags_are_refused_and_leave_no_run(tmp_path, capsys, flags, match):
    code, err = cli(capsys, "train", *flags, "--out", tmp_path / "run", "--data-dir", REPO / "data")
    one_line(code, err, 2, match)
    assert not (tmp_path / "run").exists()


def test_a_config_with_a_huge_layer_is_refused_before_building_it(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path / "run")
    document = json.loads((run / "config.json").read_text())
    document["model"]["hidden_dims"] = [1000000]
    (run / "config.json").write_text(json.dumps(document))
    code, err = cli(capsys, "eval", run)
    one_line(code, err, 4, "model.hidden_dims[0] must be at most 65,536, got 1,000,000")
    document["model"]["hidden_dims"] = [60000, 60000]
    (run / "config.json").write_text(json.dumps(document))
    code, err = cli(capsys, "eval", run)
    one_line(code, err, 4, "parameters, more than vaekit's bound of 100,000,000")


def test_parameter_count_allocates_nothing_and_is_exact():
    assert parameter_count(ModelConfig()) == sum(p.numel() for p in __import__("vaekit").VAE().parameters())
    with pytest.raises(ConfigError, match="8,696,890,168 parameters"):
        check_size(ModelConfig(hidden_dims=(65536, 65536)))


def test_iw_samples_beyond_the_bound_are_refused_at_once(tiny, capsys):
    code, err = cli(capsys, "eval", tiny, "--iw-samples", 1000000000)
    one_line(code, err, 2, "expected a positive integer up to 1,000,000")


def test_noise_drawn_chunk_by_chunk_gives_the_same_estimate(monkeypatch):
    """Above IW_NOISE_AT_ONCE the noise is drawn a chunk at a time (bounded memory for any k), from the same
    stream: the same estimate as drawing it all at once."""
    from vaekit import evaluate
    from vaekit.fit import build_model

    model = build_model(RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4))).eval()
    x = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    at_once = importance_weighted_nll(model, x, 3000, seed=1, rows=512)
    monkeypatch.setattr(evaluate, "IW_NOISE_AT_ONCE", 100)
    chunked = importance_weighted_nll(model, x, 3000, seed=1, rows=512)
    torch.testing.assert_close(chunked, at_once, atol=1e-9, rtol=0)  # the same stream, reduced in chunks
    assert importance_weighted_nll(model, x, 1, seed=1).shape == (2,)


# 7. bad input that ended in exit 70

@pytest.mark.parametrize("args, code, match", [
    (["sample", "{run}", "-o", "{tmp}/s.png", "--seed", str(2 ** 63)], 2, "expected a seed"),
    (["sample", "{run}", "-o", "{tmp}/s.png", "-n", "1000000000"], 2, "expected a count from 1 to 10,000"),
    (["interpolate", "{run}", "--from", "²", "--to", "1", "-o", "{tmp}/i.png"], 3, "²"),
    (["interpolate", "{run}", "--from", "0", "--to", "x@²", "-o", "{tmp}/i.png"], 2, "expected a test index"),
    (["eval", "{run}", "--device", "cpu:abc"], 2, "invalid device 'cpu:abc'"),
    (["eval", "{run}", "--device", "cuda:99"], 2, "device 'cuda:99'"),
])
def test_odd_arguments_get_one_line(tiny, tmp_path, capsys, args, code, match):
    args = [a.format(run=tiny, tmp=tmp_path) for a in args]
    one_line(*cli(capsys, *args), code, match)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, match", [
    ('{"epoch": 1, "train_loss": "x", "test_loss": 1}\n', "train_loss must be a number"),
    ('{"epoch": 2, "train_loss": 1, "test_loss": 1}\n', "epoch must be 1"),
    ("[1, 2]\n", "must be an object"),
    ("[" * 100000 + "\n", "metrics.jsonl:1: not a JSON line"),
])
def test_malformed_metrics_are_refused(tiny, tmp_path, capsys, content, match):
    run = copy_run(tiny, tmp_path / "run")
    (run / "metrics.jsonl").write_text(content)
    one_line(*cli(capsys, "plot", "loss", run, "-o", tmp_path / "loss.png"), 4, match)


@pytest.mark.parametrize("content", ["[" * 100000, '{"a": ' * 5000, "\xff\xfe", ""])
def test_malformed_config_json_is_refused(tiny, tmp_path, capsys, content):
    run = copy_run(tiny, tmp_path / "run")
    (run / "config.json").write_bytes(content.encode("latin-1"))
    one_line(*cli(capsys, "eval", run), 4, "config.json")


def test_report_and_plot_of_a_run_with_one_held_out_image(tmp_path, capsys):
    run = make_tiny_run(tmp_path, images=10)  # a tenth held out: one image
    one_line(*cli(capsys, "report", run, "-o", tmp_path / "r.html"), 3, "held-out set has 1 image(s)")
    one_line(*cli(capsys, "plot", "latents", run, "-o", tmp_path / "l.png"), 3, "needs at least 2 images")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "l.png").exists()


@pytest.mark.parametrize("label", [-3, 10 ** 9])
def test_probe_with_negative_or_huge_labels(tmp_path, capsys, label):
    from vaekit.representation import dense_labels, probe_accuracy

    train, test = torch.tensor([label, 2, label]), torch.tensor([2])
    assert [t.tolist() for t in dense_labels(train, test)] in ([[0, 1, 0], [1]], [[1, 0, 1], [0]])
    features = torch.tensor([[0.0], [1.0], [0.1]])
    assert probe_accuracy(features, train, torch.tensor([[1.0]]), test) == 1.0


def test_stale_temp_file_in_a_read_only_run(tiny, tmp_path, capsys, monkeypatch):
    run = copy_run(tiny, tmp_path / "run")
    (run / ".model.safetensors.abc.tmp").write_bytes(b"half")

    def read_only(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", read_only)  # as root, chmod would not stop the unlink
    one_line(*cli(capsys, "train", "--resume", run), 4, "cannot clear the stale temp file")


# 10. empty paths and two trainings into one directory

@pytest.mark.parametrize("flag", ["--out", "--data", "--resume"])
def test_empty_paths_are_refused(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    one_line(*cli(capsys, "train", flag, ""), 2, "empty string")
    assert not list(tmp_path.iterdir())


def test_only_one_of_two_simultaneous_creations_of_a_run_wins(tmp_path):
    barrier, outcomes = threading.Barrier(8), []

    def create():
        barrier.wait()
        try:
            create_run(tmp_path / "run", RunConfig())
            outcomes.append("won")
        except RunError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1
    assert all("already holds a run" in o for o in outcomes if o != "won")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_two_train_processes_into_one_new_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vaekit", "train", "--epochs", "1", "--hidden", "16", "--latent", "2",
               "--out", str(tmp_path / "run"), "--data-dir", str(REPO / "data")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in results] == [0, 4], results
    assert results[1][1].count("\n") == 1 and "already holds a run" in results[1][1]


# 9. a signal in the first second, while torch is imported

def caught_signals(pid: int) -> int:
    """The mask of signals process `pid` has handlers for (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to see the handlers go in")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_early_signal_is_one_line_and_exit_130(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "eval", str(tmp_path)], stderr=subprocess.PIPE,
                               text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while not caught_signals(process.pid) >> (signal.SIGTERM - 1) & 1:  # vaekit.__main__ has installed its handler
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.001)
    process.send_signal(sig)  # at once: torch is still being imported
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (130, "vaekit: interrupted\n")


def test_a_signal_after_the_command_ended_prints_no_traceback_from_exit_handlers(tmp_path):
    """torchrun stops a job's surviving processes with SIGTERM after one died: a signal that lands while the
    interpreter runs its exit handlers (torch registers some) must not raise there and print a traceback."""
    script = ("import atexit, os, signal, sys\n"
              "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # runs after vaekit's main returns\n"
              "from vaekit.__main__ import main\n"
              "sys.argv = ['vaekit', 'eval', sys.argv[1]]\n"
              "raise SystemExit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 4 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("bad", ['[true, 1.0]', '[NaN]', '"x"', "[" * 5000, '[1e308, 1e308]', '[-1e16]'])
def test_a_doctored_nll_record_is_estimated_again_not_believed(tmp_path, bad):
    from vaekit.runs import append_nll_block, read_nll_blocks

    record, key = tmp_path / "nll-blocks.jsonl", {"k": 10}
    append_nll_block(record, key, 0, [90.0, 91.0])
    with open(record, "a") as f:
        f.write(f'{{"k": 10, "start": 1000, "nll": {bad}}}\n')
    assert {start: row["nll"] for start, row in read_nll_blocks(record, key).items()} == {0: [90.0, 91.0]}
