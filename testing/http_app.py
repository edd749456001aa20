"""The xAI emulator over HTTP: an ASGI application, served by uvicorn (``testing/emulator.py``).

A call that waits for its latency is a sleeping coroutine, not a thread, so that thousands can be in flight
in one process at little CPU; BENCHMARKS.md ("The xAI emulator at today's limits") compares it with the
thread per connection it replaced.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from testing.answers import credits_refusal, xai_error
from testing.asgi import Receive, Scope, Send, header, read_body, send_json
from testing.batches import route
from testing.state import EmulatorState, Reply, respond

BAD_REQUEST = (KeyError, TypeError, ValueError, IndexError, AttributeError)  # json.JSONDecodeError is a ValueError


class EmulatorApp:
    """Routes each request: the chat endpoint, the Batch API, the control API (``/_emulator/...``)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        raw = await read_body(receive)
        arrived = time.time()  # once the request is in: calls are then charged in the order of their arrival times
        if method == "POST" and (path.endswith("/chat/completions") or path.endswith("/requests")):
            self.state.received.append(raw)
        if path.startswith("/v1/batches"):
            await self.batch_api(scope, raw, send)
        elif method == "POST" and path.endswith("/chat/completions"):
            await self.chat(arrived, bearer(scope), raw, receive, send, header(scope, b"x-grok-conv-id"))
        elif method == "POST" and path.startswith("/_emulator/"):
            await self.control(path.removeprefix("/_emulator/"), raw, send)
        elif method == "GET" and path == "/_emulator/log":
            snapshot = list(self.state.log)  # entries are complete once logged: encoding them aside is safe
            await send_json(send, 200, await asyncio.to_thread(lambda: json.dumps(snapshot).encode()))
        elif method == "GET" and path == "/_emulator/received":
            await send_json(send, 200, [body.decode("utf-8", "replace") for body in self.state.received])
        elif method == "GET" and path == "/_emulator/schemas":
            await send_json(send, 200, self.state.schemas.received())
        elif method == "GET" and path == "/_emulator/batches":
            await send_json(send, 200, await asyncio.to_thread(self.state.batches.overview))
        else:
            await send_json(send, 404, {"error": "not found"})

    async def control(self, action: str, raw: bytes, send: Send) -> None:
        """``POST /_emulator/faults``, ``/config``, ``/reset``."""
        try:
            body = json.loads(raw or b"null")
            if action == "faults":
                self.state.faults.extend(body)
                return await send_json(send, 200, {"queued": len(self.state.faults)})
            if action == "config":
                self.state.configure(body)
                return await send_json(
                    send, 200, {k: v for k, v in asdict(self.state.config).items() if k != "api_key"}
                )
        except BAD_REQUEST as error:
            return await send_json(send, 400, {"error": str(error)})
        if action == "reset":
            self.state.reset()
            return await send_json(send, 200, {})
        await send_json(send, 404, {"error": "not found"})

    async def batch_api(self, scope: Scope, raw: bytes, send: Send) -> None:
        """The Batch API (``testing/batches.py``), in a thread: reading a batch may analyze hundreds of
        requests at once, and the calls in flight must not wait for that."""
        if bearer(scope) != self.state.config.api_key:
            self.state.batches.refused_key()
            return await send_json(send, 401, {"error": "Incorrect API key provided."})
        config = self.state.config
        if config.credits:  # a team out of credits is refused by the Batch API too
            self.state.batches.refused_for_credits()
            return await send_json(send, config.credits_status, credits_refusal(config.credits, config.credits_status))
        target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        try:
            body = json.loads(raw or b"null")
        except ValueError as error:
            return await send_json(send, 400, {"error": str(error)})
        answer = await asyncio.to_thread(route, self.state.batches, scope["method"], target, body, len(raw))
        await send_json(send, *answer)

    async def chat(
        self, arrived: float, key: str, raw: bytes, receive: Receive, send: Send, conv_id: str | None
    ) -> None:
        entry: dict[str, Any] = {"t": arrived, "ids": [], "fault": None, "tokens": 0, "latency": 0.0, "refused": None}
        try:
            reply = respond(self.state, key, json.loads(raw), entry, conv_id)
        except BAD_REQUEST as error:
            reply = Reply(400, xai_error(400, f"bad request: {type(error).__name__}: {error}"))
        entry["status"] = reply.status
        caller = asyncio.ensure_future(receive())  # ends early with "http.disconnect" when the caller hangs up
        await asyncio.sleep(reply.wait)
        if caller.done():
            entry["client_gone"] = True  # the caller hung up (a worker killed mid-call, a timeout)
        caller.cancel()
        self.state.log.append(
            entry
        )  # before the answer: a caller that reads the log once answered finds its call there
        if reply.hang_up:
            await hang_up(send, reply.body)
        elif not entry.get("client_gone"):
            await send_json(send, reply.status, reply.body, reply.headers)


def bearer(scope: Scope) -> str:
    """The key of the ``Authorization: Bearer`` header ('' without one)."""
    return (header(scope, b"authorization") or "").removeprefix("Bearer ")


async def hang_up(send: Send, data: bytes) -> None:
    """Promise ``data`` in full and send half of it: returning with the body unfinished makes uvicorn close
    the connection (it logs "ASGI callable returned without completing response")."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})
