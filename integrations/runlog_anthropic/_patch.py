"""The Anthropic client as the core instruments it: its endpoints and stream classes.

Everything about how a call is patched, tracked and streamed is the provider-neutral
core's (:mod:`runlog_providers`).  Importing this module imports ``anthropic``, so it is
imported by :func:`runlog_anthropic.instrument` only.
"""

from __future__ import annotations

from anthropic import AsyncStream, Stream, _base_client

from runlog_providers import Integration, Provider

from ._endpoints import ENDPOINTS

PROVIDER = Provider(
    name="anthropic",
    label="Anthropic",
    endpoints=ENDPOINTS,
    stream_types=(Stream, AsyncStream),
    request_id_header="request-id",
)
INTEGRATION = Integration(PROVIDER, _base_client.SyncAPIClient, _base_client.AsyncAPIClient)

install = INTEGRATION.install
uninstall = INTEGRATION.uninstall
installed = INTEGRATION.installed

__all__ = ["INTEGRATION", "PROVIDER", "install", "installed", "uninstall"]
