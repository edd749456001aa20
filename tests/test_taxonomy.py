"""One cluster vocabulary: the taxonomy goes to Grok as an enum, "other" carries a suggestion, untrusted
rows are held to it, both analyzers agree, and operators see what the taxonomy misses. Open mode keeps
free slugs."""

from __future__ import annotations

import json

import pytest
from support.cli import insights
from support.traffic import conversation

from insights.analyzer import ConversationToAnalyze
from insights.grok import GrokClient
from insights.offline import OfflineAnalyzer
from insights.schemas import InsightRow
from insights.taxonomy import Taxonomy
from settings import load_settings
from settings.tables import TaxonomyEntry

CLOSED = Taxonomy.of(load_settings({}))
OPEN = Taxonomy(CLOSED.entries, closed=False)


def row(clusters: list, suggested=None) -> InsightRow:
    return InsightRow(
        conversation_id="c",
        sentiment_score=0,
        clusters=clusters,
        confidence=0.5,
        reasoning="r",
        suggested_cluster=suggested,
    )


@pytest.mark.parametrize(
    ("clusters", "suggested", "expected"),
    [
        (["Billing", "late delivery"], None, (["billing"], None)),  # a slug outside the taxonomy is dropped
        (["made-up"], "Espresso Machines!", (["other"], "espresso-machines")),  # none left: other, with the suggestion
        (["other"], "billing", (["billing"], None)),  # a suggestion the taxonomy has takes other's place
        (["shipping"], "espresso", (["shipping"], None)),  # a suggestion goes only with other
        ([], None, ([], None)),
    ],
)
def test_untrusted_rows_are_held_to_a_closed_taxonomy(clusters, suggested, expected):
    held = row(clusters, suggested).within(CLOSED.vocabulary)
    assert (held.clusters, held.suggested_cluster) == expected


def test_an_open_taxonomy_keeps_free_slugs_and_suggests_nothing():
    held = row(["Late Delivery", "other"], "espresso").within(OPEN.vocabulary)
    assert (held.clusters, held.suggested_cluster) == (["late-delivery", "other"], None)


def test_the_taxonomy_goes_to_grok_as_an_enum_and_its_changes_change_the_prompt_version():
    settings = load_settings({"GROK_API_KEY": "k"})
    closed, open_ = (
        GrokClient(settings, None),
        GrokClient(load_settings({"GROK_API_KEY": "k", "TAXONOMY_MODE": "open"}), None),
    )
    items = closed.schema["properties"]["results"]["items"]
    assert items["properties"]["clusters"]["items"]["enum"] == sorted([*settings.taxonomy, "other"])
    assert "suggested_cluster" in items["required"]
    assert "billing: charges, invoices" in closed.system_prompt
    open_items = open_.schema["properties"]["results"]["items"]
    assert (
        "enum" not in open_items["properties"]["clusters"]["items"]
        and "suggested_cluster" not in open_items["properties"]
    )
    changed = Taxonomy(
        {**CLOSED.entries, "billing": TaxonomyEntry(description="money", keywords=["invoice"])}, closed=True
    )
    versions = {closed.prompt_version, open_.prompt_version, f"grok-2026-11-24-{changed.version()}"}
    assert len(versions) == 3


def test_the_offline_analyzer_says_other_and_suggests_only_when_closed():
    espresso = ConversationToAnalyze(
        "e", [{"role": "customer", "content": "The espresso machine leaks, espresso everywhere"}]
    )
    [closed] = OfflineAnalyzer(CLOSED).analyze([espresso]).rows
    [open_] = OfflineAnalyzer(OPEN).analyze([espresso]).rows
    assert (closed.clusters, closed.suggested_cluster) == (["other"], "espresso")
    assert (open_.clusters, open_.suggested_cluster) == ([], None)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_grok_answers_within_the_taxonomy_or_freely_and_operators_see_the_suggestions(make_stack, grok, mode):
    stack = make_stack(TAXONOMY_MODE=mode, BATCH_FLUSH_SECONDS=0.3, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    texts = ["The espresso machine leaks water", "My espresso grinder is noisy", "I was charged twice on my invoice"]
    ids = [client.post("/api/v1/conversations", json=conversation(text)).json()["conversation_id"] for text in texts]
    insights_of = {d["conversation_id"]: d["insight"] for d in stack.settled(client, ids, timeout=60)}
    labels = [(insights_of[i]["clusters"], insights_of[i]["suggested_cluster"]) for i in ids]
    if mode == "closed":
        assert labels == [(["other"], "espresso"), (["other"], "espresso"), (["billing"], None)]
    else:
        assert labels == [(["espresso"], None), (["espresso"], None), (["billing"], None)]
    [prompt] = stack.sql("SELECT DISTINCT prompt_version FROM insights")[0]
    assert prompt.startswith("grok-2026-11-24-")

    suggested = insights(stack, "clusters", "suggest", "--start", "2000-01-01", "--end", "2100-01-01", "--json")
    assert suggested.returncode == 0, suggested.stderr
    documents = [json.loads(line) for line in suggested.stdout.splitlines()]
    if mode == "closed":
        assert [(d["cluster"], d["count"], sorted(d["examples"])) for d in documents] == [
            ("espresso", 2, sorted(ids[:2]))
        ]
    else:
        assert documents == []
    bad = insights(stack, "clusters", "suggest", "--start", "2026-02-01", "--end", "2026-01-01")
    assert bad.returncode == 2
