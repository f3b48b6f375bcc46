"""The explorer's page in real headless Chromium (issue #26): `vaekit explore` serves a run trained here on a free
port, and the page is driven as a user would: the map renders, a click decodes, a slider moves the image, an
upload returns a score. Each step is checked on the screenshot's pixels, not only on the DOM."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main
from vaekit.data import load_split

from .chromium import Browser, find_chromium
from .conftest import DATA_DIR

TRAIN_IMAGES = 1600  # half of them held out as the test set: an 800-point map


def chromium() -> str:
    found = find_chromium()
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (Debian's chromium package) for the explorer's browser test")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of 1 epoch on 1,600 MNIST training images (800 held out as their test set): "small", a VAE with 8
    latent dimensions, and "ladder", a hierarchical VAE with layers of 8 and 4."""
    root = tmp_path_factory.mktemp("explore")
    mnist = load_split("mnist", "train", DATA_DIR)
    data = root / "digits.npz"
    np.savez(data, images=mnist.images[:TRAIN_IMAGES, 0].numpy(), labels=mnist.labels[:TRAIN_IMAGES].numpy())
    common = ["train", "--data", str(data), "--validation", "0.5", "--epochs", "1", "--hidden", "200", "--threads", "1"]
    assert main([*common, "--latent", "8", "--out", str(root / "small")]) == 0
    assert main([*common, "--family", "hvae", "--latent", "8", "4", "--out", str(root / "ladder")]) == 0
    return [root / "small", root / "ladder"]


@pytest.fixture(scope="module")
def server(runs):
    """`vaekit explore RUN RUN --port 0` in a subprocess; its URL, read from the line it prints."""
    if not os.environ.get("CI"):
        pytest.importorskip("starlette")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", *map(str, runs), "--port", "0",
                                "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if not select.select([process.stdout], [], [], 180)[0]:  # (loading the runs and mapping them comes first)
            raise AssertionError("vaekit explore printed no URL in 180 s")
        line = process.stdout.readline()
        if not line.startswith("vaekit explore: serving on http://"):
            process.kill()
            raise AssertionError(f"vaekit explore printed {line!r}; stderr: {process.stderr.read()[-2000:]}")
        yield line.split("serving on ", 1)[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module's tests (each loads the page afresh)."""
    with Browser(chromium(), tmp_path_factory.mktemp("profile")) as browser:
        yield browser


def counter(browser: Browser, name: str) -> int:
    return int(browser.evaluate(f"document.body.dataset.{name}"))


def wait_past(browser: Browser, name: str, seen: int) -> None:
    browser.wait_for(f"Number(document.body.dataset.{name}) > {seen}", what=f"the page's {name} counter past {seen}")


def coloured(pixels: np.ndarray) -> np.ndarray:
    """The pixels that are neither white nor grey: the map's points (their colour is the label's)."""
    pixels = pixels.astype(int)
    return (pixels.max(-1) - pixels.min(-1)) > 40


def test_the_page_maps_decodes_slides_and_scores_an_upload(server, browser, tmp_path):
    upload = tmp_path / "noise.png"  # an image unlike any digit: a high score, a non-blank reconstruction
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(upload)
    browser.goto(server)
    browser.wait_for("document.body.dataset.ready === '1'", what="the map to be drawn")
    browser.wait_for("Number(document.body.dataset.decoded) >= 1", what="the first decoded image")
    assert browser.evaluate("document.getElementById('error').hidden")

    # the map: 800 points in the colours of the 10 digits, on a white background
    shot = browser.screenshot("#map")
    assert shot.shape[:2] == (522, 522)  # 520 px of map in a 1 px border
    points = coloured(shot)
    assert points.sum() > 2_000, points.sum()
    _, counts = np.unique(shot[points] // 32, axis=0, return_counts=True)  # colours, to 3 bits a channel
    assert (counts > 50).sum() >= 5, sorted(counts)[-10:]
    assert len(browser.evaluate("Array.from(document.querySelectorAll('#legend span'), s => s.textContent)")) == 10

    # a click on the map, away from every point, decodes the point mapped back to the latent space
    before = browser.screenshot("#decoded").astype(int)
    box = browser.rect("#map")  # (after the screenshot, which scrolls to its element)
    seen = counter(browser, "decoded")
    browser.click(box["x"] + 12, box["y"] + 12)
    wait_past(browser, "decoded", seen)
    after = browser.screenshot("#decoded").astype(int)
    assert np.abs(after - before).mean() > 3, np.abs(after - before).mean()
    assert "mapped back" in browser.evaluate("document.getElementById('decoded-caption').textContent")
    assert after.std() > 10  # an image, not a blank canvas

    # the most informative dimension's slider, dragged to its right end, changes the image; while it moves, at
    # most one decode is in flight, and the last one sent decodes where the slider stopped (latest wins)
    browser.evaluate("""(() => { const real = window.fetch; window.decodes = {open: 0, most: 0, bodies: []};
        window.fetch = async (url, options) => {
            if (!String(url).startsWith('/api/decode')) return real(url, options);
            const d = window.decodes; d.open++; d.most = Math.max(d.most, d.open); d.bodies.push(options.body);
            try { return await real(url, options); } finally { d.open--; } }; })()""")
    top = browser.evaluate("document.querySelector('#sliders input').id")
    slider = browser.rect(f"#{top}")
    seen = counter(browser, "decoded")
    middle = slider["y"] + slider["height"] / 2
    browser.drag((slider["x"] + slider["width"] / 2, middle), (slider["x"] + slider["width"] - 1, middle))
    wait_past(browser, "decoded", seen)
    browser.wait_for("!document.getElementById('decoded-caption').textContent.includes('mapped back')")
    browser.wait_for("!decoderA.busy", what="the drag's last decode")  # (the page's latest-wins decoder)
    slid = browser.screenshot("#decoded").astype(int)
    assert np.abs(slid - after).mean() > 3, np.abs(slid - after).mean()
    stopped = float(browser.evaluate(f"document.getElementById('{top}').value"))
    assert stopped > 2.5
    decodes = browser.evaluate("window.decodes")
    dim = int(top.removeprefix("slider-"))
    assert decodes["most"] == 1 and decodes["open"] == 0 and len(decodes["bodies"]) >= 2
    assert json.loads(decodes["bodies"][-1])["z"][0][dim] == pytest.approx(stopped)

    # the page's paths: linear, and slerp along the great circle (norm kept between orthogonal unit codes)
    assert browser.evaluate("lerp([1, 0], [0, 1], 0.25)") == [0.75, 0.25]
    half = browser.evaluate("slerp([1, 0], [0, 1], 0.5)")
    assert half == pytest.approx([2 ** -0.5, 2 ** -0.5])

    # an upload: its score (a number of nats) on the page, its reconstruction drawn, its nearest images
    seen = counter(browser, "uploaded")
    browser.set_file("#upload-file", upload)
    wait_past(browser, "uploaded", seen)
    score = browser.evaluate("document.querySelector('#score .number').textContent")
    assert np.isfinite(float(score)) and float(score) > 0
    reconstruction = browser.screenshot("#upload-recon").astype(int)
    assert reconstruction.std() > 10 and reconstruction.max() - reconstruction.min() > 100
    assert browser.evaluate("document.querySelectorAll('#nearest img').length") == 5
    assert browser.evaluate("document.getElementById('error').hidden")

    # a bad request shows as one line on the page, never a stack
    browser.evaluate("postJSON('/api/decode', {run: state.a.run.name, z: [[1, 2]]}).catch(showError)")
    message = browser.wait_for("!document.getElementById('error').hidden && "
                               "document.getElementById('error').textContent", what="the error line")
    assert "\n" not in message and "Traceback" not in message and len(message) < 400


def test_the_page_switches_runs_and_shows_two_side_by_side_on_the_same_image(server, browser):
    browser.goto(server)
    browser.wait_for("document.body.dataset.ready === '1'", what="the map to be drawn")
    assert browser.evaluate("Array.from(document.getElementById('run-select').options, o => o.value)") == [
        "small", "ladder"]

    # the hierarchical run: its map, and its sliders per layer (8 and 4 dimensions)
    browser.evaluate("(s => { s.value = 'ladder'; s.dispatchEvent(new Event('change')); })"
                     "(document.getElementById('run-select'))")
    browser.wait_for("document.body.dataset.ready === '1' && state.a.run.name === 'ladder'", what="the switch")
    titles = browser.evaluate("Array.from(document.querySelectorAll('#sliders .layer-title'), t => t.textContent)")
    assert len(titles) == 2 and titles[0].endswith(": 8 dimensions") and titles[1].endswith(": 4 dimensions")
    assert browser.evaluate("document.querySelectorAll('#sliders input').length") == 12
    assert coloured(browser.screenshot("#map")).sum() > 2_000

    # side by side with the flat run: its map beside, and a test image picked on the first map decoded by both
    browser.evaluate("(s => { s.value = 'small'; s.dispatchEvent(new Event('change')); })"
                     "(document.getElementById('compare-select'))")
    browser.wait_for("state.b && maps.b.data && Number(document.body.dataset.sampled) >= 2", what="run B's map")
    assert coloured(browser.screenshot("#map-b")).sum() > 2_000
    assert browser.evaluate("document.querySelectorAll('#samples-b img').length") == 16
    blank = browser.screenshot("#decoded-b").astype(int)
    box = browser.rect("#map")  # (after the screenshot, which scrolls to its element)
    x, y, index = browser.evaluate("""(() => { const m = maps.a;  // a point that a click at its centre picks
        for (let i = 0; i < m.px.length; i++) if (m.hit(m.px[i], m.py[i]) === i) return [m.px[i] +
        m.canvas.clientLeft, m.py[i] + m.canvas.clientTop, m.data.indices[i]]; })()""")
    seen = counter(browser, "decoded")
    browser.click(box["x"] + x, box["y"] + y)
    browser.wait_for(f"Number(document.body.dataset.decoded) >= {seen + 2}", what="both runs' decodes")
    shown = browser.screenshot("#decoded-b").astype(int)
    assert shown.std() > 10 and np.abs(shown - blank).mean() > 3
    assert f"test image #{index}" in browser.evaluate("document.getElementById('decoded-caption').textContent")
    assert f"the same test image #{index}" in browser.evaluate(
        "document.getElementById('decoded-b-caption').textContent")
    assert browser.evaluate("document.getElementById('error').hidden")
