"""dSprites, generated: 64x64 binary images of 2D shapes from five independent factors (Matthey et al. 2017).

The factors, their values and their order follow DeepMind's `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`
(`latents_possible_values`, `latents_classes`): shape (square, ellipse, heart), scale (6 values in [0.5, 1]),
orientation (40 values in [0, 2 pi], both ends included, so orientation 0 and 39 draw the same image), x and y
position (32 values each in [0, 1]). Image i has the factor indices of i written in that mixed radix (y varies
fastest), exactly as in DeepMind's file; its colour factor (always white) is left out.

How each image is drawn (DeepMind published the images, not the drawing code, so this is vaekit's own):

- a pixel is on when its centre lies inside the shape: binary, no antialiasing, no threshold;
- a shape's centre sits on a pixel centre; x and y index 0..31 put it at pixel column/row 16..47, one pixel
  apart (x to the right, y downward), so every sprite stays whole inside the image at every orientation;
- at scale 1 the square's side is 19.5 pixels (19 pixel centres), the ellipse's axes 23.4 x 11.7 pixels, and
  the heart (the implicit curve (x^2 + y^2 - 1)^3 = x^2 y^3) spans 23 x 23 pixels; other scales shrink them
  about the centre;
- orientation turns the shape counter-clockwise about its centre. A square turned by a quarter turn, or an
  ellipse by a half turn, looks the same, as in DeepMind's images (their factor is then not identifiable).

Where it differs from DeepMind's file: the heart's outline is a different curve (theirs is a hand-drawn
sprite), the sizes and the position range are measured choices, not DeepMind's exact pixels, and pixels on a
shape's edge may differ by one. Factor indices, values, image order and counts are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIZE = 64  # images are SIZE x SIZE
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
SHAPES = ("square", "ellipse", "heart")
FACTOR_SIZES = (3, 6, 40, 32, 32)
FACTOR_VALUES = (
    np.arange(1.0, 4.0),  # DeepMind numbers the shapes 1, 2, 3
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * math.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
COUNT = math.prod(FACTOR_SIZES)  # 737,280
PACKED_BYTES = SIZE * SIZE // 8  # one image, bit-packed (np.packbits along rows): 512 bytes

HALF = 16  # a sprite's window is (2 HALF + 1) pixels square around its centre; centres lie HALF..HALF+31
WINDOW = 2 * HALF + 1
POSITIONS = FACTOR_SIZES[3]
SQUARE_HALF_SIDE = 9.75  # at scale 1; no half-size is a whole number, so no pixel centre lies on an unturned edge
ELLIPSE_AXES = (11.7, 5.85)  # semi-axes at scale 1
HEART_RADIUS = 10.4  # pixels per unit of the heart's implicit curve at scale 1
HEART_CENTRE = 0.118  # the curve spans y in [-1, 1.236]: shift it so its box is centred


@dataclass(frozen=True)
class Factors:
    """Which values of each factor to generate, as index arrays into FACTOR_VALUES; the full set by default."""

    shape: tuple[int, ...] = tuple(range(3))
    scale: tuple[int, ...] = tuple(range(6))
    orientation: tuple[int, ...] = tuple(range(40))
    x: tuple[int, ...] = tuple(range(32))
    y: tuple[int, ...] = tuple(range(32))

    def __post_init__(self):
        for name, size, chosen in zip(FACTOR_NAMES, FACTOR_SIZES, self.lists()):
            if not chosen or any(not isinstance(i, int) or not 0 <= i < size for i in chosen):
                raise ValueError(f"dSprites factor {name}: expected indices in 0..{size - 1}, found {chosen!r}")

    def lists(self) -> tuple[tuple[int, ...], ...]:
        return (self.shape, self.scale, self.orientation, self.x, self.y)

    def indices(self) -> np.ndarray:
        """(N, 5) int64 factor indices of every combination, in DeepMind's order (y fastest)."""
        grids = np.meshgrid(*[np.asarray(c, dtype=np.int64) for c in self.lists()], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1)


def indices_of(image_index: np.ndarray) -> np.ndarray:
    """(N,) image numbers in the full set -> (N, 5) factor indices (mixed radix, y fastest)."""
    image_index = np.asarray(image_index, dtype=np.int64)
    if image_index.size and (image_index.min() < 0 or image_index.max() >= COUNT):
        raise ValueError(f"dSprites image numbers must lie in 0..{COUNT - 1}")
    out = np.empty((image_index.size, len(FACTOR_SIZES)), dtype=np.int64)
    rest = image_index.reshape(-1).copy()
    for k in range(len(FACTOR_SIZES) - 1, -1, -1):
        out[:, k] = rest % FACTOR_SIZES[k]
        rest //= FACTOR_SIZES[k]
    return out


def image_index_of(indices: np.ndarray) -> np.ndarray:
    """(N, 5) factor indices -> (N,) image numbers in the full set."""
    indices = _check_indices(indices)
    out = np.zeros(len(indices), dtype=np.int64)
    for k, size in enumerate(FACTOR_SIZES):
        out = out * size + indices[:, k]
    return out


def values_of(indices: np.ndarray) -> np.ndarray:
    """(N, 5) factor indices -> (N, 5) float64 factor values (shape as 1, 2, 3, as DeepMind numbers it)."""
    indices = _check_indices(indices)
    return np.stack([FACTOR_VALUES[k][indices[:, k]] for k in range(len(FACTOR_SIZES))], axis=1)


def _check_indices(indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(FACTOR_SIZES) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"dSprites factor indices: expected an (N, 5) integer array, found {indices.dtype} "
                         f"{indices.shape}")
    if len(indices) and ((indices < 0).any() or (indices >= np.asarray(FACTOR_SIZES)).any()):
        raise ValueError("dSprites factor indices out of range")
    return indices.astype(np.int64, copy=False)


def sprite(shape: int, scale: int, orientation: int) -> np.ndarray:
    """(WINDOW, WINDOW) bool: the shape drawn around the window's centre pixel."""
    offsets = np.arange(WINDOW, dtype=np.float64) - HALF
    px = offsets[None, :]  # columns: x to the right
    py = -offsets[:, None]  # rows go down; the shapes are defined with y up
    angle = FACTOR_VALUES[2][orientation]
    s = FACTOR_VALUES[1][scale]
    # Turn the pixel centres by -angle: the shape turned by +angle, counter-clockwise.
    c, n = math.cos(angle), math.sin(angle)
    u = (c * px + n * py) / s
    v = (-n * px + c * py) / s
    if SHAPES[shape] == "square":
        return (np.abs(u) < SQUARE_HALF_SIDE) & (np.abs(v) < SQUARE_HALF_SIDE)
    if SHAPES[shape] == "ellipse":
        a, b = ELLIPSE_AXES
        return (u / a) ** 2 + (v / b) ** 2 < 1.0
    hx, hy = u / HEART_RADIUS, v / HEART_RADIUS + HEART_CENTRE
    return (hx * hx + hy * hy - 1.0) ** 3 - hx * hx * hy ** 3 < 0.0


def _canvas(shape: int, scale: int, orientation: int) -> np.ndarray:
    """(SIZE + POSITIONS - 1,) * 2 uint8 with the sprite at the bottom-right: the (SIZE, SIZE) slice starting at
    (POSITIONS - 1 - y, POSITIONS - 1 - x) is the image with the sprite's centre at (HALF + y, HALF + x)."""
    side = SIZE + POSITIONS - 1
    canvas = np.zeros((side, side), dtype=np.uint8)
    canvas[POSITIONS - 1:POSITIONS - 1 + WINDOW, POSITIONS - 1:POSITIONS - 1 + WINDOW] = sprite(shape, scale,
                                                                                              orientation)
    return canvas


def render(indices: np.ndarray) -> np.ndarray:
    """(N, 5) factor indices -> (N, SIZE, SIZE) uint8 images of 0/1 (any subset, any order)."""
    indices = _check_indices(indices)
    out = np.empty((len(indices), SIZE, SIZE), dtype=np.uint8)
    rows = np.arange(SIZE)
    sprites = {}
    for i, (sh, sc, o, x, y) in enumerate(indices.tolist()):
        key = (sh, sc, o)
        if key not in sprites:
            sprites[key] = _canvas(*key)
        top, left = POSITIONS - 1 - y, POSITIONS - 1 - x
        out[i] = sprites[key][top + rows[:, None], left + rows[None, :]]
    return out


def packed_block(shape: int, scale: int, orientation: int) -> np.ndarray:
    """(POSITIONS * POSITIONS, PACKED_BYTES) uint8: the bit-packed images of one sprite at every x, y (y fastest)."""
    windows = np.lib.stride_tricks.sliding_window_view(_canvas(shape, scale, orientation), (SIZE, SIZE))
    # windows[a, b] is the image at y = 31 - a, x = 31 - b: flip both, then put x first.
    images = windows[::-1, ::-1].transpose(1, 0, 2, 3)  # (x, y, SIZE, SIZE)
    return np.packbits(images.reshape(-1, SIZE, SIZE), axis=-1).reshape(-1, PACKED_BYTES)


def packed_blocks(progress: bool = False):
    """Every image of the full set, bit-packed, in DeepMind's order: one (POSITIONS * POSITIONS, PACKED_BYTES) block
    per shape, scale and orientation, drawn as it is asked for."""
    from tqdm import tqdm

    blocks = [(sh, sc, o) for sh in range(3) for sc in range(6) for o in range(40)]
    for key in tqdm(blocks, desc="dSprites", unit="sprite", disable=not progress, leave=False):
        yield packed_block(*key)


def generate_packed(progress: bool = False) -> np.ndarray:
    """(COUNT, PACKED_BYTES) uint8: every image of the full set, bit-packed, in DeepMind's order."""
    out = np.empty((COUNT, PACKED_BYTES), dtype=np.uint8)
    per_block = POSITIONS * POSITIONS
    for b, block in enumerate(packed_blocks(progress)):
        out[b * per_block:(b + 1) * per_block] = block
    return out


def unpack(packed: np.ndarray) -> np.ndarray:
    """(N, PACKED_BYTES) bit-packed -> (N, SIZE, SIZE) uint8 of 0/1."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed.reshape(-1, SIZE, SIZE // 8), axis=-1)
