"""A conversation as the analyzers and the masker take it: its id and its messages."""

from __future__ import annotations

from typing import Any, NamedTuple


class ConversationToAnalyze(NamedTuple):
    conversation_id: str
    messages: list[dict[str, Any]]
