"""Train the small classifier vaekit ships for a built-in dataset (vaekit.classifier), and record its test accuracy.

    PYTHONPATH=src python scripts/train_classifier.py --data mnist
    PYTHONPATH=src python scripts/train_classifier.py --data fashion-mnist

Writes src/vaekit/data/classifiers/DATA.safetensors (float16 weights) and DATA.json (how it was trained, its
test accuracy in float32 and as shipped). Seeded: the same torch build gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from vaekit.atomic import atomic_write_bytes, atomic_write_text
from vaekit.classifier import Classifier, classify
from vaekit.data import load_split, to_unit
from vaekit.rng import make_generator

OUT = Path(__file__).resolve().parent.parent / "src" / "vaekit" / "data" / "classifiers"


def accuracy(model: Classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (classify(model, x)[1].argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "fashion-mnist"), required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    x, y = to_unit(train.images), train.labels
    x_test, y_test = to_unit(test.images), test.labels
    torch.manual_seed(args.seed)
    model = Classifier()
    generator = make_generator(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * ((len(x) + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 128):
            batch = order[i:i + 128]
            # a random shift of up to 2 pixels: features that tolerate a sample's slightly off-centre stroke
            dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
            xb = torch.roll(x[batch], shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, x_test, y_test):.4f}", flush=True)
    full = accuracy(model, x_test, y_test)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state.items()})
    shipped = accuracy(model, x_test, y_test)
    note = {"data": args.data, "architecture": "vaekit.classifier.Classifier", "epochs": args.epochs,
            "seed": args.seed, "optimizer": "Adam, one-cycle lr to 3e-3, batch 128, random shifts of up to 2 pixels",
            "test_accuracy_float32": round(full, 4), "test_accuracy": round(shipped, 4), "test_images": len(x_test),
            "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
    atomic_write_bytes(OUT / f"{args.data}.safetensors", save_safetensors(state, metadata={"data": args.data}))
    atomic_write_text(OUT / f"{args.data}.json", json.dumps(note, indent=2) + "\n")
    print(json.dumps(note))


if __name__ == "__main__":
    main()
