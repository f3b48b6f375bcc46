"""Images from anywhere a user keeps them, read strictly into an ImageSet.

A source is a built-in split (`mnist:test`, `fashion-mnist:train`), an IDX file, a `.npy` or `.npz`
array, a single PNG/JPEG/BMP image, or a folder of images (or of class subfolders of images).
Arrays may be N x H x W, N x H*W (square images), N x C x H x W or N x H x W x C (C = 1 or 3), as
uint8, bool, integers in [0, 255] or floats in [0, 1]. Anything else is a DataError that says
what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..rng import derive_seed, make_generator
from .batches import standardize as standardize_images
from .datasets import DATASETS, load_split, load_splits
from .files import MAX_DECODED_BYTES, MAX_IMAGE_PIXELS, display, open_input, read_npy_header
from .idx import read_idx
from .imageset import ImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_IMAGE_KEYS = ("images", "x", "X", "arr_0")
ARRAY_LABEL_KEYS = ("labels", "y", "Y")


def is_builtin(source: str) -> bool:
    """Whether `source` names a built-in split, like mnist:test."""
    name, _, split = source.partition(":")
    return bool(split) and name in DATASETS


def read_images(source: str | Path, data_dir: str | Path | None = None) -> ImageSet:
    """Read the images (and labels, where the source has them) of any supported source."""
    text = str(source)
    if is_builtin(text):
        name, _, split = text.partition(":")
        return load_split(name, split, data_dir)
    path = Path(source)
    if not path.exists():
        hint = ", ".join(f"{name}:train, {name}:test" for name in DATASETS)
        raise DataError(f"{display(path)}: no such file or directory (expected a built-in split such as {hint}, an "
                        "IDX, .npy or .npz file, an image, or a folder of images)")
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".vkds":  # a dataset cache (vaekit data prepare), read whole
        from .streamed import open_streamed

        return open_streamed(path).materialize()
    if suffix in IMAGE_SUFFIXES:
        image = read_image_file(path)
        return ImageSet(torch.from_numpy(image)[None], None, display(path), names=(display(path.name),))
    return from_array(read_idx(path), display(path))


def read_npy(path: Path) -> ImageSet:
    return from_array(load_npy(path), display(path))


def load_npy(path: Path) -> np.ndarray:
    """A .npy file's array, its header checked against the file's size before the array is allocated."""
    with open_input(path) as f:
        read_npy_header(f, os.fstat(f.fileno()).st_size, display(path))
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{display(path)}: not a readable .npy array ({e})") from None


def read_array(source: str | Path, data_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """Images as the array they were stored as, and the container to write them back in: "idx" for IDX
    files and built-in splits, "npy" for everything else (as N x H x W, or N x C x H x W in colour)."""
    path = Path(source)
    if not is_builtin(str(source)) and path.exists() and not path.is_dir():
        if path.suffix.lower() == ".npy":
            return load_npy(path), "npy"
        if path.suffix.lower() not in (".npz", *IMAGE_SUFFIXES):
            return read_idx(path), "idx"
    images = read_images(source, data_dir).images.numpy()
    squeezed = images[:, 0] if images.shape[1] == 1 else images
    return squeezed, "idx" if is_builtin(str(source)) else "npy"


def read_npz(path: Path) -> ImageSet:
    source = display(path)
    try:
        with open_input(path) as f, np.load(f, allow_pickle=False) as archive:
            keys = list(archive.keys())
            key = next((k for k in ARRAY_IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"{source}: holds arrays {', '.join(keys) or '(none)'}; name the images "
                                f"one of {', '.join(ARRAY_IMAGE_KEYS)}")
            images = _npz_member(archive, key, source)
            label_key = next((k for k in ARRAY_LABEL_KEYS if k in keys), None)
            labels = _npz_member(archive, label_key, source) if label_key else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError, RuntimeError,
            zlib.error) as e:
        raise DataError(f"{source}: not a readable .npz archive ({e})") from None
    return from_array(images, source, labels)


def _npz_member(archive, key: str, source: str) -> np.ndarray:
    """One array of an .npz, after checking its size (declared by the zip and by the .npy header) against
    MAX_DECODED_BYTES: a compressed member cannot decode to gigabytes."""
    name = key if key in archive.zip.namelist() else f"{key}.npy"
    size = archive.zip.getinfo(name).file_size
    where = f"{source}[{key}]"
    if size > MAX_DECODED_BYTES:
        raise DataError(f"{where}: decodes to {size} bytes, more than {MAX_DECODED_BYTES}, the most vaekit decodes "
                        "from a compressed file")
    with archive.zip.open(name) as member:
        read_npy_header(member, size, where, limit=MAX_DECODED_BYTES)
    return archive[key]


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image_file(path: Path, budget: int = MAX_DECODED_BYTES) -> np.ndarray:
    """One image file as a uint8 array (C, H, W): grayscale stays one channel, colour becomes RGB.

    16-bit images are scaled by their range (65535 -> 255), float images (TIFF) must be in [0, 1], as
    float arrays must. The size in the file's header is checked against MAX_IMAGE_PIXELS and `budget`
    (bytes still allowed) before anything is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    source = display(path)
    try:
        # the bounds below replace PIL's decompression-bomb warning
        with (open_input(path) as f, warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning),
              Image.open(f) as image):
            width, height = image.size
            channels = 1 if image.mode in ("1", "L", "I", "F", *SIXTEEN_BIT_MODES) else 3
            if width * height > MAX_IMAGE_PIXELS or width * height * channels > budget:
                limit = (f"more than {MAX_IMAGE_PIXELS} pixels, the most vaekit decodes from one image"
                         if width * height > MAX_IMAGE_PIXELS else
                         f"more than the {MAX_DECODED_BYTES} bytes vaekit decodes from images at once")
                raise DataError(f"{source}: a {width}x{height} image is {limit}")
            image.load()  # decode now: a truncated file fails here, not later
            array = _gray_by_range(image, source)
            if array is None:
                if image.mode in ("1", "L") or (image.mode == "P" and _palette_is_gray(image)):
                    array = np.asarray(image.convert("L"))[None]
                else:
                    array = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"{source}: unreadable image ({e})") from None
    return np.array(array, dtype=np.uint8, order="C")  # a writable copy: PIL's arrays are read-only


def _gray_by_range(image, source: str) -> np.ndarray | None:
    """A 16-bit, 32-bit integer or float grayscale image as uint8 (1, H, W), scaled by its format's range;
    None for other modes."""
    if image.mode in SIXTEEN_BIT_MODES:
        return np.rint(np.asarray(image).astype(np.float64) * (255 / 65535))[None]
    if image.mode == "I":  # 32-bit integers: no range to scale by, so they must already be 8-bit values
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 255:
            raise DataError(f"{source}: a 32-bit integer image must hold values in [0, 255], found {low} to {high}; "
                            "save it as an 8- or 16-bit image")
        return values[None]
    if image.mode == "F":  # floats, as float arrays: [0, 1]
        values = np.asarray(image).astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(f"{source}: a float image must hold finite values in [0, 1], found "
                            f"{values.min():g} to {values.max():g}")
        return np.rint(values * 255)[None]
    return None


def _palette_is_gray(image) -> bool:
    palette = np.asarray(image.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def folder_files(path: Path) -> tuple[list[Path], torch.Tensor | None, tuple[str, ...]]:
    """The image files of a folder, sorted by name, or, if it holds only subfolders, those of each subfolder in
    turn; with their labels (the subfolder's index) and the class names (the subfolders'), or None and ()."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    classes: tuple[str, ...] = ()
    labels = None
    if not files:
        folders = sorted(p for p in path.iterdir() if p.is_dir())
        per_class = [sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                     for d in folders]
        files = [f for group in per_class for f in group]
        labels = torch.tensor([i for i, group in enumerate(per_class) for _ in group], dtype=torch.long)
        classes = tuple(display(d.name) for d in folders)
    if not files:
        raise DataError(f"{display(path)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                        "directly or in class subfolders)")
    return files, labels, classes


def read_folder(path: Path) -> ImageSet:
    """All images in a folder, sorted by name; or, if it holds only subfolders, one class per subfolder."""
    files, labels, classes = folder_files(path)
    arrays, budget = [], MAX_DECODED_BYTES
    for f in files:
        arrays.append(read_image_file(f, budget))
        budget -= arrays[-1].nbytes
    channels = 3 if any(a.shape[0] == 3 for a in arrays) else 1
    arrays = [np.repeat(a, 3, axis=0) if a.shape[0] != channels else a for a in arrays]
    size = arrays[0].shape[1:]
    for f, a in zip(files, arrays):
        if a.shape[1:] != size:
            raise DataError(f"{display(path)}: images in one folder must share a size: {display(files[0].name)} is "
                            f"{size[1]}x{size[0]}, {display(f.relative_to(path))} is {a.shape[2]}x{a.shape[1]}")
    names = tuple(display(f.relative_to(path)) for f in files)
    return ImageSet(torch.from_numpy(np.stack(arrays)), labels, display(path), classes, names)


def from_array(array: np.ndarray, source: str, labels: np.ndarray | None = None) -> ImageSet:
    """An array of images in any supported layout and dtype -> uint8 ImageSet (N, C, H, W)."""
    array = np.asarray(array)
    if array.ndim == 0 or array.size == 0:
        raise DataError(f"{source}: no images (array of shape {array.shape})")
    images = _to_uint8(array, source)
    images = _to_nchw(images, source)
    label_tensor = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise DataError(f"{source}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
        label_tensor = torch.from_numpy(labels.astype(np.int64))
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), label_tensor, source)


def _to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    kind = array.dtype.kind  # by kind: numpy counts timedelta64 as an integer subtype
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"{source}: float images contain NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(f"{source}: float images must be in [0, 1], found values from {low:g} to {high:g}")
        return np.rint(array * 255).astype(np.uint8)
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(f"{source}: integer images must be in [0, 255], found values from {low} to {high}")
        return array.astype(np.uint8)
    raise DataError(f"{source}: images must be uint8, bool, integers or floats, got dtype {array.dtype}")


def _to_nchw(images: np.ndarray, source: str) -> np.ndarray:
    shape = images.shape
    if images.ndim == 2:  # (N, H*W): square images only, or the size is ambiguous
        side = math.isqrt(shape[1])
        if side * side != shape[1]:
            raise DataError(f"{source}: rows of {shape[1]} pixels are not square images; "
                            "give the array as N x H x W")
        return images.reshape(shape[0], 1, side, side)
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if shape[1] in (1, 3):
            return images
        if shape[3] in (1, 3):
            return images.transpose(0, 3, 1, 2)
        raise DataError(f"{source}: 4-D images need 1 or 3 channels first or last, got shape {shape}")
    raise DataError(f"{source}: expected images as N x H x W, N x H*W or N x C x H x W, got shape {shape}")


def conform(images: ImageSet, shape: tuple[int, int, int]) -> ImageSet:
    """Convert images to a model's (C, H, W): RGB <-> grayscale, and resizing at the same aspect ratio.

    Grayscale becomes RGB by repeating the channel and RGB becomes grayscale by ITU-R BT.601 luma;
    sizes change by antialiased bilinear resampling. A different aspect ratio would distort the
    images, so it is an error.
    """
    c, h, w = shape
    n, c_in, h_in, w_in = images.images.shape
    if (c_in, h_in, w_in) == (c, h, w):
        return images
    x = images.images.float()
    if c_in != c:
        if (c_in, c) == (1, 3):
            x = x.expand(n, 3, h_in, w_in)
        elif (c_in, c) == (3, 1):
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise DataError(f"{images.name}: cannot turn {c_in}-channel images into {c}-channel ones")
    if (h_in, w_in) != (h, w):
        if abs(h_in / w_in - h / w) > 0.05 * (h / w):
            raise DataError(f"{images.name}: images are {w_in}x{h_in}, the model takes {w}x{h}; resizing "
                            "would distort them (different aspect ratio)")
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    pixels = x.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(pixels, images.labels, images.name, images.classes, images.names)


def load_train_test(name: str, validation: float, seed: int, data_dir: str | Path | None = None,
                    progress: bool = False, images: ImageSet | None = None,
                    standardize: bool = False, stream: bool = False) -> tuple[ImageSet, ImageSet]:
    """A run's training images and held-out images, standardized per image if the run asks (`as_seen`).

    For a built-in dataset, its train and test splits; for a path, a seeded random `validation`
    fraction of its images is held out (at least one image each side). `images`, if given, are that
    path's images already read (the CLI reads them once, to size the model). `stream`: a path that
    `prepare.should_stream` (or `images` already streamed) gives StreamedSets, read from its cache
    batch by batch, with the same split.
    """
    if name in DATASETS:
        train, test = load_splits(name, ("train", "test"), data_dir, progress=progress)
        return as_seen(train, standardize), as_seen(test, standardize)
    if stream:
        from .convert import open_images
        from .streamed import StreamedSet

        if images is None:
            images = open_images(name, data_dir, progress)
        if isinstance(images, StreamedSet):
            images = images.standardized(standardize)
            train_order, held_out_order = validation_split(len(images), validation, seed, images.name)
            return images.subset(train_order), images.subset(held_out_order)
    images = as_seen(images if images is not None else read_images(name, data_dir), standardize)
    train_order, held_out_order = validation_split(len(images), validation, seed, images.name)
    return images.subset(train_order), images.subset(held_out_order)


def load_held_out(name: str, validation: float, seed: int, data_dir: str | Path | None = None,
                  standardize: bool = False) -> ImageSet:
    """The held-out images of `load_train_test` alone: for a built-in dataset only its test split is
    read (or downloaded), never the training split."""
    if name in DATASETS:
        return as_seen(load_split(name, "test", data_dir), standardize)
    from .streamed import streamed_held_out

    if (streamed := streamed_held_out(name, validation, seed, data_dir, standardize)) is not None:
        return streamed.materialize()  # only the held-out share is read into memory
    images = read_images(name, data_dir)
    return as_seen(images.subset(validation_split(len(images), validation, seed, images.name)[1]), standardize)


def held_out_count(n: int, validation: float) -> int:
    """How many of n images `validation_split` holds out: the share, rounded, and at least one each side."""
    return min(max(1, round(validation * n)), n - 1)


def validation_split(n: int, validation: float, seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted indices of the training and the held-out images: a seeded `validation` share of n held out,
    at least one image each side."""
    if n < 2:
        raise DataError(f"{name}: needs at least 2 images to hold some out for validation, got {n}")
    held_out = held_out_count(n, validation)
    order = torch.randperm(n, generator=make_generator(derive_seed(seed, "validation-split")))
    return order[held_out:].sort().values, order[:held_out].sort().values


def as_seen(images: ImageSet, standardize: bool) -> ImageSet:
    """The images as a run sees them: standardized per image (`batches.standardize`) if it was trained so."""
    return dataclasses.replace(images, images=standardize_images(images.images)) if standardize else images
