"""The explorer's page load in real headless Chromium: from navigation to an interactive map of 10,000 points
(issue #26's target: <= 2 s), for a run on MNIST (its 10,000 test images on the map).

    PYTHONPATH=src python benchmarks/explore_page.py --run /tmp/seed
    PYTHONPATH=src python benchmarks/explore_page.py            # trains the seed model first (10 epochs)

Starts `vaekit explore RUN --port 0 --threads 1` (the map is computed before it serves, so the server's start is
not in the page's time), then loads the page --loads times in one headless Chromium with its cache disabled
(every load fetches the page, its script and the map again), and prints one JSON object: per load the time the
page set `data-ready` (map drawn, sliders built: `window.vaekitTiming.ready`, milliseconds since navigation
began), with the map request (fetch: request to parsed JSON) and its drawing (draw), and their median and max.

With --screenshots DIR it then takes the README's screenshots from the same page: DIR/explore-page.png (a test
image picked, an interpolation, a Fashion-MNIST upload scored, a slider moved, a hover) and, with --compare RUN2
served beside RUN, DIR/explore-side-by-side.png.

    PYTHONPATH=src python benchmarks/explore_page.py --run /tmp/seed --compare /tmp/vaekit --screenshots docs/images
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


def serve(runs: list[Path]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", *map(str, runs), "--port", "0",
                                "--threads", "1"], stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("vaekit explore: serving on "):
        process.kill()
        raise SystemExit(f"vaekit explore printed {line!r}")
    return process, line.split("serving on ", 1)[1].strip()


def state(browser: Browser, counter: str) -> int:
    return int(browser.evaluate(f"document.body.dataset.{counter}"))


def then(browser: Browser, counter: str, seen: int) -> None:
    browser.wait_for(f"Number(document.body.dataset.{counter}) > {seen}", timeout=60, what=counter)


def choose(browser: Browser, select: str, value: str) -> None:
    browser.evaluate(f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})"
                     f"(document.getElementById({json.dumps(select)}))")


def point_of(browser: Browser, label: int, nth: int = 0, region: tuple[int, int, int, int] = (60, 60, 460, 460)):
    """Viewport (x, y) of the nth point of a label on the main map, within region (x0, y0, x1, y1) of the map,
    that the pointer at its centre picks."""
    box = browser.rect("#map")
    x0, y0, x1, y1 = region
    x, y = browser.evaluate(f"""(() => {{ const m = maps.a; let n = {nth};
        for (let i = 0; i < m.px.length; i++) if (m.data.labels[i] === {label} && m.hit(m.px[i], m.py[i]) === i
            && m.px[i] > {x0} && m.px[i] < {x1} && m.py[i] > {y0} && m.py[i] < {y1} && n-- === 0)
            return [m.px[i] + m.canvas.clientLeft, m.py[i] + m.canvas.clientTop]; }})()""")
    return box["x"] + x, box["y"] + y


def click_label(browser: Browser, label: int, nth: int = 0) -> None:
    """Click the nth point of a label on the main map."""
    x, y = point_of(browser, label, nth)
    seen = state(browser, "decoded")
    browser.click(x, y)
    then(browser, "decoded", seen)


def upload_image(scratch: Path) -> Path:
    """A Fashion-MNIST test image (a sneaker) as PNG: an image unlike the digits the runs were trained on."""
    from PIL import Image

    from vaekit.data import load_split

    fashion = load_split("fashion-mnist", "test", download=False)
    index = int((fashion.labels == 7).nonzero()[0])
    path = scratch / "sneaker.png"
    Image.fromarray(fashion.images[index, 0].numpy()).save(path)
    return path


def save(browser: Browser, path: Path) -> None:
    """The viewport as a PNG of 256 colours (a third of the bytes of the full-colour screenshot)."""
    from PIL import Image

    Image.fromarray(browser.screenshot()).quantize(256).save(path, optimize=True)


def screenshots(browser: Browser, url: str, out: Path, scratch: Path, compare: bool) -> None:
    """The README's screenshots of the real page, driven as a user would."""
    out.mkdir(parents=True, exist_ok=True)
    browser.call("Emulation.setDeviceMetricsOverride", {"width": 1500, "height": 1560, "deviceScaleFactor": 1,
                                                        "mobile": False})
    browser.goto(url)
    browser.wait_for("document.body.dataset.ready === '1' && document.body.dataset.sampled === '1'", timeout=60)
    if "gmm" in browser.evaluate("state.a.run.samplers"):
        seen = state(browser, "sampled")
        choose(browser, "sampler-select", "gmm")
        then(browser, "sampled", seen)
    click_label(browser, 3)
    browser.evaluate("document.getElementById('pick-a').click()")
    click_label(browser, 8)
    browser.evaluate("document.getElementById('pick-b').click()")
    seen = state(browser, "interpolated")
    choose(browser, "interp-method", "slerp")
    then(browser, "interpolated", seen)
    seen = state(browser, "uploaded")
    browser.set_file("#upload-file", upload_image(scratch))
    then(browser, "uploaded", seen)
    click_label(browser, 2, nth=5)
    top = browser.evaluate("document.querySelector('#sliders input').id")
    box = browser.rect(f"#{top}")
    seen = state(browser, "decoded")
    middle = box["y"] + box["height"] / 2
    browser.drag((box["x"] + box["width"] * 0.52, middle), (box["x"] + box["width"] * 0.8, middle))
    then(browser, "decoded", seen)
    browser.evaluate("window.scrollTo(0, 0)")
    browser.mouse("moved", *point_of(browser, 0, region=(60, 300, 260, 480)))
    browser.wait_for("!document.getElementById('hover').hidden", timeout=20)
    time.sleep(1.5)  # the hovered image's two pictures
    save(browser, out / "explore-page.png")
    if compare:
        browser.call("Emulation.setDeviceMetricsOverride", {"width": 1960, "height": 1560, "deviceScaleFactor": 1,
                                                            "mobile": False})
        seen = state(browser, "uploaded")
        choose(browser, "compare-select", browser.evaluate("state.runs[1].name"))
        then(browser, "uploaded", seen)
        click_label(browser, 5)
        time.sleep(1.0)
        browser.evaluate("window.scrollTo(0, 0)")
        save(browser, out / "explore-side-by-side.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained MNIST run (default: train the seed model into a temp dir)")
    parser.add_argument("--loads", type=int, default=10, help="page loads to time (default 10)")
    parser.add_argument("--compare", type=Path, help="a second run, served too, for the side-by-side screenshot")
    parser.add_argument("--screenshots", type=Path, help="write the README's screenshots into this folder")
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
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        process, url = serve([run, args.compare] if args.compare else [run])
        server_start = time.perf_counter() - started
        loads = []
        try:
            with Browser(chromium, Path(scratch) / "profile") as browser:
                browser.call("Network.enable")
                browser.call("Network.setCacheDisabled", {"cacheDisabled": True})
                for _ in range(args.loads):
                    browser.goto(url)
                    browser.wait_for("document.body && document.body.dataset.ready === '1'", timeout=60)
                    timing = browser.evaluate("window.vaekitTiming")
                    loads.append({key: round(value, 1) for key, value in timing.items()})
                if args.screenshots:
                    screenshots(browser, url, args.screenshots, Path(scratch), bool(args.compare))
        finally:
            process.terminate()
            process.wait(timeout=30)
    ready = [load["ready"] for load in loads]
    print(json.dumps({
        "benchmark": "explore_page", "machine": machine(), "points": loads[0]["points"],
        "server_start_s": round(server_start, 2), "loads": loads,
        "load_average": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)},
        "ready_ms": {"median": round(median(ready), 1), "max": round(max(ready), 1)},
        "map_fetch_ms_median": round(median([load["fetch"] for load in loads]), 1),
        "map_draw_ms_median": round(median([load["draw"] for load in loads]), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
