"""Reading a chat completion's answer: the same for a real-time call and a Batch API result."""

from __future__ import annotations

import json
from typing import Any

from insights.errors import UnusableAnswer
from insights.models import answering_model
from insights.schemas import AnalysisResult


def read_completion(conversation_ids: list[str], document: Any, raw: str, **provenance: Any) -> AnalysisResult:
    """A chat completion for ``conversation_ids`` (decoded; ``raw`` as received) as validated rows;
    :class:`UnusableAnswer` when it is not one, was truncated, or its content is not the JSON asked for.
    ``provenance``: ``model`` (the model asked for: the result names the model that answered, when the
    answer names one), ``prompt_version``, ``usage``. Real-time and Batch API answers alike."""
    try:
        choice = document["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise UnusableAnswer("Grok's response is not a chat completion") from None
    if choice.get("finish_reason") == "length":
        raise UnusableAnswer("Grok's answer was truncated (finish_reason: length)")
    try:
        rows = json.loads(content)["results"]
        if not isinstance(rows, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise UnusableAnswer("Grok's answer is not the JSON asked for") from None
    provenance["model"] = answering_model(document, provenance["model"])
    return AnalysisResult.validated(conversation_ids, rows, raw_response=raw, **provenance)


def usage_in(document: Any) -> dict[str, Any] | None:
    """A completion's ``usage`` object, if it has one."""
    usage = document.get("usage") if isinstance(document, dict) else None
    return usage if isinstance(usage, dict) else None
