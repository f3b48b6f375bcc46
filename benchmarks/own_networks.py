"""Your own networks against the default: docs/examples/my_resnet.py beside the seed's MLP, one thread.

    python benchmarks/own_networks.py                      # 1 epoch of the full MNIST training set, twice each
    python benchmarks/own_networks.py --epochs 4 --repeats 1 --precision auto

Each run is `vaekit train` in a subprocess (the ResNet named as `--architecture my_resnet:build`, with
docs/examples on PYTHONPATH, as a user would), `--threads 1`, the default recipe otherwise. Reports, per
architecture and precision, the epoch seconds (the fastest of the repeats; the runs are seeded, so the
losses repeat) and the test loss (-ELBO, nats per image, grayscale targets as the default job).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import DATA_DIR, REPO, machine

ARCHITECTURES = {"mlp": [], "my_resnet": ["--architecture", "my_resnet:build"]}


def train(architecture: str, precision: str, epochs: int, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "docs" / "examples")])}
    command = [sys.executable, "-m", "vaekit", "train", *ARCHITECTURES[architecture], "--epochs", str(epochs),
               "--precision", precision, "--threads", "1", "--data-dir", str(DATA_DIR), "--out", str(out)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["auto", "fp32"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for precision in args.precision:
            for architecture in ARCHITECTURES:
                runs = [train(architecture, precision, args.epochs, Path(scratch) / f"{architecture}-{precision}-{i}")
                        for i in range(args.repeats)]
                seconds = [sum(row["seconds"] for row in rows) / len(rows) for rows in runs]
                results.append({"architecture": architecture, "precision": precision, "epochs": args.epochs,
                                "seconds_per_epoch": round(min(seconds), 2),
                                "seconds_per_epoch_all": [round(s, 2) for s in seconds],
                                "test_loss": round(runs[0][-1]["test_loss"], 2),
                                "same_loss_every_repeat": len({rows[-1]["test_loss"] for rows in runs}) == 1})
                print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
