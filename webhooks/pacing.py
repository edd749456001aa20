"""How often a receiver is called: at most ``WEBHOOK_RPS`` requests a second per subscription, across every
worker process, through Redis.

Each request is given its moment by one Lua script: the subscription's next free slot (no earlier than now),
and the slot after it moves on by ``1 / WEBHOOK_RPS`` seconds. The request's message names its slot, and
the request waits for it on the worker's event loop (a timer: no thread, no connection), so it leaves on
time whatever the queue's own delays. The dispatcher asks first how far ahead the slots are booked
(:meth:`Pacing.booked_ms`) and claims only what it can send within its horizon, so that a backlog of 100,000
stays in the database, not in Redis.
"""

from __future__ import annotations

import redis

RESERVE = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local after = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.3f', after), 'PX', math.ceil(after - now) + 1000)
return string.format('%.3f', slot - now)
"""

BOOKED = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return string.format('%.3f', math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0))
"""


class Pacing:
    """The request slots of every subscription, shared in Redis."""

    def __init__(self, client: redis.Redis, requests_per_second: int, namespace: str) -> None:
        self.interval_ms = 1000 / requests_per_second
        self.prefix = f"{namespace}:webhooks:next-slot:"
        self._reserve = client.register_script(RESERVE)
        self._booked = client.register_script(BOOKED)

    def reserve(self, subscription_id: str) -> int:
        """Book the subscription's next slot: milliseconds from now until a request may leave."""
        return round(float(self._reserve(keys=[self.prefix + subscription_id], args=[self.interval_ms])))

    def booked_ms(self, subscription_id: str) -> float:
        """How far ahead the subscription's slots are booked (0: a request may leave now)."""
        return float(self._booked(keys=[self.prefix + subscription_id]))
