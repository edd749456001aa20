"""Pydantic models of the insight rows analyzers must produce, and the pieces the request bodies share
(:mod:`insights.incoming` builds those).

Analyzer output is untrusted (Grok's especially): :func:`validate_rows` keeps only well-formed rows that
belong to the batch, once each, and every untrusted string is made :func:`storable` first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_CLUSTERS = 8
MAX_CLUSTER_CHARS = 48
MAX_REASONING_CHARS = 1000
_NON_SLUG = re.compile(r"[^a-z0-9]+")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # control characters, but for \t and \n
_SURROGATES = re.compile(r"[\ud800-\udfff]")  # in a str, always unpaired (json.loads joins pairs)


def as_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already. ``ValueError`` when its offset
    moves it outside years 1 to 9999 (``9999-12-31T23:59:59-01:00``)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} falls outside years 1 to 9999 in UTC") from None


def storable(text: str) -> str:
    """``text`` as both databases store it: control characters other than ``\\n`` and ``\\t`` dropped
    (PostgreSQL refuses NUL in text) and lone surrogates, which ``json.loads`` accepts from ``"\\ud800"``
    but UTF-8 cannot encode, replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", _CONTROLS.sub("", text))


def storable_json(value: Any) -> Any:
    """``value`` with every string in it, keys included, made :func:`storable`; other values unchanged (so
    the type check that follows still refuses them)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


Untrusted = BeforeValidator(storable_json)
"""Cleans an untrusted field before it is validated: pydantic refuses a lone surrogate in a ``str``, and
a database refuses a NUL, so either would lose the row (or, stored, fail its whole batch)."""

ConversationId = Annotated[str, StringConstraints(pattern=CONVERSATION_ID_PATTERN)]


def _slug(value: str) -> str:
    return _NON_SLUG.sub("-", value.lower()).strip("-")[:MAX_CLUSTER_CHARS].strip("-")


def _normalise_clusters(values: list[str]) -> list[str]:
    slugs = dict.fromkeys(slug for slug in map(_slug, values) if slug)
    return list(slugs)[:MAX_CLUSTERS]


class InsightRow(BaseModel):
    """One analyzed conversation, as any analyzer must return it. Unknown fields are dropped.

    Every bound of a row is held here, not by the JSON schema Grok is given (``insights.prompt.result_schema``
    keeps to the keywords all versions of xAI's structured outputs accept, so it carries no length or item
    bounds): scores and confidence within their ranges (a row outside is refused), at most ``MAX_CLUSTERS``
    distinct slugs of ``MAX_CLUSTER_CHARS`` (a label over 200 characters is refused, the rest are cut), a
    suggestion of ``MAX_CLUSTER_CHARS`` and reasoning of ``MAX_REASONING_CHARS`` (cut).
    """

    model_config = ConfigDict(extra="ignore")

    conversation_id: str  # not cleaned: it must equal an id of the batch as it is
    sentiment_score: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
    clusters: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]], Untrusted, AfterValidator(_normalise_clusters)
    ]
    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    reasoning: Annotated[str, Untrusted, AfterValidator(lambda text: text.strip()[:MAX_REASONING_CHARS])]
    # A closed taxonomy's "other" names its topic here (insights.taxonomy); a slug like a cluster, or None.
    suggested_cluster: Annotated[
        str | None, Untrusted, AfterValidator(lambda text: _slug(text) or None if text else None)
    ] = None

    def within(self, vocabulary: frozenset[str] | None) -> InsightRow:
        """The row held to a closed taxonomy's ``vocabulary``: clusters outside it are dropped (``other``
        stands in when none is left), and a suggestion is kept only beside ``other`` (one that names a slug
        of the taxonomy takes ``other``'s place). With no vocabulary (open), nothing is suggested."""
        if vocabulary is None:
            return self.model_copy(update={"suggested_cluster": None})
        clusters = [slug for slug in self.clusters if slug in vocabulary]
        suggested = self.suggested_cluster
        if self.clusters and not clusters:
            clusters = ["other"]
        if suggested in vocabulary and "other" in clusters:
            clusters, suggested = [suggested if slug == "other" else slug for slug in clusters], None
        if "other" not in clusters:
            suggested = None
        return self.model_copy(update={"clusters": list(dict.fromkeys(clusters)), "suggested_cluster": suggested})


class AnalysisResult(BaseModel):
    """What ``analyze_batch`` hands to ``store_results``: valid rows, rejects, and provenance."""

    conversation_ids: list[str]
    rows: list[InsightRow]
    rejected: Annotated[dict[str, str], Untrusted] = Field(default_factory=dict)
    model: str
    prompt_version: str
    raw_response: str  # verbatim: a decoded HTTP body that parsed as JSON holds no NUL and no lone surrogate
    usage: Annotated[dict[str, Any] | None, Untrusted] = None
    batch_id: str | None = None  # the analyze step's message id, so both steps log the same batch
    claim_token: str | None = None  # the claim analyzed (store.claims.Claim): only its conversations are settled

    @classmethod
    def validated(
        cls,
        conversation_ids: list[str],
        raw_rows: list[Any],
        vocabulary: frozenset[str] | None = None,
        **provenance: Any,
    ) -> AnalysisResult:
        """Validate an analyzer's untrusted ``raw_rows`` for the batch (:func:`validate_rows`), held to a
        closed taxonomy's ``vocabulary`` (``None``: open), and keep ``provenance`` (``model``,
        ``prompt_version``, ``raw_response``, ``usage``) beside them."""
        valid, rejected = validate_rows(conversation_ids, raw_rows)
        valid = [row.within(vocabulary) for row in valid]
        return cls(conversation_ids=conversation_ids, rows=valid, rejected=rejected, **provenance)


def validate_rows(batch_ids: list[str], raw_rows: list[Any]) -> tuple[list[InsightRow], dict[str, str]]:
    """Keep the rows that validate and belong to the batch, once each; say why each other id failed.

    Returns the valid rows and ``{conversation_id: reason}`` for every batch id without a valid row.
    Rows for ids outside the batch are dropped: an analyzer cannot write another conversation's insight.
    """
    expected = set(batch_ids)
    valid: dict[str, InsightRow] = {}
    rejected: dict[str, str] = {}
    for raw in raw_rows:
        try:
            row = InsightRow.model_validate(raw)
        except ValidationError as error:
            claimed = raw.get("conversation_id") if isinstance(raw, dict) else None
            if isinstance(claimed, str) and claimed in expected:
                rejected[claimed] = f"invalid row: {error.errors()[0]['msg']} at {error.errors()[0]['loc']}"
            continue
        if row.conversation_id not in expected:
            continue
        if row.conversation_id in valid or row.conversation_id in rejected:
            valid.pop(row.conversation_id, None)
            rejected[row.conversation_id] = "the analyzer returned this conversation more than once"
            continue
        valid[row.conversation_id] = row
    for conversation_id in batch_ids:
        if conversation_id not in valid and conversation_id not in rejected:
            rejected[conversation_id] = "the analyzer returned no row for this conversation"
    return list(valid.values()), rejected


def sentiment_label(score: float, negative_threshold: float, positive_threshold: float) -> str:
    """``positive`` at or above the positive threshold, ``negative`` at or below the negative one."""
    if score >= positive_threshold:
        return "positive"
    if score <= negative_threshold:
        return "negative"
    return "neutral"
