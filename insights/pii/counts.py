"""Items masked, by kind, counted in one Redis hash that every worker adds to: ``insights stats`` and the
web's ``/metrics`` read it. Redis, like the other counts ``insights stats`` shows (models that answered,
queues), because it is a running tally for operators, not a record: the database keeps conversations and
insights, not counters, and a tally lost with Redis costs nothing that matters."""

from __future__ import annotations

from collections import Counter

import redis

from settings import Settings


class MaskedCounts:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.key = f"{settings.redis_namespace}:pii:masked"

    def add(self, counts: Counter[str]) -> None:
        if not counts:
            return
        pipeline = self.client.pipeline(transaction=False)
        for kind, count in counts.items():
            pipeline.hincrby(self.key, kind, count)
        pipeline.execute()

    def read(self) -> dict[str, int]:
        """Items masked since Redis was last emptied, by kind (``EMAIL``, ``PHONE``...)."""
        return {kind.decode(): int(count) for kind, count in sorted(self.client.hgetall(self.key).items())}
