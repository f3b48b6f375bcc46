"""Fuzzing what vaekit reads from a run directory, and every subcommand's numeric flags (issue 21).

Mutations (hypothesis) of config.json, threshold.json, checkpoint metadata and tensors, model weights and
metrics.jsonl, each followed by the command that reads the file; and every numeric flag of every
subcommand (found by walking the parser) given 0, negative, huge, nan, inf, 2**63, non-ASCII digits.
All run in-process through vaekit.cli.main, on a tiny run trained once for the module.

The property, per case: the command succeeds with a sound result, or exits with a documented code
(2 to 6) and one line on stderr; never 70, never a signal, never past a time bound, and a failed
command leaves no output file behind. The outcome classes are counted and printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import signal
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from vaekit.cli import args as cli_args
from vaekit.cli import build_parser, main
from vaekit.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, THRESHOLD_FILE, WEIGHTS_FILE

from .tiny_run import copy_run, is_one_error_line, make_tiny_run

DOCUMENTED = {0, 2, 3, 4, 5, 6}
CASE_SECONDS = 60  # a case running longer counts as a hang
EXAMPLES = 40  # hypothesis examples per mutated file
OUTCOMES: Counter = Counter()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp("fuzz")
    run = make_tiny_run(directory)
    assert main(["calibrate", str(run)]) == 0  # a real threshold.json to mutate
    yield run
    report(request)


def report(request) -> None:
    """Print the counts of cases and outcome classes (for the lead's note), and check the memory bound."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"fuzz_runs: {sum(OUTCOMES.values())} cases; peak RSS of the test process {peak_mb:.0f} MB"]
    for suite in sorted({suite for suite, _ in OUTCOMES}):
        classes = {outcome: n for (s, outcome), n in sorted(OUTCOMES.items()) if s == suite}
        lines.append(f"  {suite}: {sum(classes.values())} cases: "
                     + ", ".join(f"{outcome} x{n}" for outcome, n in classes.items()))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))
    assert peak_mb < 2048, lines[0]


class Hang(Exception):
    pass


def run_case(suite: str, args: list, capsys, outputs: tuple[Path, ...] = ()) -> tuple[int, str, str]:
    """Run `vaekit ARGS` in-process; check the property; count the outcome. Returns (code, stdout, stderr)."""

    def alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        code = main([str(a) for a in args])
    except Hang:
        code = "hang"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    OUTCOMES[suite, f"exit {code}"] += 1
    shown = " ".join(str(a)[:40] for a in args)
    assert code in DOCUMENTED, f"{shown}: exit {code}: {err}"
    if code != 0:
        assert is_one_error_line(err), f"{shown}: not one error line: {err!r}"
        for path in outputs:
            assert not path.exists(), f"{shown}: exit {code} but {path} was written"
    return code, out, err


# ---- mutations of JSON documents -------------------------------------------------------------------------

SPECIAL = [0, -1, 10 ** 6, 10 ** 9, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 1e308, math.nan, math.inf, -math.inf, True,
           False, None, "", "x", "nan", "²", [], {}, [10 ** 6], [[[[[]]]]], {"a": {"b": {}}}]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(SPECIAL),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths(document, prefix=()):
    """Every path into a JSON document (keys and indices), the root included."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(document, list):
        for i, value in enumerate(document):
            yield from paths(value, (*prefix, i))


def mutate(document, data):
    """One mutation of a JSON document, drawn by hypothesis: a value replaced, a key deleted or added, or
    a value wrapped in deep nesting. Returns the new document (the old one is left alone)."""
    document = json.loads(json.dumps(document))
    path = data.draw(st.sampled_from(list(paths(document))))
    op = data.draw(st.sampled_from(["replace", "replace", "similar", "delete", "add", "nest"]))
    if not path:
        return data.draw(json_values) if op == "replace" else [document]
    *parent_path, last = path
    parent = document
    for key in parent_path:
        parent = parent[key]
    if op == "replace":
        parent[last] = data.draw(json_values)
    elif op == "similar":  # a value of the same type, often a valid one: the command should then work
        value = parent[last]
        if isinstance(value, bool):
            parent[last] = not value
        elif isinstance(value, int):
            parent[last] = data.draw(st.integers(0, 2 * abs(value) + 1))
        elif isinstance(value, float):
            parent[last] = data.draw(st.floats(0, 2 * abs(value) + 1))
        elif isinstance(value, str):
            parent[last] = data.draw(st.sampled_from([value.upper(), value[:-1], value + "x", ""]))
    elif op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=6))] = data.draw(json_values)
    elif op == "add":
        parent.append(data.draw(json_values))
    else:
        value = parent[last]
        for _ in range(data.draw(st.integers(1, 3000))):
            value = [value]
        parent[last] = value
    return document


def dumps(document) -> str:
    """JSON text of a document, or a deeply nested array where it is nested too deeply for json.dumps."""
    try:
        return json.dumps(document)
    except RecursionError:
        return "[" * 5000 + "]" * 5000


def write_json(path: Path, document) -> None:
    path.write_text(dumps(document))


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_mutated_config_json(tiny, capsys, data):
    original = json.loads((tiny / CONFIG_FILE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(tiny, Path(tmp) / "run")
        write_json(run / CONFIG_FILE, mutate(original, data))
        code, out, _ = run_case("config.json", ["eval", run, "--json"], capsys)
        if code == 0:
            assert math.isfinite(json.loads(out)["test_loss"])


@FUZZ
@given(data=st.data())
def test_mutated_threshold_json(tiny, capsys, data):
    original = json.loads((tiny / THRESHOLD_FILE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(tiny, Path(tmp) / "run")
        document = mutate(original, data)
        write_json(run / THRESHOLD_FILE, document)
        out = Path(tmp) / "scores.csv"
        code, _, _ = run_case("threshold.json", ["score", run, tiny.parent / "small.npz", "-o", out], capsys, (out,))
        if code == 0:  # the threshold used was a finite number, and the flags follow it
            threshold = document["threshold"]
            rows = out.read_text().splitlines()[1:]
            assert len(rows) == 300 and math.isfinite(threshold)
            assert all(row.split(",")[-1] == str(int(float(row.split(",")[-2]) > threshold)) for row in rows)


@FUZZ
@given(data=st.data())
def test_mutated_metrics_jsonl(tiny, capsys, data):
    original = [json.loads(line) for line in (tiny / METRICS_FILE).read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(tiny, Path(tmp) / "run")
        how = data.draw(st.sampled_from(["json", "json", "truncate", "bytes"]))
        if how == "json":
            rows = mutate(original, data)
            text = "".join(dumps(row) + "\n" for row in rows) if isinstance(rows, list) else dumps(rows)
            (run / METRICS_FILE).write_text(text)
        elif how == "truncate":
            raw = (run / METRICS_FILE).read_bytes()
            (run / METRICS_FILE).write_bytes(raw[:data.draw(st.integers(0, len(raw)))])
        else:
            (run / METRICS_FILE).write_bytes(data.draw(st.binary(max_size=64)))
        out = Path(tmp) / "loss.png"
        what = data.draw(st.sampled_from(["loss", "kl"]))
        run_case("metrics.jsonl", ["plot", what, run, "-o", out], capsys, (out,))


TENSOR_OPS = ["delete", "shape", "dtype", "nan", "inf", "huge", "empty", "extra", "scalar"]


def mutate_tensors(tensors: dict, data) -> None:
    name = data.draw(st.sampled_from(sorted(tensors)))
    op = data.draw(st.sampled_from(TENSOR_OPS))
    t = tensors[name]
    if op == "delete":
        del tensors[name]
    elif op == "shape":
        tensors[name] = torch.zeros(data.draw(st.lists(st.integers(0, 5), max_size=3)))
    elif op == "dtype":
        tensors[name] = t.to(data.draw(st.sampled_from([torch.float64, torch.float16, torch.int64, torch.bool])))
    elif op in ("nan", "inf", "huge"):
        t = t.clone()
        t.view(-1)[0] = {"nan": math.nan, "inf": -math.inf, "huge": 3e38}[op]
        tensors[name] = t
    elif op == "empty":
        tensors[name] = torch.zeros(0)
    elif op == "extra":
        tensors[data.draw(st.text(min_size=1, max_size=12))] = torch.zeros(2)
    else:
        tensors[name] = torch.tensor(1.0)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return load_file(path), header.get("__metadata__", {})


@FUZZ
@given(data=st.data())
def test_mutated_checkpoint(tiny, capsys, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(tiny, Path(tmp) / "run")
        tensors, metadata = read_safetensors(run / CHECKPOINT_FILE)
        part = data.draw(st.sampled_from(["tensors", "tensors", "meta", "meta", "metadata", "header bytes"]))
        if part == "tensors":
            mutate_tensors(tensors, data)
        elif part == "meta":
            metadata["meta"] = dumps(mutate(json.loads(metadata["meta"]), data))
        elif part == "metadata":
            key = data.draw(st.sampled_from(sorted(metadata)))
            metadata[key] = data.draw(st.sampled_from(["", "x", "99", "-1", "1e9", "NaN", "[" * 3000, "{}", "١٢"]))
        save_file(tensors, run / CHECKPOINT_FILE, metadata=metadata)
        if part == "header bytes":
            raw = bytearray((run / CHECKPOINT_FILE).read_bytes())
            header_end = 8 + int.from_bytes(raw[:8], "little")
            for _ in range(data.draw(st.integers(1, 4))):
                raw[data.draw(st.integers(0, header_end - 1))] ^= 1 << data.draw(st.integers(0, 7))
            (run / CHECKPOINT_FILE).write_bytes(bytes(raw))
        code, _, _ = run_case("checkpoint", ["train", "--resume", run, "--epochs", 2], capsys,
                              (run / "samples_2.png",))
        if code == 0:  # resumed: the weights trained on are finite and of the config's shapes
            weights = load_file(run / WEIGHTS_FILE)
            assert all(bool(torch.isfinite(t).all()) for t in weights.values())
            assert [json.loads(line)["epoch"] for line in (run / METRICS_FILE).read_text().splitlines()] == [1, 2]


@FUZZ
@given(data=st.data())
def test_mutated_weights(tiny, capsys, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(tiny, Path(tmp) / "run")
        tensors, metadata = read_safetensors(run / WEIGHTS_FILE)
        mutate_tensors(tensors, data)
        save_file(tensors, run / WEIGHTS_FILE, metadata=metadata)
        out = Path(tmp) / "s.png"
        command = data.draw(st.sampled_from([["eval", run, "--json"], ["sample", run, "-o", out]]))
        code, stdout, _ = run_case("model.safetensors", command, capsys, (out,))
        if code == 0 and command[0] == "eval":
            assert math.isfinite(json.loads(stdout)["test_loss"])


# ---- the argument fuzzer ---------------------------------------------------------------------------------

VALUES = ["0", "-1", "-0", "+5", "١٢", "²", "1e3", "0x10", "nan", "inf", "-inf", "1e400", str(10 ** 12), str(2 ** 63),
          "9" * 5000, ""]
NUMERIC_TYPES = {int, float, cli_args.positive_int, cli_args.non_negative_int, cli_args.positive_float,
                 cli_args.non_negative_float, cli_args.unit_fraction,
                 *(getattr(cli_args, name) for name in ("seed_int", "iw_count", "picture_count", "finite_float",
                                                        "picture_scale", "threads_value"))}
INDEX_FLAGS = {"interpolate": ("--from", "--to"), "traverse": ("--image",)}  # text flags that take a number too


def base_commands(run: Path, data: Path, tmp: Path) -> dict[str, tuple[list, tuple[Path, ...]]]:
    """A working command line per subcommand (before the fuzzed flag), and the outputs it writes."""
    o = {name: tmp / name for name in ("s.png", "r.png", "i.png", "t.png", "m.png", "s.csv", "c.vkz", "p.png",
                                       "r.html", "e.npz", "d.npy", "run")}
    return {
        "train": (["train", "--data", data, "--hidden", "8", "--latent", "2", "--epochs", "1", "--out", o["run"]],
                  (o["run"],)),
        "eval": (["eval", run, "--json"], ()),
        "sample": (["sample", run, "-o", o["s.png"]], (o["s.png"],)),
        "reconstruct": (["reconstruct", run, "-o", o["r.png"]], (o["r.png"],)),
        "interpolate": (["interpolate", run, "--from", "0", "--to", "1", "-o", o["i.png"]], (o["i.png"],)),
        "embed": (["embed", run, data, "-o", o["e.npz"]], (o["e.npz"],)),
        "probe": (["probe", run, "--json", "--no-pixels"], ()),
        "traverse": (["traverse", run, "-o", o["t.png"]], (o["t.png"],)),
        "manifold": (["manifold", run, "-o", o["m.png"]], (o["m.png"],)),
        "score": (["score", run, data, "-o", o["s.csv"]], (o["s.csv"],)),
        "calibrate": (["calibrate", run], ()),
        "compress": (["compress", run, data, "-o", o["c.vkz"]], (o["c.vkz"],)),
        "decompress": (["decompress", run, o["c.vkz"], "-o", o["d.npy"]], (o["d.npy"],)),
        "plot": (["plot", "latents", run, "-o", o["p.png"]], (o["p.png"],)),
        "report": (["report", run, "-o", o["r.html"]], (o["r.html"],)),
        "fit-sampler": (["fit-sampler", run, "--sampler", "gmm"], ()),  # writes into the run (own_run)
        "quality": (["quality", run, "--classifier", "mnist", "-n", "100", "--json"], ()),
        "data": (["data", "prepare", data, "--out", o["run"]], (o["run"],)),
        "pretrained": (["pretrained", "copy", "mnist", o["run"]], (o["run"],)),
        "disentanglement": (["disentanglement", run, "--samples", "200", "--json"], ()),
        "explore": (["explore", run, "--port", "0"], ()),  # serves nothing here: test_numeric_flag stubs serve
    }


def numeric_flags() -> list[tuple[str, str]]:
    """(subcommand, flag) for every option of every subcommand whose value is a number."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [(name, action.option_strings[-1]) for name, sub in subparsers.choices.items() for action in sub._actions
             if action.option_strings and action.type in NUMERIC_TYPES]
    flags += [(name, flag) for name, extra in INDEX_FLAGS.items() for flag in extra]
    return sorted(set(flags))


def test_every_subcommand_has_a_base_command():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) <= set(base_commands(Path("r"), Path("d"), Path("t")))
    assert len(numeric_flags()) >= 30


@pytest.fixture(scope="module")
def own_run(tiny, tmp_path_factory):
    """A copy of the tiny run for the commands that write into it (calibrate, a finished run's resume)."""
    return copy_run(tiny, tmp_path_factory.mktemp("own") / "run")


@pytest.mark.parametrize("command, flag", numeric_flags())
def test_numeric_flag(tiny, own_run, capsys, monkeypatch, command, flag):
    from vaekit.cli import explore

    monkeypatch.setattr(explore, "serve", lambda app, listener: None)  # explore binds, prints its URL and returns
    for value in VALUES:
        with tempfile.TemporaryDirectory() as tmp:
            run = own_run if command in ("calibrate", "fit-sampler") else tiny
            base, outputs = base_commands(run, tiny.parent / "small.npz", Path(tmp))[command]
            if command == "decompress":
                assert main(["compress", str(run), str(tiny.parent / "small.npz"), "-o", str(base[2])]) in DOCUMENTED
                capsys.readouterr()
            args = [*base, f"{flag}={value}"] if flag.startswith("--") else [*base, flag, value]
            code, out, _ = run_case(f"args {command}", args, capsys, outputs)
            if code == 0 and "--json" in base:
                json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))


# ---- red team: flags that are each in range but together ask too much -------------------------------------

@pytest.mark.parametrize("command", [["sample", "-n", "10000"], ["manifold", "--side", "100"],
                                     ["traverse", "--steps", "1000"],
                                     ["interpolate", "--from", "0", "--to", "1", "--steps", "10000", "--gif"]])
def test_a_picture_too_large_at_its_scale_is_refused_before_it_is_drawn(tiny, capsys, tmp_path, command):
    """Each of these took 10-22 GB RSS (manifold was killed) before the picture's pixels were bounded."""
    output = tmp_path / ("p.gif" if "--gif" in command else "p.png")
    args = [command[0], tiny, *[a for a in command[1:] if a != "--gif"], "--scale", "32", "-o", output]
    code, _, err = run_case("red team", args, capsys, (output,))
    assert code == 2 and "pixels; at most 64,000,000" in err


@pytest.mark.parametrize("command", [["eval", "LONG"], ["score", "RUN", "LONG"], ["calibrate", "RUN", "LONG"],
                                     ["train", "--data", "LONG", "--out", "OUT"], ["train", "--out", "LONG/x"],
                                     ["interpolate", "RUN", "--from", "LONG@y", "--to", "1", "-o", "OUT"]])
def test_a_file_name_too_long_for_the_system_is_a_bad_argument(tiny, capsys, tmp_path, command):
    """A 300-byte name (ENAMETOOLONG wherever the path was first used) ended in exit 70."""
    long = str(tmp_path / ("x" * 300))
    args = [{"RUN": tiny, "OUT": tmp_path / "o.png"}.get(a, a.replace("LONG", long)) for a in command]
    code, _, err = run_case("red team", args, capsys)
    assert code == 2 and err.endswith(" characters): file name too long for this system\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_image_file_named_with_an_at_sign_is_a_source(tiny, capsys, tmp_path):
    """`a@3.npz` was refused as a malformed SOURCE@N; `a@3.npz@2` is image 2 of it. Out-of-range messages name
    SOURCE@N as typed, and a huge index is not shown as 10**18."""
    named = tmp_path / "a@3.npz"
    named.write_bytes((tiny.parent / "small.npz").read_bytes())
    for ref in (named, f"{named}@2"):
        run_case("red team", ["traverse", tiny, "--image", ref, "-o", tmp_path / "t.png"], capsys)
        assert (tmp_path / "t.png").exists()
    code, _, err = run_case("red team", ["traverse", tiny, "--image", f"{named}@300", "-o", tmp_path / "u.png"], capsys)
    assert code == 2 and f"--image {named}@300 is out of range: {named} has 300 images (0 to 299)" in err
    code, _, err = run_case("red team", ["traverse", tiny, "--image", "9" * 30, "-o", tmp_path / "u.png"], capsys)
    assert code == 2 and "--image a number past any dataset's size is out of range" in err


@pytest.mark.parametrize("command", [
    ["report", "RUN", "-o", "OUT.html"], ["score", "RUN", "DATA", "-o", "OUT.csv"],
    ["embed", "RUN", "DATA", "-o", "OUT.npz"], ["compress", "RUN", "BIN", "-o", "OUT.vkz"],
    ["sample", "RUN", "-o", "OUT.png"], ["plot", "latents", "RUN", "-o", "OUT.png"]])
def test_an_output_that_cannot_be_a_regular_file_is_refused_before_the_work(tiny, capsys, tmp_path, command):
    """`report -o DIR.html` computed the whole report (30 s on MNIST) and then refused its output."""
    import numpy as np

    np.save(tmp_path / "bin.npy", np.zeros((4, 28, 28), np.uint8))
    out = next(a for a in command if a.startswith("OUT")).replace("OUT", str(tmp_path / "o"))
    Path(out).mkdir()
    paths = {"RUN": tiny, "DATA": tiny.parent / "small.npz", "BIN": tmp_path / "bin.npy"}
    args = [paths.get(a, out if a.startswith("OUT") else a) for a in command]
    code, _, err = run_case("red team", args, capsys)
    assert code == 5 and err == f"vaekit: error: cannot write {out}: it is a directory; vaekit writes and replaces " \
        "regular files only\n"  # and no stage line: nothing was computed


@pytest.mark.parametrize("blocker", ["directory", "fifo", "dangling link"])
def test_a_config_json_that_is_not_a_file_gives_one_consistent_verdict(tiny, capsys, tmp_path, blocker):
    """config.json as a directory: --resume said "no config.json" and --out "already holds a run; continue it
    with --resume", each sending the user to the other."""
    import os

    run, config = tmp_path / "run", tmp_path / "run" / CONFIG_FILE
    run.mkdir()
    {"directory": config.mkdir, "fifo": lambda: os.mkfifo(config),
     "dangling link": lambda: config.symlink_to(tmp_path / "nowhere")}[blocker]()
    data = tiny.parent / "small.npz"
    code, _, err = run_case("red team", ["train", "--data", data, "--epochs", "1", "--out", run], capsys)
    assert code == 4 and err == (f"vaekit: error: {config} is not a regular file, so {run} is no run to resume or "
                                 "reuse; remove it, or choose another --out\n")
    for args in (["train", "--resume", run, "--lr", "0.001"], ["eval", run]):
        code, _, err = run_case("red team", args, capsys)
        assert code == 4
        assert err == f"vaekit: error: {run} is not a run directory (its config.json is not a regular file)\n"
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_FILE]


def test_a_run_on_nine_images_works_with_every_default(capsys, tmp_path):
    """Nine images hold out one: `reconstruct` with its default -n 8 said "-n 8 is more than the 1 test images"."""
    import numpy as np

    data, run = tmp_path / "nine.npy", tmp_path / "run"
    np.save(data, np.random.default_rng(0).integers(0, 256, (9, 28, 28), dtype=np.uint8))
    assert run_case("red team", ["train", "--data", data, "--hidden", "8", "--latent", "2", "--epochs", "1",
                                 "--out", run], capsys)[0] == 0
    code, out, _ = run_case("red team", ["reconstruct", run, "-o", tmp_path / "r.png"], capsys)
    assert code == 0 and out == f"wrote 1 test images and their reconstructions to {tmp_path / 'r.png'}\n"
    for args in (["eval", run], ["sample", run, "-o", tmp_path / "s.png"], ["traverse", run, "-o", tmp_path / "t.png"],
                 ["manifold", run, "-o", tmp_path / "m.png"], ["score", run, data, "-o", tmp_path / "s.csv"]):
        assert run_case("red team", args, capsys)[0] == 0


@pytest.mark.parametrize("images", [2, 9])
def test_a_validation_share_that_leaves_one_training_image_trains(capsys, tmp_path, images):
    """--validation 0.99 of 2 or 9 images: the recipe sized itself for 0 training images, ZeroDivisionError (70)."""
    import numpy as np

    data, run = tmp_path / "few.npy", tmp_path / "run"
    np.save(data, np.random.default_rng(0).integers(0, 256, (images, 28, 28), dtype=np.uint8))
    code, _, err = run_case("red team", ["train", "--data", data, "--validation", "0.99", "--hidden", "8",
                                         "--latent", "2", "--epochs", "1", "--out", run], capsys)
    assert code == 0 and "(1 training images at batch 64; 1 in all)" in err


@pytest.mark.parametrize("loss", ["deleted", "fifo"])
def test_a_run_that_lost_its_checkpoint_is_not_trained_over(tiny, capsys, tmp_path, loss):
    """With checkpoint.safetensors gone, --resume trained from scratch over the finished epoch's weights, and
    --resume --lr X --hidden N (allowed "before the first checkpoint") replaced the model with another one."""
    import os

    run = copy_run(tiny, tmp_path / "run")
    (run / CHECKPOINT_FILE).unlink()
    if loss == "fifo":
        os.mkfifo(run / CHECKPOINT_FILE)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = run_case("red team", ["train", "--resume", run, "--epochs", "2"], capsys)
    assert code == 4 and err == (f"vaekit: error: {run} has finished epochs but no checkpoint.safetensors (a regular "
                                 "file) to continue from; its model still serves every other command: train a new "
                                 "run with --out to go on\n")
    code, _, err = run_case("red team", ["train", "--resume", run, "--lr", "0.0001", "--hidden", "16"], capsys)
    assert code == 2 and "drop --hidden, --lr" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_resume_whose_files_cannot_be_replaced_is_refused_before_training(tiny, capsys, tmp_path):
    """A symlinked checkpoint (a shared run) was read, an epoch trained, and only then refused."""
    run = copy_run(tiny, tmp_path / "run")
    (tmp_path / "elsewhere").write_bytes((run / CHECKPOINT_FILE).read_bytes())
    (run / CHECKPOINT_FILE).unlink()
    (run / CHECKPOINT_FILE).symlink_to(tmp_path / "elsewhere")
    code, _, err = run_case("red team", ["train", "--resume", run, "--epochs", "2"], capsys)
    assert code == 5 and err == (f"vaekit: error: cannot write {run / CHECKPOINT_FILE}: it is a symbolic link; vaekit "
                                 "writes and replaces regular files only\n")  # and no warning: no epoch began
    assert (run / METRICS_FILE).read_text().count("\n") == 1


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_dash_as_output_is_refused_where_only_a_file_is_written(tiny, capsys, tmp_path, monkeypatch, command):
    """`compress RUN X -o -` wrote a file named '-' in the current directory."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "bin.npy", np.zeros((4, 28, 28), np.uint8))
    assert main(["compress", str(tiny), "bin.npy", "-o", "c.vkz"]) == 0
    source = "bin.npy" if command == "compress" else "c.vkz"
    code, _, err = run_case("red team", [command, tiny, source, "-o", "-"], capsys)
    assert code == 2 and err.endswith(f"vaekit {command} -o -: it writes a file, not standard output; give -o a "
                                      "file name\n")
    assert not (tmp_path / "-").exists()


def test_cleanup_outputs_of_the_argument_fuzzer(tiny):
    """The shared run is as it was: no command wrote into it what it should not have."""
    assert not list(tiny.glob(".*.tmp"))
    assert sorted(p.name for p in tiny.iterdir() if p.suffix != ".png") == [  # eval --iw-samples records its blocks
        "checkpoint.safetensors", "config.json", "metrics.jsonl", "model.safetensors", "nll-blocks.jsonl",
        "threshold.json"]
