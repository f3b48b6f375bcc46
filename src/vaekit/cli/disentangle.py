"""`vaekit disentanglement`: MIG, DCI and the FactorVAE score of a run on vaekit's dSprites."""

from __future__ import annotations

import json
import sys

from .args import add_device_argument, add_run_argument, png_path, positive_int, seed_int

HELP = """\
Score how well a run's latents separate dSprites' five factors (shape, scale, orientation, x, y): MIG
(Chen et al. 2018), DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018) and
the FactorVAE score (Kim & Mnih 2018), on posterior means. The images are drawn by vaekit's dSprites
generator from factor values sampled with --seed, so the run should have been trained on dSprites
(64x64 grayscale; other sizes are resized as for any input). --samples sets every sample count (10,000:
disentanglement_lib's protocol; evaluation sets are half of it); --estimator picks DCI's regressor: lasso
(no dependency) or gbt (gradient-boosted trees, needs scikit-learn). See docs/disentanglement.md.

examples:
  vaekit disentanglement runs/dsprites
  vaekit disentanglement runs/dsprites --json --seed 1 --estimator gbt
  vaekit disentanglement runs/dsprites --plot mi.png
"""


MAX_SAMPLES = 100_000  # 6.4 GB of 64x64 float32 images at most; disentanglement_lib uses 10,000

def register(subparsers) -> None:
    p = subparsers.add_parser("disentanglement", help="MIG, DCI and FactorVAE scores on dSprites", description=HELP)
    add_run_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seed", type=seed_int, default=0, metavar="SEED", help="the seed of the factor draws (default 0)")
    p.add_argument("--samples", type=positive_int, default=10_000, metavar="N",
                   help=f"samples per score (default 10000, at most {MAX_SAMPLES:,})")
    p.add_argument("--estimator", choices=("lasso", "gbt"), default="lasso",
                   help="DCI's regressor: lasso (default) or gbt (scikit-learn)")
    p.add_argument("--plot", type=png_path, metavar="FILE.png",
                   help="also draw the latent x factor mutual information (MIG's) as a heatmap with its numbers")
    add_device_argument(p)
    p.set_defaults(func=run_disentanglement)


def run_disentanglement(args) -> int:
    from ..errors import ConfigError
    from ..dsprites_scores import protocol_for, run_scores
    from .args import open_run

    if not 2 <= args.samples <= MAX_SAMPLES:  # each score holds its samples' images and codes in memory
        raise ConfigError(f"--samples must be from 2 to {MAX_SAMPLES:,}, got {args.samples}")
    if args.estimator == "gbt":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ConfigError("--estimator gbt needs scikit-learn: pip install 'vaekit[tsne]'") from None
    run = open_run(args)
    print(f"scoring on {args.samples} samples per score...", file=sys.stderr)
    result = run_scores(run, args.seed, protocol_for(args.samples, args.estimator))
    if args.plot is not None:
        import numpy as np

        from ..plots import save_mutual_information

        save_mutual_information(args.plot, np.array(result["mutual_information"]), result["factors"],
                                result["mig_per_factor"], f"Mutual information of each latent with each factor "
                                f"({args.samples:,} drawn images, seed {args.seed}); MIG {result['mig']:.3f}")
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"MIG                 {result['mig']:.4f}   per factor " +
          " ".join(f"{n} {v:.3f}" for n, v in zip(result["factors"], result["mig_per_factor"])))
    print(f"MIG, sampled codes  {result['mig_sampled']:.4f}   per factor " +
          " ".join(f"{n} {v:.3f}" for n, v in zip(result["factors"], result["mig_sampled_per_factor"])) +
          f"   (without shape, as Chen et al.'s code: {result['mig_chen']:.4f})")
    print(f"DCI ({args.estimator})         disentanglement {result['dci_disentanglement']:.4f}   "
          f"completeness {result['dci_completeness']:.4f}   informativeness {result['dci_informativeness']:.4f}")
    print(f"FactorVAE score     {result['factor_vae_score']:.4f}")
    return 0
