"""`vaekit explore`'s API latency over real HTTP: p50 and p95 of POST /api/decode for one image and for a 16-image
grid, GET /api/map of 10,000 points, POST /api/encode of one uploaded PNG, and the server's start (runs loaded,
the 10,000 test images encoded and mapped) until it prints its URL.

    PYTHONPATH=src python benchmarks/explore.py                  # trains the seed model for 1 epoch first
    PYTHONPATH=src python benchmarks/explore.py --run runs/seed  # or any run (pretrained:mnist)

The server is `vaekit explore RUN --port 0 --threads 1` in its own process; this process is the client, on one
persistent HTTP/1.1 connection as a browser's, timing each request from its first byte sent to its last byte
read. The decode latency depends on the network's size, not on how long it trained: one epoch of the seed's
MLP (`--recipe seed`, 784-400-20) times what ten would. Prints one JSON object, with the CPU and the load
average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2), "requests": len(ms)}


class Client:
    """One keep-alive HTTP connection to the server, timing each request."""

    def __init__(self, host: str, port: int):
        self.connection = http.client.HTTPConnection(host, port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[float, int, bytes]:
        headers = {"content-type": content_type} if body is not None else {}
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return time.perf_counter() - started, response.status, data

    def timed(self, method: str, path: str, bodies, content_type: str = "application/json") -> list[float]:
        times = []
        for body in bodies:
            seconds, status, data = self.request(method, path, body, content_type)
            if status != 200:
                raise SystemExit(f"{method} {path}: HTTP {status}: {data[:200]!r}")
            times.append(seconds)
        return times


def seed_run(out: Path) -> Path:
    """The seed's MLP trained one epoch on MNIST, in out/seed."""
    run = out / "seed"
    subprocess.run([sys.executable, "-m", "vaekit", "train", "--recipe", "seed", "--epochs", "1", "--threads", "1",
                    "--out", str(run)], check=True, env=environment(), stdout=subprocess.DEVNULL)
    return run


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def upload_png(rng: np.random.Generator) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="the run to serve (default: train the seed model for 1 epoch)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint (default 300)")
    parser.add_argument("--map-requests", type=int, default=20, help="timed GET /api/map (default 20)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or str(seed_run(Path(tmp)))
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", run, "--port", "0", "--threads", "1",
                                   "--map-points", "10000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=environment())
        try:
            line = server.stdout.readline()
            start_seconds = time.perf_counter() - started
            if not line.startswith("vaekit explore: serving on http://"):
                raise SystemExit(f"the server did not start: {line!r}")
            host, port = line.split("http://")[1].rstrip("/\n").rsplit(":", 1)
            client = Client(host, int(port))
            described = json.loads(client.request("GET", "/api/runs")[2])["runs"][0]
            name, dims = described["name"], described["latent_dims"]
            rng = np.random.default_rng(0)

            def decode_bodies(rows: int, kind: str):
                for _ in range(args.requests):
                    z = rng.standard_normal((rows, dims)).round(4).tolist()
                    yield json.dumps({"run": name, "z": z, "format": kind}).encode()

            map_path = f"/api/map?run={name}"
            first_map, status, data = client.request("GET", map_path)
            points = len(json.loads(data)["points"])
            client.timed("POST", "/api/decode", decode_bodies(1, "json"))  # warm-up: the same count again
            results = {
                "decode_1_json": percentiles(client.timed("POST", "/api/decode", decode_bodies(1, "json"))),
                "decode_1_png": percentiles(client.timed("POST", "/api/decode", decode_bodies(1, "png"))),
                "decode_16_png_grid": percentiles(client.timed("POST", "/api/decode", decode_bodies(16, "png"))),
                "decode_16_json": percentiles(client.timed("POST", "/api/decode", decode_bodies(16, "json"))),
                "map": {**percentiles(client.timed("GET", map_path, [None] * args.map_requests)), "points": points,
                        "first_ms": round(first_map * 1000, 2), "bytes": len(data)},
                "encode_png_upload": percentiles(client.timed(
                    "POST", f"/api/encode?run={name}", (upload_png(rng) for _ in range(args.requests // 3)),
                    "image/png")),
            }
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps({
        "benchmark": "explore", "run": args.run or "seed MLP (784-400-20), 1 epoch", "latent_dims": dims,
        "server": "vaekit explore --threads 1 (uvicorn, one process); client: this process, one keep-alive "
                  "connection", "start_to_url_s": round(start_seconds, 2), **results,
        "machine": machine(), "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
