"""Prompt caching by design: one ``x-grok-conv-id`` per prompt version and model, the shared instructions
first, and an emulator that caches prefixes per server as xAI describes; the cached share of prompt tokens
is shown by the summary, ``insights stats`` and the report."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import insights
from support.traffic import conversation

from cli.html_report import percent
from insights.analyzer import ConversationToAnalyze
from insights.grok import GrokClient
from settings import load_settings
from testing.prompt_cache import PrefixCache

MODEL = "grok-4-fast-non-reasoning"
SYSTEM = {"role": "system", "content": "s" * 400}  # 100 tokens
BATCH = "/api/v1/conversations/batch"
TEXTS = [
    "Charged twice, awful.",
    "Thanks, all sorted!",
    "Where is my parcel?",
    "The app crashes on start.",
    "Please cancel my plan.",
    "Great support, cheers.",
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# The emulator's cache, in process.


def test_a_server_serves_the_leading_messages_it_has_seen_for_the_same_model():
    cache = PrefixCache(seed=1)
    assert cache.serve(0, MODEL, [SYSTEM, user("a" * 40)], span=8) == 0, "a cold server"
    assert cache.serve(0, MODEL, [SYSTEM, user("b" * 40)], span=8) == 100, "the system message, not the batch"
    assert cache.serve(0, MODEL, [SYSTEM, user("b" * 40)], span=8) == 110, "a repeat is served whole"
    assert cache.serve(0, MODEL, [user("b" * 40), SYSTEM], span=8) == 0, "matched from the start only"
    assert cache.serve(1, MODEL, [SYSTEM, user("b" * 40)], span=8) == 0, "caches are per server"
    assert cache.serve(0, "another-model", [SYSTEM], span=8) == 0, "and per model"
    assert cache.serve(0, MODEL, [SYSTEM], span=0) == 0, "span 0: no cache"


def test_a_prefix_unused_for_the_span_is_evicted_and_the_header_picks_one_server():
    cache = PrefixCache(seed=1)
    cache.serve(0, MODEL, [SYSTEM], span=3)
    for n in range(2):  # two calls elsewhere: one of the last three calls used the entry
        cache.serve(1, MODEL, [user(str(n))], span=3)
    assert cache.serve(0, MODEL, [SYSTEM], span=3) == 100
    for n in range(3):
        cache.serve(1, MODEL, [user(str(n))], span=3)
    assert cache.serve(0, MODEL, [SYSTEM], span=3) == 0, "unused during the last 3 calls: evicted"
    assert len({cache.route("conv-a", 16) for _ in range(20)}) == 1
    assert len({cache.route(None, 16) for _ in range(20)}) > 1, "without the header, calls spread"


# The worker and the emulator, as processes.


def run(make_stack, grok, tmp_path: Path, name: str, texts: list[str], **env: object):
    """A stack of its own (its own database) with ``env``; posts ``texts`` before its worker starts, so that
    they form batches of two; returns the stack, its web client and the emulator's log of its calls."""
    grok.control.post("/reset").raise_for_status()
    stack = make_stack(
        BATCH_SIZE=2, BATCH_FLUSH_SECONDS=0.3, INBOUND_RPS=1000, DB_PATH=str(tmp_path / f"{name}.db"), **grok.env, **env
    )
    client = stack.start_web()
    post(stack, client, texts, start_worker=True)
    return stack, client


def post(stack, client, texts: list[str], start_worker: bool = False) -> None:
    results = client.post(BATCH, json={"conversations": [conversation(t) for t in texts]}).json()["results"]
    if start_worker:
        stack.worker = stack.start_worker()
    assert {d["status"] for d in stack.settled(client, [r["conversation_id"] for r in results])} == {"completed"}, (
        stack.log_text()
    )


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"start_time": (now - timedelta(hours=1)).isoformat(), "end_time": (now + timedelta(hours=1)).isoformat()}


def answered(grok) -> list[dict]:
    return [entry for entry in grok.log() if entry["status"] == 200]


def test_with_the_header_the_instructions_are_cached_after_warm_up_and_without_it_far_less(make_stack, grok, tmp_path):
    """64 emulated servers, a prefix evicted after 4 unrelated calls: with the header every call but the
    first finds the system prompt cached on its server; without, calls spread over the servers and rarely
    do. The header is one value across batches and worker processes, the one the prompt version gives."""
    grok.configure(cache_servers=64, cache_span=4)
    settings = load_settings({**grok.env})
    expected = GrokClient(settings, None)
    system_tokens = len(expected.system_prompt) // 4

    stack, client = run(make_stack, grok, tmp_path, "routed", TEXTS * 2)
    stack.kill(stack.worker)
    stack.start_worker()  # another process, the same prompt version: the same header
    post(stack, client, TEXTS[:4])
    calls = answered(grok)
    assert len(calls) >= 4 and {c["conv_id"] for c in calls} == {expected.cache_routing_id}
    assert len({c["server"] for c in calls}) == 1
    cached = [c["cached"] for c in calls]
    assert cached[0] == 0 and set(cached[1:]) == {system_tokens}, "after warm-up, the instructions every time"

    routed = client.get("/api/v1/insights/summary", params=window()).json()["usage"]["realtime"]
    assert routed["cached_tokens"] == pytest.approx(sum(cached), abs=0.5)
    assert routed["cached_share"] == pytest.approx(routed["cached_tokens"] / routed["prompt_tokens"], abs=1e-3)
    shown_stats(stack, routed["cached_share"])

    unrouted_stack, unrouted_client = run(
        make_stack, grok, tmp_path, "unrouted", TEXTS * 2 + TEXTS[:4], GROK_CACHE_ROUTING="false"
    )
    calls = answered(grok)
    assert len(calls) >= 4 and {c["conv_id"] for c in calls} == {None}
    assert len({c["server"] for c in calls}) > 1
    unrouted = unrouted_client.get("/api/v1/insights/summary", params=window()).json()["usage"]["realtime"]
    assert unrouted["cached_tokens"] == pytest.approx(sum(c["cached"] for c in calls), abs=0.5)
    assert unrouted["cached_share"] < routed["cached_share"] / 2, (unrouted, routed)


def shown_stats(stack, share: float) -> None:
    """``insights stats`` (text and JSON) and the report show the cached share the summary gives."""
    text = insights(stack, "stats")
    assert f"cached, {percent(share)})" in text.stdout, text.stdout + text.stderr
    as_json = insights(stack, "stats", "--json")
    assert f'"cached_share": {round(share, 4)}' in as_json.stdout, as_json.stdout
    page = Path(stack.logs) / "report.html"
    span = window()
    made = insights(stack, "report", "--start", span["start_time"], "--end", span["end_time"], "--output", str(page))
    assert made.returncode == 0, made.stderr
    shown = re.search(r"prompt cache served <b>([0-9.]+)%</b>", page.read_text())
    assert shown and float(shown.group(1)) == pytest.approx(100 * share, abs=0.051)


def test_the_header_changes_with_the_prompt_version(make_stack, grok, tmp_path):
    """Another taxonomy mode is another prompt version: another header, and a cold cache for its prefix."""
    run(make_stack, grok, tmp_path, "open", TEXTS[:2], TAXONOMY_MODE="open")
    [call] = answered(grok)
    open_version = GrokClient(load_settings({**grok.env, "TAXONOMY_MODE": "open"}), None)
    closed_version = GrokClient(load_settings({**grok.env}), None)
    assert call["conv_id"] == open_version.cache_routing_id != closed_version.cache_routing_id
    other_model = GrokClient(load_settings({**grok.env, "GROK_MODEL": "grok-3"}), None)
    assert len({open_version.cache_routing_id, closed_version.cache_routing_id, other_model.cache_routing_id}) == 3


def test_what_every_call_shares_comes_first_and_the_batch_last():
    """The instructions (the taxonomy in them) are the first message, the same for every batch; the
    conversations travel only in the last one: the cache, matching messages from the start, gets the rest."""
    client = GrokClient(load_settings({"GROK_API_KEY": "k"}), None)
    first, second = (
        client.request_body([ConversationToAnalyze(f"c{n}", [{"role": "customer", "content": text}])])
        for n, text in enumerate(TEXTS[:2])
    )
    assert first["messages"][0] == second["messages"][0] == {"role": "system", "content": client.system_prompt}
    assert first["response_format"] == second["response_format"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert TEXTS[0] in first["messages"][-1]["content"] and TEXTS[0] not in first["messages"][0]["content"]
    assert (
        client.headers()["x-grok-conv-id"]
        == GrokClient(load_settings({"GROK_API_KEY": "other"}), None).cache_routing_id
    )
