"""Which receivers may be called: no server-side request forgery.

A webhook URL is the client's to choose, and the worker calls it from inside the deployment, so a URL could
aim at what only the inside reaches (a database's port, a cloud's metadata service at 169.254.169.254). A
URL must be ``https``, and every address its host resolves to must be a public one: not loopback,
private, link-local (the metadata services), shared, reserved, multicast or unspecified. That is checked when
the subscription is made and again at every connection (``webhooks.transport``), against the address
actually connected to, so a name that later resolves inside (DNS rebinding) reaches nothing.

Hosts named in ``WEBHOOK_ALLOW_HOSTS`` (receivers inside the deployment, tests) are exempt: they may use
plain ``http`` and any address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedUrl(ValueError):
    """A webhook URL that may not be called, and why (shown to whoever registered it)."""


def checked_url(url: str, allowed: frozenset[str]) -> tuple[str, int]:
    """The host and port of ``url`` if its form may be called (the addresses are :func:`check_addresses`'s);
    raise :class:`RefusedUrl`."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedUrl(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedUrl(f"the URL does not parse ({error})") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedUrl("the URL names no host")
    if parts.username or parts.password:
        raise RefusedUrl("the URL may not carry credentials")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in allowed):
        raise RefusedUrl("the URL must be https")
    return host, port or (443 if parts.scheme == "https" else 80)


def refusal(address: IpAddress) -> str | None:
    """Why a connection to ``address`` is refused, or ``None`` for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):  # most telling first
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def check_addresses(host: str, addresses: list[IpAddress], allowed: frozenset[str]) -> None:
    """Raise :class:`RefusedUrl` if ``host`` (not allow-listed) resolved to any address that is not public:
    all are checked, since a client connects to any of them."""
    if host in allowed:
        return
    if not addresses:
        raise RefusedUrl(f"{host} resolves to no address")
    for address in addresses:
        if reason := refusal(address):
            raise RefusedUrl(f"{host} resolves to {reason}; only public addresses may receive webhooks")


def parse_addresses(infos: list[tuple]) -> list[IpAddress]:
    """The addresses of ``getaddrinfo``'s answer (an IPv6 one without its ``%zone``)."""
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_url(url: str, allowed: frozenset[str]) -> None:
    """Check ``url`` now, resolving its host (a subscription being made): raise :class:`RefusedUrl`."""
    host, port = checked_url(url, allowed)
    if host in allowed:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise RefusedUrl(f"{host} does not resolve ({error})") from None
    check_addresses(host, parse_addresses(infos), allowed)
