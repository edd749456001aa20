"""``POST /api/v1/conversations/batch``: many conversations, each validated, limited and committed on its own."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from typing import Any

import falcon
from pydantic import ValidationError

from api import models as api
from api.admission import Admission
from api.body import parse_json, read_body, require_json
from api.errors import field_errors
from api.idempotency import KeyUse, bind_and_rename, look_up, request_key
from api.params import parse_lane
from insights.incoming import ConversationBase, batch_envelope, request_models
from settings import Settings
from store import queries
from telemetry import metrics

OUTCOME_STATUS = {
    queries.InsertOutcome.CREATED: "accepted",
    queries.InsertOutcome.DUPLICATE: "duplicate",
    queries.InsertOutcome.CONFLICT: "conflict",
}


class BatchResource:
    """``POST /api/v1/conversations/batch``: up to ``MAX_BATCH_ITEMS`` conversations, each on its own.

    Every item is validated (with the single POST's limits, ``MAX_BODY_BYTES`` included), limited and
    committed independently and gets its own result: ``accepted``, ``duplicate``, ``conflict``, ``invalid``
    (with its ``errors``) or ``rate_limited`` (with a ``Retry-After`` header on the answer). Only new
    conversations take inbound slots: resending a batch after ``Retry-After`` answers the accepted ones as
    ``duplicate`` and spends the slots on the rest. When the limit has room for none of the new ones and
    none was accepted before, the answer is ``429``. Parsing runs off the event loop (a 16 MiB body
    takes a while and must not stall other requests).
    """

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.envelope = batch_envelope(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        lane = parse_lane(req)
        key = request_key(req, "batch")
        body = await read_body(req, self.settings.max_batch_body_bytes, self.settings.body_timeout_seconds)
        results, valid, request_hash = await asyncio.to_thread(self.validate, body)
        keyed = {index for index, c in valid if c.conversation_id is None}  # a body's own ids win over the key
        use = await look_up(key, request_hash) if key is not None and keyed else None
        valid = self.named(valid, use, keyed)
        prepared = await self.admission.prepare([conversation for _index, conversation in valid], lane)
        fresh = []
        for (index, _c), (new, known) in zip(valid, prepared):
            if known is None:
                fresh.append((index, new))
            else:
                results[index] = api.BatchItemResult(index=index, status=OUTCOME_STATUS[known], conversation_id=new.id)
        quota = await self.admission.limiter.take(len(fresh))
        resp.set_headers(quota.headers())
        if fresh and not quota.granted and len(fresh) == len(valid):
            raise self.admission.rate_limited(quota)  # before the key is bound: a refusal writes nothing
        granted = fresh[: quota.granted]
        if use is not None and any(index in keyed for index, _new in granted):
            granted = await bind_and_rename(use, granted, keyed)
        await self.commit(granted, results)
        for index, _new in fresh[quota.granted :]:
            results[index] = api.BatchItemResult(index=index, status="rate_limited")
        metrics.web().rate_limited.inc(len(fresh) - quota.granted)
        if quota.granted < len(fresh):
            resp.set_header("Retry-After", str(quota.retry_after))
        summary = Counter(result.status for result in results)
        resp.media = api.BatchResults(results=results, summary=summary).model_dump(mode="json", exclude_none=True)

    @staticmethod
    def named(
        valid: list[tuple[int, ConversationBase]], use: KeyUse | None, keyed: set[int]
    ) -> list[tuple[int, ConversationBase]]:
        """The valid items, those without an id of their own (``keyed``) named by the key's ``use``."""
        if use is None:
            return valid
        return [
            (index, c.model_copy(update={"conversation_id": use.conversation_id(index)}) if index in keyed else c)
            for index, c in valid
        ]

    async def commit(
        self, granted: list[tuple[int, queries.NewConversation]], results: list[api.BatchItemResult | None]
    ) -> None:
        """Commit the items the inbound limit has room for, each on its own; record how each went."""
        outcomes = await asyncio.gather(*(self.admission.commit(new) for _index, new in granted))
        for (index, new), outcome in zip(granted, outcomes):
            results[index] = api.BatchItemResult(index=index, status=OUTCOME_STATUS[outcome], conversation_id=new.id)

    def validate(self, body: bytes) -> tuple[list[api.BatchItemResult | None], list[tuple[int, ConversationBase]], str]:
        """Parse the envelope and validate each item on its own: a result for each invalid item (the rest
        ``None``), the valid ones with their index, and a hash of the items (what an idempotency key asks)."""
        items = parse_json(self.envelope, body, 'The body must be {"conversations": [...]}.').conversations
        request_hash = hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        results: list[api.BatchItemResult | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            try:
                self.check_size(item)
                valid.append((index, self.model.model_validate(item)))
            except ValidationError as error:
                results[index] = api.BatchItemResult(index=index, status="invalid", errors=field_errors(error))
            except ItemTooLarge as error:
                results[index] = api.BatchItemResult(
                    index=index, status="invalid", errors=[{"path": "(item)", "message": str(error)}]
                )
        return results, valid, request_hash

    def check_size(self, item: Any) -> None:
        """An item gets the single POST's body limit, measured as its compact JSON."""
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode())
        if size > self.settings.max_body_bytes:
            raise ItemTooLarge(
                f"the conversation is {size} bytes as JSON, over the {self.settings.max_body_bytes} allowed for one "
                "conversation"
            )


class ItemTooLarge(ValueError):
    """One item of a batch is larger than a single POST may be."""
