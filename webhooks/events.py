"""What a webhook says: the Standard Webhooks shape ``{"type", "timestamp", "data"}`` of each event, and of
a request that carries several (a subscription that asks for batches).

Every event has an id (``msg_`` and a ULID, so ids sort by time), in ``data.event_id`` and, for a request
of one event, in the ``webhook-id`` header: it stays the same however many times the event is sent, so a
receiver de-duplicates by it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

COMPLETED = "conversation.completed"
FAILED = "conversation.failed"
BATCH_ENDED = "provider_batch.ended"
EVENT_TYPES = (COMPLETED, FAILED, BATCH_ENDED)
BATCH = "batch"  # the type of a request that carries several events


def new_event_id() -> str:
    return f"msg_{ULID()}"


def iso(moment: datetime | None) -> str | None:
    """A naive UTC time (as the store keeps them) in ISO 8601 with its ``Z``."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def event(event_type: str, event_id: str, moment: datetime, data: dict[str, Any]) -> str:
    """One event's body, as stored in the outbox and sent: its ``data`` carries its ``event_id`` first."""
    return json.dumps(
        {"type": event_type, "timestamp": iso(moment), "data": {"event_id": event_id, **data}},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def request_body(events: list[str], moment: datetime) -> str:
    """What one request carries: the event itself, or several as ``{"type": "batch", "data": {"events": [...]}}``."""
    if len(events) == 1:
        return events[0]
    return f'{{"type":"{BATCH}","timestamp":"{iso(moment)}","data":{{"events":[{",".join(events)}]}}}}'


def request_id(event_ids: list[str]) -> str:
    """The ``webhook-id`` of a request: its event's id, or for several a digest of theirs (the same events
    sent again together keep the same id)."""
    if len(event_ids) == 1:
        return event_ids[0]
    return "msg_batch_" + hashlib.sha256(",".join(sorted(event_ids)).encode()).hexdigest()[:26]
