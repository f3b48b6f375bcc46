"""More than fits in memory: training streamed from a prepared dataset cache (issue #24, item 4).

(a) memory: a synthetic .npy of 500,000 colour images of 32x32x3 (1.5 GB), written a chunk at a time into a temp
    dir (deleted afterwards), prepared (`vaekit data prepare`), then trained for one full epoch with
    `vaekit train --data BIG.npy`: the data is over the streaming line, so training finds the cache by the
    content's key and streams from it. Each command runs in its own process; its peak RSS comes from os.wait4.
(b) speed: 60,000 such images (184 MB, under the line: trained in memory by default) trained in memory and
    streamed from their cache ($VAEKIT_STREAM_ABOVE=0), alternately, same model; images/s from the epochs'
    own seconds (the training loop alone, as train prints it), median over the runs' epochs after the first.

    OMP_NUM_THREADS=1 python benchmarks/cache.py [--images 500000] [--speed-images 60000] [--rounds 3]

Prints one JSON object per measurement and a summary. This process stays small (numpy only, until the end):
a child's ru_maxrss counts its parent's peak at the time of exec.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured  # noqa: E402

MODEL = ["--hidden", "128", "--latent", "16", "--batch-size", "128", "--threads", "1"]
EPOCH_LINE = re.compile(r"^epoch\s+\d+/\d+ .* ([0-9.]+) s", re.M)


def write_npy(path: Path, count: int, seed: int = 0, chunk: int = 10_000) -> None:
    """count x 32 x 32 x 3 uint8 images, smooth colour blobs (from a bank of 2048) plus noise, written a chunk at a
    time. Run in a process of its own (`generate`): a child's ru_maxrss starts from its parent's peak at exec."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 31
    centre = rng.random((2048, 2, 1, 1), dtype=np.float32)
    colour = rng.random((2048, 1, 1, 3), dtype=np.float32)
    bank = np.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) * 20)[..., None] * colour * 229
    bank = bank.astype(np.uint8)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (count, 32, 32, 3)})
        for start in range(0, count, chunk):
            k = min(chunk, count - start)
            f.write((bank[rng.integers(0, len(bank), k)] + rng.integers(0, 26, (k, 32, 32, 3), dtype=np.uint8))
                    .tobytes())


def generate(path: Path, count: int, seed: int) -> float:
    """Seconds to write `write_npy` in a child process, keeping this process small (see `write_npy`)."""
    started = time.perf_counter()
    code, _, err, _ = run_measured([sys.executable, __file__, "--generate", str(path), str(count), str(seed)])
    if code != 0:
        sys.exit(f"generating {path} failed:\n{err[-2000:]}")
    return round(time.perf_counter() - started, 1)


def vaekit(*args, cwd: Path, env: dict | None = None) -> dict:
    started = time.perf_counter()
    code, out, err, peak = run_measured([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd,
                                        env={"PYTHONPATH": str(REPO / "src"), **(env or {})})
    if code != 0:
        sys.exit(f"benchmark step failed: vaekit {' '.join(map(str, args))}\n{err[-2000:]}")
    return {"command": "vaekit " + " ".join(map(str, args)), "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(peak), "epoch_seconds": [float(s) for s in EPOCH_LINE.findall(out)],
            "stdout": out.strip().splitlines()[-1][:200]}


def memory(tmp: Path, count: int) -> dict:
    data = tmp / "big.npy"
    generated = generate(data, count, 0)
    env = {"VAEKIT_CACHE_DIR": str(tmp / "caches")}
    prepared = vaekit("data", "prepare", data, cwd=tmp, env=env)
    print(json.dumps({"step": "prepare", "images": count, "input_bytes": data.stat().st_size,
                      "generate_seconds": generated, **prepared}), flush=True)
    trained = vaekit("train", "--data", data, "--epochs", "1", *MODEL, "--out", tmp / "run-big", cwd=tmp, env=env)
    train_images = count - round(0.1 * count)
    result = {"step": "train one epoch, streamed", "images": count, "train_images": train_images,
              "images_per_second": round(train_images / trained["epoch_seconds"][0]), **trained}
    print(json.dumps(result), flush=True)
    shutil.rmtree(tmp / "caches")
    data.unlink()
    return {"prepare_peak_rss_mb": prepared["peak_rss_mb"], "prepare_seconds": prepared["seconds"],
            "train_peak_rss_mb": trained["peak_rss_mb"], "train_seconds": trained["seconds"],
            "epoch_seconds": trained["epoch_seconds"][0]}


def speed(tmp: Path, count: int, rounds: int, epochs: int = 3) -> dict:
    data = tmp / "fits.npy"
    generate(data, count, 1)
    env = {"VAEKIT_CACHE_DIR": str(tmp / "caches")}
    vaekit("data", "prepare", data, cwd=tmp, env=env)  # once, outside the timings
    rates: dict[str, list[float]] = {"in_memory": [], "streamed": []}
    peaks: dict[str, list[int]] = {"in_memory": [], "streamed": []}
    train_images = count - round(0.1 * count)
    for r in range(rounds):
        for path, extra in (("in_memory", {}), ("streamed", {"VAEKIT_STREAM_ABOVE": "0"})):
            run = vaekit("train", "--data", data, "--epochs", epochs, *MODEL, "--out", tmp / f"run-{path}-{r}",
                         cwd=tmp, env={**env, **extra})
            rates[path] += [train_images / s for s in run["epoch_seconds"][1:]]  # the first warms up
            peaks[path].append(run["peak_rss_mb"])
            print(json.dumps({"step": f"speed, {path}", "round": r, **run}), flush=True)
            shutil.rmtree(tmp / f"run-{path}-{r}")
    ratio = statistics.median(rates["streamed"]) / statistics.median(rates["in_memory"])
    return {"images": count, "in_memory_images_per_second": round(statistics.median(rates["in_memory"])),
            "streamed_images_per_second": round(statistics.median(rates["streamed"])),
            "streamed_over_in_memory": round(ratio, 3), "in_memory_peak_rss_mb": max(peaks["in_memory"]),
            "streamed_peak_rss_mb": max(peaks["streamed"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500_000)
    parser.add_argument("--speed-images", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=("memory", "speed"), default=None)
    parser.add_argument("--generate", nargs=3, metavar=("PATH", "COUNT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        path, count, seed = args.generate
        write_npy(Path(path), int(count), int(seed))
        return
    summary = {"model": " ".join(MODEL)}
    with tempfile.TemporaryDirectory(prefix="vaekit-cache-bench-") as tmp:
        if args.skip != "speed":
            summary["speed"] = speed(Path(tmp), args.speed_images, args.rounds)
        if args.skip != "memory":
            summary["memory"] = memory(Path(tmp), args.images)
    summary["machine"] = machine()  # imports torch: only after every child has run (see `write_npy`)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
