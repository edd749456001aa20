"""Analyzing a batch: ``analyze_batch``.

``analyze_batch`` reads the batch's conversations still ``queued``, waits for its call's slot in the shared
gate, and claims them (``processing``, one attempt each, under a fresh claim token and this worker's
lease). With Grok it then hands the call to this process's call engine (``actors.calls``) and takes its
next message: the call waits for its answer as a coroutine, and a finishing thread stores the validated
rows with the raw response (:func:`actors.outcomes.conclude`). Offline, the analysis runs in the thread.

What each failure means is :mod:`actors.outcomes`'s to say: retry later, set aside, split, fail one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import uuid

import dramatiq
from dramatiq.middleware import CurrentMessage

from actors import masking, outcomes
from actors.broker import ANALYZE_QUEUE, STORE_QUEUE, gate, settings, streamed_lanes
from actors.calls import CallEngine, Job
from insights.analyzer import Analyzer, ConversationToAnalyze
from insights.errors import GrokError
from insights.grok import GrokClient, PreparedCall
from insights.offline import OfflineAnalyzer
from insights.pii.masker import Masker
from insights.taxonomy import Taxonomy
from settings import Settings
from store import queries
from store.claims import Claim, claim_for_processing
from store.db import release

logger = logging.getLogger(__name__)
ANALYZE_PRIORITY = 0  # before collecting (10): analysis capacity is not for collecting to take
STOP_GRACE_SECONDS = 10.0  # at shutdown, how long calls in flight may still answer before they are given back


@functools.cache
def analyzer() -> Analyzer:
    """Grok when ``GROK_API_KEY`` is set, else the deterministic offline analyzer."""
    current = settings()
    if current.offline:
        return OfflineAnalyzer(Taxonomy.of(current), Masker.of(current))
    return GrokClient(current, gate())


@functools.cache
def worker_name() -> str:
    """This process's name in the database's worker leases (unique even where pids repeat, as in containers)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@functools.cache
def engine() -> CallEngine:
    """This process's call engine (started by the worker's boot hook, ``actors.worker.WorkerLifecycle``)."""
    active = analyzer()
    make_http = active.http_client if isinstance(active, GrokClient) else None
    return CallEngine(worker_name(), settings().lease_seconds, make_http, capacity=settings().calls_in_flight)


def declare(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare this module's actors on ``broker`` (the worker's set-up, ``actors.worker``), retried as
    ``settings`` say."""
    backoff_ms = outcomes.retry_backoff_ms(settings)
    dramatiq.actor(
        analyze_batch,
        queue_name=ANALYZE_QUEUE,
        priority=ANALYZE_PRIORITY,
        broker=broker,
        max_retries=settings.max_retries - 1,  # with the first try, MAX_RETRIES tries in all
        min_backoff=backoff_ms,
        max_backoff=outcomes.max_backoff_ms(settings),
        on_retry_exhausted="batch_exhausted",
    )
    for actor in (store_results, batch_exhausted):
        dramatiq.actor(
            actor, queue_name=STORE_QUEUE, max_retries=settings.max_retries, min_backoff=backoff_ms, broker=broker
        )


def analyze_batch(conversation_ids: list[str]) -> None:
    """Actor: claim the batch's waiting conversations and analyze them (see the module's docstring)."""
    if hold := outcomes.grok_hold():
        outcomes.set_aside(conversation_ids, *hold)
        return
    payloads = queries.waiting_payloads(conversation_ids, streamed_lanes(settings()))
    if not payloads:
        return  # a batch sent again whose conversations are settled, or in another call
    active = analyzer()
    conversations = masking.masked_for_sending(
        active, [ConversationToAnalyze(i, json.loads(payload)["messages"]) for i, payload in payloads.items()]
    )
    release()  # the wait on the gate holds no database connection
    if not conversations:
        return  # none could be masked: each is failed with its reason
    message = CurrentMessage.get_current_message()
    batch = outcomes.Batch(
        [c.conversation_id for c in conversations],
        message.message_id,
        message.options.get("retries", 0),
        message.asdict(),
        active.model,
        active.prompt_version,
    )
    claims: list[Claim] = []
    try:
        analyze_claimed(active, batch, conversations, claims)
    except Exception as error:
        if not claims:
            raise  # nothing claimed: the message's retry finds the conversations still queued
        outcomes.crashed(batch, claims[0], error)


def analyze_claimed(
    active: Analyzer, batch: outcomes.Batch, conversations: list[ConversationToAnalyze], claims: list[Claim]
) -> None:
    """Claim the batch when its call may start (the claim appended to ``claims``); offline, analyze and store
    it here, with Grok hand the call to the engine."""
    claim = functools.partial(claim_now, claims)
    try:
        if isinstance(active, GrokClient):
            call = active.prepare(conversations, claim)
            if call is not None:
                engine().submit(grok_job(active, batch, claims[0], call))
            return
        outcome = active.analyze(conversations, claim)
    except GrokError as error:
        outcome = error
    outcomes.conclude(batch, claims[0] if claims else None, outcome)


def claim_now(claims: list[Claim], conversation_ids: list[str]) -> list[str]:
    """Claim the batch once its call may start (the analyzer calls this after the gate's wait, so that
    a batch waiting for its slot leaves its conversations ``queued``); return the ids claimed."""
    current = settings()
    claim = claim_for_processing(conversation_ids, current.max_retries, streamed_lanes(current), worker_name())
    release()
    claims.append(claim)
    return [c.id for c in claim.conversations]


def grok_job(client: GrokClient, batch: outcomes.Batch, claim: Claim, call: PreparedCall) -> Job:
    """The engine's job for one claimed call: post it, then read and store the answer (or handle the failure)."""

    def finish(answer: object) -> None:
        if isinstance(answer, GrokError):
            outcomes.conclude(batch, claim, answer)
            return
        try:
            outcome: object = client.finish(call, answer)
        except GrokError as error:
            outcome = error
        outcomes.conclude(batch, claim, outcome)

    return Job(
        send=functools.partial(client.post, call=call),
        finish=finish,
        give_back=functools.partial(outcomes.give_back, batch, claim),
        crashed=functools.partial(outcomes.crashed, batch, claim),
    )


def store_results(analysis: dict | None) -> None:
    """Actor: store a result that the thread that made the call could not store itself."""
    if analysis is not None:
        outcomes.store(analysis)


def batch_exhausted(message: dict, retry_info: dict) -> None:
    """Actor: a batch's message spent its retries (the database or Redis failed it, not Grok: see
    :func:`actors.outcomes.retry_later`) and is dead-lettered: its open conversations are ``failed``."""
    outcomes.fail_exhausted(
        message["args"][0], retry_info.get("retries", 0) + 1, message.get("options", {}).get("traceback")
    )
