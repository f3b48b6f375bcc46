"""`vaekit train`: train a VAE into a run directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config import BINARIZE_MODES, DataConfig, ModelConfig, RunConfig, TrainConfig
from ..data import DATASETS
from ..fit import fit
from .args import add_data_dir_argument, add_device_argument, non_negative_int, positive_float, positive_int

HELP = """\
Train a VAE and write a run directory: config.json, model.safetensors, metrics.jsonl,
samples_<epoch>.png and reconstruction_<epoch>.png after every epoch, loss.png at the end.

The defaults are the seed tutorial's: a 784-400-20 MLP, Adam at lr 1e-3, batch 128, 10 epochs, seed 1.

examples:
  vaekit train --out runs/seed
  vaekit train --data fashion-mnist --epochs 20 --out runs/fashion
  vaekit train --hidden 512 256 --latent 32 --binarize dynamic --out runs/deeper
"""


def register(subparsers) -> None:
    defaults = RunConfig()
    p = subparsers.add_parser("train", help="train a VAE into a run directory", description=HELP)
    p.add_argument("--data", default=defaults.data.name, choices=sorted(DATASETS), help="dataset (default mnist)")
    add_data_dir_argument(p)
    p.add_argument("--hidden", type=positive_int, nargs="+", default=list(defaults.model.hidden_dims),
                   metavar="SIZE", help="hidden layer sizes, input side first (default 400)")
    p.add_argument("--latent", type=positive_int, default=defaults.model.latent_dim, help="latent dimensions (default 20)")
    p.add_argument("--epochs", type=positive_int, default=defaults.train.epochs, help="default 10")
    p.add_argument("--batch-size", type=positive_int, default=defaults.train.batch_size, help="default 128")
    p.add_argument("--lr", type=positive_float, default=defaults.train.lr, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=non_negative_int, default=defaults.train.seed, help="default 1")
    p.add_argument("--binarize", choices=BINARIZE_MODES, default=defaults.data.binarize,
                   help="targets: none (grayscale, as the seed), dynamic (Bernoulli per epoch) or threshold")
    add_device_argument(p)
    p.add_argument("--out", type=Path, default=None, metavar="RUN_DIR",
                   help="run directory to create (default runs/<data>-<date>-<time>)")
    p.set_defaults(func=run)


def run(args) -> int:
    config = RunConfig(
        data=DataConfig(name=args.data, binarize=args.binarize),
        model=ModelConfig(hidden_dims=tuple(args.hidden), latent_dim=args.latent),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed),
    )
    out = args.out or Path("runs") / f"{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(config, out, data_dir=args.data_dir, device=args.device, progress=sys.stderr.isatty(), log=print)
    last = result.metrics[-1]
    print(f"run saved to {result.path}: test loss {last['test_loss']:.3f} nats per image; "
          f"see samples_{last['epoch']}.png, reconstruction_{last['epoch']}.png and loss.png")
    return 0
