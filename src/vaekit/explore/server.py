"""The explorer's web app: the page (static/, served from the package) and the JSON API (docs/explore.md), a
Starlette app over `session.Explorer`. Every error is a 4xx (5xx for a vaekit bug) with {"error": "one line"},
and the server keeps serving. No request names a file: runs are named, images are test indices or uploads.

Torch work runs in Starlette's thread pool (each run's lock serializes its model); request bodies are read
with a bound, counted while they stream, so no request holds more than MAX_UPLOAD_BYTES and some slack.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import VaekitError
from ..validation import parse_json
from .session import MAX_UPLOAD_BYTES, Explorer, Refused, short

STATIC = Path(__file__).parent / "static"
MAX_JSON_BODY = 4 << 20  # a decode request: 256 rows of a few thousand numbers as text
MULTIPART_SLACK = 64 << 10  # an upload's body: the file, its part headers and the other fields
IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_BODIES = 16  # requests with a body served at once (each holds at most its bounded body); more get 429
BODY_SECONDS = 60  # a body must arrive within this: one that stalls gives its place among MAX_BODIES back (408)


class TooLarge(Refused):
    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than {limit:,} bytes, the most this endpoint reads", 413)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is known to pass `limit` bytes: by its Content-Length
    before anything is read, else by counting while it streams; refused (408) when it has not all arrived within
    BODY_SECONDS, so that clients stalling mid-body cannot hold every place among MAX_BODIES."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise TooLarge(limit) if declared.isascii() and declared.isdigit() else Refused("a malformed Content-Length")
    chunks, size = [], 0
    try:
        with anyio.fail_after(BODY_SECONDS):  # asyncio.timeout is Python 3.11 on
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(f"the request body did not arrive within {BODY_SECONDS} s", 408) from None
    return b"".join(chunks)


async def json_body(request: Request) -> dict:
    """The request's JSON object, sent as application/json (NaN and Infinity are parsed, so that the checks name
    them). Another content type is refused (415): a page of another site can POST text/plain to 127.0.0.1 without
    the browser asking first, but application/json needs a CORS preflight, which this server never grants."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused(f"send the body as application/json, not {short(kind or 'no content type')}", 415)
    try:
        document = parse_json(await read_body(request, MAX_JSON_BODY), allow_nan=True)
    except ValueError as e:
        raise Refused(f"the body is not JSON ({e})") from None
    if not isinstance(document, dict):
        raise Refused(f"the body must be a JSON object, got {short(document)}")
    return document


def query_int(request: Request, name: str, default: int | None = None) -> int:
    """An integer query parameter, strictly (ASCII digits, an optional minus)."""
    text = request.query_params.get(name)
    if text is None:
        if default is None:
            raise Refused(f"the query needs {name}")
        return default
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise Refused(f"{name} must be an integer, got {short(text)}")
    return int(text)


def check_query(request: Request, *allowed: str) -> None:
    """Refuse (400) a query parameter the endpoint does not take, or one given twice: strict parsing, as the JSON
    bodies' unknown fields are refused, rather than a silently ignored or silently chosen value."""
    seen = set()
    for key, _ in request.query_params.multi_items():
        if key not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no query parameters"
            raise Refused(f"unknown query parameter {short(key)}; {request.url.path} {takes}")
        if key in seen:
            raise Refused(f"the query gives {short(key)} twice")
        seen.add(key)


def create_app(explorer: Explorer, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The explorer's Starlette app over `explorer`; `allowed_hosts`: the Host header names it answers (with any
    port), None for any."""

    def run_of(request: Request):
        return explorer.get(request.query_params.get("run"))

    in_flight = 0  # requests with a body being served: counted on the event loop's one thread

    def bounded(handler):
        """`handler`, refused with 429 while MAX_BODIES others hold their bodies: memory stays bounded."""

        async def serve(request: Request) -> Response:
            nonlocal in_flight
            if in_flight >= MAX_BODIES:
                raise Refused(f"the explorer is serving {MAX_BODIES} requests with bodies already; try again", 429)
            in_flight += 1
            try:
                return await handler(request)
            finally:
                in_flight -= 1

        return serve

    async def runs(request: Request) -> Response:
        check_query(request)
        return JSONResponse(await run_in_threadpool(explorer.describe))

    async def latent_map(request: Request) -> Response:
        check_query(request, "run")
        return JSONResponse(await run_in_threadpool(run_of(request).map_document))

    async def image(request: Request) -> Response:
        check_query(request, "run", "index", "scale")
        run = run_of(request)
        return JSONResponse(await run_in_threadpool(run.image, query_int(request, "index"),
                                                    query_int(request, "scale", 1)))

    async def decode(request: Request) -> Response:
        check_query(request)
        body = await json_body(request)
        unknown = set(body) - {"run", "z", "map_points", "format", "scale"}
        if unknown:
            raise Refused(f"unknown field {short(sorted(unknown)[0])}; decode takes run, z or map_points, format, "
                          "scale")
        run = explorer.get(body.get("run"))
        kind = body.get("format", "json")
        if kind not in ("json", "png"):
            raise Refused(f"format must be json or png, got {short(kind)}")
        arguments = (body.get("z"), body.get("map_points"), body.get("scale", 1))
        if kind == "png":
            return Response(await run_in_threadpool(run.decode_png, *arguments), media_type="image/png")
        return JSONResponse({"images": await run_in_threadpool(run.decode_images, *arguments)})

    async def encode(request: Request) -> Response:
        check_query(request, "run", "invert", "scale")
        run = explorer.get(request.query_params.get("run"))
        data = await upload(request)
        invert = request.query_params.get("invert", "off")
        return JSONResponse(await run_in_threadpool(run.encode, data, invert, query_int(request, "scale", 1)))

    async def samples(request: Request) -> Response:
        check_query(request, "run", "count", "seed", "sampler", "scale")
        run = run_of(request)
        images = await run_in_threadpool(run.samples, query_int(request, "count", 16), query_int(request, "seed", 0),
                                         request.query_params.get("sampler", "prior"), query_int(request, "scale", 1))
        return JSONResponse({"images": images})

    async def interpolate(request: Request) -> Response:
        check_query(request)
        body = await json_body(request)
        unknown = set(body) - {"run", "a", "b", "steps", "method", "scale"}
        if unknown:
            raise Refused(f"unknown field {short(sorted(unknown)[0])}; interpolate takes run, a, b, steps, method, "
                          "scale")
        run = explorer.get(body.get("run"))
        return JSONResponse(await run_in_threadpool(run.interpolate, body.get("a"), body.get("b"),
                                                    body.get("steps", 9), body.get("method", "linear"),
                                                    body.get("scale", 1)))

    async def index(request: Request) -> Response:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page)
        return HTMLResponse(PLACEHOLDER.format(runs=", ".join(html.escape(name) for name in explorer.runs)))

    routes = [
        Route("/", index), Route("/api/runs", runs), Route("/api/map", latent_map), Route("/api/image", image),
        Route("/api/decode", bounded(decode), methods=["POST"]),
        Route("/api/encode", bounded(encode), methods=["POST"]),
        Route("/api/samples", samples), Route("/api/interpolate", bounded(interpolate), methods=["POST"]),
        Mount("/static", app=assets(), name="static"),
    ]
    handlers = {Refused: refused, VaekitError: vaekit_error, HTTPException: http_error, Exception: internal_error}
    middleware = [] if allowed_hosts is None else [Middleware(HostCheck, hosts=tuple(allowed_hosts))]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)


class HostCheck:
    """Answers only requests whose Host header names one of `hosts`: a server bound to 127.0.0.1 must not serve a
    page that reached it by a DNS name rebound to 127.0.0.1 (DNS rebinding), which could then read its answers."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = header[1:].partition("]")[0] if header.startswith("[") else header.rpartition(":")[0] or header
            if name not in self.hosts:
                response = error(f"this explorer answers requests to {', '.join(self.hosts)} only, not to the host "
                                 f"{short(header)}", 421)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def assets():
    """The page's files under /static/ (a 404 for any, not an error, where the package has none)."""
    files = StaticFiles(directory=STATIC, check_dir=False)

    async def app(scope, receive, send) -> None:
        if not STATIC.is_dir():
            raise HTTPException(404)
        await files(scope, receive, send)

    return app


async def upload(request: Request) -> bytes:
    """The uploaded image's bytes: the multipart field `file`, or the whole body sent as image/png or
    image/jpeg; at most MAX_UPLOAD_BYTES (413 past it, without reading further)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind in IMAGE_TYPES or kind == "application/octet-stream":
        return await read_body(request, MAX_UPLOAD_BYTES)
    if kind != "multipart/form-data":
        raise Refused(f"upload the image as multipart/form-data (field file) or as image/png or image/jpeg, not "
                      f"{short(kind or 'no content type')}", 415)
    body = await read_body(request, MAX_UPLOAD_BYTES + MULTIPART_SLACK)
    sent = False

    async def replay():  # the bounded body, once, for Starlette's multipart parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except HTTPException as e:
        raise Refused(f"a malformed multipart body ({e.detail})") from None
    try:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise Refused("the multipart body has no file field holding the image")
        data = await file.read(MAX_UPLOAD_BYTES + 1)
    finally:
        await form.close()
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(MAX_UPLOAD_BYTES)
    return data


def error(message: str, status: int) -> JSONResponse:
    line = " ".join(str(message).split())  # one line, whatever the message held
    return JSONResponse({"error": line}, status_code=status)


async def refused(request: Request, e: Refused) -> Response:
    return error(str(e), e.status)


async def vaekit_error(request: Request, e: VaekitError) -> Response:
    return error(str(e), 400)


async def http_error(request: Request, e: HTTPException) -> Response:
    detail = e.detail if e.status_code != 404 else f"no such page: {request.url.path} (the API is under /api/)"
    return error(detail, e.status_code)


async def internal_error(request: Request, e: Exception) -> Response:
    return error(f"internal error: {type(e).__name__}: {e} (a vaekit bug)", 500)


PLACEHOLDER = """<!doctype html>
<html><head><meta charset="utf-8"><title>vaekit explore</title></head>
<body><h1>vaekit explore</h1><p>Runs: {runs}.</p>
<p>The page is not installed (src/vaekit/explore/static/index.html); the JSON API is at
<a href="/api/runs">/api/runs</a> (docs/explore.md).</p></body></html>
"""
