"""The outbound gate: every Grok call of every worker process passes through it, via Redis.

xAI limits each model on two axes, requests per second and tokens per minute, so the gate budgets both:

- **Requests**: calls are scheduled ``(1 s + margin) / OUTBOUND_RPS`` apart, across every process, and a
  sliding log of the calls actually started (Redis's clock) has the last word: at most ``OUTBOUND_RPS``
  in any ``1 s + margin``, so a thread that woke late cannot bunch with the next, and no one-second
  window at the server holds more than ``OUTBOUND_RPS`` (the margin covers the moment between a call's
  start here and its arrival there).
- **Tokens** (``OUTBOUND_TPM``, optional): every call reserves its estimated tokens in a sliding log of
  the last minute (and of the calls scheduled to start); it is granted only when the log leaves room for
  it, else it asks again about every second (a call that settles for less than it reserved frees room
  early). Once the answer's ``usage`` is known, :meth:`OutboundGate.settle` corrects the reservation. A
  call waiting for tokens does not hold up the request spacing of the others.
- **Pauses**: a ``429`` pauses **all** processes until its ``Retry-After``; nothing starts before then.

A call is given a start time by one Lua script (a reservation, first come first served) and sleeps until
then, so hundreds of waiting callers cost no polling: the gate alone decides the rate, whatever the
number of threads. A wait longer than ``max_wait`` is not taken: :class:`ProviderBusy` says how long to
come back after, so the caller can set its work aside instead of holding it. A call estimated above the
whole token budget raises :class:`OverBudget` (split the batch).

A ``401``/``403``/``404`` marks Grok as misconfigured for a while, with the reason, for health reports.
Exhausted credits hold every call but one probe a pause (:mod:`insights.credits`); the reservation script
grants that probe.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import redis

from insights import credits
from insights.errors import OverBudget, ProviderBusy

TOKEN_POLL_SECONDS = 1.0  # a call waiting for tokens asks again this often (settled calls free some early)
TOKEN_WINDOW_MS = 60_000


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
    def under(cls, namespace: str) -> "GateKeys":
        names = ("next-start-ms", "call-starts", "token-log", "token-amounts", "token-total", "paused-until-ms",
                 "pause-reason", "misconfigured")
        return cls(*(f"{namespace}:grok:{name}" for name in names))

# KEYS: next start, token log, token amounts, token total, pause, credits retry, credits probe.
# ARGV: interval ms, token budget (0: none), tokens, window ms, max wait ms, reservation id, probe lease ms.
# Returns {wait ms, status}: 0 reserved (start in wait ms); 1 busy (the start would be more than max wait
# away; nothing reserved); 2 over budget (the call alone exceeds the token budget); 3 no room for its
# tokens yet (nothing reserved; enough leaves the window in wait ms at the latest, sooner if calls settle
# for less than they reserved); 4 held for exhausted credits (nothing reserved); 5 reserved as the credits
# probe. A call waiting for tokens does not hold up the calls behind it in the request spacing: only a
# granted reservation moves the next start.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, budget, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
""" + credits.RESERVE_STEP + """
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
""" + credits.RESERVE_PROBE + """
return {math.ceil(start - now), 5 * probe}
"""

# KEYS: token amounts, token total.  ARGV: reservation id, tokens.  A reservation's real amount.
_SETTLE = """
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
_CONFIRM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
""" + credits.CONFIRM_STEP + """
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


@dataclass(frozen=True)
class Reservation:
    """A call's place in the gate: its id in the token log and the tokens reserved."""

    id: str
    tokens: int
    probe: bool = False  # the one call let through exhausted credits, to see whether they are back


@dataclass(frozen=True)
class GrokState:
    """``available``, ``paused`` (a 429's Retry-After), ``misconfigured`` (bad key, unknown model) or
    ``credits_exhausted`` (until a probe call finds them back)."""

    state: str
    reason: str | None
    seconds_left: float


class OutboundGate:
    """Shared rate limits and pauses for Grok calls, held in Redis for every process."""

    def __init__(self, client: redis.Redis, calls_per_second: int, tokens_per_minute: int | None = None,
                 max_wait: float = 60.0, margin_ms: int = 30, window_ms: int = TOKEN_WINDOW_MS,
                 namespace: str = "insights") -> None:
        self.client = client
        self.keys = GateKeys.under(namespace)
        self.calls_per_second = calls_per_second
        self.tokens_per_minute = tokens_per_minute or 0
        self.window_ms_rps = 1000 + margin_ms
        self.interval_ms = self.window_ms_rps / calls_per_second
        self.max_wait_ms = int(max_wait * 1000)
        self.window_ms = window_ms
        self._reserve = client.register_script(_RESERVE)
        self._pause = client.register_script(_PAUSE)
        self._confirm = client.register_script(_CONFIRM)
        self._settle = client.register_script(_SETTLE)
        self.credits = credits.CreditsHold(client, namespace)

    def acquire(self, tokens: int = 0) -> Reservation:
        """Block until this process may start one call of ``tokens`` estimated tokens, and log its start.

        Raises :class:`ProviderBusy` when that is more than ``max_wait`` away, :class:`OverBudget` when
        ``tokens`` alone exceed the token budget."""
        reservation = self.reserve(tokens)
        self.start(reservation)
        return reservation

    def reserve(self, tokens: int = 0, probe_lease: float = 120.0) -> Reservation:
        """:meth:`acquire` without logging the start: the caller does what must precede the call (claim its
        batch), then :meth:`start` or :meth:`try_start`, so that the call leaves right after its start is
        logged. While credits are exhausted, only the probe is granted (``reservation.probe``), and held as
        the probe for ``probe_lease`` seconds from its start at most (the longest a call may take)."""
        reservation = Reservation(uuid.uuid4().hex, max(0, int(tokens)))
        while (granted := self._reserve_once(reservation, probe_lease)) is None:
            pass
        return granted

    def _reserve_once(self, reservation: Reservation, probe_lease: float) -> Reservation | None:
        """One turn of :meth:`reserve`: the reservation granted, or ``None`` to ask again."""
        wait_ms, status = self._reserve(
            keys=[self.keys.next_start, self.keys.tokens_log, self.keys.tokens_amount, self.keys.tokens_total, self.keys.pause,
                  self.credits.keys.retry, self.credits.keys.probe],
            args=[self.interval_ms, self.tokens_per_minute, reservation.tokens, self.window_ms,
                  self.max_wait_ms, reservation.id, int(probe_lease * 1000)],
        )
        if status == 2:
            raise OverBudget(f"an estimated {reservation.tokens} tokens exceed OUTBOUND_TPM={self.tokens_per_minute}")
        if status == 4:
            raise ProviderBusy(min(wait_ms, self.max_wait_ms) / 1000, credits.ACTION)
        if status == 1 or (status == 3 and wait_ms > self.max_wait_ms):
            raise ProviderBusy(wait_ms / 1000)
        if status == 3:  # ask again soon, at a moment of our own (hundreds may be waiting)
            time.sleep(min(wait_ms / 1000, TOKEN_POLL_SECONDS) * random.uniform(0.75, 1.0))
            return None
        time.sleep(wait_ms / 1000)
        if self.paused_for() > 0:  # a 429 seen while we slept moves everyone behind its pause
            if status == 5:
                self.credits.release(reservation.id, 0)  # the probe is for whoever comes first after it
            return None
        return Reservation(reservation.id, reservation.tokens, probe=status == 5)

    def start(self, reservation: Reservation) -> None:
        """Log this call's start, waiting a moment more if a late wake-up would bunch it with others."""
        while wait_ms := self.try_start(reservation):
            time.sleep(wait_ms / 1000)

    def try_start(self, reservation: Reservation) -> int:
        """Log this call's start now (0), or say how many milliseconds to wait before trying again: for an
        event loop, which must not sleep in a call, to start the call the moment before it sends it.
        Raises :class:`ProviderBusy` when credits ran out since the call was granted (it is not the probe)."""
        wait_ms = int(self._confirm(keys=[self.keys.starts, self.credits.keys.retry, self.credits.keys.probe],
                                    args=[self.calls_per_second, self.window_ms_rps, reservation.id]))
        if wait_ms < 0:
            self.settle(reservation, 0)
            raise ProviderBusy(min(-wait_ms, self.max_wait_ms) / 1000, credits.ACTION)
        return wait_ms

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace a reservation's estimate by the tokens the call really used (0 for a refused call)."""
        if self.tokens_per_minute and tokens != reservation.tokens:
            self._settle(keys=[self.keys.tokens_amount, self.keys.tokens_total], args=[reservation.id, max(0, int(tokens))])

    def pause(self, seconds: float, reason: str = "rate limited by Grok (429)") -> None:
        """Stop every process's calls for ``seconds`` from now (a longer pause already set stands)."""
        self._pause(keys=[self.keys.pause], args=[max(1, int(seconds * 1000))])
        self.client.set(self.keys.pause_reason, reason, px=max(1, int(seconds * 1000)))

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.pause)
        pipe.time()
        until_ms, (seconds, micros) = pipe.execute()
        return max(0.0, (int(until_ms or 0) - (seconds * 1000 + micros // 1000)) / 1000)

    def report_misconfiguration(self, reason: str, seconds: float) -> None:
        self.client.set(self.keys.misconfigured, reason, px=int(seconds * 1000))

    def state(self) -> GrokState:
        """Whether calls may go now, and if not why and for how long (for readiness, stats and metrics):
        one round trip to Redis, as every batch asks."""
        pipe = self.client.pipeline(transaction=False)
        for command, key in (("get", self.keys.misconfigured), ("pttl", self.keys.misconfigured), ("get", self.keys.pause),
                             ("get", self.keys.pause_reason)):
            getattr(pipe, command)(key)
        self.credits.read(pipe)
        pipe.time()
        reason, ttl_ms, until_ms, why, spent, retry, probe_ttl_ms, (seconds, micros) = pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        if reason:
            return GrokState("misconfigured", reason.decode(), max(0.0, ttl_ms / 1000))
        if spent:
            return GrokState("credits_exhausted", spent.decode(), self.credits.seconds_left(retry, probe_ttl_ms, now_ms))
        paused = max(0.0, (int(until_ms or 0) - now_ms) / 1000)
        if paused > 0:
            return GrokState("paused", why.decode() if why else "paused", paused)
        return GrokState("available", None, 0.0)

    def misconfiguration(self) -> str | None:
        """Why Grok cannot be used right now (bad key, unknown model...), or ``None``."""
        reason = self.client.get(self.keys.misconfigured)
        return reason.decode() if reason else None
