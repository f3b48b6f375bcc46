"""`vaekit plot ...`: pictures of a run's training, drawn from its metrics."""

from __future__ import annotations

from ..choices import PROJECTIONS
from ..errors import RunError
from .args import (add_data_dir_argument, add_device_argument, add_run_argument, open_run, png_path, positive_int,
                   stage_log, test_data)

PROJECTION_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}

HELP = """\
Draw a run: its training (from metrics.jsonl) or its latent space.

  kl       KL per latent dimension over the epochs (heat map) and at the end (bars), each dimension
           named as eval prints it (z0 is the first): collapsed dimensions show as dark rows and
           bars near zero, marked by a red triangle
  loss     train and test loss per epoch
  latents  the test images' posterior means in 2-D (--method pca, tsne or umap), coloured by label;
           t-SNE needs scikit-learn, UMAP umap-learn

examples:
  vaekit plot kl runs/seed -o kl.png
  vaekit plot loss runs/seed -o loss.png
  vaekit plot latents runs/seed --method tsne --points 5000 -o tsne.png
"""


PLOTS = ("kl", "loss", "latents")


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="pictures of a run's training", description=HELP)
    p.add_argument("what", choices=PLOTS, help=f"what to draw: {', '.join(PLOTS)} (see above)")
    add_run_argument(p)
    p.add_argument("-o", "--output", type=png_path, required=True, metavar="FILE.png")
    p.add_argument("--method", choices=PROJECTIONS, default="pca",
                   help=f"latents: the 2-D projection, {', '.join(PROJECTIONS)} (default pca)")
    p.add_argument("--points", type=positive_int, default=5000, help="latents: test images shown (default 5000)")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.what == "latents":
        return run_latents(args)
    from ..plots import save_kl_plot, save_loss_curve
    from ..runs import read_config, read_metrics

    read_config(args.run)  # a clear error if RUN is not a run directory
    metrics = read_metrics(args.run)
    if not metrics:
        raise RunError(f"{args.run} has no finished epoch to plot")
    if args.what == "loss":
        save_loss_curve(args.output, metrics)
    else:
        try:
            save_kl_plot(args.output, metrics, title=f"KL per latent dimension: {args.run.name}")
        except ValueError as e:
            raise RunError(f"{args.run}: {e}") from None
    print(f"wrote {args.output}")
    return 0


def run_latents(args) -> int:
    from ..plots import save_latent_scatter
    from ..representation import embed, project_2d
    from ..rng import seeded_choice

    log = stage_log()
    loaded = open_run(args)
    x, test = test_data(loaded, args, for_latents=True)
    chosen = seeded_choice(len(x), args.points, loaded.config.train.seed)
    log(f"encoding {len(chosen):,} test images...")
    mu, _ = embed(loaded.model, x[chosen])
    log(f"{PROJECTION_NAMES[args.method]} of {len(chosen):,} points in {mu.shape[1]} dimensions"
        + ("..." if args.method == "pca" else " (the slow stage; --points sets its size)..."))
    points = project_2d(mu.cpu(), args.method, loaded.config.train.seed)
    labels = None if test.labels is None else test.labels[chosen].numpy()
    classes = test.classes or tuple(str(i) for i in range(10))
    title = (f"{args.run.name}: {len(points)} test latents, "
             f"{args.method.upper() if args.method == 'pca' else args.method}")
    save_latent_scatter(args.output, points, labels, classes, title)
    log("done")
    print(f"wrote {args.output}")
    return 0
