"""An OpenAI-compatible (and Anthropic-compatible) HTTP server for tests and offline demos.

It serves the real ``openai`` client (sync and async) over real sockets on 127.0.0.1,
streams with real server-sent events, and answers with known content and usage, so a
test can assert exact numbers. It needs only the standard library.

Endpoints (POST, under ``/v1``):

- ``/chat/completions``: plain, ``stream=True`` (with ``stream_options={"include_usage":
  True}`` a last chunk with empty ``choices`` carries usage), tool calls when the request
  offers function tools (until the conversation ends with a tool result), structured
  output for ``response_format`` (so ``.parse()`` and ``.stream()`` work);
- ``/responses``: plain and streamed (``response.created`` ... ``response.completed``),
  function calls and ``text_format`` likewise (``.parse()``, ``.stream()``);
- ``/embeddings``: one deterministic vector per input (float or base64), 8 dimensions
  unless the request gives ``dimensions``;
- ``/completions`` (legacy): plain and streamed;
- Anthropic's Messages API, for the ``anthropic`` client pointed at
  ``server.anthropic_base_url``: ``/v1/messages`` plain and streamed with the real
  event sequence (``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``,
  ``message_delta``, ``message_stop``), tool use, a thinking block when the request
  enables thinking, cache reads and writes in its usage, Anthropic's error JSON and
  ``request-id`` header; ``/v1/messages/count_tokens``.

Every reply carries ``x-request-id`` and the other headers the API sends, so
``.with_raw_response`` and ``.with_streaming_response`` work too. Tool arguments and
structured output are generated from the JSON schema: a string is its property's name,
an integer 1, a number 1.5, a boolean true, an enum its first value.

Quick start::

    from openai import OpenAI
    from runlog_openai.standin import StandInServer

    with StandInServer(reply="Hi there", input_tokens=5, output_tokens=2) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert completion.choices[0].message.content == "Hi there"
        assert completion.usage.prompt_tokens == 5
        assert server.requests[0].body["model"] == "gpt-4o-mini"

As a pytest fixture::

    @pytest.fixture
    def standin() -> Iterator[StandInServer]:
        with StandInServer() as server:
            yield server

(or one server per session, with ``server.reset()`` at the start of each test).

Changing the reply (see ``Behaviour`` for every field), from widest to narrowest:

- server defaults: ``StandInServer(**changes)``, ``server.configure(**changes)``;
- the next requests, one queued entry each: ``server.enqueue(status=500)`` (a retry test:
  enqueue one failure, and the retry gets the defaults);
- one request: ``extra_headers=behaviour_headers(delay=0.5, status=429)``, which sends
  ``x-standin-delay: 0.5`` and ``x-standin-status: 429`` (any HTTP client can send them).

Failures: ``status=400/429/500`` answer OpenAI's error JSON (``BadRequestError``,
``RateLimitError``, ``InternalServerError``; set ``max_retries=0`` or ``retry_after``);
``hang=True`` never answers (``APITimeoutError`` with a short client ``timeout``);
``hang_after=N`` / ``disconnect_after=N`` stall or cut a stream after N content deltas.

Requests are recorded: ``server.requests`` (method, path, lower-case headers, JSON body,
the behaviour used) and ``server.wait_for_requests(n)``.

From the command line (serves until SIGTERM or Ctrl-C; the first line of stdout is the
base URL; options are the ``Behaviour`` fields)::

    python -m runlog_openai.standin --port 0 --delay 0.2 --reply "Hi there"
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._standin._behaviour import (
    Behaviour,
    behaviour_headers,
    field_help,
    field_names,
    format_field,
    parse_field,
)
from ._standin._server import API_KEY, RecordedRequest, StandInServer


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; print the base URL as the first line of stdout."""
    args = vars(_parser().parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with StandInServer(host=host, port=port, **args) as server:
        print(server.base_url, flush=True)
        stop.wait()
    return 0


def _parser() -> argparse.ArgumentParser:
    """Options ``--host``, ``--port``, and one per ``Behaviour`` field."""
    parser = argparse.ArgumentParser(
        prog="python -m runlog_openai.standin",
        description="Serve an OpenAI-compatible stand-in API until killed.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    defaults = Behaviour()
    for name in field_names():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_field_type(name),
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=f"{field_help(name)} (default: {format_field(getattr(defaults, name))})",
        )
    return parser


def _field_type(name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that reads a field the way ``x-standin-*`` headers are read."""

    def convert(text: str) -> Any:
        try:
            return parse_field(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


__all__ = [
    "API_KEY",
    "Behaviour",
    "RecordedRequest",
    "StandInServer",
    "behaviour_headers",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
