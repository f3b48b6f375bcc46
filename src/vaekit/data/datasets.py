"""Built-in datasets: their files, checksums and mirrors; where they are looked for; the download.

Each data directory holds one folder per dataset (DIR/mnist/, DIR/fashion-mnist/). Directories are
searched in order: --data-dir, $VAEKIT_DATA_DIR, ./data, the copy bundled inside the package (MNIST,
found beside this module, so from any working directory and from a wheel), /usr/share/datasets
(Debian's place for dataset packages: `apt-get install dataset-fashion-mnist` puts the four official
Fashion-MNIST files, gzipped, in /usr/share/datasets/fashion-mnist/), then the user cache dir, which
is also where downloads go. Every file is checked against the MD5 of its uncompressed bytes, so
the gzipped and the raw form of a file are both accepted, however they were compressed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import new_file_mode
from ..errors import DataError
from .idx import decompress_if_gzipped, parse_idx
from .imageset import ImageSet


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its name as published (gzipped) and the MD5 of its uncompressed bytes."""

    name: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset published as IDX files: per split, an images file and a labels file."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    splits: dict[str, tuple[DataFile, DataFile]]
    classes: tuple[str, ...]
    licence: str
    package: str = ""  # the Debian package that installs its files into SYSTEM_DIR, if there is one


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    splits={
        "train": (
            DataFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
            DataFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
        ),
        "test": (
            DataFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
            DataFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
        ),
    },
    classes=tuple(str(d) for d in range(10)),
    licence="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    splits={
        "train": (
            DataFile("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            DataFile("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
        ),
        "test": (
            DataFile("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
            DataFile("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
    },
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    licence="MIT (Zalando SE)",
    package="dataset-fashion-mnist",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}

DATA_DIR_ENV = "VAEKIT_DATA_DIR"
BUNDLED_DIR = Path(__file__).parent / "bundled"  # package data (pyproject.toml); data/mnist links here
SYSTEM_DIR = Path("/usr/share/datasets")  # Debian's dataset packages install here (DatasetSpec.package)
DOWNLOAD_TIMEOUT_S = 30

Opener = Callable[..., object]  # urllib.request.urlopen's signature; tests pass their own


def get_spec(name: str) -> DatasetSpec:
    """The built-in dataset called `name`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS)}") from None


def cache_dir() -> Path:
    """The user cache dir where downloads go ($XDG_CACHE_HOME/vaekit or ~/.cache/vaekit)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaekit"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The data directories to look in, first match wins."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs += [Path("data"), BUNDLED_DIR, SYSTEM_DIR, cache_dir()]
    return dirs


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_bytes(data: bytes, file: DataFile, source: str) -> bytes:
    """The uncompressed form of `data`, after checking it against `file.md5`."""
    raw = decompress_if_gzipped(data, source)
    found = md5_of(raw)
    if found != file.md5:
        raise DataError(f"{source}: checksum mismatch (MD5 of the uncompressed data is {found}, expected {file.md5})")
    return raw


def read_checked(path: Path, file: DataFile) -> bytes:
    """The uncompressed bytes of the file at `path`, checked against `file.md5`."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return check_bytes(data, file, str(path))
    except DataError as e:
        raise DataError(f"{e}; delete it and vaekit will download it again") from None


def find_file(spec: DatasetSpec, file: DataFile, dirs: Sequence[Path]) -> Path | None:
    """The first `DIR/<dataset>/<file>` (gzipped or not) in `dirs`, or None."""
    for d in dirs:
        for name in (file.name, file.name.removesuffix(".gz")):
            path = d / spec.name / name
            if path.is_file():
                return path
    return None


def download_file(spec: DatasetSpec, file: DataFile, dest_dir: Path, opener: Opener | None = None,
                  progress: bool = False) -> Path:
    """Fetch `file` from the first mirror that serves it with the right checksum; returns its path.

    Each attempt streams to a temp file beside the destination, checks it, and renames it into place,
    so a failed or interrupted download never leaves a file that looks complete.
    """
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create download directory {dest_dir} ({e.strerror or e})") from None
    dest = dest_dir / file.name
    opener = opener or urllib.request.urlopen
    failures = []
    for mirror in spec.mirrors:
        url = mirror + file.name
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{file.name}.", suffix=".partial")
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, opener, progress)
            check_bytes(tmp.read_bytes(), file, url)
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, dest)
            return dest
        except DataError as e:
            failures.append(str(e))
        except OSError as e:  # URLError, HTTPError and socket timeouts are all OSErrors
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {spec.title} file {file.name} ({'; '.join(failures)})")


def _fetch(url: str, out, opener: Opener, progress: bool) -> None:
    from tqdm import tqdm

    with opener(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress,
                  leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def locate_files(spec: DatasetSpec, files: Sequence[DataFile], data_dir: str | Path | None = None,
                 download: bool = True, progress: bool = False) -> list[Path]:
    """The paths of `files`, found in the search dirs or downloaded into the cache dir, in order.

    A file that cannot be had fails with every file still missing named at once (not just the
    first), where vaekit looked, and how to point it at local copies.
    """
    dirs = search_dirs(data_dir)
    paths = [find_file(spec, file, dirs) for file in files]
    for i, file in enumerate(files):
        if paths[i] is not None:
            continue
        if not download:
            raise DataError(missing_files(spec, files, paths, dirs, "downloads are off"))
        try:
            paths[i] = download_file(spec, file, cache_dir() / spec.name, progress=progress)
        except DataError as e:
            raise DataError(missing_files(spec, files, paths, dirs, str(e))) from None
    return paths


def missing_files(spec: DatasetSpec, files: Sequence[DataFile], paths: Sequence[Path | None],
                  dirs: Sequence[Path], reason: str) -> str:
    """One line: the files with no path yet, where they were looked for, why they were not downloaded,
    and how to point vaekit at local copies."""
    missing = [file.name for file, path in zip(files, paths) if path is None]
    where = ", ".join(str(d / spec.name) for d in dirs)
    package = (f" (on Debian, apt-get install {spec.package} puts them in {SYSTEM_DIR / spec.name})"
               if spec.package else "")
    return (f"{spec.title} file{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found in {where}, and "
            f"{reason}; put the files in DIR/{spec.name}/ and pass --data-dir DIR, or set ${DATA_DIR_ENV} to DIR"
            + package)


def load_splits(name: str, splits: Sequence[str], data_dir: str | Path | None = None, download: bool = True,
                progress: bool = False) -> list[ImageSet]:
    """Several built-in splits, each as `load_split` gives it; only their files are looked for or downloaded."""
    spec = get_spec(name)
    for split in splits:
        if split not in spec.splits:
            raise DataError(f"{spec.title} has no split {split!r}; splits: {', '.join(spec.splits)}")
    files = [file for split in splits for file in spec.splits[split]]
    paths = dict(zip(files, locate_files(spec, files, data_dir, download, progress)))
    return [_read_split(spec, split, paths) for split in splits]


def load_split(name: str, split: str, data_dir: str | Path | None = None, download: bool = True,
               progress: bool = False) -> ImageSet:
    """Load a built-in split (e.g. `load_split("mnist", "test")`) as one uint8 tensor plus labels."""
    return load_splits(name, (split,), data_dir, download, progress)[0]


def _read_split(spec: DatasetSpec, split: str, paths: dict[DataFile, Path]) -> ImageSet:
    images, labels = (parse_idx(read_checked(paths[file], file), str(paths[file])) for file in spec.splits[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{spec.title} {split}: images {images.shape} do not match labels {labels.shape}")
    return ImageSet(
        images=torch.from_numpy(images).unsqueeze(1),  # (N, 1, H, W) uint8
        labels=torch.from_numpy(labels.astype("int64")),
        name=f"{spec.name}:{split}",
        classes=spec.classes,
    )
