"""What a webhook may call, and how often, in process: the address rules at registration, the transport that
re-checks every connection (against a real server on loopback), the pace shared in Redis, the retry schedule."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis
from support import wait_until
from support.databases import IN_PROCESS_REDIS_DB, redis_url

from actors.calls import CallEngine, Job
from settings import load_settings
from webhooks import transport
from webhooks.addresses import RefusedUrl, check_url, refusal
from webhooks.pacing import Pacing
from webhooks.retries import next_delay


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
     "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_addresses_inside_are_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_not(address):
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://hooks.example.com/in", "must be https"),
        ("ftp://hooks.example.com/in", "must be https"),
        ("https://user:pw@hooks.example.com/in", "credentials"),
        ("https:///in", "no host"),
        ("https://10.0.0.7/in", "10.0.0.7 is a private address"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://localhost:8443/in", "127.0.0.1 is a loopback address"),
        ("https://[::1]/in", "::1 is a loopback address"),
        ("https://hooks.example.com:99999/in", "does not parse"),
        ("https://no-such-host.invalid/in", "does not resolve"),
        ("https://x.example.com/" + "a" * 3000, "longer than"),
    ],
)
def test_a_url_is_refused_at_registration_with_why(url, said):
    with pytest.raises(RefusedUrl, match=said.replace("[", r"\[").replace(".", r"\.")):
        check_url(url, frozenset())


def test_an_allowed_host_may_use_http_and_any_address():
    check_url("http://localhost:8080/in", frozenset({"localhost"}))
    check_url("https://10.0.0.7/in", frozenset({"10.0.0.7"}))
    with pytest.raises(RefusedUrl, match="must be https"):
        check_url("http://localhost:8080/in", frozenset({"127.0.0.1"}))  # the name in the URL is what counts


@pytest.fixture
def loopback_server():
    """A plain HTTP server on loopback answering 200 to any POST, in a thread of this process."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def post(port: int, host: str, allowed: frozenset[str]) -> int | str:
    async def send() -> int | str:
        async with transport.make_client(allowed, transport.ssl_context(), timeout=5, connections=2) as client:
            try:
                return (await client.post(f"http://{host}:{port}/in", content="{}")).status_code
            except httpx.ConnectError as error:
                return str(error)

    return asyncio.run(send())


def test_every_connection_is_checked_again_where_it_is_made(loopback_server):
    """The URL passed registration once (say, while its name resolved outside): the connection itself is
    refused, whatever the name resolves to now."""
    assert post(loopback_server, "localhost", frozenset()) == (
        "localhost resolves to 127.0.0.1 is a loopback address; only public addresses may receive webhooks"
    )
    assert "127.0.0.1 is a loopback address" in str(post(loopback_server, "127.0.0.1", frozenset()))
    assert post(loopback_server, "localhost", frozenset({"localhost"})) == 200


def test_no_proxy_from_the_environment_is_used(loopback_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    assert post(loopback_server, "localhost", frozenset({"localhost"})) == 200


def test_an_engine_whose_loop_runs_late_takes_nothing_until_it_caught_up():
    """Room in the engine is not enough: while its loop is behind (here a call holding it, as CPU-bound work
    would), a request would wait its turn there, so it is refused after the wait given, and taken again
    once the loop runs on time."""
    engine = CallEngine(None, 0.0, httpx.AsyncClient, capacity=100, http_clients=1, max_lag=0.1)
    engine.start()

    async def hog(_client):
        time.sleep(0.6)  # holds the loop, as a loop behind with thousands of requests would

    async def quick(_client):
        return 200

    done = []
    try:
        assert engine.submit(Job(send=hog, finish=done.append, give_back=lambda: None, crashed=print), wait=0.1)
        time.sleep(0.2)
        assert engine.behind > 0.1
        assert not engine.submit(Job(send=quick, finish=done.append, give_back=lambda: None, crashed=print), wait=0.1)
        assert engine.submit(Job(send=quick, finish=done.append, give_back=lambda: None, crashed=print), wait=2)
        assert wait_until(lambda: len(done) == 2, timeout=5, message="both calls finished")
        assert engine.behind < 0.1
    finally:
        engine.stop(grace=5)


def test_a_finish_that_raises_is_handed_to_its_job_and_the_engine_goes_on(caplog):
    """A call was made, then finishing it raised: the job's ``crashed`` gets the error (the call counts, unlike
    one cancelled at shutdown, which is given back); should that raise too, it is said, and calls go on."""
    engine = CallEngine(None, 0.0, httpx.AsyncClient, capacity=2, http_clients=1)
    engine.start()
    handed, given_back, finished = [], [], []

    async def answer(_client):
        return "an answer"

    def faulty(outcome):
        raise RuntimeError(f"finishing {outcome!r} failed")

    def crashed_too(error):
        handed.append(error)
        raise OSError("the database is away")

    try:
        assert engine.submit(
            Job(send=answer, finish=faulty, give_back=lambda: given_back.append(1), crashed=handed.append)
        )
        assert engine.submit(
            Job(send=answer, finish=faulty, give_back=lambda: given_back.append(2), crashed=crashed_too)
        )
        wait_until(lambda: len(handed) == 2 and engine.in_flight == 0, timeout=5, message="both crashes handed on")
        assert engine.submit(Job(send=answer, finish=finished.append, give_back=lambda: None, crashed=handed.append))
        wait_until(lambda: finished, timeout=5, message="the next call finished")
        assert {repr(error) for error in handed} == {"RuntimeError(\"finishing 'an answer' failed\")"}
        assert finished == ["an answer"] and given_back == []
        assert "a call's finish failed, and so did handing its batch on" in caplog.text
    finally:
        engine.stop(grace=5)


def test_the_pace_is_shared_by_every_process_through_redis():
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    first, second = Pacing(client, 50, "test"), Pacing(client, 50, "test")
    started = time.monotonic()
    waits = [pacing.reserve("wh_1") for _ in range(5) for pacing in (first, second)]
    booked = first.booked_ms("wh_1")
    elapsed_ms = (time.monotonic() - started) * 1000  # each answer is from its own moment
    assert waits[0] == 0
    assert 9 * 20 - elapsed_ms - 2 <= waits[-1] <= 9 * 20 + 1, "ten requests 20 ms apart, whoever books them"
    assert 200 - elapsed_ms - 2 <= booked <= 200
    assert first.booked_ms("wh_other") == 0 and first.reserve("wh_other") == 0, "each subscription its own pace"


def test_the_last_word_is_a_sliding_log_of_requests_sent_shared_by_every_process():
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    first, second = Pacing(client, 3, "test", margin_ms=30), Pacing(client, 3, "test", margin_ms=30)
    assert first.interval_ms == pytest.approx(1030 / 3)
    started = time.monotonic()
    assert [first.confirm("wh_1"), second.confirm("wh_1"), first.confirm("wh_1")] == [0, 0, 0]
    wait = second.confirm("wh_1")
    elapsed_ms = (time.monotonic() - started) * 1000
    assert 1031 - elapsed_ms - 2 <= wait <= 1031, "the fourth waits until the first leaves the second and margin"
    assert first.confirm("wh_2") == 0, "each subscription its own log"
    time.sleep(wait / 1000)
    assert second.confirm("wh_1") == 0


def test_a_held_subscription_sends_nothing_and_books_nothing_until_its_hold_ends():
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    first, second = Pacing(client, 50, "test"), Pacing(client, 50, "test")
    assert first.reserve("wh_1") == 0
    held_at = time.monotonic()
    second.hold("wh_1", 2.0)
    left = lambda: 2000 - (time.monotonic() - held_at) * 1000 - 2  # noqa: E731  (the least left, asked after)
    waits = [first.confirm("wh_1"), first.reserve("wh_1"), first.booked_ms("wh_1")]
    assert left() <= min(waits) and max(waits) <= 2000 + 20, "a request booked waits for its end, none is booked before"
    second.hold("wh_1", 0.5)
    assert first.confirm("wh_1") >= left(), "a shorter hold does not shorten a longer one"
    assert first.confirm("wh_2") == 0 and first.reserve("wh_2") == 0, "each subscription its own hold"


def test_the_default_schedule_retries_for_over_a_day_with_jitter():
    schedule = load_settings({}).webhook_retry_schedule
    rng = random.Random(1)
    delays = [next_delay(attempt, schedule, rng) for attempt in range(1, len(schedule) + 1)]
    assert sum(delays) > 24 * 3600 and len(delays) == 7
    assert all(0.9 * base <= delay <= 1.1 * base for delay, base in zip(delays, schedule, strict=True))
    assert next_delay(len(schedule) + 1, schedule, rng) is None


def test_a_full_engine_refuses_at_once_rather_than_hold_the_thread():
    """``deliver_webhook`` asks the engine without waiting: a Dramatiq thread is never held by receivers."""
    release = threading.Event()
    engine = CallEngine(None, 0.0, httpx.AsyncClient, capacity=1, http_clients=1)
    engine.start()

    async def hang(_client):
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    job = Job(send=hang, finish=lambda _outcome: None, give_back=lambda: None, crashed=print)
    try:
        assert engine.submit(job, wait=0.1)
        assert not engine.submit(job, wait=0.1), "full: refused after the wait given"
        release.set()
        assert wait_until(lambda: engine.submit(job, wait=0.1), timeout=5, message="room again")
    finally:
        release.set()
        engine.stop(grace=5)
