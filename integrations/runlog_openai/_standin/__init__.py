"""Private implementation of ``runlog_openai.standin``; import from there instead.

Modules: ``_behaviour`` (what a reply looks like), ``_schema`` (sample JSON for a JSON
schema), ``_replies`` (the OpenAI endpoints as pure functions), ``_server`` (HTTP).
"""

from __future__ import annotations

__all__: list[str] = []
