"""The explorer's page load in real headless Chromium: from navigation to an interactive map of 10,000 points
(issue #26's target: <= 2 s), for a run on MNIST (its 10,000 test images on the map).

    PYTHONPATH=src python benchmarks/explore_page.py --run /tmp/seed
    PYTHONPATH=src python benchmarks/explore_page.py            # trains the seed model first (10 epochs)

Starts `vaekit explore RUN --port 0 --threads 1` (the map is computed before it serves, so the server's start is
not in the page's time), then loads the page --loads times in one headless Chromium with its cache disabled
(every load fetches the page, its script and the map again), and prints one JSON object: per load the time the
page set `data-ready` (map drawn, sliders built: `window.vaekitTiming.ready`, milliseconds since navigation
began), with the map request (fetch: request to parsed JSON) and its drawing (draw), and their median and max.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, median  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.chromium import Browser, find_chromium  # noqa: E402


def serve(run: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", str(run), "--port", "0", "--threads", "1"],
                               stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("vaekit explore: serving on "):
        process.kill()
        raise SystemExit(f"vaekit explore printed {line!r}")
    return process, line.split("serving on ", 1)[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained MNIST run (default: train the seed model into a temp dir)")
    parser.add_argument("--loads", type=int, default=10, help="page loads to time (default 10)")
    args = parser.parse_args()
    chromium = find_chromium()
    if not chromium:
        raise SystemExit("benchmarks/explore_page.py needs Chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run
        if run is None:
            run = Path(scratch) / "seed"
            subprocess.run([sys.executable, "-m", "vaekit", "train", "--recipe", "seed", "--out", str(run),
                            "--threads", "1"], check=True, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        process, url = serve(run)
        server_start = time.perf_counter() - started
        loads = []
        try:
            with Browser(chromium, Path(scratch) / "profile") as browser:
                browser.call("Network.enable")
                browser.call("Network.setCacheDisabled", {"cacheDisabled": True})
                for _ in range(args.loads):
                    browser.goto("about:blank")
                    browser.wait_for("document.readyState === 'complete' && location.href === 'about:blank'")
                    browser.goto(url)
                    browser.wait_for("document.body && document.body.dataset.ready === '1'", timeout=60)
                    timing = browser.evaluate("window.vaekitTiming")
                    loads.append({key: round(value, 1) for key, value in timing.items()})
        finally:
            process.terminate()
            process.wait(timeout=30)
    ready = [load["ready"] for load in loads]
    print(json.dumps({
        "benchmark": "explore_page", "machine": machine(), "points": loads[0]["points"],
        "server_start_s": round(server_start, 2), "loads": loads,
        "ready_ms": {"median": round(median(ready), 1), "max": round(max(ready), 1)},
        "map_fetch_ms_median": round(median([load["fetch"] for load in loads]), 1),
        "map_draw_ms_median": round(median([load["draw"] for load in loads]), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
