"""`vaekit fit-sampler` and `vaekit quality`: where samples come from, and how good they are."""

from __future__ import annotations

import json
import sys
import time

from ..choices import QUALITY_CLASSIFIERS
from ..samplers import COVARIANCES, SAMPLERS
from .args import add_data_dir_argument, add_device_argument, add_run_argument, open_run, positive_int, seed_int

FITTED = tuple(name for name in SAMPLERS.names() if SAMPLERS.get(name).fitted)

FIT_HELP = f"""\
Fit a sampler of the latent space to the posterior means of the run's training images, and store it
in RUN/samplers/ (replacing an earlier fit of the same sampler). `vaekit sample`, `quality` and
`report` then draw from it with --sampler NAME. The prior's draws land in the "holes" between the
codes of real images; a fitted sampler draws where the decoder has learned to draw.

samplers:
{chr(10).join(f"  {name:11}{SAMPLERS.get(name).summary}" for name in FITTED)}

A hierarchical model's sampler is fitted to its whole flat latent (every layer, top first).

examples:
  vaekit fit-sampler runs/seed --sampler gmm --components 10
  vaekit fit-sampler runs/seed --sampler flow --epochs 20
  vaekit sample runs/seed --sampler gmm -o gmm.png
"""

QUALITY_HELP = """\
Measure samples against the run's held-out images in the 128-feature space of a small classifier
vaekit ships (MNIST, Fashion-MNIST; test accuracy in its note): FD-classifier (the Frechet distance of
FID, in this classifier's space: not FID), precision and recall (Kynkaanniemi et al. 2019, k = 3),
density (Naeem et al. 2020: precision that real outliers cannot fool),
MMD^2 with the cubic polynomial kernel (unbiased; compares the feature distributions without a
Gaussian assumption), the classifier's mean confidence, and class coverage (the overlap of the
samples' predicted classes with the real images'). Lower FD and MMD^2 are better; higher the rest.
Compare numbers measured with the same -n: FD's bias and the k-NN balls depend on it.

examples:
  vaekit quality runs/seed
  vaekit quality runs/seed --sampler gmm --json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("fit-sampler", help="fit a latent sampler (gmm, flow, two-stage) to a run",
                              description=FIT_HELP)
    add_run_argument(p)
    p.add_argument("--sampler", choices=FITTED, required=True, help=" or ".join(FITTED))
    p.add_argument("--components", type=positive_int, default=10, metavar="K",
                   help="gmm: mixture components (default 10)")
    p.add_argument("--covariance", choices=COVARIANCES, default="full", help="gmm: full or diagonal (default full)")
    p.add_argument("--epochs", type=positive_int, default=10, metavar="EPOCHS",
                   help="flow, two-stage: passes over the latents (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the fit (default 0)")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_fit)

    p = subparsers.add_parser("quality", help="how good a run's samples are, in a classifier's features",
                              description=QUALITY_HELP)
    add_run_argument(p)
    add_sampler_argument(p)
    p.add_argument("-n", type=positive_int, default=10_000, metavar="N", help="samples measured (default 10,000)")
    p.add_argument("--classifier", choices=QUALITY_CLASSIFIERS, default=None,
                   help=f"{' or '.join(QUALITY_CLASSIFIERS)}: the classifier whose features measure "
                        "(default: the run's dataset's)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_quality_command)


def add_sampler_argument(parser) -> None:
    parser.add_argument("--sampler", choices=SAMPLERS.names(), default="prior",
                        help=f"draw the latents from the prior (default) or a sampler fitted by `vaekit fit-sampler`: "
                             f"{', '.join(FITTED)}")


def run_fit(args) -> int:
    from ..errors import ConfigError
    from ..pretrained import refuse_shipped
    from ..samplers.base import SamplerConfig
    from ..samplers.store import fit_sampler, sampler_files, save_sampler

    spec = SAMPLERS.get(args.sampler)
    given = {"components": "--components", "covariance": "--covariance", "epochs": "--epochs"}
    for field, flag in given.items():
        given_here = any(a == flag or a.startswith(flag + "=") for a in getattr(args, "argv", []))
        if given_here and field not in spec.options:
            raise ConfigError(f"{flag} does not apply to the {args.sampler} sampler")
    options = {field: getattr(args, field) for field in given if field in spec.options}
    config = SamplerConfig(args.sampler, seed=args.seed, **options)
    refuse_shipped(args.run, "vaekit fit-sampler")
    loaded = open_run(args)
    existed = sampler_files(loaded.path, args.sampler)[0].exists()
    start = time.perf_counter()
    fitted = fit_sampler(loaded, config, data_dir=args.data_dir, progress=sys.stderr.isatty())
    json_path, tensor_path = save_sampler(loaded.path, fitted)
    done = fitted.record["fitted_on"]
    detail = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in done.items() if key not in ("latents", "seconds"))
    print(f"fitted the {args.sampler} sampler ({', '.join(f'{k} {v}' for k, v in options.items()) or 'defaults'}) "
          f"to {done['latents']:,} training latents in {done['seconds']:.1f} s ({detail}); "
          f"{time.perf_counter() - start:.1f} s in all; {'replaced' if existed else 'wrote'} {json_path} "
          f"and {tensor_path.name}")
    return 0


def run_quality_command(args) -> int:
    from ..quality import run_quality

    loaded = open_run(args)
    start = time.perf_counter()
    result = run_quality(loaded, args.sampler, args.n, args.seed, args.classifier, args.data_dir)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{loaded.path}, {args.sampler} sampler: {result['protocol']}")
    rows = [("FD-classifier (lower is better)", result["fd_classifier"]),
            (f"precision, k = {result['k']}", result["precision"]), (f"recall, k = {result['k']}", result["recall"]),
            ("density (about 1 for real images)", result["density"]),
            ("MMD^2, cubic kernel (lower is better)", result["mmd2"]), ("classifier confidence", result["confidence"]),
            ("class coverage", result["class_coverage"])]
    for name, value in rows:
        print(f"  {name:40} {value:10.4f}")
    print(f"  ({result['classifier']} classifier: test accuracy {result['classifier_test_accuracy']}; "
          f"{result['seconds']:.1f} s)")
    return 0
