"""How often a receiver is called: at most ``WEBHOOK_RPS`` requests a second per subscription, across every
worker process, through Redis.

Each request is given its moment by one Lua script: the subscription's next free slot (no earlier than now),
and the slot after it moves on by ``(1 s + RATE_MARGIN_MS) / WEBHOOK_RPS``. The request's message names its
slot, and the request waits for it on the worker's event loop (a timer: no thread, no connection), so it
leaves on time whatever the queue's own delays. At its slot it has the last word of a sliding log of the
requests that really left (:meth:`Pacing.confirm`): at most ``WEBHOOK_RPS`` in any ``1 s + margin``, so
a timer that fired late cannot bunch with the next one, and the margin covers the jitter on the way, so
that the receiver never counts more than ``WEBHOOK_RPS`` in one of its seconds.

A receiver that answers ``429 Too Many Requests`` has its subscription held (:meth:`Pacing.hold`) for its
``Retry-After``: no request leaves until then, and the slots not yet booked come after it.

The dispatcher asks first how far ahead the slots are booked (:meth:`Pacing.booked_ms`) and claims only what
it can send within its horizon, so that a backlog of 100,000 stays in the database, not in Redis.
"""

from __future__ import annotations

import uuid

import redis

from ratelimits import lua

RESERVE = (
    lua.NOW
    + """
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local after = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.3f', after), 'PX', math.ceil(after - now) + 1000)
return string.format('%.3f', slot - now)
"""
)

BOOKED = (
    lua.NOW
    + """
return string.format('%.3f', math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0))
"""
)

# KEYS: the log of requests sent, the hold.  ARGV: limit, window ms, member.  0 with the request logged, or
# the milliseconds to wait before asking again.
CONFIRM = (
    lua.NOW
    + """
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > now then return math.ceil(held - now) end
"""
    + lua.SLIDING_LOG
)

# KEYS: the next slot, the hold.  ARGV: milliseconds.  Holds the subscription until then (a longer hold
# stands), and books no slot before it.
HOLD = (
    lua.NOW
    + """
local held = now + tonumber(ARGV[1])
if held > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], held, 'PX', tonumber(ARGV[1]) + 1000)
end
if held > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], held, 'PX', tonumber(ARGV[1]) + 1000)
end
return held
"""
)


class Pacing:
    """The request slots of every subscription, shared in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        requests_per_second: int,
        namespace: str,
        margin_ms: int = 0,
        loop_client: redis.Redis | None = None,
    ) -> None:
        """``loop_client``: the client :meth:`confirm` uses, called from an event loop (no retries, short
        timeouts: a Redis away must not hold the loop); ``client`` by default."""
        self.loop_client = loop_client or client
        self.limit, self.window_ms = requests_per_second, 1000 + margin_ms
        self.interval_ms = self.window_ms / requests_per_second
        self.prefix = f"{namespace}:webhooks:next-slot:"
        self.log_prefix = f"{namespace}:webhooks:sent:"
        self.hold_prefix = f"{namespace}:webhooks:held-until:"
        self._reserve = client.register_script(RESERVE)
        self._booked = client.register_script(BOOKED)
        self._confirm = client.register_script(CONFIRM)
        self._hold = client.register_script(HOLD)

    def reserve(self, subscription_id: str) -> int:
        """Book the subscription's next slot: milliseconds from now until a request may leave."""
        return round(float(self._reserve(keys=[self.prefix + subscription_id], args=[self.interval_ms])))

    def booked_ms(self, subscription_id: str) -> float:
        """How far ahead the subscription's slots are booked (0: a request may leave now)."""
        return float(self._booked(keys=[self.prefix + subscription_id]))

    def confirm(self, subscription_id: str) -> int:
        """Log a request leaving now (0), or say how many milliseconds it must wait first."""
        member = uuid.uuid4().hex
        keys = [self.log_prefix + subscription_id, self.hold_prefix + subscription_id]
        return int(self._confirm(keys=keys, args=[self.limit, self.window_ms, member], client=self.loop_client))

    def hold(self, subscription_id: str, seconds: float) -> None:
        """No request to the subscription for ``seconds`` from now (its receiver asked us to slow down)."""
        keys = [self.prefix + subscription_id, self.hold_prefix + subscription_id]
        self._hold(keys=keys, args=[max(1, int(seconds * 1000))])
