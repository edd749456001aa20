"""Masking a batch before it is analyzed, in both lanes: the analyzer's masker replaces personal data
(``insights.pii``); a conversation whose masking fails is ``failed`` with the reason, never sent, and its
neighbours go on; the items masked are counted for ``insights stats`` and ``/metrics``."""

from __future__ import annotations

import logging

from actors.broker import redis_client, settings
from insights.analyzer import Analyzer, ConversationToAnalyze
from insights.grok import kept
from insights.pii.counts import MaskedCounts
from store import claims

logger = logging.getLogger(__name__)


def masked_for_sending(active: Analyzer, conversations: list[ConversationToAnalyze]) -> list[ConversationToAnalyze]:
    """The conversations as they may be sent (masked when ``PII_MASKING`` is on); the others failed."""
    masked = active.masker.batch(conversations)
    if masked.failed:
        for reason in set(masked.failed.values()):
            ids = [i for i, why in masked.failed.items() if why == reason]
            claims.fail_open(ids, reason)
            logger.error("%d conversation(s) not sent: %s", len(ids), reason, extra={"conversation_ids": ids})
    kept(MaskedCounts(redis_client(), settings()).add, masked.counts)
    return masked.conversations
