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
    if not data.exists():
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


def interleaved_child(data: Path, caches: Path, rounds: int) -> dict:
    """In one process, two trainers of the same model, one on the images in memory and one streamed from their
    cache, stepping whole epochs in turn (in memory, streamed, in memory, ...): the same load falls on both.
    Per epoch, wall seconds and CPU seconds of the process (all its threads: the read-ahead thread's work counts)."""
    import torch

    from vaekit.config import ModelConfig, TrainConfig
    from vaekit.data import read_images
    from vaekit.data.convert import prepare
    from vaekit.data.streamed import open_streamed
    from vaekit.models import build_model
    from vaekit.train import Trainer

    torch.set_num_threads(1)
    in_memory = read_images(data)
    streamed = open_streamed(prepare(data, directory=caches)[0])
    model = ModelConfig(input_shape=in_memory.shape, hidden_dims=(128,), latent_dim=16)
    train = TrainConfig(epochs=rounds + 1, batch_size=128, compile="off")
    torch.manual_seed(0)
    trainers = {"in_memory": Trainer(build_model(model), in_memory.images, train, "none"),
                "streamed": Trainer(build_model(model), streamed.images, train, "none")}
    times: dict[str, dict[str, list[float]]] = {path: {"wall": [], "cpu": []} for path in trainers}
    for r in range(rounds + 1):
        for path, trainer in trainers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.train_epoch()
            if r:  # the first round warms up
                times[path]["wall"].append(time.perf_counter() - wall)
                times[path]["cpu"].append(time.process_time() - cpu)
    n = len(in_memory)
    rate = {path: {kind: round(n / statistics.median(values)) for kind, values in kinds.items()}
            for path, kinds in times.items()}
    return {"images": n, "epochs_each": rounds, "images_per_second": rate,
            "streamed_over_in_memory_wall": round(rate["streamed"]["wall"] / rate["in_memory"]["wall"], 3),
            "streamed_over_in_memory_cpu": round(rate["streamed"]["cpu"] / rate["in_memory"]["cpu"], 3),
            "epoch_seconds": {path: {k: [round(v, 2) for v in vs] for k, vs in kinds.items()}
                              for path, kinds in times.items()}}


def interleaved(tmp: Path, count: int, rounds: int) -> dict:
    data = tmp / "fits.npy"
    if not data.exists():
        generate(data, count, 1)
    code, out, err, _ = run_measured([sys.executable, __file__, "--interleaved", str(data), str(tmp / "caches"),
                                      str(rounds)], env={"PYTHONPATH": str(REPO / "src")})
    if code != 0:
        sys.exit(f"the interleaved speed run failed:\n{err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"step": "speed, interleaved in one process", **result}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500_000)
    parser.add_argument("--speed-images", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=("memory", "speed", "interleaved"), nargs="*", default=[])
    parser.add_argument("--generate", nargs=3, metavar=("PATH", "COUNT", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", nargs=3, metavar=("PATH", "CACHES", "ROUNDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.interleaved:
        path, caches, rounds = args.interleaved
        print(json.dumps(interleaved_child(Path(path), Path(caches), int(rounds))))
        return
    if args.generate:
        path, count, seed = args.generate
        write_npy(Path(path), int(count), int(seed))
        return
    summary = {"model": " ".join(MODEL)}
    with tempfile.TemporaryDirectory(prefix="vaekit-cache-bench-") as tmp:
        if "interleaved" not in args.skip:
            summary["interleaved"] = interleaved(Path(tmp), args.speed_images, args.rounds)
        if "speed" not in args.skip:
            summary["speed"] = speed(Path(tmp), args.speed_images, args.rounds)
        if "memory" not in args.skip:
            summary["memory"] = memory(Path(tmp), args.images)
    summary["machine"] = machine()  # imports torch: only after every child has run (see `write_npy`)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
