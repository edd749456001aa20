"""What the xAI emulator answers: Grok's completions, bent by faults and standing behaviours, and xAI's refusals.

xAI's errors are ``{"code": <the text of a gRPC status>, "error": <message>}``; status codes in general:
https://docs.x.ai/developers/debugging (400 an invalid argument, 403 no permission, 404 a model not found,
429 a rate limit). The refusals played here, and where their words come from:

- prompt too long: ``400`` "This model's maximum prompt length is 131072 but the request contains 136973
  tokens." (https://github.com/cline/cline/issues/3120);
- unknown model: ``404`` ``{"code": "Some requested entity was not found", "error": "The model grok-beta does
  not exist or your team <id> does not have access to it. ..."}``
  (https://github.com/yihong0618/bilingual_book_maker/issues/464);
- content: ``403`` ``{"code": "The caller does not have permission to execute the specified operation",
  "error": "Content violates usage guidelines. Team: ..., API key ID: ..., Model: grok-4-0709, Failed check:
  SAFETY_CHECK_TYPE_BIO"}`` (https://github.com/UKGovernmentBEIS/inspect_ai/pull/2267,
  https://github.com/theopenco/llmgateway/pull/1785). Hence 403 by default, though a 403 usually means a
  bad key or a blocked team: a client must tell the two apart by the message. The emulator can answer 400
  instead (OpenAI's habit for a refused prompt);
- exhausted credits: "Your team <id> has either used all available credits or reached its monthly spending
  limit. ...", undocumented by xAI, seen as ``429`` (early 2026) and ``403`` (later), as a bare JSON string
  and as ``{"code", "error"}`` (docs/xai-today.md, section 6): every shape and both statuses can be played.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from insights.taxonomy import OTHER
from testing.catalogue import served, usage
from testing.rate_limits import TEAM
from testing.rows import RowCache

POISON = "POISON"
INJECT = "INJECT"
REFUSE = "REFUSE"
INJECTED_SENTIMENT = re.compile(r"sentiment (-?\d+(?:\.\d+)?)")

# xAI's error bodies carry the text of a gRPC status as their "code".
CODES = {
    400: "Client specified an invalid argument",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    429: "Some resource has been exhausted",
}


def xai_error(status: int, message: str) -> dict[str, str]:
    return {"code": CODES.get(status, "Unknown error"), "error": message}


def unknown_model(model: str) -> str:
    return (
        f"The model {model} does not exist or your team {TEAM} does not have access to it. Please ensure "
        "you're using the correct API key. If you believe this is a mistake, please contact support and quote "
        "your team ID and the model name."
    )


def prompt_too_long(context: int, prompt_tokens: int) -> str:
    return f"This model's maximum prompt length is {context} but the request contains {prompt_tokens} tokens."


def content_refused(model: str) -> str:
    return (
        f"Content violates usage guidelines. Team: {TEAM}, API key ID: emulator-key-id, Model: {model}, "
        "Failed check: SAFETY_CHECK_TYPE_EMULATED"
    )


def credits_spent() -> str:
    return (
        f"Your team {TEAM} has either used all available credits or reached its monthly spending limit. "
        "To continue making API requests, please purchase more credits or raise your spending limit."
    )


def credits_refusal(shape: str, status: int) -> Any:
    """The body of a refusal for exhausted credits in ``shape`` (``testing.config.CREDITS_SHAPES``)."""
    message = credits_spent()
    return {"string": message, "error": {"error": message}}.get(shape) or xai_error(status, message)


def completion(
    content: str,
    finish_reason: str,
    body: dict[str, Any],
    prompt_tokens: int,
    cached_tokens: int = 0,
    batch: bool = False,
) -> dict[str, Any]:
    """A chat completion answering ``body``, named after the model that serves its ``model`` and billed as
    xAI bills it (:mod:`testing.catalogue`)."""
    model, effort = served(body.get("model", "?"), body.get("reasoning_effort"))
    return {
        "id": f"chatcmpl-emulated-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": usage(model, prompt_tokens, cached_tokens, len(content) // 4, effort, batch),
    }


def holds(conversations: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    """The conversations with ``marker`` in one of their messages."""
    return [c for c in conversations if any(marker in m["content"] for m in c["messages"])]


def as_asked(row: dict[str, Any], closed: bool) -> dict[str, Any]:
    """A row of the (closed-taxonomy) analyzer as the request asked for it: with the taxonomy (its prompt
    asks for a ``suggested_cluster``), as is; without, a free slug where the taxonomy had none (the
    suggestion), as a model left to invent its own labels writes it."""
    if closed:
        return row
    free = {key: value for key, value in row.items() if key != "suggested_cluster"}
    return {
        **free,
        "clusters": [row["suggested_cluster"]]
        if row.get("suggested_cluster")
        else [slug for slug in row["clusters"] if slug != OTHER],
    }


def asks_for_taxonomy(body: dict[str, Any]) -> bool:
    return "suggested_cluster" in body["messages"][0]["content"]


def analyze(cache: RowCache, conversations: list[dict[str, Any]], closed: bool = True) -> list[dict[str, Any]]:
    """Rows for the batch, one per conversation (``closed``: within the taxonomy, see :func:`as_asked`), as
    a gullible model writes them when the batch holds an injection: it obeys, rewriting every other
    conversation's row in place with the sentiment asked for ("... sentiment 5": 5; 1.0 when no number is
    given)."""
    rows = [as_asked(cache.row(c), closed) for c in conversations]
    injectors = holds(conversations, INJECT)
    if not injectors:
        return rows
    asked = INJECTED_SENTIMENT.search(" ".join(m["content"] for m in injectors[0]["messages"]))
    sentiment = float(asked.group(1)) if asked else 1.0
    injector_ids = {c["conversation_id"] for c in injectors}
    return [
        row
        if row["conversation_id"] in injector_ids
        else {**row, "sentiment_score": sentiment, "confidence": 1.0, "reasoning": "as instructed"}
        for row in rows
    ]


def bend(rows: list[dict[str, Any]], fault: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows as a fault spoils them."""
    if fault.get("drop_rows"):
        rows = rows[fault["drop_rows"] :]
    if fault.get("extra_row"):
        rows = [*rows, {**rows[0], "conversation_id": fault["extra_row"]}]
    if fault.get("out_of_range") and rows:
        rows = [{**rows[0], "sentiment_score": 3.5}, *rows[1:]]
    if fault.get("unstorable") and rows:
        first = {
            **rows[0],
            "reasoning": f"NUL \x00 {rows[0]['reasoning']}",
            "clusters": [*rows[0]["clusters"], "nul\x00"],
        }
        rows = [first, *rows[1:]]
        rows[-1] = {
            **rows[-1],
            "reasoning": f"surrogate \ud800 {rows[-1]['reasoning']}",
            "clusters": ["\ud800", *rows[-1]["clusters"]],
        }
    return rows


def content_of(rows: list[dict[str, Any]], fault: dict[str, Any], poisoned: bool) -> tuple[str, str]:
    """The answer's text and ``finish_reason``."""
    content, finish_reason = json.dumps({"results": rows}), "stop"
    if fault.get("truncate") or poisoned:
        content, finish_reason = content[: len(content) // 2], "length"
    if fault.get("malformed"):
        content = "Sure! Here are the insights you asked for: {results: [oops"
    return content, finish_reason


def batch_answer(cache: RowCache, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """A Batch API request's outcome: the completion Grok would give (no faults, no limits: batch requests
    do not count towards them), or, for a batch holding ``REFUSE``, the error message of a refusal."""
    conversations = json.loads(body["messages"][-1]["content"])["conversations"]
    model = body.get("model", "?")
    if holds(conversations, REFUSE):
        return None, content_refused(model)
    prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
    rows = analyze(cache, conversations, asks_for_taxonomy(body))
    content, finish_reason = content_of(rows, {}, bool(holds(conversations, POISON)))
    return completion(content, finish_reason, body, prompt_tokens, batch=True), None
