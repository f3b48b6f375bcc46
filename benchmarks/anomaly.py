"""Anomaly detection benchmark: the one-class MNIST protocol, out-of-distribution sets, scoring speed.

    python benchmarks/anomaly.py                       # all of it (about 15 minutes on one thread)
    python benchmarks/anomaly.py --digits 2 5 --epochs 20 --skip-ood --skip-speed
    python benchmarks/anomaly.py --likelihood gaussian-shared --standardize   # vaekit's best detector
    python benchmarks/anomaly.py --data fashion-mnist --likelihood gaussian-shared --standardize --skip-ood

1. One-class MNIST (Ruff et al. 2018): for each digit, train on that digit's training images only
   (90% of them, split as `vaekit train --data` splits; the other 10% are held out), score all 10,000
   test images; the digit is normal, every other digit an anomaly. AUROC per digit and the mean, for
   the ELBO, IWAE, reconstruction and squared-error scores.
2. Out of distribution: the MNIST test set (normal) against sets built here: uniform noise, inverted
   digits, and digits rotated by 90 degrees, scored by a model trained on all of MNIST and by the ten
   one-class models of step 1 as one detector, under both rules of `vaekit score --mixture`: the
   equal-weight mixture of their densities (vaekit.anomaly.mixture_scores) and the most typical
   model, each measured against its held-out digits (vaekit.anomaly.typical_scores).
3. Throughput of the ELBO score on the 10,000 test images, seed MLP.

--data fashion-mnist runs the same protocol with Fashion-MNIST's ten classes in place of the digits
(the out-of-distribution sets are then built from Fashion-MNIST's test images).

Prints one JSON object; writes the ROC curves as OUT/roc.png (drawn by vaekit.plots).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import BENCHMARK_DATA, DATA_DIR, machine, median

from vaekit import ModelConfig, RunConfig, TrainConfig, Trainer, load_split
from vaekit.anomaly import (MIXTURE_METHODS, MIXTURE_RULES, anomaly_scores, auroc, mixture_scores, roc_curve,
                            typical_reference, typical_scores)
from vaekit.config import ARCHITECTURES, LIKELIHOODS, DataConfig
from vaekit.data import fixed_binarization, load_train_test, standardize
from vaekit.data.datasets import get_spec
from vaekit.fit import build_model
from vaekit.plots import save_roc_curves

# Deep SVDD (one-class), AUROC per normal digit: Ruff et al. 2018, "Deep One-Class Classification", Table 1
DEEP_SVDD = [0.980, 0.997, 0.917, 0.919, 0.949, 0.885, 0.983, 0.946, 0.939, 0.965]
# the published per-class AUROCs each dataset's rows carry: (JSON key, values by class)
PUBLISHED = {"mnist": ("deep_svdd", DEEP_SVDD)}
MODEL = ModelConfig(hidden_dims=(400,), latent_dim=20)  # the seed MLP; --likelihood changes its output


def train(images: torch.Tensor, config: RunConfig, log) -> tuple[torch.nn.Module, float]:
    model = build_model(config)
    trainer = Trainer(model, images, config.train, config.data.binarize)
    start = time.perf_counter()
    for epoch in range(config.train.epochs):
        loss = trainer.train_epoch()
        if (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: train {loss:.2f}")
    return model.eval(), time.perf_counter() - start


def seen(images: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """uint8 images as the model sees them: standardized per image if the config says so."""
    return standardize(images) if config.data.standardize else images


def prepared(images: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """uint8 images as model inputs to score: seen, then binarized (if the config says so) with its seed."""
    return fixed_binarization(seen(images, config), config.data.binarize, config.train.seed)


def scores_by_method(model, x, seed: int, k: int, methods=("elbo", "iwae", "recon", "mse")) -> dict[str, torch.Tensor]:
    return {method: anomaly_scores(model, x, method, seed, k) for method in methods}


def combined(members: list[dict], references: list[dict], rule: str) -> dict[str, torch.Tensor]:
    """Several models' scores (members[i][method]) as one detector's under `rule` (density, typical, typical-set);
    references[i][method] are model i's scores of its own held-out images (for the typical rule)."""
    if rule == "density":
        return {method: mixture_scores([m[method] for m in members]) for method in MIXTURE_METHODS}
    return {method: typical_scores([m[method] for m in members], [typical_reference(r[method]) for r in references],
                                   two_sided=rule == "typical-set")
            for method in MIXTURE_METHODS}


def one_class(train_set, test_set, digits, config: RunConfig, k: int) -> dict:
    x_test = prepared(test_set.images, config)
    anchor, published = PUBLISHED.get(config.data.name, (None, None))
    rows, curves, models, references = [], {}, {}, {}
    for digit in digits:
        log = lambda line, digit=digit: print(f"[digit {digit}] {line}", file=sys.stderr, flush=True)  # noqa: E731
        train_part, held_out = load_train_test(f"digit {digit}", config.data.validation, config.train.seed,
                                               images=train_set.subset((train_set.labels == digit).nonzero()[:, 0]))
        model, seconds = train(seen(train_part.images, config), config, log)
        models[digit] = model
        references[digit] = scores_by_method(model, prepared(held_out.images, config), config.train.seed, k,
                                             MIXTURE_METHODS)
        is_anomaly = test_set.labels != digit
        scores = scores_by_method(model, x_test, config.train.seed, k)
        row = {"digit": digit, "train_s": round(seconds, 1), **({anchor: published[digit]} if anchor else {}),
               **{method: round(auroc(s, is_anomaly), 4) for method, s in scores.items()}}
        log(json.dumps(row))
        rows.append(row)
        curves[f"digit {digit} (AUROC {row['elbo']:.3f})"] = roc_curve(scores["elbo"], is_anomaly)
    mean = {method: round(sum(r[method] for r in rows) / len(rows), 4) for method in ("elbo", "iwae", "recon", "mse")}
    if anchor:
        mean[anchor] = round(sum(published[d] for d in digits) / len(digits), 4)
    return {"per_digit": rows, "mean": mean, "curves": curves, "models": models, "references": references}


def ood_sets(test_set) -> dict[str, torch.Tensor]:
    """The MNIST test images ("normal") and the out-of-distribution sets built from them, as uint8 images."""
    images = test_set.images
    generator = torch.Generator().manual_seed(0)
    return {
        "normal": images,
        "uniform noise": torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=generator),
        "inverted digits": 255 - images,
        "rotated digits (90 degrees)": torch.rot90(images, 1, dims=(2, 3)),
    }


def out_of_distribution(test_set, scores: dict[str, dict[str, torch.Tensor]]) -> dict:
    """AUROC of the MNIST test set (normal) against each set of `ood_sets`, from every set's scores by
    method (scores[set name][method]); for the rotated digits also per digit (ELBO score)."""
    images = test_set.images
    normal = scores["normal"]
    result, curves = {}, {}
    for name, odd in scores.items():
        if name == "normal":
            continue
        if name.startswith("rotated"):
            rotated = odd["elbo"]
        labels = torch.cat([torch.zeros(len(images)), torch.ones(len(odd["elbo"]))]).bool()
        result[name] = {method: round(auroc(torch.cat([normal[method], odd[method]]), labels), 4) for method in normal}
        curves[f"{name} (AUROC {result[name]['elbo']:.3f})"] = roc_curve(torch.cat([normal["elbo"], odd["elbo"]]),
                                                                         labels)
    result["rotated, per digit (elbo)"] = {
        digit: round(auroc(torch.cat([normal["elbo"], rotated[test_set.labels == digit]]),
                           torch.cat([torch.zeros(len(images)),
                                      torch.ones(int((test_set.labels == digit).sum()))]).bool()), 3)
        for digit in range(10)}
    return {**result, "curves": curves}


def throughput(model, test_set, config: RunConfig, repeats: int = 5) -> dict:
    x = prepared(test_set.images, config)
    anomaly_scores(model, x, "elbo", 0)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        anomaly_scores(model, x, "elbo", 0)
        times.append(time.perf_counter() - start)
    return {"images": len(x), "median_s": round(median(times), 4),
            "images_per_s": round(len(x) / median(times)), "best_images_per_s": round(len(x) / min(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=50, help="per one-class model (default 50)")
    parser.add_argument("-k", type=int, default=100, help="importance samples of the iwae score (default 100)")
    parser.add_argument("--binarize", default="none", choices=("none", "dynamic", "threshold"))
    parser.add_argument("--likelihood", default="bernoulli", choices=LIKELIHOODS)
    parser.add_argument("--architecture", default=MODEL.architecture, choices=ARCHITECTURES)
    parser.add_argument("--latent", type=int, default=MODEL.latent_dim)
    parser.add_argument("--standardize", action="store_true", help="each image to zero mean, unit variance first")
    parser.add_argument("--skip-ood", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--data", default="mnist", choices=BENCHMARK_DATA,
                        help="the dataset whose classes are the normal classes (default mnist)")
    parser.add_argument("--out", type=Path, default=Path("bench-runs/anomaly"))
    args = parser.parse_args()
    train_set, test_set = load_split(args.data, "train", DATA_DIR), load_split(args.data, "test", DATA_DIR)
    model_config = ModelConfig(**{**MODEL.__dict__, "likelihood": args.likelihood, "architecture": args.architecture,
                                  "latent_dim": args.latent})
    config = RunConfig(DataConfig(name=args.data, binarize=args.binarize, standardize=args.standardize), model_config,
                       TrainConfig(epochs=args.epochs))
    result = {"benchmark": "anomaly", "data": args.data, "machine": machine(), "model": model_config.__dict__,
              "epochs": args.epochs,
              "binarize": args.binarize, "standardize": args.standardize, "iw_samples": args.k}
    oc = one_class(train_set, test_set, args.digits, config, args.k)
    result["one_class"] = {"per_digit": oc["per_digit"], "mean": oc["mean"]}
    args.out.mkdir(parents=True, exist_ok=True)
    panels = {f"one-class {get_spec(args.data).title} (ELBO score)": oc["curves"]}
    if not args.skip_ood:
        seed = config.train.seed
        all_config = RunConfig(config.data, model_config, TrainConfig(epochs=10))
        model, seconds = train(seen(train_set.images, all_config), all_config,
                               lambda line: print(f"[all digits] {line}", file=sys.stderr))
        sets = {name: prepared(images, config) for name, images in ood_sets(test_set).items()}
        ood = out_of_distribution(test_set,
                                  {name: scores_by_method(model, x, seed, args.k) for name, x in sets.items()})
        panels["out of distribution: one model of all digits (ELBO)"] = ood.pop("curves")
        result["out_of_distribution"] = {"train_s": round(seconds, 1), "epochs": all_config.train.epochs, **ood}
        if sorted(oc["models"]) == list(range(10)):
            models, references = list(oc["models"].values()), list(oc["references"].values())
            members = {name: [scores_by_method(m, x, seed, args.k, MIXTURE_METHODS) for m in models]
                       for name, x in sets.items()}
            result["out_of_distribution_class_mixture"] = {}
            for rule in MIXTURE_RULES:
                mixed = out_of_distribution(test_set, {name: combined(scores, references, rule)
                                                       for name, scores in members.items()})
                curves = mixed.pop("curves")
                if rule == "typical":
                    panels["same sets: ten one-class models, typical rule"] = curves
                result["out_of_distribution_class_mixture"][rule] = mixed
        if not args.skip_speed:
            result["elbo_scoring"] = throughput(model, test_set, config)
    save_roc_curves(args.out / "roc.png", panels)
    result["roc_plot"] = str(args.out / "roc.png")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
