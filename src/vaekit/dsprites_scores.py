"""A trained model's disentanglement scores on vaekit's dSprites: images drawn by factor indices, encoded to
posterior means, scored by `vaekit.disentanglement` (see docs/disentanglement.md for the protocol)."""

from __future__ import annotations

import numpy as np
import torch

from .data import dsprites
from .data.imageset import ImageSet
from .disentanglement import DEFAULT_PROTOCOL, Protocol, Represent, scores
from .representation import embed


def protocol_for(samples: int, estimator: str = "lasso") -> Protocol:
    """The protocol with `samples` (10,000: disentanglement_lib's) in place of every sample count; test and
    evaluation sets half of it."""
    half = max(2, samples // 2)
    return Protocol(mig_samples=samples, dci_train=samples, dci_test=half, dci_estimator=estimator,
                    factor_vae_train=samples, factor_vae_eval=half, factor_vae_variance_samples=samples)


def run_represent(run) -> Represent:
    """(n, 5) dSprites factor indices -> (n, D) posterior means of `run` (a vaekit.runs.Run), on the CPU, as
    float64: each image drawn, then read as the run reads images for latents (`Run.inputs`)."""

    def represent(factors: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(dsprites.render(factors) * np.uint8(255))[:, None]  # (n, 1, 64, 64)
        x = run.inputs(ImageSet(images, None, "dsprites"), for_latents=True)
        return embed(run.model, x)[0].cpu().double().numpy()

    return represent


def run_scores(run, seed: int = 0, protocol: Protocol = DEFAULT_PROTOCOL) -> dict:
    """MIG, DCI and the FactorVAE score of `run` on dSprites, as plain JSON-ready numbers."""
    result = scores(run_represent(run), dsprites.FACTOR_SIZES, seed, protocol)
    mig, dci, fvae = result["mig"], result["dci"], result["factor_vae"]
    return {"factors": list(dsprites.FACTOR_NAMES), "seed": seed,
            "protocol": {k: getattr(protocol, k) for k in protocol.__dataclass_fields__},
            "mig": mig["mig"], "mig_per_factor": [float(v) for v in mig["per_factor"]],
            "mutual_information": mig["mutual_information"].round(6).tolist(),
            "dci_disentanglement": dci["disentanglement"], "dci_completeness": dci["completeness"],
            "dci_informativeness": dci["informativeness"], "dci_importance": dci["importance"].round(6).tolist(),
            "factor_vae_score": fvae["eval_accuracy"], "factor_vae_train_accuracy": fvae["train_accuracy"]}
