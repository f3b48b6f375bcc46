"""Trained runs shipped inside vaekit, reachable by name wherever a run is taken: `pretrained:mnist`.

    vaekit/pretrained/manifest.json   each run: what it is, the commands that made it (and the vaekit, torch and
                                      CPU they ran on), its measured numbers, and the size and SHA-256 of its files
    vaekit/pretrained/runs/NAME/      the run directory: config.json, model.safetensors, metrics.jsonl, and where
                                      useful threshold.json and samplers/ (no optimizer state, no pictures)

`resolve` is the one place a name becomes a directory (`vaekit.runs` calls it for every run it reads, the CLI
through it); each resolution checks the run's files against the manifest, so a doctored file is a RunError.
The runs are shared and may be read-only (site-packages): `refuse_shipped` stops anything that would write
into one, and `copy` makes a run directory of one's own. scripts/make_pretrained.py rebuilds them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path, PurePosixPath

from ..errors import RunError

PREFIX = "pretrained:"
ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"
MANIFEST = ROOT / "manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 16 << 20  # a shipped file: the largest weights are a few MB
NOT_RESUMABLE = ("it ships without its optimizer state, so it cannot be continued: train a run of your own with its "
                 "commands (vaekit pretrained list --json)")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# The files a shipped run may hold, by path inside its directory: what loading it reads, nothing else.
FILE_PATTERN = re.compile(r"(config\.json|model\.safetensors|metrics\.jsonl|threshold\.json|data\.npz"
                          r"|samplers/[a-z0-9-]{1,32}\.(json|safetensors))")
# A shipped run trained on images of its own (not a built-in split) carries them, so that what reads its held-out
# images (eval, report, explore's map) works anywhere: its config then names this file in the run's folder.
DATA_FILE = "data.npz"


def is_name(run) -> bool:
    """Whether `run` (a str or Path) is a pretrained run's name, `pretrained:NAME`."""
    return isinstance(run, (str, os.PathLike)) and os.fspath(run).startswith(PREFIX)


def resolve(run) -> Path:
    """The directory of the run `run` names: a pretrained run's (`pretrained:NAME`, its files checked against the
    manifest), or `run` itself as a Path. RunError for an unknown name (listing the known ones) or a doctored file."""
    if not is_name(run):
        return Path(run)
    name = os.fspath(run)[len(PREFIX):]
    verified_files(name)
    return RUNS_DIR / name


def with_own_data(path: Path, config):
    """`config` of the run at `path`, naming the images it ships (DATA_FILE) as its data when it is a pretrained run
    that carries them; any other run's config as it is."""
    import dataclasses

    if shipped_name(path) is None or not (Path(path) / DATA_FILE).is_file():
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, name=str(Path(path) / DATA_FILE)))


def names() -> list[str]:
    """The pretrained runs' names, in the manifest's order."""
    return list(read_manifest()["runs"])


def entry(name: str) -> dict:
    """A pretrained run's manifest entry (description, commands, numbers, files); `name` with or without
    the `pretrained:` prefix. RunError naming the known runs for an unknown one."""
    name = bare(name)
    runs = read_manifest()["runs"]
    if name not in runs:
        shown = name if len(name) <= 64 else f"{name[:40]}...({len(name):,} characters)"  # no name is longer
        raise RunError(f"no pretrained run {PREFIX}{shown}; the pretrained runs: "
                       f"{', '.join(PREFIX + known for known in runs) or 'none (this vaekit ships none)'}")
    return runs[name]


def bare(name: str) -> str:
    """A pretrained run's name without the `pretrained:` prefix."""
    return name.removeprefix(PREFIX)


def shipped_name(path) -> str | None:
    """The name of the pretrained run at `path` (a name, or a path into vaekit's own copy), or None for any
    other run directory."""
    if is_name(path):
        return os.fspath(path)[len(PREFIX):]
    try:
        relative = Path(path).resolve().relative_to(RUNS_DIR)
    except (ValueError, OSError):
        return None
    return relative.parts[0] if relative.parts else None


def refuse_shipped(path, what: str, way_out: str | None = None) -> None:
    """RunError if `path` is a pretrained run, which `what` (e.g. "vaekit calibrate") would write into: it is
    shared, and may be read-only; the error says how to make a copy of one's own (or `way_out`)."""
    name = shipped_name(path)
    if name is not None:
        way_out = way_out or f"copy it to a run directory of your own first: vaekit pretrained copy {name} DIR"
        raise RunError(f"{PREFIX}{name} is a pretrained run shipped with vaekit, which {what} would write into; "
                       f"{way_out}")


def scratch_file(run_path: Path, file_name: str) -> Path:
    """Where a command keeps a record that belongs to a run (`runs.NLL_FILE`): in the run directory, or, for a
    pretrained run, in the user's cache ($XDG_CACHE_HOME/vaekit/pretrained/NAME/), never beside vaekit's files."""
    name = shipped_name(run_path)
    if name is None:
        return Path(run_path) / file_name
    from ..data.datasets import cache_dir

    folder = cache_dir() / "pretrained" / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # the record's writer warns that it cannot record, and goes on
    return folder / file_name


def copy(name: str, target: str | Path) -> Path:
    """Copy the pretrained run `name` (its files checked) to the new run directory `target`; never replaces
    anything: RunError if `target` exists. The copy is made under a temporary name and renamed when complete."""
    name = bare(name)
    target = Path(target)
    if os.path.lexists(target):
        raise RunError(f"{target} already exists; vaekit pretrained copy makes a new run directory: "
                       "choose a name that does not exist")
    files = verified_files(name)
    refuse_inside_vaekit(target)
    staging = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        if DATA_FILE in files:  # the copy's config names its own copy of the images
            document = json.loads(files["config.json"])
            document["data"]["name"] = str(target.resolve() / DATA_FILE)
            files = {**files, "config.json": (json.dumps(document, indent=2) + "\n").encode()}
        for relative, data in files.items():
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
        if os.path.lexists(target):  # made while we copied
            raise RunError(f"{target} already exists; choose a name that does not exist")
        os.rename(staging, target)
    except OSError as e:
        raise RunError(f"cannot copy {PREFIX}{name} to {target}: {e.strerror or e}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def refuse_inside_vaekit(target: Path) -> None:
    """RunError if `target` (links followed) lies in vaekit's own package or its runs folder: a copy there would
    write into the installed vaekit, and one under a shipped run would make that run fail its check (an extra file)."""
    try:
        where = Path(os.path.realpath(target.parent)) / target.name
    except (OSError, ValueError):
        return  # the copy itself fails in one line
    for folder in (ROOT.parent, RUNS_DIR):
        if where == folder.resolve() or folder.resolve() in where.parents:
            raise RunError(f"{target} is inside vaekit's own files ({folder}); copy the run to a folder of your own")


def verified_files(name: str) -> dict[str, bytes]:
    """The files of the pretrained run `name`, by path inside its directory, each read no further than its recorded
    size and checked against it and its SHA-256; RunError naming the first file that differs, is missing, or is
    not in the manifest."""
    name = bare(name)
    files = entry(name)["files"]
    folder = RUNS_DIR / name
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()) \
        if folder.is_dir() else []
    if extra := [f for f in found if f not in files]:
        raise RunError(f"{folder / extra[0]} is not one of the files of {PREFIX}{name} that vaekit shipped; "
                       "remove it, or reinstall vaekit")
    checked = {}
    for relative, spec in files.items():
        path = folder / relative
        try:
            if path.is_symlink() or not path.is_file():
                raise ValueError("missing" if not os.path.lexists(path) else "not a regular file")
            with open(path, "rb") as f:
                data = f.read(spec["bytes"] + 1)
            if len(data) != spec["bytes"]:
                raise ValueError(f"{len(data):,} bytes where the manifest says {spec['bytes']:,}")
            if hashlib.sha256(data).hexdigest() != spec["sha256"]:
                raise ValueError("its SHA-256 is not the one in the manifest")
        except (OSError, ValueError) as e:
            raise RunError(f"{path}: {e.strerror if isinstance(e, OSError) else e}: the pretrained run {PREFIX}{name} "
                           "is damaged; reinstall vaekit") from None
        checked[relative] = data
    return checked


def read_manifest() -> dict:
    """The manifest, checked field by field (RunError naming the first bad one)."""
    from ..validation import parse_json, read_bounded

    try:
        return check_manifest(parse_json(read_bounded(MANIFEST, MAX_MANIFEST_BYTES)))
    except FileNotFoundError:
        return {"manifest_version": MANIFEST_VERSION, "made_with": {}, "runs": {}}  # a vaekit built without them
    except (OSError, ValueError) as e:
        raise RunError(f"{MANIFEST}: unreadable ({e.strerror if isinstance(e, OSError) else e}); "
                       "reinstall vaekit") from None


def check_manifest(document) -> dict:
    """A manifest document, checked: ValueError naming the first field that is not as `make_pretrained.py`
    writes it."""
    from ..validation import finite_number

    if not isinstance(document, dict) or document.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"expected a JSON object with manifest_version {MANIFEST_VERSION}")
    if not isinstance(document.get("made_with"), dict) or not isinstance(document.get("runs"), dict):
        raise ValueError("made_with and runs must be objects")
    for name, run in document["runs"].items():
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{name!r} is not a pretrained run's name (lowercase letters, digits and -)")
        if not isinstance(run, dict) or not isinstance(run.get("description"), str):
            raise ValueError(f"runs.{name} needs a description")
        commands = run.get("commands")
        if not isinstance(commands, list) or not commands or not all(isinstance(c, str) for c in commands):
            raise ValueError(f"runs.{name}.commands must be a list of commands")
        numbers = run.get("numbers")
        if not isinstance(numbers, dict):
            raise ValueError(f"runs.{name}.numbers must be an object")
        for key, value in numbers.items():
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                finite_number(value, f"runs.{name}.numbers.{key}")
        files = run.get("files")
        if not isinstance(files, dict) or "config.json" not in files or "model.safetensors" not in files:
            raise ValueError(f"runs.{name}.files must list at least config.json and model.safetensors")
        for relative, spec in files.items():
            if not FILE_PATTERN.fullmatch(relative) or PurePosixPath(relative).as_posix() != relative:
                raise ValueError(f"runs.{name}.files: {relative!r} is not a file a run ships")
            size, digest = (spec.get("bytes"), spec.get("sha256")) if isinstance(spec, dict) else (None, None)
            if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_FILE_BYTES:
                raise ValueError(f"runs.{name}.files.{relative}.bytes must be from 1 to {MAX_FILE_BYTES:,}")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"runs.{name}.files.{relative}.sha256 must be 64 hex digits")
    return document


def manifest_text(document: dict) -> str:
    """The manifest as written: checked, indented JSON with a final newline."""
    return json.dumps(check_manifest(document), indent=2) + "\n"
