"""Disentanglement on vaekit's dSprites: VAE (beta 1), beta-VAE (beta 4) and beta-TCVAE (beta 1, --tc-beta 6, as in
Chen et al. 2018), several seeds each, the same training budget for all (images, epochs, batch size, so the same
optimizer steps; the same architecture, learning rate and schedule), scored by vaekit's MIG, DCI and FactorVAE
score (`vaekit.dsprites_scores`, the protocol of docs/disentanglement.md). Prints one JSON object; progress on
stderr.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/disentanglement.py --workdir /tmp/disbench > result.json
    PYTHONPATH=src python benchmarks/disentanglement.py --models beta-tcvae --seeds 1 --epochs 8 --curve 5000

Training images: a seeded subset (`--images`, default 100,000, seed `--subset-seed`) of the 737,280, drawn by
`vaekit.data.dsprites.render` and held in memory as uint8 (100,000 images: 410 MB; the whole set would be 3 GB).
Every model and seed trains on the same subset; `--validation` of it is held out for the test ELBO. The scores
never read it: they render fresh images from sampled factors.

`--curve N`: after every epoch, MIG on N fixed images (seed 0), to see how it grows with steps (not the
table's protocol). `--samples` and `--fvae-votes` set the scoring protocol (defaults: disentanglement_lib's
10,000 samples and 10,000 + 5,000 FactorVAE votes). CPU seconds are this process's, at one thread.
Each finished run's row is also appended to WORKDIR/results.jsonl as it comes.

`--whole`: train on dSprites' whole training split (`--data dsprites`: all 737,280 images, streamed from the
packed file; its test split is a sample of them) instead of an in-memory subset, as Chen et al. do. `--resume`: a
model and seed whose run directory already holds a run goes on from its last finished epoch (`vaekit.resume`) up
to `--epochs`, so a long run spans several invocations (the curve and CPU seconds count this invocation only; the
curve's points are also appended, as they come, to WORKDIR/curve-MODEL-seedS.jsonl). `--architecture chen_mlp:build`:
Chen et al.'s own networks (benchmarks/chen_mlp.py: a three-layer tanh decoder). `--architecture broadcast:build`:
vaekit's MLP encoder with a spatial broadcast decoder (benchmarks/broadcast.py, Watters et al. 2019), the setting of
the issue's table in BENCHMARKS.md (MIG 0.35 at beta-TCVAE's best seed in 3,064 steps of batch 64).

`--score RUN ...`: score runs as they stand (a long run stopped between invocations, say) with the protocol; one
JSON row per run, with its finished epochs and steps; nothing is trained.

`--merge A.json B.json ...`: one table from several runs of this script (say one per model, run side by side),
which must share the budget and the protocol; nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mb  # noqa: E402

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.data import dsprites, dsprites_set  # noqa: E402
from vaekit.data.imageset import ImageSet  # noqa: E402
from vaekit.disentanglement import mig, sample_factors  # noqa: E402
from vaekit.dsprites_scores import protocol_for, run_scores  # noqa: E402
from vaekit.fit import fit, resume  # noqa: E402
from vaekit.runs import has_finished_epoch, load_run  # noqa: E402

# The three objectives: TrainConfig's beta weighs the KL (or, with tc_beta, the mutual information and the
# dimension-wise KL) and tc_beta the total correlation (vaekit.total_correlation, MWS).
MODELS = {"vae": {"beta": 1.0, "tc_beta": None},
          "beta-vae": {"beta": 4.0, "tc_beta": None},
          "beta-tcvae": {"beta": 1.0, "tc_beta": 6.0}}
METRICS = ("mig", "mig_sampled", "mig_chen", "dci_disentanglement", "dci_completeness", "dci_informativeness",
           "factor_vae_score")

# Published numbers for the same models on DeepMind's dSprites, with where each comes from. None: not found as a
# number in a source we could read here (the papers give most of them as plots).
PUBLISHED = {
    "chen2018_mig": {
        "source": "Chen et al. 2018, Isolating Sources of Disentanglement in VAEs (NeurIPS), MIG vs beta plot on "
                  "dSprites; MIG there leaves the shape factor out and uses the posterior's samples",
        "vae": None, "beta-vae": None, "beta-tcvae": None},
    "locatello2019": {
        "source": "Locatello et al. 2019, Challenging Common Assumptions (ICML), 12,000-model study, box plots "
                  "per method and dataset",
        "vae": None, "beta-vae": None, "beta-tcvae": None},
}


def subset(n: int, seed: int) -> tuple[ImageSet, np.ndarray]:
    """`n` dSprites images drawn without replacement by a seeded generator, as uint8 0/255 (n, 1, 64, 64)."""
    numbers = np.sort(np.random.default_rng(seed).choice(dsprites.COUNT, n, replace=False))
    images = torch.from_numpy(dsprites.render(dsprites.indices_of(numbers)) * np.uint8(255))[:, None]
    return ImageSet(images, None, f"dsprites-subset-{n}-seed{seed}"), numbers


def config_for(args, model: str, seed: int) -> RunConfig:
    """One run's config: the shared budget and architecture, the model's objective, the seed."""
    data = (DataConfig(name=dsprites_set.NAME, binarize="none") if args.whole else
            DataConfig(name=f"dsprites-subset-{args.images}-seed{args.subset_seed}", binarize="none",
                       validation=args.validation))
    return RunConfig(
        data=data,
        model=ModelConfig(input_shape=(1, dsprites.SIZE, dsprites.SIZE), architecture=args.architecture,
                          hidden_dims=args.hidden, latent_dim=args.latent),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule=args.schedule,
                          seed=seed, precision=args.precision, compile=args.compile, **MODELS[model]))


class MigCurve:
    """A callback: MIG on fixed images after every epoch, with the CPU seconds and optimizer steps so far."""

    def __init__(self, samples: int, steps_per_epoch: int, start: float, log: Path):
        self.factors = sample_factors(dsprites.FACTOR_SIZES, samples, np.random.default_rng(0))
        self.steps_per_epoch, self.start, self.points, self.log = steps_per_epoch, start, [], log
        self.wall = time.perf_counter()

    def __call__(self, epoch) -> None:
        cpu = time.process_time() - self.start
        from vaekit.representation import embed
        x = torch.from_numpy(dsprites.render(self.factors).astype(np.float32))[:, None]
        codes = embed(epoch.model, x)[0].double().numpy()
        score = mig(codes, self.factors)
        point = {"epoch": epoch.epoch, "steps": epoch.epoch * self.steps_per_epoch, "train_cpu_s": round(cpu, 1),
                 "wall_s": round(time.perf_counter() - self.wall, 1),
                 "mig": round(score["mig"], 4), "mig_per_factor": [round(float(v), 3) for v in score["per_factor"]],
                 "test_loss": round(float(epoch.metrics["test_loss"]), 2)}
        self.points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)
        with open(self.log, "a") as out:
            out.write(json.dumps(point) + "\n")


def summary(results: list[dict]) -> dict:
    """Per model and metric: mean, min, max and the per-seed values."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == model]
        out[model] = {m: {"mean": round(statistics.fmean(r["scores"][m] for r in rows), 4),
                          "min": round(min(r["scores"][m] for r in rows), 4),
                          "max": round(max(r["scores"][m] for r in rows), 4),
                          "seeds": [round(r["scores"][m], 4) for r in rows]}
                      for m in METRICS if all(m in r["scores"] for r in rows)}  # older outputs lack the sampled MIG
    return out


def targets(table: dict) -> dict:
    """The issue's must-shows: beta-TCVAE > beta-VAE > VAE in mean MIG, and beta-TCVAE's best seed >= 0.3."""
    have = all(m in table for m in MODELS)
    return {"ordering_tcvae_gt_betavae_gt_vae": have and table["beta-tcvae"]["mig"]["mean"]
            > table["beta-vae"]["mig"]["mean"] > table["vae"]["mig"]["mean"],
            "tcvae_best_seed_mig_ge_0.3": "beta-tcvae" in table and table["beta-tcvae"]["mig"]["max"] >= 0.3}


def merged(paths: list[Path]) -> dict:
    """One result from several outputs of this script with the same budget and protocol."""
    parts = [json.loads(path.read_text()) for path in paths]
    for key in ("budget", "protocol", "score_seed"):
        if any(part[key] != parts[0][key] for part in parts):
            raise SystemExit(f"the outputs differ in {key}: they are not one benchmark")
    results = [row for part in parts for row in part["results"]]
    table = summary(results)
    return {**parts[0], "merged_from": [str(p) for p in paths], "results": results, "table": table,
            "targets": targets(table), "total_cpu_s": round(sum(part["total_cpu_s"] for part in parts), 1),
            "peak_rss_mb": max(part["peak_rss_mb"] for part in parts)}


def scoring_protocol(args):
    protocol = protocol_for(args.samples)
    if args.fvae_votes is not None:
        protocol = replace(protocol, factor_vae_train=args.fvae_votes, factor_vae_eval=max(2, args.fvae_votes // 2))
    return protocol


def score_fields(scores: dict) -> dict:
    """What a result row keeps of `run_scores`: the table's metrics, per factor, and the mutual information."""
    return {"scores": {m: scores[m] for m in METRICS}, "mig_per_factor": scores["mig_per_factor"],
            "mig_sampled_per_factor": scores["mig_sampled_per_factor"],
            "mutual_information": scores["mutual_information"],
            "sampled_mutual_information": scores["sampled_mutual_information"]}


def scored(path: Path, args) -> dict:
    """One run's scores as it stands: its last finished epoch's weights."""
    run = load_run(path)
    cpu = time.process_time()
    scores = run_scores(run, args.score_seed, scoring_protocol(args))
    epochs = len(run.metrics)
    whole = run.config.data.name == dsprites_set.NAME  # else a subset, whose size the run does not record
    return {"run": str(path), "epochs": epochs, "batch": run.config.train.batch_size,
            "steps": epochs * math.ceil(dsprites.COUNT / run.config.train.batch_size) if whole else None,
            "score_cpu_s": round(time.process_time() - cpu, 1),
            "test_loss": round(float(run.metrics[-1]["test_loss"]), 2) if run.metrics else None,
            **score_fields(scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench-runs/disentanglement"))
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--images", type=int, default=100_000, help="training subset size (of 737,280)")
    parser.add_argument("--whole", action="store_true", help="train on the whole training split, streamed")
    parser.add_argument("--resume", action="store_true", help="continue runs already in --workdir")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--validation", type=float, default=0.02)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--architecture", default="mlp")
    parser.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), default=(1200, 1200),
                        help="MLP widths, comma-separated (Chen et al.: 1200,1200)")
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--samples", type=int, default=10_000, help="scoring sample counts (protocol_for)")
    parser.add_argument("--fvae-votes", type=int, default=None,
                        help="FactorVAE training votes (evaluation: half); default: --samples")
    parser.add_argument("--score-seed", type=int, default=0)
    parser.add_argument("--curve", type=int, default=0, help="MIG on this many images after every epoch (0: off)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge these outputs; train nothing")
    parser.add_argument("--score", type=Path, nargs="+", default=None, help="score these runs; train nothing")
    args = parser.parse_args()
    if args.resume and not args.whole:
        parser.error("--resume needs --whole: a subset lives in this process only, so no later one can read it again")
    if args.merge:
        print(json.dumps(merged(args.merge), indent=1))
        return
    torch.set_num_threads(1)
    if args.score:
        for path in args.score:
            print(json.dumps(scored(path, args)), flush=True)
        return

    start = time.process_time()
    images = None if args.whole else subset(args.images, args.subset_seed)[0]
    render_cpu = time.process_time() - start
    n_train = (dsprites.COUNT if args.whole
               else args.images - max(1, round(args.images * args.validation)))
    steps_per_epoch = math.ceil(n_train / args.batch)
    protocol = scoring_protocol(args)
    print(f"{args.images} images rendered in {render_cpu:.1f} s CPU; {steps_per_epoch} steps per epoch",
          file=sys.stderr, flush=True)

    results = []
    for model in args.models:
        for seed in args.seeds:
            config = config_for(args, model, seed)
            out = args.workdir / f"{model}-seed{seed}"
            print(f"training {out}", file=sys.stderr, flush=True)
            wall, cpu = time.perf_counter(), time.process_time()
            curve = (MigCurve(args.curve, steps_per_epoch, cpu, args.workdir / f"curve-{model}-seed{seed}.jsonl")
                     if args.curve else None)
            if args.resume and has_finished_epoch(out):
                run = resume(out, epochs=args.epochs, device="cpu", progress=True, callbacks=[curve] if curve else None)
            else:
                run = fit(config, out, images=images, device="cpu", progress=True,
                          callbacks=[curve] if curve else None)
            train_cpu, train_wall = time.process_time() - cpu, time.perf_counter() - wall
            wall, cpu = time.perf_counter(), time.process_time()
            scores = run_scores(run, args.score_seed, protocol)
            row = {"model": model, "seed": seed, "run": str(out), "steps": args.epochs * steps_per_epoch,
                   "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
                   "score_cpu_s": round(time.process_time() - cpu, 1),
                   "score_wall_s": round(time.perf_counter() - wall, 1),
                   "test_loss": round(float(run.metrics[-1]["test_loss"]), 2) if run.metrics else None,
                   **score_fields(scores)}
            if curve:
                row["curve"] = curve.points
            results.append(row)
            with open(args.workdir / "results.jsonl", "a") as rows:  # as it comes: a stopped benchmark keeps it
                rows.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("model", "seed", "train_cpu_s", "score_cpu_s", "scores")}),
                  file=sys.stderr, flush=True)

    table = summary(results)
    print(json.dumps({"benchmark": "disentanglement", "machine": machine(),
                      "budget": {"images": "whole training split" if args.whole else args.images,
                                 "subset_seed": args.subset_seed, "train_images": n_train,
                                 "epochs": args.epochs, "batch": args.batch, "steps": args.epochs * steps_per_epoch,
                                 "architecture": args.architecture, "hidden": list(args.hidden),
                                 "latent": args.latent, "lr": args.lr, "schedule": args.schedule,
                                 "precision": args.precision},
                      "protocol": {k: getattr(protocol, k) for k in protocol.__dataclass_fields__},
                      "score_seed": args.score_seed, "factors": list(dsprites.FACTOR_NAMES),
                      "render_cpu_s": round(render_cpu, 1), "total_cpu_s": round(time.process_time() - start, 1),
                      "peak_rss_mb": peak_rss_mb(), "results": results, "table": table, "targets": targets(table),
                      "published": PUBLISHED}, indent=1))


if __name__ == "__main__":
    main()
