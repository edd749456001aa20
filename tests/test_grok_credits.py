"""Exhausted credits (issue 22, point 6): told by their words in every body shape and at 429 or 403, they
hold every call but one probe a pause, spend no attempt, fail nothing, are named where operators look, and
everything completes once credits are back. The real client and gate against the emulator, then the real
processes."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import redis
from support import free_port, wait_until
from support.cli import insights
from support.databases import IN_PROCESS_REDIS_DB, redis_url
from support.grok import GROK_KEY, batch, make_client
from support.traffic import BULK, FAST_RETRIES, post_all, post_bulk

from insights.credits import ACTION
from insights.errors import CreditsExhausted, ProviderBusy, RateLimited, RequestRefused, TransientError
from insights.outbound import OutboundGate

pytestmark = pytest.mark.timeout(180)
SHAPES = ("string", "error", "code")
SPENT = "has either used all available credits or reached its monthly spending limit"


@pytest.fixture
def gate() -> OutboundGate:
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    return OutboundGate(client, calls_per_second=50)


def refusals(grok) -> list[dict]:
    return [entry for entry in grok.log() if entry["refused"] == "credits"]


@pytest.mark.parametrize("status", [429, 403])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_emulator_answers_exhausted_credits_in_each_shape(grok, shape, status):
    grok.configure(credits=shape, credits_status=status)
    answer = httpx.post(
        f"{grok.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {GROK_KEY}"},
        json={"model": "grok-4.3", "messages": []},
    )
    body = answer.json()
    assert answer.status_code == status and "Retry-After" not in answer.headers
    message = {"string": lambda: body, "error": lambda: body["error"], "code": lambda: body["error"]}[shape]()
    assert SPENT in message and "purchase more credits" in message
    assert (
        isinstance(body, str)
        if shape == "string"
        else set(body) == ({"error"} if shape == "error" else {"code", "error"})
    )


def test_the_emulators_batch_api_refuses_a_team_out_of_credits_too(grok):
    grok.configure(credits="string", credits_status=403)
    answer = httpx.post(f"{grok.base_url}/batches", headers={"Authorization": f"Bearer {GROK_KEY}"}, json={"name": "b"})
    assert answer.status_code == 403 and SPENT in answer.json()
    grok.configure(credits="")
    assert (
        httpx.post(
            f"{grok.base_url}/batches", headers={"Authorization": f"Bearer {GROK_KEY}"}, json={"name": "b"}
        ).status_code
        == 200
    )


def test_the_emulator_refuses_an_unknown_shape_and_keeps_credits(grok):
    assert grok.control.post("/config", json={"credits": "bankrupt"}).status_code == 400
    assert grok.control.post("/config", json={}).json()["credits"] == ""


@pytest.mark.parametrize("status", [429, 403])
@pytest.mark.parametrize("shape", SHAPES)
def test_exhausted_credits_are_told_by_their_words_whatever_the_shape_and_status(grok, gate, shape, status):
    grok.configure(credits=shape, credits_status=status)
    with pytest.raises(CreditsExhausted) as error:
        make_client(grok, gate).analyze(batch("hi"))
    reason = str(error.value)
    assert reason.startswith(ACTION) and f"Grok {status}" in reason and SPENT in reason
    assert GROK_KEY[:8] not in reason
    state = gate.state()
    assert (state.state, state.reason) == ("credits_exhausted", reason) and state.seconds_left > 0
    assert gate.paused_for() == 0, "not a 429's pause: no wait cures it"
    assert [entry["status"] for entry in refusals(grok)] == [status]


def test_other_429s_and_403s_are_not_about_credits(grok, gate):
    with pytest.raises(RequestRefused):
        make_client(grok, gate).analyze(batch("REFUSE this one"))
    grok.inject({"status": 429, "retry_after": "1"})
    with pytest.raises(RateLimited):
        make_client(grok, gate).analyze(batch("hi"))
    assert gate.state().state == "paused"


def test_one_probe_a_pause_until_credits_are_back(grok, gate):
    client = make_client(grok, gate, GROK_CREDITS_PAUSE_SECONDS="5", GROK_READ_TIMEOUT_SECONDS="30")
    grok.configure(credits="code", credits_status=403)
    with pytest.raises(CreditsExhausted):
        client.analyze(batch("first"))
    assert_held(client, grok, calls=1)

    wait_for_the_probe(gate)
    with pytest.raises(CreditsExhausted):
        client.analyze(batch("the probe, refused again"))
    assert_held(client, grok, calls=2)

    grok.configure(credits="")
    grok.inject({"delay": 3})  # the next probe takes a while: nobody else goes meanwhile
    wait_for_the_probe(gate)
    outcome: list = []
    probe = threading.Thread(target=lambda: outcome.append(client.analyze(batch("the probe, answered"))))
    probe.start()
    wait_until(lambda: gate.client.exists(gate.credits.keys.probe), message="the probe to be out")
    with pytest.raises(ProviderBusy, match="credits exhausted"):
        client.analyze(batch("not while the probe is out"))
    probe.join()
    assert outcome[0].rows and gate.state().state == "available", "credits are back: the hold is lifted"
    assert client.analyze(batch("and everyone goes")).rows
    assert [entry["refused"] for entry in grok.log()] == ["credits", "credits", None, None]


def test_a_probe_without_an_answer_holds_the_next_for_a_pause(grok, gate):
    env = {"GROK_CREDITS_PAUSE_SECONDS": "5"}
    client = make_client(grok, gate, **env)
    grok.configure(credits="error", credits_status=429)
    with pytest.raises(CreditsExhausted):
        client.analyze(batch("first"))
    wait_for_the_probe(gate)
    nowhere = make_client(grok, gate, **env, GROK_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(TransientError):
        nowhere.analyze(batch("the probe, unanswered"))
    assert_held(client, grok, calls=1)


def test_a_call_granted_before_credits_ran_out_does_not_start(grok, gate):
    granted = gate.reserve(10)
    grok.configure(credits="string", credits_status=429)
    with pytest.raises(CreditsExhausted):
        make_client(grok, gate).analyze(batch("first"))
    with pytest.raises(ProviderBusy, match="credits exhausted"):
        gate.try_start(granted)


def assert_held(client, grok, calls: int) -> None:
    """Within the pause: credits are named, and a call is set aside without reaching xAI."""
    state = client.gate.state()
    assert state.state == "credits_exhausted" and state.seconds_left > 0
    with pytest.raises(ProviderBusy, match="credits exhausted"):
        client.analyze(batch("held"))
    assert len(grok.log()) == calls


def wait_for_the_probe(gate: OutboundGate) -> None:
    """Until the pause is over (credits still named): the next call may probe."""
    wait_until(
        lambda: (s := gate.state()).state == "credits_exhausted" and s.seconds_left == 0,
        timeout=20,
        message="the pause to end",
    )


def test_credits_running_out_mid_backlog_pause_everything_and_fail_nothing(make_stack, grok, database_env):
    pause = 2.0
    grok.configure(latency=0.2)
    stack = make_stack(
        BATCH_SIZE=2,
        OUTBOUND_RPS=2,
        MAX_RETRIES=2,
        GROK_CREDITS_PAUSE_SECONDS=pause,
        **FAST_RETRIES,
        **grok.env,
        **database_env,
    )
    client = stack.start_web()
    ids = post_all(client, [f"My order {n} is late, where is it?" for n in range(40)])
    stack.start_worker()
    wait_until(
        lambda: sum(d["status"] == "completed" for d in stack.conversations(client, ids)) >= 4,
        timeout=60,
        message="part of the backlog to complete",
    )

    grok.configure(credits="code", credits_status=403)
    assert_named(stack, client)
    wait_until(lambda: len(refusals(grok)) >= 3, timeout=60, message="two probes after the first refusal")
    documents = stack.conversations(client, ids)
    assert {(d["status"], d["attempts"]) for d in documents} <= {("completed", 1), ("queued", 0), ("processing", 1)}
    assert any("credits exhausted" in (d["last_error"] or "") for d in documents if d["status"] == "queued")
    times = sorted(entry["t"] for entry in refusals(grok))
    assert len(times) <= 2 + (times[-1] - times[0]) / pause, f"one call a pause (and one in flight): {times}"

    grok.configure(credits="")
    documents = stack.settled(client, ids, timeout=90)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}
    assert client.get("/readyz").json()["grok"]["state"] == "available"


def assert_named(stack, client) -> None:
    """``/readyz`` (still 200), the metric and ``insights stats`` name exhausted credits and what to do."""
    ready = wait_until(
        lambda: (r := client.get("/readyz")).json()["grok"]["state"] == "credits_exhausted" and r,
        timeout=30,
        message="/readyz to name exhausted credits",
    )
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["grok"]["reason"].startswith(ACTION) and SPENT in ready.json()["grok"]["reason"]
    assert GROK_KEY[:8] not in ready.text
    metrics = client.get("/metrics").text
    assert 'insights_grok_state{state="credits_exhausted"} 1.0' in metrics
    assert 'insights_grok_state{state="available"} 0.0' in metrics
    assert any(
        line.startswith("# HELP insights_grok_state") and "purchase credits or raise the spending limit" in line
        for line in metrics.splitlines()
    )
    stats = insights(stack, "stats")
    assert "grok: credits_exhausted" in stats.stdout and ACTION in stats.stdout, stats.stdout + stats.stderr
    assert json.loads(insights(stack, "stats", "--json").stdout)["grok"]["state"] == "credits_exhausted"


def test_a_caller_outside_the_gate_goes_only_as_the_probe(grok, gate):
    """The Batch API's calls take no place in the gate; under a hold they go only as its probe."""
    assert gate.credits.may_call("bulk-1", 30), "no hold: anyone may call"
    grok.configure(credits="code", credits_status=403)
    with pytest.raises(CreditsExhausted):
        make_client(grok, gate, GROK_CREDITS_PAUSE_SECONDS="5").analyze(batch("first"))
    assert not gate.credits.may_call("bulk-1", 30)
    wait_for_the_probe(gate)
    assert gate.credits.may_call("bulk-1", 30) and not gate.credits.may_call("bulk-2", 30)
    gate.credits.restored("bulk-1")
    assert gate.state().state == "available"


@pytest.mark.parametrize("status", [429, 403])
def test_the_bulk_lane_out_of_credits_probes_once_a_pause_and_completes_when_they_return(make_stack, grok, status):
    """The Batch API refuses for credits: not a refused key, nor a 429 to retry at every poll: both lanes
    hold, the bulk lane calls xAI only as the probe of each pause, and everything completes once credits
    return, no attempt spent."""

    pause = 2.0
    grok.configure(credits="string", credits_status=status, batch_delay=0.2)
    stack = make_stack(**BULK, GROK_CREDITS_PAUSE_SECONDS=pause, GROK_AUTH_PAUSE_SECONDS=600, **grok.env)
    client = stack.start_web()
    ids = post_bulk(client, [f"Invoice {n} was charged twice" for n in range(12)])
    stack.start_worker()
    ready = wait_until(
        lambda: (r := client.get("/readyz").json())["grok"]["state"] == "credits_exhausted" and r,
        timeout=30,
        message="the Batch API's refusal to hold both lanes for credits",
    )
    assert ready["grok"]["reason"].startswith(ACTION)
    wait_until(
        lambda: len(grok.control.get("/batches").json()["out_of_credits"]) >= 3,
        timeout=60,
        message="two probes after the first refusal",
    )
    times = grok.control.get("/batches").json()["out_of_credits"]
    assert len(times) <= 2 + (times[-1] - times[0]) / pause, f"one call a pause, not one a poll: {times}"

    grok.configure(credits="")
    documents = stack.settled(client, ids, timeout=90)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}
    assert client.get("/readyz").json()["grok"]["state"] == "available"
