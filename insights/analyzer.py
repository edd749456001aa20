"""The analyzer seam: what ``analyze_batch`` needs from whoever scores conversations (``insights.grok``, or
``insights.offline`` without a key; ``actors.analysis.analyzer`` chooses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from insights.conversation import ConversationToAnalyze
from insights.pii.masker import Masker
from insights.schemas import AnalysisResult

Claimer = Callable[[list[str]], list[str]]
"""Called with a batch's ids once its call may start; answers the ids claimed (the others are left out)."""


class Analyzer(Protocol):
    model: str
    prompt_version: str  # ends with the masker's version when masking is on
    masker: Masker  # what is done to a conversation before it is analyzed

    def analyze(self, conversations: list[ConversationToAnalyze], claim: Claimer | None = None) -> AnalysisResult:
        """Score every conversation (those ``claim`` answers, when given: it is called just before the
        analysis starts); rows are validated, missing or invalid ones are in ``rejected``."""
