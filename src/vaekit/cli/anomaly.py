"""`vaekit score` and `vaekit calibrate`: anomaly scores for any images, and a threshold fitted on normal ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..choices import CALIBRATE_RULE, MIXTURE_RULES, SCORE_METHODS
from ..errors import ConfigError
from ..tables import csv_text
from .args import (DeprecatedAlias, add_data_dir_argument, add_device_argument, add_invert_argument, add_run_argument,
                   finite_float, iw_count, model_inputs, open_run, png_path)

METHOD_HELP = {  # what each of SCORE_METHODS scores, for --help
    "elbo": "the negative ELBO", "iwae": "the importance-sampled NLL", "recon": "the reconstruction term",
    "mse": "the squared error of the reconstruction, not in nats",
    "complexity": "the negative ELBO in bits less the image's PNG length", "ratio": "the negative ELBO less "
    "--background's",
}

SCORE_HELP = """\
Score images for how anomalous they are under a trained run: per image, a score (higher is more
anomalous: --method elbo, the negative ELBO; iwae, the importance-sampled NLL; recon, the
reconstruction term, all in nats; mse, the squared error of the reconstruction; complexity, the
negative ELBO less the image's PNG length at a rate fitted on normal images, so that simple images
do not pass for normal (Serra et al. 2020); ratio, the negative ELBO less that of --background RUN,
a run trained on noised images (Ren et al. 2019)) and, if a threshold is known, the decision. The
method is the calibrated one (vaekit calibrate picks complexity), else elbo.
INPUT is a built-in split (mnist:test), an IDX, .npy or .npz file, an image, or a folder of images
of any sizes; images are made the run's size and channels as its training images were (a folder's
one by one as they are read: the shorter side resized, the centre cropped), then standardized (if
the run was trained with --standardize) and binarized as in its training. Images whose polarity is
the reverse of the run's training images (dark on light for a run of light digits on black) are
said in a warning; an inverted image is itself an anomaly, so score leaves them as they are unless
--invert auto (or on) inverts them.
For the best detector, train with --likelihood gaussian-shared --standardize
(docs/anomaly-detection.md).

--mixture RUN2 RUN3 ... scores with RUN and those runs as one detector: train one run per kind of
normal image (say, per digit) and mix them; they must share RUN's image size, likelihood,
--standardize and --binarize. --combine says how: density (default) is the equal-weight mixture of
their likelihoods (-log of the mean, in nats); typical measures each run's score in standard
deviations of the scores it gives its own held-out images and takes the smallest, so an image is
normal if it is as likely as some run's own normal images (the better detector on the benchmark,
docs/anomaly-detection.md); calibrate stores those references, else score measures them.

Writes CSV (index, name, label, score, anomaly) to -o FILE.csv, JSON lines to -o FILE.jsonl, or
CSV to stdout. The threshold is the run's calibrated one (vaekit calibrate) unless --threshold
is given; with neither, the anomaly column is empty.

examples:
  vaekit score runs/digits mnist:test -o scores.csv
  vaekit score runs/digits my_scans/ --method iwae --iw-samples 200 -o scores.jsonl
  vaekit score runs/digits suspicious.png --threshold 130
  vaekit score runs/digits mnist:test -o scores.csv --extremes extremes.png
  vaekit score runs/digit0 mnist:test --mixture runs/digit1 runs/digit2 -o scores.csv
  vaekit score runs/digit0 mnist:test --combine typical --mixture runs/digit1 runs/digit2 -o scores.csv
"""

CALIBRATE_HELP = """\
Fit an anomaly threshold on held-out normal images and store it in the run (threshold.json): the
score at --quantile of half of them, with the false-positive rate measured on the other half. The
score is --method complexity unless told (with --mixture, elbo): the negative ELBO less the image's
PNG length at the exchange rate that holds on these normal images, also stored, which keeps simple
out-of-distribution images (MNIST digits to a Fashion-MNIST model, blank images) from passing for
normal ones (docs/anomaly-detection.md). --combine typical-set scores the distance from the normal
scores both ways, so an image far likelier than normal is an anomaly too. The
normal images are the run's held-out set (its dataset's test split, or the validation share of your
own images) unless INPUT names others (any image source, as score's INPUT). With --mixture, the
threshold is for that mixture's scores (score then needs the same --mixture and --combine);
calibrate it on an INPUT of normal images of every kind.

examples:
  vaekit calibrate runs/digits
  vaekit calibrate runs/digits --quantile 0.995 --method iwae
  vaekit calibrate runs/digits normal_batch.npy
  vaekit calibrate runs/digits --method ratio --background runs/digits-noised
  vaekit calibrate runs/digits --method elbo --combine typical-set
  vaekit calibrate runs/digit0 normal_batch.npy --mixture runs/digit1 runs/digit2
  vaekit calibrate runs/digit0 normal_batch.npy --combine typical --mixture runs/digit1 runs/digit2
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("score", help="per-image anomaly scores", description=SCORE_HELP)
    add_run_argument(p)
    p.add_argument("input", metavar="INPUT", help="images to score (a split, file or folder)")
    add_method_arguments(p)
    p.add_argument("--threshold", type=finite_float, help="flag scores above this (default: the run's calibrated one)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="FILE.csv, FILE.jsonl or - (CSV on stdout, the default)")
    p.add_argument("--extremes", type=png_path, metavar="FILE.png",
                   help="also draw the 16 most anomalous inputs (top two rows) and the 16 least (bottom two)")
    add_invert_argument(p, "off")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_score)

    p = subparsers.add_parser("calibrate", help="fit an anomaly threshold on normal images",
                              description=CALIBRATE_HELP)
    add_run_argument(p)
    p.add_argument("input", metavar="INPUT", nargs="?", default=None,
                   help="normal images to calibrate on, a split, file or folder (default: the run's held-out set)")
    p.add_argument("--quantile", type=float, default=0.99, help="of the normal scores (default 0.99)")
    add_method_arguments(p)
    p.add_argument("--data", dest="data_alias", action=DeprecatedAlias, instead="the positional INPUT: "
                   "vaekit calibrate RUN {value}")
    add_invert_argument(p, "off")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_calibrate)


def add_method_arguments(p) -> None:
    p.add_argument("--method", choices=SCORE_METHODS, default=None,
                   help="; ".join(f"{method}: {METHOD_HELP[method]}" for method in SCORE_METHODS)
                   + " (default elbo; score uses the calibrated method by default)")
    p.add_argument("--iw-samples", type=iw_count, default=100, metavar="K", help="for iwae (default 100)")
    p.add_argument("--mixture", type=Path, nargs="+", default=[], metavar="RUN",
                   help="score with RUN and these runs as one detector (elbo, iwae or recon); "
                        "after the positional arguments")
    p.add_argument("--combine", choices=MIXTURE_RULES, default=None,
                   help="density: the score as it is, with --mixture the mixture's (nats); typical: with --mixture, "
                        "in standard deviations of each run's own held-out scores, the smallest; typical-set: the "
                        "same both ways, |z|, for one run too (score uses the calibrated rule by default)")
    p.add_argument("--background", type=Path, default=None, metavar="RUN",
                   help="for --method ratio: a run trained on the training images with a share of their pixels "
                        "replaced by noise (score uses the calibrated one by default)")


def run_score(args) -> int:
    if args.output and str(args.output) == "-":
        args.output = None  # -o -: CSV on stdout, as without -o
    if args.output and args.output.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"-o must end in .csv or .jsonl (or - for CSV on stdout), got {args.output}")
    if args.output:
        from ..atomic import check_target

        check_target(args.output)  # now, not after the work
    import torch

    from ..atomic import atomic_write_text
    from ..detector import Detector
    from ..plots import extremes_picture, save_picture

    loaded = open_run(args)
    detector = Detector.load(loaded, args.mixture, method=args.method, combine=args.combine,
                             iw_samples=args.iw_samples, threshold=args.threshold, data_dir=args.data_dir,
                             progress=sys.stderr.isatty(), background=args.background)
    from ..data.streamed import streamed_inputs

    # a dataset cache is read by slices (as the run's training prepared it); anything else whole, prepared as the run's
    streamed = streamed_inputs(loaded.config, args.input, next(loaded.model.parameters()).device)
    x, names, labels = streamed or model_inputs(loaded, args.input, args.data_dir, invert=args.invert)
    result = detector.score(x)  # under torchrun, the processes share the images; the main process writes
    from ..distributed import world

    if not world().is_main():
        return 0
    if args.extremes:
        order = torch.argsort(result.scores, descending=True)
        n = min(16, len(order) // 2) or 1
        chosen = torch.cat([order[:n], order[-n:]]).tolist()
        save_picture(args.extremes, extremes_picture(x[chosen].float(), result.scores[chosen].tolist(),
                                                     [names[i] for i in chosen], n))
    anomaly = [None] * len(names) if result.anomaly is None else [int(a) for a in result.anomaly.tolist()]
    rows = [{"index": i, "name": name, "label": label, "score": round(score, 4), "anomaly": flag}
            for i, (name, label, score, flag) in enumerate(zip(names, labels, result.scores.tolist(), anomaly))]
    text = to_jsonl(rows) if args.output and args.output.suffix == ".jsonl" else to_csv(rows)
    if args.output:
        atomic_write_text(args.output, text)
        flagged = ("" if result.threshold is None
                   else f", {sum(r['anomaly'] for r in rows)} above the threshold {result.threshold:.3f}")
        print(f"scored {len(rows)} images ({detector.method}){flagged}: {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run_calibrate(args) -> int:
    if not 0 < args.quantile < 1:
        raise ConfigError(f"--quantile must be between 0 and 1, got {args.quantile}")
    if args.input is not None and getattr(args, "data_alias", None) is not None:
        raise ConfigError("give the normal images once: as INPUT (--data is its former spelling)")
    source = args.input if args.input is not None else getattr(args, "data_alias", None)
    from ..anomaly import quantile_support
    from ..detector import Detector
    from ..pretrained import refuse_shipped

    refuse_shipped(args.run, "vaekit calibrate")  # before the work, not at its end
    loaded = open_run(args)
    detector = Detector(loaded, args.mixture, method=args.method,
                        combine=args.combine or CALIBRATE_RULE, iw_samples=args.iw_samples, data_dir=args.data_dir,
                        progress=sys.stderr.isatty(), background=args.background)
    images = model_inputs(loaded, source, args.data_dir, invert=args.invert)[0] if source else None
    result = detector.calibrate(images, args.quantile, data=source)
    detector.save()
    if warning := quantile_support(result["fitted_on"], args.quantile):
        print(f"vaekit: warning: {warning}", file=sys.stderr)
    how = f"{detector.method}, {detector.combine} rule" if args.mixture or detector.combine != "density" \
        else detector.method
    print(f"threshold {result['threshold']:.3f} ({how}, quantile {args.quantile}) stored in "
          f"{args.run / 'threshold.json'}; false-positive rate on {result['measured_on']} other normal images: "
          f"{result['false_positive_rate']:.4f}")
    return 0


def to_csv(rows: list[dict]) -> str:
    fields = ["index", "name", "label", "score", "anomaly"]
    return csv_text(fields, [["" if row[k] is None else row[k] for k in fields] for row in rows])


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)
