"""The answer schema sent to xAI keeps to the keywords every version of xAI's structured outputs accepts
(no length, item or contains bounds, no ``allOf``, however deep), read as the emulator received it over the
wire; the bounds it leaves out are held after parsing, row by row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from support.databases import IN_PROCESS_REDIS_DB, redis_url
from support.grok import GROK_KEY

from insights.analyzer import ConversationToAnalyze
from insights.grok import GrokClient
from insights.outbound import OutboundGate
from insights.schemas import MAX_CLUSTER_CHARS, MAX_CLUSTERS, MAX_REASONING_CHARS, validate_rows
from settings import load_settings

FORBIDDEN = {"minLength", "maxLength", "minItems", "maxItems", "minContains", "maxContains", "allOf"}


def every_key(node: Any) -> Iterator[str]:
    """Every key of every object in ``node``, however deep (property names too: stricter than a schema walk)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from every_key(value)
    elif isinstance(node, list):
        for item in node:
            yield from every_key(item)


def test_the_walk_reaches_every_depth():
    nested = {"properties": {"a": {"items": {"anyOf": [{"type": "string"}, {"allOf": [{"maxLength": 3}]}]}}}}
    assert FORBIDDEN & set(every_key(nested)) == {"allOf", "maxLength"}


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_the_schema_xai_receives_keeps_to_the_subset(grok, mode):
    """The real client calls the emulator; the schema is read back as the emulator received it."""
    settings = load_settings({**grok.env, "TAXONOMY_MODE": mode})
    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    conversations = [ConversationToAnalyze("c0", [{"role": "customer", "content": "Charged twice, awful."}])]
    assert GrokClient(settings, OutboundGate(client, calls_per_second=50)).analyze(conversations).rows
    [received] = grok.control.get("/schemas").json()
    schema = received["json_schema"]["schema"]
    assert schema["properties"]["results"]["items"]["properties"]["clusters"]["type"] == "array", (
        "the schema arrived whole"
    )
    assert FORBIDDEN.isdisjoint(every_key(schema)), sorted(FORBIDDEN & set(every_key(schema)))


def test_the_emulator_refuses_a_schema_outside_the_subset(grok):
    deep = {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"clusters": {"type": "array", "items": {"type": "string"}, "maxItems": 8}},
                },
            }
        },
    }
    body = {
        "model": "grok-4-fast-non-reasoning",
        "messages": [{"role": "system", "content": "Analyze."}, {"role": "user", "content": '{"conversations": []}'}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": deep}},
    }
    answer = httpx.post(f"{grok.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {GROK_KEY}"})
    assert answer.status_code == 400
    assert "maxItems at $.properties.results.items.properties.clusters" in answer.json()["error"]
    assert grok.log()[-1]["refused"] == "schema"


def raw_row(**changes: Any) -> dict[str, Any]:
    return {
        "conversation_id": "c",
        "sentiment_score": 0.5,
        "clusters": ["billing"],
        "confidence": 0.5,
        "reasoning": "fine",
        "suggested_cluster": "",
        **changes,
    }


def test_every_bound_left_out_of_the_schema_is_held_after_parsing():
    """Too many clusters, over-long reasoning and slugs are cut to their bounds (the row is kept: the
    model's excess is dropped, not its analysis); what cannot be cut is refused, row by row."""
    many = [f"topic-{n}" for n in range(MAX_CLUSTERS + 5)]
    long_slug = "x" * (MAX_CLUSTER_CHARS + 30)
    [row], rejected = validate_rows(
        ["c"], [raw_row(clusters=[long_slug, *many], reasoning="why " * 1000, suggested_cluster=long_slug)]
    )
    assert rejected == {}
    assert len(row.clusters) == MAX_CLUSTERS and row.clusters[0] == "x" * MAX_CLUSTER_CHARS
    assert len(row.reasoning) == MAX_REASONING_CHARS
    assert row.suggested_cluster == "x" * MAX_CLUSTER_CHARS
    for bad in (
        raw_row(sentiment_score=1.5),
        raw_row(confidence=-0.1),
        raw_row(clusters=["y" * 201]),
        raw_row(clusters="billing"),
    ):
        valid, rejected = validate_rows(["c"], [bad])
        assert valid == [] and rejected["c"].startswith("invalid row"), bad
