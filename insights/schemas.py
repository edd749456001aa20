"""Pydantic models: the request body ingress accepts and the insight rows analyzers must produce.

Request limits come from configuration, so the request models are built by :func:`request_models`.
Analyzer output is untrusted (Grok's especially): :func:`validate_rows` keeps only well-formed rows that
belong to the batch, once each, and every untrusted string is made :func:`storable` first.
"""

from __future__ import annotations

import json
import math
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
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from settings import Settings

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
RESERVED_IDS = frozenset({"batch"})  # /api/v1/conversations/batch is the batch endpoint: never a conversation


def _not_reserved(conversation_id: str) -> str:
    if conversation_id in RESERVED_IDS:
        raise ValueError(f"{conversation_id!r} is reserved (/api/v1/conversations/{conversation_id} is an endpoint)")
    return conversation_id


NewConversationId = Annotated[
    ConversationId, AfterValidator(_not_reserved), Field(json_schema_extra={"not": {"enum": sorted(RESERVED_IDS)}})
]
"""The id a client may give a new conversation: any readable id but the reserved ones."""


def occurred_at_of(explicit: datetime | None, message_times: list[datetime], received_at: datetime) -> datetime:
    """When a conversation happened: its own ``occurred_at`` if the client gave one, else the time of its
    first timestamped message (when the customer reached out: a conversation belongs to the day it began,
    not the day its last reply came), else ``received_at``; never later than ``received_at`` (a client's
    clock running ahead cannot put a conversation in the future). All naive UTC, as stored."""
    candidate = explicit or (min(message_times) if message_times else None)
    if candidate is None:
        return received_at
    return min(as_utc(candidate).replace(tzinfo=None), received_at)


def occurred_at_in_payload(payload: dict[str, Any], received_at: datetime) -> datetime:
    """:func:`occurred_at_of` a stored canonical payload (for rows accepted before ``occurred_at`` was)."""

    def parsed(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    times = [t for m in payload.get("messages", []) if (t := parsed(m.get("timestamp"))) is not None]
    return occurred_at_of(parsed(payload.get("occurred_at")), times, received_at)


class ConversationBase(BaseModel):
    """Common base of the configured request models, so callers can type against it."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: NewConversationId | None = None
    occurred_at: Annotated[datetime, AfterValidator(as_utc)] | None = None

    def occurred(self, received_at: datetime) -> datetime:
        """When this conversation happened (:func:`occurred_at_of`), as naive UTC."""
        return occurred_at_of(self.occurred_at, self._message_times(), received_at)

    def _message_times(self) -> list[datetime]:
        return [m.timestamp for m in getattr(self, "messages", []) if m.timestamp is not None]

    def canonical_payload(self) -> str:
        """The conversation without its id, as canonical JSON: equal payloads give equal strings."""
        # Without an occurred_at of its own, the payload is the one accepted before the field existed.
        body = self.model_dump(
            mode="json", exclude={"conversation_id"} | ({"occurred_at"} if self.occurred_at is None else set())
        )
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_models(settings: Settings) -> type[ConversationBase]:
    """Build the ``POST /api/v1/conversations`` body model with the limits of ``settings``."""

    class Message(BaseModel):
        model_config = ConfigDict(extra="forbid")

        role: Annotated[str, StringConstraints(min_length=1, max_length=settings.max_role_chars)]
        content: Annotated[str, StringConstraints(min_length=1, max_length=settings.max_content_chars)]
        timestamp: Annotated[datetime, AfterValidator(as_utc)] | None = None

    class Conversation(ConversationBase):
        """A conversation: its messages in order (timestamps, where given, must not go backwards)."""

        messages: Annotated[list[Message], Field(min_length=1, max_length=settings.max_messages)]
        metadata: dict[str, Any] = Field(default_factory=dict)

        @field_validator("metadata")
        @classmethod
        def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
            if (where := non_finite_number(value, "metadata")) is not None:
                raise PydanticCustomError(
                    "json_invalid",
                    "{where} is {value}: NaN, Infinity and numbers beyond double range are not JSON",
                    {"where": where[0], "value": str(where[1])},
                )
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > settings.max_metadata_bytes:
                raise ValueError(f"metadata is {size} bytes as JSON, at most {settings.max_metadata_bytes} allowed")
            return value

        @model_validator(mode="after")
        def _ordered_timestamps(self) -> Conversation:
            previous: datetime | None = None
            for index, message in enumerate(self.messages):
                if message.timestamp is None:
                    continue
                if previous is not None and message.timestamp < previous:
                    raise ValueError(f"messages.{index}.timestamp is earlier than the message before it")
                previous = message.timestamp
            return self

    return Conversation


def non_finite_number(value: Any, path: str) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinite number in a parsed JSON value (the parser accepts
    ``NaN``, ``Infinity`` and ``1e999``; stored as JSON they would silently become ``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        if (found := non_finite_number(child, f"{path}.{key}")) is not None:
            return found
    return None


def batch_envelope(settings: Settings) -> type[BaseModel]:
    """The ``POST /api/v1/conversations/batch`` body; each item is validated on its own afterwards."""

    class ConversationBatch(BaseModel):
        model_config = ConfigDict(extra="forbid")

        conversations: Annotated[list[Any], Field(min_length=1, max_length=settings.max_batch_items)]

    return ConversationBatch


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
