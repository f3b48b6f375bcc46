"""vaekit explore's JSON API through Starlette's TestClient (no browser), and the CLI that serves it: every endpoint's
numbers checked against vaekit's own functions, and every bad request a 4xx with one line of JSON after which the
server still serves."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from vaekit import ImageSet, load_run  # noqa: E402
from vaekit.cli import main  # noqa: E402
from vaekit.config import DataConfig, ModelConfig, RunConfig  # noqa: E402
from vaekit.data import load_train_test  # noqa: E402
from vaekit.detector import Detector  # noqa: E402
from vaekit.explore.server import create_app  # noqa: E402
from vaekit.explore.session import MAX_DECODE_ROWS, MAX_UPLOAD_BYTES, Explorer, ExploredRun  # noqa: E402
from vaekit.generate import sample  # noqa: E402
from vaekit.models import build_model  # noqa: E402
from vaekit.representation import embed  # noqa: E402
from vaekit.rng import make_generator  # noqa: E402
from vaekit.runs import Run  # noqa: E402

from .tiny_run import copy_run, is_one_error_line, make_tiny_run  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def calibrated(tiny, tmp_path_factory):
    """A copy of the tiny run with a threshold.json (the complexity score, as `vaekit calibrate` fits it)."""
    run = copy_run(tiny, tmp_path_factory.mktemp("calibrated") / "calibrated")
    detector = Detector(load_run(run))
    detector.calibrate()
    detector.save()
    return run


@pytest.fixture(scope="module")
def explorer(tiny, calibrated):
    return Explorer.open([tiny, calibrated])


@pytest.fixture(scope="module")
def client(explorer):
    return TestClient(create_app(explorer))


def pixels(url: str) -> np.ndarray:
    """The pixels of a data-URL PNG (H, W) or (H, W, 3) as uint8."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix):]))))


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, 1, H, W) in [0, 1] as the PNGs hold them: (N, H, W) uint8."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()


def png_upload(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_runs_lists_each_run_with_its_shape_kl_order_threshold_and_config(client, tiny, calibrated):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["run", "calibrated"]
    first = runs[0]
    assert first["family"] == "vae" and first["latent_dims"] == 4 and first["layers"] == [4]
    assert first["image_shape"] == [1, 28, 28] and first["has_labels"] is True and first["map_points"] == 30
    assert first["config"] == json.loads(json.dumps(load_run(tiny).config.to_dict()))
    assert first["samplers"] == ["prior"] and first["threshold"] is None and first["score_method"] == "elbo"
    kl = first["kl"]
    assert len(kl) == 4 and all(v >= 0 for v in kl) and sum(kl) > 0.1
    assert first["dims_by_kl"] == sorted(range(4), key=lambda d: -kl[d])
    stored = json.loads((calibrated / "threshold.json").read_text())
    assert runs[1]["threshold"] == stored["threshold"] and runs[1]["score_method"] == stored["method"] == "complexity"


def test_map_points_are_the_pca_of_the_test_means_and_map_back(client, tiny):
    document = client.get("/api/map", params={"run": "run"}).json()
    run = load_run(tiny)
    test = run.held_out()
    assert document["method"] == "pca" and "maps back to" in document["note"]
    assert document["indices"] == list(range(30)) and document["labels"] == test.labels.tolist()
    assert len(document["points"]) == 30 and all(len(p) == 2 for p in document["points"])
    with torch.no_grad():
        mu = run.model.encode(run.inputs(test, for_latents=True)).mu.double()
    mean, components = np.array(document["inverse"]["mean"]), np.array(document["inverse"]["components"])
    assert np.allclose(mean, mu.mean(0).numpy(), atol=1e-6)
    assert np.allclose(components @ components.T, np.eye(2), atol=1e-6)  # orthonormal: a projection
    assert np.allclose(np.array(document["points"]), (mu.numpy() - mean) @ components.T, atol=1e-4)
    spread = np.array(document["points"]).std(0)
    assert spread[0] >= spread[1] > 0  # the first component carries the most variance


def test_image_gives_the_test_image_its_reconstruction_and_mean(client, tiny):
    body = client.get("/api/image", params={"run": "run", "index": 7}).json()
    run = load_run(tiny)
    test = run.held_out()
    assert body["label"] == int(test.labels[7])
    assert (pixels(body["image"]) == test.images[7, 0].numpy()).all()
    with torch.no_grad():
        mu = run.model.encode(run.inputs(test.subset(slice(7, 8)), for_latents=True)).mu
        reconstruction = as_uint8(run.model.pictures(mu))[0]
    assert np.allclose(body["mu"], mu[0].numpy(), atol=1e-5)
    assert (pixels(body["reconstruction"]) == reconstruction).all()
    big = client.get("/api/image", params={"run": "run", "index": 7, "scale": 3}).json()
    assert (pixels(big["image"]) == np.kron(test.images[7, 0].numpy(), np.ones((3, 3), np.uint8))).all()


def test_decoding_a_mean_gives_back_its_reconstruction(client):
    body = client.get("/api/image", params={"run": "run", "index": 3}).json()
    decoded = client.post("/api/decode", json={"run": "run", "z": [body["mu"]]}).json()["images"]
    assert len(decoded) == 1
    difference = np.abs(pixels(decoded[0]).astype(int) - pixels(body["reconstruction"]).astype(int))
    assert difference.max() <= 1  # the same z (through JSON's float64), the same image


def test_decode_returns_one_image_per_row_and_a_png_grid(client, explorer):
    z = torch.randn(16, 4, generator=make_generator(5)).tolist()
    images = client.post("/api/decode", json={"run": "run", "z": z}).json()["images"]
    expected = as_uint8(explorer.get("run").model.pictures(torch.tensor(z)).detach())
    assert len(images) == 16 and all((pixels(u) == e).all() for u, e in zip(images, expected))
    response = client.post("/api/decode", json={"run": "run", "z": z, "format": "png", "scale": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    grid = np.asarray(Image.open(io.BytesIO(response.content)))
    assert grid.shape == ((4 * 30 + 2) * 2,) * 2  # 4 x 4 tiles of 28 pixels, padded by 2, at scale 2
    assert (grid[4:60:2, 4:60:2] == expected[0]).all()  # the first tile, its pixels doubled
    assert (grid[4 + 60:60 + 60:2, 4 + 60 * 3:60 + 60 * 3:2] == expected[7]).all()  # row 1, column 3


def test_a_map_point_decodes_the_latent_its_inverse_gives(client):
    document = client.get("/api/map", params={"run": "run"}).json()
    mean, components = np.array(document["inverse"]["mean"]), np.array(document["inverse"]["components"])
    point = [0.5, -0.25]
    by_point = client.post("/api/decode", json={"run": "run", "map_points": [point]}).json()["images"][0]
    z = (mean + np.array(point) @ components).tolist()
    by_z = client.post("/api/decode", json={"run": "run", "z": [z]}).json()["images"][0]
    assert np.abs(pixels(by_point).astype(int) - pixels(by_z).astype(int)).max() <= 1


def test_an_uploads_nearest_images_are_training_images_by_posterior_mean(client, tiny):
    run = load_run(tiny)
    data = run.config.data
    train, _ = load_train_test(data.name, data.validation, run.config.train.seed, preparation=run.preparation())
    means = embed(run.model, run.inputs(train, for_latents=True), layer="all")[0]
    body = client.post("/api/encode", params={"run": "run"},
                       files={"file": ("digit.png", png_upload(train.images[7, 0].numpy()), "image/png")}).json()
    first = body["nearest"][0]  # the training image itself, then the next nearest of all the training images
    assert (first["split"], first["index"]) == ("train", 7) and first["distance"] < 1e-4
    assert np.allclose(first["mu"], means[7].numpy(), atol=1e-5)
    assert (pixels(first["image"]) == train.images[7, 0].numpy()).all()
    distances = torch.linalg.vector_norm(means - means[7], dim=1)
    assert [n["index"] for n in body["nearest"]] == torch.topk(distances, 5, largest=False).indices.tolist()


def test_an_uploaded_test_image_encodes_to_its_own_mean_and_score(client, tiny):
    run = load_run(tiny)
    test = run.held_out()
    body = client.post("/api/encode", params={"run": "run"},
                       files={"file": ("digit.png", png_upload(test.images[11, 0].numpy()), "image/png")}).json()
    image = client.get("/api/image", params={"run": "run", "index": 11}).json()
    assert np.allclose(body["mu"], image["mu"], atol=1e-5) and len(body["logvar"]) == 4
    assert np.allclose(body["point"], image["point"], atol=1e-4)
    assert len(body["nearest"]) == 5 and [n["distance"] for n in body["nearest"]] == sorted(
        n["distance"] for n in body["nearest"])
    assert {n["split"] for n in body["nearest"]} == {"train"}  # a test image's neighbours: training images
    expected = Detector.load(run).score(run.inputs(test.subset(slice(11, 12))))
    assert body["score"] == pytest.approx(float(expected.scores[0]), rel=1e-5)
    assert body["anomaly"] is None and body["threshold"] is None and body["score_method"] == "elbo"
    assert (pixels(body["input"]) == test.images[11, 0].numpy()).all()
    assert (pixels(body["reconstruction"]) == pixels(image["reconstruction"])).all()


def test_an_upload_is_prepared_as_the_runs_images_and_scored_against_its_threshold(client, calibrated):
    run = load_run(calibrated)
    big = np.kron(run.held_out().images[2, 0].numpy(), np.ones((2, 2), np.uint8))  # 56 x 56, an RGB JPEG
    buffer = io.BytesIO()
    Image.fromarray(np.stack([big] * 3, -1)).save(buffer, format="JPEG", quality=95)
    body = client.post("/api/encode", params={"run": "calibrated"}, content=buffer.getvalue(),
                       headers={"content-type": "image/jpeg"}).json()
    prepared = pixels(body["input"])
    assert prepared.shape == (28, 28)  # made the run's size and channels
    assert np.abs(prepared.astype(int) - run.held_out().images[2, 0].numpy()).mean() < 6
    detector = Detector.load(run)
    x = run.inputs(ImageSet(torch.from_numpy(prepared.copy())[None, None], None, "upload"))
    assert body["score"] == pytest.approx(float(detector.score(x).scores[0]), rel=1e-4)
    assert body["threshold"] == detector.threshold and body["anomaly"] == (body["score"] > detector.threshold)
    blank = client.post("/api/encode", params={"run": "calibrated"},
                        files={"file": ("white.png", png_upload(np.full((28, 28), 255, np.uint8)), "image/png")})
    assert blank.json()["anomaly"] is True  # a white page is no digit


def test_an_animated_png_is_read_by_its_first_frame_and_says_so(client, tiny):
    first, second = (load_run(tiny).held_out().images[i, 0].numpy() for i in (0, 1))
    buffer = io.BytesIO()
    Image.fromarray(first).save(buffer, format="PNG", save_all=True, append_images=[Image.fromarray(second)] * 2)
    animated = client.post("/api/encode?run=run", content=buffer.getvalue(), headers={"content-type": "image/png"})
    still = client.post("/api/encode?run=run", content=png_upload(first), headers={"content-type": "image/png"})
    assert animated.status_code == 200 and (pixels(animated.json()["input"]) == first).all()
    assert animated.json()["mu"] == still.json()["mu"]
    assert animated.json()["note"] == "it is animated (3 frames): its first frame was read"
    assert still.json()["note"] is None


def test_samples_are_the_seeded_prior_draws(client, explorer):
    first = client.get("/api/samples", params={"run": "run", "count": 4, "seed": 3}).json()["images"]
    again = client.get("/api/samples", params={"run": "run", "count": 4, "seed": 3}).json()["images"]
    other = client.get("/api/samples", params={"run": "run", "count": 4, "seed": 4}).json()["images"]
    expected = as_uint8(sample(explorer.get("run").model, 4, make_generator(3)))
    assert first == again and first != other
    assert all((pixels(u) == e).all() for u, e in zip(first, expected))


def test_interpolation_runs_from_one_image_to_the_other(client):
    a, b = (client.get("/api/image", params={"run": "run", "index": i}).json() for i in (0, 1))
    for method in ("linear", "slerp"):
        body = client.post("/api/interpolate", json={"run": "run", "a": {"index": 0}, "b": {"z": b["mu"]},
                                                     "steps": 5, "method": method}).json()
        assert len(body["images"]) == 5 and len(body["z"]) == 5
        assert np.allclose(body["z"][0], a["mu"], atol=1e-6) and np.allclose(body["z"][-1], b["mu"], atol=1e-6)
        assert np.abs(pixels(body["images"][0]).astype(int) - pixels(a["reconstruction"]).astype(int)).max() <= 1
    linear = client.post("/api/interpolate", json={"run": "run", "a": {"index": 0}, "b": {"index": 1},
                                                   "steps": 3}).json()["z"]
    assert np.allclose(linear[1], (np.array(a["mu"]) + np.array(b["mu"])) / 2, atol=1e-6)


def test_a_slerp_between_ends_within_the_bound_is_decoded_where_its_arc_passes_it(client, explorer):
    a, b = [1000.0, 1000.0, 1000.0, 1000.0], [-1000.0, 1000.0, 1000.0, 1000.0]  # each value at the bound
    response = client.post("/api/interpolate", json={"run": "run", "a": {"z": a}, "b": {"z": b}, "steps": 3,
                                                     "method": "slerp"})
    assert response.status_code == 200, response.text
    middle = np.array(response.json()["z"][1])
    assert np.allclose(middle, [0.0] + [2000 / 3**0.5] * 3) and middle.max() > 1000  # the arc's top: norm 2000
    decoded = explorer.get("run").pictures(np.array([middle]))
    assert (pixels(response.json()["images"][1]) == as_uint8(decoded)[0]).all()


def test_png_grids_are_drawn_one_at_a_time_so_concurrent_decodes_hold_one_canvas(explorer, monkeypatch):
    import threading
    import time

    from vaekit.explore import session

    drawing, most, real = [0], [0], session.grid_png
    lock = threading.Lock()

    def grid_png(*args, **kwargs):  # the real grid, counting how many are being drawn at once
        with lock:
            drawing[0] += 1
            most[0] = max(most[0], drawing[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                drawing[0] -= 1

    monkeypatch.setattr(session, "grid_png", grid_png)
    runs = [explorer.get(name) for name in explorer.runs]
    grids = [None] * 6
    threads = [threading.Thread(target=lambda i=i: grids.__setitem__(
        i, runs[i % 2].decode_png([[0.1 * i, 0.0, 0.0, 0.0]] * 4, scale=2))) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert all(g == runs[i % 2].decode_png([[0.1 * i, 0.0, 0.0, 0.0]] * 4, scale=2) for i, g in enumerate(grids))


def test_a_body_that_stalls_is_refused_with_408_and_gives_its_place_back(explorer, monkeypatch):
    import asyncio

    from vaekit.explore import server

    monkeypatch.setattr(server, "BODY_SECONDS", 0.2)
    app, sent = create_app(explorer), []

    async def stalled():  # the headers came, then the body stops after its first byte
        if not sent:
            sent.append(None)
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/decode", "raw_path": b"/api/decode", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}

    async def serve_both():
        await asyncio.wait_for(asyncio.gather(*(app(scope, stalled, send) for _ in range(server.MAX_BODIES))), 10)

    asyncio.run(serve_both())
    statuses = [m["status"] for m in sent[1:] if m and m["type"] == "http.response.start"]
    bodies = [json.loads(m["body"]) for m in sent[1:] if m and m["type"] == "http.response.body" and m["body"]]
    assert statuses == [408] * server.MAX_BODIES
    assert bodies[0] == {"error": "the request body did not arrive within 0.2 s"}
    assert TestClient(app).post("/api/decode", json={"run": "run", "z": [[0.0] * 4]}).status_code == 200


def bad_requests():
    """(what, method, path, keyword arguments, status, a phrase of the error)."""
    png = png_upload(np.zeros((28, 28), np.uint8))
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 M pixels in a small file: past the pixel bound
    huge = buffer.getvalue()
    decode = {"run": "run", "z": [[0.0] * 4]}
    as_json = {"content-type": "application/json"}
    return [
        ("non-image upload", "post", "/api/encode?run=run", {"files": {"file": ("a.txt", b"hello", "text/plain")}},
         415, "not a PNG or JPEG"),
        ("oversized upload", "post", "/api/encode?run=run",
         {"files": {"file": ("a.png", png + b"\0" * MAX_UPLOAD_BYTES, "image/png")}}, 413, "larger than"),
        ("oversized raw body", "post", "/api/encode?run=run",
         {"content": png + b"\0" * MAX_UPLOAD_BYTES, "headers": {"content-type": "image/png"}}, 413, "larger than"),
        ("truncated PNG", "post", "/api/encode?run=run", {"files": {"file": ("a.png", png[:40], "image/png")}},
         400, "the upload: unreadable image (not an image PIL can read, or a damaged one)"),
        ("a JPEG with a bad header", "post", "/api/encode?run=run",
         {"content": b"\xff\xd8\xff\xe0" + bytes(100), "headers": {"content-type": "image/jpeg"}}, 400,
         "the upload: unreadable image (not an image PIL can read, or a damaged one)"),
        ("too many pixels", "post", "/api/encode?run=run", {"files": {"file": ("a.png", huge, "image/png")}},
         400, "the most vaekit decodes from one image"),
        ("no file field", "post", "/api/encode?run=run", {"files": {"picture": ("a.png", png, "image/png")}},
         400, "no file field"),
        ("form without multipart", "post", "/api/encode?run=run", {"data": {"file": "x"}}, 415, "multipart"),
        ("wrong-length z", "post", "/api/decode", {"json": {"run": "run", "z": [[0.0] * 5]}}, 400,
         "list of 4 numbers"),
        ("NaN in z", "post", "/api/decode", {"content": b'{"run": "run", "z": [[0, NaN, 0, 0]]}', "headers": as_json},
         400, "holds nan"),
        ("Infinity in z", "post", "/api/decode", {"content": b'{"run": "run", "z": [[0, 0, -Infinity, 0]]}',
                                       "headers": as_json}, 400,
         "holds -inf"),
        ("null in z", "post", "/api/decode", {"json": {"run": "run", "z": [[0, None, 0, 0]]}}, 400, "not a number"),
        ("unknown run", "post", "/api/decode", {"json": {**decode, "run": "nope"}}, 404, "no run 'nope'"),
        ("too many rows", "post", "/api/decode", {"json": {"run": "run", "z": [[0.0] * 4] * (MAX_DECODE_ROWS + 1)}},
         400, f"at most {MAX_DECODE_ROWS}"),
        ("no rows", "post", "/api/decode", {"json": {"run": "run", "z": []}}, 400, "non-empty list"),
        ("an int past a float's range in z", "post", "/api/decode",
         {"content": b'{"run": "run", "z": [[' + b"9" * 400 + b', 0, 0, 0]]}', "headers": as_json}, 400,
         "z[0] holds 9999999999999999999999999999999999999999...(400 characters); every value must be finite"),
        ("an int past a float's range in map_points", "post", "/api/decode",
         {"content": b'{"run": "run", "map_points": [[0, -' + b"9" * 400 + b']]}', "headers": as_json}, 400,
         "map_points[0] holds -999"),
        ("a 400-digit scale", "post", "/api/decode",
         {"content": b'{"run": "run", "z": [[0, 0, 0, 0]], "scale": ' + b"9" * 400 + b"}", "headers": as_json},
         400, "scale must be an integer from 1 to 16, got 9999999999999999999999999999999999999999...(400 characters)"),
        ("huge z", "post", "/api/decode", {"json": {"run": "run", "z": [[1e300, 0, 0, 0]]}}, 400, "within"),
        ("unknown field", "post", "/api/decode", {"json": {**decode, "path": "/etc/passwd"}}, 400, "unknown field"),
        ("not JSON", "post", "/api/decode", {"content": b"{", "headers": as_json}, 400, "not JSON"),
        ("bad format", "post", "/api/decode", {"json": {**decode, "format": "gif"}}, 400, "format must be"),
        ("bad scale", "post", "/api/decode", {"json": {**decode, "scale": 1000}}, 400, "scale must be"),
        ("unknown run in a query", "get", "/api/map?run=../../etc", {}, 404, "no run"),
        ("index off the map", "get", "/api/image?run=run&index=30", {}, 404, "not on the map"),
        ("negative index", "get", "/api/image?run=run&index=-1", {}, 400, "index must be"),
        ("text index", "get", "/api/image?run=run&index=abc", {}, 400, "index must be an integer"),
        ("too many samples", "get", "/api/samples?run=run&count=100000", {}, 400, "count must be"),
        ("unfitted sampler", "get", "/api/samples?run=run&sampler=gmm", {}, 404, "fit-sampler"),
        ("unknown sampler", "get", "/api/samples?run=run&sampler=x", {}, 400, "unknown sampler"),
        ("too many steps", "post", "/api/interpolate", {"json": {"run": "run", "a": {"index": 0}, "b": {"index": 1},
                                                                 "steps": 10_000}}, 400, "steps must be"),
        ("unknown page", "get", "/etc/passwd", {}, 404, "no such page"),
        ("missing asset", "get", "/static/nope.js", {}, 404, "no such page"),
        ("a path out of static", "get", "/static/%2e%2e/session.py", {}, 404, "no such page"),
        ("GET on a POST endpoint", "get", "/api/decode", {}, 405, "Method Not Allowed"),
        ("unknown query parameter", "get", "/api/samples?run=run&count=2&path=/etc/passwd", {}, 400,
         "unknown query parameter 'path'; /api/samples takes run, count, seed, sampler, scale"),
        ("a repeated query parameter", "get", "/api/samples?run=run&count=1&count=64", {}, 400,
         "the query gives 'count' twice"),
        ("a query on a body endpoint", "post", "/api/decode?run=run", {"json": decode}, 400,
         "/api/decode takes no query parameters"),
        ("JSON as text/plain", "post", "/api/decode",
         {"content": json.dumps(decode).encode(), "headers": {"content-type": "text/plain"}}, 415,
         "send the body as application/json, not 'text/plain'"),
        ("JSON without a type", "post", "/api/interpolate", {"content": b'{"run": "run"}'}, 415, "no content type"),
        ("a repeated run", "get", "/api/image?run=run&index=0&run=run", {}, 400, "the query gives 'run' twice"),
    ]


@pytest.mark.parametrize("what, method, path, kwargs, status, phrase", bad_requests(), ids=lambda v: str(v)[:30])
def test_a_bad_request_is_a_4xx_with_one_json_line_and_the_server_keeps_serving(client, what, method, path, kwargs,
                                                                                 status, phrase):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and phrase in body["error"]
    assert client.post("/api/decode", json={"run": "run", "z": [[0.0] * 4]}).status_code == 200


def test_an_oversized_upload_is_refused_by_its_content_length_before_it_is_read(client):
    def endless():  # the body would never end: a server that read it first would hang
        yield b"\x89PNG\r\n\x1a\n"
        while True:
            yield b"\0" * 65536

    response = client.post("/api/encode?run=run", content=endless(),
                           headers={"content-type": "image/png", "content-length": str(MAX_UPLOAD_BYTES + 1)})
    assert response.status_code == 413 and "larger than" in response.json()["error"]


def test_a_hierarchical_run_decodes_its_whole_latent(tiny, tmp_path):
    """An hvae's latent is its layers side by side, top first; decoding a full latent gives every layer's z."""
    config = RunConfig(data=load_run(tiny).config.data,
                       model=ModelConfig(family="hvae", hidden_dims=(16,), latent_dim=5, latent_layers=(2, 3)))
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    explored = ExploredRun("deep", Run(tmp_path, config, model), map_points=30)
    described = explored.describe()
    assert described["layers"] == [2, 3] and described["latent_dims"] == 5 and described["layer_names"] == ["z1", "z2"]
    z = torch.randn(3, 5, generator=make_generator(1))
    images = TestClient(create_app(Explorer([explored]))).post(
        "/api/decode", json={"run": "deep", "z": z.tolist()}).json()["images"]
    with torch.no_grad():
        expected = as_uint8(model.pictures(z))
    assert all((pixels(u) == e).all() for u, e in zip(images, expected))
    assert not (expected[0] == expected[1]).all()


def test_the_cli_serves_on_a_free_port_and_prints_its_url(tiny):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "explore", str(tiny), "--port", "0", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("vaekit explore: serving on http://127.0.0.1:") and line.endswith("/\n")
        url = line.split()[-1]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as response:
            assert json.load(response)["runs"][0]["latent_dims"] == 4
        request = urllib.request.Request(url + "api/decode", data=json.dumps({"run": "run", "z": [[0] * 3]}).encode(),
                                         headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and "4 numbers" in json.load(refused.value)["error"]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def test_another_host_is_said_in_a_warning(tiny, monkeypatch, capsys):
    from vaekit.cli import explore as explore_cli

    served = []
    monkeypatch.setattr(explore_cli, "serve", lambda app, listener: served.append(listener.getsockname()))
    assert main(["explore", str(tiny), "--port", "0", "--host", "0.0.0.0", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert out == f"vaekit explore: serving on http://0.0.0.0:{served[0][1]}/\n"
    assert "vaekit: warning: serving on 0.0.0.0, not this machine only" in err


def test_a_missing_extra_is_one_line_with_the_pip_command(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["explore", str(tiny), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "pip install 'vaekit[explore]'" in err and "uvicorn is missing" in err


def test_a_port_in_use_is_one_line(tiny, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["explore", str(tiny), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err) and f"cannot listen on 127.0.0.1 port {port}" in err


def test_run_names_are_made_unique(tiny):
    from vaekit.explore.session import unique_names

    assert unique_names([tiny, tiny, "pretrained:mnist"]) == ["run", "run-2", "pretrained:mnist"]


def test_a_server_on_this_machine_answers_only_its_own_host_names(explorer):
    app = create_app(explorer, allowed_hosts=("127.0.0.1", "localhost", "::1"))
    local = TestClient(app, base_url="http://127.0.0.1:8765")
    assert local.get("/api/runs").status_code == 200
    assert local.get("/api/runs", headers={"host": "localhost:8765"}).status_code == 200
    assert local.get("/api/runs", headers={"host": "[::1]:8765"}).status_code == 200
    rebound = local.get("/api/runs", headers={"host": "attacker.example:8765"})
    assert rebound.status_code == 421 and "not to the host 'attacker.example:8765'" in rebound.json()["error"]
    assert local.get("/api/runs").status_code == 200


def test_every_loopback_address_gets_the_host_check_and_no_warning():
    from vaekit.cli.explore import allowed_hosts, is_loopback

    assert allowed_hosts("127.0.0.1") == ("127.0.0.1", "localhost", "::1")
    assert allowed_hosts("127.0.0.2") == ("127.0.0.1", "localhost", "::1", "127.0.0.2")  # was None: no check at all
    assert allowed_hosts("0:0:0:0:0:0:0:1")[-1] == "0:0:0:0:0:0:0:1"
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("192.168.1.5") is None
    assert is_loopback("localhost") and is_loopback("[::1]") and not is_loopback("example.org")


def test_a_tsne_map_maps_back_by_least_squares_and_places_an_upload_at_its_nearest_image(tiny, explorer):
    pytest.importorskip("sklearn")
    explored = ExploredRun("tsne", load_run(tiny), map_method="tsne")
    document = explored.map_document()
    assert document["method"] == "tsne" and "least-squares" in document["note"] and len(document["points"]) == 30
    assert np.allclose(document["points"], explored.map.points, rtol=0, atol=1e-5 * np.abs(explored.map.points).max())
    points, mu = explored.map.points, explored.mu.double().numpy()
    mean, components = np.array(document["inverse"]["mean"]), np.array(document["inverse"]["components"])
    residual = mu - (mean + points @ components)
    centred = points - points.mean(0)
    assert np.abs(centred.T @ residual).max() < 1e-6 * np.abs(centred).max() * len(mu)  # the normal equations
    assert np.abs(residual.sum(0)).max() < 1e-6  # and the intercept's
    upload = png_upload(load_run(tiny).held_out().images[4, 0].numpy())
    assert explored.encode(upload)["point"] == explored.map.points[4].tolist()


def test_requests_with_bodies_past_the_bound_are_refused_with_429(explorer, monkeypatch):
    """MAX_BODIES requests holding their bodies at once; one more is refused, and once they end all is served."""
    import threading

    from vaekit.explore import server

    monkeypatch.setattr(server, "MAX_BODIES", 2)
    run = explorer.get("run")
    release, entered = threading.Event(), threading.Semaphore(0)
    original = run.decode_images

    def slow(*args):
        entered.release()
        release.wait(30)
        return original(*args)

    monkeypatch.setattr(run, "decode_images", slow)
    with TestClient(create_app(explorer)) as client:
        answers = []
        workers = [threading.Thread(target=lambda: answers.append(client.post(
            "/api/decode", json={"run": "run", "z": [[0.0] * 4]}).status_code)) for _ in range(2)]
        for worker in workers:
            worker.start()
        assert entered.acquire(timeout=30) and entered.acquire(timeout=30)  # both are inside the model call
        refused = client.post("/api/decode", json={"run": "run", "z": [[0.0] * 4]})
        assert refused.status_code == 429 and "try again" in refused.json()["error"]
        assert client.get("/api/runs").status_code == 200  # requests without a body are served meanwhile
        release.set()
        for worker in workers:
            worker.join(30)
        assert answers == [200, 200]
        monkeypatch.setattr(run, "decode_images", original)
        assert client.post("/api/decode", json={"run": "run", "z": [[0.0] * 4]}).status_code == 200


def test_a_colour_run_serves_rgb_images_and_takes_a_gray_upload(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "colour.npz", images=images, labels=np.arange(40) % 3)
    config = RunConfig(data=DataConfig(name=str(tmp_path / "colour.npz"), binarize="none"),
                       model=ModelConfig(input_shape=(3, 8, 8), hidden_dims=(16,), latent_dim=3, likelihood="gaussian"))
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    run = Run(tmp_path, config, model)
    client = TestClient(create_app(Explorer([ExploredRun("colour", run)])))
    described = client.get("/api/runs").json()["runs"][0]
    assert described["image_shape"] == [3, 8, 8] and described["map_points"] == 4  # validation 0.1 of 40
    index = client.get("/api/map", params={"run": "colour"}).json()["indices"][0]
    shown = client.get("/api/image", params={"run": "colour", "index": index}).json()
    assert pixels(shown["image"]).shape == (8, 8, 3) and pixels(shown["reconstruction"]).shape == (8, 8, 3)
    held_out = run.held_out().images[index].permute(1, 2, 0).numpy()  # test indices are the held-out set's
    assert (pixels(shown["image"]) == held_out).all() and any((held_out == image).all() for image in images)
    gray = np.full((16, 16), 200, np.uint8)
    body = client.post("/api/encode", params={"run": "colour"},
                       files={"file": ("gray.png", png_upload(gray), "image/png")}).json()
    assert (pixels(body["input"]) == 200).all() and pixels(body["input"]).shape == (8, 8, 3)  # channels repeated
    assert len(body["mu"]) == 3 and body["score"] is not None


@pytest.mark.parametrize("model_config", [
    ModelConfig(hidden_dims=(16,), latent_dim=3, prior="vamp", prior_components=5),
    ModelConfig(hidden_dims=(16,), latent_dim=3, pixel_groups=4)], ids=["vamp-prior", "pixel-groups"])
def test_runs_without_a_closed_form_kl_or_mean_image_are_served(tiny, tmp_path, model_config):
    """A VampPrior has no closed-form KL: the sliders are ordered by the variance of the means. A pixel-group
    decoder has no mean image: it draws them with one generator seeded 0 per request, so the same request decodes
    to the same images."""
    config = RunConfig(data=load_run(tiny).config.data, model=model_config)
    torch.manual_seed(0)
    explored = ExploredRun("other", Run(tmp_path, config, build_model(config.model).eval()))
    client = TestClient(create_app(Explorer([explored])))
    described = client.get("/api/runs").json()["runs"][0]
    if model_config.prior == "vamp":
        variance = explored.mu.double().var(0)
        assert described["kl"] is None and described["dims_by_kl"] == torch.argsort(variance, descending=True).tolist()
    z = {"run": "other", "z": [[0.3, -0.2, 1.0], [-1.0, 0.5, 0.0]]}
    first, again = (client.post("/api/decode", json=z).json()["images"] for _ in range(2))
    assert first == again and len(first) == 2
    with torch.no_grad():
        expected = as_uint8(explored.model.pictures(torch.tensor(z["z"])))
    assert all((pixels(u) == e).all() for u, e in zip(first, expected))
    assert client.get("/api/samples", params={"run": "other", "count": 2}).status_code == 200


def test_an_oversized_body_without_a_length_is_refused_by_counting_it(client, monkeypatch):
    from vaekit.explore import server

    counted = []
    original = server.read_body

    async def spy(request, limit):
        counted.append(request.headers.get("content-length"))
        return await original(request, limit)

    monkeypatch.setattr(server, "read_body", spy)

    def chunks():  # chunked transfer: no Content-Length to refuse it by
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 1):
            yield b"\0" * 65536

    response = client.post("/api/encode?run=run", content=chunks(), headers={"content-type": "image/png"})
    assert counted == [None] and response.status_code == 413 and "larger than" in response.json()["error"]


def test_a_family_that_cannot_decode_a_latent_is_refused_in_one_line(tiny, tmp_path, monkeypatch, capsys):
    from vaekit.models.base import LatentVariableModel
    from vaekit.models.vae import VAE

    monkeypatch.setattr(VAE, "decode", LatentVariableModel.decode)  # a family without decode
    assert main(["explore", str(tiny), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert is_one_error_line(err) and "run cannot be explored: the vae family cannot traverse its latents: it does " \
        "not implement decode" in err


def test_unreadable_training_images_make_the_map_s_test_images_the_neighbours(tiny, monkeypatch):
    """One read of the run's data gives the map and the neighbours; where the training images cannot be read (a
    dataset too big to hold, say), the map still comes from the held-out images and the note says why."""
    from vaekit.errors import DataError

    def refuse(*args, **kwargs):
        raise DataError("the training split is 3 GB")

    monkeypatch.setattr("vaekit.data.load_train_test", refuse)
    explored = ExploredRun("run", load_run(tiny))
    assert explored.neighbours.split == "test" and torch.equal(explored.neighbours.images, explored.images)
    assert "training images cannot be read (the training split is 3 GB)" in explored.neighbours_note
    assert len(explored.map.points) == 30
