"""``POST /api/v1/conversations`` and ``GET /api/v1/conversations/{id}``."""

from __future__ import annotations

import asyncio
import re

import falcon

from api.admission import Admission
from api.body import parse_json, read_body, require_json
from api.errors import ApiError
from api.idempotency import first_use
from insights import api_models as api
from insights.schemas import CONVERSATION_ID_PATTERN, ConversationBase, request_models
from settings import Settings
from store import queries
from store.idempotency import derived_id
from store.db import call_and_release
from store.documents import status_document

CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)


class ConversationsResource:
    """``POST /api/v1/conversations``: validate, limit, commit as ``queued``, enqueue, ``202``."""

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        conversation = self.parse(await read_body(req, self.settings.max_body_bytes, self.settings.body_timeout_seconds))
        if conversation.conversation_id is None:
            conversation = await self.name_by_idempotency_key(req, conversation)
        [(new, outcome)] = await self.admission.prepare([conversation])
        quota = await self.admission.limiter.take(1 if outcome is None else 0)  # only a new one takes a slot
        resp.set_headers(quota.headers())
        if outcome is None:
            if not quota.granted:
                raise self.admission.rate_limited(quota)
            outcome = await self.admission.commit(new)
        conversation_id = new.id
        if outcome is queries.InsertOutcome.CONFLICT:
            raise ApiError(
                falcon.HTTP_409, "conflict",
                f"Conversation {conversation_id} was already accepted with a different payload.",
                conversation_id=conversation_id,
            )
        resp.status = falcon.HTTP_202
        resp.location = f"/api/v1/conversations/{conversation_id}"
        resp.media = api.dump(api.Accepted(conversation_id=conversation_id))

    def parse(self, body: bytes) -> ConversationBase:
        return parse_json(self.model, body, "The conversation does not match the schema.")

    async def name_by_idempotency_key(self, req: falcon.Request, conversation: ConversationBase) -> ConversationBase:
        """The conversation with the id its ``Idempotency-Key`` names, if the request has one."""
        keyed = await first_use(req, "conversations", queries.payload_digest(conversation.canonical_payload()))
        return conversation if keyed is None else conversation.model_copy(update={"conversation_id": derived_id(*keyed)})


class ConversationResource:
    """``GET /api/v1/conversations/{id}``: status, attempts, last error and, once done, the insight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response, conversation_id: str) -> None:
        found = None
        if CONVERSATION_ID.fullmatch(conversation_id):  # no other id was ever accepted (nor a NUL sent to SQL)
            found = await asyncio.to_thread(call_and_release, queries.get_conversation, conversation_id)
        if found is None:
            raise ApiError(falcon.HTTP_404, "not_found", f"No conversation {conversation_id}.")
        resp.media = api.dump(status_document(*found, self.settings))
