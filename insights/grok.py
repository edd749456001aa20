"""The Grok client: one chat-completions call analyzes one batch.

xAI's API is OpenAI-compatible: ``POST {GROK_BASE_URL}/chat/completions`` with a bearer key. The answer is
asked for as strict JSON (structured outputs with a JSON schema, or ``json_object``), then treated as
untrusted: parsed, and every row re-validated by :func:`insights.schemas.validate_rows`. Every call sends
the instructions and the answer's format first and the batch last, with one ``x-grok-conv-id`` per prompt
version and model (``GROK_CACHE_ROUTING``), so that xAI's prompt cache serves what the calls share.

A call has three steps, so that the wait for Grok costs a worker almost nothing (``actors.calls``):

1. :meth:`GrokClient.prepare` (a worker thread): build the request, wait for the call's place in the
   shared :class:`OutboundGate` with its estimated tokens (prompt from its characters, completion from the
   recent usage per conversation, :class:`insights.usage_estimate.UsageEstimate`), and claim the batch;
2. :meth:`GrokClient.post` (the event loop): log the call's start in the gate, send it with ``httpx``
   and wait for the answer, a coroutine among thousands, HTTP/2 where the server speaks it;
3. :meth:`GrokClient.finish` (a worker thread): classify a refusal, settle the gate's reservation with the
   answer's ``usage``, and read the rows. A paid answer is read whether Redis answers or not: the notes
   kept there about it (tokens, model, credits back) are left out while it does not.

:meth:`GrokClient.analyze` runs the three in a row, for one-off use.

Failures are classified by the classes of :mod:`insights.errors`, one per reaction: credits exhausted
(any refusal that speaks of credits or a spending limit, told first), transient (408, 5xx, timeouts), rate
limited (429), refused for its content (400, 413, 422), misconfigured (401, 403, 404), unusable answer.
While credits are exhausted the gate lets one probe call through a pause (:mod:`insights.credits`); the
client ends the probe with what its answer says. The API key never appears in an error, a log line or a
stored row: an exception raised by the call is named by its class only (HTTP libraries quote URLs and
headers in their messages), and an error body is redacted of the key.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from insights.analyzer import Claimer, ConversationToAnalyze
from insights.completion import read_completion, usage_in
from insights.credits import ACTION as CREDITS_ACTION
from insights.errors import (
    CreditsExhausted,
    GrokError,
    MisconfiguredError,
    ProviderBusy,
    RateLimited,
    RequestRefused,
    TransientError,
    UnusableAnswer,
)
from insights.models import ModelWatch
from insights.outbound import OutboundGate, Reservation
from insights.pii.masker import Masker
from insights.prompt import PROMPT_VERSION, cache_routing_id, result_schema, system_prompt, user_message
from insights.refusals import credits_exhausted, error_detail, parse_retry_after, refused_for_content
from insights.schemas import AnalysisResult
from insights.taxonomy import Taxonomy
from insights.usage_estimate import UsageEstimate
from settings import Settings

logger = logging.getLogger(__name__)

RATE_LIMIT_DEFAULT_WAIT = 1.0  # seconds to pause after a 429 without Retry-After
PROBE_MARGIN_SECONDS = 30.0  # a credits probe is held this long past its timeouts (its answer read and classified)
REDIS_AWAY_SECONDS = 5.0  # how long a batch waits when the gate could not log its call's start (Redis away)
CACHE_ROUTING_HEADER = "x-grok-conv-id"  # xAI: calls with the same value reach the server that caches their prefix

# Raised before anything is sent: the operator's to fix (GROK_BASE_URL, GROK_API_KEY), not Grok's.
UNSENDABLE = (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)


def response_format(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The request's ``response_format``: structured outputs with the answer's ``schema``, or ``json_object``."""
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "conversation_insights", "strict": True, "schema": schema},
        }
    return {"type": "json_object"}


def classify(error: Exception, elapsed: float) -> GrokError:
    """The exception a call raised, as a :class:`GrokError` that names its class and never quotes it."""
    name = type(error).__name__
    if isinstance(error, UNSENDABLE):
        return MisconfiguredError(f"cannot send a request to Grok ({name}): check GROK_BASE_URL and GROK_API_KEY")
    if isinstance(error, httpx.TimeoutException):
        return TransientError(f"Grok timed out after {elapsed:.1f} s ({name})")
    if isinstance(error, httpx.ConnectError):
        return TransientError(f"cannot reach Grok ({name})")
    return TransientError(f"Grok call failed ({name})")


@dataclass(frozen=True)
class PreparedCall:
    """A claimed batch whose call may start now: its request, encoded once, and its place in the gate."""

    conversations: list[ConversationToAnalyze]
    body: bytes
    prompt_chars: int  # the estimate's measure, characters of the encoded request
    reservation: Reservation

    @property
    def conversation_ids(self) -> list[str]:
        return [c.conversation_id for c in self.conversations]


@dataclass(frozen=True)
class Answer:
    """What came back over the wire, read in full."""

    status: int
    retry_after: str | None
    text: str


class GrokClient:
    """Analyzes batches with Grok; every call waits for the shared :class:`OutboundGate` first."""

    def __init__(
        self, settings: Settings, gate: OutboundGate, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.taxonomy, self.masker = Taxonomy.of(settings), Masker.of(settings)
        self.prompt_version = self.masker.versioned(f"{PROMPT_VERSION}-{self.taxonomy.version()}")
        self.system_prompt, self.schema = system_prompt(self.taxonomy), result_schema(self.taxonomy)
        self.model, self.reasoning_effort = settings.grok_model, settings.grok_reasoning_effort
        self._settings = settings
        self.url = settings.grok_base_url.rstrip("/") + "/chat/completions"
        self.timeout = httpx.Timeout(settings.grok_read_timeout_seconds, connect=settings.grok_connect_timeout_seconds)
        self.response_format = response_format(settings.grok_response_format, self.schema)
        self.cache_routing_id = (
            cache_routing_id(self.prompt_version, self.model, [self.system_prompt, self.response_format])
            if settings.grok_cache_routing
            else None
        )
        self.output_tokens_per_conversation = settings.grok_output_tokens_per_conversation
        self.credits_pause = settings.grok_credits_pause_seconds
        self.probe_lease = (
            settings.grok_connect_timeout_seconds + settings.grok_read_timeout_seconds + PROBE_MARGIN_SECONDS
        )
        self.gate = gate
        self.usage = UsageEstimate(settings.grok_output_tokens_per_conversation)
        self.transport = transport
        self._key = settings.grok_api_key

    @functools.cached_property
    def models(self) -> ModelWatch:
        """Which models answer, counted in Redis beside the gate (see :mod:`insights.models`)."""
        return ModelWatch(self.gate.client, self._settings)

    def http_client(self) -> httpx.AsyncClient:
        """A client for one event loop: no cap on connections (the gate alone sets the pace), HTTP/2 where
        the server speaks it. A connection whose call has ended is kept for the next one (as many as were in
        flight, each for five idle seconds): opening one a call cost a third of the worker's CPU at 150 calls/s
        over HTTP/1.1."""
        return httpx.AsyncClient(
            http2=True,
            timeout=self.timeout,
            transport=self.transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=5.0),
            headers=self.headers(),
        )

    def headers(self) -> dict[str, str]:
        """The headers of every call: the key, and the prompt cache's routing (``CACHE_ROUTING_HEADER``)."""
        routing = {CACHE_ROUTING_HEADER: self.cache_routing_id} if self.cache_routing_id else {}
        return {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json", **routing}

    def request_body(self, conversations: list[ConversationToAnalyze]) -> dict[str, Any]:
        """The call: what every call shares first (the instructions; the format and its schema), the batch last,
        so that xAI's prompt cache, which matches messages from the start, serves the shared part. Both lanes
        pass conversations masked by :attr:`masker` (``actors.masking``): only masked text is sent."""
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": user_message(conversations)},
            ],
            "response_format": self.response_format,
            "temperature": 0,
            "max_tokens": self.output_tokens_per_conversation * len(conversations),
            **({"reasoning_effort": self.reasoning_effort} if self.reasoning_effort else {}),
        }

    def encoded(self, conversations: list[ConversationToAnalyze]) -> str:
        return json.dumps(self.request_body(conversations), ensure_ascii=False)

    def prepare(self, conversations: list[ConversationToAnalyze], claim: Claimer | None = None) -> PreparedCall | None:
        """Wait for the call's place in the gate, then claim the batch (``claim``; the call carries only the
        conversations it claimed); ``None`` when none was left to claim. Raises the gate's refusals."""
        body = self.encoded(conversations)
        reservation = self.gate.reserve(self.usage.estimate(len(body), len(conversations)), self.probe_lease)
        if claim is not None:
            claimed = set(claim([c.conversation_id for c in conversations]))
            if len(claimed) < len(conversations):  # some were settled meanwhile: the call carries the rest
                conversations = [c for c in conversations if c.conversation_id in claimed]
                body = self.encoded(conversations)
            if not conversations:
                self.gate.settle(reservation, 0)
                if reservation.probe:
                    self.gate.credits.release(reservation.id, 0)  # no call: the next one may probe
                return None
        return PreparedCall(conversations, body.encode(), len(body), reservation)

    async def post(self, http: httpx.AsyncClient, call: PreparedCall) -> Answer:
        """Log the call's start in the gate, send it and read its answer whole; a failure to do so as a
        :class:`GrokError`. The start is logged here, the moment before the call leaves, so that no wait
        between the claim and the send (a busy loop) can bunch calls at the server."""
        try:
            while wait_ms := self.gate.try_start(call.reservation):  # one round trip to Redis, rarely more
                await asyncio.sleep(wait_ms / 1000)
        except redis.RedisError:  # the call has not left: not an attempt, the batch waits
            raise ProviderBusy(REDIS_AWAY_SECONDS, "the shared gate in Redis is not answering") from None
        started = time.monotonic()
        try:
            response = await http.post(self.url, content=call.body)
        except Exception as error:  # every failure of the call is classified; none escapes with its text
            if call.reservation.probe:  # no answer says nothing of credits: the next probe after a pause
                self.gate.credits.release(call.reservation.id, self.credits_pause)
            raise classify(error, time.monotonic() - started) from None
        return Answer(response.status_code, response.headers.get("Retry-After"), response.text)

    def finish(self, call: PreparedCall, answer: Answer) -> AnalysisResult:
        """The answer as validated rows; a refusal or an unusable answer as a :class:`GrokError`."""
        try:
            self._raise_for_status(answer, call)
        except (RateLimited, RequestRefused, MisconfiguredError, CreditsExhausted):
            self.gate.settle(call.reservation, 0)  # a refused request uses no tokens
            raise
        try:
            document = json.loads(answer.text)
        except ValueError:
            raise UnusableAnswer("Grok's response is not a chat completion") from None
        usage = usage_in(document)
        if usage:
            total = usage.get("total_tokens")
            kept(self.gate.settle, call.reservation, total if isinstance(total, int) else call.reservation.tokens)
            self.usage.learn(call.prompt_chars, len(call.conversations), usage)
        result = read_completion(
            call.conversation_ids,
            document,
            answer.text,
            model=self.model,
            prompt_version=self.prompt_version,
            usage=usage,
            vocabulary=self.taxonomy.vocabulary,
        )
        kept(self.models.note, result.model)
        return result

    def analyze(self, conversations: list[ConversationToAnalyze], claim: Claimer | None = None) -> AnalysisResult:
        """One call for the batch, start to end, in the calling thread (see the module's docstring)."""
        return asyncio.run(self._analyze_once(conversations, claim))

    async def _analyze_once(self, conversations: list[ConversationToAnalyze], claim: Claimer | None) -> AnalysisResult:
        async with self.http_client() as http:  # made before the gate's wait: the call goes the moment it may
            call = self.prepare(conversations, claim)
            if call is None:
                return AnalysisResult(
                    conversation_ids=[], rows=[], model=self.model, prompt_version=self.prompt_version, raw_response=""
                )
            return self.finish(call, await self.post(http, call))

    def _raise_for_status(self, answer: Answer, call: PreparedCall) -> None:
        """The answer's refusal as a :class:`GrokError`. A refusal for credits holds every call for a pause
        (ending the probe, if this call was it); any other answer to the probe lifts the hold."""
        status, reservation = answer.status, call.reservation
        detail = error_detail(answer, self._key) if status >= 300 else ""
        if credits_exhausted(status, answer.text):
            reason = f"{CREDITS_ACTION} (Grok {status}{error_detail(answer, self._key, message_only=True)})"
            self.gate.credits.hold(reason, self.credits_pause, reservation.id)
            raise CreditsExhausted(reason, self.credits_pause)
        if reservation.probe:
            kept(self.gate.credits.restored, reservation.id)
        if status < 300:
            return
        retry_after = parse_retry_after(answer.retry_after)
        if status == 429:
            wait = retry_after if retry_after is not None else RATE_LIMIT_DEFAULT_WAIT
            self.gate.pause(wait, f"rate limited by Grok (429){detail}")
            raise RateLimited(f"Grok rate limit (429){detail}", wait)
        if status == 408 or status >= 500:
            raise TransientError(f"Grok error {status}{detail}", retry_after)
        if status == 404:
            raise MisconfiguredError(f"Grok does not know the model GROK_MODEL={self.model!r} (404){detail}")
        if refused_for_content(status, detail):
            raise RequestRefused(f"Grok refused the request ({status}){detail}")
        raise MisconfiguredError(f"Grok refused the request ({status}){detail}")


def kept(note: Callable[..., object], *args: Any) -> None:
    """Keep a note in Redis (an answer's tokens, the model that answered, credits back, what masking
    counted), or go on without it: a paid answer is stored, and the bulk lane moves, whether Redis answers
    or not (the gate then counts a call's estimate)."""
    try:
        note(*args)
    except redis.RedisError as error:
        logger.warning("Redis is not answering; an answer is stored without its note (%s): %s", note.__name__, error)
