"""How a decoder shapes the position code: beta-TCVAE on dSprites' position factors alone (one sprite at all 32 x 32
positions), per architecture, and how each active latent's posterior mean follows x and y. Prints one JSON object;
progress on stderr.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/position_codes.py --architectures mlp broadcast:build

The 1,024 images (a square at scale 1, orientation 0, by `vaekit.data.dsprites.render`) are repeated `--repeats`
times per epoch; beta 1, tc-beta 6, 10 latents, constant Adam learning rate, bf16. After every epoch, on the 1,024
images: the MIG of x and y on sampled codes (`vaekit.disentanglement.sampled_mig`, Chen et al.'s estimator), and
for every latent whose KL exceeds 0.5 nats, its KL, its sampled mutual information with x and with y, and R^2 of
its posterior mean against a plane a + b x + c y. R^2 near 1: the latent is a linear (perhaps rotated) function
of the position, which the TC term can turn onto the axes; well below 1: a folded or stepped code (a latent that
takes a few values, or a path that turns corners), which splits a factor over several latents whatever the TC
term does. `--architecture broadcast:build` is benchmarks/broadcast.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.data import dsprites  # noqa: E402
from vaekit.data.batches import to_unit  # noqa: E402
from vaekit.data.imageset import ImageSet  # noqa: E402
from vaekit.disentanglement import sampled_mig  # noqa: E402
from vaekit.fit import fit  # noqa: E402
from vaekit.models.posterior import DiagonalGaussian  # noqa: E402
from vaekit.representation import embed  # noqa: E402

ACTIVE_KL = 0.5  # nats: a latent carrying less is counted as unused


def position_images(shape: int, scale: int) -> tuple[torch.Tensor, np.ndarray]:
    """(1024, 1, 64, 64) uint8 0/255 images of one sprite at every x, y, and their (1024, 2) x, y indices."""
    xy = np.array([(shape, scale, 0, x, y) for x in range(dsprites.POSITIONS) for y in range(dsprites.POSITIONS)])
    return torch.from_numpy(dsprites.render(xy) * np.uint8(255))[:, None], xy[:, 3:]


def plane_r2(values: np.ndarray, xy: np.ndarray) -> float:
    """R^2 of the least-squares plane a + b x + c y through `values` (N,)."""
    design = np.column_stack([np.ones(len(xy)), xy.astype(np.float64)])
    fitted = design @ np.linalg.lstsq(design, values, rcond=None)[0]
    total = ((values - values.mean()) ** 2).sum()
    return float(1 - ((values - fitted) ** 2).sum() / total) if total > 0 else 0.0


def describe(model, images: torch.Tensor, xy: np.ndarray) -> dict:
    """The position code of `model` on `images`: MIG of x and y on sampled codes, and each active latent."""
    posterior = DiagonalGaussian(*(t.double() for t in embed(model, to_unit(images))))
    mu, logvar = posterior.mu.numpy(), posterior.logvar.numpy()
    sampled = sampled_mig(mu, logvar, xy, np.random.default_rng(0))
    kl = posterior.kl_per_dim().mean(0).numpy()
    latents = [{"latent": int(j), "kl": round(float(kl[j]), 2),
                "mi_x": round(float(sampled["mutual_information"][j, 0]), 2),
                "mi_y": round(float(sampled["mutual_information"][j, 1]), 2),
                "plane_r2": round(plane_r2(mu[:, j], xy), 3)}
               for j in np.argsort(-kl) if kl[j] > ACTIVE_KL]
    return {"mig_x": round(float(sampled["per_factor"][0]), 3), "mig_y": round(float(sampled["per_factor"][1]), 3),
            "active": latents}


class Record:
    """A callback: `describe` after every epoch, kept in `curve` and printed to stderr."""

    def __init__(self, architecture: str, images: torch.Tensor, xy: np.ndarray):
        self.architecture, self.images, self.xy, self.curve = architecture, images, xy, []

    def __call__(self, epoch) -> None:
        point = {"epoch": epoch.epoch, "test_loss": round(float(epoch.metrics["test_loss"]), 2),
                 **describe(epoch.model, self.images, self.xy)}
        self.curve.append(point)
        print(json.dumps({"architecture": self.architecture, **point}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", nargs="+", default=["mlp", "broadcast:build"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8, help="copies of the 1,024 images per epoch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), default=(512, 512))
    parser.add_argument("--tc-beta", type=float, default=6.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, xy = position_images(shape=0, scale=5)
    results = []
    for architecture in args.architectures:
        config = RunConfig(
            data=DataConfig(name="dsprites-positions", binarize="none", validation=0.02),
            model=ModelConfig(input_shape=(1, dsprites.SIZE, dsprites.SIZE), architecture=architecture,
                              hidden_dims=args.hidden, latent_dim=10),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule="constant",
                              seed=args.seed, precision="bf16", beta=1.0, tc_beta=args.tc_beta))
        record = Record(architecture, images, xy)
        cpu = time.process_time()
        with tempfile.TemporaryDirectory() as out:
            fit(config, Path(out) / "run", images=ImageSet(images.repeat(args.repeats, 1, 1, 1), None,
                                                           "dsprites-positions"),
                device="cpu", callbacks=[record])
        results.append({"architecture": architecture, "train_cpu_s": round(time.process_time() - cpu, 1),
                        "final": record.curve[-1], "curve": record.curve})
    print(json.dumps({"benchmark": "position_codes", "machine": machine(),
                      "budget": {"images": 1024, "repeats": args.repeats, "epochs": args.epochs, "batch": args.batch,
                                 "lr": args.lr, "hidden": list(args.hidden), "tc_beta": args.tc_beta,
                                 "seed": args.seed},
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
