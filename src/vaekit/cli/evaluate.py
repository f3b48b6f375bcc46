"""`vaekit eval`: a run's loss on the test set."""

from __future__ import annotations

import json

from ..evaluate import evaluate_elbo
from .args import add_data_dir_argument, add_device_argument, add_run_argument, open_run, test_inputs

HELP = """\
Evaluate a run on its dataset's test split: the negative ELBO per image and its two terms,
reconstruction (-log p(x|z)) and KL, in nats. One posterior sample per image, seeded by the run's seed.

examples:
  vaekit eval runs/seed
  vaekit eval runs/seed --json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="test-set loss, reconstruction and KL", description=HELP)
    add_run_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: test_loss, reconstruction, kl")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    loaded = open_run(args)
    result = evaluate_elbo(loaded.model, test_inputs(loaded, args), loaded.config.train.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test loss       {result['test_loss']:9.3f} nats per image (negative ELBO)")
        print(f"  reconstruction {result['reconstruction']:9.3f}")
        print(f"  KL             {result['kl']:9.3f}")
    return 0
