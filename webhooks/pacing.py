"""How often a receiver is called: at most ``WEBHOOK_RPS`` requests a second per subscription, across every
worker process, through Redis.

Each request is given its moment by one Lua script: the subscription's next free slot (no earlier than now),
and the slot after it moves on by ``(1 s + RATE_MARGIN_MS) / WEBHOOK_RPS``. The request's message names its
slot, and the request waits for it on the worker's event loop (a timer: no thread, no connection), so it
leaves on time whatever the queue's own delays. At its slot it has the last word of a sliding log of the
requests that really left (:meth:`Pacing.confirm`): at most ``WEBHOOK_RPS`` in any ``1 s + margin``, so
a timer that fired late cannot bunch with the next one, and the margin covers the jitter on the way, so
that the receiver never counts more than ``WEBHOOK_RPS`` in one of its seconds.

The dispatcher asks first how far ahead the slots are booked (:meth:`Pacing.booked_ms`) and claims only what
it can send within its horizon, so that a backlog of 100,000 stays in the database, not in Redis.
"""

from __future__ import annotations

import uuid

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


# KEYS: the log of requests sent.  ARGV: limit, window ms, member.  0 with the request logged, or the
# milliseconds to wait before asking again.
CONFIRM = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now + 1)
"""


class Pacing:
    """The request slots of every subscription, shared in Redis."""

    def __init__(self, client: redis.Redis, requests_per_second: int, namespace: str, margin_ms: int = 0) -> None:
        self.limit, self.window_ms = requests_per_second, 1000 + margin_ms
        self.interval_ms = self.window_ms / requests_per_second
        self.prefix = f"{namespace}:webhooks:next-slot:"
        self.log_prefix = f"{namespace}:webhooks:sent:"
        self._reserve = client.register_script(RESERVE)
        self._booked = client.register_script(BOOKED)
        self._confirm = client.register_script(CONFIRM)

    def reserve(self, subscription_id: str) -> int:
        """Book the subscription's next slot: milliseconds from now until a request may leave."""
        return round(float(self._reserve(keys=[self.prefix + subscription_id], args=[self.interval_ms])))

    def booked_ms(self, subscription_id: str) -> float:
        """How far ahead the subscription's slots are booked (0: a request may leave now)."""
        return float(self._booked(keys=[self.prefix + subscription_id]))

    def confirm(self, subscription_id: str) -> int:
        """Log a request leaving now (0), or say how many milliseconds it must wait first."""
        member = uuid.uuid4().hex
        return int(self._confirm(keys=[self.log_prefix + subscription_id], args=[self.limit, self.window_ms, member]))
