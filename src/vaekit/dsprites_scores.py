"""A trained model's disentanglement scores on vaekit's dSprites: images drawn by factor indices, encoded to
posterior means, scored by `vaekit.disentanglement` (see docs/disentanglement.md for the protocol)."""

from __future__ import annotations

import numpy as np
import torch

from .data import dsprites
from .data.imageset import ImageSet
from .disentanglement import DEFAULT_PROTOCOL, Protocol, Represent, mig_of, sampled_mig, scores
from .representation import embed


BASE_FACTORS = (2, 3, 5, 15, 15)  # the traversals' base image: a heart, middle scale, turned a little, centred
SAMPLED_MIG_STREAM = 1  # the sampled MIG's code noise: numpy's Generator seeded with [seed, this]
TRAVERSAL_PERCENTILES = (1.0, 99.0)  # a traversed code's range: these percentiles of its posterior means


def has_factors(config) -> bool:
    """Whether a run's data has known factors (it trained on vaekit's dSprites): the report draws them."""
    from .data.dsprites_set import NAME

    return config.data.name == NAME


def protocol_for(samples: int, estimator: str = "lasso") -> Protocol:
    """The protocol with `samples` (10,000: disentanglement_lib's) in place of every sample count; test and
    evaluation sets half of it."""
    half = max(2, samples // 2)
    return Protocol(mig_samples=samples, dci_train=samples, dci_test=half, dci_estimator=estimator,
                    factor_vae_train=samples, factor_vae_eval=half, factor_vae_variance_samples=samples)


def run_posteriors(run, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (n, D) of `run` (a vaekit.runs.Run) for (n, 5) dSprites factor indices,
    on the CPU, as float64: each image drawn, then read as the run reads images for latents (`Run.inputs`)."""
    images = torch.from_numpy(dsprites.render(factors) * np.uint8(255))[:, None]  # (n, 1, 64, 64)
    x = run.inputs(ImageSet(images, None, "dsprites"), for_latents=True)
    return tuple(t.cpu().double().numpy() for t in embed(run.model, x))


def run_represent(run) -> Represent:
    """(n, 5) dSprites factor indices -> (n, D) posterior means of `run` (`run_posteriors`)."""
    return lambda factors: run_posteriors(run, factors)[0]


def run_scores(run, seed: int = 0, protocol: Protocol = DEFAULT_PROTOCOL) -> dict:
    """MIG, DCI and the FactorVAE score of `run` on dSprites, as plain JSON-ready numbers."""
    mig_images = []  # the first images `scores` encodes are MIG's (`mig_of`): kept, with their log-variances

    def represent(factors: np.ndarray) -> np.ndarray:
        mu, logvar = run_posteriors(run, factors)
        if not mig_images:
            mig_images.append((mu, logvar, factors))
        return mu

    result = scores(represent, dsprites.FACTOR_SIZES, seed, protocol)
    mig, dci, fvae = result["mig"], result["dci"], result["factor_vae"]
    # the sampled MIG on MIG's own images, its code noise from a seed of its own
    sampled = sampled_mig(*mig_images[0], np.random.default_rng([seed, SAMPLED_MIG_STREAM]))
    without_shape = [k for k, name in enumerate(dsprites.FACTOR_NAMES) if name != "shape"]
    return {"factors": list(dsprites.FACTOR_NAMES), "seed": seed,
            "protocol": {k: getattr(protocol, k) for k in protocol.__dataclass_fields__},
            "mig": mig["mig"], "mig_per_factor": [float(v) for v in mig["per_factor"]],
            "mutual_information": mig["mutual_information"].round(6).tolist(),
            "mig_sampled": sampled["mig"], "mig_sampled_per_factor": [float(v) for v in sampled["per_factor"]],
            "mig_chen": float(sampled["per_factor"][without_shape].mean()),
            "sampled_mutual_information": sampled["mutual_information"].round(6).tolist(),
            "dci_disentanglement": dci["disentanglement"], "dci_completeness": dci["completeness"],
            "dci_informativeness": dci["informativeness"], "dci_importance": dci["importance"].round(6).tolist(),
            "factor_vae_score": fvae["eval_accuracy"], "factor_vae_train_accuracy": fvae["train_accuracy"]}


@torch.no_grad()
def factor_picture(run, seed: int = 0, samples: int = 10_000, steps: int = 9) -> dict:
    """The report's picture of `run` on dSprites: MIG's (D, K) mutual information and per-factor gaps, the same
    numbers `run_scores` gives for `seed` and `samples` (the same first factor draws), and per-factor traversals:
    for factor k the latent j of most MI with it, swept over TRAVERSAL_PERCENTILES of its posterior means while the
    others keep the posterior mean of the BASE_FACTORS image; "images" (K * steps, C, H, W) in [0, 1]."""
    model = run.model
    model.require("traverse")
    result, codes = mig_of(run_represent(run), dsprites.FACTOR_SIZES, np.random.default_rng(seed),
                           protocol_for(samples))
    mi = result["mutual_information"]
    dims = mi.argmax(axis=0)  # (K,)
    low, high = np.percentile(codes, TRAVERSAL_PERCENTILES, axis=0)[:, dims]  # (K,) each
    base = torch.from_numpy(dsprites.render(np.array([BASE_FACTORS])) * np.uint8(255))[:, None]
    x = run.inputs(ImageSet(base, None, "dsprites"), for_latents=True)
    mu = model.encode(x).mode()[0]
    z = mu.repeat(len(dims) * steps, 1)
    for row, (dim, a, b) in enumerate(zip(dims.tolist(), low.tolist(), high.tolist())):
        z[row * steps:(row + 1) * steps, dim] = torch.linspace(a, b, steps, dtype=z.dtype, device=z.device)
    return {"factors": list(dsprites.FACTOR_NAMES), "seed": seed, "samples": samples, "mig": result["mig"],
            "mig_per_factor": [float(v) for v in result["per_factor"]],
            "mutual_information": mi.round(6).tolist(), "latents": dims.tolist(),
            "ranges": [[float(a), float(b)] for a, b in zip(low, high)], "images": model.pictures(z).cpu()}
