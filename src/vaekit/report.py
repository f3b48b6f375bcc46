"""A run's report: one self-contained HTML page (images inlined) gathering everything about the run.

`run_report` computes and draws (returning the page as a string); the CLI writes it. The page checks
on load that every image decoded and records the count in <body data-images-loaded="n/m">, which
the tests read back from headless Chromium.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import __version__
from .data import ImageSet
from .dsprites_scores import factor_picture, has_factors
from .errors import DataError
from .evaluate import dims_by_usage, evaluate_elbo, importance_weighted_nll, posterior_diagnostics
from .generate import interpolate, reconstruct, sample, traverse, traverse_values
from .plots import (factor_traversal_picture, gif_bytes, grid_png, kl_plot_png, latent_scatter_png, loss_curve_png,
                    mutual_information_png, png_bytes, traverse_picture)
from .representation import knn_accuracy, posterior_features, probe_accuracy, project_2d
from .rng import make_generator
from .runs import Run

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 560px; } img { image-rendering: pixelated; }
.note { color: #555; font-size: 0.9em; }
"""

CHECK_IMAGES = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + images.length;
});
"""


def image(data: bytes, caption: str, mime: str = "image/png", width: int | None = None) -> str:
    """A <figure> with the image inlined as a data URI."""
    source = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    size = f' width="{width}"' if width else ""
    return (f'<figure><img src="{source}" alt="{html.escape(caption)}"{size}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table(rows: list[list], header: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f'<td class="n">{value:.3f}</td>'
        if isinstance(value, int):
            return f'<td class="n">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


@torch.no_grad()
def run_report(run: Run, x_test: torch.Tensor, test: ImageSet, train: ImageSet | None = None, iw_samples: int = 100,
               scatter_points: int = 3000, log: Callable[[str], object] = lambda line: None,
               progress: bool = False, sampler: Any = None, sampler_name: str = "prior",
               factor_samples: int = 10_000) -> str:
    """The report page for `run`, given its test inputs prepared as for training (`fixed_binarization`),
    the test images (labels, classes) and, for the probes, the training images. `log` is told of each
    stage as it begins; `progress` shows a bar during the NLL, the longest. `sampler` (vaekit.samplers), where
    given, draws the samples shown in place of the prior; `sampler_name` says which in the caption. For a run on
    data with known factors (dSprites), a section draws per-factor traversals and the latent x factor mutual
    information from `factor_samples` drawn images (`dsprites_scores.factor_picture`, seed 0: the numbers of
    `vaekit disentanglement RUN --samples N`), its numbers also in <script id="factor-data">."""
    if len(x_test) < 2:  # it interpolates between test images 0 and 1, and measures spreads
        raise DataError(f"{run.path}'s held-out set has {len(x_test)} image(s); a report needs at least 2")
    started = time.perf_counter()
    model, config, seed = run.model, run.config, run.config.train.seed
    sections = []

    config_rows = [[section, key, str(value)] for section, fields in config.in_effect().items()
                   for key, value in fields.items()]
    sections.append(("Configuration", table(config_rows, ["section", "field", "value"])))

    if run.metrics:
        rows = [[m["epoch"], m["train_loss"], m["test_loss"], m.get("test_kl", float("nan")),
                 m.get("test_reconstruction", float("nan")), m.get("active_units", ""), m["seconds"]]
                for m in run.metrics]
        body = image(loss_curve_png(run.metrics), "Train and test loss per epoch (negative ELBO, nats per image)")
        body += table(rows, ["epoch", "train loss", "test loss", "rate (KL)", "distortion", "active units", "seconds"])
        sections.append(("Training", body))

    log(f"test ELBO and NLL of {len(x_test):,} images ({iw_samples} importance samples each)...")
    elbo = evaluate_elbo(model, x_test, seed)
    nll = importance_weighted_nll(model, x_test, iw_samples, seed, progress=progress).mean().item()
    diagnostics = posterior_diagnostics(model, x_test)
    rows = [["negative ELBO", elbo["test_loss"]], ["reconstruction (distortion)", elbo["reconstruction"]],
            ["KL (rate)", elbo["kl"]], [f"NLL, {iw_samples} importance samples", nll],
            ["active units", f"{diagnostics['active_units']} of {model.latent_dim}"]]
    rows += [[f"KL of layer {name} (at the posterior means)", kl]
             for name, kl in (diagnostics.get("kl_per_layer") or {}).items() if kl is not None]
    body = table(rows, ["test set (nats per image)", "value"])
    if run.metrics and any(m.get("kl_per_dim") for m in run.metrics):
        body += image(kl_plot_png(run.metrics), "KL per latent dimension over training; near-zero rows are collapsed")
    sections.append(("Evaluation and collapse diagnostics", body))

    log("samples, reconstructions, an interpolation and traversals...")
    generator = make_generator(seed)
    inputs = x_test[:10]
    body = image(grid_png(sample(model, 64, generator, sampler), nrow=8, scale=2),
                 "64 samples from the prior" if sampler is None else f"64 samples from the {sampler_name} sampler")
    body += image(grid_png(torch.cat([inputs, reconstruct(model, inputs)]), nrow=10, scale=2),
                  "Test images (top) and their reconstructions (bottom)")
    sections.append(("Samples and reconstructions", body))

    order = dims_by_usage(diagnostics)
    path = interpolate(model, x_test[0], x_test[1], 10, "slerp")
    body = image(grid_png(path, nrow=10, scale=2), "Spherical interpolation between test images 0 and 1")
    body += image(gif_bytes(path, scale=4), "The same path, animated", mime="image/gif")
    picture = traverse_picture(traverse(model, x_test[0], order[:8], 9), order[:8], traverse_values(9).tolist(),
                               "test image 0", scale=2)
    body += image(png_bytes(picture), "Traversals: one latent dimension per row over [-3, 3], most used (by KL) first")
    sections.append(("Interpolations and traversals", body))

    binarize = config.data.binarize
    log(f"the latent space of {len(test):,} test images (PCA)...")
    test_features = posterior_features(model, test.images, binarize, seed)  # of the top layer
    means = slice(0, test_features.shape[1] // 2)  # then the log-variances
    chosen = torch.randperm(len(test_features), generator=make_generator(seed))[:scatter_points]
    labels = None if test.labels is None else test.labels[chosen].numpy()
    points = project_2d(test_features[chosen, means], "pca", seed)
    body = image(latent_scatter_png(points, labels, test.classes or tuple(map(str, range(10))),
                                    f"{len(points)} test latents (PCA of the posterior means)"), "Latent space")
    if train is not None and train.labels is not None and test.labels is not None:
        log(f"kNN probe on the latents of {len(train):,} training images...")
        train_features = posterior_features(model, train.images, binarize, seed)
        knn = knn_accuracy(train_features[:, means], train.labels, test_features[:, means], test.labels, ks=(1, 5, 10))
        log("linear probe...")
        linear = probe_accuracy(train_features, train.labels, test_features, test.labels)
        rows = [[f"kNN, k={k}", acc] for k, acc in knn.items()] + [["linear probe (means and log-variances)", linear]]
        body += table(rows, ["probe (test accuracy)", "value"])
        body += '<p class="note">vaekit probe RUN adds semi-supervised probes and a raw-pixel reference.</p>'
    sections.append(("Latent space and probes", body))

    if has_factors(config):
        log(f"per-factor traversals and the mutual information of {factor_samples:,} drawn dSprites images...")
        sections.append(("Factors of variation (dSprites)", factor_section(run, factor_samples)))

    title = f"vaekit report: {run.path.name}"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">{html.escape(str(run.path))}; written by vaekit {__version__} on {stamp} '
             f"in {time.perf_counter() - started:.1f} s.</p>"]
    parts += [f"<h2>{html.escape(heading)}</h2>{body}" for heading, body in sections]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{CHECK_IMAGES}</script></body></html>\n")


def factor_section(run: Run, samples: int) -> str:
    """The report's section on known factors: per-factor traversals, the MI heatmap, a table, the numbers as JSON."""
    picture = factor_picture(run, seed=0, samples=samples)
    factors, dims, gaps = picture["factors"], picture["latents"], picture["mig_per_factor"]
    mi = np.array(picture["mutual_information"])
    steps = len(picture["images"]) // len(factors)
    body = image(png_bytes(factor_traversal_picture(picture["images"], factors, dims, steps, "a heart (shape 2, "
                                                    "scale 3, orientation 5, x 15, y 15)", scale=2)),
                 "Per-factor traversals: one row per factor, the latent of most mutual information with it")
    body += image(mutual_information_png(mi, factors, gaps, f"Mutual information of each latent with each factor "
                                         f"({samples:,} drawn images, seed 0); MIG {picture['mig']:.3f}"),
                  "Latent x factor mutual information (nats), as MIG measures it (20 bins); bold: each factor's "
                  "top latent")
    rows = [[name, f"z{d}", float(mi[d, k]), float(np.sort(mi[:, k])[-2]) if len(mi) > 1 else 0.0, gaps[k],
             f"{a:.2f} to {b:.2f}"] for k, (name, d, (a, b)) in enumerate(zip(factors, dims, picture["ranges"]))]
    body += table(rows, ["factor", "top latent", "its MI (nats)", "second MI", "MIG gap (normalized)",
                         "traversed range"])
    body += (f'<p class="note">MIG {picture["mig"]:.4f}. vaekit disentanglement RUN --samples {samples} gives the '
             "same numbers, with DCI and the FactorVAE score.</p>")
    data = {k: v for k, v in picture.items() if k != "images"}
    text = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the script
    body += f'<script type="application/json" id="factor-data">{text}</script>'
    return body
