"""The outbound gate: every Grok call of every worker process passes through it, via Redis.

- A sliding log of call times (a sorted set, stamped with Redis's own clock) allows at most
  ``OUTBOUND_RPS`` calls in any window of one second plus a small margin, so the server, which sees
  the calls a moment after they were counted, never sees more than ``OUTBOUND_RPS`` in one second.
  (The ``limits`` library's moving window counts in whole seconds and cannot add that margin.)
- A ``429`` pauses **all** processes: the pause ends at a time stored in Redis, and no slot is handed
  out before it.
- A ``401``/``403`` marks Grok as misconfigured for a while, with the reason, for ``/readyz`` and logs.
"""

from __future__ import annotations

import time

import redis

SLOTS_KEY = "grok:call-times"
PAUSE_KEY = "grok:paused-until-ms"
MISCONFIGURED_KEY = "grok:misconfigured"

# KEYS: slots, pause.  ARGV: limit, window_ms, unique member.
# Returns 0 with a slot taken, or the milliseconds to wait before asking again.
_ACQUIRE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused_until > now then
  return paused_until - now
end
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

# KEYS: pause.  ARGV: milliseconds.  Extends the pause, never shortens it.
_PAUSE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
return until_ms
"""


class OutboundGate:
    """Shared rate limit and pauses for Grok calls, held in Redis for every process."""

    def __init__(self, client: redis.Redis, calls_per_second: int, margin_ms: int = 30) -> None:
        self.client = client
        self.calls_per_second = calls_per_second
        self.window_ms = 1000 + margin_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)
        self._counter = 0

    def acquire(self, timeout: float = 300.0) -> None:
        """Block until this process may make one call; raise ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self._counter += 1
            member = f"{id(self)}-{time.time_ns()}-{self._counter}"
            wait_ms = int(self._acquire(keys=[SLOTS_KEY, PAUSE_KEY], args=[self.calls_per_second, self.window_ms, member]))
            if wait_ms == 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise TimeoutError(f"no outbound slot within {timeout:.0f} s")
            time.sleep(wait_ms / 1000)

    def pause(self, seconds: float) -> None:
        """Stop every process's calls for ``seconds`` from now (a longer pause already set stands)."""
        self._pause(keys=[PAUSE_KEY], args=[max(1, int(seconds * 1000))])

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        until_ms = int(self.client.get(PAUSE_KEY) or 0)
        seconds, micros = self.client.time()
        return max(0.0, (until_ms - (seconds * 1000 + micros // 1000)) / 1000)

    def report_misconfiguration(self, reason: str, seconds: float) -> None:
        self.client.set(MISCONFIGURED_KEY, reason, px=int(seconds * 1000))

    def misconfiguration(self) -> str | None:
        """Why Grok cannot be used right now (bad key...), or ``None``."""
        reason = self.client.get(MISCONFIGURED_KEY)
        return reason.decode() if reason else None
