"""Peak memory and wall time of the memory-bomb cases of issue 21 that concern run directories and arguments.

Each case runs `python -m vaekit ...` in its own subprocess; its peak RSS comes from os.wait4. Prints one
JSON object per case (command, exit code, stderr's last line, seconds, peak RSS in MB) and a summary.

    OMP_NUM_THREADS=1 python benchmarks/memory_bombs.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def vaekit(*args, cwd: Path) -> dict:
    """Run one vaekit command; its exit code, last stderr line, wall seconds and peak RSS (MB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"command": "vaekit " + " ".join(map(str, args)), "exit": process.returncode,
            "stderr": (err.strip().splitlines() or [""])[-1][:160], "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    from vaekit.data import load_split

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mnist = load_split("mnist", "test", REPO / "data")
        for name, n in (("ten.npz", 10), ("small.npz", 300)):
            np.savez(tmp / name, images=mnist.images[:n].squeeze(1).numpy(), labels=mnist.labels[:n].numpy())
        setup = [vaekit("train", "--data", "small.npz", "--epochs", "1", "--out", "run", cwd=tmp),
                 vaekit("train", "--data", "ten.npz", "--epochs", "5", "--lr", "1e-3", "--warmup", "0", "--out", "one",
                        cwd=tmp)]  # 9 training images: a step per epoch, at a learning rate a single step survives
        assert all(r["exit"] == 0 for r in setup), setup
        huge = tmp / "huge"
        subprocess.run(["cp", "-r", str(tmp / "run"), str(huge)], check=True)
        config = json.loads((huge / "config.json").read_text())
        config["model"]["hidden_dims"] = [1000000]
        (huge / "config.json").write_text(json.dumps(config))

        cases = [
            ("eval", "run"),  # the baseline: what loading a run and evaluating it costs
            ("eval", "run", "--iw-samples", "1000000000"),
            ("eval", "one", "--iw-samples", "1000"),
            ("eval", "one", "--iw-samples", "1000000"),  # the bound: a million samples of one image, chunked
            ("eval", "huge"),
            ("train", "--hidden", "1000000000", "--out", "x1"),
            ("train", "--latent", "1000000000", "--out", "x2"),
            ("train", "--prior", "vamp", "--prior-components", "1000000000", "--out", "x3"),
            ("train", "--pixel-groups", "4", "--binarize", "threshold", "--context-channels", "1000000000", "--out",
             "x4"),
            ("train", "--iwae", "1000000000", "--out", "x5"),
            ("train", "--hidden", "60000", "60000", "--out", "x6"),
        ]
        results = []
        for args in cases:
            result = vaekit(*args, cwd=tmp)
            if args[0] == "train":
                result["run_dir_left"] = (tmp / args[-1]).exists()
            results.append(result)
            print(json.dumps(result), flush=True)
    print(json.dumps({"most_rss_mb": max(r["peak_rss_mb"] for r in results),
                      "exit_70": sum(r["exit"] == 70 for r in results),
                      "signals": sum(r["exit"] < 0 for r in results)}))


if __name__ == "__main__":
    main()
