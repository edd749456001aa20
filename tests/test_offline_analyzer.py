"""The offline analyzer: deterministic, and its rows pass the same validation as Grok's must."""

from __future__ import annotations

from insights.analyzer import ConversationToAnalyze
from insights.offline import OfflineAnalyzer
from insights.schemas import validate_rows
from insights.taxonomy import Taxonomy
from settings import load_settings

TAXONOMY = Taxonomy.of(load_settings({}))


def analyze(*messages: tuple[str, str]):
    conversation = ConversationToAnalyze("c1", [{"role": role, "content": text} for role, text in messages])
    return OfflineAnalyzer(TAXONOMY).analyze([conversation])


def test_same_input_same_output():
    messages = [("customer", "My package never arrived and I want a refund!"), ("agent", "Sorry to hear that.")]
    assert analyze(*messages) == analyze(*messages)


def test_sentiment_follows_the_customer_not_the_agent():
    row = analyze(
        ("customer", "This is awful, I hate it."), ("agent", "We are delighted to help, wonderful day!")
    ).rows[0]
    assert row.sentiment_score < -0.3


def test_later_messages_weigh_more():
    recovered = analyze(("customer", "This is terrible."), ("customer", "Fixed now, thank you, great support!")).rows[0]
    worsened = analyze(("customer", "Fixed now, thank you, great support!"), ("customer", "This is terrible.")).rows[0]
    assert recovered.sentiment_score > 0 > worsened.sentiment_score


def test_clusters_come_from_the_taxonomy_as_slugs():
    row = analyze(("customer", "I cannot log in after the password reset, and I was charged twice.")).rows[0]
    assert set(row.clusters) == {"account-access", "billing"}
    assert all(slug == slug.lower() for slug in row.clusters)


def test_confidence_grows_with_evidence():
    thin = analyze(("customer", "hello")).rows[0]
    rich = analyze(("customer", "Terrible awful horrible service, I was charged, billed and refunded wrong!")).rows[0]
    assert 0 <= thin.confidence < rich.confidence <= 1


def test_rows_survive_revalidation_and_raw_response_is_kept():
    result = analyze(("customer", "Great product"))
    assert result.rejected == {}
    rows, rejected = validate_rows(["c1"], [row.model_dump() for row in result.rows])
    assert rows == result.rows and rejected == {}
    assert '"conversation_id":"c1"' in result.raw_response


def test_validation_drops_foreign_duplicate_and_out_of_range_rows():
    good = {
        "conversation_id": "a",
        "sentiment_score": 0.1,
        "clusters": ["X  Y", "x-y", "!!"],
        "confidence": 0.5,
        "reasoning": "r",
        "extra": 1,
    }
    rows, rejected = validate_rows(
        ["a", "b", "c", "d"],
        [
            good,
            {**good, "conversation_id": "intruder"},
            {**good, "conversation_id": "b", "sentiment_score": 1.5},
            {**good, "conversation_id": "c"},
            {**good, "conversation_id": "c"},
        ],
    )
    assert [row.conversation_id for row in rows] == ["a"]
    assert rows[0].clusters == ["x-y"]
    assert set(rejected) == {"b", "c", "d"}
    assert "more than once" in rejected["c"] and "no row" in rejected["d"]
