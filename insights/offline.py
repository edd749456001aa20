"""The deterministic offline analyzer: VADER for sentiment, the taxonomy's keywords for clusters.

It runs when no ``GROK_API_KEY`` is configured and produces exactly the rows Grok must produce, so they
go through the same validation and storage. Same input, same output: no randomness, no clock. With a
closed taxonomy, a conversation that matches no keyword is ``other``, and its most frequent long word is
the suggested cluster.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from insights.analyzer import Claimer, ConversationToAnalyze
from insights.pii.masker import UNMASKED, Masker
from insights.schemas import AnalysisResult
from insights.taxonomy import OTHER, Taxonomy

MODEL_NAME = "offline-vader-taxonomy"
PROMPT_VERSION = "offline-1"
# Words too common to name a topic, for suggestions (five letters or more, as suggestions are).
COMMON_WORDS = frozenset(
    "about after again always because before being could every found great hello problem "
    "please really still thank thanks there these thing think where which while would".split()
)
# Roles whose words speak for the agent, not the customer; their tone is not the customer's sentiment.
AGENT_ROLES = frozenset({"agent", "assistant", "support", "system", "bot", "operator"})
_WORD = re.compile(r"[a-z']+")


class OfflineAnalyzer:
    """Scores each conversation on its own; batching only matters for the calling pipeline."""

    model = MODEL_NAME

    def __init__(self, taxonomy: Taxonomy, masker: Masker = UNMASKED) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self.taxonomy, self.masker = taxonomy, masker
        self.prompt_version = masker.versioned(f"{PROMPT_VERSION}-{taxonomy.version()}")
        self._clusters = {
            slug: re.compile(r"\b(?:" + "|".join(re.escape(word.lower()) for word in words) + r")\b")
            for slug, words in taxonomy.keywords.items()
            if words
        }

    def analyze(self, conversations: list[ConversationToAnalyze], claim: Claimer | None = None) -> AnalysisResult:
        if claim is not None:
            claimed = set(claim([c.conversation_id for c in conversations]))
            conversations = [c for c in conversations if c.conversation_id in claimed]
        rows = [self.analyze_one(conversation) for conversation in conversations]
        return AnalysisResult.validated(
            [conversation.conversation_id for conversation in conversations],
            rows,
            model=self.model,
            prompt_version=self.prompt_version,
            raw_response=json.dumps({"results": rows}, separators=(",", ":")),
            vocabulary=self.taxonomy.vocabulary,
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

        suggested = None
        if self.taxonomy.closed and not clusters:
            clusters, suggested = [OTHER], _topic_word(texts)
        return {
            "conversation_id": conversation.conversation_id,
            "sentiment_score": round(score, 4),
            "clusters": clusters,
            "suggested_cluster": suggested,
            "confidence": _confidence(sentiment_words, sum(map(len, matches.values()))),
            "reasoning": _reasoning(score, len(texts), sentiment_words, matches),
        }


def _topic_word(texts: list[str]) -> str | None:
    """The most frequent word of five letters or more (the first of equals), common words left out."""
    words = [word for word in _WORD.findall(" ".join(texts).lower()) if len(word) >= 5 and word not in COMMON_WORDS]
    return Counter(words).most_common(1)[0][0] if words else None


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
