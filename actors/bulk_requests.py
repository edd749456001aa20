"""Sending a provider batch's requests to xAI (a step of ``actors.bulk``): each request's body masked and
built as the real-time lane builds a call, added in calls of at most ``REQUESTS_PER_CALL`` requests and
``BULK_ADD_MAX_BYTES``, each recorded once xAI has it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from actors import masking
from actors.analysis import analyzer
from actors.broker import settings
from insights.analyzer import ConversationToAnalyze
from insights.batch_api import BatchApi, encoded
from store import provider_batches
from store.models import ProviderBatch, ProviderBatchRequest

logger = logging.getLogger(__name__)
REQUESTS_PER_CALL = 100  # requests added by one call (xAI takes 1,000 add calls per 30 s a team)
ENVELOPE_BYTES = 100  # what one request adds around its body and id in the add call


def send_requests(api: BatchApi, batch: ProviderBatch, resumed: bool) -> int:
    """Send the requests not sent yet, each call recorded once xAI has it; return how many the batch holds.
    A ``resumed`` batch may hold requests sent before a crash but not recorded: xAI's list of the requests
    it holds is read first, and those are not sent again (how xAI treats a repeated ``batch_request_id`` is
    not documented)."""
    unsent = provider_batches.requests_of(batch.id, submitted=False)
    if resumed and unsent:
        unsent = not_held(api, batch, unsent)
    for start in range(0, len(unsent), REQUESTS_PER_CALL):
        chunk = unsent[start : start + REQUESTS_PER_CALL]
        bodies = request_bodies(chunk)
        for part in parts_of(bodies, settings().bulk_add_max_bytes):
            api.add(batch.provider_id, part)
            provider_batches.mark_requests(list(part), submitted=True)
        if emptied := [request.id for request in chunk if request.id not in bodies]:
            # every conversation of these failed its masking: nothing of them goes to xAI, nothing to wait for
            provider_batches.mark_requests(emptied, submitted=True, settled=True)
        provider_batches.take_again(batch.id, settings().requeue_seconds)
    return len(provider_batches.requests_of(batch.id))


def parts_of(bodies: dict[str, dict[str, Any]], most_bytes: int) -> Iterator[dict[str, dict[str, Any]]]:
    """``bodies`` in consecutive parts whose add call's body stays within ``most_bytes`` (UTF-8 JSON, as
    ``insights.batch_api`` sends it); a request larger than that alone goes in a part of its own."""
    part: dict[str, dict[str, Any]] = {}
    size = 0
    for request_id, body in bodies.items():
        grows = len(encoded(body)) + len(request_id) + ENVELOPE_BYTES
        if part and size + grows > most_bytes:
            yield part
            part, size = {}, 0
        part[request_id] = body
        size += grows
    if part:
        yield part


def not_held(api: BatchApi, batch: ProviderBatch, unsent: list[ProviderBatchRequest]) -> list[ProviderBatchRequest]:
    """Record as sent the requests of ``unsent`` that xAI holds already; return the others."""
    holds = api.held(batch.provider_id)
    if sent := [request.id for request in unsent if request.id in holds]:
        provider_batches.mark_requests(sent, submitted=True)
        logger.warning(
            "provider batch %s: xAI holds %d request(s) not recorded as sent (a step cut short): not sent again",
            batch.id,
            len(sent),
            extra={"batch_id": batch.id},
        )
    return [request for request in unsent if request.id not in holds]


def request_bodies(chunk: list[ProviderBatchRequest]) -> dict[str, dict[str, Any]]:
    """Each request's chat-completions body: the real-time lane's prompt and schema, for its conversations
    masked as the real-time lane masks them (one whose masking fails is ``failed``, not sent). A request
    left with no conversation has no body: it is not sent."""
    ids = [i for request in chunk for i in json.loads(request.conversation_ids)]
    payloads = provider_batches.payloads(ids)
    client = analyzer()
    bodies = {}
    for request in chunk:
        conversations = [
            ConversationToAnalyze(i, json.loads(payloads[i])["messages"])
            for i in json.loads(request.conversation_ids)
            if i in payloads
        ]
        if masked := masking.masked_for_sending(client, conversations):
            bodies[request.id] = client.request_body(masked)
    return bodies
