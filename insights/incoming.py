"""The bodies ingress accepts: a conversation (``POST /api/v1/conversations``) and a batch of them, with
the limits of the configuration (so the models are built by :func:`request_models`), and when a
conversation happened.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from insights.schemas import ConversationId, as_utc
from settings import Settings

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
