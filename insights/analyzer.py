"""The analyzer seam: what ``analyze_batch`` needs from whoever scores conversations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from insights.schemas import AnalysisResult
from settings import Settings

if TYPE_CHECKING:
    from insights.outbound import OutboundGate


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


def build_analyzer(settings: Settings, gate: "OutboundGate") -> Analyzer:
    """Grok when ``GROK_API_KEY`` is set, else the deterministic offline analyzer."""
    if settings.offline:
        from insights.offline import OfflineAnalyzer
        from insights.taxonomy import Taxonomy

        return OfflineAnalyzer(Taxonomy.of(settings))
    from insights.grok import GrokClient

    return GrokClient(settings, gate)
