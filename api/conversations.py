"""``POST`` and ``GET /api/v1/conversations`` (accept; the operations view) and ``GET /api/v1/conversations/{id}``."""

from __future__ import annotations

import asyncio
import re

import falcon

from api import models as api
from api.admission import Admission
from api.body import parse_json, read_body, require_json
from api.documents import listed_document, status_document
from api.errors import ApiError, bad_parameter
from api.idempotency import bind_and_rename, look_up, request_key
from api.params import check_parameters, decode_cursor, encode_cursor, parse_lane, parse_number, parse_window
from insights.incoming import ConversationBase, request_models
from insights.pii.masker import Masker
from insights.schemas import CONVERSATION_ID_PATTERN
from settings import Settings
from store import queries, reports
from store.db import call_and_release
from store.models import STATUSES

CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)
LISTING_PARAMETERS = {"status", "reason", "start_time", "end_time", "limit", "cursor"}
MAX_REASON_CHARS = 200


class ConversationsResource:
    """``POST /api/v1/conversations``: validate, limit, commit as ``queued``, enqueue, ``202``.
    ``GET``: the operations view (:meth:`on_get`)."""

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        lane = parse_lane(req)
        key = request_key(req, "conversations")
        conversation = self.parse(
            await read_body(req, self.settings.max_body_bytes, self.settings.body_timeout_seconds)
        )
        use = None
        if key is not None and conversation.conversation_id is None:  # a body's own id wins over the key
            use = await look_up(key, queries.payload_digest(conversation.canonical_payload()))
            conversation = conversation.model_copy(update={"conversation_id": use.conversation_id()})
        [(new, outcome)] = await self.admission.prepare([conversation], lane)
        quota = await self.admission.limiter.take(1 if outcome is None else 0)  # only a new one takes a slot
        resp.set_headers(quota.headers())
        if outcome is None:
            if not quota.granted:
                raise self.admission.rate_limited(quota)  # before the key is bound: a refusal writes nothing
            if use is not None:
                [(_index, new)] = await bind_and_rename(use, [(None, new)], {None})
            outcome = await self.admission.commit(new)
        if outcome is queries.InsertOutcome.CONFLICT:
            raise ApiError(
                falcon.HTTP_409,
                "conflict",
                f"Conversation {new.id} was already accepted with a different payload.",
                conversation_id=new.id,
            )
        resp.status = falcon.HTTP_202
        resp.location = f"/api/v1/conversations/{new.id}"
        resp.media = api.dump(api.Accepted(conversation_id=new.id))

    def parse(self, body: bytes) -> ConversationBase:
        return parse_json(self.model, body, "The conversation does not match the schema.")

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The operations view: conversations by status and failure reason, a keyset page at a time."""
        query = self.parse_listing(req)
        page, next_after = await asyncio.to_thread(call_and_release, reports.list_conversations, query)
        resp.media = api.dump(
            api.ConversationPage(
                conversations=[listed_document(c) for c in page],
                returned_count=len(page),
                next_cursor=encode_cursor(next_after) if next_after else None,
            )
        )

    def parse_listing(self, req: falcon.Request) -> reports.ConversationQuery:
        start, end = parse_window(req, LISTING_PARAMETERS, required=False)
        status, cursor = req.get_param("status"), req.get_param("cursor")
        if status is not None and status not in STATUSES:
            raise bad_parameter("status", f"one of {', '.join(STATUSES)}, got {status!r}")
        reason = req.get_param("reason")
        if reason is not None and not 1 <= len(reason) <= MAX_REASON_CHARS:
            raise bad_parameter("reason", f"1 to {MAX_REASON_CHARS} characters")
        return reports.ConversationQuery(
            start=start,
            end=end,
            status=status,
            reason=reason,
            limit=parse_number(req, "limit", int, 1, self.settings.max_page_size, self.settings.default_page_size),
            after=decode_cursor(cursor) if cursor is not None else None,
        )


class ConversationResource:
    """``GET /api/v1/conversations/{id}``: status, attempts, last error and, once done, the insight; with
    ``include=payload``, the messages and metadata too; with ``include=sent``, the text that goes to xAI."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.masker = Masker.of(settings)

    async def on_get(self, req: falcon.Request, resp: falcon.Response, conversation_id: str) -> None:
        check_parameters(req, {"include"})
        include = req.get_param("include")
        if include not in (None, "payload", "sent"):
            raise bad_parameter("include", f"only 'payload' or 'sent', got {include!r}")
        found = None
        if CONVERSATION_ID.fullmatch(conversation_id):  # no other id was ever accepted (nor a NUL sent to SQL)
            found = await asyncio.to_thread(call_and_release, queries.get_conversation, conversation_id)
        if found is None:
            raise ApiError(falcon.HTTP_404, "not_found", f"No conversation {conversation_id}.")
        masker = self.masker if include == "sent" else None
        resp.media = api.dump(status_document(*found, self.settings, with_payload=include == "payload", masker=masker))
