"""How long generating vaekit's dSprites takes, writing and re-reading (hash-checked) its file, and drawing a
sample of images by factor indices (what the disentanglement scores do). Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/dsprites.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from vaekit.data import dsprites, dsprites_file  # noqa: E402


def main() -> None:
    start = time.perf_counter()
    packed = dsprites.generate_packed()
    generate_s = time.perf_counter() - start
    digest = hashlib.sha256(packed).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dsprites_file.load(tmp, generate=lambda progress=False: packed)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        again = dsprites_file.read(dsprites_file.path_in(tmp))
        read_s = time.perf_counter() - start
        size = dsprites_file.path_in(tmp).stat().st_size
    assert (again == packed).all()
    indices = dsprites.indices_of(np.random.default_rng(0).integers(0, dsprites.COUNT, 10_000))
    start = time.perf_counter()
    images = dsprites.render(indices)
    render_s = time.perf_counter() - start
    assert (np.packbits(images, axis=-1).reshape(-1, 512) == packed[dsprites.image_index_of(indices)]).all()
    print(json.dumps({"machine": machine(), "images": dsprites.COUNT, "generate_s": round(generate_s, 2),
                      "sha256": digest, "file_bytes": size, "write_s": round(write_s, 2),
                      "read_and_check_s": round(read_s, 2), "render_10000_random_s": round(render_s, 2),
                      "mean_pixels_on": round(float(np.unpackbits(packed[::97]).mean()), 4)}, indent=1))


if __name__ == "__main__":
    main()
