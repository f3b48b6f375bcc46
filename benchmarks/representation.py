"""How much label information the latents hold: probes for the seed MLP, the conv model and a beta sweep.

    python benchmarks/representation.py                        # trains every configuration (about 20 minutes)
    python benchmarks/representation.py --use seed-mlp=bench-runs/seed-mlp --only seed-mlp
    python benchmarks/representation.py --data fashion-mnist --only seed-mlp --use seed-mlp=RUN

For each model, on MNIST: kNN accuracy (k = 1, 5, 10) of test posterior means against training ones,
a linear probe (logistic regression on posterior means and log-variances, and on the means alone),
and with 100 and 1000 labels a linear probe and label propagation. The raw-pixel logistic regression
is the reference. Prints one JSON object; --use NAME=RUN evaluates an existing run instead of
training that configuration. --data fashion-mnist probes models of Fashion-MNIST (trained into
OUT/fashion-mnist/) with its labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import BENCHMARK_DATA, DATA_DIR, machine, on_data, runs_folder

from vaekit import ModelConfig, RunConfig, TrainConfig, fit, load_run, load_split
from vaekit.config import DataConfig
from vaekit.representation import knn_accuracy, posterior_features, probe_accuracy, probe_report

DYNAMIC = DataConfig(binarize="dynamic")
CONFIGS = {
    "seed-mlp": RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=50)),
    "conv": RunConfig(DYNAMIC, ModelConfig(architecture="conv", hidden_dims=(256,), latent_dim=20),
                      TrainConfig(epochs=20)),
    "beta-0.5": RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=20, beta=0.5)),
    "beta-1": RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=20, beta=1.0)),
    "beta-4": RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=20, beta=4.0)),
}
TARGETS = {"knn_5": 0.97, "linear": 0.93, "labels_100": 0.80}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--use", nargs="+", default=[], metavar="NAME=RUN", help="evaluate existing runs")
    parser.add_argument("--no-pixels", action="store_true")
    parser.add_argument("--pixels-only", action="store_true",
                        help="only the raw-pixel references: the linear probe and kNN (k = 1, 5, 10) on the pixels")
    parser.add_argument("--data", default="mnist", choices=BENCHMARK_DATA, help="the dataset (default mnist)")
    parser.add_argument("--out", type=Path, default=Path("bench-runs/representation"))
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.use)
    train, test = load_split(args.data, "train", DATA_DIR), load_split(args.data, "test", DATA_DIR)
    result = {"benchmark": "representation", "data": args.data, "machine": machine(), "models": {}}
    if args.data == "mnist":
        result["targets_for_seed_mlp"] = TARGETS
    for name in [] if args.pixels_only else args.only or CONFIGS:
        path = Path(given[name]) if name in given else runs_folder(args.out, args.data) / name
        if not (path / "model.safetensors").exists():
            fit(on_data(CONFIGS[name], args.data), path, data_dir=DATA_DIR,
                log=lambda line, name=name: print(f"[{name}] {line}", file=sys.stderr))
        run = load_run(path)
        if run.config.data.name != args.data:
            sys.exit(f"{path} was trained on {run.config.data.name}, not on {args.data}")
        start = time.perf_counter()
        binarize, seed = run.config.data.binarize, run.config.train.seed
        train_f, test_f = (posterior_features(run.model, images.images, binarize, seed) for images in (train, test))
        dims = run.model.latent_dim
        report = probe_report(train_f, train.labels, test_f, test.labels, knn_dims=dims)
        report["linear_means_only"] = probe_accuracy(train_f[:, :dims], train.labels, test_f[:, :dims], test.labels)
        last = run.metrics[-1]
        result["models"][name] = {"run": str(path), "epochs": len(run.metrics),
                                  "test_loss": round(last["test_loss"], 3), "active_units": last.get("active_units"),
                                  "probe_s": round(time.perf_counter() - start, 1),
                                  "beta": run.config.train.beta, "architecture": run.config.model.architecture,
                                  **report}
        print(json.dumps({name: result["models"][name]}), file=sys.stderr, flush=True)
    if not args.no_pixels:
        pixels = lambda images: images.images.flatten(1).float() / 255  # noqa: E731
        result["pixels_linear"] = probe_accuracy(pixels(train), train.labels, pixels(test), test.labels)
        if args.pixels_only:
            result["pixels_knn"] = knn_accuracy(pixels(train), train.labels, pixels(test), test.labels)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
