"""``runlog ui``: a local, read-only web page over the ``events`` table.

Pages (each its own URL, to paste into a bug report): the runs (``/``, the process
trees with their status and counts, and the state a supervisor derives), one run
(``/run/ID``, a waterfall of the run and its descendants on one time axis beside
their events), the LLM calls (``/llm``, per-model latency percentiles, a histogram
and tokens over time, and every call), the events (``/events``, a live tail with
filters, fed by server-sent events) and one event (``/event/ID``, its payload).

Reads go through the SDK's :class:`~runlog._store.Reader` and the CLI's run summaries
and statistics: one query layer.  Its dependencies (starlette, uvicorn, jinja2: the
``runlog[ui]`` extra) are imported only when the command runs; every asset is served
from this package, so the page makes no request off the machine.  Private.
"""
