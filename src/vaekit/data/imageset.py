"""A set of images held as one uint8 tensor, with labels where known."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) as uint8 in [0, 255], labels (N,) int64 or None, where they came from, and
    optionally each image's file name (for a folder of images)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be a uint8 tensor (N, C, H, W), "
                            f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise DataError(f"{self.name}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        if self.names is not None and len(self.names) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | slice) -> ImageSet:
        """The images at `indices` (with their labels and names), as a new set."""
        labels = None if self.labels is None else self.labels[indices]
        names = None
        if self.names is not None:
            names = (self.names[indices] if isinstance(indices, slice)
                     else tuple(self.names[i] for i in indices.tolist()))
        return ImageSet(self.images[indices], labels, self.name, self.classes, names)
