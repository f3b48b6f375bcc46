"""Images made the way a run sees them: its channels, its size, and its polarity, by one function.

`prepare(images, preparation)` is what training does to the user's images and what every later command
(score, embed, interpolate, traverse, ...) does to new ones, so that both are seen alike:

- channels: grayscale becomes RGB by repeating the channel, RGB becomes grayscale by ITU-R BT.601 luma;
- size: "crop" resizes the shorter side to the target (antialiased bilinear) and crops the centre, so no
  image is distorted; "aspect" (runs before format 8) resizes images of the same aspect ratio only;
- polarity: a run records its training images' background (the mean brightness of their border pixels);
  an image whose border is decidedly on the other side of mid-gray (dark digits on white paper, given to a
  model of light digits on black) is a polarity mismatch, which "auto" inverts, "on" inverts every image
  and "off" leaves as it is.

Pure: tensors in, tensors out; the caller says what was inverted (`Prepared.note`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..choices import INVERT_MODES
from ..config import RESIZE_MODES
from ..errors import DataError
from .imageset import ImageSet

ASPECT_TOLERANCE = 0.05  # "aspect": the relative difference of aspect ratios resized without complaint
# polarity: a background this far from mid-gray (0.5) is decided (dark or light); an image mismatches a run when
# both its border and the run's background are decided, on opposite sides
POLARITY_MARGIN = 0.2
CHUNK = 1024  # images converted at once: the float copy of a chunk bounds the extra memory
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


@dataclass(frozen=True)
class Preparation:
    """How images become a run's inputs: its (C, H, W), how sizes are fitted, its training images' background
    brightness in [0, 1] (None: not measured) and the polarity policy (auto, on, off)."""

    shape: tuple[int, int, int]
    resize: str = "crop"
    background: float | None = None
    invert: str = "off"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.invert not in INVERT_MODES:
            raise ValueError(f"invert must be one of {', '.join(INVERT_MODES)}, got {self.invert!r}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.shape[1], self.shape[2]


@dataclass(frozen=True)
class Prepared:
    """Prepared images, which of them were inverted, and which look inverted against the run's background."""

    images: ImageSet
    inverted: torch.Tensor  # (N,) bool
    mismatched: torch.Tensor  # (N,) bool
    background: float | None
    invert: str = "off"

    def note(self) -> str | None:
        """One line saying what polarity did (or would have done), or None when nothing is to be said (nothing
        mismatched, or every image inverted as asked)."""
        n, inverted, mismatched = len(self.inverted), int(self.inverted.sum()), int(self.mismatched.sum())
        if not mismatched or self.invert == "on":
            return None
        run = "light on dark" if (self.background or 0) < 0.5 else "dark on light"
        found = "dark on light" if run == "light on dark" else "light on dark"
        what = f"{mismatched} of {n} images look {found}, while the run was trained on {run}"
        if inverted:
            return f"{what}: inverted them (--invert off keeps them as they are)"
        return f"{what}: --invert auto inverts them"


def prepare(images: ImageSet, preparation: Preparation) -> Prepared:
    """`images` in the run's channels and size, inverted where `preparation.invert` says (see the module)."""
    fitted = fit_images(images, preparation.shape, preparation.resize)
    border = border_brightness(fitted.images)
    mismatched = polarity_mismatch(border, preparation.background)
    inverted = {"on": torch.ones_like(mismatched), "off": torch.zeros_like(mismatched), "auto": mismatched}[
        preparation.invert]
    if inverted.any():
        pixels = torch.where(inverted.view(-1, 1, 1, 1), 255 - fitted.images, fitted.images)
        fitted = dataclasses.replace(fitted, images=pixels)
    return Prepared(fitted, inverted, mismatched, preparation.background, preparation.invert)


def fit_images(images: ImageSet, shape: tuple[int, int, int], resize: str = "crop") -> ImageSet:
    """`images` converted to `shape` (C, H, W): channels, then size by `resize`, rounded once at the end;
    the same tensor when nothing changes."""
    c, h, w = shape
    n, c_in, h_in, w_in = images.images.shape
    if (c_in, h_in, w_in) == (c, h, w):
        return images
    if c_in != c and (c_in, c) not in ((1, 3), (3, 1)):
        raise DataError(f"{images.name}: cannot turn {c_in}-channel images into {c}-channel ones")
    if (h_in, w_in) != (h, w) and resize == "aspect" and abs(h_in / w_in - h / w) > ASPECT_TOLERANCE * (h / w):
        raise DataError(f"{images.name}: images are {w_in}x{h_in}, the model takes {w}x{h}; resizing "
                        "would distort them (different aspect ratio)")
    out = torch.empty((n, c, h, w), dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        x = images.images[start:start + CHUNK].float()
        x = _channels(x, c)
        if (h_in, w_in) != (h, w):
            x = _resize(x, (h, w), resize)
        out[start:start + CHUNK] = x.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(out, images.labels, images.name, images.classes, images.names)


def _channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """(N, C_in, H, W) float -> (N, c, H, W)."""
    if x.shape[1] == c:
        return x
    if c == 3:
        return x.expand(-1, 3, -1, -1)
    return (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _resize(x: torch.Tensor, size: tuple[int, int], resize: str) -> torch.Tensor:
    """(N, C, H_in, W_in) float -> (N, C, H, W): antialiased bilinear, then (crop) the centre."""
    h, w = size
    if resize == "aspect":
        return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    h_in, w_in = x.shape[2:]
    scale = max(h / h_in, w / w_in)  # the shorter side (relative to the target) becomes the target's
    scaled = (max(h, round(h_in * scale)), max(w, round(w_in * scale)))
    if scaled != (h_in, w_in):
        x = F.interpolate(x, size=scaled, mode="bilinear", antialias=True, align_corners=False)
    top, left = (scaled[0] - h) // 2, (scaled[1] - w) // 2
    return x[:, :, top:top + h, left:left + w]


def border_brightness(images: torch.Tensor) -> torch.Tensor:
    """(N,) the mean of each uint8 image's outermost ring of pixels (all channels), in [0, 1]."""
    _, _, h, w = images.shape
    ring = torch.ones((h, w), dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    values = torch.empty(len(images), dtype=torch.float64)
    for start in range(0, len(images), CHUNK * 16):
        values[start:start + CHUNK * 16] = images[start:start + CHUNK * 16][:, :, ring].double().mean(dim=(1, 2))
    return values / 255


def background(images: torch.Tensor) -> float:
    """The training statistic polarity is judged against: the mean border brightness of uint8 images, in [0, 1]
    (4 decimals, as config.json records it)."""
    return round(float(border_brightness(images).mean()), 4)


def polarity_mismatch(border: torch.Tensor, background: float | None) -> torch.Tensor:
    """(N,) bool: the images whose border is decidedly dark where the run's background is light, or the reverse."""
    if background is None or abs(background - 0.5) <= POLARITY_MARGIN:
        return torch.zeros(border.shape, dtype=torch.bool)
    return ((border - 0.5) * (background - 0.5) < 0) & ((border - 0.5).abs() > POLARITY_MARGIN)


def most_common_size(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], str]:
    """The most common (H, W) of `sizes` (the smallest among ties), and a summary such as
    "28x28: 40 images, 32x40: 3 images" (H x W, most common first, at most 4)."""
    counts = Counter(sizes)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{h}x{w}: {k} image{'s' if k > 1 else ''}" for (h, w), k in ranked[:4])
    more = f", and {len(ranked) - 4} more size{'s' if len(ranked) > 5 else ''}" if len(ranked) > 4 else ""
    return ranked[0][0], shown + more


def size_text(size: tuple[int, int]) -> str:
    """(H, W) as --image-size takes it: "32" for a square, else "HxW"."""
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
