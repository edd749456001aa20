"""The analyzer seam: what ``analyze_batch`` needs from whoever scores conversations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from insights.schemas import AnalysisResult
from settings import Settings

if TYPE_CHECKING:
    from insights.outbound import OutboundGate


class ConversationToAnalyze(NamedTuple):
    conversation_id: str
    messages: list[dict[str, Any]]


class Analyzer(Protocol):
    model: str
    prompt_version: str

    def analyze(self, conversations: list[ConversationToAnalyze]) -> AnalysisResult:
        """Score every conversation; rows are validated, missing or invalid ones are in ``rejected``."""


def build_analyzer(settings: Settings, gate: "OutboundGate") -> Analyzer:
    """Grok when ``GROK_API_KEY`` is set, else the deterministic offline analyzer."""
    if settings.offline:
        from insights.offline import OfflineAnalyzer
        from insights.taxonomy import Taxonomy

        return OfflineAnalyzer(Taxonomy.of(settings))
    from insights.grok import GrokClient

    return GrokClient(settings, gate)
