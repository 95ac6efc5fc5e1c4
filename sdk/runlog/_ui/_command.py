"""The ``ui`` sub-command of ``runlog``: bind, print the URL, open a browser, serve."""

from __future__ import annotations

import argparse
import contextlib
import socket
import webbrowser

from rich.text import Text

from .._cli._args import Command, count
from .._cli._db import CLIError
from .._cli._output import Output
from .._store import Reader

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=count, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0: any free one)"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that the URL printed is already being served."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as exc:
        hint = " (choose another with --port)" if port else ""
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    try:
        import uvicorn

        from ._app import create_app
    except ImportError as exc:
        raise CLIError(
            f"runlog ui needs its extra ({exc}); install it with: pip install 'runlog[ui]'"
        ) from None
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/"
    wildcard = args.host in ("0.0.0.0", "::", "")
    hosts = None if wildcard else [args.host, shown, "127.0.0.1", "localhost", "[::1]"]
    app = create_app(reader, allowed_hosts=hosts)
    # An open live tail must not hold Ctrl-C up until its stream ends.
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    if out.json_mode:  # for a script that started it on --port 0
        out.json({"url": url}, lines=True)
    else:
        out.line(Text(f"runlog ui: {url}"))
    out.note("read-only; Ctrl-C stops it")
    if not args.no_browser:
        webbrowser.open(url)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops, then re-raises SIGINT
        server.run(sockets=[sock])
    return 0


COMMAND = Command(
    name="ui",
    help="a local web page: runs, a waterfall per run, LLM calls, a live tail",
    description=(
        "Serve a read-only web page over the database on this machine and print its URL: "
        "the process trees, a waterfall of each run and its descendants beside their "
        "events and payloads, the LLM calls with latency percentiles and histograms, and "
        "a live tail of the events with filters. Opens a browser unless --no-browser."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND", "DEFAULT_PORT"]
