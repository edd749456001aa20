"""What the outbound gate keeps in Redis: its keys, and the Lua scripts that read and change them atomically
(so every process sees one schedule, one token log and one pause). :mod:`insights.outbound` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from insights import credits
from ratelimits import lua


@dataclass(frozen=True)
class GateKeys:
    """The gate's Redis keys, under a deployment's namespace (``REDIS_NAMESPACE``)."""

    next_start: str  # when the next call may start (ms)
    starts: str  # sorted set of the calls started in the last second and margin
    tokens_log: str  # sorted set: reservation id -> start (ms)
    tokens_amount: str  # hash: reservation id -> tokens
    tokens_total: str  # the sum of that hash
    pause: str  # paused until (ms)
    pause_reason: str
    misconfigured: str

    @classmethod
    def under(cls, namespace: str) -> GateKeys:
        names = (
            "next-start-ms",
            "call-starts",
            "token-log",
            "token-amounts",
            "token-total",
            "paused-until-ms",
            "pause-reason",
            "misconfigured",
        )
        return cls(*(f"{namespace}:grok:{name}" for name in names))


# KEYS: next start, token log, token amounts, token total, pause, credits retry, credits probe.
# ARGV: interval ms, token budget (0: none), tokens, window ms, max wait ms, reservation id, probe lease ms.
# Returns {wait ms, status}: 0 reserved (start in wait ms); 1 busy (the start would be more than max wait
# away; nothing reserved); 2 over budget (the call alone exceeds the token budget); 3 no room for its
# tokens yet (nothing reserved; enough leaves the window in wait ms at the latest, sooner if calls settle
# for less than they reserved); 4 held for exhausted credits (nothing reserved); 5 reserved as the credits
# probe. A call waiting for tokens does not hold up the calls behind it in the request spacing: only a
# granted reservation moves the next start.
RESERVE = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, budget, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
"""
    + credits.RESERVE_STEP
    + """
local start = math.max(now, tonumber(redis.call('GET', KEYS[5]) or '0'), tonumber(redis.call('GET', KEYS[1]) or '0'))
if start - now > max_wait then return {math.ceil(start - now), 1} end
if budget > 0 then
  if tokens > budget then return {0, 2} end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window)
  for _, id in ipairs(expired) do
    redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], id) or '0'))
    redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used + tokens > budget then
    local need, free_at = used + tokens - budget, now + window
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      need = need - tonumber(redis.call('HGET', KEYS[3], entries[i]) or '0')
      if need <= 0 then free_at = tonumber(entries[i + 1]) + window + 1 break end
    end
    return {math.ceil(math.max(free_at, start) - now), 3}
  end
  redis.call('ZADD', KEYS[2], start, ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[6], tokens)
  redis.call('INCRBY', KEYS[4], tokens)
  for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], math.ceil(start - now + window * 2)) end
end
redis.call('SET', KEYS[1], start + interval, 'PX', math.ceil(start - now + interval + 60000))
"""
    + credits.RESERVE_PROBE
    + """
return {math.ceil(start - now), 5 * probe}
"""
)

# KEYS: token amounts, token total.  ARGV: reservation id, tokens.  A reservation's real amount.
SETTLE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - tonumber(old))
end
return 0
"""

# KEYS: start log, credits retry, credits probe.  ARGV: limit, window ms, member (the reservation id).  The
# last word before a call starts: at most ``limit`` calls in any window (a sliding log of actual starts), so
# a thread that woke late cannot bunch with the next one; and while credits are exhausted, none but the
# probe.  Returns 0 with the start logged, the milliseconds to wait before asking again, or a negative
# number: held for credits (a reservation granted before they ran out), not to start; minus the
# milliseconds until the next probe.
CONFIRM = lua.NOW + credits.CONFIRM_STEP + lua.SLIDING_LOG

# KEYS: pause.  ARGV: milliseconds.  Extends the pause, never shortens it.
PAUSE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
return until_ms
"""
