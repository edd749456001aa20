"""What every accepted conversation goes through: the inbound limit shared through Redis, then the group
commit (the ``202`` promises a committed row), then a Dramatiq message to the workers."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass

import falcon
from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from ulid import ULID

from actors.broker import send_for_batching, streamed_lanes
from api.errors import ApiError
from insights.incoming import ConversationBase
from settings import Settings
from store import queries
from store.db import call_and_release
from store.group_commit import GroupCommitter
from telemetry import metrics

logger = logging.getLogger("ingress")


@dataclass(frozen=True)
class Quota:
    """What one look at the inbound limit found: slots granted, left, and seconds until one frees."""

    limit: int
    granted: int
    remaining: int | None  # None: the limiter was not answering
    reset_seconds: int

    @property
    def retry_after(self) -> int:
        """Whole seconds a client refused a slot should wait (at least 1)."""
        return max(1, self.reset_seconds)

    def headers(self) -> dict[str, str]:
        """The IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-10):
        ``q`` conversations per ``w`` = 1 second; ``r`` left now, ``t`` seconds until one more is."""
        if self.remaining is None:
            return {}
        return {
            "RateLimit-Policy": f'"inbound";q={self.limit};w=1',
            "RateLimit": f'"inbound";r={self.remaining};t={self.reset_seconds}',
        }


class InboundLimiter:
    """``INBOUND_RPS`` conversations per second, shared by every web process through Redis.

    A moving window: at most ``INBOUND_RPS`` acceptances in any one-second span, which is the guarantee a
    token bucket of that rate and capacity approximates, held exactly. When Redis is unreachable the
    limiter lets requests through (the database, not Redis, is what must accept them) and logs it.
    """

    KEY = "inbound-conversations"
    WARN_EVERY_SECONDS = 10.0  # while Redis is away, say so now and then, not on every request

    def __init__(self, settings: Settings) -> None:
        self.item = RateLimitItemPerSecond(settings.inbound_rps)
        storage = storage_from_string(
            settings.limits_storage_url, implementation="redispy", key_prefix=f"{settings.redis_namespace}:limits"
        )
        self.limiter = MovingWindowRateLimiter(storage)
        self.warned_at = -self.WARN_EVERY_SECONDS

    async def take(self, wanted: int = 1) -> Quota:
        """Take up to ``wanted`` slots (none: only look); say how many were granted and what is left."""
        try:
            granted = wanted if wanted and await self._hit(wanted) else 0
            stats = await self.limiter.get_window_stats(self.item, self.KEY)
            if wanted > 1 and granted < wanted and 0 < stats.remaining < wanted and await self._hit(stats.remaining):
                granted = stats.remaining
                stats = await self.limiter.get_window_stats(self.item, self.KEY)
            return Quota(self.item.amount, granted, stats.remaining, max(0, math.ceil(stats.reset_time - time.time())))
        except Exception as error:  # Redis away: keep accepting into the database
            if time.monotonic() - self.warned_at >= self.WARN_EVERY_SECONDS:
                self.warned_at = time.monotonic()
                logger.warning("inbound limiter unavailable, accepting without it: %s", error)
        return Quota(self.item.amount, wanted, None, 0)

    async def _hit(self, cost: int) -> bool:
        return await self.limiter.hit(self.item, self.KEY, cost=cost)


def admit(streamed: tuple[str, ...], conversations: list[queries.NewConversation]) -> list[queries.InsertOutcome]:
    """Commit a round of conversations, then hand the new ones of the ``streamed`` lanes to the workers (in
    the writer thread).

    The commit is what a ``202`` promises; if Redis is away the send fails and the reconciler re-sends.
    The bulk lane's conversations get no message when the bulk lane takes them from the database.
    """
    outcomes = queries.insert_conversations(conversations)
    created = [
        new.id
        for new, outcome in zip(conversations, outcomes)
        if outcome is queries.InsertOutcome.CREATED and new.lane in streamed
    ]
    try:
        send_for_batching(created)  # a round of many conversations: a message per thousand, not one each
    except Exception as error:
        logger.warning("could not enqueue %d conversation(s), the reconciler will: %s", len(created), error)
    return outcomes


class Admission:
    """What every accepted conversation goes through: the inbound limit, then the group commit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter = InboundLimiter(settings)
        # Each round hands its connection back: one the database dropped (a restart, a failover) is then
        # discarded by the pool instead of failing every later round of this long-lived writer thread.
        self.committer = GroupCommitter(functools.partial(call_and_release, admit, streamed_lanes(settings)))

    def rate_limited(self, quota: Quota) -> ApiError:
        metrics.web().rate_limited.inc()
        return ApiError(
            falcon.HTTP_429,
            "rate_limited",
            f"Over {self.settings.inbound_rps} conversations a second; retry later.",
            headers={"Retry-After": str(quota.retry_after), **quota.headers()},
            retry_after_seconds=quota.retry_after,
        )

    async def prepare(
        self, conversations: list[ConversationBase], lane: str
    ) -> list[tuple[queries.NewConversation, queries.InsertOutcome | None]]:
        """Each validated conversation as a row to insert, with its outcome when its id was accepted before
        (``DUPLICATE`` or ``CONFLICT``): those are answered at once and take no inbound slot, so a client
        that resends what was partly accepted makes progress."""
        now = queries.utcnow()
        news = [
            queries.NewConversation.of(
                c.conversation_id or f"conv_{ULID()}", c.canonical_payload(), now, c.occurred(now), lane
            )
            for c in conversations
        ]
        named = [new.id for new, c in zip(news, conversations) if c.conversation_id]
        hashes = await asyncio.to_thread(call_and_release, queries.accepted_hashes, named) if named else {}
        return [(new, queries.known_outcome(new, hashes)) for new in news]

    async def commit(self, new: queries.NewConversation) -> queries.InsertOutcome:
        """Commit one conversation (its slot already taken) through the group commit; say how it went."""
        outcome = await self.committer.submit(new)
        if outcome is queries.InsertOutcome.CREATED:
            metrics.web().accepted.inc()
        return outcome
