"""The OpenAI client as the core instruments it: its endpoints, stream classes and tweaks.

Everything about how a call is patched, tracked and streamed is the provider-neutral
core's (:mod:`runlog_providers`); this module only names OpenAI's pieces.  Importing
it imports ``openai``, so it is imported by :func:`runlog_openai.instrument` only.
"""

from __future__ import annotations

from openai import AsyncStream, Stream, _base_client

from runlog_providers import Integration, Provider, Settings

from . import _streams
from ._endpoints import ENDPOINTS

PROVIDER = Provider(
    name="openai",
    label="OpenAI",
    endpoints=ENDPOINTS,
    stream_types=(Stream, AsyncStream),
    request_id_header="x-request-id",
    prepare=_streams.prepare,
)
INTEGRATION = Integration(PROVIDER, _base_client.SyncAPIClient, _base_client.AsyncAPIClient)

install = INTEGRATION.install
uninstall = INTEGRATION.uninstall
installed = INTEGRATION.installed

__all__ = ["INTEGRATION", "PROVIDER", "Settings", "install", "installed", "uninstall"]
