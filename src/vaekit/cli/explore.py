"""`vaekit explore`: serve trained runs' latent spaces to a browser, with the JSON API the page calls."""

from __future__ import annotations

import socket
import sys

from ..errors import ConfigError
from .args import add_data_dir_argument, add_device_argument, non_empty_path, stage_log

EXPLORE_HELP = """\
Explore trained runs in the browser: a local web server with one page (no network, every asset served
by vaekit) that shows the test images' posterior means on a 2-D map (PCA by default; --map tsne or
umap where installed), decodes any point you click, moves each latent dimension with a slider
(ordered by KL), interpolates between two images, encodes and scores an image you upload, and draws
prior samples. The page calls a JSON API that scripts can call too (docs/explore.md).
It binds 127.0.0.1 (this machine only) unless --host says otherwise, and prints its URL once it
listens; stop it with Ctrl-C. Needs the explore extra: pip install 'vaekit[explore]'.

examples:
  vaekit explore runs/seed
  vaekit explore runs/seed runs/fashion --port 0
  vaekit explore runs/seed --map tsne --map-points 2000
"""

DEFAULT_PORT = 8765
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PORT = 65535
MAX_CONNECTIONS = 64  # uvicorn answers 503 past it: open connections and their buffers stay bounded


def port_number(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535, in ASCII digits."""
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > MAX_PORT:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a port from 0 to {MAX_PORT} (0: any free one), got {text!r}")
    return int(text)


def register(subparsers) -> None:
    from ..choices import PROJECTIONS
    from .args import positive_int

    p = subparsers.add_parser("explore", help="explore runs' latent spaces in the browser", description=EXPLORE_HELP)
    p.add_argument("run", type=non_empty_path, nargs="+", metavar="RUN", help="run directories (or named runs)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT, metavar="PORT",
                   help=f"the port to listen on (default {DEFAULT_PORT}; 0: any free one, printed)")
    p.add_argument("--host", default="127.0.0.1", metavar="HOST",
                   help="the address to listen on (default 127.0.0.1, this machine only; any other is said in a "
                        "warning: the explorer has no authentication)")
    p.add_argument("--map", choices=PROJECTIONS, default="pca",
                   help="the 2-D map of the test images' posterior means (default pca; tsne and umap need "
                        "scikit-learn or umap-learn)")
    p.add_argument("--map-points", type=positive_int, default=10_000, metavar="N",
                   help="test images on the map, a seeded choice when there are more (default 10,000)")
    add_data_dir_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run_explore)


def check_extra() -> None:
    """ConfigError with the pip command when the explore extra (starlette, uvicorn, python-multipart) is missing."""
    try:
        import python_multipart  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"vaekit explore needs the explore extra, which is not installed ({e.name} is missing): "
                          "pip install 'vaekit[explore]'") from None


def run_explore(args) -> int:
    from ..explore.session import MAX_MAP_POINTS

    check_extra()
    if args.map_points > MAX_MAP_POINTS:
        raise ConfigError(f"--map-points must be at most {MAX_MAP_POINTS:,}, got {args.map_points:,}")
    if args.map != "pca":
        from ..representation import optional_module

        optional_module(args.map)  # before the runs load: the pip command if its library is missing
    from ..devices import resolve_device
    from ..explore.server import create_app
    from ..explore.session import Explorer

    listener = listen(args.host, args.port)  # first: a port that cannot be had fails before the runs load
    try:
        log = stage_log()
        explorer = Explorer.open(args.run, device=resolve_device(args.device), map_method=args.map,
                                 map_points=args.map_points, data_dir=args.data_dir,
                                 log=lambda name: log(f"loading {name} and mapping its test images"),
                                 progress=sys.stderr.isatty())
        app = create_app(explorer, allowed_hosts=allowed_hosts(args.host))
    except BaseException:
        listener.close()
        raise
    host, port = listener.getsockname()[:2]
    if not is_loopback(args.host):
        print(f"vaekit: warning: serving on {args.host}, not this machine only: anyone who can reach it can use "
              "the explorer, which has no authentication", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"vaekit explore: serving on http://{shown}:{port}/", flush=True)
    serve(app, listener)
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only: localhost or a loopback address (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> tuple[str, ...] | None:
    """The Host headers the server answers: bound to this machine only, its loopback names and the address itself
    (so that a web page elsewhere cannot reach it through a DNS name rebound to a loopback address, 127.0.0.2 as
    well as 127.0.0.1); bound to another address, any."""
    if not is_loopback(host):
        return None
    return LOCAL_HOSTS + (() if host.strip("[]") in LOCAL_HOSTS else (host.strip("[]"),))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ConfigError if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host!r}: not an address of this machine ({e})") from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as e:
        listener.close()
        raise ConfigError(f"cannot listen on {host} port {port} ({e.strerror or e}); choose another --port, or 0 "
                          "for any free one") from None
    return listener


def serve(app, listener: socket.socket) -> None:
    """Serve `app` on the listening socket until Ctrl-C or SIGTERM, which end it with exit 0 (uvicorn, one process,
    its access log off, at most MAX_CONNECTIONS connections)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            limit_concurrency=MAX_CONNECTIONS)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
