"""The HTTP side of the stand-in: a stdlib threaded server on real sockets.

One thread accepts connections and one daemon thread serves each connection (HTTP/1.1
keep-alive, so a client reuses it). Stopping is prompt and complete: a wake-up socket
ends the accept loop, then every open connection is shut down (which ends idle
keep-alive reads, hangs, delays and half-sent streams), and every thread is joined.
A client that goes away mid-reply is normal here and never prints a traceback.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.server
import json
import logging
import math
import selectors
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from . import _anthropic
from ._behaviour import Behaviour, changes_from_headers
from ._replies import ENDPOINTS as OPENAI_ENDPOINTS
from ._replies import Event, Exchange, Reply, error_body

ENDPOINTS = {**OPENAI_ENDPOINTS, **_anthropic.ENDPOINTS}
"""Every path served: OpenAI's under ``/v1``, and Anthropic's Messages API."""

logger = logging.getLogger("runlog_openai.standin")

API_KEY = "sk-standin"


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received, as the client sent it.

    ``headers`` has lower-case names; ``body`` is the decoded JSON (``None`` if empty or
    not JSON); ``behaviour`` is what the reply followed (``None`` when the request was
    refused first: unknown path, no API key, bad JSON or a bad ``x-standin-*`` header).
    """

    number: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    behaviour: Behaviour | None

    @property
    def request_id(self) -> str:
        """The ``x-request-id`` the reply carried (``_request_id`` on parsed objects)."""
        return request_id(self.number)


def request_id(number: int) -> str:
    """The ``x-request-id`` of the ``number``-th request, shaped like OpenAI's."""
    return f"req_{number:032x}"


class StandInServer:
    """An OpenAI-compatible server on 127.0.0.1 for tests and offline demos.

    Use it as a context manager (or ``start()`` / ``close()``); point a real client at
    ``base_url`` with ``api_key``. What it replies is a ``Behaviour``: the server
    defaults (constructor, ``configure``, ``behaviour = ...``), changed for the next
    requests by ``enqueue`` (one entry per request, first in first out), changed for one
    request by its ``x-standin-*`` headers (see ``behaviour_headers``), in that order.
    Every request is recorded in ``requests``.
    """

    api_key = API_KEY

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **changes: Any,
    ) -> None:
        """Prepare a server (not yet listening) whose defaults are ``behaviour`` + changes."""
        self._initial = (behaviour or Behaviour()).changed(**changes)
        self._defaults = self._initial
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._serial = 0
        self._changed = threading.Condition()
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> StandInServer:
        """Bind, listen and serve in background threads; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("the stand-in server is already running")
        self._httpd = _HTTPServer(self._address, self)
        self._httpd.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections, join every thread; safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.stop()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("the stand-in server is not running; call start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL to give the OpenAI client: ``http://127.0.0.1:<port>/v1``."""
        return f"http://{self._address[0]}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The URL to give the Anthropic client: ``http://127.0.0.1:<port>``."""
        return f"http://{self._address[0]}:{self.port}"

    # --- behaviour -------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        """The server defaults: what every request gets unless changed."""
        with self._changed:
            return self._defaults

    @behaviour.setter
    def behaviour(self, behaviour: Behaviour) -> None:
        with self._changed:
            self._defaults = behaviour

    def configure(self, **changes: Any) -> None:
        """Change the server defaults, e.g. ``configure(reply="hi", chunks=200)``."""
        with self._changed:
            self._defaults = self._defaults.changed(**changes)

    def enqueue(self, **changes: Any) -> None:
        """Change the reply to one upcoming request; queued changes apply in order."""
        Behaviour().changed(**changes)  # unknown names and bad values raise here
        with self._changed:
            self._queue.append(changes)

    def reset(self) -> None:
        """Back to the constructor's defaults, with no queue and no recorded requests."""
        with self._changed:
            self._defaults = self._initial
            self._queue.clear()
            self._requests.clear()

    # --- recording -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        with self._changed:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """The requests once at least ``count`` have arrived; ``TimeoutError`` if they don't.

        For requests whose reply the client never sees (hangs, timeouts) and for
        clients in other threads or processes.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"{len(self._requests)} of {count} requests arrived")
            return list(self._requests)

    # --- used by the handler threads -------------------------------------------------

    def _next_number(self) -> int:
        """A fresh serial number for an arriving request."""
        with self._changed:
            self._serial += 1
            return self._serial

    def _behaviour_for(self, headers: Mapping[str, str]) -> Behaviour:
        """Defaults, then the next queued changes, then the request's header changes."""
        from_headers = changes_from_headers(headers)  # may raise before the queue moves
        with self._changed:
            behaviour = self._defaults
            if self._queue:
                behaviour = behaviour.changed(**self._queue.popleft())
        return behaviour.changed(**from_headers)

    def _record(self, request: RecordedRequest) -> None:
        """Keep ``request`` and wake ``wait_for_requests``."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()


class _HTTPServer(http.server.HTTPServer):
    """``HTTPServer`` with its own accept loop and exact tracking of connection threads."""

    def __init__(self, address: tuple[str, int], standin: StandInServer) -> None:
        super().__init__(address, _Handler)
        self.standin = standin
        self.stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.name = f"standin-accept-{self.server_address[1]}"

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the host."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def start(self) -> None:
        """Start accepting connections."""
        self._acceptor.start()

    def stop(self) -> None:
        """End the accept loop, shut every connection down, join all threads, close."""
        self.stopping.set()
        self._wake_writer.send(b"\0")
        self._acceptor.join()
        with self._lock:
            open_connections = dict(self._connections)
        for connection in open_connections:
            _shutdown(connection)
        for thread in open_connections.values():
            thread.join()
        self.server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def _accept_loop(self) -> None:
        """Accept connections until ``stop`` writes to the wake-up socket."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self.stopping.is_set():
                ready = [key.fileobj for key, _ in selector.select()]
                if self.socket in ready and not self.stopping.is_set():
                    self._accept()

    def _accept(self) -> None:
        """Accept one connection and serve it in its own thread."""
        try:
            connection, address = self.get_request()
        except OSError:
            return
        thread = threading.Thread(target=self._serve, args=(connection, address), daemon=True)
        thread.name = f"standin-connection-{address[1]}"
        with self._lock:
            self._connections[connection] = thread
        thread.start()

    def _serve(self, connection: socket.socket, address: Any) -> None:
        """Serve one connection until it closes, then forget it."""
        try:
            self.finish_request(connection, address)
        except Exception:
            self.handle_error(connection, address)
        finally:
            self.shutdown_request(connection)
            with self._lock:
                self._connections.pop(connection, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client went away; report anything else."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        logger.exception("stand-in server error while serving %s", client_address)


def _shutdown(connection: socket.socket) -> None:
    """Shut a connection down both ways, waking any thread blocked on it."""
    with contextlib.suppress(OSError):  # already closed by the client or its own thread
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Parses one request, records it, and sends the reply its behaviour asks for."""

    protocol_version = "HTTP/1.1"
    server_version = "standin/1.0"
    disable_nagle_algorithm = True
    """Send each write at once: headers and body go out in separate writes, and Nagle's
    algorithm would hold the body until the client's delayed ACK, some 40 ms per reply."""
    server: _HTTPServer

    def do_POST(self) -> None:
        """Every OpenAI endpoint served here is a POST."""
        self._handle()

    def do_GET(self) -> None:
        """Answer GETs with OpenAI's 404 JSON rather than the stdlib's HTML."""
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's line per request on stderr."""

    def _handle(self) -> None:
        """Record the request, refuse it or answer it; a vanished client ends it quietly."""
        try:
            self._answer()
        except OSError:
            self.close_connection = True

    def _answer(self) -> None:
        """Record the request, then refuse it or answer it."""
        number = self.server.standin._next_number()
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = urlsplit(self.path).path
        raw = self.rfile.read(int(headers.get("content-length") or 0))
        body = _decode(raw)
        outcome = self._admit(path, headers, body)
        behaviour = outcome if isinstance(outcome, Behaviour) else None
        recorded = RecordedRequest(number, self.command, path, headers, body, behaviour)
        self.server.standin._record(recorded)
        if isinstance(outcome, Behaviour):
            self._reply(number, path, body, outcome)
        else:
            status, message = outcome
            self._send_json(status, _error(path, status, message), self._headers(number, path=path))

    def _admit(
        self, path: str, headers: Mapping[str, str], body: Any
    ) -> Behaviour | tuple[int, str]:
        """The behaviour to answer with, or the status and message to refuse with."""
        if self.command != "POST" or path not in ENDPOINTS:
            return 404, f"Unknown request URL: {self.command} {path}."
        key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not (key or headers.get("x-api-key", "").strip()):
            return 401, "You didn't provide an API key."
        if not isinstance(body, dict):
            return 400, "We could not parse the JSON body of your request."
        try:
            return self.server.standin._behaviour_for(headers)
        except (TypeError, ValueError) as exc:
            return 400, str(exc)

    def _reply(self, number: int, path: str, body: dict[str, Any], behaviour: Behaviour) -> None:
        """Wait, then hang, fail or answer as ``behaviour`` says."""
        headers = self._headers(number, behaviour, path)
        if not self._pause(behaviour.delay):
            return
        if behaviour.hang:
            self._hang()
            return
        if behaviour.status != 200:
            self._send_json(behaviour.status, _error(path, behaviour.status), headers)
            return
        try:
            reply: Reply = ENDPOINTS[path](Exchange(number, body, behaviour, int(time.time())))
        except Exception as exc:  # a request the stand-in cannot answer, or a bug in it
            logger.exception("stand-in could not build a reply for %s", path)
            self._send_json(500, _error(path, 500, f"stand-in failed: {exc!r}"), headers)
            return
        if isinstance(reply, dict):
            self._send_json(200, reply, headers)
        else:
            self._send_stream(reply, behaviour, headers)

    def _headers(
        self, number: int, behaviour: Behaviour | None = None, path: str = ""
    ) -> list[tuple[str, str]]:
        """Headers the real API sends along: request id, version, processing time, limits."""
        if path in _anthropic.ENDPOINTS:
            return [("request-id", request_id(number)), *self._retry_headers(behaviour)]
        headers = [
            ("x-request-id", request_id(number)),
            ("openai-version", "2020-10-01"),
            ("openai-organization", "standin"),
            ("openai-processing-ms", str(round((behaviour.delay if behaviour else 0) * 1000))),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-limit-tokens", "10000000"),
            ("x-ratelimit-remaining-tokens", "9999990"),
        ]
        return headers + self._retry_headers(behaviour)

    def _retry_headers(self, behaviour: Behaviour | None) -> list[tuple[str, str]]:
        if behaviour is None or behaviour.retry_after is None:
            return []
        return [
            ("retry-after-ms", str(round(behaviour.retry_after * 1000))),
            ("retry-after", str(math.ceil(behaviour.retry_after))),
        ]

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: list[tuple[str, str]]
    ) -> None:
        """A complete JSON response with a content length (the connection stays open)."""
        data = json.dumps(body).encode()
        self._start(status, [*headers, ("content-type", "application/json")])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(
        self, events: list[Event], behaviour: Behaviour, headers: list[tuple[str, str]]
    ) -> None:
        """Server-sent events in chunked encoding, paced and cut as ``behaviour`` says."""
        sse_headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ]
        self._start(200, [*headers, *sse_headers])
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        sent = 0
        for event in events:
            if event.delta:
                if sent == behaviour.disconnect_after:
                    self.close_connection = True
                    _shutdown(self.connection)
                    return
                if sent == behaviour.hang_after:
                    self._hang()
                    return
                if not self._pause(behaviour.chunk_delay):
                    return
                sent += 1
            self._write_chunk(_encode(event))
        self._write_chunk(b"")

    def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The status line and ``headers``; the caller adds framing and ends the headers."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)

    def _write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body; an empty one ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _pause(self, seconds: float) -> bool:
        """Wait at least ``seconds``; ``False`` (connection marked to close) if stopping."""
        deadline = time.monotonic() + seconds
        while not self.server.stopping.wait(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                return True
        self.close_connection = True
        return False

    def _hang(self) -> None:
        """Say nothing until the client disconnects or the server stops."""
        self.close_connection = True
        while self.connection.recv(65536):
            pass


def _error(path: str, status: int, message: str | None = None) -> dict[str, Any]:
    """The error JSON of the API ``path`` belongs to."""
    if path in _anthropic.ENDPOINTS:
        return _anthropic.error_body(status, message)
    return error_body(status, message)


def _decode(raw: bytes) -> Any:
    """The JSON value of a request body; ``None`` if it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _encode(event: Event) -> bytes:
    """One server-sent event: an optional ``event:`` line, a ``data:`` line, a blank line."""
    data = event.data if isinstance(event.data, str) else json.dumps(event.data)
    name = f"event: {event.name}\n" if event.name else ""
    return f"{name}data: {data}\n\n".encode()


__all__ = ["API_KEY", "RecordedRequest", "StandInServer", "request_id"]
