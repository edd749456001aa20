"""A webhook receiver for tests and benchmarks: it records what the service's outgoing webhooks deliver,
checks their signatures, and answers as a subscriber's endpoint might, faults on demand.

``python -m testing.receiver --port 8600 [options]`` accepts a webhook (``POST``) on any path but
``/_receiver/...``, ``/hook`` by convention, as the Standard Webhooks specification shapes one: headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, several
separated by spaces while a secret is rotated), a JSON body ``{"type", "timestamp", "data"}``, or a batch,
``{"type": "batch", ..., "data": {"events": [...]}}``. A receiver that is down is one not running: tests
stop the process and start it again on the same port.

Options, each but ``--host``, ``--port``, ``--cert``, ``--key`` and ``--record-limit`` also a key of
``POST /_receiver/config``:

- ``--host H`` (default 127.0.0.1), ``--port P``; ``--cert FILE --key FILE``: serve HTTPS with that
  certificate chain and key (the tests make them with trustme, ``tests/support/receiver.py``), else HTTP.
- ``--mode`` (``mode``): ``ok`` answers 200, ``down`` 503, ``gone`` 410 (a subscriber that left for good).
- ``--latency-ms N`` (``latency_ms``, default 0): wait N ms before each answer.
- ``--fail-rate P`` (``fail_rate``, default 0): an answer that would be 200 is 500 with probability P, drawn
  from a generator seeded with ``--seed`` (``seed``, default 42; setting it, or a reset, draws anew).
- ``--secret whsec_...`` (repeatable; ``secrets``, a list): check each request's signature with the
  ``standardwebhooks`` package (a test extra, imported only when a secret is set); a request verifies when
  one secret does, and one older or newer than five minutes does not (the package's tolerance).
- ``--record-limit N`` (default 100,000; 0: all): requests kept in the records, the latest; the
  statistics count them all.

Control endpoints; bad input is answered ``400`` with ``{"error": ...}``:

- ``POST /_receiver/faults`` with a JSON list: each fault is used by one coming webhook, in order, whatever
  the mode: ``{"status": 500}`` (any status), ``{"delay": 3}`` (seconds, on top of the latency; alone, the
  answer is then the mode's), ``{"redirect": URL}`` (307 to it), ``{"big_body": 10000000}`` (200 with that
  many bytes, streamed without a length, for a sender that must cap what it reads), ``{"status": 429,
  "retry_after": "3"}`` (a ``Retry-After`` header with the answer).
- ``POST /_receiver/config`` with any of the settings above; answers the configuration (``GET`` reads it).
- ``GET /_receiver/received``: every request kept, ``{"t": arrival (epoch s), "path", "status" (what it was
  answered), "headers" (the three webhook headers, content-type and user-agent, as sent), "body" (the raw
  text), "events" (the body for one event, ``data.events`` for a batch; ``null`` when the body is not a
  JSON object), "verified" (``null`` without secrets), "fault"}``, and ``"client_gone": true`` when the
  sender hung up before its answer. A request is recorded once its wait is over, before its answer is sent.
- ``GET /_receiver/stats``: ``requests``, ``by_status``, ``events`` (carried by all requests),
  ``accepted_events`` (by requests answered 2xx while the sender still waited), ``distinct_event_ids`` and
  ``duplicates`` among those accepted (by ``data.event_id``), ``unverified`` and ``faults_queued``.
- ``POST /_receiver/reset``: forget the records, the statistics and the faults queued.

The state lives in memory. Capacity: a request waiting is a sleeping coroutine (``testing/receiver_app.py``),
and uvicorn runs on uvloop and httptools, so one process answers thousands of webhooks a second.
"""

from __future__ import annotations

import argparse
import json

import uvicorn

from testing.asgi import quiet_server
from testing.receiver_app import MODES, ReceiverApp, ReceiverConfig, ReceiverState


def server(host: str, port: int, config: ReceiverConfig, cert: str | None, key: str | None) -> uvicorn.Server:
    """The receiver on ``host:port``, quiet but for warnings (the records tell all), quick to stop: the
    webhooks still waiting are dropped, as a subscriber that goes down drops them."""
    return quiet_server(ReceiverApp(ReceiverState(config)), host, port, ssl_certfile=cert, ssl_keyfile=key)


def parse_args() -> argparse.Namespace:
    defaults = ReceiverConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--cert", help="certificate chain (PEM): serve HTTPS")
    parser.add_argument("--key", help="the certificate's private key (PEM)")
    parser.add_argument("--mode", choices=tuple(MODES), default=defaults.mode, help="ok: 200, down: 503, gone: 410")
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms, help="milliseconds before answering")
    parser.add_argument(
        "--fail-rate", type=float, default=defaults.fail_rate, help="share of would-be 200s answered 500"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the fail-rate draws")
    parser.add_argument(
        "--secret", dest="secrets", action="append", default=[], help="whsec_... to verify signatures with"
    )
    parser.add_argument(
        "--record-limit", type=int, default=defaults.record_limit, help="requests kept, the latest (0: all)"
    )
    args = parser.parse_args()
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    return args


def main() -> None:
    args = vars(parse_args())
    host, port, cert, key = (args.pop(name) for name in ("host", "port", "cert", "key"))
    config = ReceiverConfig(record_limit=args.pop("record_limit")).changed(args)
    shown = {k: v for k, v in args.items() if k != "secrets"} | {"secrets": len(config.secrets)}
    print(f"Webhook receiver on {'https' if cert else 'http'}://{host}:{port}/hook ({json.dumps(shown)})", flush=True)
    server(host, port, config, cert, key).run()


if __name__ == "__main__":
    main()
