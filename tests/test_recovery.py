"""Redis is transport, the database the record: losing Redis's contents or a cutter loses no conversation."""

from __future__ import annotations

import json
import threading

import httpx
import redis
from support.cli import insights
from support.databases import IN_PROCESS_REDIS_DB, fresh_redis_url_through, redis_address, redis_url
from support.proxy import TcpProxy
from support.traffic import conversation

from local.embedded_redis import EmbeddedRedis


def test_a_redis_wipe_loses_no_accepted_conversation(make_stack):
    stack = make_stack(REQUEUE_SECONDS=1, RECONCILE_INTERVAL_SECONDS=0.5, BATCH_FLUSH_SECONDS=0.5)
    client = stack.start_web()
    ids = [
        client.post("/api/v1/conversations", json=conversation(f"lost message {n}")).json()["conversation_id"]
        for n in range(7)
    ]
    assert stack.redis.hlen("insights:collect.msgs") == 7
    stack.redis.flushdb()  # every message gone before any worker saw it

    stack.start_worker()
    assert {d["status"] for d in stack.settled(client, ids, timeout=30)} == {"completed"}


def test_a_web_killed_between_commit_and_send_loses_nothing(make_stack):
    """The web commits a conversation and dies before its Dramatiq message reaches Redis (a proxy holds the
    message's bytes until the process is killed). The client sees no answer and resends: a duplicate,
    which enqueues nothing. The reconciler still hands it to the workers."""
    proxy = TcpProxy(redis_address())
    try:
        stack = make_stack(
            REDIS_URL=fresh_redis_url_through(proxy.port),
            REQUEUE_SECONDS=1,
            RECONCILE_INTERVAL_SECONDS=0.5,
            BATCH_FLUSH_SECONDS=0.5,
        )
        client = stack.start_web()
        web = stack.processes[-1]
        body = conversation("Killed in between, my order is late", conversation_id="killed-in-between")
        proxy.hold(b'"actor_name":"collect_many"')
        answers: list[object] = []
        sender = threading.Thread(target=lambda: answers.append(send(client, body)))
        sender.start()
        assert proxy.held.wait(10), "the web sends the conversation's message"
        assert stack.sql("SELECT status FROM conversations") == [("queued",)], "committed before the send"
        stack.kill(web)
        proxy.cut()  # the held bytes die with the process's connection
        proxy.release()
        proxy.restore()
        sender.join(10)
        assert isinstance(answers[0], httpx.TransportError), "the client got no answer"

        client = stack.start_web()  # the client resends to another web process
        retry = client.post("/api/v1/conversations", json=body)
        assert retry.status_code == 202 and retry.json()["conversation_id"] == "killed-in-between"
        assert stack.redis.hlen("insights:collect.msgs") == 0, "a duplicate enqueues nothing"

        stack.start_worker()
        [document] = stack.settled(client, ["killed-in-between"])
        assert document["status"] == "completed"
        assert stack.sql("SELECT COUNT(*) FROM insights") == [(1,)]
    finally:
        proxy.close()


def send(client: httpx.Client, body: dict) -> httpx.Response | httpx.TransportError:
    try:
        return client.post("/api/v1/conversations", json=body)
    except httpx.TransportError as error:
        return error


def test_entries_of_a_dead_cutter_are_claimed_back(monkeypatch):
    from actors import batching

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    batching._ensure_group(client)
    for n in range(3):
        client.xadd(batching.stream_key(), {"id": f"orphan-{n}"})
    # A cutter reads the entries, then dies before dispatching and acknowledging them.
    client.xreadgroup(batching.GROUP, "dead-consumer", {batching.stream_key(): ">"}, count=10)
    assert client.xpending(batching.stream_key(), batching.GROUP)["pending"] == 3

    monkeypatch.setattr(batching, "CLAIM_IDLE_MS", 0)  # instead of waiting 30 s for them to look abandoned
    batching.cut_ready_batches(client)

    assert client.xpending(batching.stream_key(), batching.GROUP)["pending"] == 0
    assert client.xlen(batching.stream_key()) == 0
    messages = [json.loads(raw) for raw in client.hvals("insights:analyze.msgs")]
    assert [m["args"] for m in messages] == [[["orphan-0", "orphan-1", "orphan-2"]]]
    assert messages[0]["actor_name"] == "analyze_batch"


def test_a_claimed_batch_whose_analysis_raises_goes_again_and_ends_failed_not_stuck(db, monkeypatch):
    """The analysis of a claimed batch raises what no outcome explains (a bug): its conversations go back to
    ``queued`` with the error and are sent again at once, the attempt kept, so a fault that repeats ends
    in ``failed`` after ``MAX_RETRIES`` with the error. (Left claimed, they stayed ``processing`` under the
    worker's lease, which a living worker renews for ever.)"""
    from dramatiq import Message
    from dramatiq.middleware import CurrentMessage

    from actors import analysis
    from actors.broker import AGAIN_QUEUE, queue_key, settings
    from insights.offline import OfflineAnalyzer
    from insights.taxonomy import Taxonomy
    from store import queries
    from store.models import Conversation

    class Faulty(OfflineAnalyzer):
        def analyze_one(self, conversation):
            raise RuntimeError("a bug in the analysis")

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    ids = ["faulty-1", "faulty-2"]
    now = queries.utcnow()
    payload = json.dumps({"messages": [{"role": "customer", "content": "My parcel is late."}]})
    queries.insert_conversations([queries.NewConversation(i, payload, f"h-{i}", now, now) for i in ids])
    monkeypatch.setattr(analysis, "analyzer", lambda: Faulty(Taxonomy.of(settings())))
    CurrentMessage().before_process_message(None, Message("analyze", "analyze_batch", (ids,), {}, {}))

    for attempt in range(1, settings().max_retries + 1):
        analysis.analyze_batch(ids)
        rows = Conversation.select().where(Conversation.id.in_(ids)).order_by(Conversation.id)
        assert {(r.status, r.attempts) for r in rows} == {("queued", attempt)}
        assert {r.last_error for r in rows} == {"the worker failed: RuntimeError('a bug in the analysis')"}
        sent_again = [sorted(json.loads(raw)["args"][0]) for raw in client.hvals(queue_key(AGAIN_QUEUE, "msgs"))]
        assert sent_again == [ids], "sent again once, as the batch it was"
        client.delete(queue_key(AGAIN_QUEUE, "msgs"))

    analysis.analyze_batch(ids)
    rows = Conversation.select().where(Conversation.id.in_(ids))
    assert {(r.status, r.last_error) for r in rows} == {
        ("failed", f"the worker failed: RuntimeError('a bug in the analysis') (gave up after {attempt} attempts)")
    }
    assert client.hlen(queue_key(AGAIN_QUEUE, "msgs")) == 0


def test_ingress_accepts_while_redis_is_down_and_the_work_flows_once_it_is_back(make_stack, tmp_path):
    socket_path = tmp_path / "redis.sock"
    server = EmbeddedRedis(socket_path=socket_path)
    try:
        stack = make_stack(
            REDIS_URL=f"unix://{socket_path}",
            REQUEUE_SECONDS=1,
            RECONCILE_INTERVAL_SECONDS=0.5,
            BATCH_FLUSH_SECONDS=0.5,
        )
        client = stack.start_web()
        stack.start_worker()
        server.stop()

        responses = [client.post("/api/v1/conversations", json=conversation(f"while down {n}")) for n in range(5)]
        assert [r.status_code for r in responses] == [202] * 5
        ids = [r.json()["conversation_id"] for r in responses]
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", "ingress still accepts"
        assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["redis"] != "ok"
        scrape = client.get("/metrics")
        assert scrape.status_code == 200, "monitoring does not go blind when Redis does"
        assert "insights_redis_up 0.0" in scrape.text and "insights_database_up 1.0" in scrape.text
        assert 'insights_conversations{status="queued"} 5.0' in scrape.text
        stats = insights(stack, "stats")
        assert stats.returncode == 0 and "redis: NOT ANSWERING" in stats.stdout and "queued      5" in stats.stdout

        server = EmbeddedRedis(socket_path=socket_path)  # back, and empty
        assert {d["status"] for d in stack.settled(client, ids)} == {"completed"}
        stack.stop()
    finally:
        server.stop()


def test_batches_are_cut_by_estimated_tokens_as_well_as_by_count():
    from actors import batching
    from settings import get_settings

    budget = get_settings().max_batch_tokens
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    batching._ensure_group(client)
    sizes = [budget // 3] * 5 + [budget * 2] + [10] * 3  # 3 fit per batch; one alone is over budget
    for n, tokens in enumerate(sizes):
        client.xadd(batching.stream_key(), {"id": f"c{n}", "tokens": tokens})

    left = batching.cut_ready_batches(client)

    batches = sorted((json.loads(raw)["args"][0] for raw in client.hvals("insights:analyze.msgs")), key=lambda b: b[0])
    assert batches == [["c0", "c1", "c2"], ["c3", "c4"], ["c5"]]
    assert left == 3, "the three small ones wait for more company or the flush"


def test_two_deployments_share_one_redis_database(make_stack, tmp_path):
    """``REDIS_NAMESPACE`` keeps them apart: each worker takes only its own deployment's work, and every
    key in the shared database belongs to one of the two."""
    team_a = make_stack(REDIS_NAMESPACE="team-a", DB_PATH=str(tmp_path / "a.db"), BATCH_FLUSH_SECONDS=0.3)
    team_b = make_stack(
        REDIS_NAMESPACE="team-b",
        DB_PATH=str(tmp_path / "b.db"),
        BATCH_FLUSH_SECONDS=0.3,
        REDIS_URL=team_a.env["REDIS_URL"],
    )
    client_a, client_b = team_a.start_web(), team_b.start_web()
    ids_a = [
        client_a.post("/api/v1/conversations", json=conversation(f"team a {n}")).json()["conversation_id"]
        for n in range(4)
    ]
    ids_b = [
        client_b.post("/api/v1/conversations", json=conversation(f"team b {n}")).json()["conversation_id"]
        for n in range(3)
    ]
    assert (team_a.redis.hlen("team-a:collect.msgs"), team_a.redis.hlen("team-b:collect.msgs")) == (4, 3)

    team_a.start_worker()
    assert {d["status"] for d in team_a.settled(client_a, ids_a)} == {"completed"}
    assert {d["status"] for d in team_b.conversations(client_b, ids_b)} == {"queued"}, (
        "team a's worker took none of b's"
    )
    assert team_b.redis.hlen("team-b:collect.msgs") == 3
    assert (
        f"{'collect':<11} 3 0 0" in insights(team_b, "stats").stdout
        and f"{'collect':<11} 0 0 0" in insights(team_a, "stats").stdout
    )

    team_b.start_worker()
    assert {d["status"] for d in team_b.settled(client_b, ids_b)} == {"completed"}
    keys = {key.decode() for key in team_a.redis.scan_iter("*")}
    assert keys and not {key for key in keys if not key.startswith(("team-a:", "team-b:"))}, keys
    assert {key for key in keys if key.startswith("team-a:")} and {key for key in keys if key.startswith("team-b:")}


def test_messages_queued_under_the_old_namespace_are_sent_again_from_the_database(make_stack):
    """An upgrade from Dramatiq's default namespace (``dramatiq``) to ``insights``: what waited under the old
    names is never read again, and the reconciler re-sends those conversations once their lease is over."""
    stack = make_stack(
        REDIS_NAMESPACE="dramatiq", REQUEUE_SECONDS=1, RECONCILE_INTERVAL_SECONDS=0.5, BATCH_FLUSH_SECONDS=0.3
    )
    client = stack.start_web()  # the old release queued the messages; no worker took them before the upgrade
    ids = [
        client.post("/api/v1/conversations", json=conversation(f"before the upgrade {n}")).json()["conversation_id"]
        for n in range(5)
    ]
    assert stack.redis.hlen("dramatiq:collect.msgs") == 5

    del stack.env["REDIS_NAMESPACE"]  # the new release's workers, with the default namespace
    stack.start_worker()
    assert {d["status"] for d in stack.settled(client, ids)} == {"completed"}
    assert stack.redis.hlen("dramatiq:collect.msgs") == 5, "nobody read the old queue: the database had them sent again"
