"""The small image classifiers that vaekit ships for measuring samples (vaekit.quality): one per built-in
dataset, trained by scripts/train_classifier.py, stored as float16 safetensors beside a JSON note of how it
was trained and its test accuracy (vaekit/data/classifiers/)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from .choices import QUALITY_CLASSIFIERS
from .errors import ConfigError, RunError
from .validation import MAX_JSON_BYTES, check_tensors, parse_json, state_spec

CLASSIFIERS = QUALITY_CLASSIFIERS  # the built-in datasets with a shipped classifier
INPUT_SHAPE = (1, 28, 28)
FEATURES = 128  # the penultimate layer's width: the space the quality metrics measure in
CLASSES = 10
MAX_CLASSIFIER_BYTES = 1 << 20


class Classifier(nn.Module):
    """x (B, 1, 28, 28) in [0, 1] -> three 3x3 conv + 2x2 max-pool stages (16, 32, 64 channels) -> 128 features
    (ReLU) -> 10 logits. About 98,000 parameters."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 3, 3)
            nn.Flatten(), nn.Linear(64 * 9, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128 penultimate activations (B, 128)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def classifier_files(name: str):
    folder = resources.files("vaekit.data") / "classifiers"
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def load_classifier(name: str, device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The shipped classifier of the built-in dataset `name` (in eval mode, float32) and its note."""
    if name not in CLASSIFIERS:
        raise ConfigError(f"vaekit ships a classifier for {', '.join(CLASSIFIERS)} only, not {name!r}")
    weights, note = classifier_files(name)
    model = Classifier()
    expected = {key: (shape, torch.float16) for key, (shape, _) in state_spec(model.state_dict()).items()}
    try:
        data = weights.read_bytes()
        if len(data) > MAX_CLASSIFIER_BYTES:
            raise ValueError("larger than a classifier can be")
        state = load_safetensors(data)
        check_tensors(state, expected, "weights")
        text = note.read_bytes()
        if len(text) > MAX_JSON_BYTES:
            raise ValueError("its note is too large")
        record = parse_json(text)
        if not isinstance(record, dict):
            raise ValueError("its note must be a JSON object")
    except (OSError, SafetensorError, ValueError) as e:
        raise RunError(f"vaekit's {name} classifier is missing or damaged ({e}); reinstall vaekit, or retrain it "
                       f"with scripts/train_classifier.py --data {name}") from None
    model.load_state_dict({key: t.float() for key, t in state.items()})
    return model.to(device).eval(), record


@torch.no_grad()
def classify(model: Classifier, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) and class probabilities (N, 10) of images x (N, 1, 28, 28) in [0, 1], on the CPU."""
    device = next(model.parameters()).device
    features, probs = [], []
    for start in range(0, len(x), batch_size):
        f = model.features(x[start:start + batch_size].to(device, torch.float32))
        features.append(f.cpu())
        probs.append(torch.softmax(model.head(f), 1).cpu())
    return torch.cat(features), torch.cat(probs)
