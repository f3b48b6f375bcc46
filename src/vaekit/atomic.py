"""Writing files so that a crash or a full disk never leaves a half-written one: temp file, fsync, rename."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import OutputError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically: readers see the old file or the new one, never a mix."""
    return atomic_write_files({Path(path): data})[0]


def atomic_write_files(files: dict[Path, bytes]) -> list[Path]:
    """Write several files that belong together (an .npz and its .csv) all or none: every target is checked
    and every temp file written before the first is renamed into place, so a refused target or a full disk
    leaves none of them behind."""
    paths = [Path(p) for p in files]
    for path in paths:
        check_target(path)
    temps: dict[Path, str] = {}
    path = paths[0]
    try:
        for path, data in zip(paths, files.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            temps[path] = _write_temp(path, data)
        for path in paths:
            os.replace(temps[path], path)
            del temps[path]
            _fsync_dir(path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    return paths


def check_target(path: Path) -> None:
    """OutputError unless `path` can become a regular file: its parents are directories (or missing), and
    it is missing or a regular file. A symlink, device, FIFO or directory is never replaced."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot write {path}: {blocker} is a file, not a directory")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise OutputError(f"cannot write {path}: it is {kind}; vaekit writes and replaces regular files only")


def _write_temp(path: Path, data: bytes) -> str:
    """A synced temp file beside `path` holding `data`, with the mode open() would give a new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; give the file the mode open() would
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def new_file_mode() -> int:
    """The permission bits a plain open() would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
