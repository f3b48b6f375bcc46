"""Outputs: regular files only (never a device, FIFO, symlink or directory replaced), files that belong together
written all or none, CSV cells safe from formula injection."""

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaekit import ModelConfig, RunConfig
from vaekit import atomic as atomic_module
from vaekit.atomic import atomic_write_bytes, atomic_write_files
from vaekit.cli import main
from vaekit.errors import OutputError
from vaekit.fit import build_model
from vaekit.runs import create_run, save_weights
from vaekit.tables import csv_text, safe_cell


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained 784-16-2 run: enough to write outputs with."""
    run = tmp_path_factory.mktemp("o") / "run"
    config = RunConfig(model=ModelConfig(hidden_dims=(16,), latent_dim=2))
    create_run(run, config)
    save_weights(run, build_model(config), epoch=1)
    return run


@pytest.fixture
def inputs(tmp_path):
    """A folder of three 28x28 images whose names a spreadsheet would run as formulas."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["=HYPERLINK(1).png", "+1.png", "plain.png"]):
        Image.fromarray(np.full((28, 28), 60 * i, np.uint8)).save(folder / name)
    return folder


def test_special_files_are_never_replaced(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "real").write_bytes(b"keep")
    os.symlink(tmp_path / "real", tmp_path / "link")
    (tmp_path / "dir").mkdir()
    for name, kind in (("fifo", "a FIFO"), ("link", "a symbolic link"), ("dir", "a directory")):
        with pytest.raises(OutputError, match=f"it is {kind}; vaekit writes and replaces regular files only"):
            atomic_write_bytes(tmp_path / name, b"new")
    with pytest.raises(OutputError, match="it is a device"):
        atomic_write_bytes("/dev/null", b"new")
    assert os.path.islink(tmp_path / "link") and (tmp_path / "real").read_bytes() == b"keep"
    assert (tmp_path / "fifo").is_fifo() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo", "link", "real"]  # no temp files left
    atomic_write_bytes(tmp_path / "real", b"new")  # a regular file is replaced
    assert (tmp_path / "real").read_bytes() == b"new"


def test_files_written_together_are_written_all_or_none(tmp_path, monkeypatch):
    (tmp_path / "a.csv").mkdir()  # the second target is refused: the first is not written either
    with pytest.raises(OutputError, match="a.csv: it is a directory"):
        atomic_write_files({tmp_path / "a.npz": b"1", tmp_path / "a.csv": b"2"})
    assert not (tmp_path / "a.npz").exists()
    (tmp_path / "b.npz").write_bytes(b"old")
    real = atomic_module._write_temp
    calls = []

    def full_disk_on_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(atomic_module, "_write_temp", full_disk_on_second)
    with pytest.raises(OutputError, match="b.csv: No space left on device"):
        atomic_write_files({tmp_path / "b.npz": b"new", tmp_path / "b.csv": b"2"})
    assert (tmp_path / "b.npz").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.npz"]


def test_csv_cells_that_look_like_formulas_are_escaped():
    assert [safe_cell(v) for v in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "a=b", "", "-"]] == \
        ["'=1+1", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "a=b", "", "'-"]
    assert [safe_cell(v) for v in [-1.5, -3, 0]] == [-1.5, -3, 0]  # numbers are not formulas
    rows = list(csv.reader(io.StringIO(csv_text(["name", "score"], [["=cmd|' /C calc'!A0", -1.25]]))))
    assert rows == [["name", "score"], ["'=cmd|' /C calc'!A0", "-1.25"]]


def test_embed_escapes_names_and_writes_both_files_or_neither(tiny_run, inputs, tmp_path, capsys):
    out = tmp_path / "e.npz"
    assert main(["embed", str(tiny_run), str(inputs), "-o", str(out)]) == 0
    rows = list(csv.reader(out.with_suffix(".csv").open()))
    assert [row[1] for row in rows[1:]] == ["'+1.png", "'=HYPERLINK(1).png", "plain.png"]
    assert float(rows[1][3]) == pytest.approx(float(np.load(out)["mu"][0, 0]), abs=1e-6)
    capsys.readouterr()
    (tmp_path / "f.csv").mkdir()
    assert main(["embed", str(tiny_run), str(inputs), "-o", str(tmp_path / "f.npz")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "f.csv: it is a directory" in err
    assert not (tmp_path / "f.npz").exists()


def test_score_refuses_a_device_and_takes_dash_for_stdout(tiny_run, inputs, tmp_path, capsys):
    assert main(["score", str(tiny_run), str(inputs), "--threshold", "100", "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "index,name,label,score,anomaly" and "'=HYPERLINK(1).png" in out
    os.mkfifo(tmp_path / "s.csv")
    assert main(["score", str(tiny_run), str(inputs), "--threshold", "100", "-o", str(tmp_path / "s.csv")]) == 5
    assert "s.csv: it is a FIFO" in capsys.readouterr().err and (tmp_path / "s.csv").is_fifo()


def test_a_picture_onto_a_symlink_to_dev_null_is_refused(tiny_run, tmp_path, capsys):
    os.symlink("/dev/null", tmp_path / "s.png")
    assert main(["sample", str(tiny_run), "-o", str(tmp_path / "s.png")]) == 5
    assert "s.png: it is a symbolic link" in capsys.readouterr().err
    assert os.readlink(tmp_path / "s.png") == "/dev/null" and not os.path.isfile("/dev/null")


def test_non_utf8_file_names_in_and_out_under_a_strict_utf8_stdout(tiny_run, tmp_path):
    source = os.fsdecode(os.fsencode(tmp_path) + b"/d\xff.npy")
    np.save(source, np.zeros((3, 28, 28), np.uint8))
    target = os.fsdecode(os.fsencode(tmp_path) + b"/e\xfe.npz")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "vaekit", "embed", str(tiny_run), source, "-o", target],
                          capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"e\\udcfe.npz" in done.stdout and os.path.exists(target)
    assert os.path.exists(target[:-4] + ".csv") and np.load(target)["mu"].shape == (3, 2)
