"""Images from anywhere a user keeps them, read strictly into an ImageSet.

A source is a built-in split (`mnist:test`, `fashion-mnist:train`), an IDX file, a `.npy` or `.npz`
array, a single PNG/JPEG/BMP/TIFF/WebP image, or a folder of images, read recursively (a folder of only
subfolders: one class per subfolder, its images at any depth).
Arrays may be N x H x W, N x H*W (square images), N x C x H x W or N x H x W x C (C = 1 or 3), as
uint8, bool, integers in [0, 255] or floats in [0, 1]. Anything else is a DataError that says
what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..rng import derive_seed, make_generator
from .batches import standardize as standardize_images
from . import dsprites_set
from .datasets import DATASETS, load_split, load_splits
from .files import MAX_DECODED_BYTES, MAX_IMAGE_PIXELS, display, open_input, read_npy_header
from .idx import read_idx
from .imageset import ImageSet
from .preparation import Preparation, fit_images, most_common_size, prepare, size_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_IMAGE_KEYS = ("images", "x", "X", "arr_0")
ARRAY_LABEL_KEYS = ("labels", "y", "Y")


def is_builtin(source: str) -> bool:
    """Whether `source` names a built-in split, like mnist:test or dsprites:test."""
    name, _, split = source.partition(":")
    return bool(split) and has_splits(name)


def has_splits(name: str) -> bool:
    """Whether `name` is a built-in dataset with train and test splits of its own (downloaded or generated)."""
    return name in DATASETS or name == dsprites_set.NAME


def read_images(source: str | Path, data_dir: str | Path | None = None, size: tuple[int, int] | None = None,
                resize: str = "crop", warn: Callable[[str], None] | None = None) -> ImageSet:
    """Read the images (and labels, where the source has them) of any supported source.

    `size` (H, W): a folder's images are fitted to it one by one as they are read (`preparation.fit_images` with
    `resize`), so that images of differing sizes become one set; without it they must share a size. `warn`
    receives one line about what was dropped (an alpha channel)."""
    text = str(source)
    if is_builtin(text):
        name, _, split = text.partition(":")
        if name == dsprites_set.NAME:
            return dsprites_set.load_split(split, data_dir)
        return load_split(name, split, data_dir)
    path = Path(source)
    if not path.exists():
        hint = ", ".join(f"{name}:train, {name}:test" for name in DATASETS) + f", {dsprites_set.NAME}:test"
        raise DataError(f"{display(path)}: no such file or directory (expected a built-in split such as {hint}, an "
                        "IDX, .npy or .npz file, an image, or a folder of images)")
    if path.is_dir():
        return read_folder(path, size=size, resize=resize, warn=warn)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".vkds":  # a dataset cache (vaekit data prepare), read whole
        from .streamed import open_streamed

        return open_streamed(path).materialize()
    if suffix in IMAGE_SUFFIXES:
        image, alpha = read_image(path)
        if alpha and warn:
            warn(f"{display(path)}: has an alpha channel, which is dropped (vaekit models colour only)")
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


ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def read_image_file(path: Path, budget: int = MAX_DECODED_BYTES) -> np.ndarray:
    """One image file as a uint8 array (C, H, W): grayscale stays one channel, colour becomes RGB.

    Palette images become RGB, or grayscale when the palette is gray; an alpha channel is dropped.
    16-bit images are scaled by their range (65535 -> 255), float images (TIFF) must be in [0, 1], as
    float arrays must. The size in the file's header is checked against MAX_IMAGE_PIXELS and `budget`
    (bytes still allowed) before anything is decoded.
    """
    return read_image(path, budget)[0]


def read_image(path: Path, budget: int = MAX_DECODED_BYTES) -> tuple[np.ndarray, bool]:
    """`read_image_file`, and whether the image had an alpha channel (or a transparent palette entry)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    source = display(path)
    try:
        # the bounds below replace PIL's decompression-bomb warning
        with (open_input(path) as f, warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning),
              Image.open(f) as image):
            width, height = image.size
            channels = 1 if image.mode in ("1", "L", "LA", "La", "I", "F", *SIXTEEN_BIT_MODES) else 3
            alpha = image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
            if width * height > MAX_IMAGE_PIXELS or width * height * channels > budget:
                limit = (f"more than {MAX_IMAGE_PIXELS} pixels, the most vaekit decodes from one image"
                         if width * height > MAX_IMAGE_PIXELS else
                         f"more than the {MAX_DECODED_BYTES} bytes vaekit decodes from images at once")
                raise DataError(f"{source}: a {width}x{height} image is {limit}")
            image.load()  # decode now: a truncated file fails here, not later
            image = ImageOps.exif_transpose(image)  # a camera's photo the way up it was taken (EXIF orientation)
            array = _gray_by_range(image, source)
            if array is None:
                if image.mode in ("1", "L", "LA", "La") or (image.mode in ("P", "PA") and _palette_is_gray(image)):
                    array = np.asarray(image.convert("L"))[None]  # the alpha channel dropped, not composited
                else:
                    array = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            struct.error, KeyError, TypeError) as e:  # the last three: malformed EXIF data
        # PIL names the file object it was given (<_io.BufferedReader name=7>): say what it means instead
        reason = "not an image PIL can read, or a damaged one" if isinstance(e, UnidentifiedImageError) else e
        raise DataError(f"{source}: unreadable image ({reason})") from None
    return np.array(array, dtype=np.uint8, order="C"), alpha  # a writable copy: PIL's arrays are read-only


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
    """The image files under a folder, at any depth, sorted by path; if it holds no images directly, those of
    each subfolder (at any depth below it) in turn, with their labels (the subfolder's index, in sorted order)
    and the class names (the subfolders'), else None and (). Hidden files and folders are skipped."""
    top = _visible(path)
    files = sorted(p for p in top if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    classes: tuple[str, ...] = ()
    labels = None
    if not files:
        folders = sorted(p for p in top if p.is_dir())
        per_class = [_images_under(d) for d in folders]
        files = [f for group in per_class for f in group]
        labels = torch.tensor([i for i, group in enumerate(per_class) for _ in group], dtype=torch.long)
        classes = tuple(display(d.name) for d in folders)
    else:
        files = _images_under(path)
    if not files:
        raise DataError(f"{display(path)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                        "in it and its subfolders)")
    return files, labels, classes


def read_folder(path: Path, size: tuple[int, int] | None = None, resize: str = "crop",
                warn: Callable[[str], None] | None = None) -> ImageSet:
    """All images under a folder (`folder_files`: at any depth, class subfolders as labels).

    `size` (H, W): each image is fitted to it as it is read (see `read_images`); without it, images of
    differing sizes are a DataError that names the sizes found and suggests the most common one.
    """
    files, labels, classes = folder_files(path)
    arrays, budget, with_alpha = [], MAX_DECODED_BYTES, 0
    for f in files:
        array, alpha = read_image(f, MAX_DECODED_BYTES if size else budget)
        if size is not None and array.shape[1:] != size:  # fitted now: only the fitted image is kept
            one = ImageSet(torch.from_numpy(array)[None], None, display(f))
            array = fit_images(one, (array.shape[0], *size), resize).images[0].numpy()
        if array.nbytes > budget:  # only when fitted: read_image checked the others against the budget left
            raise DataError(f"{display(path)}: its images, at {size[0]}x{size[1]}, are more than the "
                            f"{MAX_DECODED_BYTES} bytes vaekit decodes from images at once")
        arrays.append(array)
        budget -= array.nbytes
        with_alpha += alpha
    if with_alpha and warn:
        warn(f"{display(path)}: {with_alpha} of {len(files)} images have an alpha channel, which is dropped "
             "(vaekit models colour only)")
    channels = 3 if any(a.shape[0] == 3 for a in arrays) else 1
    arrays = [np.repeat(a, 3, axis=0) if a.shape[0] != channels else a for a in arrays]
    sizes = [a.shape[1:] for a in arrays]
    if len(set(sizes)) > 1:
        common, found = most_common_size(sizes)
        raise DataError(f"{display(path)}: its images differ in size (HxW {found}); give --image-size "
                        f"{size_text(common)} (the most common) or another size to resize the shorter side and "
                        "crop the centre")
    names = tuple(display(f.relative_to(path)) for f in files)
    return ImageSet(torch.from_numpy(np.stack(arrays)), labels, display(path), classes, names)


def _visible(folder: Path) -> list[Path]:
    """A folder's entries, without hidden ones (.DS_Store, .ipynb_checkpoints)."""
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as e:
        raise DataError(f"{display(folder)}: cannot list ({e.strerror or e})") from None


def _images_under(folder: Path) -> list[Path]:
    """The image files under `folder` at any depth (not following links to folders, so no loop), sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder, onerror=lambda e: _unlistable(e)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES
                  and (Path(root) / n).is_file()]
    return sorted(found)


def _unlistable(error: OSError) -> None:
    raise DataError(f"{display(error.filename)}: cannot list ({error.strerror or error})")


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
    """Convert images to a model's (C, H, W) as runs before format 8 did: RGB <-> grayscale, and resizing at
    the same aspect ratio only (`prepare.fit_images` with resize "aspect"; a different one is a DataError)."""
    return fit_images(images, shape, "aspect")


def load_train_test(name: str, validation: float, seed: int, data_dir: str | Path | None = None,
                    progress: bool = False, images: ImageSet | None = None, standardize: bool = False,
                    stream: bool = False, preparation: Preparation | None = None) -> tuple[ImageSet, ImageSet]:
    """A run's training images and held-out images, standardized per image if the run asks (`as_seen`).

    For a built-in dataset, its train and test splits; for a path, a seeded random `validation`
    fraction of its images is held out (at least one image each side). `images`, if given, are that
    path's images already read (the CLI reads them once, to size the model). `stream`: a cache, or a path
    that `convert.should_stream` (or `images` already streamed) gives StreamedSets, read from its cache
    batch by batch, with the same split. `preparation`: the run's (`preparation.prepare`, its size and
    channels; polarity is for new images, never the run's own).
    """
    if name in DATASETS:
        train, test = load_splits(name, ("train", "test"), data_dir, progress=progress)
        return as_seen(_fitted(train, preparation), standardize), as_seen(_fitted(test, preparation), standardize)
    if name == dsprites_set.NAME:  # streamed; held in memory, a seeded IN_MEMORY_TRAIN of the training split
        train, test = dsprites_set.streamed_splits(data_dir, progress, log=_stderr_log if progress else None)
        if stream:
            return train.standardized(standardize), test.standardized(standardize)
        return (as_seen(_fitted(dsprites_set.in_memory_train(train), preparation), standardize),
                as_seen(_fitted(test.materialize(), preparation), standardize))
    if stream:
        from .convert import is_cache, open_images, should_stream
        from .streamed import StreamedSet

        if images is None and (is_cache(name) or should_stream(name)):
            images = open_images(name, data_dir, progress)
        if isinstance(images, StreamedSet):
            images = images.standardized(standardize)
            train_order, held_out_order = validation_split(len(images), validation, seed, images.name)
            return images.subset(train_order), images.subset(held_out_order)
    if images is None:
        images = _read_for(name, data_dir, preparation)
    images = as_seen(_fitted(images, preparation), standardize)
    train_order, held_out_order = validation_split(len(images), validation, seed, images.name)
    return images.subset(train_order), images.subset(held_out_order)


def load_held_out(name: str, validation: float, seed: int, data_dir: str | Path | None = None,
                  standardize: bool = False, preparation: Preparation | None = None) -> ImageSet:
    """The held-out images of `load_train_test` alone: for a built-in dataset only its test split is
    read (or downloaded), never the training split; from a cache, only the held-out share."""
    if name in DATASETS:
        return as_seen(_fitted(load_split(name, "test", data_dir), preparation), standardize)
    if name == dsprites_set.NAME:
        return as_seen(_fitted(dsprites_set.load_split("test", data_dir), preparation), standardize)
    from .streamed import streamed_held_out

    if (streamed := streamed_held_out(name, validation, seed, data_dir, standardize)) is not None:
        return streamed.materialize()  # only the held-out share is read into memory
    images = _read_for(name, data_dir, preparation)
    held_out = images.subset(validation_split(len(images), validation, seed, images.name)[1])
    return as_seen(_fitted(held_out, preparation), standardize)


def _stderr_log(line: str) -> None:
    import sys

    print(f"vaekit: {line}", file=sys.stderr)


def _read_for(name: str, data_dir, preparation: Preparation | None) -> ImageSet:
    """A run's own images, a folder's fitted to the run's size as they are read."""
    if preparation is None:
        return read_images(name, data_dir)
    return read_images(name, data_dir, size=preparation.size, resize=preparation.resize)


def _fitted(images: ImageSet, preparation: Preparation | None) -> ImageSet:
    """A run's own images in its channels and size (never inverted: the run was trained on them as they are)."""
    if preparation is None:
        return images
    return prepare(images, dataclasses.replace(preparation, invert="off")).images


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
