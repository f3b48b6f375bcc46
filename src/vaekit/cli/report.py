"""`vaekit report`: one self-contained HTML page about a run."""

from __future__ import annotations

import sys
import time

from .args import (add_data_dir_argument, add_device_argument, add_run_argument, html_path, iw_count, open_run,
                   positive_int, stage_log)
from .samplers import add_sampler_argument

HELP = """\
Write one self-contained HTML page (every image inlined) about a run: its config, loss curves and
per-epoch metrics, test ELBO and importance-sampled NLL, collapse diagnostics and KL per dimension,
samples and reconstructions, an interpolation (as a strip and an animation), traversals, the latent
space (PCA) and kNN and linear probes. For a run on dSprites (--data dsprites), also per-factor
traversals and the latent x factor mutual information, from --samples drawn images (default 10,000,
seed 0: the numbers of `vaekit disentanglement RUN --samples N`).

example:
  vaekit report runs/seed -o report.html
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="one HTML page about a run", description=HELP)
    add_run_argument(p)
    p.add_argument("-o", "--output", type=html_path, required=True, metavar="FILE.html")
    p.add_argument("--iw-samples", type=iw_count, default=100, metavar="K",
                   help="importance samples of the NLL (default 100; 5000 is the literature's, and slow)")
    p.add_argument("--samples", type=positive_int, default=10_000, metavar="N",
                   help="drawn images of the dSprites factors section (default 10000; only for runs on dSprites)")
    add_sampler_argument(p)
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..atomic import atomic_write_text
    from ..data import fixed_binarization, load_train_test
    from ..report import run_report

    start = time.perf_counter()
    from ..errors import ConfigError
    from ..samplers.store import load_sampler
    from .disentangle import MAX_SAMPLES

    if not 2 <= args.samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples must be from 2 to {MAX_SAMPLES:,}, got {args.samples}")

    loaded = open_run(args)
    sampler = None if args.sampler == "prior" else load_sampler(loaded, args.sampler)
    data, seed = loaded.config.data, loaded.config.train.seed
    train, test = load_train_test(data.name, data.validation, seed, args.data_dir, standardize=data.standardize,
                                  preparation=loaded.preparation())
    x_test = fixed_binarization(test.images.to(next(loaded.model.parameters()).device), data.binarize, seed)
    page = run_report(loaded, x_test, test, train, iw_samples=args.iw_samples, log=stage_log(start),
                      progress=sys.stderr.isatty(), sampler=sampler, sampler_name=args.sampler,
                      factor_samples=args.samples)
    atomic_write_text(args.output, page)
    print(f"wrote {args.output} ({len(page) // 1024} KiB) in {time.perf_counter() - start:.1f} s")
    return 0
