"""API keys: stored only as SHA-256 hashes, each granting scopes (``ingest``, ``read``, ``admin``).

Keys are random 256-bit tokens, so a fast hash is enough (there is nothing to brute-force), and the
presented key's hash is compared with every configured hash in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHORIZED = "unauthorized"  # no key, or not one of ours
    FORBIDDEN = "forbidden"  # ours, without the scope


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(scopes: list[str]) -> tuple[str, str]:
    """A fresh key and its configuration entry (``sha256:<hex>:<scopes>``)."""
    key = "ci_" + secrets.token_urlsafe(32)
    return key, f"sha256:{hash_key(key)}:{','.join(sorted(set(scopes)))}"


def authorize(presented: str | None, scope: str, configured: dict[str, frozenset[str]]) -> Verdict:
    """May the holder of ``presented`` act in ``scope``? Compares against every hash, in constant time."""
    if not presented:
        return Verdict.UNAUTHORIZED
    digest = hash_key(presented)
    granted: frozenset[str] | None = None
    for stored, scopes in configured.items():
        if hmac.compare_digest(stored, digest):
            granted = scopes
    if granted is None:
        return Verdict.UNAUTHORIZED
    return Verdict.ALLOWED if scope in granted else Verdict.FORBIDDEN
