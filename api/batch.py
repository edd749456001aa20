"""``POST /api/v1/conversations/batch``: many conversations, each validated, limited and committed on its own."""

from __future__ import annotations

import asyncio
from collections import Counter

import falcon
from pydantic import ValidationError

import metrics
from api.admission import Admission
from api.body import parse_json, read_body, require_json
from api.errors import field_errors
from insights import api_models as api
from insights.schemas import batch_envelope, request_models
from settings import Settings
from store import queries

OUTCOME_STATUS = {
    queries.InsertOutcome.CREATED: "accepted",
    queries.InsertOutcome.DUPLICATE: "duplicate",
    queries.InsertOutcome.CONFLICT: "conflict",
}


class BatchResource:
    """``POST /api/v1/conversations/batch``: up to ``MAX_BATCH_ITEMS`` conversations, each on its own.

    Every item is validated, limited and committed independently and gets its own result: ``accepted``,
    ``duplicate``, ``conflict``, ``invalid`` (with its ``errors``) or ``rate_limited`` (with a
    ``Retry-After`` header on the answer). Each counts against the inbound limit; when the limit leaves
    room for none, the answer is ``429``.
    """

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.envelope = batch_envelope(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        body = await read_body(req, self.settings.max_batch_body_bytes, self.settings.body_timeout_seconds)
        items = parse_json(self.envelope, body, "The body must be {\"conversations\": [...]}.").conversations
        results: list[api.BatchItemResult | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            try:
                valid.append((index, self.model.model_validate(item)))
            except ValidationError as error:
                results[index] = api.BatchItemResult(index=index, status="invalid", errors=field_errors(error))
        granted, retry_after = await self.admission.limiter.take(len(valid)) if valid else (0, 0)
        if valid and not granted:
            raise self.admission.rate_limited(retry_after)
        committed = await asyncio.gather(*(self.admission.commit(c) for _index, c in valid[:granted]))
        for (index, _c), (conversation_id, outcome) in zip(valid, committed):
            results[index] = api.BatchItemResult(index=index, status=OUTCOME_STATUS[outcome], conversation_id=conversation_id)
        for index, _c in valid[granted:]:
            results[index] = api.BatchItemResult(index=index, status="rate_limited")
        metrics.web().rate_limited.inc(len(valid) - granted)
        if granted < len(valid):
            resp.set_header("Retry-After", str(retry_after))
        summary = Counter(result.status for result in results)
        resp.media = api.BatchResults(results=results, summary=summary).model_dump(mode="json", exclude_none=True)
