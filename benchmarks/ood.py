"""Out-of-distribution benchmark: vaekit's detectors on near and far out-of-distribution sets, for a
Fashion-MNIST model and an MNIST model, including the failure case of Nalisnick et al. 2019 (a
Fashion-MNIST model finds MNIST's digits likelier than its own test images).

    python benchmarks/ood.py --out bench-runs/ood              # trains 4 models (10 epochs each) unless there
    python benchmarks/ood.py --out bench-runs/ood --epochs 20  # a run directory of OUT already holds them
    python benchmarks/ood.py --out bench-runs/ood-gs --likelihood gaussian-shared --standardize

Models, each `vaekit train --data D --epochs E --threads 1` with every other option at its default (the
seed MLP 784-400-20, a Bernoulli likelihood of gray pixels, vaekit's recipe):
- D = mnist and fashion-mnist: the models under test;
- D = their training images with 20% of the pixels replaced by uniform noise (vaekit.background.perturb,
  seed 0): the background models of the likelihood-ratio score (Ren et al. 2019).

Normal images: the dataset's test split. Its first half calibrates (`Detector.calibrate`: the threshold at
the 0.99 quantile, the complexity score's rate, the typical-set rule's mean and spread); the second half is
the normal side of every AUROC, against 5,000 images of each out-of-distribution set (built from the second
half, or drawn with seed 0):

- far: uniform noise; constant images (one random gray level each); inverted images (255 - x); the other
  dataset's test images (for the MNIST model). Their pixel statistics are unlike any training image's.
- failure case: MNIST's test digits, for the Fashion-MNIST model: simpler images than its own (Nalisnick et al.).
- near: the normal test images flipped left-right, upside down, and rotated by 90 degrees: the same
  pixels, strokes and textures as normal images, only their arrangement is new. Many Fashion-MNIST items
  are symmetric, so a flipped one is often a normal image.

Prints one JSON object: per model and set, the AUROC of every detector, and the default calibrated
detector's flag rates at its threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO, machine

from vaekit import Detector, load_run, load_split
from vaekit.anomaly import auroc
from vaekit.background import DEFAULT_RATE, perturb
from vaekit.complexity import LN2, complexity_scores, png_bits
from vaekit.data import ImageSet

DATASETS = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}  # each model's other dataset
FAILURE_CASE = "fashion-mnist"  # the model that finds the other dataset likelier (Nalisnick et al. 2019)
SETS = {"far": ("noise", "constant", "inverted", "other dataset"), "near": ("flipped left-right", "upside down",
                                                                          "rotated 90 degrees")}
HALF = 5000
# (name, Detector keyword arguments); the first is what `vaekit calibrate RUN` picks
DETECTORS = [
    ("complexity (default)", {}),
    ("elbo", {"method": "elbo"}),
    ("mse", {"method": "mse"}),
    ("complexity at ln 2 (Serra et al.)", {"method": "elbo", "serra": True}),
    ("ratio (background)", {"method": "ratio"}),
    ("elbo, typical-set", {"method": "elbo", "combine": "typical-set"}),
    ("complexity, typical-set", {"method": "complexity", "combine": "typical-set"}),
]


def train(data: str, out: Path, epochs: int, options: list[str], log) -> float:
    """`vaekit train --data data --epochs epochs *options` into out (unless out holds a run); CPU seconds it took."""
    if (out / "model.safetensors").is_file():
        log(f"{out}: trained already")
        return 0.0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    before = os.times()
    subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", data, "--epochs", str(epochs), "--threads", "1",
                    "--out", str(out), *options], check=True, env=env, stdout=subprocess.DEVNULL)
    after = os.times()
    return after.children_user - before.children_user


def ood_sets(normal: torch.Tensor, other: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """uint8 (N, 1, 28, 28) out-of-distribution sets, N = len(normal)."""
    n = len(normal)
    return {
        "noise": torch.randint(0, 256, normal.shape, generator=generator, dtype=torch.uint8),
        "constant": torch.randint(0, 256, (n, 1, 1, 1), generator=generator, dtype=torch.uint8).expand(
            normal.shape).contiguous(),
        "inverted": 255 - normal,
        "other dataset": other[:n],
        "flipped left-right": normal.flip(-1),
        "upside down": normal.flip(-2),
        "rotated 90 degrees": normal.rot90(1, (-2, -1)).contiguous(),
    }


def detector_scores(run, background, kwargs: dict, calibration: ImageSet, sets: dict[str, ImageSet]) -> dict:
    """The detector's scores of each set, calibrated on `calibration`; kwargs "serra": Serra et al.'s S itself
    (the elbo less ln 2 nats a bit of PNG length, no fitted rate)."""
    kwargs = dict(kwargs)
    serra = kwargs.pop("serra", False)
    detector = Detector(run, background=background if kwargs.get("method") == "ratio" else None, **kwargs)
    record = detector.calibrate(calibration, quantile=0.99)
    scores = {name: detector.scores(images) for name, images in sets.items()}
    if serra:
        scores = {name: complexity_scores(s, png_bits(run.inputs(sets[name])), LN2) for name, s in scores.items()}
    return {"record": record, "scores": scores, "threshold": detector.threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-runs/ood"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="background models' perturbation rate")
    parser.add_argument("--likelihood", default=None, help="train with this --likelihood (default: vaekit's)")
    parser.add_argument("--standardize", action="store_true", help="train with --standardize")
    args = parser.parse_args()
    options = ([f"--likelihood={args.likelihood}"] if args.likelihood else []) + (
        ["--standardize"] if args.standardize else [])
    torch.set_num_threads(1)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "epochs": args.epochs, "train_options": options, "perturbation_rate": args.rate,
              "train_cpu_s": {},
              "models": {}}
    for dataset in DATASETS:
        perturbed = args.out / f"{dataset}-perturbed.npy"
        if not perturbed.is_file():
            train_images = load_split(dataset, "train").images
            np.save(perturbed, perturb(train_images, args.rate, torch.Generator().manual_seed(0))[:, 0].numpy())
        result["train_cpu_s"][dataset] = round(train(dataset, args.out / dataset, args.epochs, options, log), 1)
        result["train_cpu_s"][f"{dataset} background"] = round(
            train(str(perturbed), args.out / f"{dataset}-background", args.epochs, options, log), 1)
    for dataset, other_name in DATASETS.items():
        run, background = load_run(args.out / dataset), load_run(args.out / f"{dataset}-background")
        test, other = load_split(dataset, "test"), load_split(other_name, "test")
        calibration = ImageSet(test.images[:HALF], None, f"{dataset}:test, first half")
        normal = test.images[HALF:]
        built = ood_sets(normal, other.images, torch.Generator().manual_seed(0))
        sets = {"normal": ImageSet(normal, None, "normal"), **{name: ImageSet(images, None, name)
                                                                for name, images in built.items()}}
        model = {"failure case": "other dataset" if dataset == FAILURE_CASE else None, "auroc": {}}
        for name, kwargs in DETECTORS:
            start = time.perf_counter()
            scored = detector_scores(run, background, kwargs, calibration, sets)
            normal_scores = scored["scores"]["normal"]
            model["auroc"][name] = {
                set_name: round(auroc(torch.cat([normal_scores, s]).double(),
                                      torch.cat([torch.zeros(len(normal_scores)), torch.ones(len(s))]).bool()), 4)
                for set_name, s in scored["scores"].items() if set_name != "normal"}
            if not kwargs:
                model["default"] = {"threshold": round(scored["threshold"], 3),
                                    "complexity_rate": next(iter(scored["record"]["complexity_rates"].values())),
                                    "flagged": {set_name: round((s.double() > scored["threshold"]).double().mean()
                                                                .item(), 4)
                                                for set_name, s in scored["scores"].items()}}
            log(f"{dataset} {name}: {model['auroc'][name]} ({time.perf_counter() - start:.0f} s)")
        result["models"][dataset] = model
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
