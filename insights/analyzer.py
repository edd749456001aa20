"""The analyzer seam: what ``analyze_batch`` needs from whoever scores conversations (``insights.grok``, or
``insights.offline`` without a key; ``actors.analysis.analyzer`` chooses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from insights.schemas import AnalysisResult


class ConversationToAnalyze(NamedTuple):
    conversation_id: str
    messages: list[dict[str, Any]]


Claimer = Callable[[list[str]], list[str]]
"""Called with a batch's ids once its call may start; answers the ids claimed (the others are left out)."""


class Analyzer(Protocol):
    model: str
    prompt_version: str

    def analyze(self, conversations: list[ConversationToAnalyze], claim: Claimer | None = None) -> AnalysisResult:
        """Score every conversation (those ``claim`` answers, when given: it is called just before the
        analysis starts); rows are validated, missing or invalid ones are in ``rejected``."""
