"""The analyzer seam: what ``analyze_batch`` needs from whoever scores conversations."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from insights.schemas import AnalysisResult
from settings import Settings


class ConversationToAnalyze(NamedTuple):
    conversation_id: str
    messages: list[dict[str, Any]]


class Analyzer(Protocol):
    model: str
    prompt_version: str

    def analyze(self, conversations: list[ConversationToAnalyze]) -> AnalysisResult:
        """Score every conversation; rows are validated, missing or invalid ones are in ``rejected``."""


class AnalyzerUnavailable(RuntimeError):
    """The configured analyzer cannot run in this build or configuration."""


def build_analyzer(settings: Settings) -> Analyzer:
    """The offline analyzer without ``GROK_API_KEY``; the Grok client is not built yet."""
    if not settings.offline:
        raise AnalyzerUnavailable(
            "GROK_API_KEY is set but the Grok client is not implemented yet; unset it to use the offline analyzer"
        )
    from insights.offline import OfflineAnalyzer

    return OfflineAnalyzer(settings.taxonomy)
