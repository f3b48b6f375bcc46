"""From uint8 images to model inputs: scaling to [0, 1], binarization, and the epoch's order.

All of it is whole-tensor work: a batch is cut from the split's one uint8 tensor by index.
"""

from __future__ import annotations

import torch

from ..rng import derive_seed, make_generator


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [0, 1] (not the seed's [-1, 1]: BCE needs targets in [0, 1])."""
    return images.float().div_(255.0)


# Per-image z-scores from -1 to 7 span the uint8 range: a z-score below -1 needs an image more than half
# lit, one above 7 a stroke on fewer than 2% of the pixels (for two-level images), so digits are not clipped.
STANDARD_RANGE = (-1.0, 7.0)


def standardize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> uint8 images with each image's pixels shifted to mean 0 and scaled to variance 1.

    The global contrast normalization of the one-class protocol (Ruff et al. 2018), before its
    scaling: every image is seen at the same contrast, so a faint or thin image cannot pass for a
    normal one by having few lit pixels. The z-scores map linearly from STANDARD_RANGE to 0..255
    (clipped), keeping the uint8 pipeline; a constant image becomes uniform gray (z = 0).
    """
    x = images.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp_min(1e-6)
    low, high = STANDARD_RANGE
    return ((x - mean) / std - low).mul_(255.0 / (high - low)).round_().clamp_(0, 255).to(torch.uint8)


def binarize(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a binarization mode to pixels in [0, 1].

    none: unchanged (grayscale targets, as the seed); threshold: 1 where the pixel is > 127/255;
    dynamic: a Bernoulli draw with the pixel as probability (needs `generator`).
    """
    if mode == "none":
        return x
    if mode == "threshold":
        return (x > 127.5 / 255.0).to(x.dtype)
    if mode == "dynamic":
        if generator is None:
            raise ValueError("dynamic binarization needs a generator")
        return torch.bernoulli(x, generator=generator)
    raise ValueError(f"unknown binarization mode {mode!r}")


def prepare(images: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images -> float model inputs in [0, 1], binarized by `mode`."""
    return binarize(to_unit(images), mode, generator)


def fixed_binarization(images: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    """Evaluation inputs: like `prepare`, but a dynamic binarization is drawn once from `seed`.

    The test set is binarized once so that every evaluation of a run sees the same pixels.
    """
    generator = make_generator(derive_seed(seed, "eval-binarize"), images.device) if mode == "dynamic" else None
    return prepare(images, mode, generator)


def latent_inputs(images: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    """Inputs for reading latent codes: `fixed_binarization`, except that a run trained on dynamically
    binarized images gets the grayscale images, the mean of its random binarizations, so that no
    single random draw adds noise to an image's code."""
    return to_unit(images) if mode == "dynamic" else fixed_binarization(images, mode, seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of `n` training images in `epoch`: a function of (seed, epoch) alone.

    Deriving it, rather than advancing one generator across epochs, makes a resumed run see the
    same batches as an uninterrupted one, and lets distributed ranks agree on it without talking.
    """
    return torch.randperm(n, generator=make_generator(derive_seed(seed, "order", epoch)))
