"""runlog's provider-neutral integration core: one request patch, one call tracker, one set
of stream observers, shared by every LLM client generated from the same client base
(``openai``, ``anthropic``).

A provider package (``runlog_openai``, ``runlog_anthropic``) holds only what differs:
its endpoint table (:class:`Endpoint` per URL path), how it reads usage and replies
into a :class:`Reply`, how it handles stream events, and a :class:`Provider` naming its
client's stream classes.  Then::

    INTEGRATION = Integration(PROVIDER, SyncAPIClient, AsyncAPIClient)
    INTEGRATION.install(Settings(capture_content=False))

Modules: ``_reply`` (the accumulator and readers), ``_provider`` (the table types),
``_phase`` (the call's state machine), ``_tracker`` (one call), ``_streams`` (stream
observers and the reaper of abandoned streams), ``_patch`` (the request patch),
``_report`` (faults of ours).  Built only on runlog's public API; this package imports
no client library itself, so importing it costs nothing until a provider installs it.
"""

from __future__ import annotations

from ._patch import Integration
from ._provider import Body, Endpoint, Provider, Settings, each
from ._reply import COUNTS, Reply, count, get, items
from ._streams import settle

__all__ = [
    "COUNTS",
    "Body",
    "Endpoint",
    "Integration",
    "Provider",
    "Reply",
    "Settings",
    "count",
    "each",
    "get",
    "items",
    "settle",
]
