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

from insights import credits, gate_scripts
from insights.errors import OverBudget, ProviderBusy

TOKEN_POLL_SECONDS = 1.0  # a call waiting for tokens asks again this often (settled calls free some early)
TOKEN_WINDOW_MS = 60_000


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

    def __init__(
        self,
        client: redis.Redis,
        calls_per_second: int,
        tokens_per_minute: int | None = None,
        max_wait: float = 60.0,
        margin_ms: int = 30,
        window_ms: int = TOKEN_WINDOW_MS,
        namespace: str = "insights",
        loop_client: redis.Redis | None = None,
    ) -> None:
        """``loop_client``: the client :meth:`try_start` uses, called from an event loop (no retries, short
        timeouts: a Redis away must not hold the loop); ``client`` by default."""
        self.client = client
        self.loop_client = loop_client or client
        self.keys = gate_scripts.GateKeys.under(namespace)
        self.calls_per_second = calls_per_second
        self.tokens_per_minute = tokens_per_minute or 0
        self.window_ms_rps = 1000 + margin_ms
        self.interval_ms = self.window_ms_rps / calls_per_second
        self.max_wait_ms = int(max_wait * 1000)
        self.window_ms = window_ms
        self._reserve = client.register_script(gate_scripts.RESERVE)
        self._pause = client.register_script(gate_scripts.PAUSE)
        self._confirm = client.register_script(gate_scripts.CONFIRM)
        self._settle = client.register_script(gate_scripts.SETTLE)
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
            keys=[
                self.keys.next_start,
                self.keys.tokens_log,
                self.keys.tokens_amount,
                self.keys.tokens_total,
                self.keys.pause,
                self.credits.keys.retry,
                self.credits.keys.probe,
            ],
            args=[
                self.interval_ms,
                self.tokens_per_minute,
                reservation.tokens,
                self.window_ms,
                self.max_wait_ms,
                reservation.id,
                int(probe_lease * 1000),
            ],
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
        wait_ms = int(
            self._confirm(
                keys=[self.keys.starts, self.credits.keys.retry, self.credits.keys.probe],
                args=[self.calls_per_second, self.window_ms_rps, reservation.id],
                client=self.loop_client,
            )
        )
        if wait_ms < 0:
            self.settle(reservation, 0)
            raise ProviderBusy(min(-wait_ms, self.max_wait_ms) / 1000, credits.ACTION)
        return wait_ms

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace a reservation's estimate by the tokens the call really used (0 for a refused call)."""
        if self.tokens_per_minute and tokens != reservation.tokens:
            self._settle(
                keys=[self.keys.tokens_amount, self.keys.tokens_total], args=[reservation.id, max(0, int(tokens))]
            )

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
        for command, key in (
            ("get", self.keys.misconfigured),
            ("pttl", self.keys.misconfigured),
            ("get", self.keys.pause),
            ("get", self.keys.pause_reason),
        ):
            getattr(pipe, command)(key)
        self.credits.read(pipe)
        pipe.time()
        reason, ttl_ms, until_ms, why, spent, retry, probe_ttl_ms, (seconds, micros) = pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        if reason:
            return GrokState("misconfigured", reason.decode(), max(0.0, ttl_ms / 1000))
        if spent:
            return GrokState(
                "credits_exhausted", spent.decode(), self.credits.seconds_left(retry, probe_ttl_ms, now_ms)
            )
        paused = max(0.0, (int(until_ms or 0) - now_ms) / 1000)
        if paused > 0:
            return GrokState("paused", why.decode() if why else "paused", paused)
        return GrokState("available", None, 0.0)

    def misconfiguration(self) -> str | None:
        """Why Grok cannot be used right now (bad key, unknown model...), or ``None``."""
        reason = self.client.get(self.keys.misconfigured)
        return reason.decode() if reason else None
