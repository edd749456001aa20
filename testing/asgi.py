"""What the local stand-ins served by uvicorn share (the xAI emulator, ``testing/http_app.py``, and the
webhook receiver, ``testing/receiver_app.py``): raw ASGI, with no framework between the socket and the
handler, so that a request costs little more than its parsing and thousands can wait in one process."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (``name`` in lower case), or ``None``."""
    value = dict(scope["headers"]).get(name)
    return None if value is None else value.decode("latin-1")


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


BACKLOG = 4096  # connections waiting to be accepted (the kernel caps it at net.core.somaxconn)
KEEP_ALIVE_SECONDS = 300  # an idle pooled connection is kept as long as a client might leave it idle


def quiet_server(app: Any, host: str, port: int, **options: Any) -> uvicorn.Server:
    """``app`` served on ``host:port``, quiet but for warnings (the stand-in's own log tells all), quick to
    stop (requests still waiting are dropped, as a server that goes down drops them); ``options``: more of
    uvicorn's (``ssl_certfile``...)."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=1,
            **options,
        )
    )
