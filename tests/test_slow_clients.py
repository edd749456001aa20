"""Slow and idle clients cannot hold a web process: a body must arrive in time (408), and one process
holds at most WEB_LIMIT_CONCURRENCY connections (503 beyond). Real web process, raw sockets."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from support.traffic import conversation

BODY_TIMEOUT = 1.5
CONCURRENCY = 4


@pytest.fixture(scope="module")
def stack(make_module_stack):
    stack = make_module_stack(BODY_TIMEOUT_SECONDS=BODY_TIMEOUT, WEB_LIMIT_CONCURRENCY=CONCURRENCY, INBOUND_RPS=10_000)
    stack.client = stack.start_web()
    return stack


def open_slow_post(port: int, path: str = "/api/v1/conversations", announced: int = 100_000) -> socket.socket:
    """A POST that announces ``announced`` bytes of body and sends one."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n{{"
    connection.sendall(head.encode())
    return connection


def read_response(connection: socket.socket) -> tuple[int, bytes]:
    """Read until the server closes the connection; the status code and the body."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("path", ["/api/v1/conversations", "/api/v1/conversations/batch"])
def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closes(stack, path):
    connection = open_slow_post(stack.ports[0], path)
    started = time.monotonic()
    status, body = read_response(connection)
    waited = time.monotonic() - started
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["body_timeout_seconds"] == BODY_TIMEOUT
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 10  # bounded by the setting, not by the client
    assert stack.client.get("/healthz").status_code == 200


def test_a_process_holds_at_most_its_connection_limit(stack):
    held = [open_slow_post(stack.ports[0]) for _ in range(CONCURRENCY + 2)]
    try:
        refused = [c for c in held if answered_at_once(c) == 503]
        assert len(refused) >= 2  # those past the limit are turned away at once, not left waiting
        assert httpx.get(f"http://127.0.0.1:{stack.ports[0]}/healthz").status_code == 503  # a new connection too
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + BODY_TIMEOUT + 10
    while (
        status := httpx.post(
            f"http://127.0.0.1:{stack.ports[0]}/api/v1/conversations", json=conversation("after the crowd")
        ).status_code
    ) != 202:
        assert time.monotonic() < deadline, f"still {status} once the slow clients are gone"
        time.sleep(0.2)


def answered_at_once(connection: socket.socket) -> int | None:
    """The status the server sent on ``connection`` within half a second, if any."""
    connection.settimeout(0.5)
    try:
        data = connection.recv(65536)
    except TimeoutError:
        return None
    return int(data.split()[1]) if data else None
