"""The outbound gate on real Redis: request spacing, the token budget, pauses, and when it says no.

Several ``OutboundGate`` objects on their own connections stand for several worker processes (the
cross-process case with real workers is in test_grok_flow.py). Times are the gate's own start times as
the callers saw them; the checks are about order and budget, with a generous allowance for a noisy
machine, never about speed."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from support.databases import IN_PROCESS_REDIS_DB, redis_url
from support.grok import max_calls_in_any_window

from insights.errors import OverBudget, ProviderBusy
from insights.outbound import OutboundGate


def gates(count: int, **options) -> list[OutboundGate]:
    redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB)).flushdb()
    return [OutboundGate(redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB)), **options) for _ in range(count)]


def run_callers(gate_list: list[OutboundGate], calls: int, tokens: int = 0) -> list[tuple[float, int]]:
    """``calls`` threads spread over the gates each acquire once; return (start time, tokens) of each."""
    starts: list[tuple[float, int]] = []
    lock = threading.Lock()

    def call(n: int) -> None:
        gate_list[n % len(gate_list)].acquire(tokens)
        with lock:
            starts.append((time.monotonic(), tokens))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(starts)


def test_calls_are_spaced_so_no_second_holds_more_than_the_limit():
    """Seen by the callers' clock, after the gate let them go: the margin covers this busy machine's threads
    waking late (tens of milliseconds at times), as the default covers the way to the server."""
    starts = [t for t, _ in run_callers(gates(3, calls_per_second=20, margin_ms=150), calls=60)]
    assert max_calls_in_any_window(starts, 1.0) <= 20
    assert starts[-1] - starts[0] >= 59 * (1.15 / 20) * 0.9, "one reservation after the other, not a burst"


def test_the_token_budget_holds_in_every_window_and_is_used():
    window = 2.0
    starts = run_callers(
        gates(2, calls_per_second=1000, tokens_per_minute=1000, window_ms=int(window * 1000)), calls=30, tokens=100
    )
    times = [t for t, _ in starts]
    assert max_calls_in_any_window(times, window * 0.95) <= 10, "at most 1,000 tokens' worth in any window"
    assert times[-1] - times[0] < 3 * window * 1.5, "30 calls of 100 need three windows, not more"


def test_a_call_over_the_whole_budget_is_refused_at_once():
    [gate] = gates(1, calls_per_second=10, tokens_per_minute=1000)
    with pytest.raises(OverBudget):
        gate.acquire(1001)
    gate.acquire(1000)


def test_a_wait_beyond_max_wait_is_handed_back_without_a_reservation():
    first, second = gates(2, calls_per_second=10, max_wait=1.0)
    first.pause(30)
    with pytest.raises(ProviderBusy) as busy:
        second.acquire()
    assert 25 < busy.value.retry_after <= 30
    first.client.delete(first.keys.pause)
    began = time.monotonic()
    second.acquire()
    assert time.monotonic() - began < 1.0, "the refused call reserved nothing"


def test_settling_with_the_real_usage_frees_the_rest_of_the_estimate():
    [gate] = gates(1, calls_per_second=1000, tokens_per_minute=1000, window_ms=60_000, max_wait=5)
    reservation = gate.acquire(900)
    with pytest.raises(ProviderBusy):
        gate.acquire(200)
    gate.settle(reservation, 300)
    gate.acquire(600)


def test_gates_of_different_namespaces_on_one_redis_database_share_nothing():
    """Two deployments sharing a Redis database: a pause, a misconfiguration or a spent budget of the one
    does not hold up the other."""
    redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB)).flushdb()
    ours, theirs = (
        OutboundGate(
            redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB)),
            calls_per_second=10,
            tokens_per_minute=1000,
            namespace=name,
            max_wait=1.0,
        )
        for name in ("ns-a", "ns-b")
    )
    theirs.acquire(1000)  # its whole token budget for the minute
    theirs.pause(30)
    theirs.report_misconfiguration("401 from Grok", 30)
    assert ours.state().state == "available" and ours.paused_for() == 0
    ours.acquire(1000)  # shared keys would make this ProviderBusy: paused, and no tokens left
    assert theirs.state().state == "misconfigured"
    keys = {k.decode() for k in ours.client.scan_iter()}
    assert keys and all(k.startswith(("ns-a:grok:", "ns-b:grok:")) for k in keys), keys
