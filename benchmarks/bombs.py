"""Memory bombs and hangs as input files: the peak RSS and wall time of each vaekit command that meets one.

    python benchmarks/bombs.py [--keep DIR]

Each case builds its file in a temp directory, runs `python -m vaekit ...` on it in a child process
(OMP_NUM_THREADS=1, a 120 s timeout), and reads the child's own peak RSS from os.wait4. Every case
must end with exit code 3 (a DataError) and one line on stderr, in well under 1 GB. The baseline is
the same command on a missing file: what importing vaekit and torch costs on its own.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from common import REPO, machine
from PIL import Image


def run(argv: list[str], timeout: float = 120.0) -> dict:
    """Run `python -m vaekit argv`; its exit code, wall seconds, peak RSS (MB) and last stderr line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "vaekit", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env)
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    stderr = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = stderr.strip().splitlines()
    return {"rc": child.returncode, "seconds": round(time.monotonic() - start, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr_lines": len(lines),
            "stderr": lines[-1][:200] if lines else ""}


def gzip_zeros_idx(path: Path, header: bytes, megabytes_of_zeros: int) -> Path:
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write(header)
        block = bytes(2**20)
        for _ in range(megabytes_of_zeros):
            f.write(block)
    return path


def npz_bomb(path: Path, gigabytes: int) -> Path:
    """An .npz whose images.npy member is `gigabytes` GB of zeros, deflated to a few MB."""
    count = gigabytes * 2**30 // 784
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (count, 28, 28)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            block = bytes(2**24)
            for _ in range(count * 784 // len(block)):
                member.write(block)
            member.write(bytes(count * 784 % len(block)))
    return path


def forged_compressed_file(directory: Path) -> tuple[Path, Path]:
    """A tiny run and a 2 KB compressed file whose header (checksums recomputed) claims 10^7 images."""
    sys.path.insert(0, str(REPO / "src"))
    from vaekit import ModelConfig, RunConfig
    from vaekit.compress import compress_images, pack, unpack
    from vaekit.config import DataConfig
    from vaekit.fit import build_model
    from vaekit.runs import create_run, save_weights

    config = RunConfig(DataConfig(binarize="threshold"), ModelConfig(hidden_dims=(32,), latent_dim=4))
    model = build_model(config).eval()
    run_dir = directory / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    create_run(run_dir, config)
    save_weights(run_dir, model, epoch=1)
    images = (np.random.default_rng(0).random((12, 28, 28)) < 0.2).astype(np.uint8) * 255
    header, words = unpack(compress_images(model, images, "npy", "threshold", 0)[0], "x")
    header = {k: v for k, v in header.items() if k not in ("payload_bytes", "payload_sha256")}
    header["count"] = 10**7
    header["layout"]["shape"][0] = 10**7
    path = directory / "claims-1e7.vkbb"
    path.write_bytes(pack(words, header))
    return run_dir, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="vaekit-bombs-"))
    directory.mkdir(parents=True, exist_ok=True)
    train = lambda source: ["train", "--data", str(source), "--epochs", "1", "--out", str(directory / "out")]  # noqa: E731

    cases = {}
    cases["baseline: a missing file"] = train(directory / "missing.npy")
    zeros = gzip_zeros_idx(directory / "zeros-idx3-ubyte.gz", b"", 2000)
    cases[f"gzip of zeros as IDX ({zeros.stat().st_size // 1024} KB, 2 GB inflated)"] = train(zeros)
    header = bytes([0, 0, 8, 3]) + (2_700_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    declared = gzip_zeros_idx(directory / "declared-idx3-ubyte.gz", header, 2000)
    cases[f"gzip IDX, valid header declaring 2.1 GB, zeros ({declared.stat().st_size // 1024} KB)"] = train(declared)
    png = directory / "png"
    png.mkdir(exist_ok=True)
    Image.new("L", (12000, 12000)).save(png / "0.png")
    for i in range(1, 6):
        (png / f"{i}.png").write_bytes((png / "0.png").read_bytes())
    cases[f"six {(png / '0.png').stat().st_size // 1024} KB PNGs of 12000x12000 (a folder)"] = train(png)
    cases["one 12000x12000 PNG"] = train(png / "0.png")
    many = directory / "many"
    many.mkdir(exist_ok=True)
    Image.new("L", (4096, 4096)).save(many / "00.png")
    for i in range(1, 40):
        (many / f"{i:02d}.png").write_bytes((many / "00.png").read_bytes())
    cases[f"forty {(many / '00.png').stat().st_size // 1024} KB PNGs of 4096x4096 (a folder, 640 MB decoded)"] = \
        train(many)
    npy = directory / "huge.npy"
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6)})
    npy.write_bytes(buffer.getvalue() + bytes(4096))
    cases[".npy header claiming 10^12 elements (4 KB file)"] = train(npy)
    bomb = npz_bomb(directory / "bomb.npz", 1)
    cases[f".npz member of 1 GB zeros ({bomb.stat().st_size // 1024} KB)"] = train(bomb)
    fifo = directory / "fifo.npy"
    if not fifo.exists():
        os.mkfifo(fifo)
    cases["a FIFO as input"] = train(fifo)
    cases["/dev/zero as input"] = train("/dev/zero")
    run_dir, forged = forged_compressed_file(directory)
    cases[f"decompress: a {forged.stat().st_size} B file claiming 10^7 images (checksums forged)"] = [
        "decompress", str(run_dir), str(forged), "-o", str(directory / "out.npy")]

    results = {name: run(argv) for name, argv in cases.items()}
    digest = hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()[:12]
    print(json.dumps({"machine": machine(), "results": results, "digest": digest}, indent=2))


if __name__ == "__main__":
    main()
