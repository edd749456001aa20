"""xAI as it is today, on real processes against the emulator: the cost is what xAI billed
(``cost_in_usd_ticks``), an insight names the model that answered, and a retired ``GROK_MODEL`` is named at
start-up and counted wherever it is answered by its successor."""

from __future__ import annotations

import json

import pytest
from support.cli import insights
from support.metrics import samples, value
from support.traffic import BULK, FAST_RETRIES, post_all, post_bulk, worker_log

EVERYTHING = {"start_time": "2000-01-01T00:00:00Z", "end_time": "2100-01-01T00:00:00Z"}
TICKS_PER_USD = 1e10
TEXTS = [
    "Charged twice, terrible.",
    "Thanks, all sorted!",
    "Where is my parcel?",
    "The app crashes on start.",
    "Please cancel my plan.",
    "Lovely service, cheers.",
]


def billed_usd(log: list[dict]) -> float:
    """What the emulator billed for the real-time calls it answered."""
    return sum(entry["ticks"] for entry in log if entry["status"] == 200) / TICKS_PER_USD


def reasoning_tokens(stack, ids: list[str]) -> int:
    """The reasoning tokens of the calls that analyzed ``ids`` (three), as their stored usage reports them."""
    usages = stack.sql("SELECT DISTINCT usage FROM insights WHERE conversation_id IN (?, ?, ?)", *ids)
    return sum(json.loads(usage)["completion_tokens_details"]["reasoning_tokens"] for (usage,) in usages)


def test_a_retired_model_is_named_at_start_and_its_successors_bill_is_the_cost(make_stack, grok, database_env):
    stack = make_stack(GROK_MODEL="grok-4-fast-non-reasoning", BATCH_SIZE=4, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_all(client, TEXTS)
    documents = stack.settled(client, ids)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()

    assert (
        "GROK_MODEL=grok-4-fast-non-reasoning was retired by xAI on 2026-05-15: xAI serves it with grok-4.3 and "
        "bills grok-4.3's prices ($1.25 input, $2.50 output per million tokens)" in worker_log(stack)
    )
    assert {d["insight"]["model"] for d in documents} == {"grok-4.3"}, "the model that answered, not the slug asked for"
    answered = [entry for entry in grok.log() if entry["status"] == 200]
    assert {entry["model"] for entry in answered} == {"grok-4.3"}

    usage = client.get("/api/v1/insights/summary", params=EVERYTHING).json()["usage"]["realtime"]
    assert usage["cost_usd"] == pytest.approx(billed_usd(grok.log()), rel=1e-6), "the window's cost is what xAI billed"
    assert usage["insights_without_cost"] == 0

    stats = json.loads(insights(stack, "stats", "--json").stdout)
    assert stats["grok"]["answered_by_another_model"] == [
        {"asked": "grok-4-fast-non-reasoning", "answered": "grok-4.3", "answers": len(answered)}
    ]
    metrics = samples(client.get("/metrics").text)
    assert value(
        metrics, "insights_grok_answers_by_another_model", asked="grok-4-fast-non-reasoning", answered="grok-4.3"
    ) == len(answered)
    assert worker_log(stack).count("Grok answered with grok-4.3, not GROK_MODEL=grok-4-fast-non-reasoning") == 1


def test_the_current_model_is_asked_without_reasoning_and_billed_as_xai_bills_it(make_stack, grok, database_env):
    """The default: grok-4.3 with reasoning effort ``none`` (no reasoning tokens to pay); the same model
    asked with its default effort reasons, and the cost follows the bill, reasoning tokens included."""
    stack = make_stack(BATCH_SIZE=3, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    first_ids = post_all(client, TEXTS[:3])
    stack.settled(client, first_ids)
    first = billed_usd(grok.log())
    assert first > 0 and "retired" not in worker_log(stack)
    assert reasoning_tokens(stack, first_ids) == 0

    stack.stop()
    stack = make_stack(GROK_REASONING_EFFORT="", BATCH_SIZE=3, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    second_ids = post_all(client, TEXTS[3:])
    stack.settled(client, second_ids)
    second = billed_usd(grok.log()) - first
    assert reasoning_tokens(stack, second_ids) > 0, "grok-4.3 reasons at its default effort"
    usage = client.get("/api/v1/insights/summary", params=EVERYTHING).json()["usage"]["realtime"]
    assert usage["cost_usd"] == pytest.approx(first + second, rel=1e-6)
    stats = json.loads(insights(stack, "stats", "--json").stdout)
    assert stats["grok"]["answered_by_another_model"] == [], "grok-4.3 answered as asked"


def test_the_bulk_lanes_cost_is_what_the_batch_api_billed(make_stack, grok, database_env):
    grok.configure(batch_delay=0.3)
    stack = make_stack(**BULK, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Invoice {n} was charged twice" for n in range(12)])
    documents = stack.settled(client, ids, timeout=60)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()

    billed = sum(b["cost_breakdown"]["total_cost_usd_ticks"] for b in grok.control.get("/batches").json()["batches"])
    assert billed > 0
    usage = client.get("/api/v1/insights/summary", params=EVERYTHING).json()["usage"]["bulk"]
    assert usage["cost_usd"] == pytest.approx(billed / TICKS_PER_USD, rel=1e-6)
    [(cost, unpriced)] = stack.sql("SELECT SUM(cost_usd), SUM(unpriced_results) FROM provider_batches")
    assert (cost, unpriced) == (pytest.approx(billed / TICKS_PER_USD, rel=1e-6), 0)
    listed = [json.loads(line) for line in insights(stack, "bulk", "list", "--all", "--json").stdout.splitlines()]
    assert listed
    assert sum(batch["cost_usd"] for batch in listed) == pytest.approx(billed / TICKS_PER_USD, rel=1e-6)
