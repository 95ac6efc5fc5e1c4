"""The web application: read-only routes over one :class:`Reader`, HTML from Jinja.

Every value from the table reaches the page through a template with autoescaping on
(HTML, SVG and attributes alike), or as server-rendered HTML that the script inserts
as is; the script itself sets no HTML from data.  Every response carries a Content
Security Policy that allows only this server's own scripts, styles and images: an
injected ``<script>`` would not run, and the page cannot fetch anything from
another machine.  Only GET routes exist.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._cli._output import clock, compact, duration, is_failure
from .._cli._tail import POLL_S, Follower
from .._cli._tree import exit_words
from .._store import Event, Reader, StoreBusy, StoreFault
from . import _pages

HERE = Path(__file__).parent
STREAM_S = 25.0
"""How long one live-tail response lasts; the browser reconnects where it left off."""
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def _css(event: Event) -> str:
    """The CSS class of an event's type, as the CLI colours it."""
    if is_failure(event):
        return "fail"
    if event.event_type.startswith("process."):
        return "proc"
    if event.event_type.startswith("llm_call."):
        return "llm"
    return "other"


def _pretty(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False)


def _query(params: Mapping[str, Any], **changes: Any) -> str:
    """``?a=1&b=2``: the page's parameters with ``changes`` (None removes one)."""
    merged = {k: v for k, v in params.items() if v not in (None, "")}
    for key, value in changes.items():
        if value in (None, ""):
            merged.pop(key, None)
        else:
            merged[key] = value
    return "?" + urlencode(merged) if merged else "?"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        clock=clock,
        duration=duration,
        compact=compact,
        css=_css,
        pretty=_pretty,
        failed=is_failure,
    )
    env.globals.update(query=_query, exit_words=exit_words)
    return env


class _Headers:
    """Add :data:`SECURITY_HEADERS` to every HTTP response (pure ASGI: streams pass)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(reader: Reader, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The application over ``reader``.  ``allowed_hosts`` (the CLI passes the host it
    listens on, ``127.0.0.1`` and ``localhost``) refuses other Host headers, so a web
    page elsewhere cannot read the table through DNS rebinding."""
    env = _environment()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        params = dict(request.query_params)
        html = env.get_template(name).render(
            request=request, params=params, db=reader.store.url, **context
        )
        return HTMLResponse(html, status_code=status)

    def page(build: Callable[[Request], HTMLResponse]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await run_in_threadpool(build, request)
            except _pages.BadRequest as exc:
                return render(request, "error.html", 400, title="Bad request", message=str(exc))
            except (StoreBusy, StoreFault) as exc:
                message = f"cannot read {reader.store.url}: {exc}"
                return render(request, "error.html", 503, title="Database busy", message=message)

        return endpoint

    def runs(request: Request) -> HTMLResponse:
        q = request.query_params
        data = _pages.runs_page(
            reader,
            role=q.get("role") or None,
            status=q.get("status") or None,
            since=_pages.parse_time(q.get("since")),
            until=_pages.parse_time(q.get("until")),
            page=_pages.parse_int(q.get("page"), "page", 1) or 1,
        )
        return render(request, "runs.html", data=data, statuses=_pages.STATUSES)

    def run(request: Request) -> HTMLResponse:
        run_id = int(request.path_params["run_id"])
        number = _pages.parse_int(request.query_params.get("page"), "page", 1) or 1
        data = _pages.run_page(reader, run_id, number)
        if data is None:
            message = f"no run {run_id} in {reader.store.url}"
            return render(request, "error.html", 404, title="No such run", message=message)
        return render(request, "run.html", data=data)

    def llm(request: Request) -> HTMLResponse:
        q = request.query_params
        data = _pages.llm_page(
            reader,
            model=q.get("model") or None,
            operation=q.get("operation") or None,
            status=q.get("status") or None,
            run_id=_pages.parse_int(q.get("run"), "run"),
            since=_pages.parse_time(q.get("since")),
            until=_pages.parse_time(q.get("until")),
            sort=q.get("sort") or "time",
            ascending=q.get("order") == "asc",
            page=_pages.parse_int(q.get("page"), "page", 1) or 1,
        )
        return render(request, "llm.html", data=data, window=_pages.LLM_WINDOW)

    def events(request: Request) -> HTMLResponse:
        q = request.query_params
        where = _pages.EventFilter.parse(q.get("type"), q.get("run"), q.get("field"))
        before = _pages.parse_int(q.get("before"), "before")
        found, start = _pages.tail(reader, where, before)
        names = _pages.run_names(reader, found)
        older = found[-1].id if len(found) == _pages.TAIL_ROWS else None
        return render(request, "events.html", events=found, start=start, names=names, older=older)

    def one_event(request: Request) -> HTMLResponse:
        event_id = int(request.path_params["event_id"])
        found = _pages.event(reader, event_id)
        if found is None:
            message = f"no event {event_id} in {reader.store.url}"
            return render(request, "error.html", 404, title="No such event", message=message)
        names = _pages.run_names(reader, [found])
        fragment = request.query_params.get("fragment") == "1"  # for the payload panel
        return render(
            request, "_event.html" if fragment else "event.html", event=found, names=names
        )

    async def stream(request: Request) -> Response:
        """Server-sent events: batches of new rows (as HTML) matching the filters.

        The ``id`` of a message is the follower's watermark (every id up to it has
        been seen); on reconnecting the browser sends it back as ``Last-Event-ID``
        and the rows above it are sent again, which the page skips by id.
        """
        q = request.query_params
        try:
            where = _pages.EventFilter.parse(q.get("type"), q.get("run"), q.get("field"))
            after = _pages.parse_int(
                request.headers.get("last-event-id") or q.get("after"), "after", 0
            )
            seconds = min(float(q.get("seconds") or STREAM_S), STREAM_S)
        except (_pages.BadRequest, ValueError) as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        follower = Follower(
            after or 0, reader.ids_after, lambda after_id: where.events(reader, after_id=after_id)
        )
        row = env.get_template("_row.html")

        def batch() -> str | None:
            try:
                found = follower.poll()
            except StoreBusy:
                return None  # waited out: the next poll tries again
            if not found:
                return None
            names = _pages.run_names(reader, found)
            rows = [{"id": e.id, "html": row.render(event=e, names=names)} for e in found]
            return f"id: {follower.watermark}\ndata: {json.dumps({'rows': rows})}\n\n"

        async def messages() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            deadline = time.monotonic() + seconds
            while True:
                message = await run_in_threadpool(batch)
                if message:
                    yield message
                if time.monotonic() >= deadline or await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_S)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", page(runs)),
        Route("/run/{run_id:int}", page(run)),
        Route("/llm", page(llm)),
        Route("/events", page(events)),
        Route("/events/stream", stream),
        Route("/event/{event_id:int}", page(one_event)),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_Headers)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(routes=routes, middleware=middleware)


__all__ = ["create_app"]
