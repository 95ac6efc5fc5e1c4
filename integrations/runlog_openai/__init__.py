"""runlog's OpenAI integration: OpenAI calls logged as ``llm_call.*`` events.

``runlog_openai.standin`` holds an OpenAI-compatible HTTP server for offline tests and
demos; it imports neither ``openai`` nor ``httpx``.
"""

from __future__ import annotations

__all__: list[str] = []
