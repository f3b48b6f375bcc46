"""The only module that draws: image grids and training curves, written as PNG files atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write_bytes


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.5,
               scale: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (rows, cols) or (rows, cols, 3), nrow per row."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"image grids need 1 or 3 channels, got {c}")
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(n):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    pixels = (grid * 255).round().to(torch.uint8)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    array = pixels.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (H, W) or (H, W, 3) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image_grid(path: str | Path, images: torch.Tensor, nrow: int = 8, scale: int = 1) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid with `nrow` images per row."""
    return atomic_write_bytes(path, png_bytes(image_grid(images, nrow=nrow, scale=scale)))


def save_loss_curve(path: str | Path, metrics: Sequence[dict]) -> Path:
    """Plot train and test loss per epoch from metrics rows (keys epoch, train_loss, test_loss)."""
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state

    epochs = [row["epoch"] for row in metrics]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(epochs, [row["train_loss"] for row in metrics], marker="o", label="train")
    ax.plot(epochs, [row["test_loss"] for row in metrics], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per image)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())
