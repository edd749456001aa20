"""The deterministic offline analyzer: VADER for sentiment, a keyword taxonomy for clusters.

It runs when no ``GROK_API_KEY`` is configured and produces exactly the rows Grok must produce, so they
go through the same validation and storage. Same input, same output: no randomness, no clock.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Mapping

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from insights.analyzer import ConversationToAnalyze
from insights.schemas import AnalysisResult

MODEL_NAME = "offline-vader-taxonomy"
PROMPT_VERSION = "offline-1"
# Roles whose words speak for the agent, not the customer; their tone is not the customer's sentiment.
AGENT_ROLES = frozenset({"agent", "assistant", "support", "system", "bot", "operator"})
_WORD = re.compile(r"[a-z']+")


class OfflineAnalyzer:
    """Scores each conversation on its own; batching only matters for the calling pipeline."""

    model = MODEL_NAME
    prompt_version = PROMPT_VERSION

    def __init__(self, taxonomy: Mapping[str, Iterable[str]]) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self._clusters = {
            slug: re.compile(r"\b(?:" + "|".join(re.escape(word.lower()) for word in words) + r")\b")
            for slug, words in taxonomy.items()
            if words
        }

    def analyze(self, conversations: list[ConversationToAnalyze]) -> AnalysisResult:
        rows = [self.analyze_one(conversation) for conversation in conversations]
        return AnalysisResult.validated(
            [conversation.conversation_id for conversation in conversations], rows, model=self.model,
            prompt_version=self.prompt_version, raw_response=json.dumps({"results": rows}, separators=(",", ":")),
        )

    def analyze_one(self, conversation: ConversationToAnalyze) -> dict:
        """One row: recency-weighted VADER compound over the customer's messages, taxonomy clusters."""
        voices = [m["content"] for m in conversation.messages if m["role"].lower() not in AGENT_ROLES]
        texts = voices or [m["content"] for m in conversation.messages]
        weights = range(1, len(texts) + 1)  # later messages say more about how the conversation ended
        compounds = [self._vader.polarity_scores(text)["compound"] for text in texts]
        score = sum(w * c for w, c in zip(weights, compounds)) / sum(weights)

        everything = " ".join(m["content"] for m in conversation.messages).lower()
        matches = {slug: sorted(set(p.findall(everything))) for slug, p in self._clusters.items()}
        matches = {slug: words for slug, words in matches.items() if words}
        clusters = sorted(matches, key=lambda slug: (-len(matches[slug]), slug))
        sentiment_words = sum(1 for word in _WORD.findall(" ".join(texts).lower()) if word in self._vader.lexicon)

        return {
            "conversation_id": conversation.conversation_id,
            "sentiment_score": round(score, 4),
            "clusters": clusters,
            "confidence": _confidence(sentiment_words, sum(map(len, matches.values()))),
            "reasoning": _reasoning(score, len(texts), sentiment_words, matches),
        }


def _confidence(sentiment_words: int, cluster_words: int) -> float:
    """More evidence, more certainty: saturates at 5 sentiment-bearing words and 3 topic keywords."""
    return round(0.2 + 0.5 * min(1.0, sentiment_words / 5) + 0.3 * min(1.0, cluster_words / 3), 3)


def _reasoning(score: float, messages: int, sentiment_words: int, matches: dict[str, list[str]]) -> str:
    tone = "positive" if score > 0.05 else "negative" if score < -0.05 else "neutral"
    text = f"Customer tone {tone} (VADER {score:+.2f} over {messages} message(s), {sentiment_words} sentiment word(s))"
    if matches:
        topics = "; ".join(f"{slug}: {', '.join(words[:3])}" for slug, words in matches.items())
        return f"{text}; topics {topics}."
    return f"{text}; no taxonomy keyword found."
