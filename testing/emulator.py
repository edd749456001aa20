"""A local stand-in for xAI's chat-completions API: Grok's answers, latency, limits and refusals, faults on demand.

``python -m testing.emulator --port 8500 --api-key KEY [options]`` serves ``POST /v1/chat/completions``
and the Batch API (``/v1/batches``, see ``testing/batches.py``). It answers like Grok with structured
output: it reads the batch (the JSON document in the user message) and analyzes each conversation with
the offline analyzer (its rows cached by text, ``testing/rows.py``).

Options, each also a key of ``POST /_emulator/config`` (``latency_median`` for ``--latency-median``...):

- ``--latency S`` (default 0) waits S seconds before each answer; ``--latency-median M --latency-sigma X``
  add a lognormal draw of median M and shape X (15 and 0.5: half the calls over 15 s, one in twenty over
  34 s), from a generator seeded with ``--seed`` (default 42) so that a run draws the same latencies again;
  ``--latency-max C`` caps the sum (0: no cap). A fault's ``delay`` comes on top. Latency does not grow with
  the size of the answer.
- ``--rps N`` (0: none): a call arriving when N calls were admitted in the second before it is refused.
- ``--tpm N`` (0: none) with ``--tpm-window S`` (default 60): a call is charged its prompt tokens (characters
  of the request's message contents / 4, as ``usage.prompt_tokens``) plus the completion tokens of its
  answer before any fault or truncation bends it; one that would take the tokens charged to calls arriving
  within S seconds over N is refused, at no charge. How, and what xAI documents: ``testing/rate_limits.py``.
- ``--context N`` (default 131072): a longer prompt is refused with ``400``.
- ``--models a,b`` (default: any): another model is ``404``.
- ``--refusal-status`` (403, or 400): the status of a content refusal (see ``testing/answers.py`` for why
  403 is the default, and where each refusal's words come from).
- ``--credits SHAPE`` (default: none) plays a team whose credits or monthly spending limit are used up:
  every call is refused with xAI's words for it, its body a bare JSON string (``string``), ``{"error": ...}``
  (``error``) or ``{"code": ..., "error": ...}`` (``code``), with ``--credits-status`` (429, or 403). At run
  time ``{"credits": "code", "credits_status": 403}`` exhausts them and ``{"credits": ""}`` brings them back.
  The Batch API refuses every call the same way meanwhile.

- ``--cache-servers N`` (default 16) and ``--cache-span C`` (default 8; 0: no cache): xAI's prompt cache, per
  server. A call goes to the server its ``x-grok-conv-id`` header hashes to, or to one drawn at random
  without the header; its answer's ``usage.prompt_tokens_details.cached_tokens`` counts the tokens of its
  longest run of leading messages that server has seen, and a prefix no call used during the last C calls is
  evicted (``testing/prompt_cache.py``: what xAI documents, and what the emulator chose).

A call is checked in this order: key (``401``), credits, model (``404``), answer schema (``400`` for a
keyword outside the subset every version of xAI's structured outputs accepts, ``testing/schema.py``), prompt
length (``400``), content (``403``), requests per second then tokens per minute (``429``); only an admitted
call meets the prompt cache, takes a queued fault and waits.
Refusals answer at once, in xAI's error shape ``{"code": ..., "error": <message>}``.

Control endpoints, for tests and benchmarks:

- ``POST /_emulator/faults`` with a JSON list: each fault is used by one coming admitted call, in order:
  ``{"status": 429, "retry_after": "2"}`` (``retry_after`` may be an HTTP date, or absent),
  ``{"status": 500}`` (any status), ``{"delay": 5}`` (answer late), ``{"malformed": true}``,
  ``{"truncate": true}`` (``finish_reason: length``), ``{"drop_rows": 1}``,
  ``{"extra_row": "some-id"}``, ``{"out_of_range": true}``, ``{"hangup": true}`` (hang up halfway
  through the answer's body), ``{"unstorable": true}`` (a NUL in the first row's reasoning and clusters, a
  lone surrogate in the last row's: valid JSON escapes, ``\\u0000`` and ``\\ud800``, that no database
  stores as they decode). An error status may carry ``"body"``: that text, sent as is (UTF-8, lone
  surrogates included), instead of the JSON error.
- ``POST /_emulator/config`` with any of the options above, ``api_key``, or ``fault_rate``: with
  ``fault_rate`` each admitted call without a queued fault meets a random one (429 with ``Retry-After: 1``,
  500, 503 or a malformed answer) with probability ``p`` (for soak runs). Answers the configuration.
- ``GET /_emulator/log``: every call, ``{"t": arrival (epoch s), "status", "ids", "fault", "tokens",
  "latency", "refused"}``, and for an admitted call ``"conv_id"`` (its ``x-grok-conv-id``, or ``null``),
  ``"server"`` and ``"cached"`` (its cached tokens); ``refused`` is ``null``, or why: ``"rps"``, ``"tpm"``,
  ``"context"``, ``"content"``, ``"schema"``, ``"model"`` or ``"credits"``; ``"client_gone": true`` when the
  caller hung up before its answer. A call is logged once its wait is over, before its answer is sent. The
  log keeps the latest ``--log-limit`` calls (default 100,000, about 2 KB each; 0: all).
- ``GET /_emulator/received``: the bodies of the latest 1,000 chat calls and Batch API request adds, as
  received (each a JSON text): what left the service, for tests of what it sends.
- ``GET /_emulator/schemas``: the distinct ``response_format`` objects chat calls sent, as received (the
  first 16).
- ``POST /_emulator/reset``: forget faults, the log, what the limits counted, the batches, the schemas, the
  bodies received and the prompt caches.

Standing behaviours: a conversation containing ``POISON`` makes any batch holding it come back truncated;
one containing ``INJECT`` plays a gullible model that obeys it, rewriting every other conversation's row
(one row per id still) to the sentiment the injection asks for ("sentiment 5"; 1.0 by default); one containing
``REFUSE`` has any batch holding it refused for its content.

Capacity: a call waiting for its latency is a sleeping coroutine under uvicorn (``testing/http_app.py``), not
a thread; what one process holds, and at what CPU, is in BENCHMARKS.md ("The xAI emulator at today's
limits", ``scripts/python -m benchmarks.bench_emulator``).
"""

from __future__ import annotations

import json

import uvicorn

from testing.asgi import quiet_server
from testing.config import EmulatorConfig, parse_args
from testing.http_app import EmulatorApp
from testing.state import EmulatorState


def server(port: int, config: EmulatorConfig) -> uvicorn.Server:
    """The emulator on 127.0.0.1:``port``, quiet but for warnings (the log endpoint tells all), and quick
    to stop: the calls still waiting are dropped, as a thread-per-call server dropped them."""
    return quiet_server(EmulatorApp(EmulatorState(config)), "127.0.0.1", port)


def main() -> None:
    args = vars(parse_args(__doc__.splitlines()[0]))
    port = args.pop("port")
    print(
        f"Grok emulator on http://127.0.0.1:{port}/v1 "
        f"({json.dumps({k: v for k, v in args.items() if k != 'api_key'})})",
        flush=True,
    )
    server(port, EmulatorConfig(**args)).run()


if __name__ == "__main__":
    main()
