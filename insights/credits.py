"""Exhausted credits: the outbound gate's hold when xAI says the team's credits or spending limit are used up.

No wait cures it: a person must purchase credits or raise the spending limit. So every process leaves
Grok alone, and the gate lets **one probe call** through each pause to find out whether credits are back:

- a call refused for credits (:func:`insights.refusals.credits_exhausted`) holds the gate: the reason is
  kept, and no call may start before ``retry`` (now + the pause); if it was the probe, the probe ends;
- once ``retry`` has passed, the gate's reservation script grants the next call as the probe (its
  reservation id under ``probe``, for as long as a call may take) and refuses every other call while it
  is out;
- the probe answered by anything but the credits refusal: credits are back, the hold is lifted;
  the probe ended without an answer (nothing sent, no reply): the next probe waits another pause.

A call that was already in flight when credits ran out and is refused later extends the pause but never
ends another call's probe, so at most one call a pause reaches xAI. Neither key expires with the pause:
readiness, ``insights stats`` and ``insights_grok_state`` name the hold until a probe lifts it (or a day
passes without one, should no work come).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

ACTION = "credits exhausted: purchase credits or raise the spending limit at console.x.ai"
MEMORY_MS = 24 * 3600 * 1000  # a hold no probe has tested is forgotten after a day


@dataclass(frozen=True)
class CreditsKeys:
    reason: str  # why (ACTION and xAI's words)
    retry: str  # no call before this (ms, Redis's clock)
    probe: str  # the reservation id of the probe under way


# KEYS: reason, retry, probe.  ARGV: reason, pause ms, the refused call's reservation id, memory ms.
# Holds every call for the pause from now (a later retry already set stands); ends the probe if it was it.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retry = math.max(now + tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('SET', KEYS[2], retry, 'PX', ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
return retry - now
"""

# KEYS: reason, retry, probe.  ARGV: reservation id, pause ms (-1: credits are back), memory ms.
# Ends this probe: lifts the hold (-1), or holds the next probe off for the pause (0: none).
_END_PROBE = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) < 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
redis.call('DEL', KEYS[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[2], now + tonumber(ARGV[2]), 'PX', ARGV[3]) end
return 1
"""

# The reservation script's first step (``insights.outbound``), with KEYS[6] retry, KEYS[7] probe,
# ARGV[6] the reservation id; sets ``probe`` to 1 when the call, if granted, is the probe.
# Status 4: held for credits, ask again in the wait returned (until the next probe; a second while another
# call probes: ``actors.outcomes.grok_hold`` then sets the batch aside for at most a pause).
RESERVE_STEP = """
local probe = 0
local retry = redis.call('GET', KEYS[6])
if retry then
  if tonumber(retry) > now then return {math.ceil(tonumber(retry) - now), 4} end
  local holder = redis.call('GET', KEYS[7])
  if holder and holder ~= ARGV[6] then return {1000, 4} end
  probe = 1
end
"""

# On a granted reservation: the probe's lease, from its start (ARGV[7]: the lease in ms).
RESERVE_PROBE = """
if probe == 1 then redis.call('SET', KEYS[7], ARGV[6], 'PX', math.ceil(start - now) + tonumber(ARGV[7])) end
"""

# The start script's first step (``insights.outbound``), with KEYS[2] retry, KEYS[3] probe, ARGV[3] the
# reservation id: under a hold, no call but the probe starts (one granted before the hold is turned back,
# with minus the milliseconds until the next probe may go).
CONFIRM_STEP = """
local held = redis.call('GET', KEYS[2])
if held and redis.call('GET', KEYS[3]) ~= ARGV[3] then return -math.max(1, tonumber(held) - now) end
"""

# KEYS: reason, retry, probe.  ARGV: caller's id, lease ms.  For a caller outside the gate's reservations
# (the Batch API): 1 when it may call (no hold, or it is now the probe); held, the reservation step's
# {wait ms, 4}.
_TAKE_PROBE = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
    + RESERVE_STEP.replace("KEYS[6]", "KEYS[2]").replace("KEYS[7]", "KEYS[3]").replace("ARGV[6]", "ARGV[1]")
    + """
if probe == 1 then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
)


class CreditsHold:
    """The hold's keys and scripts in Redis, shared by every process of a deployment."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = CreditsKeys(*(f"{namespace}:grok:credits-{name}" for name in ("reason", "retry-ms", "probe")))
        self._hold = client.register_script(_HOLD)
        self._end = client.register_script(_END_PROBE)
        self._take = client.register_script(_TAKE_PROBE)

    @property
    def key_list(self) -> list[str]:
        return [self.keys.reason, self.keys.retry, self.keys.probe]

    def hold(self, reason: str, seconds: float, reservation_id: str) -> None:
        """Credits are spent (a call, ``reservation_id``, was refused for it): no call for ``seconds``."""
        self._hold(keys=self.key_list, args=[reason, max(1, int(seconds * 1000)), reservation_id, MEMORY_MS])

    def may_call(self, caller_id: str, lease: float) -> bool:
        """For a call outside the gate's reservations (the Batch API): may it go now? Under a hold, only as
        the probe, for ``lease`` seconds at most; the caller then ends the probe (:meth:`restored`,
        :meth:`release`, or :meth:`hold` if refused for credits again)."""
        return self._take(keys=self.key_list, args=[caller_id, max(1, int(lease * 1000))]) == 1

    def restored(self, reservation_id: str) -> None:
        """The probe ``reservation_id`` had an answer that was not the credits refusal: lift the hold."""
        self._end(keys=self.key_list, args=[reservation_id, -1, MEMORY_MS])

    def release(self, reservation_id: str, seconds: float) -> None:
        """The probe ended without telling (never sent, no answer): the next one in ``seconds`` (0: now)."""
        self._end(keys=self.key_list, args=[reservation_id, max(0, int(seconds * 1000)), MEMORY_MS])

    def read(self, pipe: redis.client.Pipeline) -> None:
        """Queue the reads :meth:`seconds_left` needs on ``pipe`` (reason, retry, the probe's time to live)."""
        pipe.get(self.keys.reason)
        pipe.get(self.keys.retry)
        pipe.pttl(self.keys.probe)

    @staticmethod
    def seconds_left(retry: bytes | None, probe_ttl_ms: int, now_ms: int) -> float:
        """Until the next probe may go, or the one under way must have ended."""
        return max(0, int(retry or 0) - now_ms, probe_ttl_ms) / 1000
