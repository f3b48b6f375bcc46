"""Thread settings side by side: seconds per MNIST epoch, quiet and with a competing training running.

    python benchmarks/threads.py               # about 5 minutes on a 2-core CPU; prints one JSON object
    python benchmarks/threads.py --images 10000 --rounds 1   # quicker, noisier

Each measurement is one subprocess that trains vaekit's default model (784-400-20 MLP, batch 128,
vaekit's recipe) for one pass over the first --images MNIST training images and reports the time
scaled to a 60,000-image epoch, with its CPU time. The settings:

  torch-default   what torch does on its own: one thread per usable CPU, OpenMP threads spin-wait
  physical-cores  one thread per physical core (the same as torch-default without hyper-threading)
  one             a single thread
  passive         physical-cores with OMP_WAIT_POLICY=PASSIVE set before torch loads (waiting threads
                  sleep)
  load-aware      one thread per CPU at least half idle over 0.1 s when the command starts (/proc/stat),
                  at most one per physical core, at least one: vaekit's default (vaekit.threads)
  spin-1k, spin-10k, spin-100k  physical-cores with libgomp's spin before sleeping shortened to
                  GOMP_SPINCOUNT 1,000, 10,000 or 100,000 (libgomp's own is 300,000)
  load-aware-spin-10k  both
  load-aware-passive  both

"loaded" runs the same measurements while a competing process, which this script starts and stops,
trains the same model in a loop at torch's default settings (another user's training). Rounds
interleave the settings so that drift in the machine's speed spreads over all of them; the medians
are reported, with each setting's ratio to the best quiet one and its loaded/quiet ratio.

The machine's load average is recorded before and after: numbers taken while other jobs run are
noisier than the ratios between neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import DATA_DIR, REPO, machine, median

SETTINGS = ("torch-default", "physical-cores", "one", "passive", "load-aware", "load-aware-passive", "spin-1k",
            "spin-10k", "spin-100k", "load-aware-spin-10k")
SPIN_COUNTS = {"spin-1k": 1_000, "spin-10k": 10_000, "spin-100k": 100_000}  # GOMP_SPINCOUNT (libgomp's is 300,000)
EPOCH_IMAGES = 60_000
WARM_UP_SECONDS = 5.0  # the competitor's import and data loading, before it competes


def worker(setting: str, images: int) -> dict:
    """Time one pass over `images` training images under `setting` (the parent sets its wait policy)."""
    import torch  # before vaekit, so that `import vaekit` leaves the wait policy the parent chose

    from vaekit import RunConfig, Trainer, load_split
    from vaekit.fit import build_model
    from vaekit.threads import idle_cpus, physical_cores, usable_cpus

    cores = physical_cores(usable_cpus())
    if setting in ("physical-cores", "passive") or setting.startswith("spin-"):
        torch.set_num_threads(cores)
    elif setting == "one":
        torch.set_num_threads(1)
    elif setting.startswith("load-aware"):
        torch.set_num_threads(max(1, min(cores, idle_cpus(usable_cpus()))))
    config = RunConfig()
    train_images = load_split("mnist", "train", DATA_DIR).images[:images]
    trainer = Trainer(build_model(config), train_images, config.train, config.data.binarize)
    cpu0, start = _cpu_seconds(), time.perf_counter()
    loss = trainer.train_epoch()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    scale = EPOCH_IMAGES / len(train_images)
    return {"setting": setting, "threads": torch.get_num_threads(), "s_per_epoch": round(seconds * scale, 3),
            "cpu_per_wall": round(cpu / seconds, 2), "train_loss": round(loss, 4)}


def compete() -> None:
    """Train the default model over and over at torch's default settings until killed."""
    from vaekit import RunConfig, Trainer, load_split
    from vaekit.fit import build_model

    config = RunConfig()
    train_images = load_split("mnist", "train", DATA_DIR).images
    while True:
        Trainer(build_model(config), train_images, config.train, config.data.binarize).train_epoch()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _clean_env() -> dict:
    """The environment without thread settings, so each setting starts from torch's own defaults."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
            "VAEKIT_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def measure(setting: str, images: int) -> dict:
    env = _clean_env()
    if setting.endswith("passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if (spin := setting.removeprefix("load-aware-")) in SPIN_COUNTS:
        env["GOMP_SPINCOUNT"] = str(SPIN_COUNTS[spin])
    argv = [sys.executable, __file__, "--worker", setting, "--images", str(images)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000, help="training images per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per condition")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.images)))
        return
    if args.compete:
        compete()
        return

    load_before = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {"quiet": {}, "loaded": {}}
    for condition in ("quiet", "loaded"):
        competitor = None
        if condition == "loaded":
            competitor = subprocess.Popen([sys.executable, __file__, "--compete"], env=_clean_env(),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(WARM_UP_SECONDS)
        try:
            for _ in range(args.rounds):
                for setting in args.settings:
                    results[condition].setdefault(setting, []).append(measure(setting, args.images))
                    print(condition, json.dumps(results[condition][setting][-1]), file=sys.stderr)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()

    table = {}
    for setting in args.settings:
        row = {}
        for condition in ("quiet", "loaded"):
            runs = results[condition][setting]
            row[condition] = {"s_per_epoch": round(median([r["s_per_epoch"] for r in runs]), 2),
                              "runs": [r["s_per_epoch"] for r in runs], "threads": [r["threads"] for r in runs],
                              "cpu_per_wall": round(median([r["cpu_per_wall"] for r in runs]), 2)}
        row["loaded_over_quiet"] = round(row["loaded"]["s_per_epoch"] / row["quiet"]["s_per_epoch"], 2)
        table[setting] = row
    best_quiet = min(row["quiet"]["s_per_epoch"] for row in table.values())
    for row in table.values():
        row["quiet_over_best_quiet"] = round(row["quiet"]["s_per_epoch"] / best_quiet, 2)
        row["worst_over_best_quiet"] = round(max(row["quiet"]["s_per_epoch"], row["loaded"]["s_per_epoch"])
                                             / best_quiet, 2)
    print(json.dumps({"machine": machine(), "images_per_measurement": args.images, "rounds": args.rounds,
                      "loadavg_before": [round(v, 2) for v in load_before],
                      "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                      "competitor": "the same training in a loop, torch's default threads", "settings": table},
                     indent=1))


if __name__ == "__main__":
    main()
