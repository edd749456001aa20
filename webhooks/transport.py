"""The HTTP client webhooks go through: every connection re-checks its addresses (``webhooks.addresses``).

The check sits where the connection is made, in the network backend of httpcore's pool: the host is
resolved there, each address checked, and the socket opened to the address checked, so no second lookup
can swap it. TLS is then negotiated with the URL's own host name (its certificate is verified for that
name), and the pool keeps connections per host name as usual.

No redirect is followed, no proxy from the environment is used (it would connect for us, unchecked), and
the client asks for no retries: a failed delivery is tried again on the outbox's schedule.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable

import anyio
import certifi
import httpcore
import httpx

from webhooks.addresses import RefusedUrl, check_addresses, parse_addresses

USER_AGENT = "conversation-insights-webhooks/1"


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting only to addresses :func:`check_addresses` accepts."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError) as error:
            raise httpcore.ConnectError(f"{host} does not resolve ({error})") from error
        addresses = parse_addresses(infos)
        try:
            check_addresses(host.lower(), addresses, self.allowed)
        except RefusedUrl as refused:
            raise httpcore.ConnectError(str(refused)) from refused
        return await self.backend.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose connections :class:`GuardedBackend` makes. httpx takes no
    network backend of its own, so its pool is replaced by one built the same way over the guarded backend
    (``tests/test_webhook_guard.py`` fails if this stops taking effect)."""

    def __init__(self, allowed: frozenset[str], ssl_context: ssl.SSLContext, connections: int) -> None:
        super().__init__(verify=ssl_context, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allowed),
        )


def ssl_context(extra_ca_file: str = "") -> ssl.SSLContext:
    """The public certificate authorities, and those of ``extra_ca_file`` (``WEBHOOK_CA_FILE``: a receiver
    inside the deployment with a private CA, or a test's)."""
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    return context


def make_client(
    allowed: frozenset[str], context: ssl.SSLContext, timeout: float, connections: int
) -> httpx.AsyncClient:
    """A client for webhook requests: ``timeout`` seconds for each phase, no redirects, nothing from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allowed, context, connections),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )
