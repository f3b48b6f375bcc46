"""Rebuild the pretrained runs vaekit ships (src/vaekit/pretrained/) from their commands, measure them, and write
the manifest: each run's commands, the vaekit, torch and CPU they ran on, its numbers, its files' sizes and SHA-256.

    python scripts/make_pretrained.py --work /tmp/pretrained-work   # all of them (~20 min of CPU, 1 thread each)
    python scripts/make_pretrained.py --work /tmp/pretrained-work --keep   # reuse the commands finished there

Every command runs in WORK at one thread (`--threads 1`), as `python -m vaekit ...` with this interpreter;
the manifest records them as `vaekit ...`, to be run in an empty folder. Only the files loading needs are
shipped (no optimizer checkpoint, no epoch pictures). Prints the manifest's runs as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vaekit import pretrained  # noqa: E402

FOURS = ("python -c \"import numpy as np, vaekit; s = vaekit.load_split('mnist', 'train'); "
         "np.save('fours.npy', s.images[s.labels == 4, 0].numpy())\"")
KEPT = ("config.json", "model.safetensors", "metrics.jsonl", "threshold.json", "samplers/gmm.json",
        "samplers/gmm.safetensors")


@dataclass(frozen=True)
class Recipe:
    """A pretrained run: its name (and folder in WORK), what it is, the commands that make it and measure it."""

    name: str
    description: str
    build: tuple[str, ...]
    measure: tuple[str, ...]


RECIPES = (
    Recipe("mnist", "the seed's MLP (784-400-20, Bernoulli decoder) on MNIST, the README's main job (vaekit's recipe, "
           "10 epochs), with a Gaussian-mixture sampler of its latent space (--sampler gmm) for sharper samples",
           ("vaekit train --epochs 10 --out mnist --threads 1",
            "vaekit fit-sampler mnist --sampler gmm --threads 1"),
           ("vaekit eval mnist --iw-samples 100 --json --threads 1",
            "vaekit eval mnist --images 500 --json --threads 1")),
    Recipe("fashion-mnist", "the seed's MLP on Fashion-MNIST's 8-bit pixels with a discretized logistic decoder "
           "(a likelihood of the 8-bit values, so bits/dim are real), 5 epochs, with a Gaussian-mixture sampler",
           ("vaekit train --data fashion-mnist --likelihood discretized-logistic --epochs 5 --out fashion-mnist "
            "--threads 1",
            "vaekit fit-sampler fashion-mnist --sampler gmm --threads 1"),
           ("vaekit eval fashion-mnist --iw-samples 100 --json --threads 1",
            "vaekit eval fashion-mnist --images 500 --json --threads 1")),
    Recipe("mnist-anomaly", "an anomaly detector for MNIST 4s (docs/anomaly-detection.md's worked example: trained on "
           "the training 4s, gaussian-shared --standardize, 50 epochs), calibrated with the ELBO score at the 0.99 "
           "quantile of held-out 4s (threshold.json); AUROC of 4s against the other test digits",
           (FOURS,
            "vaekit train --data fours.npy --likelihood gaussian-shared --standardize --epochs 50 --out mnist-anomaly "
            "--threads 1",
            "vaekit calibrate mnist-anomaly --method elbo --quantile 0.99 --threads 1"),
           ("vaekit score mnist-anomaly mnist:test -o mnist-anomaly-scores.jsonl --threads 1",
            "vaekit eval mnist-anomaly --images 500 --json --threads 1")),
    Recipe("mnist-compress", "the bits-back compression model of docs/compression.md: the seed's MLP on thresholded "
           "MNIST with a 7-group pixel context (--pixel-groups 7), 2 epochs (the page trains 30); codes binary images",
           ("vaekit train --binarize threshold --pixel-groups 7 --epochs 2 --out mnist-compress --threads 1",),
           ("vaekit compress mnist-compress mnist:test -o mnist-test.vkbb --threads 1",
            "vaekit eval mnist-compress --json --threads 1",
            "vaekit eval mnist-compress --images 500 --json --threads 1")),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the folder the runs are trained in")
    parser.add_argument("--keep", action="store_true",
                        help="skip the build commands that finished in WORK before (listed in WORK/done.txt), and "
                             "reuse the output of the measuring commands that finished (WORK/measured/)")
    parser.add_argument("--jobs", type=int, default=1, help="recipes made at once, each at one thread (default 1)")
    parser.add_argument("--only", nargs="+", choices=[r.name for r in RECIPES], default=None,
                        help="rebuild these runs only; the manifest keeps the others' entries")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    done_file = args.work / "done.txt"
    done = set(done_file.read_text().splitlines()) if args.keep and done_file.exists() else set()
    old = pretrained.read_manifest()
    entries = dict(old["runs"])

    def make(recipe: Recipe) -> dict:
        for command in recipe.build:
            if command in done:
                print(f"kept: {command}", file=sys.stderr)
                continue
            run(command, args.work)
            with lock, open(done_file, "a") as f:
                f.write(command + "\n")
        outputs = [measure(command, args.work, args.keep) for command in recipe.measure]
        return {"description": recipe.description, "commands": list(recipe.build),
                "measured_by": list(recipe.measure), "numbers": measured(recipe.name, outputs, args.work)}

    lock = threading.Lock()
    chosen = [r for r in RECIPES if not args.only or r.name in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:  # each recipe's commands in order, the recipes side by side
        made = dict(zip([r.name for r in chosen], pool.map(make, chosen)))
    for name, made_entry in made.items():
        entries[name] = {**made_entry, "files": ship(args.work / name, pretrained.RUNS_DIR / name)}
    document = {"manifest_version": pretrained.MANIFEST_VERSION, "made_with": made_with(),
                "runs": {r.name: entries[r.name] for r in RECIPES if r.name in entries}}
    pretrained.MANIFEST.write_text(pretrained.manifest_text(document))
    print(json.dumps(document["runs"], indent=2))
    return 0


def run(command: str, work: Path) -> str:
    """Run one recorded command in `work` (`vaekit` as `python -m vaekit`, `python` as this interpreter);
    its stdout. Stops the script if it fails."""
    argv = shlex.split(command)
    argv = [sys.executable, "-m", "vaekit", *argv[1:]] if argv[0] == "vaekit" else [sys.executable, *argv[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    print(f"$ {command}", file=sys.stderr, flush=True)
    result = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        sys.exit(f"failed ({result.returncode}): {command}")
    return result.stdout


def measure(command: str, work: Path, keep: bool) -> str:
    """`run` a measuring command, its stdout kept in WORK/measured/ (which --keep reuses)."""
    kept = work / "measured" / (hashlib.sha256(command.encode()).hexdigest()[:16] + ".txt")
    if keep and kept.is_file():
        print(f"kept: {command}", file=sys.stderr)
        return kept.read_text()
    output = run(command, work)
    kept.parent.mkdir(exist_ok=True)
    kept.write_text(output)
    return output


def measured(name: str, outputs: list[str], work: Path) -> dict:
    """The numbers a run's measuring commands printed (in `outputs`, their stdout), named for the manifest."""
    if name in ("mnist", "fashion-mnist"):
        full, first = json.loads(outputs[0]), json.loads(outputs[1])
        numbers = {"test_loss": full["test_loss"], "nll": full["nll"], "iw_samples": full["iw_samples"],
                   "kl": full["kl"], "active_units": full["active_units"],
                   "test_loss_first_500": first["test_loss"]}
        if "bits_per_dim" in full:
            numbers.update(bits_per_dim=full["bits_per_dim"], bits_per_dim_basis=full["bits_per_dim_basis"])
        return rounded(numbers)
    if name == "mnist-anomaly":
        rows = [json.loads(line) for line in (work / "mnist-anomaly-scores.jsonl").read_text().splitlines()]
        normal = [r["score"] for r in rows if r["label"] == 4]
        other = [r["score"] for r in rows if r["label"] != 4]
        threshold = json.loads((work / name / "threshold.json").read_text())
        return rounded({"auroc_4s_vs_other_digits": auroc(normal, other), "method": threshold["method"],
                        "threshold": threshold["threshold"],
                        "false_positive_rate_held_out": threshold["false_positive_rate"],
                        "flagged_test_4s": sum(r["anomaly"] for r in rows if r["label"] == 4) / len(normal),
                        "flagged_other_test_digits": sum(r["anomaly"] for r in rows if r["label"] != 4) / len(other),
                        "test_loss_first_500": json.loads(outputs[1])["test_loss"]})
    if name == "mnist-compress":
        size = (work / "mnist-test.vkbb").stat().st_size
        full, first = json.loads(outputs[1]), json.loads(outputs[2])
        return rounded({"bits_per_image": size * 8 / 10_000, "bits_per_pixel": size * 8 / (10_000 * 784),
                        "compressed_test_bytes": size, "test_loss": full["test_loss"],
                        "test_loss_bits_per_image": full["test_loss"] / 0.6931471805599453,
                        "test_loss_first_500": first["test_loss"]})
    raise ValueError(name)


def auroc(normal: list[float], anomalous: list[float]) -> float:
    """The probability that an anomalous image scores above a normal one (ties count half): the ROC's area."""
    import numpy as np

    a, n = np.asarray(anomalous)[:, None], np.asarray(normal)[None, :]  # (A, 1) against (1, N): every pair
    return float((a > n).mean() + 0.5 * (a == n).mean())


def rounded(numbers: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in numbers.items()}


def ship(run_dir: Path, target: Path) -> dict:
    """Copy the run's files that loading needs to `target` (replacing what was there); their sizes and SHA-256."""
    staging = target.parent / f".{target.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    files = {}
    for relative in KEPT:
        if (run_dir / relative).is_file():
            data = (run_dir / relative).read_bytes()
            if relative == "config.json":
                data = portable_config(data, run_dir.parent)
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_bytes(data)
            files[relative] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if images := own_images(staging / "config.json", run_dir.parent):  # fours.npy, shipped as the run's data.npz
        (staging / pretrained.DATA_FILE).write_bytes(images)
        files[pretrained.DATA_FILE] = {"bytes": len(images), "sha256": hashlib.sha256(images).hexdigest()}
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return files


def own_images(config: Path, work: Path) -> bytes | None:
    """A compressed .npz of the images a run was trained on when they are a file of WORK (the 4s), else None."""
    import io

    import numpy as np

    name = json.loads(config.read_bytes())["data"]["name"]
    if Path(name).is_absolute() or not (work / name).is_file():
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=np.load(work / name, allow_pickle=False))
    return buffer.getvalue()


def portable_config(data: bytes, work: Path) -> bytes:
    """config.json with its data path (vaekit records the absolute path of a file trained on) made relative to
    WORK, where the recipe made it: `fours.npy`, found in the folder a command runs in, not this machine's path."""
    document = json.loads(data)
    name = Path(document["data"]["name"])
    if name.is_absolute() and name.is_relative_to(work.resolve()):
        document["data"]["name"] = name.relative_to(work.resolve()).as_posix()
        return (json.dumps(document, indent=2) + "\n").encode()
    return data


def made_with() -> dict:
    import torch

    from vaekit import __version__

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"vaekit": __version__, "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu,
            "threads": 1}


if __name__ == "__main__":
    sys.exit(main())
